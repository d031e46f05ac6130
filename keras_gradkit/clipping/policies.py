"""Gradient clipping policies: small serializable transforms of a gradient list.

Every policy is pure. `apply(grads, variables, state)` returns the new
gradients, the new state (a list of tensors; empty for stateless policies)
and a dict of scalar tensors describing what it did:

- `"threshold"`: the threshold used (float32; NaN when the policy has none),
- `"clipped"`: whether the gradients were changed (bool),
- `"skip"`: whether the whole update must be skipped (bool).

The optimizer wrapper `keras_gradkit.optimizers.ClippedOptimizer` keeps the
state in optimizer variables (`state_spec` describes them), so the policy
itself writes no variables and works under `jit_compile=True`. Calling a
policy directly, `policy(grads, variables)`, applies it once from its initial
state and returns only the gradients.

Sparse gradients (`tf.IndexedSlices`, from `Embedding` on TensorFlow) reach
`apply` deduplicated (duplicate rows summed; `ClippedOptimizer` and a direct
call do it), so the policies work on their values: the norms, thresholds and
clipped entries equal those of the dense gradient, and the result stays sparse.
"""

import re

import keras
from keras import ops

from keras_gradkit import _validation, backend
from keras_gradkit.api_export import keras_gradkit_export
from keras_gradkit.backend.common import gradients, norms

_sparse = backend.get("sparse")
# Keras's ops, or (PyTorch, whose step runs eagerly) the backend's own, which
# convert as Keras does without its checks of each argument.
_step_ops = backend.get("step_ops")


def _float32(x):
    return ops.cast(x, "float32")


def global_norm(grads):
    """The L2 norm of all non-`None` tensors in `grads` taken together (float32).

    Sparse gradients (`tf.IndexedSlices`) count as their dense tensor:
    duplicate rows are summed before squaring, unlike `tf.linalg.global_norm`
    and Keras's `global_clipnorm`.

    Args:
        grads: list of gradients (tensors, NumPy arrays, `tf.IndexedSlices`
            or `None`).

    Returns:
        A float32 scalar tensor (0 when every entry is `None`).

    Example:

    ```python
    >>> import numpy as np, keras, keras_gradkit
    >>> norm = keras_gradkit.clipping.global_norm([np.array([3.0]), None, np.array([4.0])])
    >>> float(keras.ops.convert_to_numpy(norm))
    5.0
    ```
    """
    return norms.global_norm(_sparse.deduplicate(grads))


def _as_tensors(values):
    """Backend tensors (NumPy inputs times a torch tensor fail); `None` stays."""
    return _step_ops.convert_all(values)


def _scale_one(g, scale):
    """`g * scale` in `g`'s dtype (slices stay slices; `ops.multiply` would
    too, but the `*` operator of `tf.IndexedSlices` does not exist)."""
    return gradients.map_values(g, lambda x: x * ops.cast(scale, x.dtype))


def _scale(grads, scale):
    return [None if g is None else _scale_one(g, scale) for g in grads]


def _info(threshold=float("nan"), clipped=False, skip=False):
    return {
        "threshold": _step_ops.cast(_step_ops.convert_to_tensor(threshold), "float32"),
        "clipped": _step_ops.convert_to_tensor(clipped, "bool"),
        "skip": _step_ops.convert_to_tensor(skip, "bool"),
    }


def _any(flags):
    flags = [ops.convert_to_tensor(f, "bool") for f in flags]
    if not flags:
        return ops.convert_to_tensor(False)
    return ops.any(ops.stack(flags))


