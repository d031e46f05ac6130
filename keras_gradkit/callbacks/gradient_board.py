"""`GradientBoard`: gradient histograms, norms, clipping and gradient flow
through time, written for TensorBoard."""

import logging
import math
import os
import re

import keras
import numpy as np

from keras_gradkit import clipping
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.callbacks import _time_probe
from keras_gradkit.optimizers import ClippedOptimizer

logger = logging.getLogger("keras_gradkit")


def _find_clipped_optimizer(optimizer):
    """The `ClippedOptimizer` in `optimizer`'s wrapping chain, or None."""
    while optimizer is not None:
        if isinstance(optimizer, ClippedOptimizer):
            return optimizer
        optimizer = getattr(optimizer, "inner_optimizer", None)
    return None


def _compile_patterns(name, value):
    if value is None:
        return None
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, (list, tuple)) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(
            f"Argument `{name}` must be None, a regular expression string or a list of them "
            f"(matched against variable paths). Received: {name}={value!r}"
        )
    try:
        return [re.compile(p) for p in patterns]
    except re.error as e:
        raise ValueError(f"Argument `{name}` contains an invalid regular expression ({e}). Received: {name}={value!r}")


def _validate_time_probe(time_probe):
    if time_probe is None:
        return None
    if not isinstance(time_probe, (tuple, list)) or len(time_probe) != 2:
        raise ValueError(
            "Argument `time_probe` must be None or a tuple `(x, y)` of a small batch of sequences "
            f"and their targets. Received: time_probe={time_probe!r}"
        )
    x, y = time_probe
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) < 3:
        raise ValueError(
            "Argument `time_probe` must hold sequences `x` of shape (batch, timesteps, features). "
            f"Received: time_probe[0] with shape={shape}"
        )
    y_len = getattr(y, "shape", [None])[0] if not isinstance(y, (list, tuple, dict)) else None
    if y_len is not None and y_len != shape[0]:
        raise ValueError(
            "Argument `time_probe` must have as many targets as sequences. "
            f"Received: time_probe with x.shape={tuple(shape)} and y.shape={tuple(y.shape)}"
        )
    return (x, y)


def _max_step_on_disk(run_dir):
    """The largest step already written in `run_dir`'s event files (-1 if none)."""
    import tensorflow as tf
    from tensorboard.compat.proto import event_pb2

    largest = -1
    for path in tf.io.gfile.glob(os.path.join(run_dir, "events.out.tfevents*")):
        try:
            for record in tf.data.TFRecordDataset(path):
                event = event_pb2.Event.FromString(record.numpy())
                if event.HasField("summary"):
                    largest = max(largest, int(event.step))
        except Exception:  # a truncated file still gives the steps read so far
            continue
    return largest


