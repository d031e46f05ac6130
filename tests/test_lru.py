import inspect
import math
import re

import keras
import numpy as np
import pytest
from gradient_testing import value_and_gradients
from layer_testing import (
    assert_config_round_trip,
    assert_export_serves,
    assert_keras_file_round_trip,
    run_layer_test,
)

from keras_gradkit.layers.lru import LRU

BACKEND = keras.backend.backend()
MODES = ("parallel", "sequential")
# Most tests share these shapes: JAX compiles each operation of an eager
# call once per shape, and the parallel scan has many.
BATCH, STEPS, FEATURES, STATE_DIM = 4, 7, 3, 4


def numpy_lru(x, weights, h0=None, mask=None, go_backwards=False, zero_output=False):
    """The paper's equations with NumPy complex numbers, step by step:
    x_t = λ x_{t-1} + γ (B u_t), y_t = Re(C x_t) + D u_t, with
    λ = exp(-exp(ν) + i exp(θ)) and γ = exp(γ_log). A masked step keeps the
    state and repeats the last unmasked output (zeros before the first one),
    or outputs zeros with `zero_output`. Returns the outputs in the order
    processed and the last state as complex numbers."""
    nu_log, theta_log, gamma_log, input_kernel, output_kernel, skip = (
        np.asarray(w, "float64") for w in weights
    )
    n = nu_log.shape[0]
    lam = np.exp(-np.exp(nu_log) + 1j * np.exp(theta_log))
    b = (input_kernel[:, :n] + 1j * input_kernel[:, n:]).T * np.exp(gamma_log)[:, None]
    c = (output_kernel[:n] + 1j * output_kernel[n:]).T
    batch, steps, _ = x.shape
    state = np.zeros((batch, n), complex) if h0 is None else h0[:, :n] + 1j * h0[:, n:]
    previous = np.zeros((batch, c.shape[0]))
    outputs = []
    for t in reversed(range(steps)) if go_backwards else range(steps):
        u = x[:, t].astype("float64")
        keep = np.ones((batch, 1), bool) if mask is None else mask[:, t][:, None]
        state = np.where(keep, lam * state + u @ b.T, state)
        y = (state @ c.T).real + skip * u
        previous = np.where(keep, y, 0.0 if zero_output else previous)
        outputs.append(previous)
    return np.stack(outputs, axis=1), state


def as_pairs(state):
    return np.concatenate([state.real, state.imag], axis=-1)


def random_weights(rng, features, state_dim):
    """Weights unlike any initializer's: moduli in [0.5, 0.95], phases in
    (0, π), every entry different."""
    modulus = rng.uniform(0.5, 0.95, state_dim)
    phase = rng.uniform(0.1, 3.0, state_dim)
    return [
        np.log(-np.log(modulus)).astype("float32"),
        np.log(phase).astype("float32"),
        rng.normal(-0.3, 0.2, state_dim).astype("float32"),
        rng.normal(0.0, 0.6, (features, 2 * state_dim)).astype("float32"),
        rng.normal(0.0, 0.6, (2 * state_dim, features)).astype("float32"),
        rng.normal(0.0, 1.0, features).astype("float32"),
    ]


def ragged_mask(batch=BATCH, steps=STEPS):
    mask = np.ones((batch, steps), bool)
    mask[0, steps - 3 :] = False  # post-padding
    mask[1, :2] = False  # pre-padding
    if batch > 2:
        mask[2, steps // 2] = False  # a hole
    if batch > 3:
        mask[3] = False  # nothing to read
    return mask


def data(rng, batch=BATCH, steps=STEPS, features=FEATURES):
    return rng.normal(size=(batch, steps, features)).astype("float32")


def built_layer(x, weights, **kwargs):
    layer = LRU(weights[0].shape[0], **kwargs)
    layer(x)
    layer.set_weights(weights)
    return layer


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def weighted_loss(outputs):
    """A loss that weighs every output, feature and step differently."""
    total = 0.0
    for k, o in enumerate(as_list(outputs)):
        scale = keras.ops.convert_to_tensor(
            np.linspace(0.5, 1.5, o.shape[-1]).astype("float32") * (k + 1)
        )
        total = total + keras.ops.sum(o * scale) + keras.ops.sum(keras.ops.square(o))
    return total


def outputs_and_grads(layer, x, h0=None, mask=None):
    """The layer's outputs and the gradients of `weighted_loss` w.r.t. its
    weights, `x` and `h0` (in that order)."""
    mask = None if mask is None else keras.ops.convert_to_tensor(mask)

    def call(x, *h):
        return layer(x, initial_state=list(h) or None, mask=mask)

    inputs = [x] + ([h0] if h0 is not None else [])
    _, input_grads, weight_grads = value_and_gradients(
        lambda *args: weighted_loss(call(*args)), inputs, layer.trainable_weights
    )
    outs = call(*[keras.ops.convert_to_tensor(t) for t in inputs])
    return [to_numpy(o) for o in as_list(outs)], weight_grads + input_grads


def assert_close_relative(actual, expected, tol):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, atol=tol * scale, rtol=tol)


