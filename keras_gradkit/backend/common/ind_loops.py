"""The IndRNN recurrence in `keras.ops` (private): what it computes
(`IndRecurrence`) and the loops that the backend engines
(`keras_gradkit/backend/<name>/ind_recurrence.py`) share.

- `chunked_recurrence`: chunks of steps per loop iteration and a
  hand-written backward pass (TensorFlow's engine, compiled by XLA in
  training with `written_forward` as its forward loop);
- `scanned_recurrence`: `ops.scan` over the steps, differentiated by the
  backend (JAX's engine, and every backend's for activations without a
  hand-written derivative).

Nothing here depends on the backend; `benchmarks/README.md` has the
measurements behind the choices.
"""

from typing import Any, NamedTuple

import keras
from keras import ops

# Time steps handled per iteration of the chunked loops: fewer loop
# iterations, same arithmetic. The largest divisor of the sequence length up to
# this value is used.
MAX_CHUNK = 32
# Below this chunk size, a sequence is padded to a multiple of _PAD_CHUNK.
_MIN_CHUNK = 8
_PAD_CHUNK = 16
# Loop iterations that may overlap (TensorFlow's `parallel_iterations`); the
# steps `ops.scan` unrolls unless an engine chooses otherwise.
PARALLEL = 8


class IndRecurrence(NamedTuple):
    """One run of `h_t = activation(x_t @ kernel + bias + u * h_{t-1})` over
    time-major inputs: the tensors, the activation and the options, as every
    engine and loop receives them.

    Fields:
        x: `(timesteps, batch, features)`.
        kernel: `(features, units)`, or None for the recurrence alone
            (`x_t + bias + u * h_{t-1}`, `features == units`).
        bias: `(units,)`.
        u: `(units,)`, the recurrent weights.
        h0: `(batch, units)`, the initial state.
        mask: optional boolean `(timesteps, batch, 1)`; masked steps keep the
            previous state. Defaults to `None`.
        activation: the activation. Relu, tanh, sigmoid and linear have
            hand-written derivatives (functions of the stored states).
            Defaults to `keras.activations.relu`.
        last_only: bool, return only the last state; the backward pass then
            skips the (all-zero) gradients of the other states. Defaults to
            `False`.
        grad_clipping: positive float or None: during backpropagation the
            gradient w.r.t. each step's pre-activation is clipped
            elementwise to `[-grad_clipping, grad_clipping]`, as Lasagne's
            `grad_clipping`; the forward pass is unchanged. Defaults to
            `None`.
    """

    x: Any
    kernel: Any
    bias: Any
    u: Any
    h0: Any
    mask: Any = None
    activation: Any = keras.activations.relu
    last_only: bool = False
    grad_clipping: float | None = None


def _relu_slope(h):
    """relu'(pre) from h = relu(pre)."""
    return ops.cast(h > 0, h.dtype)


def _tanh_slope(h):
    """tanh'(pre) from h = tanh(pre)."""
    return 1 - h * h


def _sigmoid_slope(h):
    """sigmoid'(pre) from h = sigmoid(pre)."""
    return h * (1 - h)


def _linear_slope(h):
    """1, the derivative of the identity."""
    return ops.ones_like(h)


# Activations whose derivative `act'(pre)` is a function of their output
# `h = act(pre)`, so the backward pass needs only the stored states.
_SLOPES = {
    "relu": _relu_slope,
    "tanh": _tanh_slope,
    "sigmoid": _sigmoid_slope,
    "linear": _linear_slope,
}


def slope_for(activation):
    """The derivative of `activation` as a function of its output, or None
    when it has no hand-written one (only Keras's relu, tanh, sigmoid and
    linear do)."""
    name = getattr(activation, "__name__", None)
    if name in _SLOPES and keras.activations.get(name) is activation:
        return _SLOPES[name]
    return None


def _chunk_size(steps, max_chunk=MAX_CHUNK):
    """The largest divisor of `steps` up to `max_chunk` (1 for an unknown length)."""
    if not isinstance(steps, int):
        # Unknown, or symbolic under JAX export, where `min` is inconclusive.
        return 1
    for size in range(min(max_chunk, steps), 0, -1):
        if steps % size == 0:
            return size
    return 1