def _scalars_summary(values):
    """A serialized `Summary` holding `values` (`{tag: float}`) as standard
    TensorBoard scalars (float32 tensors with the `scalars` plugin's metadata,
    as `tf.summary.scalar` writes them)."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.plugins.scalar import metadata

    summary = summary_pb2.Summary()
    plugin = metadata.create_summary_metadata(display_name=None, description=None)
    for tag, value in values.items():
        tensor = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, float_val=[value], tensor_shape=tensor_shape_pb2.TensorShapeProto()
        )
        summary.value.add(tag=tag, metadata=plugin, tensor=tensor)
    return summary.SerializeToString()


def _norms_metadata():
    from tensorboard.compat.proto import summary_pb2

    metadata = summary_pb2.SummaryMetadata(
        summary_description="Mean over the probe batch of |d loss_i / d x_{i,t}| for each time step t."
    )
    metadata.plugin_data.plugin_name = "keras_gradkit_time_gradient"
    return metadata.SerializeToString()


@keras_gradkit_export
class GradientBoard(keras.callbacks.Callback):
    """Writes gradient histograms, gradient norms, clipping statistics and
    gradient flow through time to TensorBoard.

    Use it to see vanishing and exploding gradients while a model trains:
    add it to `model.fit(callbacks=[...])`, nothing else is needed. It shows
    the gradient the optimizer actually applied (after the cross-replica sum
    under `MirroredStrategy`, unscaled under mixed precision, averaged under
    gradient accumulation, after clipping), which a GradientTape in a
    callback cannot see. The statistics are recorded inside the train step
    by `keras_gradkit.optimizers.ClippedOptimizer` (so `jit_compile=True`
    works) and written here. If the model's optimizer is not a
    `ClippedOptimizer`, it is wrapped at the start of training in a
    monitor-only one (`keras_gradkit.clipping.NoClip()`, with
    `record_gradients=True`) that keeps Keras's own `clipnorm`,
    `global_clipnorm` or `clipvalue` and reports them; this is logged once.

    Everything goes to the `train` run under `log_dir`, with the standard
    TensorBoard plugins. With `g_v` the applied gradient of variable `v`,
    `g` all of them before clipping and `g'` after:

    - histogram `gradients/<variable path>`: the values of `g_v`, every
      `histogram_freq` epochs;
    - scalars `gradient_norm/<variable path>` (`|g_v|` before clipping),
      `gradient_norm/global` (`|g|`), `gradient_norm/global_clipped`
      (`|g'|`), every `update_freq`;
    - scalars `clipping/threshold`, `clipping/clipped_fraction` (the fraction
      of optimizer updates the policy changed since the previous write) and
      `clipping/skipped_steps` (running total);
    - scalar `update_ratio/<variable path>`: `|w_new - w_old| / |w_new|`
      (0 when both are 0);
    - with `time_probe=(x, y)`, every histogram epoch: `n_t = mean_i
      |d loss_i / d x_{i,t}|` for each time step `t` of the model input,
      as an image `time_gradient/input` (log-scale y axis), a tensor
      `time_gradient/input/norms` and a scalar `time_gradient/reach`, the
      number of steps back from the end over which `n_t >= 1e-3 max_t n_t`.
      For a functional or Sequential model, the same for the input sequence
      of each recurrent layer: `time_gradient/<layer name>`,
      `time_gradient/<layer name>/norms`, `time_gradient/<layer name>/reach`.

    The step of every event is the optimizer's iteration count (plus an
    offset when needed), so steps only go forward, also across several
    `fit` calls and when `log_dir` already holds events.

    Args:
        log_dir: str, directory for the logs (the `train` run goes in
            `log_dir/train`). Checked at the start of training: one that
            cannot be written raises a `ValueError` then.
        histogram_freq: int >= 0, write gradient histograms (and the time
            probe) every this many epochs; 0 turns them off. Defaults to 1.
        update_freq: `"epoch"`, `"batch"` or a positive int: write the
            scalars at the end of each epoch, after each batch, or every this
            many batches. Defaults to `"epoch"`.
        include: None, a regular expression or a list of them: only
            variables whose path matches one (`re.search`) are logged.
            Defaults to None (all trainable variables).
        exclude: None, a regular expression or a list of them: variables
            whose path matches one are not logged. Defaults to None.
        time_probe: None or a tuple `(x, y)`: a small batch of sequences
            `(batch, timesteps, features)` and their targets. Defaults to None.
        write_plots: bool, write the time-gradient images (needs matplotlib).
            The tensors and reach scalars are written either way. Defaults
            to True.

    Example:

    ```python
    import keras, numpy as np, keras_gradkit
    x = np.random.rand(32, 20, 2).astype("float32")
    y = np.random.rand(32, 1).astype("float32")
    model = keras.Sequential([keras.Input((20, 2)), keras.layers.LSTM(8), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    board = keras_gradkit.callbacks.GradientBoard("runs/demo", time_probe=(x[:4], y[:4]))
    model.fit(x, y, epochs=2, callbacks=[board], verbose=0)
    # tensorboard --logdir runs/demo
    ```

    References:
        Pascanu et al., [On the difficulty of training recurrent neural networks](https://arxiv.org/abs/1211.5063), 2013.
        Li et al., [Independently Recurrent Neural Network (IndRNN): Building A Longer and Deeper RNN](https://arxiv.org/abs/1803.04831), 2018.
    """

    def __init__(
        self,
        log_dir,
        histogram_freq=1,
        update_freq="epoch",
        include=None,
        exclude=None,
        time_probe=None,
        write_plots=True,
    ):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)) or not os.fspath(log_dir):
            raise ValueError(f"Argument `log_dir` must be a non-empty path. Received: log_dir={log_dir!r}")
        if isinstance(histogram_freq, bool) or not isinstance(histogram_freq, int) or histogram_freq < 0:
            raise ValueError(
                f"Argument `histogram_freq` must be a non-negative integer. Received: histogram_freq={histogram_freq!r}"
            )
        if update_freq not in ("epoch", "batch") and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(
                'Argument `update_freq` must be "epoch", "batch" or a positive integer. '
                f"Received: update_freq={update_freq!r}"
            )
        if not isinstance(write_plots, bool):
            raise TypeError(f"Argument `write_plots` must be a bool. Received: write_plots={write_plots!r}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.update_freq = update_freq
        self.include = include
        self.exclude = exclude
        self.time_probe = _validate_time_probe(time_probe)
        self.write_plots = write_plots
        self._include = _compile_patterns("include", include)
        self._exclude = _compile_patterns("exclude", exclude)
        self._writer = None
        self._offset = None
        self._last_step = {"scalars": -1, "histograms": -1}
        self._max_step = -1
        self._counts_at_last_write = None
        self._probe = None
        self._failures = set()
        self._optimizer = None
        self._loop_offset = None

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "histogram_freq": self.histogram_freq,
            "update_freq": self.update_freq,
            "include": self.include,
            "exclude": self.exclude,
            "time_probe": self.time_probe,
            "write_plots": self.write_plots,
        }

    # ------------------------------------------------------------ helpers
    @property
    def _train_dir(self):
        return os.path.join(self.log_dir, "train")

    def _check_log_dir(self):
        import tensorflow as tf

        test_file = os.path.join(self._train_dir, f".gradient_board_write_test_{os.getpid()}")
        try:
            tf.io.gfile.makedirs(self._train_dir)
            with tf.io.gfile.GFile(test_file, "w") as f:
                f.write("ok")
            tf.io.gfile.remove(test_file)
        except (OSError, tf.errors.OpError) as e:
            raise ValueError(
                f"Argument `log_dir` must be a directory GradientBoard can write to, but "
                f"{self._train_dir!r} cannot be written ({type(e).__name__}: {e}). "
                f"Received: log_dir={self.log_dir!r}"
            ) from e

    def _get_writer(self):
        if self._writer is None:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(self._train_dir)
        return self._writer

    def _logged(self, path):
        if self._include is not None and not any(p.search(path) for p in self._include):
            return False
        if self._exclude is not None and any(p.search(path) for p in self._exclude):
            return False
        return True

    def _step(self):
        return int(np.asarray(self._optimizer.iterations.numpy())) + self._offset

    def _guarded(self, what, fn):
        """Runs a logging function; a failure is logged (once) and training goes on."""
        try:
            fn()
        except Exception:
            if what not in self._failures:
                self._failures.add(what)
                logger.exception("GradientBoard could not write %s; training continues without them.", what)

    # --------------------------------------------------- optimizer set-up
    def _ensure_clipped_optimizer(self):
        model = self.model
        found = _find_clipped_optimizer(model.optimizer)
        if found is not None:
            if self.histogram_freq and not found.record_gradients:
                raise ValueError(
                    "GradientBoard with `histogram_freq > 0` needs the model's ClippedOptimizer to keep "
                    "the gradients: create it with `record_gradients=True`, or pass histogram_freq=0. "
                    f"Received: histogram_freq={self.histogram_freq}"
                )
            return found
        original = model.optimizer
        if original is None:
            raise ValueError("GradientBoard needs a compiled model: call `model.compile(optimizer=...)` first.")
        with model.distribute_strategy.scope():
            wrapper = ClippedOptimizer(original, clipping.NoClip(), record_gradients=self.histogram_freq > 0)
            if original.built:
                # Under a distribution strategy Keras builds the optimizer before
                # callbacks run; build only the wrapper's own variables, so the
                # inner optimizer keeps its slots.
                original.build = lambda var_list: None
                try:
                    wrapper.build(list(model.trainable_variables))
                finally:
                    del original.build
        model.optimizer = wrapper
        # The train function may already be traced with the old optimizer.
        model.make_train_function(force=True)
        base = wrapper.inner_optimizer
        while isinstance(base, keras.optimizers.LossScaleOptimizer):
            base = base.inner_optimizer
        kept = [f"{a}={getattr(base, a)}" for a in ("clipnorm", "global_clipnorm", "clipvalue") if getattr(base, a)]
        logger.warning(
            "GradientBoard: wrapped the model's optimizer %s in keras_gradkit.optimizers.ClippedOptimizer "
            "with the monitor-only policy NoClip() to record gradient statistics%s.",
            type(original).__name__,
            f"; Keras's own clipping ({', '.join(kept)}) is kept and recorded" if kept else "",
        )
        return wrapper

    # ----------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        self._check_log_dir()
        self._optimizer = self._ensure_clipped_optimizer()
        iterations = int(np.asarray(self._optimizer.iterations.numpy()))
        if self._offset is None:
            self._offset = 0
            self._max_step = max(self._max_step, _max_step_on_disk(self._train_dir))
        # Steps must go forward even if the optimizer's count restarted.
        self._offset = max(self._offset, self._max_step - iterations)
        if self.time_probe is not None and (self._probe is None or self._probe.model is not self.model):
            self._probe = _time_probe.TimeProbe(self.model, *self.time_probe)
        self._counts_at_last_write = self._counts()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        every = 1 if self.update_freq == "batch" else self.update_freq
        step = self._step()
        if step - max(self._last_step["scalars"], self._offset) >= every:
            self._guarded("scalars", lambda: self._write_scalars(step))

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if self.update_freq == "epoch":
            self._guarded("scalars", lambda: self._write_scalars(step))
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0 and step > self._last_step["histograms"]:
            self._last_step["histograms"] = step
            self._guarded("gradient histograms", lambda: self._write_histograms(step))
            if self._probe is not None:
                self._guarded("time-probe summaries", lambda: self._write_time_probe(step))
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    # ---------------------------------------------------- custom loops
    def write_statistics(self, optimizer, step, histograms=False):
        """Writes an optimizer's gradient statistics at `step`, for custom training loops.

        `fit` calls this callback by itself; a training loop of your own
        (for example under `tf.distribute.MultiWorkerMirroredStrategy`, where
        Keras's `fit` does not work) calls this after `optimizer.apply(...)`.
        It writes the same scalars as `update_freq` does (`gradient_norm/*`,
        `clipping/*`, `update_ratio/*`) and, with `histograms=True`, the
        `gradients/*` histograms, to the `train` run under `log_dir`, then
        flushes. The statistics are those of the latest update, already
        aggregated over replicas and workers: under a multi-worker strategy
        call it on the chief only (or give each worker its own `log_dir`).
        Steps only go forward: when `log_dir` already holds later events
        (a restarted loop), this loop's steps get an offset, and a `step`
        not greater than the last one written is ignored (both are logged
        once).

        Args:
            optimizer: the `keras_gradkit.optimizers.ClippedOptimizer` (or an
                optimizer wrapping one, such as a `LossScaleOptimizer`).
            step: int >= 0, the step of the events (e.g. the optimizer's
                `iterations`).
            histograms: bool, also write the gradient histograms (needs
                `record_gradients=True` in the `ClippedOptimizer`).

        Example:

        ```python
        board = keras_gradkit.callbacks.GradientBoard("runs/loop")
        for x, y in dataset:
            ...  # compute grads, then optimizer.apply(grads, variables)
            board.write_statistics(optimizer, int(optimizer.iterations.numpy()))
        ```
        """
        found = _find_clipped_optimizer(optimizer)
        if found is None:
            raise TypeError(
                "Argument `optimizer` must be a keras_gradkit.optimizers.ClippedOptimizer (or wrap one). "
                f"Received: optimizer={optimizer!r}"
            )
        step = getattr(step, "numpy", lambda: step)()
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"Argument `step` must be a non-negative integer. Received: step={step!r}")
        if not isinstance(histograms, bool):
            raise TypeError(f"Argument `histograms` must be a bool. Received: histograms={histograms!r}")
        if histograms and not found.record_gradients:
            raise ValueError(
                "`histograms=True` needs the ClippedOptimizer to keep the gradients: create it with "
                "`record_gradients=True`."
            )
        step = int(step)
        if self._loop_offset is None:
            # A loop restarted on an old log_dir continues after its last step.
            self._check_log_dir()
            self._max_step = max(self._max_step, _max_step_on_disk(self._train_dir))
            self._loop_offset = max(0, self._max_step + 1 - step)
            if self._loop_offset:
                logger.warning(
                    "GradientBoard: %r already holds events up to step %d; steps of this loop are written "
                    "with an offset of %d so that they go forward.", self._train_dir, self._max_step, self._loop_offset
                )
        step += self._loop_offset
        if step <= self._max_step:
            if "old steps" not in self._failures:
                self._failures.add("old steps")
                logger.warning(
                    "GradientBoard.write_statistics: step %d is not after the last step written (%d); "
                    "it is ignored (TensorBoard drops events whose steps go back).", step, self._max_step
                )
            return
        self._write_scalars(step, found)
        if histograms:
            self._last_step["histograms"] = step
            self._write_histograms(step, found)
        self._get_writer().flush()

    # ------------------------------------------------------------ writing
    def _counts(self):
        stats = self._optimizer.gradient_statistics()
        return stats["steps"], stats["clipped_steps"]

    def _write_scalars(self, step, optimizer=None):
        import tensorflow as tf

        optimizer = optimizer or self._optimizer
        if step <= self._last_step["scalars"]:
            return
        self._last_step["scalars"] = step
        self._max_step = max(self._max_step, step)
        stats = optimizer.gradient_statistics()
        if stats["steps"] == 0:
            return
        values = {
            "gradient_norm/global": stats["global_norm"],
            "gradient_norm/global_clipped": stats["global_norm_clipped"],
            "clipping/threshold": stats["threshold"],
            "clipping/skipped_steps": stats["skipped_steps"],
        }
        steps, clipped = self._counts_at_last_write or (0.0, 0.0)
        if stats["steps"] > steps:
            values["clipping/clipped_fraction"] = (stats["clipped_steps"] - clipped) / (stats["steps"] - steps)
        self._counts_at_last_write = (stats["steps"], stats["clipped_steps"])
        paths = [v.path for v in optimizer.watched_variables if self._logged(v.path)]
        for path in paths:
            values[f"gradient_norm/{path}"] = stats[f"gradient_norm/{path}"]
        for path in paths if optimizer.record_update_norms else ():
            update, weight = stats[f"update_norm/{path}"], stats[f"weight_norm/{path}"]
            # 0 / 0 (no update of a zero weight) is written as 0.
            values[f"update_ratio/{path}"] = update / weight if weight else (0.0 if update == 0 else math.inf)
        # All scalars of a step go in one event: one summary op instead of one
        # per tag (each costs about 0.1 ms, which dominated update_freq="batch").
        if not math.isfinite(values["clipping/threshold"]):
            del values["clipping/threshold"]  # the policy has none
        # Non-finite norms and ratios are written: they are what to look for.
        summary = _scalars_summary(values)
        with self._get_writer().as_default():
            tf.summary.experimental.write_raw_pb(summary, step=step)

    def _write_histograms(self, step, optimizer=None):
        import tensorflow as tf

        optimizer = optimizer or self._optimizer
        self._max_step = max(self._max_step, step)
        if optimizer.gradient_statistics()["steps"] == 0:
            return
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.histogram import summary_v2

        # Buckets computed in NumPy and written in one event: eager
        # `tf.summary.histogram` costs about 10 ms per variable.
        summary = summary_pb2.Summary()
        for path, gradient in optimizer.last_gradients().items():
            if self._logged(path):
                finite = gradient[np.isfinite(gradient)]  # non-finite steps show in gradient_norm/*
                summary.value.extend(summary_v2.histogram_pb(f"gradients/{path}", finite).value)
        with self._get_writer().as_default():
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)

    def _write_time_probe(self, step):
        import tensorflow as tf

        self._max_step = max(self._max_step, step)
        norms = self._probe.compute()
        with self._get_writer().as_default():
            for name, values in norms.items():
                tag = f"time_gradient/{name}"
                reach_tag = "time_gradient/reach" if name == "input" else f"{tag}/reach"
                tf.summary.write(f"{tag}/norms", tf.constant(values, "float32"), step=step, metadata=_norms_metadata())
                tf.summary.scalar(reach_tag, _time_probe.reach(values), step=step)
                if self.write_plots:
                    png = _time_probe.plot_png(values, f"{self.model.name}: {name}")
                    tf.summary.image(tag, tf.image.decode_png(png, channels=4)[None], step=step)
