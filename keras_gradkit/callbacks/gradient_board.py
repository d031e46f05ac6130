"""`GradientBoard`: gradient histograms, norms, clipping and gradient flow
through time, written for TensorBoard."""

import contextlib
import logging
import math
import os
import re
import warnings

import keras
import numpy as np

from keras_gradkit import _recording, _validation, backend, clipping
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.callbacks import _depth, _event_writer, _time_probe
from keras_gradkit.diagnostics import _depth as _depth_measure
from keras_gradkit.diagnostics import _findings
from keras_gradkit.diagnostics import _time as _time_measure
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
    found = _validation.patterns(name, value, allow_none=True)
    return None if found is None else [re.compile(p) for p in found]


def _as_int(step):
    """A scalar integer tensor or variable (e.g. `optimizer.iterations`) as an int; anything else as it is."""
    if isinstance(step, (bool, int, np.integer)) or not hasattr(step, "shape"):
        return step
    value = np.asarray(keras.ops.convert_to_numpy(step))
    return int(value) if value.shape == () and np.issubdtype(value.dtype, np.integer) else step


def _strategy_scope(model):
    """The model's `tf.distribute` strategy scope, or a null context."""
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


class _Sources:
    """Where the statistics of an optimizer's steps come from.

    A `ClippedOptimizer` records its own steps. Any other optimizer (the
    model's, or a `LossScaleOptimizer` around a `ClippedOptimizer`, whose
    skipped steps the `ClippedOptimizer` never sees) is watched by a
    `Monitor`; a `ClippedOptimizer` inside it still reports its clipping.
    Each recorder is read once until `invalidate()` (a read is a device
    synchronization).
    """

    def __init__(self, optimizer, monitor=None):
        self.clipped = _find_clipped_optimizer(optimizer)
        self.monitor = monitor
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self._cache = {}

    def invalidate(self):
        """Forgets what was read: the next reads see the latest step."""
        self._cache = {}

    def _read(self, recorder):
        key = id(recorder)
        if key not in self._cache:
            self._cache[key] = recorder.latest()
        return self._cache[key]

    @property
    def variables(self):
        if self.monitor is not None:
            return self.monitor.recorder.variables
        return self.clipped.watched_variables

    @property
    def records_gradients(self):
        if self.clipped is not None and self.clipped._recording:
            return True
        return self.monitor is not None and self.monitor.recorder.gradients

    @property
    def has_policy(self):
        """Whether the updates are clipped (a ClippedOptimizer, or Keras's own clipping)."""
        if self.clipped is not None:
            return True
        return not isinstance(self.monitor.policy, clipping.NoClip)

    @property
    def can_skip(self):
        """Whether updates can be skipped (a ClippedOptimizer's policy, a LossScaleOptimizer)."""
        return self.clipped is not None or self.loss_scaled

    def _own(self):
        return self._read(self.clipped._recorder) if self.clipped is not None else None

    def latest(self):
        """The latest step's `StepStatistics` (clipping from the ClippedOptimizer), or None."""
        own = self._own()
        if self.monitor is None:
            return own
        latest = self._read(self.monitor.recorder)
        if latest is None or own is None:
            return latest
        gradients = own.gradients if own.gradients is not None else latest.gradients
        return latest._replace(
            global_norm_clipped=own.global_norm_clipped,
            threshold=own.threshold,
            clipped=own.clipped,
            gradients=gradients,
        )

    def sinks(self):
        """Where the watched steps publish their statistics."""
        recorders = [] if self.clipped is None else [self.clipped._recorder]
        if self.monitor is not None:
            recorders.append(self.monitor.recorder)
        return [r.sink for r in recorders]

    def counts(self):
        """`(steps, clipped_steps, skipped_steps)`: running totals."""
        steps = clipped = skipped = 0
        if self.clipped is not None:
            # The ClippedOptimizer's saved counters (read once, as the recorders).
            if "counters" not in self._cache:
                self._cache["counters"] = self.clipped.gradient_statistics()
            stats = self._cache["counters"]
            steps, clipped, skipped = stats["steps"], stats["clipped_steps"], stats["skipped_steps"]
        if self.monitor is not None:
            latest = self._read(self.monitor.recorder)
            if latest is not None:
                if self.clipped is None:
                    steps, clipped = latest.steps, latest.clipped_steps
                else:
                    steps = max(steps, latest.steps)
                skipped += latest.skipped_steps
        return steps, clipped, skipped

    def totals(self):
        """The running totals behind the epoch means: `{"norm": ..., "clipped": ...}`,
        each the `_recording.TOTALS` dict of the recorder that measures the
        global norm (the monitor's, when there is one) and of the one that
        measures the clipping (the ClippedOptimizer's, when there is one)."""
        zeros = dict.fromkeys(_recording.TOTALS, 0.0)

        def of(latest):
            return dict(latest.totals) if latest is not None else dict(zeros)

        own = self._own()
        watched = self._read(self.monitor.recorder) if self.monitor is not None else own
        return {"norm": of(watched), "clipped": of(own if own is not None else watched)}

    def gradients(self):
        """`{variable path: latest applied gradient}` (empty before the first step)."""
        latest = self.latest()
        if latest is None or latest.gradients is None:
            return {}
        return {v.path: g for v, g in zip(self.variables, latest.gradients)}


