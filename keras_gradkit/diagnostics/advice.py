"""The advice of each kind of finding: what to do, fitted to the model's
layers, with a link to the guide section that explains it."""

import keras

from keras_gradkit.backend import keras_private

GUIDE = "guides/diagnosing.md"
# The documentation site (`site_url` in mkdocs.yml; a test checks they agree).
SITE_URL = "https://keras-gradkit.github.io/keras_gradkit/"


def _link(section):
    """The URL of a section of the documentation site: `"guides/x.md#a"` is
    `SITE_URL + "guides/x/#a"` (MkDocs's directory URLs)."""
    page, _, anchor = section.partition("#")
    url = SITE_URL + page.removesuffix(".md") + "/"
    return f"{url}#{anchor}" if anchor else url


_TIME_GATED = (
    "Replace it with `keras_gradkit.layers.IndRNN` and the long-memory recurrent initialization, "
    "|u| from (2^(-1/T), 2^(1/T)) ({indrnn}), or keep it and initialize its gates for long memory: "
    "chrono initialization, `keras_gradkit.layers.{cls}(chrono_timesteps=T)`, or a larger forget "
    "bias ({gates})."
)
_TIME_INDRNN = (
    "Initialize its recurrent weights for long memory, |u| from (2^(-1/T), 2^(1/T)) "
    "(`recurrent_initializer`, {indrnn}), and keep them within the recurrent bound ({bound})."
)
_TIME_OTHER = (
    "A plain recurrence forgets over long sequences: use `keras_gradkit.layers.IndRNN` with the "
    "long-memory recurrent initialization ({indrnn}), or a gated layer with chrono initialization "
    "({gates})."
)


def _recurrent_kind(layer):
    """`"gated"` (LSTM/GRU), `"indrnn"`, `"rnn"` or None, and the class to name."""
    if layer is None:
        return None, None
    cell = getattr(layer, "cell", None)
    if cell is None and hasattr(layer, "forward_layer"):  # Bidirectional
        cell = getattr(layer.forward_layer, "cell", None)
    names = {type(layer).__name__, type(cell).__name__ if cell is not None else ""}
    text = " ".join(names)
    if any(n.startswith(("Min", "MUT", "LRU")) for n in names):
        return "rnn", type(layer).__name__  # not Keras's gated layers
    if "IndRNN" in text:
        return "indrnn", "IndRNN"
    if "LSTM" in text:
        return "gated", "LSTM"
    if "GRU" in text:
        return "gated", "GRU"
    return "rnn", type(layer).__name__


def time_advice(kind, layer, at_initialization=False):
    """The advice for a finding through time at `layer` (None: the model
    input); before the first update it names no learning rate."""
    links = {
        "indrnn": _link("guides/indrnn.md#building-a-model"),
        "bound": _link("guides/indrnn.md#the-recurrent-bound"),
        "gates": _link("guides/gate_biases.md#initializers"),
        "clip": _link("guides/clipping.md#policies"),
        "inside": _link("guides/indrnn.md#clipping-inside-the-recurrence"),
        "lr": _link(f"{GUIDE}#learning-rate"),
    }
    family, cls = _recurrent_kind(layer)
    if kind == "vanishing_through_time":
        template = {"gated": _TIME_GATED, "indrnn": _TIME_INDRNN}.get(family, _TIME_OTHER)
        return template.format(cls=cls, **links)
    text = (
        "Bound the gradient: a `keras_gradkit.optimizers.ClippedOptimizer` with `ClipByGlobalNorm` "
        "or `AutoClip` ({clip})"
    )
    if family == "indrnn":
        text += ", the IndRNN's recurrent bound ({bound}) and `grad_clipping` inside the recurrence ({inside})"
    text += "." if at_initialization else "; or a lower learning rate ({lr})."
    return text.format(**links)


_SATURATING = ("sigmoid", "tanh", "hard_sigmoid", "softsign")


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        cell = getattr(layer, "cell", None)
        activation = getattr(cell, "activation", None) if cell is not None else None
    if activation is None:
        return None
    return getattr(activation, "__name__", None) or type(activation).__name__