class TestAgainstNumPy:
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize(
        "return_sequences,go_backwards,masked,zero_output",
        [
            (True, False, False, False),
            (True, True, True, False),
            (True, False, True, True),
            (False, False, True, False),
            (False, True, True, True),
        ],
    )
    def test_outputs_and_state(self, mode, return_sequences, go_backwards, masked, zero_output):
        rng = np.random.default_rng(0)
        x = data(rng)
        weights = random_weights(rng, FEATURES, STATE_DIM)
        h0 = rng.normal(size=(BATCH, 2 * STATE_DIM)).astype("float32")
        mask = ragged_mask() if masked else None
        layer = built_layer(
            x,
            weights,
            return_sequences=return_sequences,
            return_state=True,
            go_backwards=go_backwards,
            zero_output_for_mask=zero_output,
            mode=mode,
        )
        mask_tensor = None if mask is None else keras.ops.convert_to_tensor(mask)
        output, state = layer(x, initial_state=[h0], mask=mask_tensor)
        expected, expected_state = numpy_lru(x, weights, h0, mask, go_backwards, zero_output)
        expected = expected if return_sequences else expected[:, -1]
        assert_close_relative(to_numpy(output), expected, 1e-5)
        assert_close_relative(to_numpy(state), as_pairs(expected_state), 1e-5)

    def test_weights_are_named_and_shaped(self):
        layer = LRU(STATE_DIM)
        layer(data(np.random.default_rng(0)))
        names = ["nu_log", "theta_log", "gamma_log", "input_kernel", "output_kernel", "skip_kernel"]
        assert [w.name for w in layer.weights] == names
        shapes = [(4,), (4,), (4,), (3, 8), (8, 3), (3,)]
        assert [tuple(w.shape) for w in layer.weights] == shapes

    @pytest.mark.parametrize("mode", MODES)
    def test_gradients_match_numpy_finite_differences(self, mode):
        # The gradients of every weight, of the input and of the initial
        # state against central differences of the NumPy equations in float64.
        rng = np.random.default_rng(1)
        x = data(rng)
        h0 = rng.normal(size=(BATCH, 2 * STATE_DIM)).astype("float32")
        weights = random_weights(rng, FEATURES, STATE_DIM)
        mask = ragged_mask()
        layer = built_layer(x, weights, return_sequences=True, go_backwards=True, mode=mode)
        _, grads = outputs_and_grads(layer, x, h0, mask)
        scale = np.linspace(0.5, 1.5, FEATURES)

        def numpy_loss(*arrays):
            out, _ = numpy_lru(arrays[-2], arrays[:-2], arrays[-1], mask, go_backwards=True)
            return np.sum(out * scale) + np.sum(out**2)

        arrays = [a.astype("float64") for a in weights + [x, h0]]
        for index, (array, grad) in enumerate(zip(arrays, grads)):
            numeric = np.zeros(array.shape)
            for position in np.ndindex(array.shape):
                shifted = [a.copy() for a in arrays]
                shifted[index][position] += 1e-6
                plus = numpy_loss(*shifted)
                shifted[index][position] -= 2e-6
                numeric[position] = (plus - numpy_loss(*shifted)) / 2e-6
            assert_close_relative(grad, numeric, 1e-4)

    def test_carried_state_continues_the_sequence(self):
        # The state `return_state` gives, passed back as the initial state,
        # continues the sequence: two parts equal the whole.
        rng = np.random.default_rng(2)
        x = data(rng)
        weights = random_weights(rng, FEATURES, STATE_DIM)
        layer = built_layer(x, weights, return_sequences=True, return_state=True, mode="sequential")
        whole, whole_state = layer(x)
        first, state = layer(x[:, :3])
        second, last_state = layer(x[:, 3:], initial_state=[state])
        parts = np.concatenate([to_numpy(first), to_numpy(second)], axis=1)
        assert_close_relative(parts, to_numpy(whole), 1e-5)
        assert_close_relative(to_numpy(last_state), to_numpy(whole_state), 1e-5)


