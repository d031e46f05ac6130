"""Several squared norms, square roots or differences at once on PyTorch (private).

The PyTorch step runs eagerly, so a step's measures cost what their ops
cost in Python: these take all of a step's tensors in one multi-tensor
call (`foreach.py`), the same arithmetic as `common.norms.keras_squared_norms`
(squares summed in float32) without a call per tensor, nor Keras's
conversion and checks of each argument.
"""

from keras_gradkit.backend.torch.foreach import differences, sqrts, squared_norms

__all__ = ["differences", "sqrts", "squared_norms"]