class ClippingPolicy:
    """Base class of the clipping policies.

    Subclasses implement `apply`; stateful ones also `state_spec`. Policies
    skip `None` gradients and keep the dtype of each gradient.

    On TensorFlow an `Embedding` gradient arrives as a `tf.IndexedSlices`
    with unique indices. `keras.ops.multiply`, `clip`, `abs`, `square`,
    `sqrt` and `divide` keep it sparse and `sum` reduces its values, all as on
    the dense gradient; `where`, `maximum`, `greater` and `isfinite` return
    the dense result; `g * 0.5` and `g > 0.5` raise `TypeError`.

    Example:

    ```python
    >>> import numpy as np, keras, keras_gradkit
    >>> class Halve(keras_gradkit.clipping.ClippingPolicy):
    ...     def apply(self, grads, variables, state):
    ...         info = {"threshold": keras.ops.convert_to_tensor(float("nan"), "float32"),
    ...                 "clipped": keras.ops.convert_to_tensor(True),
    ...                 "skip": keras.ops.convert_to_tensor(False)}
    ...         return [None if g is None else keras.ops.multiply(g, 0.5) for g in grads], [], info
    >>> [keras.ops.convert_to_numpy(g).tolist() for g in Halve()([np.array([2.0, -4.0])])]
    [[1.0, -2.0]]
    ```
    """

    def state_spec(self, variables):
        """The state this policy keeps: a list of `(name, shape, dtype, initial_value)`."""
        return []

    def initial_state(self, variables):
        """The state before the first step, as a list of tensors."""
        return [
            ops.full(shape, value, dtype=dtype)
            for _, shape, dtype, value in self.state_spec(variables)
        ]

    def apply(self, grads, variables, state):
        """Transforms `grads`.

        Args:
            grads: list of gradient tensors (or `None`); `tf.IndexedSlices`
                must have unique indices (see `__call__`).
            variables: the matching list of variables (needed by policies that
                look at the weights or at the variable paths), or `None`.
            state: the list of state tensors described by `state_spec`.

        Returns:
            `(new_grads, new_state, info)`; `info` holds the scalar tensors
            `"threshold"`, `"clipped"` and `"skip"`.
        """
        raise NotImplementedError

    def should_skip(self, grads):
        """Whether a (partial) gradient alone calls for skipping; pure, no state."""
        return ops.convert_to_tensor(False)

    def __call__(self, grads, variables=None):
        grads = _sparse.deduplicate(list(grads))
        new_grads, _, _ = self.apply(grads, variables, self.initial_state(variables))
        return new_grads

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{self.__class__.__name__}({args})"


@keras_gradkit_export
class NoClip(ClippingPolicy):
    """Monitor-only policy: leaves the gradients unchanged.

    Use it to only record gradient statistics with
    `keras_gradkit.optimizers.ClippedOptimizer` (this is what GradientBoard
    installs). With it, Keras's own `clipnorm`, `global_clipnorm` or
    `clipvalue` on the inner optimizer keep working unchanged, and the wrapper
    reports them as the equivalent policy.

    Equation: `g <- g`.

    Example:

    ```python
    import keras, keras_gradkit
    opt = keras_gradkit.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(global_clipnorm=1.0), keras_gradkit.clipping.NoClip())
    ```
    """

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        return list(grads), [], _info()


@keras_gradkit_export
class ClipByValue(ClippingPolicy):
    """Clips every gradient entry to `[-max_value, max_value]`.

    The same transform as Keras's `clipvalue`; it changes the direction of the
    gradient, so prefer `ClipByGlobalNorm` unless single entries explode.

    Equation: `g_i <- min(max(g_i, -max_value), max_value)`.

    Args:
        max_value: positive float, the largest absolute gradient entry.

    Returns:
        (from `__call__`) the list of clipped gradients.

    Example:

    ```python
    >>> import numpy as np, keras, keras_gradkit
    >>> grads = keras_gradkit.clipping.ClipByValue(0.5)([np.array([-2.0, 0.25, 3.0])])
    >>> keras.ops.convert_to_numpy(grads[0]).tolist()
    [-0.5, 0.25, 0.5]
    ```

    References:
        Mikolov, [Statistical language models based on neural networks](https://www.fit.vut.cz/study/phd-thesis/283/.en), 2012.
    """

    def __init__(self, max_value):
        self.max_value = _validation.positive_float("max_value", max_value)

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        v = self.max_value
        clipped = _any([ops.any(ops.abs(_sparse.values_of(g)) > v) for g in grads if g is not None])
        new = [
            None if g is None else gradients.map_values(g, lambda x: ops.clip(x, -v, v))
            for g in grads
        ]
        return new, [], _info(v, clipped)

    def get_config(self):
        return {"max_value": self.max_value}


