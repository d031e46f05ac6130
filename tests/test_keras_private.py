"""Each read of Keras's private API, as `keras_gradkit.backend.keras_private`
gathers them, still means what the package relies on. When Keras renames or
changes one, this file fails first, by name."""

import keras
import numpy as np
import pytest

from keras_gradkit.backend import keras_private

BACKEND = keras.backend.backend()


def _model():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(1, name="b")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def test_trainable_variables_and_their_index():
    model = _model()
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    found = keras_private.trainable_variables_of(optimizer)
    assert [v.path for v in found] == [v.path for v in model.trainable_variables]
    for i, v in enumerate(model.trainable_variables):
        assert keras_private.variable_index(optimizer, v) == i


def test_micro_steps_and_accumulated_gradients():
    model = _model()
    optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    variables = model.trainable_variables
    optimizer.build(variables)
    grads = [keras.ops.full(v.shape, i + 1.0, "float32") for i, v in enumerate(variables)]
    optimizer.apply(grads, variables)  # a micro-step: no update yet
    assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == 0
    assert int(keras.ops.convert_to_numpy(keras_private.micro_step_count(optimizer))) == 1
    for g, v in zip(grads, variables):
        accumulated = keras.ops.convert_to_numpy(keras_private.accumulated_gradient(optimizer, v))
        np.testing.assert_allclose(accumulated, keras.ops.convert_to_numpy(g))


def test_compiled_loss_and_compile_token():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    assert keras_private.compiled_loss(model) is None
    model.compile(optimizer="sgd", loss="mse")
    assert keras_private.compiled_loss(model) is not None
    token = keras_private.compile_token(model)
    assert token[0] is model.optimizer and token[1] is keras_private.compiled_loss(model)
    model.compile(optimizer=model.optimizer, loss="mse")  # a new compiled loss object
    assert keras_private.compile_token(model)[1] is not token[1]


def test_keras_mask_of_a_symbolic_tensor():
    tokens = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(10, 2, mask_zero=True)(tokens)
    mask = keras_private.keras_mask(embedded)
    assert mask is not None and tuple(mask.shape) == (None, 5)
    assert keras_private.keras_mask(tokens) is None


def test_producing_operation_of_a_symbolic_tensor():
    inputs = keras.Input((3,), name="features")
    dense = keras.layers.Dense(2, name="d")
    outputs = dense(inputs)
    assert keras_private.producing_operation(outputs) is dense
    assert keras_private.producing_operation(inputs).name == "features"
    assert keras_private.producing_operation(np.zeros(2)) is None


def test_flatten_layers_walks_nested_layers():
    inner = keras.Sequential([keras.layers.LSTM(2, name="lstm")], name="inner")
    outer = keras.Sequential([keras.Input((4, 3)), inner, keras.layers.Dense(1, name="out")])
    names = [layer.name for layer in keras_private.flatten_layers(outer)]
    assert "lstm" in names and "out" in names and "inner" in names


def test_dropout_rnn_cell_marks_keras_cells():
    assert isinstance(keras.layers.LSTMCell(2), keras_private.DropoutRNNCell)


@pytest.mark.skipif(BACKEND != "jax", reason="the JAX trainer's own helpers")
def test_jax_trainer_helpers():
    model = _model()
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    model.fit(x, y, epochs=1, verbose=0)  # builds the trainer's state
    assert callable(keras_private.make_function(model, lambda state, data: (None, state)))
    keras_private.state_sharding_spec(model)  # no distribution: runs, whatever it returns


def test_own_variables_are_an_optimizers_own_slots():
    model = _model()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    own = keras_private.own_variables(optimizer)
    assert [v.path for v in own] == [v.path for v in optimizer.variables]
    wrapper = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())
    wrapper.build(model.trainable_variables)
    inner = {id(v) for v in wrapper.inner_optimizer.variables}
    assert not any(id(v) in inner for v in keras_private.own_variables(wrapper))


def test_in_stateless_scope():
    assert not keras_private.in_stateless_scope()
    with keras.StatelessScope():
        assert keras_private.in_stateless_scope()
    assert not keras_private.in_stateless_scope()


@pytest.mark.skipif(BACKEND != "torch", reason="Keras's device on PyTorch")
def test_torch_device_is_where_keras_puts_a_tensor():
    import torch

    assert torch.device(keras_private.torch_device()).type == keras.ops.zeros(()).device.type
    with keras.device("meta"):
        assert torch.device(keras_private.torch_device()).type == "meta"


def test_storage_of_is_what_value_reads_outside_the_scopes():
    variable = keras.Variable(np.array([1.0, 2.0], "float32"))
    (stored,) = keras_private.storage_of([variable])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stored), [1.0, 2.0])
    variable.assign([3.0, 4.0])
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(keras_private.storage_of([variable])[0]), [3.0, 4.0]
    )
    if BACKEND == "torch":
        assert keras_private.storage_of([variable])[0] is variable.value
