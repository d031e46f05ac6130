"""The advice of each kind of finding: what to do, fitted to the model's
layers, with a link to the guide section that explains it."""

import keras

from keras_gradkit.backend import keras_private

GUIDE = "guides/diagnosing.md"


def _link(section):
    """The reference to a section of the documentation."""
    return f"docs/{section}"


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
    if "IndRNN" in text:
        return "indrnn", "IndRNN"
    if "LSTM" in text:
        return "gated", "LSTM"
    if "GRU" in text:
        return "gated", "GRU"
    return "rnn", type(layer).__name__


def time_advice(kind, layer):
    """The advice for a finding through time at `layer` (None: the model input)."""
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
    text += "; or a lower learning rate ({lr})."
    return text.format(**links)


_SATURATING = ("sigmoid", "tanh", "hard_sigmoid", "softsign", "softmax")


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", None) or type(activation).__name__


def depth_advice(kind, model, layers):
    """The advice for a finding across depth, given the model's layers with weights."""
    if kind == "vanishing_across_depth":
        return _vanishing_depth_advice(layers)
    return (
        "The early layers get far larger gradients than the last: use He or orthogonal initialization "
        f"at its unit scale ({_link(GUIDE + '#initialization')}), normalize with "
        "`keras_gradkit.layers.GroupNorm` or `WeightNormalization` "
        f"({_link('guides/normalization.md#groupnorm')}), and bound the update with a clipping policy "
        f"({_link('guides/clipping.md#policies')})."
    )


def _vanishing_depth_advice(layers):
    saturating = sorted(
        {n for n in (_activation_name(layer) for layer in layers) if n in _SATURATING}
    )
    recurrent = sum(1 for layer in layers if _recurrent_kind_of(layer))
    parts = []
    if saturating:
        names = ", ".join(f"`{n}`" for n in saturating)
        parts.append(
            f"Its layers use the saturating activation {names}: use ReLU instead "
            f"({_link(GUIDE + '#saturating-activations')}), with He initialization "
            f"({_link(GUIDE + '#initialization')})."
        )
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
    if not saturating:
        parts.append(
            "Normalize: `keras_gradkit.layers.GroupNorm` or `WeightNormalization` "
            f"({_link('guides/normalization.md#groupnorm')}); He or orthogonal initialization "
            f"({_link(GUIDE + '#initialization')})."
        )
    return " ".join(parts)


def _recurrent_kind_of(layer):
    """Whether `layer` is or holds a recurrent layer."""
    if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
        return True
    return any(isinstance(sub, keras.layers.RNN) for sub in keras_private.flatten_layers(layer))


def non_finite_advice(where):
    """The advice for a non-finite gradient at `where` (`"input"`: the batch)."""
    if where == "input":
        return (
            "The batch itself holds NaN or inf: find and clean those values before training "
            f"({_link(GUIDE + '#non-finite-data')})."
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
