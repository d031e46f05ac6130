"""`ClippedOptimizer`: applies a clipping policy to the gradient the update uses."""

import math

import keras
import numpy as np
from keras import ops

from keras_gradkit import clipping
from keras_gradkit.api_export import keras_gradkit_export

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
# Layout of the `latest` statistics vector and of the `counters` vector.
_LATEST = ("global_norm", "global_norm_clipped", "threshold", "clipped")
_COUNTERS = ("steps", "clipped_steps", "skipped_steps")


def _snapshot(variable):
    """The variable's current value, read now (ordered before later updates)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        value = variable.value if isinstance(variable, keras.Variable) else variable
        return tf.identity(value.read_value())
    return ops.copy(ops.convert_to_tensor(variable))


def _base_optimizer(optimizer):
    """The optimizer that really updates (under any `LossScaleOptimizer`)."""
    while isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    return optimizer


def _equivalent_policy(optimizer):
    """The policy matching Keras's own clipping arguments, or `NoClip`."""
    base = _base_optimizer(optimizer)
    if base.clipnorm:
        return clipping.ClipByNorm(base.clipnorm)
    if base.global_clipnorm:
        return clipping.ClipByGlobalNorm(base.global_clipnorm)
    if base.clipvalue:
        return clipping.ClipByValue(base.clipvalue)
    return clipping.NoClip()


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

    Statistics are kept in optimizer variables, updated inside the train step
    (so they work with `jit_compile=True` and `steps_per_execution > 1`, where
    they describe the latest step) and saved with the model. Read them with
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
            weights (it may be a `LossScaleOptimizer`).
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
        if not isinstance(inner_optimizer, keras.optimizers.Optimizer):
            raise TypeError(
                "Argument `inner_optimizer` must be a `keras.optimizers.Optimizer` instance. "
                f"Received: inner_optimizer={inner_optimizer!r}"
            )
        policy = clipping.get(policy)
        for flag_name, flag in (("record_gradients", record_gradients), ("record_update_norms", record_update_norms)):
            if not isinstance(flag, bool):
                raise TypeError(f"Argument `{flag_name}` must be a bool. Received: {flag_name}={flag!r}")
        base = _base_optimizer(inner_optimizer)
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
        self._report_policy = _equivalent_policy(inner_optimizer) if self._monitor_only else policy

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
        k = len(var_list)
        self._latest = self._own_variable("latest", (len(_LATEST),), "float32", float("nan"))
        self._counters = self._own_variable("counters", (len(_COUNTERS),), "int32", 0)
        self._gradient_norms = self._own_variable("gradient_norms", (k,), "float32")
        self._update_norms = self._own_variable("update_norms", (k,), "float32") if self.record_update_norms else None
        self._weight_norms = self._own_variable("weight_norms", (k,), "float32") if self.record_update_norms else None
        self._policy_state = [
            self._own_variable(f"policy_{name}", shape, dtype, value)
            for name, shape, dtype, value in self._report_policy.state_spec(var_list)
        ]
        self._last_gradients = []
        if self.record_gradients:
            for v in var_list:
                self._last_gradients.append(
                    self._own_variable(f"last_gradient_{v.path.replace('/', '_')}", v.shape, "float32")
                )

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

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

    # ---------------------------------------------------------------- apply
    def apply(self, grads, trainable_variables=None):
        if not self.built:
            if trainable_variables is None:
                raise ValueError("Call `build(trainable_variables)` or pass `trainable_variables` to `apply`.")
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
            self.built = True
        tvs = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        grads = list(grads)
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if tf.distribute.in_cross_replica_context():
                raise ValueError("apply() must be called in a replica context.")
            if tf.distribute.has_strategy():
                return self._tf_distributed_apply(grads, tvs)
        self._common_apply(grads, tvs)

    def _tf_distributed_apply(self, grads, tvs):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        num_replicas = context.num_replicas_in_sync

        def replica_sum(values):
            present = [g for g in values if g is not None]
            reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present) if present else [])
            return [None if g is None else next(reduced) for g in values]

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            return self._common_apply(grads, tvs, replica_sum, num_replicas)
        result = self._compute(grads, tvs, replica_sum, num_replicas)

        def cross_replica(distribution, result):
            first = lambda x: distribution.experimental_local_results(x)[0]  # noqa: E731
            local = tf.nest.map_structure(lambda x: x if x is None else first(x), result)

            def inner_apply(grads_for_inner):
                distribution.extended.call_for_each_replica(
                    self.inner_optimizer.apply, args=(grads_for_inner, tvs)
                )

            self._finish(local, tvs, lambda: inner_apply(result["grads_for_inner"]))

        context.merge_call(cross_replica, args=(result,))

    def _common_apply(self, grads, tvs, replica_sum=None, num_replicas=1):
        result = self._compute(grads, tvs, replica_sum, num_replicas)
        self._finish(result, tvs, lambda: self.inner_optimizer.apply(result["grads_for_inner"], tvs))

    def _compute(self, grads, tvs, replica_sum, num_replicas):
        """Pure part of a step: the policy on the gradient the update uses."""
        inner = self.inner_optimizer
        base = _base_optimizer(inner)
        loss_scale = inner.dynamic_scale if isinstance(inner, keras.optimizers.LossScaleOptimizer) else None
        grads = [None if g is None else ops.convert_to_tensor(g) for g in grads]
        full = grads if loss_scale is None else [None if g is None else g / ops.cast(loss_scale, g.dtype) for g in grads]
        steps = base.gradient_accumulation_steps
        if steps:
            is_update = ops.equal(ops.mod(base._iterations + 1, steps), 0)
            acc = [None if g is None else base._accumulated_gradients[base._get_variable_index(v)] for g, v in zip(full, tvs)]
            micro = full
            full = [None if g is None else (g + ops.cast(a, g.dtype)) / steps for g, a in zip(full, acc)]
        if replica_sum is not None:
            full = replica_sum(full)
        squares = [None if g is None else ops.sum(ops.square(ops.cast(g, "float32"))) for g in full]
        present = [s for s in squares if s is not None]
        norm = ops.sqrt(ops.sum(ops.stack(present)))
        state = [ops.convert_to_tensor(v) for v in self._policy_state]
        clipped_grads, new_state, info = self._report_policy.apply(full, tvs, state)
        clipped_norm = clipping.global_norm(clipped_grads)
        skip, changed = info["skip"], info["clipped"]
        if self._monitor_only:
            grads_for_inner = grads
        else:
            grads_for_inner = clipped_grads
            if num_replicas > 1:  # the inner optimizer's own all-reduce sums them back
                grads_for_inner = [None if g is None else g / num_replicas for g in grads_for_inner]
            if steps:  # so that the inner optimizer's (g + acc) / steps is the clipped gradient
                grads_for_inner = [
                    None if g is None else ops.where(is_update, g * steps - ops.cast(a, g.dtype), m)
                    for g, a, m in zip(grads_for_inner, acc, micro)
                ]
            if loss_scale is not None:  # the inner LossScaleOptimizer unscales again
                grads_for_inner = [None if g is None else g * ops.cast(loss_scale, g.dtype) for g in grads_for_inner]
        if loss_scale is not None:
            # The LossScaleOptimizer must see non-finite steps itself, to lower its scale.
            finite = ops.isfinite(norm)
            skip = ops.logical_and(skip, finite)
        skipped = skip
        if loss_scale is not None:
            skipped = ops.logical_or(skip, ops.logical_not(ops.isfinite(norm)))
        if steps:
            skip = ops.where(is_update, skip, self._report_policy.should_skip(micro))
            count = is_update
            new_state = [ops.where(is_update, n, o) for n, o in zip(new_state, state)]
        else:
            count = ops.convert_to_tensor(True)
        skipped = ops.logical_and(count, skipped)
        changed = ops.logical_and(changed, ops.logical_and(count, ops.logical_not(skipped)))
        return {
            "grads_for_inner": grads_for_inner,
            "clipped_grads": clipped_grads,
            "norms": [ops.zeros((), "float32") if s is None else ops.sqrt(s) for s in squares],
            "latest": ops.stack([norm, clipped_norm, info["threshold"], ops.cast(changed, "float32")]),
            "count": count,
            "changed": changed,
            "skip": skip,
            "skipped": skipped,
            "state": new_state,
        }

    def _finish(self, result, tvs, inner_apply):
        """Stateful part of a step: record statistics, then update unless skipped."""
        count = result["count"]
        old_latest = ops.convert_to_tensor(self._latest)
        latest = ops.where(count, result["latest"], old_latest)
        self._latest.assign(latest)
        self._counters.assign_add(ops.cast(ops.stack([count, result["changed"], result["skipped"]]), "int32"))
        indices = [self._get_variable_index(v) for v in tvs]
        norms = [ops.zeros((), "float32")] * len(self._trainable_variables)
        for i, n in zip(indices, result["norms"]):
            norms[i] = n
        self._gradient_norms.assign(ops.where(count, ops.stack(norms), self._gradient_norms))
        for v, new in zip(self._policy_state, result["state"]):
            v.assign(new)
        if self.record_gradients:
            for i, g in zip(indices, result["clipped_grads"]):
                if g is not None:
                    acc = self._last_gradients[i]
                    acc.assign(ops.where(count, ops.cast(g, "float32"), acc))
        before = [_snapshot(v) for v in tvs] if self.record_update_norms else None
        ops.cond(result["skip"], lambda: None, inner_apply)
        if self.record_update_norms:
            deltas = [ops.zeros((), "float32")] * len(self._trainable_variables)
            weights = list(deltas)
            for i, v, b in zip(indices, tvs, before):
                after = _snapshot(v)
                deltas[i] = ops.sqrt(ops.sum(ops.square(ops.cast(after - b, "float32"))))
                weights[i] = ops.sqrt(ops.sum(ops.square(ops.cast(after, "float32"))))
            self._update_norms.assign(ops.where(count, ops.stack(deltas), self._update_norms))
            self._weight_norms.assign(ops.where(count, ops.stack(weights), self._weight_norms))

    # ------------------------------------------------------------ reading
    def gradient_statistics(self):
        """The statistics of the latest update and the running totals.

        Returns:
            A flat dict of Python floats, keys as described in the class
            docstring. Before the first update the norms are NaN and the
            counts 0; per-variable keys appear once the optimizer is built.
        """
        if not self.built:
            stats = {k: float("nan") for k in _LATEST}
            stats.update({k: 0.0 for k in _COUNTERS})
            stats["threshold"] = self._static_threshold()
            stats["clipped"] = 0.0
            return stats
        flat = self._read_statistics()
        latest, counters = flat[: len(_LATEST)], flat[len(_LATEST) : len(_LATEST) + len(_COUNTERS)]
        per_variable = flat[len(_LATEST) + len(_COUNTERS) :].reshape(-1, len(self._trainable_variables))
        stats = {k: float(v) for k, v in zip(_LATEST, latest)}
        if counters[0] == 0:
            stats["threshold"] = self._static_threshold()
            stats["clipped"] = 0.0
        stats.update({k: float(v) for k, v in zip(_COUNTERS, counters)})
        for name, values in zip(("gradient_norm", "update_norm", "weight_norm"), per_variable):
            for v, n in zip(self._trainable_variables, values):
                stats[f"{name}/{v.path}"] = float(n)
        return stats

    def _read_statistics(self):
        """All statistics variables as one float64 NumPy vector, read at once
        (separate reads cost a device sync each; GradientBoard reads them
        after every batch with `update_freq="batch"`)."""
        parts = [self._latest, self._counters, self._gradient_norms]
        if self.record_update_norms:
            parts += [self._update_norms, self._weight_norms]

        def read():
            return ops.concatenate([ops.cast(p, "float64") for p in parts])

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            if getattr(self, "_statistics_reader", None) is None:
                self._statistics_reader = tf.function(read)
            read = self._statistics_reader
        return ops.convert_to_numpy(read())

    @property
    def watched_variables(self):
        """The model variables the statistics describe, in order (empty before `build`)."""
        return list(self._trainable_variables)

    def _static_threshold(self):
        for name in ("max_norm", "max_value"):
            if hasattr(self._report_policy, name):
                return float(getattr(self._report_policy, name))
        return math.nan

    def last_gradients(self):
        """The latest post-policy gradient of each variable, `{variable.path: numpy array}`.

        Requires `record_gradients=True`. Under `MirroredStrategy` this is the
        all-reduced gradient; under accumulation, the averaged one.
        """
        if not self.record_gradients:
            raise ValueError("`last_gradients()` needs `record_gradients=True` in the ClippedOptimizer constructor.")
        if not self.built:
            return {}
        return {v.path: g.numpy() for v, g in zip(self._trainable_variables, self._last_gradients)}

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
        inner = keras.saving.deserialize_keras_object(config.pop("inner_optimizer"), custom_objects=custom_objects)
        policy = keras.saving.deserialize_keras_object(config.pop("policy"), custom_objects=custom_objects)
        return cls(inner, policy, **config)