@keras_gradkit_export
class ClipByNorm(ClippingPolicy):
    """Rescales each gradient tensor separately to L2 norm at most `max_norm`.

    The same transform as Keras's `clipnorm`. Each tensor keeps its direction
    but the overall gradient direction changes; `ClipByGlobalNorm` keeps it.

    Equation: `g_k <- g_k * max_norm / max(|g_k|, max_norm)` for each tensor k.

    Args:
        max_norm: positive float, the largest L2 norm of one gradient tensor.

    Returns:
        (from `__call__`) the list of clipped gradients.

    Example:

    ```python
    >>> import numpy as np, keras, keras_gradkit
    >>> grads = keras_gradkit.clipping.ClipByNorm(2.5)([np.array([3.0, 4.0]), np.array([0.25])])
    >>> [keras.ops.convert_to_numpy(g).tolist() for g in grads]  # norms 5 and 0.25
    [[1.5, 2.0], [0.25]]
    ```

    References:
        Pascanu et al., [On the difficulty of training recurrent neural networks](https://arxiv.org/abs/1211.5063), 2013.
    """

    def __init__(self, max_norm):
        self.max_norm = _validation.positive_float("max_norm", max_norm)

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        t = self.max_norm
        new, flags = [], []
        for g in grads:
            if g is None:
                new.append(None)
                continue
            norm = norms.norm(g)
            flags.append(norm > t)
            new.append(_scale_one(g, t / ops.maximum(norm, t)))
        return new, [], _info(t, _any(flags))

    def get_config(self):
        return {"max_norm": self.max_norm}


@keras_gradkit_export
class ClipByGlobalNorm(ClippingPolicy):
    """Rescales the whole gradient so that its global L2 norm is at most `max_norm`.

    The standard cure for exploding gradients in recurrent networks. The same
    transform as Keras's `global_clipnorm`, but `ClippedOptimizer` applies it to
    the gradient the update uses (after the cross-replica sum under
    `MirroredStrategy`, after loss-scale unscaling, after accumulation).

    Equation: `g <- g * max_norm / max(|g|, max_norm)`, `|g|` the norm of all
    gradient tensors concatenated. A non-finite norm makes every entry NaN.

    Args:
        max_norm: positive float, the largest global gradient norm.

    Returns:
        (from `__call__`) the list of clipped gradients.

    Example:

    ```python
    >>> import numpy as np, keras, keras_gradkit
    >>> grads = keras_gradkit.clipping.ClipByGlobalNorm(2.5)([np.array([3.0]), np.array([4.0])])
    >>> [keras.ops.convert_to_numpy(g).tolist() for g in grads]  # global norm 5
    [[1.5], [2.0]]
    ```

    References:
        Pascanu et al., [On the difficulty of training recurrent neural networks](https://arxiv.org/abs/1211.5063), 2013.
    """

    def __init__(self, max_norm):
        self.max_norm = _validation.positive_float("max_norm", max_norm)

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        t = self.max_norm
        norm = norms.global_norm(grads)
        # Same form as Keras's `clip_by_global_norm`: 1 when norm <= t, NaN for a non-finite norm.
        scale = t * ops.minimum(1.0 / norm, 1.0 / t) + (norm - norm)
        return _scale(grads, scale), [], _info(t, norm > t)

    def get_config(self):
        return {"max_norm": self.max_norm}


