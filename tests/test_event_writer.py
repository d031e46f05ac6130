"""The event writer: files TensorBoard's own reader reads back, written for a
local `log_dir` without importing TensorFlow, and through `tf.io.gfile` for a
remote one.

Backend-independent: apart from `TestFitImportsNoTensorFlow`, these tests
touch no backend tensors (only NumPy, protos and files), so every
KERAS_BACKEND gives the same result: they are marked `backend_free` and run
once, on TensorFlow (the `tf.io.gfile` test is `tensorflow_only` anyway).
"""

import os
import re
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util

from keras_gradkit.callbacks import _event_writer
from keras_gradkit.callbacks._event_writer import EventWriter

BACKEND = keras.backend.backend()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITER_FILE = os.path.join(ROOT, "keras_gradkit", "callbacks", "_event_writer.py")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))  # the reader never decodes it


def read_back(run_dir):
    """{tag: (plugin name, description, [(step, ndarray), ...])}, read by TensorBoard."""
    acc = pea.EventAccumulator(str(run_dir), size_guidance={pea.TENSORS: 0})
    acc.Reload()
    events = {}
    for tag in acc.Tags()["tensors"]:
        metadata = acc.SummaryMetadata(tag)
        values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        events[tag] = (metadata.plugin_data.plugin_name, metadata.summary_description, values)
    return events


def event_files(run_dir):
    return sorted(p for p in os.listdir(run_dir) if p.startswith("events.out.tfevents"))


def write_steps(run_dir, steps):
    writer = EventWriter(run_dir)
    for step in steps:
        writer.write(_event_writer.scalar_values({"loss": float(step)}), step)
    writer.close()
    (name,) = event_files(run_dir)[-1:]
    return os.path.join(run_dir, name)


def run_python(script, *args, backend="jax"):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)
    return subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )


@pytest.mark.backend_free
class TestEventWriter:
    def test_every_kind_of_value_reads_back_with_tensorboard(self, tmp_path):
        rng = np.random.default_rng(0)
        data = rng.normal(size=(7, 5))
        vector = rng.normal(size=6).astype("float32")
        writer = EventWriter(tmp_path)
        writer.write(
            [
                *_event_writer.scalar_values({"loss": 0.25, "gradient_norm/global": -3.5}),
                _event_writer.histogram_value("gradients/w", data),
                _event_writer.image_value("plot", PNG, 64, 48, description="a plot"),
                _event_writer.tensor_value(
                    "norms", vector, _event_writer.TIME_GRADIENT_PLUGIN, "per step"
                ),
                _event_writer.text_value("notes", "**clipped** at `1.0`"),
            ],
            step=4,
        )
        writer.write(_event_writer.scalar_values({"loss": 0.125}), step=5)
        writer.close()
        events = read_back(tmp_path)
        assert {tag: plugin for tag, (plugin, _, _) in events.items()} == {
            "loss": "scalars",
            "gradient_norm/global": "scalars",
            "gradients/w": "histograms",
            "plot": "images",
            "norms": _event_writer.TIME_GRADIENT_PLUGIN,
            "notes": "text",
        }
        assert [(s, float(v)) for s, v in events["loss"][2]] == [(4, 0.25), (5, 0.125)]
        assert [(s, float(v)) for s, v in events["gradient_norm/global"][2]] == [(4, -3.5)]
        ((step, buckets),) = events["gradients/w"][2]
        assert step == 4 and buckets.shape == (30, 3)
        assert buckets[:, 2].sum() == data.size
        np.testing.assert_allclose([buckets[0, 0], buckets[-1, 1]], [data.min(), data.max()])
        _, description, [(_, image)] = events["plot"]
        assert description == "a plot" and list(image) == [b"64", b"48", PNG]
        _, description, [(_, norms)] = events["norms"]
        assert description == "per step"
        np.testing.assert_array_equal(norms, vector)
        [(_, text)] = events["notes"][2]
        assert text.item() == b"**clipped** at `1.0`"

    def test_file_is_named_like_tensorboards_and_starts_with_the_file_version(self, tmp_path):
        path = write_steps(str(tmp_path), [0, 1])
        name = os.path.basename(path)
        pattern = rf"events\.out\.tfevents\.\d{{10}}\.{re.escape(socket.gethostname())}\.{os.getpid()}\.\d+"
        assert re.fullmatch(pattern, name), name
        events = list(event_file_loader.EventFileLoader(path).Load())
        assert events[0].file_version == "brain.Event:2" and not events[0].HasField("summary")
        assert [e.step for e in events[1:]] == [0, 1]

    def test_two_writers_in_one_directory_never_collide(self, tmp_path):
        first, second = EventWriter(tmp_path), EventWriter(tmp_path)
        first.write(_event_writer.scalar_values({"a": 1.0}), 1)
        second.write(_event_writer.scalar_values({"b": 2.0}), 2)
        first.close()
        second.close()
        assert len(event_files(tmp_path)) == 2
        events = read_back(tmp_path)
        assert [s for s, _ in events["a"][2]] == [1] and [s for s, _ in events["b"][2]] == [2]

    def test_no_file_until_the_first_values(self, tmp_path):
        run_dir = tmp_path / "logs" / "train"
        writer = EventWriter(run_dir)
        writer.write([], 0)
        writer.flush()
        writer.close()
        assert not run_dir.exists()
        writer.write(_event_writer.scalar_values({"a": 1.0}), 0)  # creates the directories
        writer.close()
        assert len(event_files(run_dir)) == 1

    def test_flush_makes_events_readable_and_close_ends_the_file(self, tmp_path):
        writer = EventWriter(tmp_path)
        writer.write(_event_writer.scalar_values({"a": 1.0}), 3)
        writer.flush()
        assert [s for s, _ in read_back(tmp_path)["a"][2]] == [3]
        writer.close()
        writer.close()  # closing twice is harmless
        writer.write(_event_writer.scalar_values({"a": 2.0}), 4)  # a new file
        writer.close()
        assert len(event_files(tmp_path)) == 2
        assert [s for s, _ in read_back(tmp_path)["a"][2]] == [3, 4]

    @pytest.mark.parametrize(
        "path, remote",
        [
            ("gs://bucket/logs", True),
            ("s3://bucket/logs", True),
            ("hdfs://namenode:8020/logs", True),
            ("/tmp/logs", False),
            ("logs/train", False),
        ],
    )
    def test_is_remote(self, path, remote):
        assert _event_writer.is_remote(path) is remote

    def test_makedirs_creates_a_local_directory_twice(self, tmp_path):
        _event_writer.makedirs(tmp_path / "a" / "b")
        _event_writer.makedirs(tmp_path / "a" / "b")
        assert (tmp_path / "a" / "b").is_dir()


