"""Attribution methods other than LRP."""

from .gradient import METHODS, gradient, input_x_gradient

__all__ = ["METHODS", "gradient", "input_x_gradient"]
