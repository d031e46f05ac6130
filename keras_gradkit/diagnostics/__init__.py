"""The gradient doctor (`keras_gradkit.diagnostics`): what is wrong with a
model's gradients, where, and what to do.

`keras_gradkit.diagnose(model, x, y)` measures one batch at initialization
(or any time); `keras_gradkit.callbacks.GradientBoard` runs the same checks
while the model trains. Both return or write a `Report` of `Finding`s, judged
against `Thresholds`; the guide "Diagnosing gradients" explains each kind and
its remedies.

Modules: `thresholds` (the kinds and `Thresholds`), `report` (`Finding`,
`Report`, the warning and error), `advice` (what to do, per kind),
`checks` (measures in, findings out: `assemble`, used by both callers),
`time_probe`, `depth`, `activations` and `data` (the measures: through
time, across depth, one forward pass's units and outputs, the data and the
loss), `graph` (what a functional model's graph says), `batch` (the batch
`diagnose` measures).
"""

from keras_gradkit.diagnostics._diagnose import diagnose
from keras_gradkit.diagnostics.report import Finding, GradientError, GradientWarning, Report
from keras_gradkit.diagnostics.thresholds import INIT_KINDS, KINDS, TRAINING_KINDS, Thresholds

__all__ = [
    "INIT_KINDS",
    "KINDS",
    "TRAINING_KINDS",
    "Finding",
    "GradientError",
    "GradientWarning",
    "Report",
    "Thresholds",
    "diagnose",
]
