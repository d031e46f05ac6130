"""TensorBoard event files, written and read without TensorFlow (private).

A local `log_dir` is written with plain Python files framed by TensorBoard's
own `RecordWriter`, and read back by `_read_events` below, so `GradientBoard`
works on every Keras backend with only the `tensorboard` package and never
imports TensorFlow, even where it is installed. TensorBoard's
`EventFileWriter` and `EventFileLoader` are not used: both go through
`tensorboard.compat.tf`, which imports TensorFlow whenever it can.

A remote `log_dir` (`gs://`, `s3://`, `hdfs://`) needs TensorFlow's file
systems, `tf.io.gfile`; without TensorFlow it is rejected with a `ValueError`.
"""

import functools
import glob
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from google.protobuf import message
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer.record_writer import RecordWriter

TIME_GRADIENT_PLUGIN = "keras_gradkit_time_gradient"
FILE_VERSION = "brain.Event:2"
EVENT_FILE_PREFIX = "events.out.tfevents"

# Two writers in one process and one second still get different files.
_file_ids = itertools.count()


# ------------------------------------------------------------ summary values
def _shape(dims):
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )


def scalar_values(values):
    """`Summary.Value`s for `{tag: float}`, as `tf.summary.scalar` writes them."""
    plugin = scalar_metadata.create_summary_metadata(display_name=None, description=None)
    return [
        summary_pb2.Summary.Value(
            tag=tag,
            metadata=plugin,
            tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, float_val=[value], tensor_shape=_shape([])
            ),
        )
        for tag, value in values.items()
    ]


def histogram_value(tag, data):
    """A histogram `Summary.Value` (TensorBoard's default 30 buckets)."""
    return histogram_summary.histogram_pb(tag, np.asarray(data, dtype="float64")).value[0]


def image_value(tag, png, width, height, description=None):
    """An image `Summary.Value` holding one PNG, as `tf.summary.image` writes it."""
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        string_val=[str(width).encode(), str(height).encode(), png],
        tensor_shape=_shape([3]),
    )
    plugin = image_metadata.create_summary_metadata(display_name=None, description=description)
    return summary_pb2.Summary.Value(tag=tag, metadata=plugin, tensor=tensor)


def tensor_value(tag, values, plugin_name, description):
    """A float32 vector `Summary.Value` under `plugin_name` (raw data)."""
    values = np.asarray(values, dtype="float32").ravel()
    metadata = summary_pb2.SummaryMetadata(summary_description=description)
    metadata.plugin_data.plugin_name = plugin_name
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT,
        tensor_shape=_shape([values.size]),
        tensor_content=values.tobytes(),
    )
    return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


def text_value(tag, markdown):
    """A text `Summary.Value`; TensorBoard's Text dashboard renders it as Markdown."""
    return text_summary.text_pb(tag, markdown).value[0]


# -------------------------------------------------------------- file systems
class _FileSystem(NamedTuple):
    open: Callable  # open(path, mode) -> a binary file object
    glob: Callable
    makedirs: Callable
    errors: tuple  # what a failed read raises


_LOCAL = _FileSystem(open, glob.glob, functools.partial(os.makedirs, exist_ok=True), (OSError,))


def is_remote(path):
    """Whether `path` names a remote file system (`gs://bucket/logs`), which
    only TensorFlow's `tf.io.gfile` can write."""
    return "://" in os.fspath(path)


def _file_system(path):
    path = os.fspath(path)
    if not is_remote(path):
        return _LOCAL
    # Imported here: the writer alone (a local path) imports nothing of keras_gradkit.
    from keras_gradkit.backend.tensorflow import gfile

    try:
        return _FileSystem(*gfile.file_system())
    except ImportError as e:
        scheme = path.split("://", 1)[0] + "://"
        raise ValueError(
            f"Argument `log_dir` is a remote path ({scheme}), which needs TensorFlow's file system "
            f"(`tf.io.gfile`); install tensorflow or use a local directory. Received: log_dir={path!r}"
        ) from e


def makedirs(path):
    """Creates the directory `path` and its parents if missing, locally or
    through `tf.io.gfile` for a remote path (a `ValueError` without TensorFlow)."""
    _file_system(path).makedirs(os.fspath(path))


# ----------------------------------------------------------------- writing
class EventWriter:
    """Writes `Summary` events to one run directory.

    The file is created on the first write and starts with the `file_version`
    event TensorBoard's readers expect. After `close()`, a later write starts
    a new file.
    """

    def __init__(self, run_dir):
        self.run_dir = os.fspath(run_dir)
        self._writer = None

    def write(self, values, step):
        """One event holding all `values` (a list of `Summary.Value`) at `step`."""
        if not values:
            return
        if self._writer is None:
            self._writer = self._open()
        summary = summary_pb2.Summary(value=list(values))
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        self._writer.write(event.SerializeToString())

    def _open(self):
        files = _file_system(self.run_dir)
        files.makedirs(self.run_dir)
        # TensorBoard reads a run's files in name order and drops events whose
        # step goes back: the counter is zero-padded so that name order is
        # creation order within a second too.
        name = f"{EVENT_FILE_PREFIX}.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_ids):06d}"
        writer = RecordWriter(files.open(os.path.join(self.run_dir, name), "ab"))
        writer.write(
            event_pb2.Event(wall_time=time.time(), file_version=FILE_VERSION).SerializeToString()
        )
        return writer

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


# ----------------------------------------------------------------- reading
def _read_events(file):
    """The `Event`s of one event file, up to the first truncated or damaged
    record (a writer killed mid-record, or one still writing).

    A record is `uint64 length, uint32 masked_crc32c(length), data, uint32
    masked_crc32c(data)`, little-endian. The data checksum is not verified:
    TensorBoard's CRC is pure Python, slow on large histogram files; the
    length checksum, the length itself and the proto parse catch a cut or
    zero-filled tail.
    """
    while True:
        header = file.read(12)
        if len(header) < 12 or struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8]):
            return
        (length,) = struct.unpack("<Q", header[:8])
        body = file.read(length + 4)
        if len(body) < length + 4:
            return
        try:
            yield event_pb2.Event.FromString(body[:length])
        except message.DecodeError:
            return


def max_step_on_disk(run_dir):
    """The largest step of the summary events already in `run_dir` (-1 if none)."""
    run_dir = os.fspath(run_dir)
    files = _file_system(run_dir)
    largest = -1
    for path in sorted(files.glob(os.path.join(run_dir, f"{EVENT_FILE_PREFIX}*"))):
        try:
            with files.open(path, "rb") as f:
                for event in _read_events(f):
                    if event.HasField("summary"):
                        largest = max(largest, int(event.step))
        except files.errors:  # unreadable: the other files still count
            continue
    return largest
