"""Attribution methods other than LRP, and the optimal input (which is not an attribution).

This subpackage is also callable: `xaibench.methods()` (or `xaibench.methods("zennit")`)
lists the canonical method names per backend, as documented, while
`xaibench.methods.optimal_input` and the other functions stay reachable under the same name.
"""

import sys
import types

from .gradient import METHODS as _GRADIENT_METHODS
from .gradient import gradient, input_x_gradient
from .integrated_gradients import integrated_gradients
from .occlusion import occlusion
from .optimal_input import OptimalInput, optimal_input
from .smoothgrad import smoothgrad

METHODS = {**_GRADIENT_METHODS, "integrated_gradients": integrated_gradients, "smoothgrad": smoothgrad,
           "occlusion": occlusion}

__all__ = ["METHODS", "gradient", "input_x_gradient", "integrated_gradients", "smoothgrad", "occlusion",
           "optimal_input", "OptimalInput"]


class _CallableModule(types.ModuleType):
    def __call__(self, backend: str | None = None):
        """The canonical method names per backend (or for one backend): xaibench.api.methods."""
        from ..api import methods

        return methods(backend)


sys.modules[__name__].__class__ = _CallableModule
