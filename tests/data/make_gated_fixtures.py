"""How `lstm_gate_bias_v1`, `gru_gate_bias_v1` and `layer_norm_lstm_cell_v1`
(`.keras` and `.npz`) were saved: with keras_gradkit at commit 86cb3c2, whose
`LSTM` and `GRU` swapped Keras's cell for their own, Keras 3.15.1 and the JAX
backend. The tests load them to check that files of that version still load to
the same weights and outputs; running this again would overwrite them with
files of the current version.

    KERAS_BACKEND=jax python tests/data/make_gated_fixtures.py tests/data
"""

import pathlib
import sys

import keras
import numpy as np

from keras_gradkit.layers import GRU, LSTM, GRUCell, LayerNormLSTMCell, LSTMCell

DATA = pathlib.Path(sys.argv[1])
T, D, U = 5, 4, 6
x = np.random.default_rng(0).normal(size=(3, T, D)).astype("float32")


def randomize_matrices(model, seed):
    """Random kernels and norm scales; the biases stay as the gate arguments made them."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if "bias" not in w.path:
            w.assign(rng.normal(scale=0.5, size=w.shape).astype("float32"))


def save(name, branches_fn, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((T, D))
    model = keras.Model(inputs, keras.layers.Concatenate()(branches_fn(inputs)))
    randomize_matrices(model, seed)
    model.save(DATA / f"{name}.keras")
    np.savez(
        DATA / f"{name}.npz",
        inputs=x,
        outputs=keras.ops.convert_to_numpy(model(x)),
        **{f"weight_{i}": keras.ops.convert_to_numpy(w) for i, w in enumerate(model.weights)},
    )
    print(name, [w.path for w in model.weights])


save(
    "lstm_gate_bias_v1",
    lambda i: [
        LSTM(U, forget_bias=2.0, input_bias=-1.0, cell_bias=0.5, output_bias=0.25, name="gates")(i),
        LSTM(U, chrono_timesteps=12, seed=3, go_backwards=True, name="chrono")(i),
        LSTM(
            U, bias_initializer="ones", unit_forget_bias=False, use_cudnn=False, name="keras_style"
        )(i),
        keras.layers.RNN(LSTMCell(U, output_bias=1.0, seed=2), name="cell")(i),
    ],
    seed=11,
)
save(
    "gru_gate_bias_v1",
    lambda i: [
        GRU(U, update_bias=2.0, reset_bias=-1.0, candidate_bias=0.5, name="gates")(i),
        GRU(U, reset_after=False, chrono_timesteps=12, seed=3, use_cudnn=False, name="chrono")(i),
        keras.layers.RNN(GRUCell(U, reset_after=False, update_bias=1.0), name="cell")(i),
    ],
    seed=12,
)
save(
    "layer_norm_lstm_cell_v1",
    lambda i: [
        keras.layers.RNN(
            LayerNormLSTMCell(U, forget_bias=2.0, output_bias=-0.5, norm_epsilon=1e-2),
            return_sequences=True,
            name="cell",
        )(i)[:, -1],
        keras.layers.RNN(LayerNormLSTMCell(U, chrono_timesteps=12, seed=4), name="chrono")(i),
    ],
    seed=13,
)
