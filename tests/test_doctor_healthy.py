"""The models the examples present as healthy give no finding (issue 32), on
every backend: `make demo`'s IndRNN, the silent rows of
`examples/diagnose.py`, the recommended LSTM gate biases of
`examples/gate_bias.py`, the normalized networks of
`examples/normalization.py` and the official residual IndRNN of
`examples/deep_rnn.py`. Each is built by the example's own function, at
small shapes, and diagnosed on one batch.

Left out: `examples/clipping.py`, whose IRNN is the example's exploding setup
(healthy only through the optimizer's clip, which `diagnose` does not see);
the `ResidualIndRNN` stack of `examples/diagnose.py` and the long-memory
IndRNN at T = 500, which `tests/test_diagnose.py` checks."""

import argparse

import keras
import numpy as np
import pytest
from test_examples import load_example

import keras_gradkit as gk

# The recurrent models at T = 20: each model costs its traces, not its steps.
TIMESTEPS = 20
UNITS = 8
BATCH = 16


def adding_batch(seed=0):
    adding = load_example("adding_problem")
    return adding.adding_batch(np.random.default_rng([seed, 10**9]), BATCH, TIMESTEPS)


def assert_no_finding(model, x, y):
    report = gk.diagnose(model, x, y)
    found = [f"{f.kind} at {f.where}: {f.value:.3g}" for f in report.findings]
    assert report.ok, f"{model.name}: {found}"


def test_demo_indrnn():
    # What `make demo` trains: adding_problem.py's two-layer IndRNN with
    # `--clipping global-norm` (no clip inside the recurrence).
    adding = load_example("adding_problem")
    keras.utils.set_random_seed(0)
    model = adding.build_model("indrnn", TIMESTEPS, UNITS, 2)
    optimizer = gk.optimizers.ClippedOptimizer(
        keras.optimizers.Adam(adding.DEFAULT_LR["indrnn"]), gk.clipping.ClipByGlobalNorm(10.0)
    )
    model.compile(optimizer=optimizer, loss="mse")
    assert_no_finding(model, *adding_batch())


@pytest.mark.parametrize(
    "row", ("indrnn", "indrnn_small_input", "mlp_residual", "mlp_relu_he", "mlp_small")
)
def test_diagnose_example_rows(row):
    # Rows the example reports silent, at its `--quick` sizes (T = 20, depth 4).
    example = load_example("diagnose")
    run = example.ROWS[row][0](example.parse_args(["--quick"]))
    assert_no_finding(run.model, *run.probe)


def test_gate_bias_chrono_lstm():
    # As `gate_bias.train_variant` builds and compiles it.
    example = load_example("gate_bias")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((TIMESTEPS, 2)),
            example.make_recurrent_layer("chrono", UNITS, TIMESTEPS),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3, global_clipnorm=1.0), loss="mse")
    assert_no_finding(model, *adding_batch())


@pytest.mark.parametrize("variant", ("groupnorm", "cosine", "weightnorm"))
def test_normalized_networks(variant):
    # The example's width and groups (at 16 units in 4 groups, 20 GroupNorm
    # layers give the first layer 700 times the last one's gradient).
    example = load_example("normalization")
    args = argparse.Namespace(arch="mlp", depth=4, width=64, groups=8, activation="tanh")
    keras.utils.set_random_seed(0)
    model, _ = example.build_model(variant, args)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    x_train, _, y_train, _ = example.load_data(0)
    assert_no_finding(model, x_train[:64], y_train[:64])


def test_official_residual_indrnn():
    # Its kernels decay through `kernel_regularizer`, the training-mode pass
    # draws dropout masks and batch statistics.
    example = load_example("deep_rnn")
    keras.utils.set_random_seed(0)
    task = example.adding_task(0, TIMESTEPS, BATCH, 1, 1, BATCH)
    model = example.build_model("residual", 2, UNITS, task, "official")
    model.compile(optimizer=example.make_optimizer("official", 2e-4), loss=task.loss)
    assert_no_finding(model, *task.test)
