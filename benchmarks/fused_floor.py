"""The speed floor of `benchmarks/rnn_speed.py`: one IndRNN training step's
recurrence as a single fused loop.

`h_t = relu(x_t @ kernel + bias + u * h_{t-1})` forward over all steps (input
projection included), then the backward pass from a loss on the last state
(what `Dense` on `IndRNN(return_sequences=False)` sends back), giving the
kernel, bias and recurrent gradients. No gradient w.r.t. the inputs: `fit`
does not need one. Compiled by numba on one thread when numba is installed,
else a NumPy loop over time.
"""

import numpy as np

# The smallest normal float32. TensorFlow and XLA flush subnormal numbers to
# zero on the CPU; the vanishing gradient `d_pre * u` reaches them within a
# few hundred steps, so the floor flushes them too.
_FLT_MIN = np.float32(1.1754944e-38)


def _step_loops(x, kernel, u, bias):
    steps, batch, features = x.shape
    units = kernel.shape[1]
    states = np.empty((steps + 1, batch, units), np.float32)
    states[0] = 0.0
    for t in range(steps):
        for b in range(batch):
            for j in range(units):
                pre = bias[j] + u[j] * states[t, b, j]
                for k in range(features):
                    pre += x[t, b, k] * kernel[k, j]
                states[t + 1, b, j] = pre if pre > 0.0 else 0.0
    d_kernel = np.zeros_like(kernel)
    d_u = np.zeros_like(u)
    d_bias = np.zeros_like(bias)
    carry = np.ones((batch, units), np.float32)  # d loss / d h_T
    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            for j in range(units):
                d_pre = carry[b, j] if states[t + 1, b, j] > 0.0 else 0.0
                d_u[j] += d_pre * states[t, b, j]
                d_bias[j] += d_pre
                for k in range(features):
                    d_kernel[k, j] += x[t, b, k] * d_pre
                carry[b, j] = d_pre * u[j]
                if abs(carry[b, j]) < _FLT_MIN:
                    carry[b, j] = 0.0  # flush to zero: subnormals cost 10-100x
    return d_kernel, d_u, d_bias


def _numpy_loop(x, kernel, u, bias):
    projected = x @ kernel + bias
    states = np.zeros((x.shape[0] + 1,) + projected.shape[1:], np.float32)
    for t in range(x.shape[0]):
        states[t + 1] = np.maximum(projected[t] + u * states[t], 0.0)
    d_pre = np.empty_like(projected)
    carry = np.ones_like(states[0])
    for t in range(x.shape[0] - 1, -1, -1):
        d_pre[t] = carry * (states[t + 1] > 0)
        carry = d_pre[t] * u
        carry[np.abs(carry) < _FLT_MIN] = 0.0
    flat = d_pre.reshape(-1, d_pre.shape[-1])
    d_kernel = x.reshape(-1, x.shape[-1]).T @ flat
    return d_kernel, np.einsum("tbj,tbj->j", d_pre, states[:-1]), flat.sum(axis=0)


def make_floor():
    """Returns `(fn, description)`; `fn(x, kernel, u, bias)` with time-major `x`."""
    try:
        import numba
    except ImportError:
        return _numpy_loop, "NumPy loop, numba not installed"
    numba.set_num_threads(1)
    return numba.njit(cache=False, fastmath=False)(_step_loops), f"numba {numba.__version__}, 1 thread"
