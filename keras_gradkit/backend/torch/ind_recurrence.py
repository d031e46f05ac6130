"""The IndRNN engine on PyTorch (private): a `torch.autograd.Function` whose
forward and backward loops run plain PyTorch operations in place, a few per
step, with the input projection and the weight gradients one matrix product
per block of steps. Going through `keras.ops` would cost more per step than
the step's arithmetic; `benchmarks/README.md` has the measurements.
"""

import torch

from keras_gradkit.backend.common import ind_loops

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
    """`(start, stop)` of each block of `_TORCH_BLOCK` steps (the last may be shorter)."""
    return [(start, min(start + _TORCH_BLOCK, steps)) for start in range(0, steps, _TORCH_BLOCK)]


def _torch_states(recurrence, name):
    """Forward loop of the PyTorch engine: each block of steps is projected
    straight into the `(T, batch, units)` states buffer, then updated in place,
    two or three PyTorch operations per step."""
    x, kernel, bias, u = recurrence.x, recurrence.kernel, recurrence.bias, recurrence.u
    h0, mask = recurrence.h0, recurrence.mask
    steps, units = x.shape[0], h0.shape[-1]
    states = torch.empty((steps,) + tuple(h0.shape), dtype=h0.dtype, device=h0.device)
    rows = states.unbind(0)  # views of the steps, made in one call
    h = h0
    for start, stop in _torch_blocks(steps):
        block = states[start:stop]
        if kernel is None:
            torch.add(x[start:stop], bias, out=block)
        else:
            torch.addmm(
                bias, x[start:stop].reshape(-1, x.shape[-1]), kernel, out=block.view(-1, units)
            )
        for t in range(start, stop):
            out = rows[t]
            new = out.addcmul_(u, h) if mask is None else torch.addcmul(out, u, h)
            if name is not None:
                getattr(new, name + "_")()
            if mask is not None:
                torch.where(mask[t], new, h, out=out)
            h = out
    return states


def _torch_backward(upstream, states, recurrence, name, need_x):
    """Backward loop of the PyTorch engine, a block of steps at a time, from
    the last: the gradients w.r.t. `x` (when `need_x`), `kernel` (None
    without one), `bias`, `u` and `h0`, given `upstream`, the gradient
    w.r.t. every state or, with `last_only`, w.r.t. the last state.

    With `a_t = act'(pre_t)`, the gradient reaching state `t` is
    `g_t = grad_t + g_{t+1} * a_{t+1} * u` (`g_{t+1}` alone through a masked
    step) and `dpre_t = g_t * a_t` (zero at a masked step). The factors
    `a_t * u` are computed for a whole block at once, so the loop runs one
    PyTorch operation per step; the weight gradients are a few operations per
    block. With `grad_clipping`, `dpre_t = clip(g_t * a_t)` and the step before
    receives `dpre_t * u` (a loop of a few operations per step)."""
    x, kernel, u = recurrence.x, recurrence.kernel, recurrence.u
    h0, mask, clip = recurrence.h0, recurrence.mask, recurrence.grad_clipping
    grad_states, grad_last = (None, upstream) if recurrence.last_only else (upstream, None)
    dkernel = None if kernel is None else torch.zeros_like(kernel)
    dbias, du = torch.zeros_like(u), torch.zeros_like(u)
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device) if need_x else None
    carry = (
        torch.zeros_like(h0) if grad_last is None else grad_last
    )  # d loss / d h_{stop-1} from later steps
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
        grad_rows = None if grad_states is None else grad_states[start:stop].unbind(0)
        if clip is None:
            carry = _block_chain(g_rows, decay_rows, grad_rows, carry, n)
            dpre = g.mul_(slope).view(-1, g.shape[-1])
        else:
            skip_rows = None if mask is None else skip.unbind(0)
            carry = _clipped_block_chain(
                g_rows, slope.unbind(0), skip_rows, grad_rows, carry, u, n, clip
            )
            dpre = g.view(-1, g.shape[-1])
        # sum over t and batch of dpre_t * h_{t-1}, in the slope's buffer.
        product = slope
        if start > 0:
            torch.mul(g, states[start - 1 : stop - 1], out=product)
        else:
            torch.mul(g[0], h0, out=product[0])
            torch.mul(g[1:], h_block[:-1], out=product[1:])
        du += torch.sum(product.view(-1, g.shape[-1]), dim=0)
        dbias += torch.sum(dpre, dim=0)
        if kernel is not None:
            dkernel.addmm_(x[start:stop].reshape(-1, x.shape[-1]).t(), dpre)
        if need_x and kernel is None:
            dx[start:stop].view(-1, x.shape[-1]).copy_(dpre)
        elif need_x:
            torch.mm(dpre, kernel.t(), out=dx[start:stop].view(-1, x.shape[-1]))
    return dx, dkernel, dbias, du, carry


