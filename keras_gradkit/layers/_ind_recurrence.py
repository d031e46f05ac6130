"""The IndRNN recurrence engine (private): the loops behind
`keras_gradkit.layers.IndRNN`, one per backend.

`ind_recurrence` picks the engine that measured fastest in `model.fit`
(`benchmarks/rnn_speed.py`): chunks with a hand-written backward pass on
TensorFlow (compiled by XLA in training), `ops.scan` differentiated by JAX on
JAX, a `torch.autograd.Function` with in-place loops on PyTorch. The
backend-specific code of the layer lives here and nowhere else.
"""

import keras
from keras import ops

# Time steps handled per iteration of the fast layer's loops: fewer loop
# iterations, same arithmetic. The largest divisor of the sequence length up to
# this value is used.
_MAX_CHUNK = 32
# The same, for the loops that XLA compiles (TensorFlow in training): 10-50
# steps measured within noise of each other for the forward loop
# (`_written_forward`). The backward loop takes longer chunks, which spread its
# per-chunk work (the slopes, the weight-gradient products) over more steps:
# 25 measured 20-21 ms against 27-30 ms for 10 at T = 1000.
_COMPILED_MAX_CHUNK = 16
_COMPILED_MAX_BACKWARD_CHUNK = 25
# Below this chunk size, a sequence is padded to a multiple of _PAD_CHUNK.
_MIN_CHUNK = 8
_PAD_CHUNK = 16
# Loop iterations that may overlap (TensorFlow's `parallel_iterations`; JAX
# unrolls this many iterations instead).
_PARALLEL = 8
# Steps unrolled per iteration of JAX's `lax.scan`: 2 measured fastest in
# `fit` (1.4x the cell at T = 100, 1.5x at T = 1000), 8 compiled longer and
# lost to the cell at T = 100.
_JAX_UNROLL = 2


def _relu_slope(h):
    return ops.cast(h > 0, h.dtype)


def _tanh_slope(h):
    return 1 - h * h


def _sigmoid_slope(h):
    return h * (1 - h)


def _linear_slope(h):
    return ops.ones_like(h)


# Activations whose derivative `act'(pre)` is a function of their output
# `h = act(pre)`, so the backward pass needs only the stored states.
_SLOPES = {
    "relu": _relu_slope,
    "tanh": _tanh_slope,
    "sigmoid": _sigmoid_slope,
    "linear": _linear_slope,
}


def _slope_for(activation):
    name = getattr(activation, "__name__", None)
    if name in _SLOPES and keras.activations.get(name) is activation:
        return _SLOPES[name]
    return None


def _chunk_size(steps, max_chunk=_MAX_CHUNK):
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


def _scan(step, init, inputs, reverse=False, unroll=_PARALLEL):
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
    """`(chunk, batch, features) @ kernel + bias` as one matrix product."""
    shape = ops.shape(x_chunk)
    flat = ops.matmul(ops.reshape(x_chunk, (-1, shape[-1])), kernel) + bias
    return ops.reshape(flat, (shape[0], shape[1], -1))


def _next_state(h, x_row, keep, u, activation):
    """One step, `act(x_row + u * h)`, keeping `h` where `keep` is False."""
    new = activation(x_row + u * h)
    return new if keep is None else ops.where(keep, new, h)


def _scan_forward(x, kernel, bias, u, h0, mask, activation, chunk):
    """States of `h_t = act(x_t @ kernel + bias + u * h_{t-1})` (kept where
    `mask` is False) for time-major `x`, as `(T, batch, units)`. The input
    projection is one matrix product per chunk of steps, so the projected
    sequence is never stored."""

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


def _written_forward(x, kernel, bias, u, h0, mask, activation, chunk):
    """`_scan_forward` for XLA (TensorFlow in training): the same states,
    each written into the `(T, batch, units)` buffer as soon as it is computed
    and read back from it for the next step.

    Reading the state back keeps XLA from fusing each step into the next: in
    `_scan_forward` every stored state of a chunk is its own fusion that
    recomputes the chunk's earlier steps, work growing with the square of the
    chunk. The read goes through a clamped index, which XLA cannot prove equal
    to the written one, so it does not fold the read into the write. At
    T = 1000 the forward loop took 6-7 ms against 12-13 ms for `_scan_forward`.
    Needs a known length; falls back to `_scan_forward` otherwise."""
    steps = x.shape[0]
    if not isinstance(steps, int):
        return _scan_forward(x, kernel, bias, u, h0, mask, activation, chunk)
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


