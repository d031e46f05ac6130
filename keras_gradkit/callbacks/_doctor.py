"""What GradientBoard's checks measure beyond the recorded steps (private):
one forward pass over a small batch (dead and saturated units, a non-finite
output, the data's scale, an output that does not fit its loss), whether
each layer's weights changed since the previous check, and whether the
loss moves."""

import hashlib
import math
import warnings

import keras
import numpy as np

from keras_gradkit.diagnostics import activations, checks, data


def validate_probe(probe):
    """Checks the `probe` argument of `GradientBoard`: None, or `(x, y)` of
    one small batch (arrays or structures of arrays with the same rows).

    Returns:
        None, or `(x, y)` with NumPy arrays.
    """
    if probe is None:
        return None
    if not isinstance(probe, (tuple, list)) or len(probe) != 2:
        got = f"with {len(probe)} entries" if isinstance(probe, (tuple, list)) else "of type "
        got += "" if isinstance(probe, (tuple, list)) else type(probe).__name__
        raise TypeError(
            "Argument `probe` must be None or a tuple `(x, y)` of one small batch and its "
            f"targets. Received: probe {got}"
        )
    x, y = (keras.tree.map_structure(np.asarray, part) for part in probe)
    rows = {a.shape[0] if a.ndim else None for a in keras.tree.flatten((x, y))}
    if len(rows) != 1 or None in rows or 0 in rows:
        raise ValueError(
            "Argument `probe` must hold arrays with the same, non-zero number of rows (one "
            f"batch). Received: probe with rows {sorted(r for r in rows if r is not None)}"
        )
    return x, y


# Rows of the first training batch that GradientBoard keeps as its probe batch
# when given none: a few dozen, as the `probe` argument asks for.
FIRST_BATCH_ROWS = 32


def first_rows(batch, rows=FIRST_BATCH_ROWS):
    """`(x, y)` of a training batch as `fit` made it (`x`, `(x, y)` or
    `(x, y, sample_weight)`), its first `rows` rows as NumPy arrays."""
    x, y, _ = keras.utils.unpack_x_y_sample_weight(batch)

    def head(a):
        return np.array(keras.ops.convert_to_numpy(a)[:rows])  # a copy: the batch is not kept

    return keras.tree.map_structure(head, x), (
        None if y is None else keras.tree.map_structure(head, y)
    )


class ForwardMeasures:
    """The measures of one forward pass over the probe batch, for `checks.assemble`."""

    def __init__(self, model, batch):
        self.model = model
        self.batch = batch

    def measure(self, eager=False):
        """`{"activations", "scales", "mismatches", "notes"}` for `checks.assemble`;
        `eager`: the pass op by op (`activations.measure_activations`)."""
        if self.batch is None:
            return {
                "notes": [
                    "Dead and saturated units, non-finite outputs and the data's scale need a "
                    "batch, and no training batch could be read here: give GradientBoard "
                    "`probe=(x, y)` (or a `time_probe`)."
                ]
            }
        x, y = self.batch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            measured = activations.measure_activations(self.model, x, eager=eager)
        rows = len(keras.tree.flatten(x)[0])
        measured = checks.judgeable_activations(measured, rows)
        scales, scale_notes = data.input_scales(self.model, x, y)
        mismatches, mismatch_notes = data.output_loss_mismatches(self.model, y)
        return {
            "activations": measured,
            "scales": scales,
            "mismatches": mismatches,
            "notes": list(scale_notes) + list(mismatch_notes),
        }


def weight_digests(model):
    """`{layer name: digest of its trainable weights}` for the model's
    top-level layers with trainable weights: equal digests, equal weights."""
    digests = {}
    for layer in model.layers:
        weights = layer.trainable_weights
        if not weights:
            continue
        h = hashlib.blake2b(digest_size=16)
        for w in weights:
            h.update(np.ascontiguousarray(keras.ops.convert_to_numpy(w)).tobytes())
        digests[layer.name] = h.digest()
    return digests


def unchanged(before, after):
    """The layers whose digest is the same in both readings."""
    return tuple(name for name, d in after.items() if before.get(name) == d)


class LossTrack:
    """The largest relative change of the loss Keras logs, against its value at
    the first check, and how many checks that spans."""

    def __init__(self):
        self.first = None
        self.largest = 0.0
        self.checks = 0

    def restart(self):
        self.__init__()

    def update(self, logs):
        """`(change, checks)` after this check's `logs` (None when not known)."""
        loss = (logs or {}).get("loss")
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            return None, 0
        if not math.isfinite(loss):
            return None, 0
        if self.first is None:
            self.first = loss
            return None, 0
        self.checks += 1
        if self.first == 0.0:
            return None, self.checks
        self.largest = max(self.largest, abs(loss - self.first) / abs(self.first))
        return self.largest, self.checks
