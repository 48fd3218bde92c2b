"""Attribution methods other than LRP, and the optimal input (which is not an attribution)."""

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
