"""xaibench: checkable attribution (LRP first) for earth-science neural networks."""

from . import methods  # the subpackage, callable: xaibench.methods() lists the method names
from .api import explain
from .errors import InputError, UnknownMethodError, UnsupportedLayerError, XaibenchError
from .explanation import Explanation

__version__ = "0.1.0"

__all__ = ["explain", "methods", "Explanation", "InputError", "UnknownMethodError",
           "UnsupportedLayerError", "XaibenchError", "__version__"]