class TestModes:
    @pytest.mark.parametrize(
        "return_sequences,go_backwards,zero_output", [(True, False, False), (False, True, True)]
    )
    def test_parallel_equals_sequential(self, return_sequences, go_backwards, zero_output):
        # Outputs, state and gradients, with an initial state and a mask
        # (pre- and post-padding, a hole, a fully masked sequence) on an odd
        # length (the scan's uneven halves).
        rng = np.random.default_rng(3)
        x = data(rng)
        h0 = rng.normal(size=(BATCH, 2 * STATE_DIM)).astype("float32")
        weights = random_weights(rng, FEATURES, STATE_DIM)
        kwargs = dict(
            return_sequences=return_sequences,
            return_state=True,
            go_backwards=go_backwards,
            zero_output_for_mask=zero_output,
        )
        results = [
            outputs_and_grads(built_layer(x, weights, mode=mode, **kwargs), x, h0, ragged_mask())
            for mode in MODES
        ]
        (out_p, grad_p), (out_s, grad_s) = results
        for a, b in zip(out_p + grad_p, out_s + grad_s):
            assert_close_relative(a, b, 1e-5)

    def test_auto_is_a_measured_mode(self):
        layer = LRU(3)
        assert layer.mode == "auto"
        assert layer._resolved_mode in MODES


def keras_masked_outputs(outputs, mask):
    """Keras's RNN convention for `return_sequences` on a masked batch,
    rebuilt from the outputs at unmasked steps: a masked step repeats the
    last unmasked output, zeros before the first one."""
    expected = np.zeros_like(outputs)
    previous = np.zeros_like(outputs[:, 0])
    for t in range(outputs.shape[1]):
        previous = np.where(mask[:, t][:, None], outputs[:, t], previous)
        expected[:, t] = previous
    return expected


