"""LiteRT (TensorFlow Lite) export: `model.export(path, format="litert")` of
keras_gradkit models, run with the LiteRT interpreter and compared with the
Keras model that has the same weights.

The fast `IndRNN` loops with `keras.ops.scan`; the converter lowers that loop
to built-in ops (WHILE) only when the batch dimension is static, so these
models are exported with an explicit `input_signature` (Keras's inferred
signature always has a `None` batch). `keras.layers.RNN(IndRNNCell(...),
unroll=True)` has no loop and exports with a `None` batch.
"""

import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gradkit as gk

pytestmark = pytest.mark.tensorflow_only

FEATURES = 4
UNITS = 16
CLASSES = 10
BUILTIN_OPS_ONLY = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}


def make_interpreter(path):
    """The LiteRT interpreter (`ai-edge-litert`), else TensorFlow's own."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        # TensorFlow's copy warns that it moved to ai_edge_litert; it still runs.
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return Interpreter(model_path=path)


def run_tflite(path, x):
    interpreter = make_interpreter(path)
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"]) != x.shape:
        # strict: only the dimensions exported as None may change.
        interpreter.resize_tensor_input(detail["index"], x.shape, strict=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def export(model, tmp_path, input_shape=None, **kwargs):
    path = os.path.join(str(tmp_path), "model.tflite")
    if input_shape is not None:
        kwargs["input_signature"] = [keras.InputSpec(shape=input_shape, dtype="float32")]
    model.export(path, format="litert", verbose=False, **kwargs)
    assert os.path.getsize(path) > 0
    return path


def randomize_weights(model, seed=0):
    """Non-symmetric weights: every unit differs; IndRNN's recurrent weights
    in (-0.9, 0.9) so long sequences stay bounded."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = []
        for w in layer.get_weights():
            if w.ndim == 0:  # CosineDense's learned scale
                weights.append(np.asarray(rng.uniform(2.0, 6.0), w.dtype))
            else:
                weights.append(rng.normal(0.0, 0.5, w.shape).astype(w.dtype))
        if isinstance(layer, gk.layers.IndRNN):
            weights[1] = rng.uniform(-0.9, 0.9, weights[1].shape).astype("float32")
        layer.set_weights(weights)


def ind_rnn_model(steps, masking=False, unrolled_cells=False):
    """Input -> [Masking] -> IndRNN (sequences) -> IndRNN -> CosineDense."""
    inputs = keras.Input((steps, FEATURES))
    x = keras.layers.Masking(0.0)(inputs) if masking else inputs
    if unrolled_cells:
        x = keras.layers.RNN(gk.layers.IndRNNCell(UNITS), return_sequences=True, unroll=True)(x)
        x = keras.layers.RNN(gk.layers.IndRNNCell(UNITS), unroll=True)(x)
    else:
        x = gk.layers.IndRNN(UNITS, return_sequences=True)(x)
        x = gk.layers.IndRNN(UNITS)(x)
    outputs = gk.layers.CosineDense(
        CLASSES, use_bias=True, scale=5.0, learn_scale=True, centered=True
    )(x)
    return keras.Model(inputs, outputs)


def sequences(batch, steps, seed=1):
    return np.random.default_rng(seed).normal(size=(batch, steps, FEATURES)).astype("float32")


def assert_matches_keras(model, path, x):
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(expected).max() > 0.1  # the comparison is not between zeros
    np.testing.assert_allclose(run_tflite(path, x), expected, atol=1e-5, rtol=1e-5)


class TestLiteRTExport:
    def test_ind_rnn_cosine_dense_builtin_ops_only(self, tmp_path):
        model = ind_rnn_model(steps=8)
        randomize_weights(model)
        path = export(model, tmp_path, input_shape=(2, 8, FEATURES), **BUILTIN_OPS_ONLY)
        assert_matches_keras(model, path, sequences(2, 8))

    def test_unknown_length_with_static_batch(self, tmp_path):
        # An unknown length runs in chunks of 16 steps, padding the last one:
        # one loop iteration (5, 16) or three (37), all from the same file.
        model = ind_rnn_model(steps=None)
        randomize_weights(model)
        path = export(model, tmp_path, input_shape=(2, None, FEATURES))
        for steps in (5, 16, 37):
            assert_matches_keras(model, path, sequences(2, steps, seed=steps))

    def test_masking(self, tmp_path):
        model = ind_rnn_model(steps=8, masking=True)
        randomize_weights(model)
        x = sequences(3, 8)
        x[0, -3:] = 0.0  # right padding
        x[1, :2] = 0.0  # left padding
        path = export(model, tmp_path, input_shape=(3, 8, FEATURES), **BUILTIN_OPS_ONLY)
        assert_matches_keras(model, path, x)

    def test_unrolled_cells_export_with_unknown_batch(self, tmp_path):
        # The cell's weights are the fast layer's: the unrolled copy of a
        # trained model exports with a None batch.
        fast = ind_rnn_model(steps=8)
        randomize_weights(fast)
        unrolled = ind_rnn_model(steps=8, unrolled_cells=True)
        unrolled.set_weights(fast.get_weights())
        path = export(unrolled, tmp_path, **BUILTIN_OPS_ONLY)
        for batch in (1, 5):
            assert_matches_keras(fast, path, sequences(batch, 8, seed=batch))

    def test_group_norm_and_lstm_with_masking(self, tmp_path):
        inputs = keras.Input((8, FEATURES))
        x = keras.layers.Masking(0.0)(inputs)
        x = gk.layers.IndRNN(UNITS, return_sequences=True)(x)
        x = gk.layers.GroupNorm(groups=4)(x)
        x = gk.layers.LSTM(UNITS, forget_bias=1.0, use_cudnn=False)(x)
        model = keras.Model(inputs, gk.layers.CosineDense(CLASSES, scale=5.0)(x))
        randomize_weights(model)
        x = sequences(3, 8)
        x[0, -3:] = 0.0
        path = export(model, tmp_path, input_shape=(3, 8, FEATURES), **BUILTIN_OPS_ONLY)
        assert_matches_keras(model, path, x)
