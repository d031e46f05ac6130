"""`keras_gradkit.diagnose`: one batch, one report."""

import math

import keras
import numpy as np

from keras_gradkit import _cache
from keras_gradkit.backend import keras_private
from keras_gradkit.backend.common import norms
from keras_gradkit.diagnostics import activations, batch, checks, data, depth, graph, time_probe
from keras_gradkit.diagnostics.report import Report
from keras_gradkit.diagnostics.thresholds import check_thresholds


def _is_probe_sequence(model, x):
    """Whether the time measures apply: a recurrent layer, one input array
    of float sequences or token ids."""
    if not graph.recurrent_layers(model) or not isinstance(x, np.ndarray):
        return False
    kind = keras.backend.standardize_dtype(x.dtype)
    floating, integer = keras.backend.is_float_dtype(kind), keras.backend.is_int_dtype(kind)
    return (floating and x.ndim == 3) or (integer and x.ndim == 2)


def _signature(value):
    if value is None:
        return None
    return tuple((a.shape, str(a.dtype)) for a in keras.tree.flatten(value))


def _seen(model, x, y, sample_weight):
    """Whether the probe kept for the model was made for batches of these shapes."""
    cached = _cache.get(model, "diagnose_probe")
    return cached is not None and cached[0][:3] == tuple(map(_signature, (x, y, sample_weight)))


def _probe(model, x, y, sample_weight, time):
    key = (_signature(x), _signature(y), _signature(sample_weight), time)
    # The probe of the latest call is kept for the model, so that a second
    # call on a batch of the same shapes reuses its trace.
    cached = _cache.get(model, "diagnose_probe")
    if cached is not None and cached[0] == key:
        cached[1].set_batch(x, y, sample_weight)  # traced again if the loss changed
        return cached[1]
    probe = time_probe.TimeProbe(
        model, x, y, sample_weight, time=time, variables=True, argument="x", activations=True
    )
    _cache.put(model, "diagnose_probe", (key, probe))
    return probe