class TestMasking:
    @pytest.mark.parametrize("mode", MODES)
    @pytest.mark.parametrize("padding", ["post", "pre"])
    def test_masked_steps_leave_the_state_unchanged(self, mode, padding):
        rng = np.random.default_rng(4)
        x = data(rng, steps=4)
        weights = random_weights(rng, FEATURES, STATE_DIM)
        pad = data(rng, steps=3)  # not zeros: the mask must act
        padded = np.concatenate([x, pad] if padding == "post" else [pad, x], axis=1)
        mask = np.zeros((BATCH, STEPS), bool)
        kept = slice(0, 4) if padding == "post" else slice(3, STEPS)
        mask[:, kept] = True
        layer = built_layer(x, weights, return_sequences=True, return_state=True, mode=mode)
        outputs, state = layer(padded, mask=keras.ops.convert_to_tensor(mask))
        want_outputs, want_state = layer(x)
        assert_close_relative(to_numpy(state), to_numpy(want_state), 1e-6)
        assert_close_relative(to_numpy(outputs)[:, kept], to_numpy(want_outputs), 1e-6)
        expected = keras_masked_outputs(to_numpy(outputs), mask)
        np.testing.assert_array_equal(to_numpy(outputs), expected)

    def test_masked_outputs_follow_keras_gru(self):
        # GRU on the same masked batch obeys `keras_masked_outputs`, and so
        # does the LRU.
        x = data(np.random.default_rng(5))
        mask = ragged_mask()
        for layer in (
            keras.layers.GRU(4, return_sequences=True),
            LRU(4, return_sequences=True, seed=2),
        ):
            outputs = to_numpy(layer(x, mask=keras.ops.convert_to_tensor(mask)))
            np.testing.assert_array_equal(outputs, keras_masked_outputs(outputs, mask))
            assert np.all(outputs[1, :2] == 0) and np.all(outputs[3] == 0)
            assert np.all(outputs[0, -3:] == outputs[0, -4])

    def test_compute_mask(self):
        mask = ragged_mask()
        assert LRU(3).compute_mask(None, mask) is None
        assert LRU(3, return_sequences=True).compute_mask(None, mask) is mask
        with_state = LRU(3, return_sequences=True, return_state=True)
        assert with_state.compute_mask(None, mask) == [mask, None]

    def test_masking_layer_in_a_model(self):
        x = data(np.random.default_rng(6))
        x[:, 4:] = 0.0
        inputs = keras.Input((None, FEATURES))
        masked = keras.layers.Masking(0.0)(inputs)
        sequences = LRU(STATE_DIM, return_sequences=True, seed=3)(masked)
        model = keras.Model(inputs, LRU(STATE_DIM, seed=4)(sequences))
        np.testing.assert_allclose(to_numpy(model(x)), to_numpy(model(x[:, :4])), rtol=1e-6)

    def test_bidirectional(self):
        rng = np.random.default_rng(7)
        x = data(rng)
        forward_weights = random_weights(rng, FEATURES, STATE_DIM)
        backward_weights = random_weights(rng, FEATURES, STATE_DIM)
        layer = keras.layers.Bidirectional(LRU(STATE_DIM, return_sequences=True))
        layer(x)
        layer.set_weights(forward_weights + backward_weights)
        mask = ragged_mask()
        out = to_numpy(layer(x, mask=keras.ops.convert_to_tensor(mask)))
        # Bidirectional sets zero_output_for_mask on the layers it wraps.
        forward, _ = numpy_lru(x, forward_weights, mask=mask, zero_output=True)
        backward, _ = numpy_lru(x, backward_weights, mask=mask, go_backwards=True, zero_output=True)
        assert_close_relative(out[..., :FEATURES], forward, 1e-5)
        assert_close_relative(out[..., FEATURES:], backward[:, ::-1], 1e-5)


def ks_statistic(samples, cdf):
    """The Kolmogorov-Smirnov statistic of `samples` against `cdf`."""
    samples = np.sort(samples)
    n = samples.size
    values = cdf(samples)
    return max(np.max(np.arange(1, n + 1) / n - values), np.max(values - np.arange(n) / n))


