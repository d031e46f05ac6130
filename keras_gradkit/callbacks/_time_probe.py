"""Gradient of the loss with respect to each time step of a sequence (private).

Used by `GradientBoard(time_probe=(x, y))`. Runs outside the train step, on a
small fixed batch, with the backend's own gradient (`keras_gradkit._gradients`).
"""

import warnings

import keras
import numpy as np
from keras import ops

from keras_gradkit._gradients import value_and_gradients
from keras_gradkit.callbacks import _plots

REACH_FRACTION = 1e-3


def reach(norms, fraction=REACH_FRACTION):
    """Number of steps back from the end over which `norms >= fraction * max(norms)`.

    Counts the trailing run of time steps whose gradient norm is at least
    `fraction` times the largest one: how far back the gradient still arrives.
    """
    norms = np.asarray(norms, dtype="float64")
    peak = np.max(norms) if norms.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return 0
    above = norms >= fraction * peak
    if above.all():
        return int(norms.size)
    return int(norms.size - 1 - np.flatnonzero(~above)[-1])


def recurrent_layers(model):
    """Top-level recurrent layers of a functional (or Sequential) model."""
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs"):
        return []
    try:
        model.inputs  # noqa: B018  (subclassed models raise here)
    except (AttributeError, ValueError):
        return []
    return [
        layer
        for layer in model.layers
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))
    ]


class TimeProbe:
    """Computes per-time-step gradient norms for the model input and each
    recurrent layer's input sequence, with the backend's own gradient."""

    def __init__(self, model, x, y):
        self.model = model
        self.x = x
        self.y = y
        self._targets = None

    def _build_targets(self):
        """[(name, head or None, tail)]: head maps the model input to the
        probed tensor, tail maps it to the output."""
        model = self.model
        targets = [("input", None, model)]
        for layer in recurrent_layers(model):
            try:
                probed = layer.input
                # After a Masking layer (or with initial states) the layer's
                # inputs are [sequence, mask, ...]: the rest travel along.
                probed = list(probed) if isinstance(probed, (list, tuple)) else [probed]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    head = keras.Model(model.inputs, probed)
                    tail = keras.Model(probed, model.outputs)
            except Exception:  # a layer used twice, or not in the graph
                continue
            targets.append((layer.name, head, tail))
        self._targets = targets

    def _norms(self, tail, seq, extra, y):
        """mean_i |d loss_i / d seq_{i,t}| for each t."""
        batch = seq.shape[0]

        def loss_fn(s):
            y_pred = tail([s, *extra] if extra else s, training=False)
            if isinstance(y_pred, (list, tuple)) and len(y_pred) == 1:
                y_pred = y_pred[0]
            loss = self.model.compute_loss(x=self._x, y=y, y_pred=y_pred, training=False)
            # Per-example loss: the batch mean times the batch size.
            return ops.cast(loss, "float32") * batch

        _, (grad,), _ = value_and_gradients(loss_fn, [seq])
        grad = grad.astype("float64")
        axes = tuple(range(2, grad.ndim))
        per_step = np.sqrt(np.sum(np.square(grad), axis=axes)) if axes else np.abs(grad)
        return per_step.mean(axis=0)

    def compute(self):
        """{name: float64 numpy array of shape (timesteps,)}."""
        if self._targets is None:
            self._build_targets()
        y = keras.tree.map_structure(ops.convert_to_tensor, self.y)
        self._x = ops.convert_to_tensor(self.x)
        results = {}
        for name, head, tail in self._targets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs = self.x if head is None else head(self._x, training=False)
                seq, *extra = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                if len(seq.shape) < 2:
                    continue
                seq = ops.convert_to_numpy(seq)
                extra = [ops.convert_to_tensor(ops.convert_to_numpy(e)) for e in extra]
                results[name] = self._norms(tail, seq, extra, y)
        return results


def plot_png(norms, title):
    """`(png_bytes, width, height)`: `norms` against the time step, log-scale y axis."""
    norms = np.asarray(norms, dtype="float64")
    r = reach(norms)

    def draw(ax):
        steps = np.arange(norms.size)
        positive = norms > 0
        ax.plot(steps[positive], norms[positive], lw=1.2)
        _plots.mark_zeros(ax, steps, norms)
        ax.set_xlim(0, max(norms.size - 1, 1))
        ax.set_xlabel("time step t")
        ax.set_ylabel("mean |d loss / d x_t|")
        if norms.size and r < norms.size:
            ax.axvline(norms.size - r - 0.5, color="tab:red", ls="--", lw=1, label=f"reach = {r} steps")

    return _plots.figure_png(draw, f"{title}\nreach {r} of {norms.size} steps")
