"""`ClippedOptimizer`: applies a clipping policy to the gradient the update uses."""

import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_gradkit import _validation
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
        # A resource variable is read now; in a StatelessScope it is a tensor.
        return tf.identity(value.read_value() if hasattr(value, "read_value") else value)
    return ops.copy(ops.convert_to_tensor(variable))


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(ops.cast(x, "float32"))))


def _global_norm_of(norms_or_squares):
    """sqrt of the sum of squares of scalar norms (None entries skipped)."""
    present = [ops.square(n) for n in norms_or_squares if n is not None]
    if not present:
        return ops.zeros((), "float32")
    return ops.sqrt(ops.sum(ops.stack(present)))


def _assign_if(variable, condition, value):
    """`variable <- value if condition else variable`, without a traced branch."""
    variable.assign(ops.where(condition, value, ops.convert_to_tensor(variable)))


def _scatter(indices, values, size):
    """A vector of `size` float32 entries, `values[j]` at `indices[j]`, 0 elsewhere."""
    out = [ops.zeros((), "float32")] * size
    for i, v in zip(indices, values):
        out[i] = v
    return ops.stack(out)


class _UpdateView:
    """The gradient the update really uses, and the way back to what the inner
    optimizer expects.

    Undoes loss scaling (when the inner optimizer is a `LossScaleOptimizer`)
    and, under the inner optimizer's `gradient_accumulation_steps`, averages
    with the accumulated gradients: `full = (g + acc) / steps` on update steps.
    Keras has no public route to the accumulators nor to the micro-step count
    (`iterations` counts updates under accumulation), so this reads
    `_accumulated_gradients`, `_get_variable_index` and `_iterations`
    (`tests/test_optimizers.py` checks that they still mean this).
    """

    def __init__(self, inner, grads, tvs):
        base = _base_optimizer(inner)
        self.loss_scale = inner.dynamic_scale if isinstance(inner, keras.optimizers.LossScaleOptimizer) else None
        full = grads
        if self.loss_scale is not None:
            full = [None if g is None else g / ops.cast(self.loss_scale, g.dtype) for g in grads]
        self.steps = base.gradient_accumulation_steps
        self.is_update = None
        self.micro, self.acc = full, None
        if self.steps:
            self.is_update = ops.equal(ops.mod(ops.convert_to_tensor(base._iterations) + 1, self.steps), 0)
            self.acc = [
                None if g is None else ops.convert_to_tensor(base._accumulated_gradients[base._get_variable_index(v)])
                for g, v in zip(full, tvs)
            ]
            full = [None if g is None else (g + ops.cast(a, g.dtype)) / self.steps for g, a in zip(full, self.acc)]
        self.full = full

    def to_inner(self, grads):
        """Turns a gradient meant for the update into what the inner optimizer
        takes: re-scaled by the loss scale, and such that its accumulation
        `(g + acc) / steps` gives `grads` back on update steps."""
        if self.steps:
            grads = [
                None if g is None else ops.where(self.is_update, g * self.steps - ops.cast(a, g.dtype), m)
                for g, a, m in zip(grads, self.acc, self.micro)
            ]
        if self.loss_scale is not None:  # the inner LossScaleOptimizer unscales again
            grads = [None if g is None else g * ops.cast(self.loss_scale, g.dtype) for g in grads]
        return grads


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

    It works on every Keras backend: `apply` for TensorFlow and PyTorch (and
    under `tf.distribute`), `stateless_apply` for JAX's trainer, both thin
    drivers of one pure step (the policy, the statistics, the skip decision).

    Statistics are kept in optimizer variables, updated inside the train step
    (so they work with `jit_compile=True` and `steps_per_execution > 1`, where
    they describe the latest step). The running totals and the policy's state
    (e.g. AutoClip's history) are saved with the model, so a resumed run
    continues exactly; the latest step's statistics and gradient copies are
    not (they are NaN after loading until the next update). Read them with
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
        _validation.bool_arg("record_gradients", record_gradients)
        _validation.bool_arg("record_update_norms", record_update_norms)
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
        self._counters = self._own_variable("counters", (len(_COUNTERS),), "int32", 0)
        self._policy_state = [
            self._own_variable(f"policy_{name}", shape, dtype, value)
            for name, shape, dtype, value in self._report_policy.state_spec(var_list)
        ]
        # Everything above is saved with the model; the statistics of the
        # latest step below are not (they are recomputed at every update).
        self._saved_count = len(self._variables)
        # Initialized to 0, not NaN: JAX checks across processes that every
        # variable starts equal, and NaN != NaN. Before the first update the
        # norms read as NaN (see `gradient_statistics`).
        self._latest = self._own_variable("latest", (len(_LATEST),), "float32", 0.0)
        self._gradient_norms = self._own_variable("gradient_norms", (k,), "float32")
        self._update_norms = self._own_variable("update_norms", (k,), "float32") if self.record_update_norms else None
        self._weight_norms = self._own_variable("weight_norms", (k,), "float32") if self.record_update_norms else None
        self._last_gradients = []
        if self._recording:
            self._build_gradient_copies()

    def _build_gradient_copies(self):
        self._last_gradients = [
            self._own_variable(f"last_gradient_{v.path.replace('/', '_')}", v.shape, "float32")
            for v in self._trainable_variables
        ]

    def enable_gradient_recording(self):
        """Starts keeping the latest post-policy gradients for `last_gradients()`.

        The same as `record_gradients=True`, for an optimizer already created
        (GradientBoard calls it when it writes histograms). The config is not
        changed and the copies are not saved with the model. Under a JAX or
        TensorFlow train function already traced, re-create it
        (`model.make_train_function(force=True)`).
        """
        if self._recording:
            return
        self._recording = True
        if self.built:
            with keras.name_scope(self.name, caller=self):
                self._build_gradient_copies()

    @property
    def _recording(self):
        return self.record_gradients or getattr(self, "_recording_enabled", False)

    @_recording.setter
    def _recording(self, value):
        self._recording_enabled = value

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    def _saved_variables(self):
        own = self._variables[: self._saved_count] if self.built else self._variables
        return own + self.inner_optimizer.variables

    def save_own_variables(self, store):
        # The latest step's statistics and gradient copies are left out, so the
        # saved layout does not depend on what was being recorded.
        for i, variable in enumerate(self._saved_variables()):
            store[str(i)] = keras.ops.convert_to_numpy(variable)

    def load_own_variables(self, store):
        variables = self._saved_variables()
        if len(store.keys()) != len(variables):
            warnings.warn(
                f"Skipping variable loading for optimizer '{self.name}', because it has {len(variables)} "
                f"saved variables whereas the saved optimizer has {len(store.keys())} variables.",
                stacklevel=2,
            )
            return
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])

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
        self._stateful_step(grads, tvs)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """`apply` without side effects (JAX): returns the new trainable and
        optimizer variable values, in the order of `variables`."""
        if keras.backend.backend() == "tensorflow":
            raise ValueError(
                "stateless_apply is not supported with the TensorFlow backend (as it is incompatible with "
                "tf.distribute), as for Keras's own optimizers. Use `apply`."
            )
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
        tvs = self._trainable_variables
        mapping = list(zip(tvs, trainable_variables)) + list(zip(self.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            result = self._compute([g for g in grads], tvs, None, 1)
            self._finish(result, tvs, lambda: self._inner_stateless_update(result["grads_for_inner"], tvs))
        return [scope.get_current_value(v) for v in tvs], [scope.get_current_value(v) for v in self.variables]

    def _inner_stateless_update(self, grads, tvs):
        """The inner optimizer's own `stateless_apply` (a LossScaleOptimizer's
        stateful `apply` branches with assignments, which JAX cannot trace),
        its results assigned in the enclosing StatelessScope."""
        inner = self.inner_optimizer
        values = [ops.convert_to_tensor(v) for v in inner.variables]
        new_tvs, new_values = inner.stateless_apply(values, grads, [ops.convert_to_tensor(v) for v in tvs])
        for v, value in zip(list(tvs) + list(inner.variables), list(new_tvs) + list(new_values)):
            v.assign(value)

    def _stateful_step(self, grads, tvs, replica_sum=None, num_replicas=1):
        result = self._compute(grads, tvs, replica_sum, num_replicas)
        self._finish(result, tvs, lambda: self.inner_optimizer.apply(result["grads_for_inner"], tvs))

    def _tf_distributed_apply(self, grads, tvs):
        import tensorflow as tf

        context = tf.distribute.get_replica_context()
        num_replicas = context.num_replicas_in_sync

        def replica_sum(values):
            present = [g for g in values if g is not None]
            reduced = iter(context.all_reduce(tf.distribute.ReduceOp.SUM, present) if present else [])
            return [None if g is None else next(reduced) for g in values]

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            return self._stateful_step(grads, tvs, replica_sum, num_replicas)
        result = self._compute(grads, tvs, replica_sum, num_replicas)

        def cross_replica(distribution, result):
            first = lambda x: distribution.experimental_local_results(x)[0]  # noqa: E731
            local = tf.nest.map_structure(lambda x: x if x is None else first(x), result)

            def inner_apply(grads_for_inner):
                distribution.extended.call_for_each_replica(self.inner_optimizer.apply, args=(grads_for_inner, tvs))

            self._finish(local, tvs, lambda: inner_apply(result["grads_for_inner"]))

        context.merge_call(cross_replica, args=(result,))

    # ------------------------------------------------------ the pure step
    def _compute(self, grads, tvs, replica_sum, num_replicas):
        """Pure part of a step: the policy on the gradient the update uses,
        the gradient handed to the inner optimizer, and the decisions."""
        grads = [None if g is None else ops.convert_to_tensor(g) for g in grads]
        view = _UpdateView(self.inner_optimizer, grads, tvs)
        full = view.full if replica_sum is None else replica_sum(view.full)
        norms = [None if g is None else ops.sqrt(ops.sum(ops.square(ops.cast(g, "float32")))) for g in full]
        state = [ops.convert_to_tensor(v) for v in self._policy_state]
        clipped, new_state, info = self._report_policy.apply(full, tvs, state)
        if self._monitor_only:
            grads_for_inner = grads
        else:
            # The inner optimizer's own all-reduce sums the replicas' shares back.
            shares = [None if g is None else g / num_replicas for g in clipped] if num_replicas > 1 else clipped
            grads_for_inner = view.to_inner(shares)
        norm = _global_norm_of(norms)
        decisions = self._decisions(view, norm, info)
        if view.is_update is not None:
            new_state = [ops.where(view.is_update, n, o) for n, o in zip(new_state, state)]
        latest = [norm, clipping.global_norm(clipped), info["threshold"], decisions["changed"]]
        return dict(
            decisions,
            grads_for_inner=grads_for_inner,
            clipped_grads=clipped,
            norms=[ops.zeros((), "float32") if n is None else n for n in norms],
            latest=ops.stack([ops.cast(x, "float32") for x in latest]),
            state=new_state,
        )

    def _decisions(self, view, norm, info):
        """Whether to skip the inner update, and what to count."""
        finite = ops.isfinite(norm)
        skip = info["skip"]
        if view.loss_scale is not None:
            # The LossScaleOptimizer must see non-finite steps itself, to lower its scale.
            skipped = ops.logical_or(skip, ops.logical_not(finite))
            skip = ops.logical_and(skip, finite)
        else:
            skipped = skip
        count = ops.convert_to_tensor(True) if view.is_update is None else view.is_update
        if view.is_update is not None:  # a micro-step is skipped only for its own non-finite values
            skip = ops.where(view.is_update, skip, self._report_policy.should_skip(view.micro))
        skipped = ops.logical_and(count, skipped)
        changed = ops.logical_and(info["clipped"], ops.logical_and(count, ops.logical_not(skipped)))
        return {"count": count, "changed": changed, "skip": skip, "skipped": skipped}

    # ----------------------------------------------------- the stateful end
    def _finish(self, result, tvs, inner_apply):
        """Stateful part of a step: record statistics, then update unless skipped."""
        count = result["count"]
        _assign_if(self._latest, count, result["latest"])
        self._counters.assign_add(ops.cast(ops.stack([count, result["changed"], result["skipped"]]), "int32"))
        indices = [self._get_variable_index(v) for v in tvs]
        _assign_if(self._gradient_norms, count, _scatter(indices, result["norms"], len(self._trainable_variables)))
        for v, new in zip(self._policy_state, result["state"]):
            v.assign(new)
        if self._last_gradients:
            for i, g in zip(indices, result["clipped_grads"]):
                if g is not None:
                    _assign_if(self._last_gradients[i], count, ops.cast(g, "float32"))
        before = [_snapshot(v) for v in tvs] if self.record_update_norms else None
        self._apply_unless(result["skip"], inner_apply, tvs)
        if self.record_update_norms:
            after = [_snapshot(v) for v in tvs]
            deltas = [_norm(a - b) for a, b in zip(after, before)]
            weights = [_norm(a) for a in after]
            k = len(self._trainable_variables)
            _assign_if(self._update_norms, count, _scatter(indices, deltas, k))
            _assign_if(self._weight_norms, count, _scatter(indices, weights, k))

    def _apply_unless(self, skip, inner_apply, tvs):
        """Runs the inner update unless `skip`. No variable is assigned inside
        a traced branch (JAX forbids it): when `skip` is only known inside the
        compiled step, the update runs and a skipped one is undone."""
        if keras.backend.backend() == "tensorflow":
            ops.cond(skip, lambda: None, inner_apply)
            return
        try:
            skip_now = bool(skip)
        except Exception:  # a JAX tracer
            skip_now = None
        if skip_now is not None:
            if not skip_now:
                inner_apply()
            return
        targets = list(tvs) + list(self.inner_optimizer.variables)
        before = [ops.convert_to_tensor(v) for v in targets]
        inner_apply()
        for v, old in zip(targets, before):
            v.assign(ops.where(skip, old, ops.convert_to_tensor(v)))

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
            stats["global_norm"] = stats["global_norm_clipped"] = math.nan
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
        if not self._recording:
            raise ValueError(
                "`last_gradients()` needs `record_gradients=True` in the ClippedOptimizer constructor "
                "(or `enable_gradient_recording()`)."
            )
        if not self.built:
            return {}
        return {v.path: ops.convert_to_numpy(g) for v, g in zip(self._trainable_variables, self._last_gradients)}

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
