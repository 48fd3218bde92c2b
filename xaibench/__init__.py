"""xaibench: checkable attribution (LRP first) for earth-science neural networks."""

from .api import explain, methods
from .errors import InputError, UnknownMethodError, UnsupportedLayerError, XaibenchError
from .explanation import Explanation

__version__ = "0.1.0"

__all__ = ["explain", "methods", "Explanation", "InputError", "UnknownMethodError",
           "UnsupportedLayerError", "XaibenchError", "__version__"]