def _backward_chunk(c, inputs, kernel, u, slope_of, chunk, has_grads, has_mask):
    """One chunk of the backward pass, from its last step to its first.

    With `a_t = act'(pre_t)`: `g_t = grad_t + c_t`, `dpre_t = g_t * a_t` and
    `c_{t-1} = g_t * a_t * u` (`= g_t` at a masked step). The factor
    `a_t * u` is computed for the whole chunk first, so the loop costs one
    multiplication per step (two with per-step gradients)."""
    h_chunk, h_before, x_chunk = inputs[:3]
    slope = slope_of(h_chunk)
    decay = slope * u
    if has_mask:
        keep = inputs[-1]
        slope = ops.where(keep, slope, ops.zeros_like(slope))
        decay = ops.where(keep, decay, ops.ones_like(decay))
    decay_rows = ops.unstack(decay, num=chunk)
    grad_rows = ops.unstack(inputs[3], num=chunk) if has_grads else None
    g_rows = [None] * chunk
    for j in reversed(range(chunk)):
        g = c if grad_rows is None else grad_rows[j] + c
        g_rows[j] = g
        c = g * decay_rows[j]
    dpre = ops.stack(g_rows) * slope
    h_prev = ops.concatenate([ops.expand_dims(h_before, 0), h_chunk[:-1]], axis=0)
    return c, dpre, _weight_gradients(dpre, h_prev, x_chunk, kernel)


def _weight_gradients(dpre, h_prev, x_chunk, kernel):
    """The chunk's gradients w.r.t. `x`, `kernel`, `bias` and `u` from the
    gradients of its pre-activations."""
    features, units = ops.shape(kernel)[0], ops.shape(kernel)[1]
    x_flat = ops.reshape(x_chunk, (-1, features))
    dpre_flat = ops.reshape(dpre, (-1, units))
    dx = ops.reshape(ops.matmul(dpre_flat, ops.transpose(kernel)), ops.shape(x_chunk))
    dkernel = ops.matmul(ops.transpose(x_flat), dpre_flat)
    return dx, dkernel, ops.sum(dpre_flat, axis=0), ops.sum(dpre * h_prev, axis=(0, 1))


def _scan_backward(grad_states, grad_last, states, x, kernel, u, h0, mask, slope_of, chunk):
    """Gradients w.r.t. `x`, `kernel`, `bias`, `u` and `h0`, given the
    gradient w.r.t. every state (`grad_states`) or, when only the last state
    is used, w.r.t. the last state (`grad_last`, `grad_states=None`)."""
    state_chunks = _chunked(states, chunk)
    # The state just before each chunk: h0, then each chunk's last state.
    previous = ops.concatenate([ops.expand_dims(h0, 0), state_chunks[:-1, -1]], axis=0)
    inputs = (state_chunks, previous, _chunked(x, chunk))
    if grad_states is not None:
        inputs += (_chunked(grad_states, chunk),)
    if mask is not None:
        inputs += (_chunked(mask, chunk),)

    def step(carry, inputs):
        c, _, (dx, dkernel, dbias, du) = _backward_chunk(
            carry[1], inputs, kernel, u, slope_of, chunk, grad_states is not None, mask is not None
        )
        out = (dx, c, du, dkernel, dbias)
        return out, out

    zeros = ops.zeros_like
    init = (zeros(inputs[2][0]), zeros(h0) if grad_last is None else grad_last, zeros(u), zeros(kernel), zeros(u))
    final, (dx, _, du, dkernel, dbias) = _scan(step, init, inputs, reverse=True)
    return (
        ops.reshape(dx, ops.shape(x)),
        ops.sum(dkernel, axis=0),
        ops.sum(dbias, axis=0),
        ops.sum(du, axis=0),
        final[1],
    )


