"""What a functional (or Sequential) model's graph says: its input and
output, the layers that take a tensor, the masks Keras attached, its
top-level recurrent layers. A subclassed model has no graph: the functions
then find nothing."""

import keras

from keras_gradkit.backend import keras_private


def recurrent_layers(model):
    """Top-level recurrent layers of a functional (or Sequential) model."""
    if model_input(model) is None:
        return []
    return [layer for layer in model.layers if is_recurrent(layer)]


# What `keras.layers.Bidirectional` requires of the layer it wraps: a
# sequence layer that is not a `keras.layers.RNN` (such as
# `keras_gradkit.layers.LRU`, a parallel scan) has them too.
_SEQUENCE_ATTRIBUTES = ("go_backwards", "return_sequences", "return_state")


def is_recurrent(layer):
    """Whether `layer` is a recurrent sequence layer: a `keras.layers.RNN`,
    a `Bidirectional`, or a layer with their sequence attributes."""
    if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
        return True
    return all(hasattr(layer, name) for name in _SEQUENCE_ATTRIBUTES)


def model_inputs(model):
    """The model's symbolic inputs; none for a subclassed or unbuilt model."""
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):
        return []


def model_input(model):
    """The model's single symbolic input, or None."""
    inputs = model_inputs(model)
    return inputs[0] if len(inputs) == 1 else None


def model_output(model):
    """The model's symbolic output, in the structure the model returns."""
    try:
        return model.output
    except AttributeError:  # Sequential has `outputs` only
        outputs = model.outputs
        return outputs[0] if len(outputs) == 1 else outputs


def consumers(model, tensor):
    """The top-level layers whose (first) call takes `tensor`."""
    found = []
    for layer in model.layers:
        try:
            inputs = keras.tree.flatten(layer.input)
        except (AttributeError, ValueError):
            continue
        if any(t is tensor for t in inputs):
            found.append(layer)
    return found


def mask_of(tensor):
    """The (batch, timesteps) boolean mask Keras attached to `tensor`, or None."""
    mask = keras_private.keras_mask(tensor)  # set by Embedding(mask_zero=True), Masking
    return mask if mask is not None and len(mask.shape) == 2 else None


def as_list(value):
    """A layer's input or output as a list of tensors."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def takes_only(layer, tensor):
    """Whether `layer`'s (only) input is `tensor`."""
    try:
        inputs = as_list(layer.input)
    except (AttributeError, ValueError):
        return False
    return len(inputs) == 1 and inputs[0] is tensor


def is_sequence(tensor, timesteps):
    """Whether `tensor` is a float symbolic (batch, timesteps, features) tensor."""
    if not isinstance(tensor, keras.KerasTensor) or len(tensor.shape) != 3:
        return False
    return keras.backend.is_float_dtype(tensor.dtype) and tensor.shape[1] in (None, timesteps)