class _TracedStep:
    """A model's train function traced with the monitor's hook, kept across
    `fit` calls (and GradientBoard instances) so that it is traced once."""

    def __init__(self, model, function):
        self.function = function
        self.plain = None
        self.token = _compile_token(model)


def _compile_token(model):
    """What `compile` replaces: a traced train function is valid while these are the same."""
    return (
        model.optimizer,
        getattr(model, "_compile_loss", None),
        getattr(model, "_compile_metrics", None),
        model.steps_per_execution,
        model.jit_compile,
        model.run_eagerly,
    )


def _same(a, b):
    return len(a) == len(b) and all(
        x is y or (not hasattr(x, "__dict__") and x == y) for x, y in zip(a, b)
    )


# Kept on the model (not in a module-level mapping, whose values would keep
# every model alive through its train function); Keras does not save it.
_TRACED_ATTRIBUTE = "_keras_gradkit_traced_step"


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
    (so `jit_compile=True` and `steps_per_execution > 1` work) and written
    here. The model's optimizer stays the object you compiled with, of its
    own class, with the same variables: a `ClippedOptimizer` records its own
    steps (when histograms are written its gradient copies are switched on;
    they are not saved and its config does not change); any other optimizer
    gets, for the duration of `fit`, a hook on its own `apply` (TensorFlow,
    PyTorch) or `stateless_apply` (JAX) that reports Keras's own
    `clipnorm`, `global_clipnorm` or `clipvalue` and, under mixed precision,
    the loss scale and the steps the `LossScaleOptimizer` skips. What Keras
    saves (`model.save`, `ModelCheckpoint`, `BackupAndRestore`) is what it
    saves without this callback. The train function traced with the hook is
    kept for the model: adding the callback to a model's `fit` calls, or
    removing it, costs at most one retrace, and a `fit` without it runs the
    plain train function. Works on TensorFlow, JAX and PyTorch, and writes
    with TensorBoard's own record format (TensorFlow need not be installed,
    and is not imported on JAX or PyTorch; a remote `log_dir` such as
    `gs://...` needs it, for `tf.io.gfile`).

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
      `clipping/skipped_steps` (running total, including the steps a
      `LossScaleOptimizer` skips; a step whose gradient is not finite is
      still written, with its non-finite norms);
    - under mixed precision, scalar `mixed_precision/loss_scale`: the loss
      scale of the latest step;
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

    - every histogram epoch, the gradient across depth: for the model's
      top-level layers with trainable variables, in order (a nested block is
      one layer), the norm of the layer's applied gradient, as an image
      `gradient_depth` (log scale, first layer on the left), a tensor
      `gradient_depth/norms` and a scalar `gradient_depth/first_to_last`.

    - every histogram epoch (unless `diagnose=False`), the gradient
      doctor's report as Markdown on the Text dashboard, tag `diagnosis`:
      the checks of `keras_gradkit.diagnose` made from what this callback
      already computed (the latest step's gradient and weight norms per
      layer, the time probe when given) plus the training-time kinds
      `large_updates` (the latest step's largest per-layer update ratio, or
      the root mean square of the update ratios since the previous check),
      `frequent_clipping`
      and `skipped_steps` (fractions of the updates since the previous
      check). Each new `(kind, where)` is warned once with a
      `keras_gradkit.diagnostics.GradientWarning`; `report` holds the latest
      report and `findings` every finding seen.

    Keras logs: at each epoch end it adds to `logs` `gradient_norm` (the mean
    of the global gradient norms of the epoch's applied updates; NaN when one
    of them was not finite), and where they exist `gradient_norm_clipped` and
    `clipped_fraction` (when the updates are clipped), `skipped_steps` (the
    running total, with a `ClippedOptimizer` or a `LossScaleOptimizer`),
    `time_reach` (with `time_probe`) and `depth_first_to_last` (histogram
    epochs); when `update_freq` writes batches, the written step's values at
    that batch's end. `History`, the progress bar and every callback after
    this one in the list see them, e.g.
    `keras.callbacks.EarlyStopping(monitor="gradient_norm", mode="min")` or
    `keras.callbacks.CSVLogger`: put GradientBoard before them.

    Steps follow Keras's `TensorBoard` callback: epoch-level events
    (`update_freq="epoch"`, histograms, probes) at the epoch, batch-level
    ones at the optimizer's update count. A resumed run (`BackupAndRestore`)
    writes at the true steps again, and TensorBoard drops the points the
    restart orphaned; only a re-compiled optimizer that counts from 0 again
    gets an offset, so its batch-level steps continue after the last ones.

    Args:
        log_dir: str, directory for the logs (the `train` run goes in
            `log_dir/train`). Checked at the start of training: one that
            cannot be written raises a `ValueError` then.
        histogram_freq: int >= 0, write gradient histograms (with the
            gradient across depth and the time probe) every this many epochs;
            0 turns them off. Defaults to 1.
        update_freq: `"epoch"`, `"batch"` or a positive int: write the
            scalars at the end of each epoch, after each batch, or every this
            many batches. Defaults to `"epoch"`.
        include: None, a regular expression or a list of them: only
            variables whose path matches one (`re.search`) are logged.
            Defaults to None (all trainable variables).
        exclude: None, a regular expression or a list of them: variables
            whose path matches one are not logged. Defaults to None.
        time_probe: None or a tuple `(x, y)`: a small batch of sequences
            and their targets: float `(batch, timesteps, features)`, or
            integer tokens `(batch, timesteps)` for a model whose first layer
            embeds them (the gradient is then taken with respect to that
            layer's output, and with `mask_zero` the reach counts unmasked
            steps only; a step masked in every probe sequence reads NaN).
            Checked against the model when training starts.
            Defaults to None.
        write_plots: bool, write the time-gradient and depth images. The
            tensors and scalars are written either way. Defaults to True.
        diagnose: bool, run the gradient doctor's checks each histogram
            epoch (Text dashboard, warnings). Defaults to True.
        thresholds: None (the defaults), a
            `keras_gradkit.diagnostics.Thresholds` or its `to_dict()` (as
            `get_config` stores it). Defaults to None.
        stop_on: a kind of finding or a sequence of them
            (`keras_gradkit.diagnostics.KINDS`): set `model.stop_training`
            after the write in which one of them appears, as
            `keras.callbacks.TerminateOnNaN` does. Defaults to ().
        raise_on: a kind of finding or a sequence of them: raise a
            `keras_gradkit.diagnostics.GradientError` instead, which ends
            `fit` without `on_train_end`, so
            `keras.callbacks.BackupAndRestore` keeps its backup.
            Defaults to ().

    Example:

    ```python
    import keras, numpy as np, keras_gradkit
    x = np.random.rand(16, 10, 2).astype("float32")
    y = np.random.rand(16, 1).astype("float32")
    model = keras.Sequential([keras.Input((10, 2)), keras.layers.LSTM(8), keras.layers.Dense(1)])
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
        diagnose=True,
        thresholds=None,
        stop_on=(),
        raise_on=(),
    ):
        super().__init__()
        if not isinstance(log_dir, (str, os.PathLike)):
            raise TypeError(
                f"Argument `log_dir` must be a path (str or os.PathLike). Received: log_dir={log_dir!r}"
            )
        if not os.fspath(log_dir):
            raise ValueError(
                f"Argument `log_dir` must be a non-empty path. Received: log_dir={log_dir!r}"
            )
        _validation.non_negative_int("histogram_freq", histogram_freq)
        expected = 'Argument `update_freq` must be "epoch", "batch" or a positive integer. '
        if isinstance(update_freq, str):
            if update_freq not in ("epoch", "batch"):
                raise ValueError(f"{expected}Received: update_freq={update_freq!r}")
        else:
            _validation.positive_int("update_freq", update_freq)
        _validation.bool_arg("write_plots", write_plots)
        _validation.bool_arg("diagnose", diagnose)
        thresholds = _findings.check_thresholds(thresholds)
        stop_on = _findings.check_kinds("stop_on", stop_on)
        raise_on = _findings.check_kinds("raise_on", raise_on)
        if not diagnose and (stop_on or raise_on):
            raise ValueError(
                "Arguments `stop_on` and `raise_on` need the checks: they cannot be used with "
                f"`diagnose=False`. Received: stop_on={stop_on!r}, raise_on={raise_on!r}"
            )
        if (stop_on or raise_on) and not histogram_freq:
            raise ValueError(
                "Arguments `stop_on` and `raise_on` need `histogram_freq` > 0: the checks run each "
                f"time histograms are written. Received: histogram_freq={histogram_freq!r}"
            )
        self.diagnose = diagnose
        self.thresholds = thresholds
        self.stop_on = stop_on
        self.raise_on = raise_on
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.update_freq = update_freq
        self.include = include
        self.exclude = exclude
        self.time_probe = _time_measure.validate_time_probe(time_probe)
        self.write_plots = write_plots
        self._include = _compile_patterns("include", include)
        self._exclude = _compile_patterns("exclude", exclude)
        self._writer = None
        self._sources = None
        self._remove_hook = None
        self._probe = None
        self._failures = set()
        self._counts_at_last_write = None
        self._last_batch_step = -1
        self._batch_offset = 0
        self._loop_offset = None
        self._loop_last_step = -1
        self._report = None
        self._findings = {}
        self._epoch_totals = None
        self._check_counts = None
        self._check_totals = None

    @property
    def report(self):
        """The `keras_gradkit.diagnostics.Report` of the latest check (None before the first)."""
        return self._report

    @property
    def findings(self):
        """Every `(kind, where)` found since this callback was created, as the
        `Finding` of its first check, in the order they appeared."""
        return list(self._findings.values())

    def get_config(self):
        return {
            "log_dir": self.log_dir,
            "histogram_freq": self.histogram_freq,
            "update_freq": self.update_freq,
            "include": self.include,
            "exclude": self.exclude,
            # Nested lists, JSON-safe, as Keras's `Normalization` stores its
            # arrays; the constructor reads them back as arrays.
            "time_probe": (
                None
                if self.time_probe is None
                else [keras.tree.map_structure(lambda a: a.tolist(), p) for p in self.time_probe]
            ),
            "write_plots": self.write_plots,
            "diagnose": self.diagnose,
            "thresholds": self.thresholds.to_dict(),
            "stop_on": list(self.stop_on),
            "raise_on": list(self.raise_on),
        }

    # ------------------------------------------------------------ helpers
    @property
    def async_safe(self):
        # With epoch-level scalars the batch hook does nothing: Keras may keep
        # dispatching batch callbacks asynchronously (it stops when any callback
        # overrides `on_train_batch_end` without saying it is safe).
        return self.update_freq == "epoch"

    @property
    def _train_dir(self):
        return os.path.join(self.log_dir, "train")

    def _check_log_dir(self):
        if _event_writer.is_remote(
            self.log_dir
        ):  # through tf.io.gfile, or a clear error without TensorFlow
            _event_writer.makedirs(self._train_dir)
            return
        test_file = os.path.join(self._train_dir, f".gradient_board_write_test_{os.getpid()}")
        try:
            os.makedirs(self._train_dir, exist_ok=True)
            with open(test_file, "w") as f:
                f.write("ok")
            os.remove(test_file)
        except OSError as e:
            raise ValueError(
                f"Argument `log_dir` must be a directory GradientBoard can write to, but "
                f"{self._train_dir!r} cannot be written ({type(e).__name__}: {e}). "
                f"Received: log_dir={self.log_dir!r}"
            ) from e

    def _get_writer(self):
        if self._writer is None:
            self._writer = _event_writer.EventWriter(self._train_dir)
        return self._writer

    def _logged(self, path):
        if self._include is not None and not any(p.search(path) for p in self._include):
            return False
        if self._exclude is not None and any(p.search(path) for p in self._exclude):
            return False
        return True

    def _iterations(self):
        return int(np.asarray(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

    def _sync(self):
        """Makes the variables hold the live training state (the JAX trainer
        keeps it outside them during an epoch)."""
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()

    def _guarded(self, what, fn):
        """Runs a logging function and returns its value; a failure is logged
        (once), training goes on and None is returned."""
        try:
            return fn()
        except Exception:
            if what not in self._failures:
                self._failures.add(what)
                logger.exception(
                    "GradientBoard could not write %s; training continues without them.", what
                )
            return None

    # ------------------------------------------------------ recording set-up
    def _start_recording(self):
        """Where this `fit`'s statistics come from, and the train function that records them.

        The model's optimizer is left as it is: a `ClippedOptimizer` records
        its own steps (its gradient copies are switched on when histograms
        need them; they are not saved); any other optimizer gets a monitor's
        hook on its own `apply` / `stateless_apply` for the duration of `fit`.
        The train function traced with the hook is kept for the model, so it
        is traced once, however many `fit` calls and GradientBoards follow.
        """
        model = self.model
        optimizer = model.optimizer
        if optimizer is None:
            raise ValueError(
                "GradientBoard needs a compiled model: call `model.compile(optimizer=...)` first."
            )
        if not optimizer.built:  # as Keras builds it in `apply`: same variable paths
            with _strategy_scope(model), keras.name_scope(optimizer.name, caller=optimizer):
                optimizer.build(model.trainable_variables)
        clipped = _find_clipped_optimizer(optimizer)
        retrace = False
        if clipped is not None and self.histogram_freq and not clipped._recording:
            with _strategy_scope(model):
                clipped.enable_gradient_recording()
            retrace = True
        if optimizer is clipped:
            self._sources = _Sources(optimizer)
            if retrace or backend.get("recording").collects_on_device():
                self._use_traced_step(retrace)
            return
        monitor = _recording.monitor_for(optimizer)
        gradients = self.histogram_freq > 0 and clipped is None
        with _strategy_scope(model):
            retrace = monitor.prepare(optimizer._trainable_variables, True, gradients) or retrace
        self._remove_hook = backend.get("recording").install(optimizer, monitor)
        monitor.active = True
        self._sources = _Sources(optimizer, monitor)
        self._use_traced_step(retrace)

    def _use_traced_step(self, retrace):
        model = self.model
        found = model.train_function
        traced = getattr(model, _TRACED_ATTRIBUTE, None)
        if traced is not None and not retrace and _same(traced.token, _compile_token(model)):
            if found is not traced.function:
                traced.plain = found
                model.train_function = traced.function
            return
        # A train function already traced without the hook would not record.
        backend.get("recording").make_train_function(model, self._sources.sinks())
        traced = _TracedStep(model, model.train_function)
        traced.plain = found
        setattr(model, _TRACED_ATTRIBUTE, traced)

    def _stop_recording(self):
        if self._remove_hook is not None:
            self._sources.monitor.active = False
            self._remove_hook()
            self._remove_hook = None
        traced = getattr(self.model, _TRACED_ATTRIBUTE, None)
        if traced is not None and self.model.train_function is traced.function:
            # The next fit without GradientBoard runs the plain train function.
            self.model.train_function = traced.plain

    # ----------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        self._check_log_dir()
        self._stop_recording()  # after a fit that ended in an exception
        self._start_recording()
        # Batch-level steps are the optimizer's update count, as Keras's own
        # `batch_*` curves; a re-compiled optimizer that counts from 0 again
        # continues after this callback's last step.
        iterations = self._iterations()
        self._batch_offset = (
            self._last_batch_step if iterations == 0 and self._last_batch_step > 0 else 0
        )
        if self.time_probe is not None:
            if self._probe is None or self._probe.model is not self.model:
                self._probe = _time_measure.TimeProbe(self.model, *self.time_probe)
            self._probe.check()
        self._sources.invalidate()
        self._counts_at_last_write = self._sources.counts()[:2]
        self._check_counts = self._sources.counts()
        self._epoch_totals = self._sources.totals()
        self._check_totals = self._epoch_totals["norm"]

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        every = 1 if self.update_freq == "batch" else self.update_freq
        self._sync()
        step = self._iterations() + self._batch_offset
        if step - max(self._last_batch_step, self._batch_offset) >= every:
            self._last_batch_step = step
            self._sources.invalidate()
            values = self._guarded("scalars", lambda: self._write_scalars(step))
            if values and logs is not None:
                logs.update(self._batch_logs(values))

    def on_epoch_end(self, epoch, logs=None):
        # Epoch-level events at the epoch, as Keras's `epoch_*` curves.
        self._sync()
        self._sources.invalidate()
        if self.update_freq == "epoch":
            self._guarded("scalars", lambda: self._write_scalars(epoch))
        keras_logs = self._guarded("Keras logs", self._epoch_logs) or {}
        report = None
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            self._guarded("gradient histograms", lambda: self._write_histograms(epoch))
            ratio = self._guarded("gradient across depth", lambda: self._write_depth(epoch))
            if ratio is not None:
                keras_logs["depth_first_to_last"] = ratio
            results = None
            if self._probe is not None:
                results = self._guarded(
                    "time-probe summaries", lambda: self._write_time_probe(epoch)
                )
                for name, _, reach in results or ():
                    if name == "input":
                        keras_logs["time_reach"] = float(reach)
            if self.diagnose:
                report = self._guarded("diagnosis", lambda: self._check(epoch, results))
        if logs is not None:
            logs.update(keras_logs)
        if self._writer is not None:
            self._writer.flush()
        if report is not None:
            self._act_on(report)

    def on_train_end(self, logs=None):
        self._stop_recording()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # ------------------------------------------------------------ Keras logs
    def _batch_logs(self, values):
        """The Keras logs of a batch-level write, from the scalars it wrote."""
        found = {"gradient_norm": values["gradient_norm/global"]}
        if self._sources.has_policy:
            found["gradient_norm_clipped"] = values["gradient_norm/global_clipped"]
            if "clipping/clipped_fraction" in values:
                found["clipped_fraction"] = values["clipping/clipped_fraction"]
        if self._sources.can_skip:
            found["skipped_steps"] = values["clipping/skipped_steps"]
        return found

    def _epoch_logs(self):
        """The epoch's means of the global norms before and after clipping,
        its clipped fraction and the running total of skipped steps."""
        start, now = self._epoch_totals, self._sources.totals()
        self._epoch_totals = now
        found = {}

        def mean(which, key):
            applied = now[which]["applied_steps"] - start[which]["applied_steps"]
            if not applied:
                return None
            if now[which]["non_finite_applied_steps"] > start[which]["non_finite_applied_steps"]:
                return math.nan
            return (now[which][key] - start[which][key]) / applied

        value = mean("norm", "global_norm_sum")
        if value is None:
            return found
        found["gradient_norm"] = value
        if self._sources.has_policy:
            found["gradient_norm_clipped"] = mean("clipped", "global_norm_clipped_sum")
            steps = now["clipped"]["steps"] - start["clipped"]["steps"]
            if steps:
                clipped = now["clipped"]["clipped_steps"] - start["clipped"]["clipped_steps"]
                found["clipped_fraction"] = clipped / steps
        if self._sources.can_skip:
            found["skipped_steps"] = float(self._sources.counts()[2])
        return {k: v for k, v in found.items() if v is not None}

    # ------------------------------------------------------------- checks
    def _check(self, step, time_results):
        """The report of the latest step (and of the time probe), written to
        the Text dashboard under `diagnosis`."""
        latest = self._sources.latest()
        if latest is None:
            return None
        thresholds = self.thresholds
        variables = self._sources.variables

        def by_layer(values):
            return _depth_measure.layer_norms(
                self.model, {v.path: float(n) for v, n in zip(variables, values)}
            )

        names, norms = by_layer(latest.gradient_norms)
        measures = {
            "gradient_norm": latest.global_norm,
            "depth": {
                "layers": names,
                "norms": norms,
                "first_to_last": _depth_measure.first_to_last(norms),
            },
        }
        findings = []
        # A step the LossScaleOptimizer skipped is not finite by design: it
        # counts in skipped_steps.
        non_finite = None
        weights = None if latest.weight_norms is None else by_layer(latest.weight_norms)[1]
        if not (self._sources.loss_scaled and latest.skipped):
            non_finite = _findings.non_finite_finding(names, norms, weights)
        elif weights is not None:  # the weights themselves must still be finite
            non_finite = _findings.non_finite_finding(names, [0.0] * len(names), weights)
        if non_finite is not None:
            findings.append(non_finite)
        else:
            if time_results is not None:
                found, measures["time"] = _findings.time_findings(
                    self.model, time_results, thresholds
                )
                findings += found
            findings += _findings.depth_findings(self.model, names, norms, thresholds)
        findings += self._training_findings(latest, by_layer, measures)
        report = _findings.Report(_findings.sort_findings(findings), measures)
        self._get_writer().write(
            [_event_writer.text_value("diagnosis", report.to_markdown())], step
        )
        self._report = report
        return report

    def _training_findings(self, latest, by_layer, measures):
        steps, clipped, skipped = self._sources.counts()
        last_steps, last_clipped, last_skipped = self._check_counts or (0, 0, 0)
        self._check_counts = (steps, clipped, skipped)
        totals = self._sources.totals()["norm"]
        last = self._check_totals or dict.fromkeys(totals, 0.0)
        self._check_totals = totals
        ratio_steps = totals["update_ratio_steps"] - last["update_ratio_steps"]
        squares = totals["update_ratio_square_sum"] - last["update_ratio_square_sum"]
        rms = math.sqrt(max(squares, 0.0) / ratio_steps) if ratio_steps else None
        largest = layer = None
        if latest.update_norms is not None and not latest.skipped:
            names, deltas = by_layer(latest.update_norms)
            _, weights = by_layer(latest.weight_norms)
            ratios = [(d / w if w else math.nan, n) for n, d, w in zip(names, deltas, weights)]
            ratios = [(r, n) for r, n in ratios if math.isfinite(r)]
            if ratios:
                largest, layer = max(ratios)
        return _findings.training_findings(
            steps - last_steps,
            clipped - last_clipped if self._sources.has_policy else None,
            skipped - last_skipped if self._sources.can_skip else None,
            (largest, layer, rms),
            self.thresholds,
            measures,
        )

    def _act_on(self, report):
        """Warns once per new `(kind, where)`; stops or raises as asked."""
        for finding in report.findings:
            key = (finding.kind, finding.where)
            if key not in self._findings:
                self._findings[key] = finding
                warnings.warn(
                    _findings.GradientWarning(
                        f"GradientBoard: {finding.kind} at {finding.where} "
                        f"(value {finding.value:.3g}, threshold {finding.threshold:.3g}). "
                        f"{finding.advice}"
                    ),
                    stacklevel=2,
                )
        raising = [f for f in report.findings if f.kind in self.raise_on]
        if raising:
            self._stop_recording()
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            kinds = ", ".join(f"{f.kind} at {f.where}" for f in raising)
            raise _findings.GradientError(
                f"GradientBoard(raise_on=...) found {kinds}:\n{report}", raising
            )
        if any(f.kind in self.stop_on for f in report.findings):
            self.model.stop_training = True

    def gradient_statistics(self):
        """The latest training step's statistics, as the flat dict of
        `ClippedOptimizer.gradient_statistics()` (same keys), whatever the
        model's optimizer is.

        Before the first recorded step of this callback the norms are NaN.
        The running totals count the steps recorded since the model's
        optimizer was first watched (for a `ClippedOptimizer`, its saved
        totals). Call it from a callback placed after this one, or after
        `fit`.
        """
        if self._sources is None:
            return _recording.flat_statistics(None, (0, 0, 0), [], False)
        self._sync()
        self._sources.invalidate()
        return _recording.flat_statistics(
            self._sources.latest(), self._sources.counts(), self._sources.variables, True
        )

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
        import keras, numpy as np, keras_gradkit
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        optimizer = keras_gradkit.optimizers.ClippedOptimizer(
            keras.optimizers.SGD(0.1), keras_gradkit.clipping.ClipByGlobalNorm(1.0))
        board = keras_gradkit.callbacks.GradientBoard("runs/loop")
        for step in range(3):
            # Your loop computes these with its backend's autodiff.
            grads = [np.ones(v.shape, "float32") for v in model.trainable_variables]
            optimizer.apply(grads, model.trainable_variables)
            board.write_statistics(optimizer, step)
        ```
        """
        found = self._check_loop_arguments(optimizer, step, histograms)
        step = self._loop_step(int(_as_int(step)))
        if step is None:
            return
        sources = _Sources(found)
        self._write_scalars(step, sources)
        if histograms:
            self._write_histograms(step, sources)
        self._get_writer().flush()

    def _check_loop_arguments(self, optimizer, step, histograms):
        found = _find_clipped_optimizer(optimizer)
        if found is None:
            raise TypeError(
                "Argument `optimizer` must be a keras_gradkit.optimizers.ClippedOptimizer (or wrap one). "
                f"Received: optimizer={optimizer!r}"
            )
        _validation.non_negative_int("step", _as_int(step))
        _validation.bool_arg("histograms", histograms)
        if histograms and not found._recording:
            raise ValueError(
                "`histograms=True` needs the ClippedOptimizer to keep the gradients: create it with "
                "`record_gradients=True`."
            )
        return found

    def _loop_step(self, step):
        """The step to write for a custom loop's `step`, or None to skip it."""
        if self._loop_offset is None:
            # A loop restarted on an old log_dir continues after its last step.
            self._check_log_dir()
            self._loop_last_step = _event_writer.max_step_on_disk(self._train_dir)
            self._loop_offset = max(0, self._loop_last_step + 1 - step)
            if self._loop_offset:
                logger.warning(
                    "GradientBoard: %r already holds events up to step %d; steps of this loop are written "
                    "with an offset of %d so that they go forward.",
                    self._train_dir,
                    self._loop_last_step,
                    self._loop_offset,
                )
        step += self._loop_offset
        if step <= self._loop_last_step:
            if "old steps" not in self._failures:
                self._failures.add("old steps")
                logger.warning(
                    "GradientBoard.write_statistics: step %d is not after the last step written (%d); "
                    "it is ignored (TensorBoard drops events whose steps go back).",
                    step,
                    self._loop_last_step,
                )
            return None
        self._loop_last_step = step
        return step

    # ------------------------------------------------------------ writing
    def _scalar_values(self, latest, sources):
        values = {
            "gradient_norm/global": latest.global_norm,
            "gradient_norm/global_clipped": latest.global_norm_clipped,
        }
        if math.isfinite(latest.threshold):  # NaN: the policy has none
            values["clipping/threshold"] = latest.threshold
        steps, clipped, skipped = sources.counts()
        values["clipping/skipped_steps"] = float(skipped)
        last_steps, last_clipped = self._counts_at_last_write or (0, 0)
        if steps > last_steps:
            values["clipping/clipped_fraction"] = (clipped - last_clipped) / (steps - last_steps)
        self._counts_at_last_write = (steps, clipped)
        if not math.isnan(latest.loss_scale):
            values["mixed_precision/loss_scale"] = latest.loss_scale
        logged = [(i, v.path) for i, v in enumerate(sources.variables) if self._logged(v.path)]
        for i, path in logged:
            values[f"gradient_norm/{path}"] = float(latest.gradient_norms[i])
        if latest.update_norms is not None:
            for i, path in logged:
                update, weight = float(latest.update_norms[i]), float(latest.weight_norms[i])
                # 0 / 0 (no update of a zero weight) is written as 0.
                values[f"update_ratio/{path}"] = (
                    update / weight if weight else (0.0 if update == 0 else math.inf)
                )
        # Non-finite norms and ratios are written: they are what to look for.
        return values

    def _write_scalars(self, step, sources=None):
        sources = sources or self._sources
        latest = sources.latest()
        if latest is None:
            return
        # All scalars of a step go in one event.
        values = self._scalar_values(latest, sources)
        self._get_writer().write(_event_writer.scalar_values(values), step)
        return values

    def _write_histograms(self, step, sources=None):
        sources = sources or self._sources
        values = []
        for path, gradient in sources.gradients().items():
            if self._logged(path):
                finite = gradient[np.isfinite(gradient)]  # non-finite steps show in gradient_norm/*
                values.append(_event_writer.histogram_value(f"gradients/{path}", finite))
        self._get_writer().write(values, step)

    def _write_depth(self, step):
        gradients = self._sources.gradients()
        if not gradients:
            return
        names, norms = _depth_measure.layer_gradient_norms(self.model, gradients)
        if not norms:
            return
        values = [
            _event_writer.tensor_value(
                "gradient_depth/norms", norms, _depth_measure.PLUGIN, _depth_measure.DESCRIPTION
            ),
            *_event_writer.scalar_values(
                {"gradient_depth/first_to_last": _depth_measure.first_to_last(norms)}
            ),
        ]
        if self.write_plots:
            png, width, height = _depth.plot_png(names, norms, self.model.name)
            values.append(_event_writer.image_value("gradient_depth", png, width, height))
        self._get_writer().write(values, step)
        return _depth_measure.first_to_last(norms)

    def _write_time_probe(self, step):
        values = []
        results = self._probe.compute()
        for name, norms, reach in results:
            tag = f"time_gradient/{name}"
            reach_tag = "time_gradient/reach" if name == "input" else f"{tag}/reach"
            values.append(
                _event_writer.tensor_value(
                    f"{tag}/norms",
                    norms,
                    _event_writer.TIME_GRADIENT_PLUGIN,
                    "Mean over the probe batch of |d loss_i / d x_{i,t}| for each time step t.",
                )
            )
            values += _event_writer.scalar_values({reach_tag: float(reach)})
            if self.write_plots:
                png, width, height = _time_probe.plot_png(norms, f"{self.model.name}: {name}")
                values.append(_event_writer.image_value(tag, png, width, height))
        self._get_writer().write(values, step)
        return results
