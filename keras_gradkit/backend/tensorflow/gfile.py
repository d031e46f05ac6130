"""TensorFlow's file systems, `tf.io.gfile`, for remote paths (private).

Used on every Keras backend, only for a remote `log_dir` (`gs://`, `s3://`,
`hdfs://`): TensorFlow is imported when `file_system()` is called, not when
this module is, so a JAX or PyTorch run with a local `log_dir` never imports
it (`tests/test_event_writer.py` checks).
"""


def file_system():
    """`(open, glob, makedirs, errors)` of `tf.io.gfile`: `open(path, mode)`
    gives a binary file object and `errors` is what a failed read raises.

    Raises:
        ImportError: TensorFlow is not installed.
    """
    import tensorflow as tf

    gfile = tf.io.gfile
    return gfile.GFile, gfile.glob, gfile.makedirs, (tf.errors.OpError, OSError)
