"""Gradient clipping policies (`keras_gradkit.clipping`).

Use them with `keras_gradkit.optimizers.ClippedOptimizer`, which applies a
policy to the gradient the update really uses and records statistics.
"""

from keras_gradkit.clipping.policies import AdaptiveClip
from keras_gradkit.clipping.policies import AutoClip
from keras_gradkit.clipping.policies import Chain
from keras_gradkit.clipping.policies import ClipByGlobalNorm
from keras_gradkit.clipping.policies import ClipByNorm
from keras_gradkit.clipping.policies import ClipByValue
from keras_gradkit.clipping.policies import ClippingPolicy
from keras_gradkit.clipping.policies import NoClip
from keras_gradkit.clipping.policies import SkipNonFinite
from keras_gradkit.clipping.policies import chain
from keras_gradkit.clipping.policies import get
from keras_gradkit.clipping.policies import global_norm

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
