"""The end-to-end example `examples/train_export_serve.py`: train, `.keras`,
SavedModel, serving without keras, `saved_model_cli`, variable lengths.

The example's `main(["--quick", ...])` runs once per module (a 16-unit model,
2 epochs); the tests then check its artifacts against the reloaded Keras model
and against the data, independently of the checks the example makes itself.
"""

import importlib.util
import json
import math
import os
import pathlib

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

pytestmark = pytest.mark.tensorflow_only

_PATH = pathlib.Path(__file__).resolve().parents[1] / "examples" / "train_export_serve.py"
_SPEC = importlib.util.spec_from_file_location("train_export_serve", _PATH)
tes = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(tes)  # importing must not train: main() only runs below

TOL = 1e-5


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_export_serve")
    out = root / "out"
    result = tes.main(["--quick", "--logdir", str(root / "logs"), "--out", str(out)])
    return result, out


@pytest.fixture(scope="module")
def test_data():
    _, _, x_test, y_test = tes.load_digits_sequences("rows")
    return x_test, y_test


@pytest.fixture(scope="module")
def reloaded(run):
    result, _ = run
    return keras.saving.load_model(result["keras_path"])


def _predict(model, x):
    return keras.ops.convert_to_numpy(model(np.asarray(x, "float32"), training=False))


# ------------------------------------------------------------ steps without training
def test_load_digits_sequences_rows_and_pixels():
    digits = load_digits()
    x_train, y_train, x_test, y_test = tes.load_digits_sequences("rows", test_fraction=0.25, seed=0)
    assert x_train.shape == (1347, 8, 8) and x_test.shape == (450, 8, 8)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    assert x_train.min() == 0.0 and x_train.max() == 1.0
    # Every image exactly once, scaled by 1/16: the split is a partition of the data set.
    everything = np.concatenate([x_train, x_test]).reshape(len(digits.images), -1)
    expected = (digits.images / 16.0).reshape(len(digits.images), -1)
    order = lambda a: a[np.lexsort(a.T)]
    np.testing.assert_array_equal(order(everything), order(expected.astype("float32")))
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([y_train, y_test])), np.bincount(digits.target)
    )
    # Pixels mode: the same split, read one pixel per step.
    px_train, py_train, px_test, py_test = tes.load_digits_sequences("pixels", seed=0)
    assert px_train.shape == (1347, 64, 1)
    np.testing.assert_array_equal(px_test.reshape(-1, 8, 8), x_test)
    np.testing.assert_array_equal(py_test, y_test)
    # Deterministic per seed; another seed gives another split.
    np.testing.assert_array_equal(tes.load_digits_sequences("rows", seed=0)[2], x_test)
    assert not np.array_equal(tes.load_digits_sequences("rows", seed=1)[2], x_test)


def test_bad_arguments_name_the_argument(capsys):
    with pytest.raises(ValueError, match=r"`mode`.*mode='foo'"):
        tes.load_digits_sequences("foo")
    with pytest.raises(ValueError, match=r"`test_fraction`.*test_fraction=1.5"):
        tes.load_digits_sequences("rows", test_fraction=1.5)
    with pytest.raises(ValueError, match=r"`mask_value`.*mask_value=0.0"):
        tes.build_model(mask_value=0.0)
    with pytest.raises(ValueError, match=r"`features`.*features=3"):
        tes.build_model(features=3)
    with pytest.raises(ValueError, match=r"`units`.*units=0"):
        tes.build_model(units=0)
    with pytest.raises(SystemExit) as exit_info:
        tes.main(["--mode", "foo"])
    assert exit_info.value.code == 2
    assert "argument --mode: invalid choice: 'foo'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tes.main(["--epochs", "0"])
    assert "argument --epochs: must be a positive integer, got 0" in capsys.readouterr().err