def _chunked(x, chunk):
    """(T, ...) -> (T // chunk, chunk, ...), keeping a static T static."""
    shape = ops.shape(x)
    steps = x.shape[0]
    return ops.reshape(x, (-1 if steps is None else steps // chunk, chunk) + tuple(shape[1:]))


def _scan(step, init, inputs, reverse=False, unroll=PARALLEL):
    """`ops.scan` over a tuple of inputs.

    Keras's TensorFlow `scan` cannot check several inputs whose leading
    (time) axis is unknown, so in that case the inputs travel packed in one
    float tensor and are unpacked inside the loop.
    """
    steps = inputs[0].shape[0]
    if steps is not None and not isinstance(steps, int):
        # A symbolic length (JAX export): `lax.scan` cannot split it into
        # unrolled iterations plus a remainder.
        return ops.scan(step, init, inputs, reverse=reverse)
    if len(inputs) == 1 or steps is not None:
        return ops.scan(step, init, inputs, reverse=reverse, unroll=unroll)
    dtype = init[0].dtype if isinstance(init, tuple) else init.dtype
    shapes = [ops.shape(x)[1:] for x in inputs]
    dtypes = [x.dtype for x in inputs]
    flat = [ops.reshape(ops.cast(x, dtype), (ops.shape(x)[0], -1)) for x in inputs]
    sizes = [ops.shape(f)[1] for f in flat]
    packed = ops.concatenate(flat, axis=1)

    def packed_step(carry, row):
        parts, start = [], 0
        for shape, size, original in zip(shapes, sizes, dtypes):
            part = ops.reshape(row[start : start + size], shape)
            if original == "bool":
                part = part > 0.5
            parts.append(part)
            start = start + size
        return step(carry, tuple(parts))

    return ops.scan(packed_step, init, packed, reverse=reverse, unroll=unroll)


def _project(x_chunk, kernel, bias):
    """`(chunk, batch, features) @ kernel + bias` as one matrix product
    (`x_chunk + bias` without a kernel)."""
    if kernel is None:
        return x_chunk + bias
    shape = ops.shape(x_chunk)
    flat = ops.matmul(ops.reshape(x_chunk, (-1, shape[-1])), kernel) + bias
    return ops.reshape(flat, (shape[0], shape[1], -1))


def clip_gradient(x, limit):
    """The identity, whose gradient is clipped elementwise to `[-limit, limit]`
    (Lasagne's `grad_clipping` applied to a step's pre-activation); `x` as it
    is when `limit` is None."""
    if limit is None:
        return x

    @ops.custom_gradient
    def identity(x):
        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return ops.clip(upstream, -limit, limit)

        return ops.copy(x), grad

    return identity(x)


def _next_state(h, x_row, keep, u, activation, grad_clipping=None):
    """One step, `act(x_row + u * h)`, keeping `h` where `keep` is False; the
    gradient w.r.t. the pre-activation clipped to `grad_clipping`."""
    new = activation(clip_gradient(x_row + u * h, grad_clipping))
    return new if keep is None else ops.where(keep, new, h)


def _scan_forward(recurrence, chunk):
    """States of `h_t = act(x_t @ kernel + bias + u * h_{t-1})` (kept where
    `mask` is False) for time-major `x`, as `(T, batch, units)`. The input
    projection is one matrix product per chunk of steps, so the projected
    sequence is never stored."""
    x, kernel, bias, u = recurrence.x, recurrence.kernel, recurrence.bias, recurrence.u
    h0, mask, activation = recurrence.h0, recurrence.mask, recurrence.activation

    def step(carry, inputs):
        h = carry[-1]
        x_rows = ops.unstack(_project(inputs[0], kernel, bias), num=chunk)
        m_rows = None if mask is None else ops.unstack(inputs[1], num=chunk)
        rows = []
        for j in range(chunk):
            h = _next_state(h, x_rows[j], None if mask is None else m_rows[j], u, activation)
            rows.append(h)
        out = ops.stack(rows)
        return out, out

    inputs = (_chunked(x, chunk),)
    if mask is not None:
        inputs += (_chunked(mask, chunk),)
    init = ops.repeat(ops.expand_dims(h0, 0), chunk, axis=0)
    _, states = _scan(step, init, inputs)
    return ops.reshape(states, (-1,) + tuple(ops.shape(h0)))


def written_forward(recurrence, chunk):
    """`_scan_forward` for XLA (TensorFlow in training): the same states,
    each written into the `(T, batch, units)` buffer as soon as it is computed
    and read back from it for the next step.

    Reading the state back keeps XLA from fusing each step into the next: in
    `_scan_forward` every stored state of a chunk is its own fusion that
    recomputes the chunk's earlier steps, work growing with the square of the
    chunk. The read goes through a clamped index, which XLA cannot prove equal
    to the written one, so it does not fold the read into the write, and
    each step is computed once. Needs a known length; falls back to
    `_scan_forward` otherwise."""
    x, kernel, bias, u = recurrence.x, recurrence.kernel, recurrence.bias, recurrence.u
    h0, mask, activation = recurrence.h0, recurrence.mask, recurrence.activation
    steps = x.shape[0]
    if not isinstance(steps, int):
        return _scan_forward(recurrence, chunk)
    x_chunks = _chunked(x, chunk)
    m_chunks = None if mask is None else _chunked(mask, chunk)
    row_shape = (1,) + tuple(ops.shape(h0))

    def body(i, carry):
        h, states = carry
        x_rows = ops.unstack(_project(x_chunks[i], kernel, bias), num=chunk)
        m_rows = None if mask is None else ops.unstack(m_chunks[i], num=chunk)
        for j in range(chunk):
            h = _next_state(h, x_rows[j], None if mask is None else m_rows[j], u, activation)
            t = i * chunk + j
            states = ops.slice_update(states, (t, 0, 0), ops.expand_dims(h, 0))
            h = ops.slice(states, (ops.minimum(t, steps - 1), 0, 0), row_shape)[0]
        return h, states

    states = ops.zeros((steps,) + tuple(ops.shape(h0)), h0.dtype)
    return ops.fori_loop(0, steps // chunk, body, (h0, states))[1]


def _backward_chunk(c, inputs, kernel, u, slope_of, chunk, has_grads, has_mask, clip):
    """One chunk of the backward pass, from its last step to its first.

    With `a_t = act'(pre_t)`: `g_t = grad_t + c_t`, `dpre_t = g_t * a_t` and
    `c_{t-1} = g_t * a_t * u` (`= g_t` at a masked step). The factor
    `a_t * u` is computed for the whole chunk first, so the loop costs one
    multiplication per step (two with per-step gradients). With `clip`,
    `dpre_t = clip(g_t * a_t)` and `c_{t-1} = dpre_t * u`, the clip inside
    the recurrence."""
    h_chunk, h_before, x_chunk = inputs[:3]
    slope = slope_of(h_chunk)
    keep = inputs[-1] if has_mask else None
    if has_mask:
        slope = ops.where(keep, slope, ops.zeros_like(slope))
    grad_rows = ops.unstack(inputs[3], num=chunk) if has_grads else None
    if clip is None:
        c, dpre = _unclipped_chain(c, slope, keep, u, grad_rows, chunk)
    else:
        c, dpre = _clipped_chain(c, slope, keep, u, grad_rows, chunk, clip)
    h_prev = ops.concatenate([ops.expand_dims(h_before, 0), h_chunk[:-1]], axis=0)
    return c, dpre, _weight_gradients(dpre, h_prev, x_chunk, kernel)


def _unclipped_chain(c, slope, keep, u, grad_rows, chunk):
    """The chunk's pre-activation gradients and the carry before it."""
    decay = slope * u
    if keep is not None:
        decay = ops.where(keep, decay, ops.ones_like(decay))
    decay_rows = ops.unstack(decay, num=chunk)
    g_rows = [None] * chunk
    for j in reversed(range(chunk)):
        g = c if grad_rows is None else grad_rows[j] + c
        g_rows[j] = g
        c = g * decay_rows[j]
    return c, ops.stack(g_rows) * slope


def _clipped_chain(c, slope, keep, u, grad_rows, chunk, clip):
    """`_unclipped_chain` with each step's pre-activation gradient clipped
    to `[-clip, clip]` before it flows into the step before."""
    slope_rows = ops.unstack(slope, num=chunk)
    keep_rows = None if keep is None else ops.unstack(keep, num=chunk)
    d_rows = [None] * chunk
    for j in reversed(range(chunk)):
        g = c if grad_rows is None else grad_rows[j] + c
        d = ops.clip(g * slope_rows[j], -clip, clip)
        d_rows[j] = d
        c = d * u if keep_rows is None else ops.where(keep_rows[j], d * u, g)
    return c, ops.stack(d_rows)


def _weight_gradients(dpre, h_prev, x_chunk, kernel):
    """The chunk's gradients w.r.t. `x`, `kernel` (None without one), `bias`
    and `u` from the gradients of its pre-activations."""
    units = ops.shape(dpre)[-1]
    dpre_flat = ops.reshape(dpre, (-1, units))
    if kernel is None:
        dx, dkernel = dpre, None
    else:
        x_flat = ops.reshape(x_chunk, (-1, ops.shape(kernel)[0]))
        dx = ops.reshape(ops.matmul(dpre_flat, ops.transpose(kernel)), ops.shape(x_chunk))
        dkernel = ops.matmul(ops.transpose(x_flat), dpre_flat)
    return dx, dkernel, ops.sum(dpre_flat, axis=0), ops.sum(dpre * h_prev, axis=(0, 1))


def _scan_backward(upstream, states, recurrence, slope_of, chunk):
    """Gradients w.r.t. `x`, `kernel` (None without one), `bias`, `u` and
    `h0`, given `upstream`, the gradient w.r.t. every state or, with
    `last_only`, w.r.t. the last state (the others' are then all zero and
    skipped); `grad_clipping` clips each step's pre-activation gradient."""
    x, kernel, u = recurrence.x, recurrence.kernel, recurrence.u
    h0, mask = recurrence.h0, recurrence.mask
    grad_states, grad_last = (None, upstream) if recurrence.last_only else (upstream, None)
    state_chunks = _chunked(states, chunk)
    # The state just before each chunk: h0, then each chunk's last state.
    previous = ops.concatenate([ops.expand_dims(h0, 0), state_chunks[:-1, -1]], axis=0)
    inputs = (state_chunks, previous, _chunked(x, chunk))
    if grad_states is not None:
        inputs += (_chunked(grad_states, chunk),)
    if mask is not None:
        inputs += (_chunked(mask, chunk),)
    has_kernel = kernel is not None

    def step(carry, inputs):
        c, _, (dx, dkernel, dbias, du) = _backward_chunk(
            carry[1],
            inputs,
            kernel,
            u,
            slope_of,
            chunk,
            grad_states is not None,
            mask is not None,
            recurrence.grad_clipping,
        )
        out = (dx, c, du, dbias) + ((dkernel,) if has_kernel else ())
        return out, out

    zeros = ops.zeros_like
    init = (
        zeros(inputs[2][0]),
        zeros(h0) if grad_last is None else grad_last,
        zeros(u),
        zeros(u),
    ) + ((zeros(kernel),) if has_kernel else ())
    final, outputs = _scan(step, init, inputs, reverse=True)
    dx, _, du, dbias = outputs[:4]
    return (
        ops.reshape(dx, ops.shape(x)),
        ops.sum(outputs[4], axis=0) if has_kernel else None,
        ops.sum(dbias, axis=0),
        ops.sum(du, axis=0),
        final[1],
    )


def chunked_recurrence(
    recurrence,
    chunk=None,
    max_chunk=MAX_CHUNK,
    backward_max_chunk=None,
    forward=_scan_forward,
):
    """TensorFlow's engine: chunks of `chunk` steps per loop iteration (one
    input projection per chunk) and a hand-written backward pass. `chunk`
    must divide `timesteps`; it defaults to the largest divisor up to
    `max_chunk`, and the sequence is padded with masked steps when there is
    no divisor of at least 8. The backward loop takes the largest divisor up
    to `backward_max_chunk` when that is longer (and the length is known).
    `forward(recurrence, chunk)` runs the forward loop (`written_forward`
    under XLA). Returns the states of `recurrence` (an `IndRecurrence`), or
    its last state."""
    steps = recurrence.x.shape[0]
    if chunk is None:
        chunk = _chunk_size(steps, max_chunk)
    if chunk < _MIN_CHUNK and (steps is None or steps > max_chunk):
        # No good divisor (or an unknown length): pad with masked steps, which
        # keep the state, rather than loop one step at a time.
        return _padded_recurrence(recurrence, backward_max_chunk, forward)
    backward_chunk = chunk
    if backward_max_chunk is not None and isinstance(steps, int):
        backward_chunk = max(chunk, _chunk_size(steps, backward_max_chunk))
    slope_of = slope_for(recurrence.activation)
    has_kernel = recurrence.kernel is not None

    def run(*args):
        # (x, kernel, bias, u, h0), or (x, bias, u, h0) without a kernel: the
        # tensors whose gradients the backward pass returns.
        x, bias, u, h0 = args[0], args[-3], args[-2], args[-1]
        kernel = args[1] if has_kernel else None
        inner = recurrence._replace(x=x, kernel=kernel, bias=bias, u=u, h0=h0)
        states = forward(inner, chunk)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            grads = _scan_backward(upstream, states, inner, slope_of, backward_chunk)
            return grads if has_kernel else grads[:1] + grads[2:]

        return (states[-1] if recurrence.last_only else states), grad

    tensors = (recurrence.x, recurrence.kernel, recurrence.bias, recurrence.u, recurrence.h0)
    args = tensors if has_kernel else tensors[:1] + tensors[2:]
    return ops.custom_gradient(run)(*args)


def _padded_recurrence(recurrence, backward_max_chunk=None, forward=_scan_forward):
    """`chunked_recurrence` on the sequence padded with masked steps (which
    keep the state) to a multiple of `_PAD_CHUNK`; the padding's states are
    dropped."""
    x, h0, mask = recurrence.x, recurrence.h0, recurrence.mask
    steps = ops.shape(x)[0]
    padding = (-steps) % _PAD_CHUNK
    pad_shape = (padding,) + tuple(ops.shape(x)[1:-1])
    x = ops.concatenate([x, ops.zeros(pad_shape + (ops.shape(x)[-1],), x.dtype)], axis=0)
    if mask is None:
        mask = ops.ones(tuple(ops.shape(h0)[:1]) + (1,), "bool")
        mask = ops.broadcast_to(mask, (steps,) + tuple(ops.shape(mask)))
    mask = ops.concatenate([mask, ops.zeros(pad_shape + (1,), "bool")], axis=0)
    states = chunked_recurrence(
        recurrence._replace(x=x, mask=mask),
        chunk=_PAD_CHUNK,
        backward_max_chunk=backward_max_chunk,
        forward=forward,
    )
    return states if recurrence.last_only else states[:steps]


def scanned_recurrence(recurrence, unroll=PARALLEL):
    """JAX's engine (and every backend's for activations without a
    hand-written derivative): `ops.scan` over the steps, differentiated
    automatically, `unroll` steps unrolled per loop iteration. The input
    projection stays inside the step, which XLA fuses: projecting the whole
    sequence before the loop is slower, as the projected sequence and its
    gradient then travel through memory. Returns the states of `recurrence`
    (an `IndRecurrence`), or its last state."""
    x, kernel, bias, u = recurrence.x, recurrence.kernel, recurrence.bias, recurrence.u
    mask, activation = recurrence.mask, recurrence.activation
    grad_clipping = recurrence.grad_clipping

    def step(h, inputs):
        keep = None if mask is None else inputs[1]
        row = inputs[0] + bias if kernel is None else ops.matmul(inputs[0], kernel) + bias
        h = _next_state(h, row, keep, u, activation, grad_clipping)
        return h, h

    inputs = (x,) if mask is None else (x, mask)
    last, states = _scan(step, recurrence.h0, inputs, unroll=unroll)
    return last if recurrence.last_only else states