def _chunked_recurrence(
    x,
    kernel,
    bias,
    u,
    h0,
    mask,
    activation,
    last_only,
    chunk=None,
    max_chunk=_MAX_CHUNK,
    backward_max_chunk=None,
    forward=_scan_forward,
):
    """The TensorFlow engine: chunks of `chunk` steps per loop iteration (one
    input projection per chunk) and a hand-written backward pass. `chunk`
    must divide `timesteps`; it defaults to the largest divisor up to
    `max_chunk`, and the sequence is padded with masked steps when there is
    no divisor of at least 8. The backward loop takes the largest divisor up
    to `backward_max_chunk` when that is longer (and the length is known).
    `forward` runs the forward loop (`_written_forward` under XLA)."""
    steps = x.shape[0]
    if chunk is None:
        chunk = _chunk_size(steps, max_chunk)
    if chunk < _MIN_CHUNK and (steps is None or steps > max_chunk):
        # No good divisor (or an unknown length): pad with masked steps, which
        # keep the state, rather than loop one step at a time.
        return _padded_recurrence(
            x, kernel, bias, u, h0, mask, activation, last_only, backward_max_chunk, forward
        )
    backward_chunk = chunk
    if backward_max_chunk is not None and isinstance(steps, int):
        backward_chunk = max(chunk, _chunk_size(steps, backward_max_chunk))
    slope_of = _slope_for(activation)

    @ops.custom_gradient
    def recurrence(x, kernel, bias, u, h0):
        states = forward(x, kernel, bias, u, h0, mask, activation, chunk)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            grad_states, grad_last = (None, upstream) if last_only else (upstream, None)
            return _scan_backward(
                grad_states, grad_last, states, x, kernel, u, h0, mask, slope_of, backward_chunk
            )

        return (states[-1] if last_only else states), grad

    return recurrence(x, kernel, bias, u, h0)


def _padded_recurrence(
    x, kernel, bias, u, h0, mask, activation, last_only, backward_max_chunk=None, forward=_scan_forward
):
    steps = ops.shape(x)[0]
    padding = (-steps) % _PAD_CHUNK
    pad_shape = (padding,) + tuple(ops.shape(x)[1:-1])
    x = ops.concatenate([x, ops.zeros(pad_shape + (ops.shape(x)[-1],), x.dtype)], axis=0)
    if mask is None:
        mask = ops.ones(tuple(ops.shape(h0)[:1]) + (1,), "bool")
        mask = ops.broadcast_to(mask, (steps,) + tuple(ops.shape(mask)))
    mask = ops.concatenate([mask, ops.zeros(pad_shape + (1,), "bool")], axis=0)
    states = _chunked_recurrence(
        x, kernel, bias, u, h0, mask, activation, last_only, chunk=_PAD_CHUNK,
        backward_max_chunk=backward_max_chunk, forward=forward,
    )
    return states if last_only else states[:steps]


# ----------------------------------------------------------------------------
# The other engines and the choice between them.


def _scanned_recurrence(x, kernel, bias, u, h0, mask, activation, last_only):
    """The JAX engine (and the fallback for other activations): `ops.scan`
    over the steps, differentiated automatically, `_JAX_UNROLL` steps
    unrolled per loop iteration on JAX (`_PARALLEL` elsewhere). XLA fuses
    each step; projecting the whole sequence before the loop measured 2-4x
    slower on the CPU (the projected sequence and its gradient then travel
    through memory)."""

    def step(h, inputs):
        keep = None if mask is None else inputs[1]
        h = _next_state(h, ops.matmul(inputs[0], kernel) + bias, keep, u, activation)
        return h, h

    inputs = (x,) if mask is None else (x, mask)
    unroll = _JAX_UNROLL if keras.backend.backend() == "jax" else _PARALLEL
    last, states = _scan(step, h0, inputs, unroll=unroll)
    return last if last_only else states


# XLA-compiled TensorFlow engines, one per (activation, last_only, masked).
_COMPILED = {}


def _compiled_recurrence(x, kernel, bias, u, h0, mask, activation, last_only):
    """The TensorFlow training engine: `_chunked_recurrence` (its forward and
    hand-written backward loops) compiled by XLA, which fuses each step's
    operations; TensorFlow's executor otherwise spends more time dispatching
    the small per-step operations than computing them. Inference keeps the
    uncompiled engine, so exported SavedModels need no XLA to serve."""
    import tensorflow as tf

    key = (activation, last_only, mask is None)
    if key not in _COMPILED:

        def run(x, kernel, bias, u, h0, *mask):
            return _chunked_recurrence(
                x, kernel, bias, u, h0, mask[0] if mask else None, activation, last_only,
                max_chunk=_COMPILED_MAX_CHUNK, backward_max_chunk=_COMPILED_MAX_BACKWARD_CHUNK,
                forward=_written_forward,
            )

        _COMPILED[key] = tf.function(run, jit_compile=True, autograph=False)
    args = (x, kernel, bias, u, h0) + (() if mask is None else (mask,))
    return _COMPILED[key](*args)