def _block_chain(g_rows, decay_rows, grad_rows, carry, n):
    """Fills `g_rows` with the gradients reaching the block's states (the
    per-step gradients `grad_rows` plus what flows back from later steps);
    returns what flows into the state before the block."""
    if grad_rows is None:
        g_rows[n - 1].copy_(carry)
    else:
        torch.add(grad_rows[n - 1], carry, out=g_rows[n - 1])
    for j in range(n - 1, 0, -1):
        if grad_rows is None:
            torch.mul(g_rows[j], decay_rows[j], out=g_rows[j - 1])
        else:
            torch.addcmul(grad_rows[j - 1], g_rows[j], decay_rows[j], out=g_rows[j - 1])
    return g_rows[0] * decay_rows[0]


def _clipped_block_chain(g_rows, slope_rows, skip_rows, grad_rows, carry, u, n, clip):
    """`_block_chain` with each step's pre-activation gradient clipped to
    `[-clip, clip]`: fills `g_rows` with the clipped pre-activation gradients
    (zero at masked steps, which pass the gradient on unchanged)."""
    for j in range(n - 1, -1, -1):
        g = carry if grad_rows is None else grad_rows[j] + carry
        d = torch.mul(g, slope_rows[j], out=g_rows[j]).clamp_(-clip, clip)
        carry = d * u if skip_rows is None else torch.where(skip_rows[j], g, d * u)
    return carry


def _torch_recurrence(recurrence):
    """The PyTorch engine: a `torch.autograd.Function` whose forward and
    backward loops run plain PyTorch operations in place, a few per step,
    with the input projection and the weight gradients one matrix product
    per block of steps."""
    name = _TORCH_ACTIVATIONS[recurrence.activation.__name__]

    class Recurrence(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, kernel, bias, u, h0):
            tensors = recurrence._replace(x=x, kernel=kernel, bias=bias, u=u, h0=h0)
            states = _torch_states(tensors, name)
            ctx.save_for_backward(states, x, kernel, u, h0)
            return states[-1].clone() if recurrence.last_only else states

        @staticmethod
        def backward(ctx, upstream):
            states, x, kernel, u, h0 = ctx.saved_tensors
            tensors = recurrence._replace(x=x, kernel=kernel, u=u, h0=h0)
            return _torch_backward(upstream, states, tensors, name, ctx.needs_input_grad[0])

    return Recurrence.apply(
        recurrence.x, recurrence.kernel, recurrence.bias, recurrence.u, recurrence.h0
    )


def ind_recurrence(recurrence, training):
    """The states of `recurrence`, an `ind_loops.IndRecurrence`: the autograd
    engine, or `ops.scan` for activations without a hand-written derivative;
    `training` changes nothing."""
    del training
    if ind_loops.slope_for(recurrence.activation) is None:
        return ind_loops.scanned_recurrence(recurrence)
    return _torch_recurrence(recurrence)


def masked_output_repeats_state():
    """False: Keras's PyTorch `rnn` outputs zeros at masked steps before the
    first unmasked one (without `zero_output_for_mask`)."""
    return False