@pytest.mark.backend_free
class TestMaxStepOnDisk:
    def test_largest_summary_step_over_all_files(self, tmp_path):
        assert _event_writer.max_step_on_disk(tmp_path) == -1
        assert _event_writer.max_step_on_disk(tmp_path / "missing") == -1
        write_steps(str(tmp_path), [3, 9, 5])
        write_steps(str(tmp_path), [7])
        assert _event_writer.max_step_on_disk(tmp_path) == 9

    def test_a_file_with_only_the_file_version_has_no_step(self, tmp_path):
        path = write_steps(str(tmp_path), [6])
        with open(path, "rb") as f:
            first = next(_event_writer._read_events(f))
        assert first.file_version == "brain.Event:2"
        with open(path, "rb") as f:
            size = len(first.SerializeToString()) + 16
            head = f.read(size)
        with open(path, "wb") as f:
            f.write(head)
        assert _event_writer.max_step_on_disk(tmp_path) == -1

    @pytest.mark.parametrize("cut", [1, 4, 5, 12, 13, 20], ids=lambda c: f"cut{c}")
    def test_a_truncated_last_record_is_skipped(self, tmp_path, cut):
        # A record is a 12-byte header, the event and a 4-byte CRC: cuts of 1
        # to 4 bytes land in the last record's CRC, longer ones in its event.
        path = write_steps(str(tmp_path / "run"), [2, 5, 8])
        os.truncate(path, os.path.getsize(path) - cut)
        assert _event_writer.max_step_on_disk(tmp_path / "run") == 5
        # TensorBoard's reader agrees, and a later file still counts.
        assert [
            e.step for e in event_file_loader.EventFileLoader(path).Load() if e.HasField("summary")
        ] == [2, 5]
        write_steps(str(tmp_path / "run"), [6])
        assert _event_writer.max_step_on_disk(tmp_path / "run") == 6

    @pytest.mark.parametrize(
        "tail", [b"\0" * 40, b"\xff" * 7, b"garbage!" * 5], ids=["zeros", "ones", "text"]
    )
    def test_a_damaged_tail_is_ignored(self, tmp_path, tail):
        path = write_steps(str(tmp_path), [1, 4])
        with open(path, "ab") as f:
            f.write(tail)
        assert _event_writer.max_step_on_disk(tmp_path) == 4