# Activations by name, as PyTorch functions: the PyTorch engine calls them once
# per step, where going through `keras.ops` would cost more than the step.
_TORCH_ACTIVATIONS = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "linear": None,
}


def _torch_derivative(name, h, out):
    """Writes `act'(pre)`, as a function of the output `h = act(pre)`, into
    `out`; returns `out`."""
    import torch

    if name == "relu":
        return torch.sign(h, out=out)  # 0 or 1: h >= 0
    if name == "tanh":
        return torch.mul(h, h, out=out).neg_().add_(1.0)
    if name == "sigmoid":
        return torch.sub(h, torch.mul(h, h, out=out), out=out)
    return out.fill_(1.0)


# Steps per block of the PyTorch engine: one matrix product projects a block's
# inputs, and the backward pass works on a block at a time, in buffers small
# enough to stay in the cache (a fresh `(T, batch, units)` buffer costs more
# in page faults than the loop that fills it).
_TORCH_BLOCK = 32


def _torch_blocks(steps):
    return [(start, min(start + _TORCH_BLOCK, steps)) for start in range(0, steps, _TORCH_BLOCK)]


def _torch_states(x, kernel, bias, u, h0, mask, name):
    """Forward loop of the PyTorch engine: each block of steps is projected
    straight into the `(T, batch, units)` states buffer, then updated in place,
    two or three PyTorch operations per step."""
    import torch

    steps, units = x.shape[0], kernel.shape[1]
    states = torch.empty((steps,) + tuple(h0.shape), dtype=h0.dtype, device=h0.device)
    rows = states.unbind(0)  # views of the steps, made in one call
    h = h0
    for start, stop in _torch_blocks(steps):
        block = states[start:stop]
        torch.addmm(bias, x[start:stop].reshape(-1, x.shape[-1]), kernel, out=block.view(-1, units))
        for t in range(start, stop):
            out = rows[t]
            new = out.addcmul_(u, h) if mask is None else torch.addcmul(out, u, h)
            if name is not None:
                getattr(new, name + "_")()
            if mask is not None:
                torch.where(mask[t], new, h, out=out)
            h = out
    return states


def _torch_backward(grad_states, grad_last, states, x, kernel, u, h0, mask, name, need_x):
    """Backward loop of the PyTorch engine, a block of steps at a time, from
    the last: the gradients w.r.t. `x` (when `need_x`), `kernel`, `bias`, `u`
    and `h0`.

    With `a_t = act'(pre_t)`, the gradient reaching state `t` is
    `g_t = grad_t + g_{t+1} * a_{t+1} * u` (`g_{t+1}` alone through a masked
    step) and `dpre_t = g_t * a_t` (zero at a masked step). The factors
    `a_t * u` are computed for a whole block at once, so the loop runs one
    PyTorch operation per step; the weight gradients are a few operations per
    block."""
    import torch

    dkernel, dbias, du = torch.zeros_like(kernel), torch.zeros_like(u), torch.zeros_like(u)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else None
    carry = torch.zeros_like(h0) if grad_last is None else grad_last  # d loss / d h_{stop-1} from later steps
    # Three block-sized buffers, reused by every block (they stay in the cache).
    g_buffer, decay_buffer, scratch = (
        torch.empty((_TORCH_BLOCK,) + tuple(h0.shape), dtype=states.dtype, device=states.device)
        for _ in range(3)
    )
    for start, stop in reversed(_torch_blocks(states.shape[0])):
        n = stop - start
        h_block, g, decay = states[start:stop], g_buffer[:n], decay_buffer[:n]
        slope = _torch_derivative(name, h_block, scratch[:n])
        torch.mul(slope, u, out=decay)
        if mask is not None:
            skip = torch.logical_not(mask[start:stop])
            decay.masked_fill_(skip, 1.0)
            slope.masked_fill_(skip, 0.0)
        g_rows, decay_rows = g.unbind(0), decay.unbind(0)
        if grad_states is None:
            g_rows[n - 1].copy_(carry)
        else:
            torch.add(grad_states[stop - 1], carry, out=g_rows[n - 1])
            grad_rows = grad_states[start:stop].unbind(0)
        for j in range(n - 1, 0, -1):
            if grad_states is None:
                torch.mul(g_rows[j], decay_rows[j], out=g_rows[j - 1])
            else:
                torch.addcmul(grad_rows[j - 1], g_rows[j], decay_rows[j], out=g_rows[j - 1])
        carry = g_rows[0] * decay_rows[0]
        dpre = g.mul_(slope).view(-1, g.shape[-1])
        # sum over t and batch of dpre_t * h_{t-1}, in the slope's buffer.
        product = slope
        if start > 0:
            torch.mul(g, states[start - 1 : stop - 1], out=product)
        else:
            torch.mul(g[0], h0, out=product[0])
            torch.mul(g[1:], h_block[:-1], out=product[1:])
        du += torch.sum(product.view(-1, g.shape[-1]), dim=0)
        dbias += torch.sum(dpre, dim=0)
        dkernel.addmm_(x[start:stop].reshape(-1, x.shape[-1]).t(), dpre)
        if need_x:
            torch.mm(dpre, kernel.t(), out=dx[start:stop].view(-1, x.shape[-1]))
    return dx, dkernel, dbias, du, carry