def diagnose(model, x, y=None, sample_weight=None, thresholds=None):
    """Says what is wrong with a model's gradients on one batch, where, and what to do.

    Runs the model forward and backward in training mode on the batch, with
    its compiled loss, and changes no variable: weights, moving statistics,
    metrics, the optimizer and the model's seed generators keep their
    values (the passes run in a `keras.StatelessScope`). The measures, each
    a finding past its threshold (`keras_gradkit.diagnostics.Thresholds`):

    - through time, for a model with a recurrent layer and one sequence
      input (float `(batch, timesteps, features)`, or token ids
      `(batch, timesteps)` into an `Embedding`): for the model input and the
      input sequence of each top-level recurrent layer, the mean over the
      batch of `|d loss_i / d x_{i,t}|` at each step `t` (masked steps left
      out); the earliest steps (the first tenth of the unmasked steps, at
      least one) against the largest step (`vanishing_through_time`) and
      against the latest tenth (`exploding_through_time`);
    - across depth: the gradient norm of each top-level layer with trainable
      weights, in model order, first against last (`vanishing_across_depth`,
      `exploding_across_depth`);
    - `non_finite_gradient`: at `"input"` when the batch itself holds NaN or
      inf (then nothing else is measured), otherwise at the first layer, in
      model order, whose gradient is not finite.

    The cost is one forward and backward pass for the weights, plus one per
    probed sequence for the time measures; the passes are traced once per
    model and batch shape (TensorFlow, JAX), so a second call is cheaper.
    Pass one batch of the size you train with, not the whole dataset.

    Args:
        model: a compiled `keras.Model`.
        x: the inputs of one batch (arrays, or a structure of them), or a
            `tf.data.Dataset`, `keras.utils.PyDataset` or generator, of
            which the first batch is used.
        y: the batch's targets (None when `x` yields them).
        sample_weight: None, or the batch's per-example weights.
        thresholds: None (the defaults), a
            `keras_gradkit.diagnostics.Thresholds` or a dict of its fields.

    Returns:
        A `keras_gradkit.diagnostics.Report`: `report.ok`, `report.findings`,
        `report.measures`, `str(report)` a readable table.

    Raises:
        TypeError: `model` is not a Keras model, or `thresholds` is neither
            a `Thresholds` nor a dict of its fields.
        ValueError: the model is not compiled; `y` is missing for a
            compiled loss; a ragged list, an empty batch or dataset, rows
            that differ, or a batch the model or its loss cannot take.

    Example:

    ```python
    import keras, numpy as np, keras_gradkit as gk
    x = np.random.rand(8, 200, 2).astype("float32")
    y = np.random.rand(8, 1).astype("float32")
    model = keras.Sequential([keras.Input((200, 2)), keras.layers.LSTM(8), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    report = gk.diagnose(model, x, y)
    print(report)  # vanishing_through_time at lstm: IndRNN or chrono initialization
    ```
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Argument `model` must be a keras.Model. Received: model of type {type(model).__name__}"
        )
    thresholds = check_thresholds(thresholds)
    if not getattr(model, "compiled", False) or keras_private.compiled_loss(model) is None:
        raise ValueError(
            "Argument `model` must be compiled with a loss: `diagnose` differentiates the compiled "
            f"loss. Call `model.compile(optimizer=..., loss=...)` first. Received: model {model.name!r}, "
            "not compiled with a loss"
        )
    x, y, sample_weight = batch.first_batch(x, y, sample_weight)
    try:
        # Batches of shapes seen before were run through the model then;
        # the traced passes below still raise a short error.
        forward = not _seen(model, x, y, sample_weight)
        x, y, sample_weight = batch.check_batch(model, x, y, sample_weight, forward=forward)
    except ValueError as error:
        # A batch the loss refuses because the output does not fit it is a
        # finding (labels outside the output's classes), not only an error.
        found = _mismatch_report(model, y, error)
        if found is None:
            raise
        return found
    bad = batch.non_finite_entries(x, y, sample_weight)
    if bad:
        return Report(
            [checks.non_finite_input_finding(bad)],
            {"non_finite_entries": bad},
            ["The batch is not finite: no gradient was measured."],
        )
    time = _is_probe_sequence(model, x)
    notes = []
    if graph.recurrent_layers(model) and not time:
        notes.append(
            "The model has a recurrent layer but `x` is not one array of sequences (float "
            "(batch, timesteps, features) or token ids (batch, timesteps)): not measured through time."
        )
    rows = len(keras.tree.flatten(x)[0])
    probe = _probe(model, x, y, sample_weight, time)
    finish = probe.start()
    # Measured on the host while the passes run.
    scales, scale_notes = data.input_scales(model, x, y)
    mismatches, mismatch_notes = data.output_loss_mismatches(model, y)
    variable_norms, results = finish()
    names, by_layer = depth.layer_norms(model, variable_norms)
    total = norms.host_norm(list(variable_norms.values()))
    # The activations come from the gradient pass's forward pass; a
    # gradient that is not finite: the forward pass op by op finds where.
    finite = math.isfinite(total)
    measured = probe.measured_activations
    if measured is None or not finite:
        measured = activations.measure_activations(model, x, eager=not finite)
    measured = checks.judgeable_activations(measured, rows)
    return checks.assemble(
        model,
        names,
        by_layer,
        total,
        time_results=results,
        thresholds=thresholds,
        notes=notes + list(scale_notes) + list(mismatch_notes),
        activations=measured,
        scales=scales,
        mismatches=mismatches,
        at_initialization=_at_initialization(model),
    )


def _mismatch_report(model, y, error):
    """The `output_loss_mismatch` report of a batch the model's loss refused,
    or None when no mismatch explains it."""
    if y is None:
        return None
    try:
        mismatches, _ = data.output_loss_mismatches(model, y)
    except Exception:  # the error raised stays the one to see
        return None
    if not mismatches:
        return None
    findings = [checks.mismatch_finding(m) for m in mismatches]
    note = f"The model's loss refused the batch, so nothing else was measured: {error}"
    return Report(findings, {}, [note])


def _at_initialization(model):
    """Whether no update has been applied yet (the optimizer counts none)."""
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return True
    return int(np.asarray(keras.ops.convert_to_numpy(iterations))) == 0
