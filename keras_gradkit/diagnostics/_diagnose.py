"""`keras_gradkit.diagnose`: one batch, one report."""

import math

import keras
import numpy as np

from keras_gradkit.diagnostics import _depth, _findings, _time

# The probe of the latest call, kept on the model (a plain attribute Keras
# does not save) so that a second call on a batch of the same shapes reuses
# its trace.
_PROBE_ATTRIBUTE = "_keras_gradkit_diagnose_probe"


def _is_dataset(x):
    return hasattr(x, "element_spec") and hasattr(x, "take")


def _first_batch(x, y, sample_weight):
    """`(x, y, sample_weight)` of the first batch, as NumPy structures."""
    source = None
    if _is_dataset(x):
        source, element = "a tf.data.Dataset", next(iter(x))
    elif isinstance(x, keras.utils.PyDataset):
        source, element = "a keras.utils.PyDataset", x[0]
    elif hasattr(x, "__next__"):
        source, element = "a generator", next(x)
    if source is not None:
        if y is not None or sample_weight is not None:
            raise ValueError(
                f"Arguments `y` and `sample_weight` must be None when `x` is {source}, which yields "
                f"them. Received: y of type {type(y).__name__}, sample_weight of type "
                f"{type(sample_weight).__name__}"
            )
        if not isinstance(element, (tuple, list)):
            element = (element,)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(element))
    if x is None:
        raise TypeError(
            "Argument `x` must be a batch of inputs, a dataset or a generator. Received: x=None"
        )

    def as_array(a):
        array = np.asarray(keras.ops.convert_to_numpy(a) if hasattr(a, "shape") else a)
        if array.dtype == object:
            raise TypeError(
                f"Arguments `x`, `y` and `sample_weight` must hold arrays. Received: {type(a).__name__}"
            )
        return array

    def convert(value):
        return None if value is None else keras.tree.map_structure(as_array, value)

    return convert(x), convert(y), convert(sample_weight)


def _non_finite_entries(*structures):
    count = 0
    for structure in structures:
        if structure is None:
            continue
        for a in keras.tree.flatten(structure):
            if np.issubdtype(a.dtype, np.floating):
                count += int(np.size(a) - np.count_nonzero(np.isfinite(a)))
    return count


def _is_probe_sequence(model, x):
    """Whether the time measures apply: a recurrent layer, one input array
    of float sequences or token ids."""
    if not _time.recurrent_layers(model) or not isinstance(x, np.ndarray):
        return False
    kind = keras.backend.standardize_dtype(x.dtype)
    floating, integer = keras.backend.is_float_dtype(kind), keras.backend.is_int_dtype(kind)
    return (floating and x.ndim == 3) or (integer and x.ndim == 2)


def _probe(model, x, y, sample_weight, time):
    def signature(value):
        if value is None:
            return None
        return tuple((a.shape, str(a.dtype)) for a in keras.tree.flatten(value))

    key = (signature(x), signature(y), signature(sample_weight), time)
    cached = getattr(model, _PROBE_ATTRIBUTE, None)
    if cached is not None and cached.key == key:
        cached.probe.set_batch(x, y, sample_weight)  # traced again if the loss changed
        return cached.probe
    probe = _time.TimeProbe(model, x, y, sample_weight, time=time, variables=True, argument="x")
    object.__setattr__(model, _PROBE_ATTRIBUTE, _Cached(key, probe))
    return probe


class _Cached:
    """The latest probe and the batch signature it was traced for (a plain
    object: Keras's saving walks an attribute only if it is a Keras object or
    a container)."""

    def __init__(self, key, probe):
        self.key, self.probe = key, probe


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
        thresholds: None (the defaults) or a
            `keras_gradkit.diagnostics.Thresholds`.

    Returns:
        A `keras_gradkit.diagnostics.Report`: `report.ok`, `report.findings`,
        `report.measures`, `str(report)` a readable table.

    Raises:
        TypeError: `model` is not a Keras model, or `thresholds` is not a
            `Thresholds`.
        ValueError: the model is not compiled, or cannot take the batch.

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
    thresholds = _findings.check_thresholds(thresholds)
    if not getattr(model, "compiled", False) or getattr(model, "_compile_loss", None) is None:
        raise ValueError(
            "Argument `model` must be compiled with a loss: `diagnose` differentiates the compiled "
            f"loss. Call `model.compile(optimizer=..., loss=...)` first. Received: model {model.name!r}, "
            "not compiled with a loss"
        )
    x, y, sample_weight = _first_batch(x, y, sample_weight)
    bad = _non_finite_entries(x, y, sample_weight)
    if bad:
        finding = _findings.Finding(
            "non_finite_gradient", "input", float(bad), 0.0, _findings.non_finite_advice("input")
        )
        return _findings.Report(
            [finding],
            {"non_finite_entries": bad},
            ["The batch is not finite: no gradient was measured."],
        )
    time = _is_probe_sequence(model, x)
    notes = []
    if _time.recurrent_layers(model) and not time:
        notes.append(
            "The model has a recurrent layer but `x` is not one array of sequences (float "
            "(batch, timesteps, features) or token ids (batch, timesteps)): not measured through time."
        )
    probe = _probe(model, x, y, sample_weight, time)
    variable_norms, results = probe.compute_all()
    names, norms = _depth.layer_norms(model, variable_norms)
    total = math.sqrt(sum(n * n for n in variable_norms.values()))
    measures = {
        "gradient_norm": total,
        "depth": {"layers": names, "norms": norms, "first_to_last": _depth.first_to_last(norms)},
    }
    findings = []
    non_finite = _findings.non_finite_finding(names, norms)
    if non_finite is not None:
        findings.append(non_finite)
    else:
        time_found, measures["time"] = _findings.time_findings(model, results, thresholds)
        findings += time_found
        findings += _findings.depth_findings(model, names, norms, thresholds)
    return _findings.Report(_findings.sort_findings(findings), measures, notes)