def test_model_takes_any_length_with_the_paper_bound():
    model = tes.build_model(features=8, units=16)
    assert model.inputs[0].shape == (None, None, 8)
    assert model.inputs[0].name == "x"
    assert model.outputs[0].shape == (None, 10)
    for name in ("indrnn_1", "indrnn_2"):
        cell = model.get_layer(name).cell
        assert cell.bound == pytest.approx(2 ** (1 / 8))
        assert np.all(np.abs(keras.ops.convert_to_numpy(cell.recurrent_kernel)) <= cell.bound)
    assert model.get_layer("lstm").chrono_timesteps == 8
    assert model.get_layer("group_norm_1").groups == math.gcd(16, 8)
    pixels = tes.build_model(features=1, units=8)
    assert pixels.get_layer("indrnn_1").cell.bound == pytest.approx(2 ** (1 / 64))


def test_untrained_padded_batch_equals_examples_alone(test_data):
    x_test, _ = test_data
    model = tes.build_model(features=8, units=16)
    padded, singles = tes.variable_length_batch(x_test[:4], [3, 8, 5, 6])
    assert padded.shape == (4, 8, 8)
    assert np.all(padded[0, 3:] == -1.0) and np.all(padded[2, 5:] == -1.0)
    alone = np.concatenate([_predict(model, s[None]) for s in singles])
    np.testing.assert_allclose(_predict(model, padded), alone, atol=TOL, rtol=0)
    # Padding must matter to the model if the mask were ignored: padding with
    # zeros instead (a real pixel value, not masked) changes the outputs.
    zero_padded = np.where(padded == -1.0, 0.0, padded)
    assert np.max(np.abs(_predict(model, zero_padded) - alone)) > 1e-4


def test_save_and_reload_is_identical(tmp_path, test_data):
    x_test, _ = test_data
    model = tes.build_model(features=8, units=8)
    reloaded_model, diff = tes.save_and_reload(model, str(tmp_path / "m.keras"), x_test[:32])
    assert diff == 0.0
    for a, b in zip(model.get_weights(), reloaded_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        _predict(reloaded_model, x_test[:32]), _predict(model, x_test[:32])
    )


def test_parse_cli_signature():
    text = (
        "signature_def['serving_default']:\n"
        "  The given SavedModel SignatureDef contains the following input(s):\n"
        "    inputs['x'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, -1, 8)\n"
        "  The given SavedModel SignatureDef contains the following output(s):\n"
        "    outputs['output_0'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 10)\n"
        "signature_def['other']:\n    inputs['y'] tensor_info:\n        shape: (3)\n"
    )
    assert tes.parse_cli_signature(text) == {
        "inputs": {"x": (-1, -1, 8)},
        "outputs": {"output_0": (-1, 10)},
    }
    with pytest.raises(RuntimeError, match="'missing' not found"):
        tes.parse_cli_signature(text, "missing")


# ------------------------------------------------------------ the quick end-to-end run
def test_quick_run_learns(run, reloaded, test_data):
    result, _ = run
    x_test, y_test = test_data
    # 10 classes: chance is about 0.1.
    assert result["keras_accuracy"] > 0.5
    accuracy = np.mean(np.argmax(_predict(reloaded, x_test), axis=-1) == y_test)
    assert accuracy == pytest.approx(result["keras_accuracy"], abs=1e-12)


def test_keras_file_reloads_identically(run):
    result, _ = run
    assert result["reload_max_abs_diff"] == 0.0
    assert result["reloaded_accuracy"] == result["keras_accuracy"]


def test_export_signature_accepts_any_batch_and_length(run):
    result, _ = run
    assert result["signature"] == {
        "input_name": "x",
        "input_shape": (None, None, 8),
        "output_name": "output_0",
        "output_shape": (None, 10),
    }
    assert pathlib.Path(result["export_dir"]).parts[-2:] == ("digits", "1")
    assert os.path.isfile(os.path.join(result["export_dir"], "saved_model.pb"))


