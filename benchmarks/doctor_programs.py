"""The evaluation set of the gradient doctor (issue 32): small buggy Keras
programs, each with its fix, and healthy ones.

Each pair is one function: its docstring is the question a user would post
about the buggy version, and `fixed` switches on the one change that cures
it. A healthy program is a correct model as users write it. The data are
available offline: scikit-learn's bundled sets (`load_digits`, `load_iris`,
`load_wine`, `load_breast_cancer`, `load_diabetes`), its generators
(`make_classification`, `make_regression`, `make_moons`), the adding problem
and a random walk, all drawn with fixed seeds.

`PROGRAMS` is the registry, metadata only (`Spec`): building a program
(`Spec.build()`) seeds Keras, makes the compiled model and its data and
returns a `Program`; importing this module makes no model, variable or
tensor. `benchmarks/doctor_eval.py` runs them.

The kinds a bug program counts as correctly diagnosed (`Spec.category`) are
those that name its cause or its direct consequence; `Spec.fix_keywords` are
strings of which one, in the advice of a finding on the buggy version,
names the fix (matched without regard to case).
"""

import inspect
from typing import NamedTuple

import keras
import numpy as np

SEED = 0
# Samples of each data set (a few hundred: a fit takes seconds on 2 cores).
SAMPLES = 320


class Program(NamedTuple):
    """A built program: a compiled model and what to train it on."""

    model: keras.Model
    x: object  # the inputs (arrays)
    y: object  # the targets
    fit: dict  # the arguments of `model.fit` (`epochs`, `batch_size`)
    time_probe: bool = False  # a recurrent model: GradientBoard probes a batch through time


class Spec(NamedTuple):
    """A program of the set, before it is built.

    Attributes:
        name: str, unique: `"<pair>/bug"`, `"<pair>/fixed"`, or the healthy
            program's name.
        pair: str, the pair's name (a healthy program's own name).
        kind: `"bug"`, `"fixed"` or `"healthy"`.
        category: tuple of the kinds of finding that count as the right
            diagnosis (of the pair, on both its programs; empty for healthy).
        fix_keywords: tuple of str: one of them in a finding's advice on the
            buggy program names the fix (empty for healthy).
        question: str, the user's question (the builder's docstring).
        builder: the function that builds it: `builder(fixed)` for a pair,
            `builder()` for a healthy program.
    """

    name: str
    pair: str
    kind: str
    category: tuple
    fix_keywords: tuple
    question: str
    builder: object

    def build(self):
        """The `Program`, after seeding Keras (and NumPy, Python) with `SEED`."""
        keras.utils.set_random_seed(SEED)
        if self.kind == "healthy":
            return self.builder()
        return self.builder(self.kind == "fixed")


PROGRAMS = []


def _pair(category, fix_keywords):
    """Registers a bug/fix pair: `builder(fixed)`, named after the function."""

    def register(builder):
        question = inspect.cleandoc(builder.__doc__)
        for kind in ("bug", "fixed"):
            PROGRAMS.append(
                Spec(
                    f"{builder.__name__}/{kind}",
                    builder.__name__,
                    kind,
                    tuple(category),
                    tuple(fix_keywords),
                    question,
                    builder,
                )
            )
        return builder

    return register


def _healthy(builder):
    """Registers a healthy program, named after the function."""
    question = inspect.cleandoc(builder.__doc__)
    PROGRAMS.append(Spec(builder.__name__, builder.__name__, "healthy", (), (), question, builder))
    return builder


# ------------------------------------------------------------------ data
def _subsample(x, y, n=SAMPLES):
    """At most `n` samples, drawn with a fixed seed; float32 features."""
    index = np.random.default_rng(SEED).permutation(len(x))[:n]
    return np.asarray(x[index], "float32"), np.asarray(y[index])


def _standardized(a):
    """Each column to mean 0 and standard deviation 1 (what StandardScaler does)."""
    a = np.asarray(a, "float32")
    return ((a - a.mean(axis=0)) / (a.std(axis=0) + 1e-7)).astype("float32")


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return _subsample(data.data, data.target)  # pixels 0..16, labels 0..9


def _breast_cancer():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return _subsample(data.data, data.target.astype("float32"))  # 30 raw measurements


def _wine():
    from sklearn.datasets import load_wine

    data = load_wine()
    return _subsample(data.data, data.target)  # 178 samples, 13 raw features, labels 0..2


def _iris():
    from sklearn.datasets import load_iris

    data = load_iris()
    return _subsample(data.data, data.target)


def _diabetes():
    from sklearn.datasets import load_diabetes

    data = load_diabetes()  # features already centered and scaled; targets 25..346
    return _subsample(data.data, data.target.astype("float32"))


def _regression(features=10):
    from sklearn.datasets import make_regression

    x, y = make_regression(
        n_samples=SAMPLES, n_features=features, n_informative=6, noise=5.0, random_state=SEED
    )
    return x.astype("float32"), (y / y.std()).astype("float32")  # targets of scale 1


def _classification(features=12):
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=SAMPLES, n_features=features, n_informative=6, random_state=SEED
    )
    return x.astype("float32"), y.astype("float32")