class TestInitialization:
    STATE_DIM, FEATURES = 4000, 64
    # Kolmogorov-Smirnov critical value at the 0.1% level for n = 4000.
    KS_LIMIT = 1.95 / math.sqrt(STATE_DIM)

    def built(self, **kwargs):
        layer = LRU(self.STATE_DIM, seed=11, **kwargs)
        layer.build((None, None, self.FEATURES))
        return layer

    def eigenvalues(self, **kwargs):
        layer = self.built(**kwargs)
        lam_re, lam_im = (to_numpy(t).astype("float64") for t in layer.eigenvalues())
        return layer, np.hypot(lam_re, lam_im), np.exp(to_numpy(layer.theta_log).astype("float64"))

    @pytest.mark.parametrize(
        "r_min,r_max,max_phase", [(0.0, 1.0, 2 * math.pi), (0.9, 0.999, math.pi / 10)]
    )
    def test_ring_distribution(self, r_min, r_max, max_phase):
        layer, modulus, phase = self.eigenvalues(r_min=r_min, r_max=r_max, max_phase=max_phase)
        assert np.all((modulus >= r_min - 1e-6) & (modulus <= r_max))
        assert np.all((phase >= 0) & (phase <= max_phase * (1 + 1e-6)))
        # |λ|² uniform on [r_min², r_max²], phase uniform on [0, max_phase].
        low, high = r_min**2, r_max**2
        assert ks_statistic(modulus**2, lambda v: (v - low) / (high - low)) < self.KS_LIMIT
        assert ks_statistic(phase, lambda v: v / max_phase) < self.KS_LIMIT
        # The test has power: |λ| itself is not uniform on [r_min, r_max].
        if r_min == 0.0:
            assert ks_statistic(modulus, lambda v: v / r_max) > 5 * self.KS_LIMIT
        # γ starts at sqrt(1 - |λ|²).
        gamma = np.exp(to_numpy(layer.gamma_log).astype("float64"))
        np.testing.assert_allclose(gamma, np.sqrt(1.0 - modulus**2), rtol=1e-3, atol=1e-6)

    def test_matrices_follow_the_paper_scalings(self):
        features, state_dim = self.FEATURES, self.STATE_DIM
        layer = self.built()
        stds = [np.std(to_numpy(w)) for w in (layer.input_kernel, layer.output_kernel)]
        np.testing.assert_allclose(
            stds, [math.sqrt(1 / (2 * features)), math.sqrt(1 / state_dim)], rtol=0.03
        )
        np.testing.assert_allclose(np.std(to_numpy(layer.skip_kernel)), 1.0, rtol=0.25)
        # Real and imaginary parts are drawn independently.
        b = to_numpy(layer.input_kernel)
        assert abs(np.corrcoef(b[:, :state_dim].ravel(), b[:, state_dim:].ravel())[0, 1]) < 0.05

    def test_seed_makes_the_weights_reproducible(self):
        x = data(np.random.default_rng(0))
        layers = [LRU(STATE_DIM, seed=s) for s in (5, 5, 6)]
        for layer in layers:
            layer(x)
        same, other = layers[0].get_weights(), layers[2].get_weights()
        for a, b, c in zip(same, layers[1].get_weights(), other):
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c)

    def test_initializers_replace_the_paper_defaults(self):
        layer = LRU(
            STATE_DIM, input_initializer="ones", output_initializer="zeros", skip_initializer="ones"
        )
        x = data(np.random.default_rng(8))
        np.testing.assert_allclose(to_numpy(layer(x)), x[:, -1], rtol=1e-6)
        assert np.all(to_numpy(layer.input_kernel) == 1.0)


class TestSerialization:
    @pytest.mark.parametrize(
        "kwargs,shape",
        [
            ({"return_sequences": True, "seed": 1}, (BATCH, STEPS, FEATURES)),
            (
                {"mode": "sequential", "go_backwards": True, "r_min": 0.5, "r_max": 0.99},
                (BATCH, FEATURES),
            ),
        ],
    )
    def test_layer_test(self, kwargs, shape, tmp_path):
        run_layer_test(
            LRU,
            {"state_dim": STATE_DIM, **kwargs},
            data(np.random.default_rng(9)),
            expected_output_shape=shape,
            expected_num_trainable_weights=6,
            tmp_path=tmp_path,
        )

    def test_config_is_complete(self, tmp_path):
        layer = LRU(
            3,
            r_min=0.2,
            r_max=0.9,
            max_phase=1.5,
            input_initializer=keras.initializers.GlorotNormal(seed=1),
            skip_initializer="zeros",
            return_sequences=True,
            return_state=True,
            go_backwards=True,
            zero_output_for_mask=True,
            mode="sequential",
            seed=7,
        )
        config = layer.get_config()
        for name in inspect.signature(LRU.__init__).parameters:
            if name not in ("self", "kwargs"):
                assert name in config, name
        restored = assert_config_round_trip(layer)
        assert restored.mode == "sequential" and restored.seed == 7 and restored.r_min == 0.2
        assert isinstance(restored.input_initializer, keras.initializers.GlorotNormal)
        assert restored.output_initializer is None

    def test_keras_file_with_state_and_mask(self, tmp_path):
        rng = np.random.default_rng(10)
        inputs, state = keras.Input((None, FEATURES)), keras.Input((2 * STATE_DIM,))
        masked = keras.layers.Masking(0.0)(inputs)
        outputs = LRU(STATE_DIM, return_sequences=True, return_state=True, r_min=0.5)(
            masked, initial_state=[state]
        )
        model = keras.Model([inputs, state], outputs)
        x = data(rng)
        x[0, 3:] = 0.0
        h0 = rng.normal(size=(BATCH, 2 * STATE_DIM)).astype("float32")
        loaded = assert_keras_file_round_trip(model, [x, h0], tmp_path)
        assert isinstance(loaded.layers[-1], LRU)

    def test_registered_name(self):
        assert keras.saving.get_registered_name(LRU) == "keras_gradkit>LRU"

    @pytest.mark.skipif(
        BACKEND == "torch", reason="Keras exports SavedModels from TensorFlow and JAX only"
    )
    def test_export_serves_without_package(self, tmp_path):
        # The signature leaves the length open: the parallel mode then runs
        # the loop, which the eager call (in parallel) must agree with.
        inputs = keras.Input((None, FEATURES))
        x = keras.layers.Masking(0.0)(inputs)
        x = LRU(STATE_DIM, return_sequences=True, mode="parallel", seed=1)(x)
        x = LRU(STATE_DIM, go_backwards=True, seed=2)(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        x = data(np.random.default_rng(11))
        x[1, 5:] = 0.0
        assert_export_serves(model, x, tmp_path)


class TestTraining:
    def test_mixed_precision_computes_in_float32(self):
        rng = np.random.default_rng(12)
        x = data(rng)
        weights = random_weights(rng, FEATURES, STATE_DIM)
        full = built_layer(x, weights, return_sequences=True, return_state=True)
        half = LRU(STATE_DIM, return_sequences=True, return_state=True, dtype="mixed_float16")
        half(x)
        half.set_weights(weights)
        for got, want in zip(half(x), full(x)):
            assert keras.backend.standardize_dtype(got.dtype) == "float16"
            np.testing.assert_allclose(
                to_numpy(got).astype("float32"), to_numpy(want), atol=1e-2, rtol=1e-2
            )
        assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in half.weights)


