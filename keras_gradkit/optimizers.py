"""`ClippedOptimizer`: applies a clipping policy to the gradient the update uses."""

import math
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from keras_gradkit import _validation, backend, clipping, recording
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.backend import keras_private

_KERAS_CLIP_ARGS = ("clipnorm", "global_clipnorm", "clipvalue")
_BASE_DEFAULTS = {
    "learning_rate": None,
    "weight_decay": None,
    "clipnorm": None,
    "global_clipnorm": None,
    "clipvalue": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}
# Layout of the saved `counters` vector.
_COUNTERS = ("steps", "clipped_steps", "skipped_steps")
_LATEST = ("global_norm", "global_norm_clipped", "threshold", "clipped")


def _get_optimizer(identifier):
    """A Keras optimizer from what `keras.optimizers.get` takes (an instance, a name or a config dict)."""
    if isinstance(identifier, keras.optimizers.Optimizer):
        return identifier
    if isinstance(identifier, (str, dict)):
        try:
            return keras.optimizers.get(identifier)
        except ValueError as e:
            raise ValueError(
                f"Argument `inner_optimizer` names no Keras optimizer ({e}). Received: inner_optimizer={identifier!r}"
            ) from e
    raise TypeError(
        "Argument `inner_optimizer` must be a `keras.optimizers.Optimizer`, an optimizer name such as "
        f'"adam" or a serialized optimizer dict. Received: inner_optimizer={identifier!r}'
    )


def _assign_if(variable, condition, value):
    """`variable <- value if condition else variable`, without a traced branch."""
    variable.assign(ops.where(condition, value, ops.convert_to_tensor(variable)))


class _Decisions(NamedTuple):
    """What a step counts and whether its inner update runs (bool scalars;
    `count` is the Python `True` when every step counts)."""

    count: object  # an update step (not a gradient-accumulation micro-step)
    changed: object  # a counted, applied update that the policy changed
    skip: object  # the inner update does not run
    skipped: object  # a counted update that is skipped


class _Step(NamedTuple):
    """The pure part of a step (`_compute`), for its stateful end (`_finish`)."""

    decisions: _Decisions
    measured: recording.MeasuredStep
    scalars: recording.StepScalars