def test_served_in_fresh_process_without_keras(run, reloaded, test_data):
    result, out = run
    x_test, y_test = test_data
    # TensorFlow imports keras at start-up when it can: an empty list means the block worked.
    assert result["served_imported"] == []
    np.testing.assert_array_equal(np.load(out / "serving" / "x_test.npy"), x_test)
    served = np.load(out / "serving" / "served_x_test.npy")
    expected = _predict(reloaded, x_test)
    np.testing.assert_allclose(served, expected, atol=TOL, rtol=0)
    served_accuracy = np.mean(np.argmax(served, axis=-1) == y_test)
    assert served_accuracy == pytest.approx(result["served_accuracy"], abs=1e-12)
    assert result["served_accuracy"] == result["keras_accuracy"]


def test_saved_model_cli_show_lists_the_signature(run):
    _, out = run
    text = (out / "saved_model_cli_show.txt").read_text()
    assert "signature_def['serving_default']:" in text
    assert "inputs['x'] tensor_info:" in text
    parsed = tes.parse_cli_signature(text)
    assert parsed == {"inputs": {"x": (-1, -1, 8)}, "outputs": {"output_0": (-1, 10)}}


def test_saved_model_cli_run_matches_keras(run, reloaded, test_data):
    result, out = run
    x_test, y_test = test_data
    cli = np.load(out / "cli_outputs" / "output_0.npy")
    np.testing.assert_allclose(cli, _predict(reloaded, x_test), atol=TOL, rtol=0)
    assert np.mean(np.argmax(cli, axis=-1) == y_test) == pytest.approx(
        result["cli_accuracy"], abs=1e-12
    )


def test_padded_batch_equals_unpadded_examples_keras_and_served(run, reloaded):
    result, out = run
    serving = out / "serving"
    padded = np.load(serving / "varlen_padded.npy")
    singles = [np.load(serving / f"varlen_single_{i}.npy") for i in range(len(padded))]
    lengths = [s.shape[1] for s in singles]
    assert len(set(lengths)) == len(lengths) and max(lengths) == padded.shape[1] == 8
    for row, single in zip(padded, singles):
        np.testing.assert_array_equal(row[: single.shape[1]], single[0])
        assert np.all(row[single.shape[1] :] == -1.0)
    keras_alone = np.concatenate([_predict(reloaded, s) for s in singles])
    np.testing.assert_allclose(_predict(reloaded, padded), keras_alone, atol=TOL, rtol=0)
    served_padded = np.load(serving / "served_varlen_padded.npy")
    served_alone = np.concatenate(
        [np.load(serving / f"served_varlen_single_{i}.npy") for i in range(len(padded))]
    )
    np.testing.assert_allclose(served_padded, served_alone, atol=TOL, rtol=0)
    np.testing.assert_allclose(served_padded, keras_alone, atol=TOL, rtol=0)
    assert max(result[k] for k in result if k.startswith("varlen_")) <= TOL


def test_gradient_board_wrote_gradient_norms(run):
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea
    from tensorboard.util import tensor_util

    result, _ = run
    acc = pea.EventAccumulator(
        os.path.join(result["logdir"], "train"), size_guidance={pea.TENSORS: 0}
    )
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {
        "gradient_norm/global",
        "gradient_norm/global_clipped",
        "clipping/threshold",
        "gradients/indrnn_1/ind_rnn_cell/recurrent_kernel",
        "time_gradient/input/norms",
    } <= tags
    events = acc.Tensors("gradient_norm/global")
    assert [e.step for e in events] == [
        0,
        1,
    ]  # epoch-level writes at the epoch, as Keras's epoch_loss
    norms = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in events]
    assert all(math.isfinite(n) and n > 0 for n in norms)
    assert norms[-1] == pytest.approx(result["global_norm"], rel=1e-6)
    threshold = acc.Tensors("clipping/threshold")[-1]
    assert float(tensor_util.make_ndarray(threshold.tensor_proto)) == pytest.approx(1.0)


def test_rest_request_is_one_test_example(run, test_data):
    _, out = run
    x_test, _ = test_data
    body = json.loads((out / "rest_request.json").read_text())
    assert body["signature_name"] == "serving_default"
    np.testing.assert_array_equal(np.asarray(body["instances"], dtype="float32"), x_test[:1])