@keras_gradkit_export
class AutoClip(ClippingPolicy):
    """Global-norm clipping at a percentile of the gradient norms seen so far.

    Use it when you don't know a good clipping threshold: it adapts to the
    scale of the gradients of the model at hand.

    Equation: with `h` the global gradient norms of the last `history_size`
    steps, the current one included, `threshold = percentile(h, percentile)`
    (linear interpolation, as `numpy.percentile`) and
    `g <- g * min(1, threshold / |g|)`. Non-finite norms are not recorded.

    Args:
        percentile: float in (0, 100], the percentile of the history used as
            threshold. Defaults to `10.0`.
        history_size: positive int, how many past norms are kept (a ring
            buffer once full). Defaults to `10000`.

    Returns:
        (from `__call__`) the list of clipped gradients; called directly, the
        history holds only the current norm, so nothing is clipped.

    Example:

    ```python
    import keras, keras_gradkit
    opt = keras_gradkit.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(), keras_gradkit.clipping.AutoClip(percentile=10.0))
    ```

    References:
        Seetharaman et al., [AutoClip: Adaptive Gradient Clipping for Source Separation Networks](https://arxiv.org/abs/2007.14469), 2020.
    """

    def __init__(self, percentile=10.0, history_size=10000):
        _validation.positive_float("percentile", percentile)
        if percentile > 100:
            raise ValueError(
                f"Argument `percentile` must be in (0, 100]. Received: percentile={percentile!r}"
            )
        self.percentile = float(percentile)
        self.history_size = _validation.positive_int("history_size", history_size)

    def state_spec(self, variables):
        return [("history", (self.history_size,), "float32", 0.0), ("count", (), "int32", 0)]

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        history, count = _as_tensors(state)
        size = self.history_size
        norm = norms.global_norm(grads)
        finite = ops.isfinite(norm)
        slot = ops.mod(count, size)
        positions = ops.arange(size, dtype="int32")
        history = ops.where(ops.logical_and(positions == slot, finite), norm, history)
        count = count + ops.cast(finite, "int32")
        filled = ops.minimum(count, size)
        ordered = ops.sort(ops.where(positions < filled, history, float("inf")))
        rank = (self.percentile / 100.0) * _float32(ops.maximum(filled - 1, 0))
        low = ops.floor(rank)
        low_value = ops.take(ordered, ops.cast(low, "int32"))
        high_value = ops.take(ordered, ops.cast(ops.ceil(rank), "int32"))
        threshold = low_value + (high_value - low_value) * (rank - low)
        threshold = ops.where(filled > 0, threshold, float("nan"))
        clipped = norm > threshold
        scale = ops.where(clipped, threshold / ops.where(clipped, norm, 1.0), 1.0)
        return _scale(grads, scale), [history, count], _info(threshold, clipped)

    def get_config(self):
        return {"percentile": self.percentile, "history_size": self.history_size}


def _unit_norm(x):
    x = _float32(x)
    rank = len(x.shape)
    if rank <= 1:
        return ops.abs(x)
    return ops.sqrt(ops.sum(ops.square(x), axis=tuple(range(rank - 1)), keepdims=True))