def _output_layers(model):
    """The top-level layers that make a model output, with the layer that
    feeds a trailing activation-only layer (its activation is the output's)."""
    layers = list(getattr(model, "layers", []))
    if not layers:
        return set()
    try:
        outputs = list(model.outputs or [])
    except (AttributeError, ValueError):
        outputs = []
    found = []
    for layer in layers:
        try:
            produced = layer.output
        except (AttributeError, ValueError):
            continue
        produced = produced if isinstance(produced, (list, tuple)) else [produced]
        if any(p is o for p in produced for o in outputs):
            found.append(layer)
    if not found:
        found = [layers[-1]]
    ids = {id(layer) for layer in found}
    for i, layer in enumerate(layers):
        if id(layer) in ids and i > 0 and _activation_only(layer):
            ids.add(id(layers[i - 1]))
    return ids


def _activation_only(layer):
    return isinstance(
        layer,
        (
            keras.layers.Activation,
            keras.layers.ReLU,
            keras.layers.Softmax,
            keras.layers.LeakyReLU,
            keras.layers.ELU,
        ),
    )


def hidden_saturating(model):
    """`[(layer name, activation)]` of the model's top-level hidden layers
    with a saturating activation, a separate `Activation` layer included
    (the output layer's activation is not a hidden layer's)."""
    outputs = _output_layers(model)
    found = []
    for layer in getattr(model, "layers", []):
        name = _activation_name(layer)
        if name in _SATURATING and id(layer) not in outputs:
            found.append((layer.name, name))
    return found


def _named(pairs):
    return ", ".join(f"`{layer}` (`{activation}`)" for layer, activation in pairs)


def depth_advice(kind, model, layers, evidence=None):
    """The advice for a finding across depth, given the model's layers with
    weights and what the activation measures found (`evidence`:
    `{"saturated_units": {layer: fraction}, "dead_units": {...}}`)."""
    if kind == "vanishing_across_depth":
        return _vanishing_depth_advice(model, layers, evidence or {})
    return (
        "The early layers get far larger gradients than the last: use He or orthogonal initialization "
        f"at its unit scale ({_link(GUIDE + '#initialization')}), normalize with "
        "`keras_gradkit.layers.GroupNorm` or `WeightNormalization` "
        f"({_link('guides/normalization.md#groupnorm')}), and bound the update with a clipping policy "
        f"({_link('guides/clipping.md#policies')})."
    )


def _vanishing_depth_advice(model, layers, evidence):
    saturating = hidden_saturating(model) if model is not None else []
    saturated = evidence.get("saturated_units") or {}
    dead = evidence.get("dead_units") or {}
    recurrent = sum(1 for layer in layers if _recurrent_kind_of(layer))
    parts = []
    if saturated:
        names = ", ".join(f"`{n}` ({v:.0%})" for n, v in saturated.items())
        parts.append(
            f"The gradient vanishes in saturated units: {names} of the outputs are saturated. "
            + _SATURATION_REMEDY
        )
    elif saturating:
        parts.append(
            f"Its hidden layers use saturating activations, {_named(saturating)}, whose "
            "derivative is at most 0.25 (sigmoid) or 1 (tanh) and shrinks the gradient at every "
            f'layer: use ReLU (`activation="relu"`) in the hidden layers ({_link(GUIDE + "#saturating-activations")}), '
            f"with He initialization ({_link(GUIDE + '#initialization')})."
        )
    if dead:
        names = ", ".join(f"`{n}` ({v:.0%})" for n, v in dead.items())
        parts.append(f"Dead ReLU units pass no gradient: {names} of the units. " + _DEAD_REMEDY)
    if recurrent >= 2:
        parts.append(
            "Stack recurrent layers as `keras_gradkit.layers.ResidualIndRNN` blocks, whose identity "
            f"shortcut carries the gradient back ({_link('guides/depth.md#the-residual-block')})."
        )
    else:
        parts.append(
            f"Add residual connections, `x + F(x)`, whose identity shortcut carries the gradient back "
            f"({_link(GUIDE + '#residual-connections')})."
        )
    if not (saturating or saturated or dead):
        parts.append(
            "Normalize: `keras_gradkit.layers.GroupNorm` or `WeightNormalization` "
            f"({_link('guides/normalization.md#groupnorm')}); He or orthogonal initialization "
            f"({_link(GUIDE + '#initialization')})."
        )
    return " ".join(parts)


