"""TensorBoard event files written and read without TensorFlow (private).

Uses TensorBoard's own pure-Python writer and loader and its plugins' protos,
so that `GradientBoard` works on every Keras backend with only the
`tensorboard` package installed.
"""

import glob
import os
import time

import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.proto import tensor_pb2
from tensorboard.compat.proto import tensor_shape_pb2
from tensorboard.compat.proto import types_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

TIME_GRADIENT_PLUGIN = "keras_gradkit_time_gradient"


def _shape(dims):
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def scalar_values(values):
    """`Summary.Value`s for `{tag: float}`, as `tf.summary.scalar` writes them."""
    plugin = scalar_metadata.create_summary_metadata(display_name=None, description=None)
    return [
        summary_pb2.Summary.Value(
            tag=tag,
            metadata=plugin,
            tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value], tensor_shape=_shape([])),
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
        dtype=types_pb2.DT_FLOAT, tensor_shape=_shape([values.size]), tensor_content=values.tobytes()
    )
    return summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)


class EventWriter:
    """Writes `Summary` events to one run directory; the file is created on
    the first write."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self._writer = None

    def write(self, values, step):
        """One event holding all `values` (a list of `Summary.Value`) at `step`."""
        if not values:
            return
        if self._writer is None:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self._writer = EventFileWriter(self.run_dir)
        summary = summary_pb2.Summary(value=list(values))
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def max_step_on_disk(run_dir):
    """The largest step of the summary events already in `run_dir` (-1 if none)."""
    from tensorboard.backend.event_processing import event_file_loader

    largest = -1
    for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents*"))):
        try:
            for event in event_file_loader.EventFileLoader(path).Load():
                if event.HasField("summary"):
                    largest = max(largest, int(event.step))
        except Exception:  # a truncated file still gives the steps read so far
            continue
    return largest
