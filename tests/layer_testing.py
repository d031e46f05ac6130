"""Shared test helpers: the layer checks every keras_gradkit layer must pass.

`keras.src.testing` is not public, so this is our own `run_layer_test` on the
public API (as keras-hub does), plus the check that an exported SavedModel is
served by a fresh process that cannot import keras_gradkit.
"""

import atexit
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _numpy(x):
    return [keras.ops.convert_to_numpy(t) for t in _as_list(x)]


def assert_config_round_trip(layer):
    """`get_config`/`from_config` and the JSON serialization give the same config."""
    config = layer.get_config()
    restored = layer.__class__.from_config(config)
    assert restored.get_config() == config
    serialized = keras.saving.serialize_keras_object(layer)
    from_json = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(from_json) is type(layer)
    assert from_json.get_config() == config
    return restored


def assert_keras_file_round_trip(model, inputs, tmp_path, name="model.keras"):
    """`.keras` save/load reproduces the outputs exactly."""
    path = os.path.join(str(tmp_path), name)
    expected = _numpy(model(inputs))
    model.save(path)
    loaded = keras.saving.load_model(path)
    got = _numpy(loaded(inputs))
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)
    return loaded


# The serving process: fresh (it never imported keras_gradkit, and cannot),
# started once per test process and reused by every export test, since its
# start (importing TensorFlow) costs more than serving a small model. Each
# request is a line `export_dir<TAB>inputs.npz<TAB>outputs.npz`; it answers
# `ok` or `error <message>` on a line of its own.
_SERVE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys, traceback

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "keras_gradkit" or name.startswith("keras_gradkit."):
                raise ImportError("keras_gradkit must not be needed to serve")
            return None

    sys.meta_path.insert(0, _Block())
    import numpy as np
    import tensorflow as tf

    def serve(export_dir, in_path, out_path):
        loaded = tf.saved_model.load(export_dir)
        data = np.load(in_path)
        inputs = [tf.constant(data[k]) for k in sorted(data.files)]
        outputs = loaded.serve(*inputs)
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        signature = loaded.signatures["serving_default"]
        assert signature is not None
        assert not any(m.startswith("keras_gradkit") for m in sys.modules)
        np.savez(out_path, *[o.numpy() for o in outputs])

    for line in sys.stdin:
        try:
            serve(*line.rstrip("\\n").split("\\t"))
            answer = "ok"
        except Exception:
            answer = "error " + traceback.format_exc().replace("\\n", " | ")
        print(answer, flush=True)
    """
)

_server = None


def _serving_process():
    """The test process's serving process, started on first use."""
    global _server
    if _server is None or _server.poll() is not None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
        _server = subprocess.Popen(
            [sys.executable, "-c", _SERVE_SCRIPT],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        atexit.register(_server.kill)
    return _server


def _serve(export_dir, in_path, out_path):
    server = _serving_process()
    server.stdin.write(f"{export_dir}\t{in_path}\t{out_path}\n")
    server.stdin.flush()
    answer = server.stdout.readline().strip()
    assert answer == "ok", answer or f"the serving process ended (exit code {server.wait()})"


def assert_export_serves(model, inputs, tmp_path, atol=1e-5, rtol=1e-5):
    """`model.export` gives a SavedModel that a fresh process serves identically,
    with keras_gradkit blocked from import."""
    tmp_path = str(tmp_path)
    export_dir = os.path.join(tmp_path, "exported")
    model.export(export_dir, verbose=False)
    in_path = os.path.join(tmp_path, "serve_inputs.npz")
    out_path = os.path.join(tmp_path, "serve_outputs.npz")
    arrays = _numpy(inputs)
    np.savez(in_path, **{f"x{i:02d}": a for i, a in enumerate(arrays)})
    _serve(export_dir, in_path, out_path)
    served = np.load(out_path)
    served = [served[k] for k in sorted(served.files, key=lambda k: int(k.split("_")[1]))]
    expected = _numpy(model(inputs))
    assert len(served) == len(expected)
    for e, s in zip(expected, served):
        np.testing.assert_allclose(s, e, atol=atol, rtol=rtol)


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=0,
    tmp_path=None,
    run_mixed_precision=True,
    run_training=True,
):
    """The checks every layer passes, on the public API.

    Config round trip (Python and JSON), eager and symbolic calls with matching
    shapes, weight counts, one `fit` step, `.keras` save/load with identical
    outputs (when `tmp_path` is given) and a `mixed_float16` call whose output
    is float16 and finite while the variables stay float32.
    """
    layer = layer_cls(**init_kwargs)
    assert_config_round_trip(layer)
    eager = layer(input_data)
    eager_shapes = [tuple(t.shape) for t in _as_list(eager)]
    if expected_output_shape is not None:
        expected = (
            _as_list(expected_output_shape)
            if isinstance(expected_output_shape, list)
            else [expected_output_shape]
        )
        assert eager_shapes == [tuple(s) for s in expected], eager_shapes
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights
    assert_config_round_trip(layer)

    symbolic_in = keras.Input(
        batch_shape=(None,) + tuple(input_data.shape[1:]), dtype=input_data.dtype
    )
    symbolic_out = layer_cls(**init_kwargs)(symbolic_in)
    for s, e in zip(_as_list(symbolic_out), eager_shapes):
        assert tuple(s.shape)[1:] == e[1:]
    model = keras.Model(symbolic_in, symbolic_out)

    if run_training and not isinstance(symbolic_out, (list, tuple)):
        model.compile(optimizer="adam", loss="mse")
        target = np.zeros(eager_shapes[0], dtype="float32")
        history = model.fit(input_data, target, batch_size=len(input_data), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])

    if tmp_path is not None:
        assert_keras_file_round_trip(model, input_data, tmp_path)

    if run_mixed_precision:
        mp_layer = layer_cls(**init_kwargs, dtype="mixed_float16")
        out = _as_list(mp_layer(input_data))
        for t in out:
            assert keras.backend.standardize_dtype(t.dtype) == "float16", t.dtype
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(t)))
        for w in mp_layer.weights:
            assert keras.backend.standardize_dtype(w.dtype) == "float32", w.path
    return layer