_SATURATION_REMEDY = (
    "Where the activation is flat its derivative is near 0: initialize with a smaller scale "
    '(`kernel_initializer="glorot_uniform"`), scale the inputs or normalize the layer\'s input '
    "(`keras.layers.BatchNormalization`), or use `relu` in hidden layers "
    f"({_link(GUIDE + '#saturated-units')})."
)
_DEAD_REMEDY = (
    "A unit that outputs 0 for every input gets no gradient and never recovers: use He "
    'initialization (`kernel_initializer="he_normal"`) with biases at 0, scaled inputs, or '
    '`activation="leaky_relu"` / `"elu"` '
    f"({_link(GUIDE + '#dead-units')})."
)


def dead_units_advice(layers, at_initialization=False):
    """`layers`: `{name: (activation, fraction)}`, worst first; after updates
    it names the learning rate too (large updates kill units)."""
    names = ", ".join(f"`{n}` (`{a}`, {v:.0%})" for n, (a, v) in layers.items())
    text = f"Units that output 0 for every sample of the batch: {names}. " + _DEAD_REMEDY
    if not at_initialization:
        text += (
            " Updates too large kill units too: lower the learning rate "
            f"({_link(GUIDE + '#learning-rate')})."
        )
    return text


def saturated_units_advice(layers):
    """`layers`: `{name: (activation, fraction)}`, worst first."""
    names = ", ".join(f"`{n}` (`{a}`, {v:.0%} of outputs)" for n, (a, v) in layers.items())
    return f"Saturated activations in hidden layers: {names}. " + _SATURATION_REMEDY


def non_finite_forward_advice(layer, activation, initializer, at_initialization):
    """The first layer whose output is not finite, its activation and kernel initializer."""
    what = [f'`activation="{activation}"`'] if activation and activation != "linear" else []
    if initializer:
        what.append(f"the kernel initializer `{initializer}`")
    named = " and ".join(what) if what else "its weights"
    if at_initialization:
        return (
            f"The output of `{layer}` is not finite before any update: with {named} its values "
            "overflow. Use a bounded or slowly growing activation (`relu`, `tanh`) and a "
            "scaled initializer (`glorot_uniform`, `he_normal`; for a recurrent layer an "
            "orthogonal or long-memory recurrent initializer), and scale the inputs "
            f"({_link(GUIDE + '#non-finite-forward')})."
        )
    return (
        f"The output of `{layer}` ({named}) became non-finite during training: the weights grew "
        f"until the forward pass overflows. Lower the learning rate ({_link(GUIDE + '#learning-rate')}) "
        "and bound the updates with `keras_gradkit.clipping.ClipByGlobalNorm` or `AdaptiveClip` "
        f"({_link('guides/clipping.md#policies')})."
    )


def mismatch_advice(message):
    """An output/loss mismatch: its message (what is wrong, the fix) and the guide's section."""
    return f"{message} ({_link(GUIDE + '#output-and-loss')})"


def unscaled_advice(name, rms, feature, targets):
    """Inputs (or regression targets) far from order 1."""
    if targets:
        return (
            f"The regression targets have a root mean square of {rms:.3g}: the loss and its "
            "gradient scale with them. Standardize the targets (subtract the mean, divide by the "
            "standard deviation of the training targets) and invert it on predictions "
            f"({_link(GUIDE + '#unscaled-data')})."
        )
    return (
        f"Feature {feature} of `{name}` has a root mean square of {rms:.3g}, far from order 1: "
        "put `keras.layers.Normalization()` first in the model and call its "
        "`adapt(x_train)` (or standardize the data) "
        f"({_link(GUIDE + '#unscaled-data')})."
    )