class TestRemoteLogDir:
    @pytest.mark.backend_free
    def test_without_tensorflow_a_remote_path_is_rejected(self, monkeypatch):
        monkeypatch.setitem(
            sys.modules, "tensorflow", None
        )  # `import tensorflow` raises ImportError
        message = r"Argument `log_dir` is a remote path \((gs|s3)://\), which needs .*`tf\.io\.gfile`.*tensorflow"
        received = re.escape("Received: log_dir='gs://bucket/logs/train'")
        with pytest.raises(ValueError, match=message + ".*" + received):
            _event_writer.makedirs("gs://bucket/logs/train")
        with pytest.raises(ValueError, match=message):
            EventWriter("gs://bucket/logs/train").write(_event_writer.scalar_values({"a": 1.0}), 0)
        with pytest.raises(ValueError, match=message):
            _event_writer.max_step_on_disk("s3://bucket/logs/train")
        EventWriter("gs://bucket/logs/train").write(
            [], 0
        )  # nothing to write: no file system needed

    @pytest.mark.tensorflow_only  # TensorFlow's in-memory file system stands in for gs://
    def test_a_remote_path_goes_through_tf_io_gfile(self, tmp_path):
        import tensorflow as tf

        run_dir = f"ram://{tmp_path.name}/logs/train"
        _event_writer.makedirs(run_dir)
        assert tf.io.gfile.isdir(run_dir)
        writer = EventWriter(run_dir)
        writer.write(_event_writer.scalar_values({"loss": 0.5}), 2)
        writer.write([_event_writer.text_value("notes", "*remote*")], 7)
        writer.flush()
        assert _event_writer.max_step_on_disk(run_dir) == 7
        writer.close()
        (path,) = tf.io.gfile.glob(f"{run_dir}/events.out.tfevents.*")
        events = list(event_file_loader.EventFileLoader(path).Load())
        assert events[0].file_version == "brain.Event:2"
        assert [(e.step, e.summary.value[0].tag) for e in events[1:]] == [(2, "loss"), (7, "notes")]


@pytest.mark.backend_free
class TestNoTensorFlow:
    def test_the_writer_alone_imports_no_tensorflow(self, tmp_path):
        # Loads the file by itself (not through the package), so only the
        # writer's own imports count.
        script = textwrap.dedent(
            """
            import importlib.util, os, sys
            spec = importlib.util.spec_from_file_location("event_writer", sys.argv[1])
            ew = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(ew)
            run_dir = os.path.join(sys.argv[2], "train")
            writer = ew.EventWriter(run_dir)
            writer.write(
                ew.scalar_values({"a": 1.0})
                + [ew.histogram_value("h", [1.0, 2.0, 4.0]), ew.image_value("i", b"png", 1, 1),
                   ew.tensor_value("t", [1.0, 2.0], ew.TIME_GRADIENT_PLUGIN, "d"), ew.text_value("x", "**md**")],
                3,
            )
            writer.flush()
            writer.close()
            ew.makedirs(os.path.join(sys.argv[2], "other"))
            assert ew.max_step_on_disk(run_dir) == 3, ew.max_step_on_disk(run_dir)
            print("tensorflow imported:", "tensorflow" in sys.modules)
            """
        )
        result = run_python(script, WRITER_FILE, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "tensorflow imported: False" in result.stdout, result.stdout
        assert set(read_back(tmp_path / "train")) == {"a", "h", "i", "t", "x"}


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the TensorFlow backend imports TensorFlow")
class TestFitImportsNoTensorFlow:
    def test_fit_with_gradient_board_imports_no_tensorflow(self, tmp_path):
        # Runs once per backend of the matrix: JAX in the JAX run, PyTorch in
        # the PyTorch run. TensorFlow is installed; it must not be imported.
        script = textwrap.dedent(
            """
            import sys
            import keras, numpy as np
            import keras_gradkit

            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="hidden"), keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
            x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")
            board = keras_gradkit.callbacks.GradientBoard(sys.argv[1], histogram_freq=1)
            model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[board])
            print("tensorflow imported:", "tensorflow" in sys.modules)
            """
        )
        result = run_python(script, tmp_path / "logs", backend=BACKEND)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "tensorflow imported: False" in result.stdout, result.stdout
        # Read back only now, in this process: TensorBoard's reader imports TensorFlow.
        plugins = {
            tag: plugin for tag, (plugin, _, _) in read_back(tmp_path / "logs" / "train").items()
        }
        assert "scalars" in plugins.values(), plugins
        assert any(
            tag.startswith("gradients/") and p == "histograms" for tag, p in plugins.items()
        ), plugins
