"""LRU: the Linear Recurrent Unit of Orvieto et al. (2023)."""

import math

import keras
from keras import ops

from keras_gradkit import _validation, backend
from keras_gradkit.api_export import keras_gradkit_export

_MODES = ("auto", "parallel", "sequential")

# |λ|² is drawn in [r_min², r_max²); its two ends would give ν_log = ±inf
# (|λ| = 0 or 1, with γ = 0 at |λ| = 1), and a phase of 0 θ_log = -inf, so
# the draws stay one float32 step inside.
_TINY = 1e-30
_LARGEST_MODULUS_SQUARED = 1.0 - 2.0**-24


def _validate_arguments(state_dim, r_min, r_max, max_phase, mode, seed):
    _validation.positive_int("state_dim", state_dim)
    _validation.float_at_least("r_min", r_min, 0.0)
    _validation.positive_float("r_max", r_max)
    if r_max > 1.0:
        raise ValueError(
            "Argument `r_max` must be in (0, 1]: an eigenvalue of modulus > 1 "
            f"makes the recurrence explode. Received: r_max={r_max!r}"
        )
    if r_min >= r_max:
        raise ValueError(
            "Argument `r_min` must be smaller than `r_max` (the eigenvalues are "
            f"drawn on the ring r_min <= |λ| <= r_max). Received: r_min={r_min!r}, "
            f"r_max={r_max!r}"
        )
    _validation.positive_float("max_phase", max_phase, hint="(phases are drawn in [0, max_phase])")
    _validation.one_of("mode", mode, _MODES)
    _validation.integer("seed", seed, allow_none=True)


def _serialize_or_none(initializer):
    return None if initializer is None else keras.initializers.serialize(initializer)


def _child_seed(seed, index):
    return None if seed is None else seed + index


def _ring_parameters(u1, u2, r_min, r_max, max_phase):
    """`(nu_log, theta_log, gamma_log)` from uniform draws `u1`, `u2` in
    [0, 1): the paper's ring initialization, |λ|² uniform on
    [r_min², r_max²], phase uniform on [0, max_phase], and
    γ = sqrt(1 - |λ|²)."""
    modulus_squared = u1 * (r_max**2 - r_min**2) + r_min**2
    modulus_squared = ops.clip(modulus_squared, _TINY, _LARGEST_MODULUS_SQUARED)
    nu_log = ops.log(-0.5 * ops.log(modulus_squared))
    theta_log = ops.log(max_phase * ops.maximum(u2, _TINY))
    gamma_log = 0.5 * ops.log(1.0 - modulus_squared)
    return nu_log, theta_log, gamma_log


def _complex_multiply(p, q):
    """p q for complex numbers held as real pairs on the last axis."""
    p_re, p_im, q_re, q_im = p[..., 0], p[..., 1], q[..., 0], q[..., 1]
    return ops.stack([p_re * q_re - p_im * q_im, p_re * q_im + p_im * q_re], axis=-1)


def _combine(earlier, later):
    """The scan operator of x_t = a_t x_{t-1} + b_t: (a1, b1) then
    (a2, b2) is (a1 a2, a2 b1 + b2)."""
    (a1, b1), (a2, b2) = earlier, later
    return _complex_multiply(a1, a2), _complex_multiply(a2, b1) + b2


def _linear_scan(a, b, mode):
    """The states x_t = a_t x_{t-1} + b_t from x_0 = 0, for complex `a`
    `(batch or 1, timesteps, N, 2)` and `b` `(batch, timesteps, N, 2)`.
    Both modes apply the one operator `_combine`; its `b` part depends on
    the later `a` only, so a step of the loop is `_combine` with the state
    as the earlier `b`."""
    # The parallel scan unrolls over the steps, so it needs their number
    # (an exported model's signature leaves it open): else, the loop.
    if mode == "parallel" and isinstance(b.shape[1], int):
        _, states = ops.associative_scan(_combine, (a, b), axis=1)
        # TensorFlow's scan loses the static shape, which the next layer checks.
        return ops.reshape(states, ops.shape(b))

    def step(state, element):
        a_t, b_t = element[..., 0], element[..., 1]
        _, state = _combine((a_t, state), (a_t, b_t))
        return state, state

    # One tensor to scan over: TensorFlow's scan fails on several of an
    # unknown length.
    elements = ops.stack([ops.broadcast_to(a, ops.shape(b)), b], axis=-1)
    _, states = ops.scan(step, ops.zeros_like(b[:, 0]), ops.moveaxis(elements, 1, 0))
    return ops.moveaxis(states, 0, 1)