def _moons():
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=SAMPLES, noise=0.2, random_state=SEED)
    return x.astype("float32"), y.astype("float32")


def _adding(n, timesteps):
    """The adding problem: `(n, T, 2)` of a uniform value and a marker (two
    marked steps, one in each half); the target is the sum of the marked values."""
    rng = np.random.default_rng(SEED)
    values = rng.uniform(size=(n, timesteps))
    markers = np.zeros((n, timesteps))
    rows = np.arange(n)
    markers[rows, rng.integers(0, timesteps // 2, n)] = 1.0
    markers[rows, rng.integers(timesteps // 2, timesteps, n)] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values * markers).sum(axis=1, keepdims=True).astype("float32")
    return x, y


def _prices(n=SAMPLES, window=20):
    """Windows of a random-walk price around 1,500 and the next price."""
    rng = np.random.default_rng(SEED)
    series = 1500.0 + np.cumsum(rng.normal(0.0, 8.0, size=n + window))
    x = np.stack([series[i : i + window] for i in range(n)])[..., None].astype("float32")
    y = series[window : n + window, None].astype("float32")
    return x, y


def _normalization(x):
    layer = keras.layers.Normalization()
    layer.adapt(x)
    return layer


def _fit(epochs=4, batch_size=32):
    return {"epochs": epochs, "batch_size": batch_size}


def _mlp(inputs, hidden, outputs, activation="relu", output_activation=None, **dense):
    """A Sequential MLP with `activation=` inline."""
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(units, activation=activation, **dense) for units in hidden]
    layers.append(keras.layers.Dense(outputs, activation=output_activation))
    return keras.Sequential(layers)


# ------------------------------------------------------ unscaled data
@_pair(["unscaled_inputs"], ["Normalization", "standardiz", "StandardScaler"])
def breast_cancer_raw_features(fixed):
    """Binary classifier on the breast cancer data stuck at 63% accuracy.

    I load `load_breast_cancer()`, feed the 30 columns straight into a small
    Dense network with a sigmoid output and binary cross-entropy, Adam with
    the default learning rate. Accuracy stays at the share of the majority
    class and the loss jumps around. What am I doing wrong?
    """
    x, y = _breast_cancer()
    layers = [keras.Input((30,))]
    if fixed:
        layers.append(_normalization(x))
    layers += [
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1, activation="sigmoid"),
    ]
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(["unscaled_inputs"], ["Normalization", "standardiz", "StandardScaler"])
def wine_raw_features(fixed):
    """Wine classification: loss is nan after the first epoch.

    Three-class wine data from scikit-learn, the usual Keras 2 style model
    (Dense, Activation('relu'), ..., Activation('softmax')), SGD with lr=0.01
    and sparse categorical cross-entropy. The loss is huge at first and then
    nan. Is SGD broken?
    """
    x, y = _wine()
    if fixed:
        x = _standardized(x)  # sklearn.preprocessing.StandardScaler().fit_transform(x)
    model = keras.Sequential(
        [
            keras.Input((13,)),
            keras.layers.Dense(32),
            keras.layers.Activation("relu"),
            keras.layers.Dense(32),
            keras.layers.Activation("relu"),
            keras.layers.Dense(3),
            keras.layers.Activation("softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_pair(["unscaled_inputs"], ["Rescaling", "Normalization", "divide", "standardiz"])
def digits_sensor_scale(fixed):
    """Digit images from a 12-bit sensor: accuracy 10%, nothing learns.

    My 8x8 digit images come as raw sensor counts, 0 to 16,000 (I simulate
    them with `load_digits().data * 1000`). A functional model, two ReLU
    layers and softmax, Adam. The loss explodes to hundreds, then accuracy
    stays at chance. The same network on the 0-16 scikit-learn data works.
    """
    x, y = _digits()
    x = x * 1000.0
    inputs = keras.Input((64,))
    h = keras.layers.Rescaling(1.0 / 16000.0)(inputs) if fixed else inputs
    h = keras.layers.Dense(64, activation="relu")(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    outputs = keras.layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(["unscaled_inputs"], ["target", "StandardScaler", "standardiz"])
def regression_targets_in_dollars(fixed):
    """Regression MSE in the billions and it barely moves.

    I predict prices in dollars (tens of thousands; here `make_regression`
    targets times 10,000) from standardized features. Dense(64, relu),
    Dense(64, relu), Dense(1), Adam, MSE. After 100 epochs the loss is still
    about 1e8 and the predictions are close to zero. Do I need more epochs?
    """
    x, y = _regression()
    y = y * 10000.0
    if fixed:
        y = y / 10000.0  # StandardScaler on the targets; invert it on the predictions
    model = _mlp(10, [64, 64], 1)
    model.compile(optimizer="adam", loss="mse")
    return Program(model, x, y[:, None], _fit())


@_pair(["unscaled_inputs"], ["target", "StandardScaler", "standardiz"])
def diabetes_raw_targets(fixed):
    """Diabetes regression: MSE stuck around 5000 with RMSprop.

    `load_diabetes()` features are already scaled, so I use them as they are
    and predict the disease progression (25 to 346) with a small network
    and RMSprop(1e-3). The loss goes down painfully slowly and the
    predictions stay near zero for many epochs.
    """
    x, y = _diabetes()
    if fixed:
        y = _standardized(y)
    model = _mlp(10, [32, 32], 1)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="mse")
    return Program(model, x, y[:, None], _fit())


@_pair(["unscaled_inputs", "saturated_units"], ["Normalization", "standardiz", "scale"])
def lstm_raw_prices(fixed):
    """LSTM stock predictor outputs a flat line.

    Windows of 20 daily closing prices (around 1,500) into LSTM(32) and
    Dense(1), predicting the next close. Adam, MSE. The model predicts the
    same small number for every window and the loss is enormous. I tried
    more units and more epochs.
    """
    x, y = _prices()
    if fixed:
        mean, std = float(x.mean()), float(x.std())
        x, y = (x - mean) / std, (y - mean) / std
    model = keras.Sequential([keras.Input((20, 1)), keras.layers.LSTM(32), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    return Program(model, x, y, _fit(epochs=3), time_probe=True)


# ------------------------------------------------ output and loss disagree
_CONSTANT = ["output_loss_mismatch", "zero_gradient", "unchanged_weights", "loss_not_decreasing"]


@_pair(_CONSTANT, ["sigmoid"])
def softmax_one_unit_binary(fixed):
    """The loss goes down but accuracy stays at 63% and predict() gives 1.0.

    Binary classification on the (normalized) breast cancer data with
    `Dense(1, activation='softmax')` and binary cross-entropy. Every
    prediction is exactly 1.0, whatever learning rate I try.
    """
    x, y = _breast_cancer()
    model = keras.Sequential(
        [
            keras.Input((30,)),
            _normalization(x),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid" if fixed else "softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(_CONSTANT, ["linear", "activation=None", "no activation", "remove"])
def softmax_one_unit_regression(fixed):
    """Every prediction is 1.0 and the loss never changes.

    Regression on the diabetes data (targets standardized), written in the
    Keras 2 style: Dense(32), Activation('relu'), Dense(1),
    Activation('softmax'); SGD and MSE. All predictions are exactly 1.0.
    """
    x, y = _diabetes()
    y = _standardized(y)
    layers = [
        keras.Input((10,)),
        keras.layers.Dense(32),
        keras.layers.Activation("relu"),
        keras.layers.Dense(1),
    ]
    if not fixed:
        layers.append(keras.layers.Activation("softmax"))
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    return Program(model, x, y[:, None], _fit())


@_pair(["output_loss_mismatch"], ["from_logits"])
def sigmoid_into_from_logits(fixed):
    """make_moons classifier plateaus at 0.55 loss with a sigmoid output.

    I read that from_logits=True is numerically more stable, so I compile
    with `BinaryCrossentropy(from_logits=True)`; the last layer is
    `Dense(1, activation='sigmoid')`. It learns something but much worse than
    the sklearn MLP on the same data.
    """
    x, y = _moons()
    model = _mlp(2, [32, 32], 1, output_activation="sigmoid")
    model.compile(
        optimizer="adam",
        loss=keras.losses.BinaryCrossentropy(from_logits=not fixed),
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_pair(["output_loss_mismatch"], ["from_logits"])
def softmax_into_from_logits(fixed):
    """Iris: loss decreases very slowly with softmax output.

    Iris with a Normalization layer, Dense(16, relu), Dense(3, softmax) and
    `SparseCategoricalCrossentropy(from_logits=True)`, Adam(1e-2). Accuracy
    gets somewhere, but the loss stays above 0.6 where others report 0.1.
    """
    x, y = _iris()
    model = keras.Sequential(
        [
            keras.Input((4,)),
            _normalization(x),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not fixed),
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_pair(
    ["output_loss_mismatch", "non_finite_gradient", "non_finite_forward", "zero_gradient"],
    ["softmax", "from_logits"],
)
def linear_into_categorical_crossentropy(fixed):
    """Digits: categorical cross-entropy gives nan or a negative loss.

    One-hot labels (`to_categorical`), a functional model ending in
    `Dense(10)`, `loss='categorical_crossentropy'`. The loss sometimes goes
    negative, then nan. I thought categorical cross-entropy was always
    positive.
    """
    x, y = _digits()
    x = x / 16.0
    y = keras.utils.to_categorical(y, 10)
    inputs = keras.Input((64,))
    h = keras.layers.Dense(64, activation="relu")(inputs)
    outputs = keras.layers.Dense(10, activation="softmax" if fixed else None)(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(["output_loss_mismatch", "zero_gradient"], ["sigmoid", "from_logits"])
def linear_into_binary_crossentropy(fixed):
    """Binary cross-entropy loss is 7.7 and stuck.

    Breast cancer, normalized, Dense(16, relu) then Dense(1), compiled with
    `loss='binary_crossentropy'`. The loss starts around 5-8 and hardly
    changes; many predictions are negative or above 1.
    """
    x, y = _breast_cancer()
    model = keras.Sequential(
        [
            keras.Input((30,)),
            _normalization(x),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid" if fixed else None),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


_LABEL_RANGE = ["y - 1", "subtract 1", "start at 0", "from 0", "[0, 3)"]


@_pair(["output_loss_mismatch", "non_finite_gradient", "non_finite_forward"], _LABEL_RANGE)
def labels_start_at_one(fixed):
    """Received a label value of 3 which is outside the valid range of [0, 3).

    My wine CSV has the classes as 1, 2, 3 (as in the UCI file). Three output
    units with softmax and sparse categorical cross-entropy. TensorFlow
    raises this error, on another machine the loss is nan.
    """
    x, y = _wine()
    x = _standardized(x)
    y = y + 1  # the classes as the UCI file numbers them
    if fixed:
        y = y - 1
    model = _mlp(13, [32], 3, output_activation="softmax")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(
    ["output_loss_mismatch"],
    [
        "sparse_categorical_crossentropy",
        "SparseCategoricalCrossentropy",
        "to_categorical",
        "one-hot",
    ],
)
def class_indices_into_categorical(fixed):
    """Arguments `target` and `output` must have the same shape.

    Iris, labels 0, 1, 2 in one column, three softmax outputs,
    `loss='categorical_crossentropy'` (it is a categorical problem, isn't
    it?). Keras raises about shapes (1 vs 3).
    """
    x, y = _iris()
    model = keras.Sequential(
        [
            keras.Input((4,)),
            _normalization(x),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    loss = "sparse_categorical_crossentropy" if fixed else "categorical_crossentropy"
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return Program(model, x, y[:, None], _fit())


_BINARY_LABELS = ["0 and 1", "{0, 1}", "(y + 1) / 2", "y - 1"]


@_pair(["output_loss_mismatch"], _BINARY_LABELS)
def binary_labels_minus_one(fixed):
    """Binary cross-entropy goes negative with labels -1/+1.

    My labels come from an SVM pipeline as -1 and +1. Sigmoid output and
    binary cross-entropy. The loss becomes negative and keeps decreasing
    forever while accuracy is 0.
    """
    x, y = _classification()
    y = 2.0 * y - 1.0  # labels -1, +1
    if fixed:
        y = (y + 1.0) / 2.0
    model = _mlp(12, [32], 1, output_activation="sigmoid")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return Program(model, x, y, _fit())


@_pair(["output_loss_mismatch"], _BINARY_LABELS)
def binary_labels_one_two(fixed):
    """Logits and from_logits=True, but the loss decreases without end.

    Two moons, labels stored as 1 and 2 in my CSV. Keras 2 style model:
    Dense(32), Activation('tanh'), Dense(1), and
    `BinaryCrossentropy(from_logits=True)`. The loss goes below zero.
    """
    x, y = _moons()
    y = y + 1.0
    if fixed:
        y = y - 1.0
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(32),
            keras.layers.Activation("tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer="adam", loss=keras.losses.BinaryCrossentropy(from_logits=True))
    return Program(model, x, y, _fit())


@_pair(["output_loss_mismatch"], ["sigmoid", "linear", "/ 100", "rescale", "scale the target"])
def sigmoid_output_for_percentages(fixed):
    """Predicting a percentage: every prediction is 1.0.

    The target is a percentage between 0 and 100, so I bound the output with
    a sigmoid: Dense(1, activation='sigmoid'), MSE. All predictions go to
    1.0 and the loss stays around 2,500.
    """
    x, y = _regression()
    y = 50.0 + 15.0 * y  # percentages
    if fixed:
        y = y / 100.0  # a fraction, in the sigmoid's range
    model = _mlp(10, [32, 32], 1, output_activation="sigmoid")
    model.compile(optimizer="adam", loss="mse")
    return Program(model, x, y[:, None], _fit())


@_pair(["output_loss_mismatch", "dead_units"], ["linear", "activation=None", "no activation"])
def relu_output_negative_targets(fixed):
    """Regression predicts 0 for half the samples.

    Standardized diabetes targets (mean 0) and an output layer
    `Dense(1, activation='relu')` because ReLU is the best activation. Half
    of the predictions are exactly 0 and the MSE does not go below 0.5.
    """
    x, y = _diabetes()
    y = _standardized(y)
    model = _mlp(10, [32, 32], 1, output_activation=None if fixed else "relu")
    model.compile(optimizer="adam", loss="mse")
    return Program(model, x, y[:, None], _fit())


# ------------------------------------------------- dead and saturated units
@_pair(["dead_units", "zero_gradient"], ["bias", "initializ"])
def dead_relu_negative_bias(fixed):
    """All outputs identical; the first layer's gradients are exactly zero.

    I initialize the biases of my ReLU layer at -10 (I read negative biases
    make the representation sparse). Functional model on normalized iris.
    The loss never changes and the first Dense layer's weights are all
    unchanged after training.
    """
    x, y = _iris()
    x = _standardized(x)
    bias = "zeros" if fixed else keras.initializers.Constant(-10.0)
    inputs = keras.Input((4,))
    h = keras.layers.Dense(32, activation="relu", bias_initializer=bias)(inputs)
    h = keras.layers.Dense(16, activation="relu")(h)
    outputs = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(
    ["dead_units", "large_updates", "zero_gradient", "loss_not_decreasing", "non_finite_gradient"],
    ["learning rate", "learning_rate"],
)
def dead_relu_learning_rate_10(fixed):
    """Digits MLP: loss stuck at 2.30 after the first epoch.

    SGD with learning_rate=10 to make training fast, ReLU hidden layers,
    pixels scaled to 0-1. After a few batches the loss is 2.30 (chance) and
    never moves again; the hidden activations are all zero.
    """
    x, y = _digits()
    x = x / 16.0
    model = _mlp(64, [64, 64], 10, output_activation="softmax")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1 if fixed else 10.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_pair(
    ["saturated_units", "vanishing_across_depth"], ["initializ", "glorot", "he_normal", "He init"]
)
def saturated_tanh_large_init(fixed):
    """tanh network: training does nothing and activations are all +-1.

    Wine (standardized), three Dense(64, activation='tanh') layers with
    `kernel_initializer=RandomNormal(stddev=5)` because the default weights
    seemed too small to me. Accuracy stays at 40%.
    """
    x, y = _wine()
    x = _standardized(x)
    init = "glorot_uniform" if fixed else keras.initializers.RandomNormal(stddev=5.0)
    model = _mlp(13, [64, 64, 64], 3, "tanh", "softmax", kernel_initializer=init)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(
    ["saturated_units", "vanishing_across_depth"], ["initializ", "glorot", "he_normal", "He init"]
)
def saturated_sigmoid_large_init(fixed):
    """Sigmoid activations are all exactly 0 or 1.

    Keras 2 style MLP on digits (0-1 pixels): Dense(64,
    kernel_initializer=RandomNormal(stddev=5)), Activation('sigmoid'), twice,
    then softmax; Adam(1e-2). The loss decreases for a few batches, then
    stalls far above what logistic regression gets.
    """
    x, y = _digits()
    x = x / 16.0
    init = "glorot_uniform" if fixed else keras.initializers.RandomNormal(stddev=5.0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, kernel_initializer=init),
            keras.layers.Activation("sigmoid"),
            keras.layers.Dense(64, kernel_initializer=init),
            keras.layers.Activation("sigmoid"),
            keras.layers.Dense(10),
            keras.layers.Activation("softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    return Program(model, x, y, _fit())


# ------------------------------------------------- across depth and time
@_pair(["vanishing_across_depth", "saturated_units"], ["ReLU", "residual"])
def deep_sigmoid_mlp(fixed):
    """Deeper is worse: my 20-layer network stays at 10% accuracy.

    Digits, 20 Dense(64, activation='sigmoid') layers because deeper
    networks should be better. A 2-layer version reaches 95%, the 20-layer
    one does not learn at all.
    """
    x, y = _digits()
    x = x / 16.0
    if fixed:
        model = _mlp(64, [64] * 19, 10, "relu", "softmax", kernel_initializer="he_normal")
    else:
        model = _mlp(64, [64] * 19, 10, "sigmoid", "softmax")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit(epochs=3))


@_pair(
    ["exploding_across_depth", "non_finite_gradient", "non_finite_forward", "large_updates"],
    ["he_normal", "He init", "initializ"],
)
def randn_init_deep_relu(fixed):
    """Loss is inf from the first batch in a 10-layer ReLU network.

    I initialize the weights as I learned in my numpy course,
    `RandomNormal(stddev=1.0)`, in 10 ReLU layers of 64 units on make_regression
    data. The first loss printed is 1e20 or inf, then nan.
    """
    x, y = _regression()
    x = _standardized(x)
    init = "he_normal" if fixed else keras.initializers.RandomNormal(stddev=1.0)
    model = _mlp(10, [64] * 10, 1, kernel_initializer=init)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    return Program(model, x, y[:, None], _fit(epochs=3))


@_pair(["vanishing_through_time"], ["IndRNN", "chrono"])
def lstm_adding_problem_300(fixed):
    """LSTM cannot solve the adding problem at length 300.

    Sequences of 300 steps of (value, marker), target the sum of the two
    marked values. LSTM(16) and Dense(1) gets stuck at the variance of the
    target (MSE 0.17), it works at length 30.
    """
    import keras_gradkit as gk

    x, y = _adding(128, 300)
    recurrent = gk.layers.LSTM(16, chrono_timesteps=300) if fixed else keras.layers.LSTM(16)
    model = keras.Sequential([keras.Input((300, 2)), recurrent, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    return Program(model, x, y, _fit(epochs=2), time_probe=True)


@_pair(
    [
        "exploding_through_time",
        "non_finite_gradient",
        "non_finite_forward",
        "large_updates",
        "exploding_across_depth",
    ],
    ["identity", "orthogonal", "IndRNN", "initializ"],
)
def relu_rnn_randn_recurrent(fixed):
    """SimpleRNN with relu: loss becomes nan in the first epoch.

    Adding problem of length 50, `SimpleRNN(32, activation='relu',
    recurrent_initializer=RandomNormal(stddev=1.0))`, Adam. The loss is
    astronomically high and then nan. With tanh it runs but learns nothing.
    """
    x, y = _adding(SAMPLES, 50)
    # The fix: the IRNN's identity recurrent weights (Le et al., 2015).
    init = "identity" if fixed else keras.initializers.RandomNormal(stddev=1.0)
    model = keras.Sequential(
        [
            keras.Input((50, 2)),
            keras.layers.SimpleRNN(32, activation="relu", recurrent_initializer=init),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return Program(model, x, y, _fit(epochs=3), time_probe=True)


# ------------------------------------------------- non-finite values
@_pair(["non_finite_forward", "non_finite_gradient"], ["relu", "exponential"])
def exponential_activations(fixed):
    """nan loss from the very first batch with exponential activations.

    Poisson-style regression: I want positive activations everywhere, so all
    four hidden layers use `activation='exponential'`. The first printed loss
    is nan. Normalized inputs, Adam, MSE.
    """
    x, y = _regression()
    x = _standardized(x)
    y = np.exp(y).astype("float32")  # a positive target
    model = _mlp(10, [64] * 4, 1, "relu" if fixed else "exponential")
    model.compile(optimizer="adam", loss="mse")
    return Program(model, x, y[:, None], _fit(epochs=3))


@_pair(
    ["non_finite_gradient", "large_updates", "non_finite_forward", "skipped_steps"],
    ["learning rate", "learning_rate"],
)
def sgd_learning_rate_100(fixed):
    """Iris: loss is nan after two batches with SGD.

    Iris, standardized, Dense(16, relu), Dense(3, softmax). I use
    `SGD(learning_rate=100)` since my professor said plain SGD needs a large
    step. After a couple of batches: nan.
    """
    x, y = _iris()
    x = _standardized(x)
    model = _mlp(4, [16], 3, output_activation="softmax")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1 if fixed else 100.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_pair(
    ["large_updates", "dead_units", "loss_not_decreasing", "non_finite_gradient"],
    ["learning rate", "learning_rate"],
)
def adam_learning_rate_10(fixed):
    """Adam(10): my classifier's accuracy falls to chance after one epoch.

    Digits, pixels to 0-1, a small ReLU MLP. I set Adam's learning rate to 10
    to speed things up; the loss jumps to thousands and then stays at 2.30.
    """
    x, y = _digits()
    x = x / 16.0
    model = _mlp(64, [64, 64], 10, output_activation="softmax")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3 if fixed else 10.0),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_pair(["large_updates", "non_finite_gradient"], ["learning rate", "learning_rate"])
def rmsprop_learning_rate_1(fixed):
    """Regression with RMSprop(1.0) oscillates wildly.

    Standardized make_regression data, a Dense(64, relu) x 2 network, RMSprop
    with learning_rate=1.0. The loss jumps between 1 and 1e6 from batch to
    batch.
    """
    x, y = _regression()
    x = _standardized(x)
    model = _mlp(10, [64, 64], 1)
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3 if fixed else 1.0), loss="mse")
    return Program(model, x, y[:, None], _fit())


_NON_FINITE_DATA = ["NaN", "isfinite", "isnan", "clean", "impute", "missing"]


@_pair(["non_finite_gradient", "non_finite_forward", "skipped_steps"], _NON_FINITE_DATA)
def nan_in_features(fixed):
    """My loss stays at 0.69 and accuracy at 63%, whatever I change.

    Breast cancer measurements (standardized) where some sensors failed and
    left empty cells, read as NaN by pandas. A standard ReLU classifier with
    a sigmoid output. The loss hardly moves from 0.69 and every prediction is
    the same.
    """
    x, y = _breast_cancer()
    x = _standardized(x)
    missing = np.random.default_rng(1).uniform(size=x.shape) < 0.02
    x[missing] = 0.0 if fixed else np.nan  # fixed: impute the column mean (0 here)
    model = _mlp(30, [32, 16], 1, output_activation="sigmoid")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(["non_finite_gradient", "non_finite_forward", "skipped_steps"], _NON_FINITE_DATA)
def nan_in_targets(fixed):
    """Regression: loss nan, although my inputs are all finite.

    Diabetes data; the target column has a few missing values (NaN) that I
    did not notice since I only checked X. Standardized targets, MSE, Adam.
    """
    x, y = _diabetes()
    y = _standardized(y)
    missing = np.random.default_rng(1).uniform(size=y.shape) < 0.05
    if fixed:
        x, y = x[~missing], y[~missing]  # drop the rows without a target
    else:
        y[missing] = np.nan
    model = _mlp(10, [32, 32], 1)
    model.compile(optimizer="adam", loss="mse")
    return Program(model, x, y[:, None], _fit())


@_pair(["skipped_steps", "non_finite_gradient", "non_finite_forward"], _NON_FINITE_DATA)
def clipped_optimizer_skips_nan_batches(fixed):
    """With a ClippedOptimizer my weights never change.

    Wine data, standardized, with a few rows where a measurement is missing
    (NaN). I wrapped Adam in `keras_gradkit.optimizers.ClippedOptimizer` with
    `AutoClip`, so the nan loss does not blow the weights up, but now the
    model learns much slower than my colleague's.
    """
    import keras_gradkit as gk

    x, y = _wine()
    x = _standardized(x)
    rows = np.random.default_rng(1).permutation(len(x))[:20]
    x[rows, 12] = 0.0 if fixed else np.nan  # fixed: impute the column mean
    optimizer = gk.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(1e-3), gk.clipping.AutoClip(percentile=10.0)
    )
    model = _mlp(13, [32], 3, output_activation="softmax")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return Program(model, x, y, _fit())


# ------------------------------------------------- nothing changes
@_pair(["unchanged_weights", "loss_not_decreasing"], ["learning rate", "learning_rate"])
def learning_rate_zero_from_config(fixed):
    """Weights identical after training; no error.

    My training script reads its settings from a config dict,
    `SGD(learning_rate=config.get("learning_rate", 0.0))`. Training runs,
    the loss is the same every epoch and the weights are bit-for-bit
    identical to the initial ones.
    """
    x, y = _moons()
    config = {"learning_rate" if fixed else "lr": 0.05}  # the key the user wrote
    model = _mlp(2, [32, 32], 1, output_activation="sigmoid")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=config.get("learning_rate", 0.0)),
        loss="binary_crossentropy",
    )
    return Program(model, x, y, _fit())


@_pair(["unchanged_weights", "loss_not_decreasing", "zero_gradient"], ["trainable"])
def froze_everything(fixed):
    """Transfer-learning style freeze: the loss does not change at all.

    I have a feature block and a new head. I meant to freeze the feature
    block, but I wrote `for layer in model.layers: layer.trainable = False`
    after adding the head. Fit runs and nothing changes.
    """
    x, y = _digits()
    x = x / 16.0
    model = _mlp(64, [64, 32], 10, output_activation="softmax")
    for layer in model.layers[:-1] if fixed else model.layers:
        layer.trainable = False
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_pair(["loss_not_decreasing"], ["learning rate", "learning_rate"])
def learning_rate_too_small(fixed):
    """Loss stays at 2.30 on digits for all epochs.

    SGD(learning_rate=1e-6) because I was told a small learning rate is
    safer. Two ReLU layers on digits scaled to 0-1. The loss moves in the
    fifth digit only.
    """
    x, y = _digits()
    x = x / 16.0
    model = _mlp(64, [64, 64], 10, output_activation="softmax")
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.1 if fixed else 1e-6),
        loss="sparse_categorical_crossentropy",
    )
    return Program(model, x, y, _fit())


class _TwoLayerNet(keras.Model):
    """A subclassed MLP; `typo=True` reproduces the user's `call`."""

    def __init__(self, typo, **kwargs):
        super().__init__(**kwargs)
        self.typo = typo
        self.hidden1 = keras.layers.Dense(64, activation="relu")
        self.hidden2 = keras.layers.Dense(64, activation="relu")
        self.out = keras.layers.Dense(1, activation="sigmoid")

    def call(self, inputs):
        h1 = self.hidden1(inputs)
        h2 = self.hidden2(h1)
        return self.out(h1 if self.typo else h2)


@_pair(["zero_gradient"], ["connect", "not used", "unused", "reach", "call"])
def unused_layer_in_call(fixed):
    """ "Gradients do not exist for variables" warning in my subclassed model.

    A two-hidden-layer subclassed model on make_classification data. Keras
    warns that gradients do not exist for `hidden2`'s kernel and bias, and
    the model is no better than with one layer.
    """
    x, y = _classification()
    model = _TwoLayerNet(typo=not fixed, name="two_layer_net")
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model(x[:1])  # build
    return Program(model, x, y, _fit())


@_pair(["frequent_clipping", "loss_not_decreasing"], ["threshold", "max_norm", "AutoClip"])
def clip_threshold_too_small(fixed):
    """Gradient clipping makes my model learn nothing.

    To be safe I clip the global norm at 0.001:
    `ClippedOptimizer(SGD(0.1), ClipByGlobalNorm(1e-3))`. The loss on digits
    barely changes over the epochs.
    """
    import keras_gradkit as gk

    x, y = _digits()
    x = x / 16.0
    optimizer = gk.optimizers.ClippedOptimizer(
        keras.optimizers.SGD(0.1), gk.clipping.ClipByGlobalNorm(100.0 if fixed else 1e-3)
    )
    model = _mlp(64, [64, 64], 10, output_activation="softmax")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return Program(model, x, y, _fit())


@_pair(["frequent_clipping", "loss_not_decreasing"], ["threshold", "global_clipnorm", "clipnorm"])
def global_clipnorm_typo(fixed):
    """Training is extremely slow with global_clipnorm.

    `SGD(learning_rate=0.05, global_clipnorm=0.0005)`: I copied the values
    from a paper (I think the 0.0005 was the weight decay). Iris barely
    learns in 4 epochs.
    """
    x, y = _iris()
    x = _standardized(x)
    model = _mlp(4, [32, 32], 3, output_activation="softmax")
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, global_clipnorm=50.0 if fixed else 5e-4),
        loss="sparse_categorical_crossentropy",
    )
    return Program(model, x, y, _fit(batch_size=16))


# ------------------------------------------------------------- healthy
@_healthy
def digits_mlp():
    """Digits, pixels scaled to 0-1, Dense(64, relu), Dense(32, relu), softmax, Adam."""
    x, y = _digits()
    model = _mlp(64, [64, 32], 10, output_activation="softmax")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x / 16.0, y, _fit())


@_healthy
def iris_normalized():
    """Iris through a Normalization layer, Dense(16, relu), softmax, Adam(1e-2)."""
    x, y = _iris()
    model = keras.Sequential(
        [
            keras.Input((4,)),
            _normalization(x),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_healthy
def breast_cancer_normalized():
    """Breast cancer through a Normalization layer, functional API, sigmoid output."""
    x, y = _breast_cancer()
    inputs = keras.Input((30,))
    h = _normalization(x)(inputs)
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dropout(0.2)(h)
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_healthy
def diabetes_scaled():
    """Diabetes regression with standardized targets, Dense(32, relu) x 2, Adam, MSE."""
    x, y = _diabetes()
    model = _mlp(10, [32, 32], 1)
    model.compile(optimizer="adam", loss="mse")
    return Program(model, x, _standardized(y)[:, None], _fit())


@_healthy
def indrnn_adding_problem():
    """IndRNN with the long-memory recurrent initialization on the adding problem, T = 100."""
    import keras_gradkit as gk

    steps = 100
    init = keras.initializers.RandomUniform(2 ** (-1 / steps), 2 ** (1 / steps))
    model = keras.Sequential(
        [
            keras.Input((steps, 2)),
            gk.layers.IndRNN(32, recurrent_initializer=init),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(2e-4), loss="mse")
    x, y = _adding(128, steps)
    return Program(model, x, y, _fit(epochs=3), time_probe=True)


@_healthy
def digits_cnn():
    """A small CNN on the 8x8 digits: Conv2D(16, 3, relu), MaxPooling2D, Dense(10)."""
    x, y = _digits()
    x = (x / 16.0).reshape(-1, 8, 8, 1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", padding="same"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x, y, _fit())


@_healthy
def lstm_short_sequences():
    """LSTM(16) on the adding problem at T = 10, Adam, MSE."""
    x, y = _adding(SAMPLES, 10)
    model = keras.Sequential([keras.Input((10, 2)), keras.layers.LSTM(16), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
    return Program(model, x, y, _fit(), time_probe=True)


@_healthy
def autoclip_digits():
    """A digits MLP trained through `ClippedOptimizer(Adam, AutoClip(percentile=10))`."""
    import keras_gradkit as gk

    x, y = _digits()
    optimizer = gk.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(1e-3), gk.clipping.AutoClip(percentile=10.0)
    )
    model = _mlp(64, [64, 32], 10, output_activation="softmax")
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return Program(model, x / 16.0, y, _fit())


@_healthy
def gru_digit_rows():
    """GRU(32) reading each digit image row by row (8 steps of 8 pixels)."""
    x, y = _digits()
    x = (x / 16.0).reshape(-1, 8, 8)
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.GRU(32),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(5e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit(), time_probe=True)


@_healthy
def deep_relu_he_batchnorm():
    """10 blocks of Dense(64, he_normal), BatchNormalization, ReLU on digits."""
    x, y = _digits()
    layers = [keras.Input((64,))]
    for _ in range(10):
        layers += [
            keras.layers.Dense(64, kernel_initializer="he_normal", use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
        ]
    layers.append(keras.layers.Dense(10, activation="softmax"))
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return Program(model, x / 16.0, y, _fit(epochs=3))


@_healthy
def moons_logits():
    """make_moons, linear output and `BinaryCrossentropy(from_logits=True)`."""
    x, y = _moons()
    model = _mlp(2, [32, 32], 1)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return Program(model, x, y, _fit())


@_healthy
def wine_standardized_rmsprop():
    """Wine with standardized features, Keras 2 style Activation layers, RMSprop(1e-3)."""
    x, y = _wine()
    model = keras.Sequential(
        [
            keras.Input((13,)),
            keras.layers.Dense(32),
            keras.layers.Activation("relu"),
            keras.layers.Dense(3),
            keras.layers.Activation("softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss="sparse_categorical_crossentropy")
    return Program(model, _standardized(x), y, _fit())


@_healthy
def regression_tanh_sgd():
    """Standardized make_regression, Dense(32, tanh) x 2, SGD(0.01) with momentum, MSE."""
    x, y = _regression()
    model = _mlp(10, [32, 32], 1, "tanh")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss="mse")
    return Program(model, _standardized(x), y[:, None], _fit())


def by_name(names):
    """The specs whose name or pair is in `names` (all when `names` is empty), in registry order."""
    if not names:
        return list(PROGRAMS)
    unknown = set(names) - {s.name for s in PROGRAMS} - {s.pair for s in PROGRAMS}
    if unknown:
        raise ValueError(f"Unknown programs {sorted(unknown)}; see benchmarks/doctor_programs.py")
    return [s for s in PROGRAMS if s.name in names or s.pair in names]
