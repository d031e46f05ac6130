"""Gradient of the loss with respect to each time step of a sequence (private).

Used by `GradientBoard(time_probe=(x, y))`. Runs outside the train step, on a
small fixed batch, so a GradientTape here is fine (and XLA is not involved).
"""

import io
import warnings

import keras
import numpy as np

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
    recurrent layer's input sequence."""

    def __init__(self, model, x, y):
        import tensorflow as tf

        self._tf = tf
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
        self._targets = [(n, h, t, self._gradient_function(t)) for n, h, t in targets]

    def _gradient_function(self, tail):
        tf = self._tf
        model = self.model

        # Traced with the probe's static shapes (a layer may need the static length).
        @tf.function
        def norms(seq, extra, x, y):
            with tf.GradientTape() as tape:
                tape.watch(seq)
                y_pred = tail([seq, *extra] if extra else seq, training=False)
                if isinstance(y_pred, (list, tuple)) and len(y_pred) == 1:
                    y_pred = y_pred[0]
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
                # Per-example loss: the batch mean times the batch size.
                loss = tf.cast(loss, "float32") * tf.cast(tf.shape(seq)[0], "float32")
            grad = tf.cast(tape.gradient(loss, seq), "float32")
            axes = list(range(2, len(grad.shape)))
            per_step = tf.sqrt(tf.reduce_sum(tf.square(grad), axis=axes)) if axes else tf.abs(grad)
            return tf.reduce_mean(per_step, axis=0)

        return norms

    def compute(self):
        """{name: float64 numpy array of shape (timesteps,)}."""
        if self._targets is None:
            self._build_targets()
        tf = self._tf
        x = tf.convert_to_tensor(self.x)
        y = tf.nest.map_structure(tf.convert_to_tensor, self.y)
        results = {}
        for name, head, _, fn in self._targets:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                outputs = x if head is None else head(x, training=False)
                seq, *extra = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                seq = tf.convert_to_tensor(seq)
                if len(seq.shape) < 2:
                    continue
                results[name] = np.asarray(fn(seq, extra, x, y), dtype="float64")
        return results


def plot_png(norms, title):
    """A PNG (bytes) of `norms` against the time step, log-scale y axis."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    norms = np.asarray(norms, dtype="float64")
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    steps = np.arange(norms.size)
    positive = norms > 0
    ax.plot(steps[positive], norms[positive], lw=1.2)
    if not positive.all():  # exact zeros (underflow) have no place on a log axis
        zeros = steps[~positive]
        ax.plot(zeros, np.full(zeros.shape, norms[positive].min() if positive.any() else 1.0), "|",
                color="tab:gray", ms=4, label=f"exactly 0 at {zeros.size} steps")
    ax.set_yscale("log")
    ax.set_xlim(0, max(norms.size - 1, 1))
    ax.set_xlabel("time step t")
    ax.set_ylabel("mean |d loss / d x_t|")
    r = reach(norms)
    if norms.size and r < norms.size:
        ax.axvline(norms.size - r - 0.5, color="tab:red", ls="--", lw=1, label=f"reach = {r} steps")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    ax.set_title(f"{title}\nreach {r} of {norms.size} steps", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
