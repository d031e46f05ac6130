"""Export an IndRNN digits classifier to LiteRT (TensorFlow Lite) and check it.

Reads scikit-learn's bundled 8x8 digits (1,797 images, no download) as
sequences of 8 rows of 8 pixels, trains
`IndRNN(return_sequences=True) -> IndRNN -> CosineDense(softmax)` for a few
epochs, exports it with `model.export(path, format="litert")`, runs every
test image through the LiteRT interpreter and prints the test accuracy of
both and the largest absolute difference between their probabilities.

The fast `IndRNN` loop converts to built-in LiteRT ops only with a static
batch size, so the export passes `input_signature` with batch 1 (Keras's
inferred signature has a `None` batch, which gives a model that fails at run
time). The interpreter comes from `ai-edge-litert` when it is installed, else
from TensorFlow (`tf.lite.Interpreter`, deprecated).

    python examples/litert_export.py              # under a minute on 2 cores
    python examples/litert_export.py --epochs 20 --out runs/digits.tflite
"""

import argparse
import contextlib
import io
import os
import re
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_gradkit

ROWS, PIXELS = 8, 8


def build_model(units):
    inputs = keras.Input((ROWS, PIXELS))
    x = keras_gradkit.layers.IndRNN(units, timesteps=ROWS, return_sequences=True)(inputs)
    x = keras_gradkit.layers.IndRNN(units, timesteps=ROWS)(x)
    outputs = keras_gradkit.layers.CosineDense(
        10, use_bias=True, scale=10.0, learn_scale=True, activation="softmax"
    )(x)
    return keras.Model(inputs, outputs)


def make_interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = tf.lite.Interpreter
        print("ai-edge-litert is not installed: using the deprecated tf.lite.Interpreter")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        return Interpreter(model_path=path)


def litert_predict(path, images):
    """One image per call, as on a device (the file's batch size is 1)."""
    interpreter = make_interpreter(path)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    outputs = []
    for image in images:
        interpreter.set_tensor(input_index, image[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(output_index)[0])
    return np.stack(outputs)


def op_names(path):
    """The operators in the file, from TensorFlow's printed analysis."""
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        tf.lite.experimental.Analyzer.analyze(model_path=path)
    return sorted(set(re.findall(r"Op#\d+ (\w+)", text.getvalue())))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=os.path.join("runs", "litert", "digits_indrnn.tflite"))
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=args.seed, stratify=digits.target
    )
    model = build_model(args.units)
    model.compile(
        keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x_train, y_train, batch_size=32, epochs=args.epochs, verbose=0)

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    model.export(
        args.out,
        format="litert",
        input_signature=[keras.InputSpec(shape=(1, ROWS, PIXELS), dtype="float32")],
        verbose=False,
    )
    keras_probs = keras.ops.convert_to_numpy(model.predict(x_test, verbose=0))
    litert_probs = litert_predict(args.out, x_test)

    print(f"file: {args.out} ({os.path.getsize(args.out)} bytes)")
    print(f"ops: {' '.join(op_names(args.out))}")
    print(f"test accuracy, Keras:  {np.mean(keras_probs.argmax(-1) == y_test):.4f}")
    print(f"test accuracy, LiteRT: {np.mean(litert_probs.argmax(-1) == y_test):.4f}")
    print(
        f"max abs difference of the probabilities: {np.abs(litert_probs - keras_probs).max():.3g}"
    )


if __name__ == "__main__":
    main()
