"""Gradient clipping policies (`keras_gradkit.clipping`).

Use them with `keras_gradkit.optimizers.ClippedOptimizer`, which applies a
policy to the gradient the update really uses and records statistics.
"""

from keras_gradkit.clipping.policies import (
    AdaptiveClip,
    AutoClip,
    Chain,
    ClipByGlobalNorm,
    ClipByNorm,
    ClipByValue,
    ClippingPolicy,
    NoClip,
    SkipNonFinite,
    chain,
    get,
    global_norm,
)

__all__ = [
    "AdaptiveClip",
    "AutoClip",
    "Chain",
    "ClipByGlobalNorm",
    "ClipByNorm",
    "ClipByValue",
    "ClippingPolicy",
    "NoClip",
    "SkipNonFinite",
    "chain",
    "get",
    "global_norm",
]