@keras_gradkit_export
class AdaptiveClip(ClippingPolicy):
    """Unit-wise Adaptive Gradient Clipping (AGC): clips relative to the weight norm.

    Use it to train without normalization layers or with large batches, as
    the NFNets do; leave the final classifier out through `exclude`.

    Equation: for each output unit `i` with weights `W_i` and gradient `G_i`,
    `m_i = clipping * max(|W_i|, epsilon)` and, when `|G_i| > m_i`,
    `G_i <- G_i * m_i / max(|G_i|, 1e-6)`. Units: for a variable of rank >= 2
    (Dense `(in, out)`, recurrent `(units, units)`, Conv `(..., in, out)`)
    the norm runs over all axes but the last; vectors and scalars (biases,
    IndRNN recurrent weights) are clipped entry by entry.

    Args:
        clipping: positive float, the largest ratio of gradient norm to
            weight norm per unit. Defaults to `0.01`.
        epsilon: positive float, the smallest weight norm used, so that
            zero-initialized weights can move. Defaults to `1e-3`.
        exclude: a regular expression or a list of them; variables whose `path`
            matches one (`re.search`) are not clipped. Defaults to `()`.

    Returns:
        (from `__call__(grads, variables)`) the list of clipped gradients.

    Example:

    ```python
    import keras, keras_gradkit
    policy = keras_gradkit.clipping.AdaptiveClip(clipping=0.01, exclude=["classifier"])
    opt = keras_gradkit.optimizers.ClippedOptimizer(keras.optimizers.SGD(0.1), policy)
    ```

    References:
        Brock et al., [High-Performance Large-Scale Image Recognition Without Normalization](https://arxiv.org/abs/2102.06171), 2021.
    """

    def __init__(self, clipping=0.01, epsilon=1e-3, exclude=()):
        clipping = _validation.positive_float("clipping", clipping)
        # 0 would leave zero-initialized weights (biases) stuck at 0.
        epsilon = _validation.positive_float("epsilon", epsilon)
        self.clipping = clipping
        self.epsilon = epsilon
        self.exclude = _validation.patterns("exclude", exclude)

    def _excluded(self, variable):
        path = getattr(variable, "path", None) or getattr(variable, "name", "")
        return any(re.search(p, path) for p in self.exclude)

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        if variables is None:
            raise ValueError(
                "`AdaptiveClip` needs the variables: call it as `policy(grads, variables)`."
            )
        new, flags = [], []
        for g, w in zip(grads, variables):
            if g is None or self._excluded(w):
                new.append(g)
                continue
            max_norm = self.clipping * ops.maximum(_unit_norm(w), self.epsilon)
            if len(w.shape) <= 1:  # one unit per entry: those the slices hold
                max_norm = _sparse.gather_rows(g, max_norm)
            # Zero rows add nothing to a unit's norm: the unique rows give the dense norms.
            g_norm = _unit_norm(_sparse.values_of(g))
            trigger = g_norm > max_norm
            flags.append(ops.any(trigger))
            factor = ops.where(trigger, max_norm / ops.maximum(g_norm, 1e-6), 1.0)
            new.append(_scale_one(g, factor))
        return new, [], _info(clipped=_any(flags))

    def get_config(self):
        return {"clipping": self.clipping, "epsilon": self.epsilon, "exclude": list(self.exclude)}


@keras_gradkit_export
class SkipNonFinite(ClippingPolicy):
    """Skips the whole update when any gradient entry is NaN or infinite.

    With `ClippedOptimizer` a skipped step leaves the weights and the inner
    optimizer's slots and iteration count untouched, and is counted in
    `skipped_steps`. Put it first in a `chain` to protect the other policies'
    state.

    Equation: `update <- update if all(isfinite(g)) else no update`.

    Example:

    ```python
    import keras, keras_gradkit
    policy = keras_gradkit.clipping.chain(
        keras_gradkit.clipping.SkipNonFinite(), keras_gradkit.clipping.ClipByGlobalNorm(1.0))
    opt = keras_gradkit.optimizers.ClippedOptimizer(keras.optimizers.Adam(), policy)
    ```

    References:
        optax `apply_if_finite`, <https://optax.readthedocs.io>.
    """

    def should_skip(self, grads):
        finite = [ops.all(ops.isfinite(_sparse.values_of(g))) for g in grads if g is not None]
        return (
            ops.logical_not(ops.all(ops.stack(finite))) if finite else ops.convert_to_tensor(False)
        )

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        return list(grads), [], _info(skip=self.should_skip(grads))


