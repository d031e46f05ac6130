"""`GradientBoard`: gradient histograms, norms, clipping and gradient flow
through time, written for TensorBoard.

The callback wires its parts: `_attach` (the recording of one `fit`),
`_sources` (reading it), `_window` (spans of running totals), `_summaries`
(what to write), `_event_writer` (how), `_loop_writer` (custom loops) and
the doctor's checks (`keras_gradkit.diagnostics.checks`).
"""

import logging
import os
import re
import warnings

import keras
import numpy as np

from keras_gradkit import _validation, backend
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.callbacks import _doctor, _event_writer, _loop_writer, _summaries
from keras_gradkit.callbacks._attach import Attachment
from keras_gradkit.callbacks._sources import StepSources
from keras_gradkit.callbacks._time_probe import validate_time_probe
from keras_gradkit.callbacks._window import Window
from keras_gradkit.diagnostics import checks, depth, report, time_probe
from keras_gradkit.diagnostics import thresholds as _thresholds
from keras_gradkit.recording import flat_statistics

logger = logging.getLogger("keras_gradkit")


def _compile_patterns(name, value):
    found = _validation.patterns(name, value, allow_none=True)
    return None if found is None else [re.compile(p) for p in found]


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
      number of steps back from the end before `n_t` is 0 or below 1e-3 of
      the largest `n_s` nearer the loss (`s > t`; an exploding gradient
      reaches every step).
      For a functional or Sequential model, the same for the input sequence
      of each recurrent layer: `time_gradient/<layer name>`,
      `time_gradient/<layer name>/norms`, `time_gradient/<layer name>/reach`.

    - every histogram epoch, the gradient across depth: for the model's
      top-level layers with trainable variables, in order (a nested block is
      one layer), the norm of the layer's applied gradient, as an image
      `gradient_depth` (log scale, first layer on the left), a tensor
      `gradient_depth/norms` and a scalar `gradient_depth/first_to_last`.

    - every histogram epoch (unless `diagnose=False`), the gradient
      doctor's report on the Text dashboard, tag `diagnosis`: the checks of
      `keras_gradkit.diagnose` made from what this callback already computed
      (the latest step's gradient and weight norms per layer, the time probe
      when given), the forward measures of one pass over the `probe` batch
      (else the time probe's, else the first batch of the first `fit`; dead
      and saturated units, a non-finite output, the data's scale, an output
      that does not fit the loss), and the
      training-time kinds: `large_updates` (the latest step's largest
      per-layer update ratio, or the root mean square of the update ratios
      since the previous check), `frequent_clipping` (when the clip
      dominates the step or clips far more than the policy intends),
      `skipped_steps`, `unchanged_weights` (a layer's weights exactly the
      same as at the previous check) and `loss_not_decreasing` (the logged
      loss against its value at the first check). Each new `(kind, where)`
      is warned once with a `keras_gradkit.diagnostics.GradientWarning` at
      the line that called `fit`; `report` holds the latest report and
      `findings` every finding seen.

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
            steps only: each sequence is aligned at its last unmasked step, and
            the first T minus the longest sequence's steps read NaN).
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
        probe: None or a tuple `(x, y)`: one small batch (a few dozen rows)
            on which each check runs one forward pass for the activation
            and data measures. Defaults to None: the time probe's batch when
            given, otherwise the first 32 rows of the first batch the model
            trains on in this callback's first `fit` (read once from the
            train function, which trains on it unchanged; not under a
            `tf.distribute` strategy, where those measures are left out and
            a note says so). Dead units are judged on batches of at least 16
            rows.

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
        probe=None,
    ):
        super().__init__()
        _check_arguments(log_dir, histogram_freq, update_freq, write_plots, diagnose)
        self.thresholds = _thresholds.check_thresholds(thresholds)
        self.stop_on = _thresholds.check_kinds("stop_on", stop_on)
        self.raise_on = _thresholds.check_kinds("raise_on", raise_on)
        _check_actions(self.stop_on, self.raise_on, diagnose, histogram_freq)
        self.diagnose = diagnose
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq = histogram_freq
        self.update_freq = update_freq
        self.include = include
        self.exclude = exclude
        self.time_probe = validate_time_probe(time_probe)
        self.probe = _doctor.validate_probe(probe)
        self._first_batch = None  # `(model, (x, y))`: the probe batch when given none
        # `(model, plain train function, wrapper)` while the wrapper waits for a batch
        self._peeking = None
        self.write_plots = write_plots
        self._include = _compile_patterns("include", include)
        self._exclude = _compile_patterns("exclude", exclude)
        self._writer = None
        self._attachment = None
        self._probe = None
        self._failures = set()
        self._last_batch_step = -1
        self._batch_offset = 0
        self._loop_steps = None
        self._loop_writes = Window(lambda: self._loop_sources.counts())
        self._loop_sources = None
        self._report = None
        self._findings = {}
        self._time_results = None
        # Spans of the running totals: since the previous write of the
        # scalars, over the epoch, since the previous check.
        self._writes = Window(lambda: self._sources.counts())
        self._epoch = Window(lambda: self._sources.totals())
        self._checks = Window(lambda: (self._sources.counts(), *self._sources.totals()))
        self._digests = {}
        self._loss = _doctor.LossTrack()

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
            "probe": (
                None
                if self.probe is None
                else [keras.tree.map_structure(lambda a: a.tolist(), p) for p in self.probe]
            ),
        }

    @property
    def async_safe(self):
        # With epoch-level scalars the batch hook does nothing: Keras may keep
        # dispatching batch callbacks asynchronously (it stops when any callback
        # overrides `on_train_batch_end` without saying it is safe).
        return self.update_freq == "epoch"

    @property
    def _sources(self):
        return None if self._attachment is None else self._attachment.sources

    @property
    def _train_dir(self):
        return os.path.join(self.log_dir, "train")

    def _get_writer(self):
        if self._writer is None:
            self._writer = _event_writer.EventWriter(self._train_dir)
        return self._writer

    def _close_writer(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _logged(self, path):
        if self._include is not None and not any(p.search(path) for p in self._include):
            return False
        if self._exclude is not None and any(p.search(path) for p in self._exclude):
            return False
        return True

    def _iterations(self):
        return int(np.asarray(keras.ops.convert_to_numpy(self.model.optimizer.iterations)))

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

    def _detach(self):
        self._stop_peeking()
        if self._attachment is not None:
            self._attachment.detach()

    def _peek_first_batch(self):
        """Has the train function hand its first batch over, once, when the
        checks have no batch of their own (`probe`, `time_probe`)."""
        model, plain = self.model, self.model.train_function

        def receive(batch):
            self._stop_peeking()
            read = lambda: _doctor.first_rows(batch)  # noqa: E731
            rows = None if batch is None else self._guarded("the probe batch", read)
            if rows is not None:
                self._first_batch = (model, rows)

        wrapped = backend.get("recording").first_batch(model, plain, receive)
        wrapped._gradkit_plain = plain  # what `Attachment` unwraps if the wrapper is left
        self._peeking = (model, plain, wrapped)
        model.train_function = wrapped

    def _seen_batch(self):
        """The first training batch read for this model, or None."""
        if self._first_batch is not None and self._first_batch[0] is self.model:
            return self._first_batch[1]
        return None

    def _stop_peeking(self):
        """Puts the train function back as it was before the peek."""
        if self._peeking is not None:
            model, plain, wrapped = self._peeking
            self._peeking = None
            if model.train_function is wrapped:
                model.train_function = plain

    # ----------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        _check_log_dir(self.log_dir, self._train_dir)
        self._detach()  # after a fit that ended in an exception
        self._attachment = Attachment(self.model, gradients=self.histogram_freq > 0)
        # Batch-level steps are the optimizer's update count, as Keras's own
        # `batch_*` curves; a re-compiled optimizer that counts from 0 again
        # continues after this callback's last step.
        iterations = self._iterations()
        self._batch_offset = (
            self._last_batch_step if iterations == 0 and self._last_batch_step > 0 else 0
        )
        if self.time_probe is not None:
            if self._probe is None or self._probe.model is not self.model:
                self._probe = time_probe.TimeProbe(self.model, *self.time_probe)
            self._probe.check()
        self._sources.invalidate()
        for window in (self._writes, self._epoch, self._checks):
            window.restart()
        if self.diagnose and self.histogram_freq:
            self._digests = self._guarded("diagnosis", lambda: _doctor.weight_digests(self.model))
            self._loss.restart()
            if self.probe is None and self.time_probe is None and self._seen_batch() is None:
                self._peek_first_batch()

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch":
            return
        every = 1 if self.update_freq == "batch" else self.update_freq
        step = self._iterations() + self._batch_offset
        if step - max(self._last_batch_step, self._batch_offset) >= every:
            self._last_batch_step = step
            self._sources.invalidate()
            written = self._guarded("scalars", lambda: self._write_scalars(step))
            if written and logs is not None:
                logs.update(
                    _summaries.batch_logs(written, self._sources.has_policy, self._sources.can_skip)
                )

    def on_epoch_end(self, epoch, logs=None):
        # Epoch-level events at the epoch, as Keras's `epoch_*` curves.
        self._sources.invalidate()
        if self.update_freq == "epoch":
            self._guarded("scalars", lambda: self._write_scalars(epoch))
        keras_logs = self._guarded("Keras logs", self._epoch_logs) or {}
        found = None
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            keras_logs.update(self._write_histogram_epoch(epoch))
            if self.diagnose:
                found = self._guarded("diagnosis", lambda: self._check(epoch, logs))
        if logs is not None:
            logs.update(keras_logs)
        if self._writer is not None:
            self._writer.flush()
        if found is not None:
            self._act_on(found)

    def on_train_end(self, logs=None):
        self._detach()
        self._close_writer()

    # ------------------------------------------------------------ writing
    def _write_scalars(self, step):
        latest = self._sources.latest()
        if latest is None:
            return None
        since_write, counts = self._writes.advance()
        logged = [
            (i, v.path) for i, v in enumerate(self._sources.variables) if self._logged(v.path)
        ]
        values = _summaries.scalars(latest, counts, since_write, logged)
        self._get_writer().write(_event_writer.scalar_values(values), step)
        return values

    def _write_histogram_epoch(self, epoch):
        """Histograms, the gradient across depth and the time probe; returns
        their Keras logs."""
        found = {}
        gradients = self._sources.gradients()
        self._guarded(
            "gradient histograms",
            lambda: self._get_writer().write(_summaries.histograms(gradients, self._logged), epoch),
        )
        ratio = self._guarded("gradient across depth", lambda: self._write_depth(gradients, epoch))
        if ratio is not None:
            found["depth_first_to_last"] = ratio
        self._time_results = None
        if self._probe is not None:
            self._time_results = self._guarded(
                "time-probe summaries", lambda: self._write_time_probe(epoch)
            )
            for name, _, reach in self._time_results or ():
                if name == "input":
                    found["time_reach"] = float(reach)
        return found

    def _write_depth(self, gradients, step):
        if not gradients:
            return None
        names, norms = depth.layer_gradient_norms(self.model, gradients)
        if not norms:
            return None
        values = _summaries.depth(names, norms, self.model.name, self.write_plots)
        self._get_writer().write(values, step)
        return depth.first_to_last(norms)

    def _write_time_probe(self, step):
        results = self._probe.compute()
        values = _summaries.time_probe(results, self.model.name, self.write_plots)
        self._get_writer().write(values, step)
        return results

    def _epoch_logs(self):
        (norm, clipped), _ = self._epoch.advance()
        skipped = self._sources.counts()[2] if self._sources.can_skip else None
        return _summaries.epoch_logs(norm, clipped, self._sources.has_policy, skipped)

    # ------------------------------------------------------------- checks
    def _check(self, step, logs=None):
        """The doctor's report of the latest step (and of the time probe and
        the probe batch), written to the Text dashboard under `diagnosis`."""
        latest = self._sources.latest()
        if latest is None:
            return None
        (counts, totals, clip_totals), _ = self._checks.advance()
        variables = self._sources.variables

        def by_layer(values):
            norms = {v.path: float(n) for v, n in zip(variables, values)}
            return depth.layer_norms(self.model, norms)

        names, norms = by_layer(latest.gradient_norms)
        weights = None if latest.weight_norms is None else by_layer(latest.weight_norms)[1]
        candidates = (self.probe, self.time_probe, self._seen_batch())
        batch = next((b for b in candidates if b is not None), None)
        # A gradient that is not finite: the forward pass op by op finds where.
        eager = latest.global_norm is not None and not np.isfinite(float(latest.global_norm))
        forward = _doctor.ForwardMeasures(self.model, batch).measure(eager=eager)
        training = self._training_measures(latest, counts, totals, by_layer)
        training = training._replace(**self._progress(counts, clip_totals, logs))
        found = checks.assemble(
            self.model,
            names,
            norms,
            latest.global_norm,
            weight_norms=weights,
            time_results=self._time_results,
            training=training,
            # A step the LossScaleOptimizer skipped is not finite by design:
            # it counts in skipped_steps.
            skipped=self._sources.loss_scaled and latest.skipped,
            thresholds=self.thresholds,
            **forward,
        )
        self._get_writer().write([_event_writer.text_value("diagnosis", found.to_markdown())], step)
        self._report = found
        return found

    def _training_measures(self, latest, counts, totals, by_layer):
        """What happened since the previous check, for the training kinds."""
        rms = None
        if totals.update_ratio_steps:
            rms = (max(totals.update_ratio_square_sum, 0.0) / totals.update_ratio_steps) ** 0.5
        largest = layer = None
        if latest.update_norms is not None and not latest.skipped:
            names, deltas = by_layer(latest.update_norms)
            _, weights = by_layer(latest.weight_norms)
            ratios = [(d / w, n) for n, d, w in zip(names, deltas, weights) if w]
            ratios = [(r, n) for r, n in ratios if np.isfinite(r)]
            if ratios:
                largest, layer = max(ratios)
        return checks.TrainingMeasures(
            updates=counts[0],
            clipped=counts[1] if self._sources.has_policy else None,
            skipped=counts[2] if self._sources.can_skip else None,
            update_ratio=largest,
            update_ratio_layer=layer,
            rms_update_ratio=rms,
        )

    def _progress(self, counts, clip_totals, logs):
        """The policy's intent and effect, unchanged weights and the loss's
        movement since the previous check (`TrainingMeasures` fields)."""
        shrink = None
        if clip_totals.global_norm_sum > 0:
            shrink = clip_totals.global_norm_clipped_sum / clip_totals.global_norm_sum
        digests = _doctor.weight_digests(self.model)
        unchanged = _doctor.unchanged(self._digests or {}, digests) if counts[0] else ()
        self._digests = digests
        change, loss_checks = self._loss.update(logs)
        return {
            "clip_shrink": shrink,
            "intended_clipped": self._sources.intended_clipped,
            "unchanged_layers": unchanged,
            "loss_change": change,
            "loss_checks": loss_checks,
        }

    def _act_on(self, found):
        """Warns once per new `(kind, where)`; stops or raises as asked."""
        for finding in found.findings:
            key = (finding.kind, finding.where)
            if key not in self._findings:
                self._findings[key] = finding
                warnings.warn(
                    report.GradientWarning(
                        f"GradientBoard: {finding.kind} at {finding.where} "
                        f"(value {finding.value:.3g}, threshold {finding.threshold:.3g}). "
                        f"{finding.advice}"
                    ),
                    stacklevel=report.user_stacklevel(),
                )
        raising = [f for f in found.findings if f.kind in self.raise_on]
        if raising:
            self._detach()
            self._close_writer()
            kinds = ", ".join(f"{f.kind} at {f.where}" for f in raising)
            raise report.GradientError(
                f"GradientBoard(raise_on=...) found {kinds}:\n{found}", raising
            )
        if any(f.kind in self.stop_on for f in found.findings):
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
            return flat_statistics(None, (0, 0, 0), [], False)
        self.model  # noqa: B018 (Keras's `Callback.model` syncs the JAX training state)
        self._sources.invalidate()
        return flat_statistics(
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
        found = _loop_writer.check_arguments(optimizer, step, histograms)
        if self._loop_steps is None:
            _check_log_dir(self.log_dir, self._train_dir)
            self._loop_steps = _loop_writer.LoopSteps(self._train_dir)
        step = self._loop_steps.next(int(_loop_writer.as_int(step)))
        if step is None:
            return
        self._loop_sources = StepSources(found)
        latest = self._loop_sources.latest()
        if latest is not None:
            since_write, counts = self._loop_writes.advance()
            logged = [
                (i, v.path)
                for i, v in enumerate(self._loop_sources.variables)
                if self._logged(v.path)
            ]
            values = _summaries.scalars(latest, counts, since_write, logged)
            self._get_writer().write(_event_writer.scalar_values(values), step)
        if histograms:
            gradients = self._loop_sources.gradients()
            self._get_writer().write(_summaries.histograms(gradients, self._logged), step)
        self._get_writer().flush()


def _check_arguments(log_dir, histogram_freq, update_freq, write_plots, diagnose):
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


def _check_actions(stop_on, raise_on, diagnose, histogram_freq):
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


def _check_log_dir(log_dir, train_dir):
    """Raises a `ValueError` naming `log_dir` when `train_dir` cannot be written."""
    if _event_writer.is_remote(log_dir):  # through tf.io.gfile, or a clear error without it
        _event_writer.makedirs(train_dir)
        return
    test_file = os.path.join(train_dir, f".gradient_board_write_test_{os.getpid()}")
    try:
        os.makedirs(train_dir, exist_ok=True)
        with open(test_file, "w") as f:
            f.write("ok")
        os.remove(test_file)
    except OSError as e:
        raise ValueError(
            f"Argument `log_dir` must be a directory GradientBoard can write to, but "
            f"{train_dir!r} cannot be written ({type(e).__name__}: {e}). "
            f"Received: log_dir={log_dir!r}"
        ) from e