def zero_gradient_advice(layers, cause):
    """The layers whose gradient is exactly zero, and why (None: not known)."""
    names = ", ".join(f"`{n}`" for n in layers)
    text = f"The gradient of {names} is exactly zero on this batch: these weights do not train. "
    if cause:
        return text + cause + f" ({_link(GUIDE + '#zero-gradient')})"
    return text + (
        "Check that the loss depends on these layers (an output without a loss, a branch not "
        "connected to the output, a `stop_gradient`), and that no activation before them is "
        f"flat everywhere ({_link(GUIDE + '#zero-gradient')})."
    )


def no_trainable_advice():
    return (
        "The model has no trainable weights: every layer is frozen (`trainable = False`), so "
        "training changes nothing. Unfreeze the layers to train (at least the new head) and "
        f"call `compile` again ({_link(GUIDE + '#zero-gradient')})."
    )


def unchanged_advice(layers, updates):
    names = ", ".join(f"`{n}`" for n in layers)
    return (
        f"The weights of {names} did not change in the {updates} updates since the previous "
        "check: their gradient is zero, the learning rate is 0 or too small for the weights' "
        "scale, or the optimizer does not update them (frozen after `compile`: call `compile` "
        f"again) ({_link(GUIDE + '#unchanged-weights')})."
    )


def loss_advice(change, checks):
    return (
        f"The loss moved by {change:.2%} of its first value over {checks} checks while the "
        "gradient is not zero: the updates do not reach the loss. Raise the learning rate "
        f"({_link(GUIDE + '#learning-rate')}), check that the output and the loss fit and the "
        f"data are scaled ({_link(GUIDE + '#loss-not-decreasing')})."
    )


def _recurrent_kind_of(layer):
    """Whether `layer` is or holds a recurrent layer."""
    if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
        return True
    return any(isinstance(sub, keras.layers.RNN) for sub in keras_private.flatten_layers(layer))


def non_finite_advice(where, at_initialization=False):
    """The advice for a non-finite gradient at `where` (`"input"`: the batch);
    before the first update it names no learning rate (none was applied)."""
    if where == "input":
        return (
            "The batch itself holds NaN or inf: find and clean those values before training "
            f"({_link(GUIDE + '#non-finite-data')})."
        )
    if at_initialization:
        return (
            f"The gradient of `{where}` is not finite before any update, with a finite forward "
            "pass: a loss that divides by zero or takes the log of 0 (a probability loss on an "
            "output that reaches 0 or 1: use `from_logits=True` without the activation), or an "
            f"initializer too large for the depth ({_link(GUIDE + '#initialization')}); under "
            f"mixed precision train with a `keras.optimizers.LossScaleOptimizer` "
            f"({_link(GUIDE + '#loss-scale')})."
        )
    return (
        "Lower the learning rate "
        f"({_link(GUIDE + '#learning-rate')}); skip non-finite steps and bound the rest with "
        "`keras_gradkit.clipping.chain(SkipNonFinite(), ClipByGlobalNorm(...))` "
        f"({_link('guides/clipping.md#policies')}); under mixed precision train with the loss scale, "
        f"`keras.optimizers.LossScaleOptimizer` ({_link(GUIDE + '#loss-scale')})."
    )


TRAINING_ADVICE = {
    "large_updates": (
        "One step changes the weights by a large fraction of their size: lower the learning rate "
        f"({_link(GUIDE + '#learning-rate')}), or bound each update relative to its weights with "
        f"`keras_gradkit.clipping.AdaptiveClip` ({_link('guides/clipping.md#policies')})."
    ),
    "frequent_clipping": (
        "The clip binds on most updates, so it sets their size rather than the gradient: lower the "
        f"learning rate ({_link(GUIDE + '#learning-rate')}), raise the threshold, or let "
        f"`keras_gradkit.clipping.AutoClip` set it from the gradients' history "
        f"({_link('guides/clipping.md#policies')})."
    ),
    "skipped_steps": (
        "Updates are skipped for non-finite gradients: lower the learning rate "
        f"({_link(GUIDE + '#learning-rate')}); under mixed precision check the loss scale "
        f"({_link(GUIDE + '#loss-scale')})."
    ),
}