@keras_gradkit_export
class Chain(ClippingPolicy):
    """Applies several policies in order (build it with `keras_gradkit.clipping.chain`).

    The reported threshold is the last one defined (not NaN) along the chain;
    the update is clipped or skipped if any policy clips or skips it.

    Args:
        policies: list of `ClippingPolicy` objects.

    Example:

    ```python
    >>> import numpy as np, keras, keras_gradkit
    >>> policy = keras_gradkit.clipping.Chain(
    ...     [keras_gradkit.clipping.SkipNonFinite(), keras_gradkit.clipping.ClipByGlobalNorm(2.5)])
    >>> [keras.ops.convert_to_numpy(g).tolist() for g in policy([np.array([3.0, 4.0])])]
    [[1.5, 2.0]]
    ```
    """

    def __init__(self, policies):
        policies = list(policies)
        for p in policies:
            if not isinstance(p, ClippingPolicy):
                raise TypeError(
                    f"Argument `policies` must be a list of clipping policies. Received: policies={policies!r}"
                )
        self.policies = policies

    def state_spec(self, variables):
        specs = []
        for i, p in enumerate(self.policies):
            specs += [
                (f"{i}_{name}", shape, dtype, value)
                for name, shape, dtype, value in p.state_spec(variables)
            ]
        return specs

    def apply(self, grads, variables, state):
        grads = _as_tensors(grads)
        grads, state, new_state = list(grads), list(state), []
        threshold, clipped, skip = _info()["threshold"], [], []
        for p in self.policies:
            n = len(p.state_spec(variables))
            grads, s, info = p.apply(grads, variables, state[:n])
            state = state[n:]
            new_state += list(s)
            threshold = ops.where(ops.isnan(info["threshold"]), threshold, info["threshold"])
            clipped.append(info["clipped"])
            skip.append(info["skip"])
        return (
            grads,
            new_state,
            {"threshold": threshold, "clipped": _any(clipped), "skip": _any(skip)},
        )

    def should_skip(self, grads):
        return _any([p.should_skip(grads) for p in self.policies])

    def get_config(self):
        return {"policies": [keras.saving.serialize_keras_object(p) for p in self.policies]}

    def __repr__(self):
        # Each policy by its own repr, not by the serialized dicts of `get_config`.
        return f"Chain(policies=[{', '.join(repr(p) for p in self.policies)}])"

    @classmethod
    def from_config(cls, config):
        return cls([keras.saving.deserialize_keras_object(p) for p in config["policies"]])


def chain(*policies):
    """Returns a policy applying `policies` in order, e.g. `chain(SkipNonFinite(), AutoClip())`.

    Example:

    ```python
    >>> import keras_gradkit
    >>> keras_gradkit.clipping.chain(keras_gradkit.clipping.SkipNonFinite(), keras_gradkit.clipping.AutoClip())
    Chain(policies=[SkipNonFinite(), AutoClip(percentile=10.0, history_size=10000)])
    ```
    """
    return Chain(policies)


def get(identifier):
    """Returns a policy from a policy object or its serialized dict.

    Args:
        identifier: a `ClippingPolicy`, or the dict
            `keras.saving.serialize_keras_object` made of one.

    Returns:
        The `ClippingPolicy`.

    Raises:
        TypeError: `identifier` is neither.

    Example:

    ```python
    >>> import keras, keras_gradkit
    >>> config = keras.saving.serialize_keras_object(keras_gradkit.clipping.ClipByNorm(1.0))
    >>> keras_gradkit.clipping.get(config)
    ClipByNorm(max_norm=1.0)
    ```
    """
    if isinstance(identifier, ClippingPolicy):
        return identifier
    if isinstance(identifier, dict):
        policy = keras.saving.deserialize_keras_object(identifier)
        if isinstance(policy, ClippingPolicy):
            return policy
    raise TypeError(
        "Argument `identifier` must be a keras_gradkit.clipping policy or its serialized dict. "
        f"Received: identifier={identifier!r}"
    )