def _last_unmasked(step_mask):
    """`(batch, timesteps)` int32: the index of the last unmasked step up to
    each step, -1 before the first one."""
    steps = ops.shape(step_mask)[1]
    positions = ops.expand_dims(ops.arange(steps, dtype="int32"), 0)
    # The unmasked positions in order, then the masked ones.
    order = ops.argsort(ops.where(step_mask, positions, positions + steps), axis=1)
    count = ops.cumsum(ops.cast(step_mask, "int32"), axis=1)
    found = ops.take_along_axis(order, ops.maximum(count - 1, 0), axis=1)
    return ops.where(count > 0, ops.cast(found, "int32"), -1)


@keras_gradkit_export
class LRU(keras.layers.Layer):
    """Linear Recurrent Unit (LRU): a diagonal complex linear recurrence.

    Use it where an RNN must carry information over thousands of steps and
    train fast: the recurrence is linear, so it can be computed by a
    parallel scan instead of a loop (`mode`), and its eigenvalues are
    parameterized to stay inside the unit circle. The layer is the
    recurrence alone; the paper's LRU block wraps it with a normalization, a
    nonlinear position-wise layer (an MLP or GLU) and a residual connection.

    Equation, with `u_t` the input of width `H` and `x_t` the complex state
    of size `N = state_dim`:

        x_t = λ ⊙ x_{t-1} + γ ⊙ (B u_t),        y_t = Re(C x_t) + D ⊙ u_t,
        λ_j = exp(-exp(ν_j) + i exp(θ_j)),       γ_j = exp(γ_log_j),

    from x_0 = 0. The exponential parameterization keeps every |λ_j| < 1 for
    any trainable `nu_log` (ν) and `theta_log` (θ). The normalization
    `gamma_log` starts at log sqrt(1 - |λ_j|²), so that the state keeps the
    scale of its input however close |λ_j| is to 1, and is trained, as in
    the paper's code. As in the paper, the output has the width `H` of the
    input (D is the diagonal skip `D ⊙ u_t`): change widths with a
    `keras.layers.Dense` before or after.

    The eigenvalues start uniformly on the ring `r_min <= |λ| <= r_max` of
    the complex plane (|λ|² uniform on [r_min², r_max²]) with phases
    uniform on [0, max_phase]. The defaults are the paper's; on its
    long-range tasks it draws |λ| close to 1 (e.g. `r_min=0.9,
    r_max=0.999`) and small phases (`max_phase=math.pi / 10`).

    Weights, in Keras's `(input, output)` layout (B and C transposed):
    `nu_log`, `theta_log`, `gamma_log` `(N,)`; `input_kernel`
    `[Re(B)ᵀ, Im(B)ᵀ]` `(H, 2N)`; `output_kernel` `[Re(C)ᵀ; Im(C)ᵀ]`
    `(2N, H)`; `skip_kernel` D `(H,)`. Complex numbers are held as real pairs,
    so every backend runs it; it computes in float32 (its variable dtype)
    and casts the outputs to the layer's compute dtype, so mixed precision
    leaves the scan in float32.

    Args:
        state_dim: int, N, the number of complex state units (the state has
            2N real numbers). Must be >= 1.
        r_min: float in [0, r_max), the smallest initial eigenvalue modulus.
            Defaults to `0.0`.
        r_max: float in (r_min, 1], the largest initial eigenvalue modulus.
            Defaults to `1.0`.
        max_phase: positive float, initial phases are drawn in
            `[0, max_phase]`. Defaults to `2 * math.pi`.
        input_initializer: initializer of `input_kernel` `(H, 2N)`. Defaults
            to `None`: the paper's real and imaginary parts of B each
            normal with variance `1 / (2 H)`.
        output_initializer: initializer of `output_kernel` `(2N, H)`.
            Defaults to `None`: the paper's real and imaginary parts of C
            each normal with variance `1 / N`.
        skip_initializer: initializer of `skip_kernel` `(H,)`. Defaults to
            `None`: the paper's standard normal.
        return_sequences: bool, return the whole sequence of outputs instead
            of the last one. Defaults to `False`.
        return_state: bool, also return the last state, `(batch, 2N)`: its
            real parts then its imaginary parts. Defaults to `False`.
        go_backwards: bool, process the sequence backwards (outputs are in
            the order processed, as in Keras). Defaults to `False`.
        zero_output_for_mask: bool, output zeros at masked steps instead of
            repeating the last unmasked output, as `keras.layers.RNN`
            (`keras.layers.Bidirectional` sets it to `return_sequences`).
            Defaults to `False`.
        mode: `"parallel"` (`keras.ops.associative_scan`), `"sequential"`
            (`keras.ops.scan`, one step after the other) or `"auto"`. Both
            compute the same outputs and gradients, to float32 rounding.
            `"auto"` runs the mode that trained faster in `model.fit` on
            the running backend, measured on a CPU
            (`benchmarks/rnn_speed.py`): `"parallel"` on PyTorch,
            `"sequential"` on TensorFlow and JAX.
            The parallel scan needs the number of steps: where it is
            unknown (an exported model's signature), the layer loops.
            Tracing it takes longer on TensorFlow and JAX. Defaults to
            `"auto"`.
        seed: int or None, seed of the initial eigenvalues and of the
            default initializers. Defaults to `None`.
        **kwargs: base layer arguments (`name`, `dtype`, `trainable`).

    Call arguments:
        sequences: `(batch, timesteps, features)`.
        initial_state: optional `(batch, 2N)` tensor (or a list holding
            it), real parts then imaginary parts, as `return_state`
            returns it.
        mask: optional boolean `(batch, timesteps)`. A masked step leaves
            the state unchanged; its output repeats the last unmasked
            output (zeros before the first one, whatever the initial
            state), or is zero with `zero_output_for_mask=True`.

    Returns:
        `(batch, features)`, or `(batch, timesteps, features)` with
        `return_sequences=True`; with `return_state=True`, a list of the
        output and the last state `(batch, 2N)`.

    Example:

    >>> import numpy as np, keras_gradkit
    >>> layer = keras_gradkit.layers.LRU(8, r_min=0.9, r_max=0.999, return_sequences=True)
    >>> tuple(layer(np.ones((2, 50, 3), "float32")).shape)
    (2, 50, 3)

    References:
        Orvieto et al., [Resurrecting Recurrent Neural Networks for Long
        Sequences](https://arxiv.org/abs/2303.06349), 2023.
    """

    def __init__(
        self,
        state_dim,
        r_min=0.0,
        r_max=1.0,
        max_phase=2 * math.pi,
        input_initializer=None,
        output_initializer=None,
        skip_initializer=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        zero_output_for_mask=False,
        mode="auto",
        seed=None,
        **kwargs,
    ):
        _validate_arguments(state_dim, r_min, r_max, max_phase, mode, seed)
        for name, value in (
            ("return_sequences", return_sequences),
            ("return_state", return_state),
            ("go_backwards", go_backwards),
            ("zero_output_for_mask", zero_output_for_mask),
        ):
            _validation.bool_arg(name, value)
        super().__init__(**kwargs)
        self.state_dim = state_dim
        self.r_min = float(r_min)
        self.r_max = float(r_max)
        self.max_phase = float(max_phase)
        self.input_initializer = _get_or_none(input_initializer)
        self.output_initializer = _get_or_none(output_initializer)
        self.skip_initializer = _get_or_none(skip_initializer)
        self.return_sequences = return_sequences
        self.return_state = return_state
        self.go_backwards = go_backwards
        self.zero_output_for_mask = zero_output_for_mask
        self.mode = mode
        self.seed = seed
        # `keras.layers.Bidirectional` reads it; the LRU keeps no state
        # between calls.
        self.stateful = False
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(ndim=3)

    # ------------------------------------------------------------- weights
    def build(self, sequences_shape, initial_state_shape=None):
        features = sequences_shape[-1]
        if features is None:
            raise ValueError(
                "LRU needs a known feature dimension (last axis). "
                f"Received: input shape={tuple(sequences_shape)}"
            )
        n = self.state_dim
        ring = self._ring_initial_values()
        for index, name in enumerate(("nu_log", "theta_log", "gamma_log")):
            weight = self.add_weight(
                shape=(n,),
                name=name,
                initializer=_constant(ring, index),
                autocast=False,
            )
            setattr(self, name, weight)
        self.input_kernel = self.add_weight(
            shape=(features, 2 * n),
            name="input_kernel",
            initializer=self.input_initializer or _normal(0.5, "fan_in", self.seed, 1),
            autocast=False,
        )
        # fan_in of (2N, H) is 2N: scale 2 gives the paper's variance 1 / N.
        self.output_kernel = self.add_weight(
            shape=(2 * n, features),
            name="output_kernel",
            initializer=self.output_initializer or _normal(2.0, "fan_in", self.seed, 2),
            autocast=False,
        )
        self.skip_kernel = self.add_weight(
            shape=(features,),
            name="skip_kernel",
            initializer=self.skip_initializer
            or keras.initializers.RandomNormal(0.0, 1.0, seed=_child_seed(self.seed, 3)),
            autocast=False,
        )

    def _ring_initial_values(self):
        draws = keras.random.uniform((2, self.state_dim), seed=self.seed, dtype="float32")
        return _ring_parameters(draws[0], draws[1], self.r_min, self.r_max, self.max_phase)

    def eigenvalues(self):
        """λ as `(real, imag)`, two `(state_dim,)` tensors."""
        modulus = ops.exp(-ops.exp(self.nu_log))
        phase = ops.exp(self.theta_log)
        return modulus * ops.cos(phase), modulus * ops.sin(phase)

    # ---------------------------------------------------------------- call
    def call(self, sequences, initial_state=None, mask=None):
        u = ops.cast(sequences, self.variable_dtype)
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        step_mask = None if mask is None else ops.cast(mask, "bool")
        if self.go_backwards:
            u = ops.flip(u, axis=1)
            step_mask = None if step_mask is None else ops.flip(step_mask, axis=1)
        a, b = self._scan_elements(u, step_mask, self._initial_state(initial_state))
        states = _linear_scan(a, b, self._resolved_mode)
        last_state = states[:, -1]
        if self.return_sequences:
            output = self._outputs(states, u, step_mask)
        else:
            output = self._last_output(last_state, u, step_mask)
        output = ops.cast(output, self.compute_dtype)
        if not self.return_state:
            return output
        last_state = ops.concatenate([last_state[..., 0], last_state[..., 1]], axis=-1)
        return [output, ops.cast(last_state, self.compute_dtype)]

    @property
    def _resolved_mode(self):
        # `mode="auto"`: what trained faster on the running backend.
        if self.mode == "auto":
            return backend.get("linear_recurrence").AUTO_MODE
        return self.mode

    def _initial_state(self, initial_state):
        """The initial state as complex pairs `(batch, N, 2)`, or None."""
        if isinstance(initial_state, (list, tuple)):
            if len(initial_state) != 1:
                raise ValueError(
                    "LRU has one state, `(batch, 2 * state_dim)`. Received: "
                    f"{len(initial_state)} initial states"
                )
            initial_state = initial_state[0]
        if initial_state is None:
            return None
        n = self.state_dim
        if initial_state.shape[-1] != 2 * n:
            raise ValueError(
                "The initial state of an LRU is `(batch, 2 * state_dim)`, its real "
                "parts then its imaginary parts. Received: initial state shape="
                f"{tuple(initial_state.shape)}, state_dim={n}"
            )
        initial_state = ops.cast(initial_state, self.variable_dtype)
        return ops.stack([initial_state[:, :n], initial_state[:, n:]], axis=-1)

    def _scan_elements(self, u, step_mask, initial_state):
        """`(a, b)` as complex pairs with x_t = a_t x_{t-1} + b_t: a = λ
        (`(1, timesteps, N, 2)` unless masked) and b = γ ⊙ B u_t, with
        a = 1 and b = 0 at masked steps and the initial state folded into
        b at the first step."""
        n = self.state_dim
        projected = ops.matmul(u, self.input_kernel) * ops.tile(ops.exp(self.gamma_log), 2)
        b = ops.stack([projected[..., :n], projected[..., n:]], axis=-1)
        a = ops.ones_like(u[:1, :, :1, None]) * ops.stack(self.eigenvalues(), axis=-1)
        if step_mask is not None:
            keep = step_mask[:, :, None, None]
            a = ops.where(keep, a, ops.convert_to_tensor([1.0, 0.0], a.dtype))
            b = ops.where(keep, b, 0.0)
        if initial_state is not None:
            first = b[:, :1] + _complex_multiply(a[:, :1], initial_state[:, None])
            b = ops.concatenate([first, b[:, 1:]], axis=1)
        return a, b

    def _readout(self, states, u):
        """y = Re(C x) + D ⊙ u, for states `(..., N, 2)`."""
        state = ops.concatenate([states[..., 0], -states[..., 1]], axis=-1)
        return ops.matmul(state, self.output_kernel) + self.skip_kernel * u

    def _outputs(self, states, u, step_mask):
        outputs = self._readout(states, u)
        if step_mask is None:
            return outputs
        if self.zero_output_for_mask:
            return ops.where(step_mask[..., None], outputs, 0.0)
        last = _last_unmasked(step_mask)
        repeated = ops.take_along_axis(outputs, ops.maximum(last, 0)[..., None], axis=1)
        return ops.where(last[..., None] >= 0, repeated, 0.0)

    def _last_output(self, last_state, u, step_mask):
        if step_mask is None:
            return self._readout(last_state, u[:, -1])
        if self.zero_output_for_mask:
            return ops.where(step_mask[:, -1:], self._readout(last_state, u[:, -1]), 0.0)
        # The last state is the state at the last unmasked step, whose output
        # the masked steps after it repeat.
        last = _last_unmasked(step_mask)[:, -1:]
        u_last = ops.take_along_axis(u, ops.maximum(last, 0)[..., None], axis=1)[:, 0]
        return ops.where(last >= 0, self._readout(last_state, u_last), 0.0)

    # ------------------------------------------------------ Keras protocol
    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, steps, features = tuple(sequences_shape)
        output_shape = (batch, steps, features) if self.return_sequences else (batch, features)
        if self.return_state:
            return [output_shape, (batch, 2 * self.state_dim)]
        return output_shape

    def compute_mask(self, sequences, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        output_mask = mask if self.return_sequences else None
        return [output_mask, None] if self.return_state else output_mask

    def get_config(self):
        config = {
            "state_dim": self.state_dim,
            "r_min": self.r_min,
            "r_max": self.r_max,
            "max_phase": self.max_phase,
            "input_initializer": _serialize_or_none(self.input_initializer),
            "output_initializer": _serialize_or_none(self.output_initializer),
            "skip_initializer": _serialize_or_none(self.skip_initializer),
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
            "zero_output_for_mask": self.zero_output_for_mask,
            "mode": self.mode,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


def _get_or_none(initializer):
    return None if initializer is None else keras.initializers.get(initializer)


def _normal(scale, mode, seed, index):
    return keras.initializers.VarianceScaling(
        scale, mode, "untruncated_normal", seed=_child_seed(seed, index)
    )


def _constant(values, index):
    def initializer(shape, dtype=None):
        return ops.cast(values[index], dtype)

    return initializer
