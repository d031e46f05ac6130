"""The speed floor of `benchmarks/rnn_speed.py`: one IndRNN training step's
recurrence as a single fused loop.

`h_t = relu(x_t @ kernel + bias + u * h_{t-1})` forward over all steps (input
projection included), then the backward pass from a loss on the last state
(what `Dense` on `IndRNN(return_sequences=False)` sends back), giving the
kernel, bias and recurrent gradients. No gradient w.r.t. the inputs: `fit`
does not need one. Compiled by numba on one thread when numba is installed,
else a NumPy loop over time.
"""

import argparse
import json
import statistics
import time

import numpy as np

# The smallest normal float32. TensorFlow and XLA flush subnormal numbers to
# zero on the CPU; the vanishing gradient `d_pre * u` reaches them within a
# few hundred steps, so the floor flushes them too.
_FLT_MIN = np.float32(1.1754944e-38)


def _step_loops(x, kernel, u, bias):
    """Loops over time and batch with the units innermost and contiguous, so
    the compiler vectorizes them (an inner loop over features measured 3-4x
    slower)."""
    steps, batch, features = x.shape
    units = kernel.shape[1]
    states = np.empty((steps + 1, batch, units), np.float32)
    states[0] = 0.0
    for t in range(steps):
        for b in range(batch):
            h, h_prev = states[t + 1, b], states[t, b]
            for j in range(units):
                h[j] = bias[j] + u[j] * h_prev[j]
            for k in range(features):
                x_k = x[t, b, k]
                for j in range(units):
                    h[j] += x_k * kernel[k, j]
            for j in range(units):
                h[j] = max(h[j], np.float32(0.0))
    d_kernel = np.zeros_like(kernel)
    d_u = np.zeros_like(u)
    d_bias = np.zeros_like(bias)
    carry = np.ones((batch, units), np.float32)  # d loss / d h_T
    for t in range(steps - 1, -1, -1):
        for b in range(batch):
            c, h, h_prev = carry[b], states[t + 1, b], states[t, b]
            for j in range(units):
                d_pre = c[j] if h[j] > 0.0 else np.float32(0.0)
                d_u[j] += d_pre * h_prev[j]
                d_bias[j] += d_pre
                c_next = d_pre * u[j]
                # Flush to zero: subnormal numbers cost 10-100x.
                c[j] = c_next if abs(c_next) >= _FLT_MIN else np.float32(0.0)
                h[j] = d_pre  # the state is no longer needed: keep d_pre there
            for k in range(features):
                x_k = x[t, b, k]
                for j in range(units):
                    d_kernel[k, j] += x_k * h[j]
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
    return numba.njit(cache=False, fastmath=False)(
        _step_loops
    ), f"numba {numba.__version__}, 1 thread"


def time_floor(timesteps, batch, units, features, repeats=9):
    """Median milliseconds of the floor over `repeats` calls after a first
    (compiling) one, on the benchmark's random data; and what ran."""
    floor, kind = make_floor()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(timesteps, batch, features)).astype("float32")
    kernel = rng.normal(0, 0.5, size=(features, units)).astype("float32")
    u = rng.uniform(0, 1, size=units).astype("float32")
    bias = np.zeros(units, "float32")
    floor(x, kernel, u, bias)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        floor(x, kernel, u, bias)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, kind


def main():
    """Prints `{timesteps: [ms, kind]}` as JSON. `benchmarks/rnn_speed.py`
    runs this in a process of its own, without a deep learning framework
    imported: importing TensorFlow alone made the same loop about 30% slower
    at T = 1000."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timesteps", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--features", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    result = {
        t: time_floor(t, args.batch, args.units, args.features, args.repeats)
        for t in args.timesteps
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
