"""Several squared norms at once on PyTorch (private).

The PyTorch step runs eagerly, so a step's measures cost what their ops
cost in Python: these use torch's own ops, the same arithmetic as
`common.norms.keras_squared_norms` (a float32 cast, the squares, their
sum) without Keras's conversion and checks of each argument.
"""

import torch


def squared_norms(tensors):
    """The sum of the squares of each tensor's entries, in float32."""
    return [torch.sum(torch.square(torch.as_tensor(t).to(torch.float32))) for t in tensors]