@keras_gradkit_export
class ClippedOptimizer(keras.optimizers.Optimizer):
    """Wraps a Keras optimizer and clips, with a policy, the gradient its update uses.

    Use it instead of Keras's `clipnorm` / `global_clipnorm` / `clipvalue`
    when you want a better policy (`AutoClip`, `AdaptiveClip`,
    `SkipNonFinite`, chains of them), clipping that is right under
    `tf.distribute.MirroredStrategy`, or statistics of the gradients.

    The policy sees the gradient the update uses: after the cross-replica sum
    under `MirroredStrategy` (Keras clips each replica's local gradient), after
    loss-scale unscaling (the wrapper may sit inside or outside a
    `keras.optimizers.LossScaleOptimizer`) and after accumulation with the
    inner optimizer's `gradient_accumulation_steps` (the policy runs on the
    averaged gradient of the update step). Equation, with `P` the policy:
    `w <- inner_update(w, P(sum_replicas g))`.

    It works on every Keras backend: `apply` for TensorFlow and PyTorch (and
    under `tf.distribute`), `stateless_apply` for JAX's trainer, both thin
    drivers of one pure step (the policy, the statistics, the skip decision).

    Statistics are recorded inside the train step (so they work with
    `jit_compile=True` and `steps_per_execution > 1`, where they describe the
    latest step). The running totals and the policy's state (e.g. AutoClip's
    history) are optimizer variables, saved with the model, so a resumed run
    continues exactly. The latest step's statistics and gradient copies are
    not optimizer variables (they leave the step through a recorder: on JAX
    with state GradientBoard's train function carries, or
    `jax.debug.callback`), so `variables`, and what Keras saves, are the
    counters, the policy state and the inner optimizer's, also under a
    `LossScaleOptimizer`; they are NaN after loading until the next update.
    Read them with
    `gradient_statistics()`, a flat dict of Python floats:

    - `"global_norm"`: global L2 norm of the latest gradient before the policy;
    - `"global_norm_clipped"`: the same after the policy;
    - `"threshold"`: the threshold used at the latest update (NaN when the
      policy has none, e.g. `NoClip`, `AdaptiveClip`, `SkipNonFinite`);
    - `"clipped"`: 1.0 if the policy changed the latest (applied) update;
    - `"steps"`, `"clipped_steps"`, `"skipped_steps"`: running totals of
      optimizer updates (accumulation micro-steps are not counted), of
      updates the policy changed, of updates skipped (non-finite gradients);
    - `"gradient_norm/<variable.path>"`: L2 norm of each variable's gradient
      before the policy;
    - `"update_norm/<variable.path>"`: L2 norm of the latest change of each
      variable, `|w_new - w_old|` (0 for a skipped step), and
      `"weight_norm/<variable.path>"`: `|w_new|`, when
      `record_update_norms=True`.

    `watched_variables` lists the variables these statistics describe, in
    order.

    With `record_gradients=True`, `last_gradients()` returns each variable's
    latest post-policy gradient (this keeps one copy of every gradient).

    A monitor-only policy, `keras_gradkit.clipping.NoClip()`, leaves Keras's
    own `clipnorm`, `global_clipnorm` or `clipvalue` on the inner optimizer
    working exactly as without the wrapper (under `MirroredStrategy` these
    still act on each replica's gradient), and reports them as the equivalent
    policy. Any other policy together with those arguments is an error.

    Args:
        inner_optimizer: the `keras.optimizers.Optimizer` that updates the
            weights (it may be a `LossScaleOptimizer`), or what
            `keras.optimizers.get` takes: a name such as `"adam"` or a
            serialized optimizer dict.
        policy: a `keras_gradkit.clipping` policy (or its serialized dict).
        record_gradients: bool, keep a copy of the latest post-policy gradient
            of every variable for `last_gradients()`. Defaults to `False`.
        record_update_norms: bool, keep `|w_new - w_old|` and `|w_new|` per
            variable.
            Defaults to `True`.
        name: optional name of the optimizer.

    Call arguments (`apply`):
        grads: list of gradients, one per trainable variable.
        trainable_variables: the matching variables.

    Example:

    ```python
    import keras, numpy as np, keras_gradkit
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    opt = keras_gradkit.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(1e-3), keras_gradkit.clipping.AutoClip(percentile=10.0))
    model.compile(optimizer=opt, loss="mse")
    model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    print(opt.gradient_statistics()["global_norm"])
    ```

    References:
        Pascanu et al., [On the difficulty of training recurrent neural networks](https://arxiv.org/abs/1211.5063), 2013.
        Seetharaman et al., [AutoClip: Adaptive Gradient Clipping for Source Separation Networks](https://arxiv.org/abs/2007.14469), 2020.
        Brock et al., [High-Performance Large-Scale Image Recognition Without Normalization](https://arxiv.org/abs/2102.06171), 2021.
    """

    def __init__(
        self,
        inner_optimizer,
        policy,
        record_gradients=False,
        record_update_norms=True,
        name=None,
        **kwargs,
    ):
        for arg, default in _BASE_DEFAULTS.items():
            if arg in kwargs:
                value = kwargs.pop(arg)
                if value != default:
                    raise ValueError(
                        f"ClippedOptimizer does not support `{arg}`. Received: {arg}={value}. "
                        f"Instead, set `{arg}` on the `inner_optimizer`"
                        + (" or use a clipping policy." if arg in _KERAS_CLIP_ARGS else ".")
                    )
        if kwargs:
            raise ValueError(f"ClippedOptimizer does not support arguments: {sorted(kwargs)}.")
        inner_optimizer = _get_optimizer(inner_optimizer)
        policy = clipping.get(policy)
        _validation.bool_arg("record_gradients", record_gradients)
        _validation.bool_arg("record_update_norms", record_update_norms)
        base = recording.base_optimizer(inner_optimizer)
        keras_clipping = {a: getattr(base, a) for a in _KERAS_CLIP_ARGS if getattr(base, a)}
        if keras_clipping and not isinstance(policy, clipping.NoClip):
            settings = ", ".join(f"{k}={v}" for k, v in keras_clipping.items())
            raise ValueError(
                f"The inner optimizer already clips ({settings}) and a clipping `policy` was given "
                f"(policy={policy!r}): choose one. Either remove {', '.join(f'`{k}`' for k in keras_clipping)} "
                "from the inner optimizer, or use `keras_gradkit.clipping.NoClip()` to keep Keras's clipping."
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = inner_optimizer
        self.policy = policy
        self.record_gradients = record_gradients
        self.record_update_norms = record_update_norms
        self._monitor_only = isinstance(policy, clipping.NoClip)
        self._report_policy = (
            recording.equivalent_policy(inner_optimizer) if self._monitor_only else policy
        )

    # ------------------------------------------------------------------ build
    def _own_variable(self, name, shape, dtype, value=0.0):
        return self.add_variable(
            shape=shape,
            dtype=dtype,
            initializer=keras.initializers.Constant(value),
            aggregation="only_first_replica",
            name=name,
        )

    def build(self, var_list):
        var_list = list(var_list)
        if not self.inner_optimizer.built:  # rebuilding would duplicate its slots
            self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._counters = self._own_variable("counters", (len(_COUNTERS),), "int32", 0)
        self._policy_state = [
            self._own_variable(f"policy_{name}", shape, dtype, value)
            for name, shape, dtype, value in self._report_policy.state_spec(var_list)
        ]
        # The latest step's statistics are not optimizer variables: they leave
        # the step through a recorder, so `variables` (what Keras saves, also
        # through a LossScaleOptimizer) are the counters, the policy state and
        # the inner optimizer's.
        self._recorder = recording.Recorder(
            keras_private.trainable_variables_of(self),
            update_norms=self.record_update_norms,
            gradients=self.records_gradients,
        )

    def enable_gradient_recording(self):
        """Starts keeping the latest post-policy gradients for `last_gradients()`.

        The same as `record_gradients=True`, for an optimizer already created
        (GradientBoard calls it while it writes histograms, and
        `disable_gradient_recording()` after). The config is not changed and
        the copies are not saved with the model.

        Returns:
            True when a train function traced before does not publish the
            gradients: under JAX or TensorFlow, re-create it
            (`model.make_train_function(force=True)`).
        """
        if self.records_gradients:
            return False
        self._gradients_enabled = True
        return not self.built or self._recorder.enable_gradients()

    def disable_gradient_recording(self):
        """Undoes `enable_gradient_recording()` (not `record_gradients=True`):
        `last_gradients()` then raises again and new traces keep no copies."""
        self._gradients_enabled = False
        if self.built and not self.record_gradients:
            self._recorder.disable_gradients()

    @property
    def records_gradients(self):
        """Whether the latest gradients are kept (`record_gradients` or
        `enable_gradient_recording()`)."""
        return self.record_gradients or getattr(self, "_gradients_enabled", False)

    @property
    def variables(self):
        return keras_private.own_variables(self) + self.inner_optimizer.variables

    # ---------------------------------------------------------- forwarding
    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    # ------------------------------------------------------------- drivers
    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "Call `build(trainable_variables)` or pass `trainable_variables` to `apply`."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        tvs = self.watched_variables if trainable_variables is None else list(trainable_variables)
        grads = list(grads)
        # Under `tf.distribute` the backend sums the gradients over the replicas.
        backend.get("distribute").run_step(
            lambda replica_sum, num_replicas: self._compute(grads, tvs, replica_sum, num_replicas),
            lambda step, inner_update: self._finish(step, tvs, inner_update),
            lambda grads_for_inner: self.inner_optimizer.apply(grads_for_inner, tvs),
        )

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """`apply` without side effects (JAX): returns the new trainable and
        optimizer variable values, in the order of `variables`."""
        backend.get("distribute").check_stateless_apply()
        if not self.built:
            raise ValueError(
                "To call `stateless_apply`, ClippedOptimizer must be built: call "
                "`optimizer.build(trainable_variables)` first."
            )
        if len(optimizer_variables) != len(self.variables):
            raise ValueError(
                "Argument `optimizer_variables` must match `ClippedOptimizer.variables` one to one. "
                f"Received {len(optimizer_variables)} values for {len(self.variables)} variables."
            )
        tvs = self.watched_variables
        mapping = list(zip(tvs, trainable_variables)) + list(
            zip(self.variables, optimizer_variables)
        )
        with keras.StatelessScope(state_mapping=mapping) as scope:
            step, grads_for_inner = self._compute([g for g in grads], tvs, None, 1)
            self._finish(step, tvs, lambda: self._inner_stateless_update(grads_for_inner, tvs))
        return [scope.get_current_value(v) for v in tvs], [
            scope.get_current_value(v) for v in self.variables
        ]

    def _inner_stateless_update(self, grads, tvs):
        """The inner optimizer's own `stateless_apply` (a LossScaleOptimizer's
        stateful `apply` branches with assignments, which JAX cannot trace),
        its results assigned in the enclosing StatelessScope."""
        inner = self.inner_optimizer
        values = [ops.convert_to_tensor(v) for v in inner.variables]
        new_tvs, new_values = inner.stateless_apply(
            values, grads, [ops.convert_to_tensor(v) for v in tvs]
        )
        for v, value in zip(list(tvs) + list(inner.variables), list(new_tvs) + list(new_values)):
            v.assign(value)

    # ------------------------------------------------------ the pure step
    def _compute(self, grads, tvs, replica_sum, num_replicas):
        """Pure part of a step: the policy on the gradient the update uses,
        the gradient handed to the inner optimizer, and the decisions.

        Args:
            grads: the step's gradients, one per variable of `tvs`.
            tvs: the variables the step updates.
            replica_sum: sums a list of gradients over the replicas, or None.
            num_replicas: the number of replicas in sync (1 without a strategy).

        Returns:
            `(step, grads_for_inner)`: a `_Step`, and the gradients for the
            inner optimizer's update.
        """
        state = [ops.convert_to_tensor(v) for v in self._policy_state]
        measured = recording.measure_step(
            self.inner_optimizer, grads, tvs, self._report_policy, state, replica_sum
        )
        view = measured.view
        if self._monitor_only:
            grads_for_inner = grads
        else:
            # The inner optimizer's own all-reduce sums the replicas' shares back.
            shares = measured.gradients
            if num_replicas > 1:
                shares = [None if g is None else ops.divide(g, num_replicas) for g in shares]
            grads_for_inner = view.to_inner(shares)
        decisions = self._decisions(view, measured.global_norm, measured.info)
        if view.is_update is not None:
            new_state = [ops.where(view.is_update, n, o) for n, o in zip(measured.state, state)]
            measured = measured._replace(state=new_state)
        scalars = recording.scalars_of(measured, decisions.changed, decisions.skipped)
        return _Step(decisions, measured, scalars), grads_for_inner

    def _decisions(self, view, norm, info):
        """Whether to skip the inner update, and what to count (a `_Decisions`)."""
        finite = ops.isfinite(norm)
        skip = info["skip"]
        if view.loss_scale is not None:
            # The LossScaleOptimizer must see non-finite steps itself, to lower its scale.
            skipped = ops.logical_or(skip, ops.logical_not(finite))
            skip = ops.logical_and(skip, finite)
        else:
            skipped = skip
        count = view.counted  # the Python True without accumulation
        if view.is_update is not None:  # a micro-step is skipped only for its own non-finite values
            skip = ops.where(view.is_update, skip, self._report_policy.should_skip(view.micro))
        skipped = ops.logical_and(count, skipped)
        changed = ops.logical_and(info["clipped"], ops.logical_and(count, ops.logical_not(skipped)))
        return _Decisions(count=count, changed=changed, skip=skip, skipped=skipped)

    # ----------------------------------------------------- the stateful end
    def _finish(self, step, tvs, inner_apply):
        """Stateful part of a step (a `_Step`): count, update unless skipped,
        record. `inner_apply()` runs the inner optimizer's update."""
        decisions = step.decisions
        count = decisions.count
        self._counters.assign_add(
            ops.cast(
                ops.stack([ops.convert_to_tensor(count), decisions.changed, decisions.skipped]),
                "int32",
            )
        )
        for v, new in zip(self._policy_state, step.measured.state):
            v.assign(new)
        indices = [keras_private.variable_index(self, v) for v in tvs]
        reads = backend.get("recording")
        before = reads.snapshots(tvs) if self.record_update_norms else None
        # No variable is assigned inside a traced branch where the backend
        # forbids it (JAX): there a skipped update is run and undone.
        targets = list(tvs) + list(self.inner_optimizer.variables)
        backend.get("distribute").apply_unless(decisions.skip, inner_apply, targets)
        after = reads.values_now(tvs) if self.record_update_norms else None
        recording.publish_step(
            self._recorder, indices, step.measured, step.scalars, count, before, after
        )

    # ------------------------------------------------------------ reading
    def gradient_statistics(self):
        """The statistics of the latest update and the running totals.

        Returns:
            A flat dict of Python floats, keys as described in the class
            docstring. Before the first update (also after loading a saved
            optimizer) the norms are NaN and the counts those saved;
            per-variable keys appear once the optimizer is built.
        """
        if not self.built:
            return recording.flat_statistics(None, (0, 0, 0), [], False, self._static_threshold())
        counters = np.asarray(ops.convert_to_numpy(self._counters))
        return recording.flat_statistics(
            self._recorder.latest(),
            counters,
            keras_private.trainable_variables_of(self),
            self.record_update_norms,
            self._static_threshold(),
        )

    def latest_step(self):
        """The latest update's statistics as a `StepStatistics` (named fields),
        or None before the first update; what `gradient_statistics()` and
        GradientBoard read."""
        return self._recorder.latest() if self.built else None

    @property
    def recorder(self):
        """The `keras_gradkit.recording.Recorder` its steps publish to (None before `build`)."""
        return self._recorder if self.built else None

    @property
    def watched_variables(self):
        """The model variables the statistics describe, in order (empty before `build`)."""
        return keras_private.trainable_variables_of(self)

    def _static_threshold(self):
        for name in ("max_norm", "max_value"):
            if hasattr(self._report_policy, name):
                return float(getattr(self._report_policy, name))
        return math.nan

    def last_gradients(self):
        """The latest post-policy gradient of each variable, `{variable.path: numpy array}`.

        Requires `record_gradients=True`. Under `MirroredStrategy` this is the
        all-reduced gradient; under accumulation, the averaged one. Empty
        before the first update.
        """
        if not self.records_gradients:
            raise ValueError(
                "`last_gradients()` needs `record_gradients=True` in the ClippedOptimizer constructor "
                "(or `enable_gradient_recording()`)."
            )
        latest = self.latest_step()
        if latest is None or latest.gradients is None:
            return {}
        return {v.path: g for v, g in zip(self.watched_variables, latest.gradients)}

    # -------------------------------------------------------------- config
    def get_config(self):
        return {
            "name": self.name,
            "inner_optimizer": keras.saving.serialize_keras_object(self.inner_optimizer),
            "policy": keras.saving.serialize_keras_object(self.policy),
            "record_gradients": self.record_gradients,
            "record_update_norms": self.record_update_norms,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = keras.saving.deserialize_keras_object(
            config.pop("inner_optimizer"), custom_objects=custom_objects
        )
        policy = keras.saving.deserialize_keras_object(
            config.pop("policy"), custom_objects=custom_objects
        )
        return cls(inner, policy, **config)