def _torch_recurrence(x, kernel, bias, u, h0, mask, activation, last_only):
    """The PyTorch engine: a `torch.autograd.Function` whose forward and
    backward loops run plain PyTorch operations in place, a few per step,
    with the input projection and the weight gradients one matrix product
    per block of steps."""
    import torch

    name = _TORCH_ACTIVATIONS[activation.__name__]

    class Recurrence(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, kernel, bias, u, h0):
            states = _torch_states(x, kernel, bias, u, h0, mask, name)
            ctx.save_for_backward(states, x, kernel, u, h0)
            return states[-1].clone() if last_only else states

        @staticmethod
        def backward(ctx, upstream):
            states, x, kernel, u, h0 = ctx.saved_tensors
            grad_states, grad_last = (None, upstream) if last_only else (upstream, None)
            return _torch_backward(
                grad_states, grad_last, states, x, kernel, u, h0, mask, name, ctx.needs_input_grad[0]
            )

    return Recurrence.apply(x, kernel, bias, u, h0)


def masked_output_repeats_state():
    """Keras's output at masked steps before the first unmasked one (without
    `zero_output_for_mask`): its JAX `rnn` repeats the previous state, so the
    initial state; its TensorFlow and PyTorch `rnn` output zeros."""
    return keras.backend.backend() == "jax"


def ind_recurrence(
    x,
    kernel,
    bias,
    u,
    h0,
    mask=None,
    activation=keras.activations.relu,
    last_only=False,
    training=False,
):
    """Runs `h_t = activation(x_t @ kernel + bias + u * h_{t-1})` over
    time-major inputs, with the engine that is fastest on the backend:

    - TensorFlow: chunks of steps per loop iteration and a hand-written
      backward pass (`_chunked_recurrence`), compiled by XLA in training
      (`_compiled_recurrence`);
    - PyTorch: a `torch.autograd.Function` with in-place loops
      (`_torch_recurrence`);
    - JAX, and any activation without a hand-written derivative: `ops.scan`
      differentiated automatically (`_scanned_recurrence`).

    Args:
        x: `(timesteps, batch, features)`.
        kernel: `(features, units)`.
        bias: `(units,)`.
        u: `(units,)`, the recurrent weights.
        h0: `(batch, units)`, the initial state.
        mask: optional boolean `(timesteps, batch, 1)`; masked steps keep the
            previous state.
        activation: the activation. Relu, tanh, sigmoid and linear have
            hand-written derivatives (functions of the stored states).
        last_only: return only the last state; the backward pass then skips
            the (all-zero) gradients of the other states.
        training: whether the layer trains (TensorFlow then compiles the
            loops with XLA).

    Returns:
        The states, `(timesteps, batch, units)`, or the last one.
    """
    backend = keras.backend.backend()
    if _slope_for(activation) is None or backend not in ("tensorflow", "torch"):
        return _scanned_recurrence(x, kernel, bias, u, h0, mask, activation, last_only)
    if backend == "tensorflow":
        engine = _compiled_recurrence if training is True else _chunked_recurrence
        return engine(x, kernel, bias, u, h0, mask, activation, last_only)
    return _torch_recurrence(x, kernel, bias, u, h0, mask, activation, last_only)