class TestErrors:
    @pytest.mark.backend_free
    @pytest.mark.parametrize(
        "kwargs,error,pattern",
        [
            ({"state_dim": 0}, ValueError, "state_dim=0"),
            ({"state_dim": 2.5}, TypeError, "state_dim=2.5"),
            ({"r_min": 0.9, "r_max": 0.5}, ValueError, "r_min=0.9, r_max=0.5"),
            ({"r_min": 0.5, "r_max": 0.5}, ValueError, "r_min=0.5, r_max=0.5"),
            ({"r_max": 1.5}, ValueError, "r_max=1.5"),
            ({"r_max": 0.0}, ValueError, "r_max=0.0"),
            ({"r_min": -0.1}, ValueError, "r_min=-0.1"),
            ({"r_min": "0"}, TypeError, "r_min='0'"),
            ({"max_phase": 0.0}, ValueError, "max_phase=0.0"),
            ({"max_phase": -1.0}, ValueError, "max_phase=-1.0"),
            ({"max_phase": float("inf")}, ValueError, "max_phase=inf"),
            ({"mode": "fast"}, ValueError, "mode='fast'"),
            ({"seed": 1.5}, TypeError, "seed=1.5"),
            ({"return_state": 1}, TypeError, "return_state=1"),
        ],
    )
    def test_bad_arguments(self, kwargs, error, pattern):
        kwargs = {"state_dim": 4, **kwargs}
        name = pattern.split("=")[0]
        with pytest.raises(error, match=f"`{name}`.*{re.escape(pattern)}"):
            LRU(**kwargs)

    def test_input_not_rank_3(self):
        with pytest.raises(ValueError, match=r"ndim=3.*ndim=2"):
            LRU(3)(np.zeros((4, 5), "float32"))

    def test_unknown_feature_dimension(self):
        with pytest.raises(ValueError, match=r"feature dimension.*\(None, 5, None\)"):
            LRU(3).build((None, 5, None))

    def test_initial_state_of_the_wrong_width(self):
        x = data(np.random.default_rng(0))
        with pytest.raises(ValueError, match=r"2 \* state_dim.*\(4, 4\).*state_dim=4"):
            LRU(STATE_DIM)(x, initial_state=[np.zeros((BATCH, STATE_DIM), "float32")])


def test_docstring_args_exist_in_signature():
    args_section = LRU.__doc__.split("Args:")[1].split("Call arguments:")[0]
    documented = re.findall(r"^\s{8}(\*{0,2}\w+):", args_section, flags=re.M)
    parameters = inspect.signature(LRU.__init__).parameters
    assert [n.lstrip("*") for n in documented] == [p for p in parameters if p != "self"]
