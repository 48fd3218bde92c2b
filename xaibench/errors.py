"""Errors raised by xaibench.

Every error names the thing the user gave that is wrong (a layer path, a sample index, a
target value), so that nobody has to read a traceback from inside torch.
"""


class XaibenchError(Exception):
    """Base class of the errors xaibench raises on purpose."""


class UnsupportedLayerError(XaibenchError, TypeError):
    """A module or operation for which the engine has no relevance rule.

    Raised instead of silently falling back to the plain gradient, which is what other
    libraries do and what silently breaks conservation.
    """

    def __init__(self, path: str, kind: str, reason: str = ""):
        self.path = path
        self.kind = kind
        message = f"no relevance rule for layer '{path}' of type {kind}"
        if reason:
            message += f": {reason}"
        super().__init__(message)


class InputError(XaibenchError, ValueError):
    """The input, its shape or the target does not fit the model."""


class ChunkError(InputError):
    """A chunk of a scattered explanation step that is malformed (not I/N with 1 <= I <= N) or
    that does not gather into one whole (a chunk missing or given twice, chunks of different
    runs); the message names the chunk."""


class OneInputOnlyError(InputError):
    """Several input tensors given to a method or backend that explains models with one."""


class UnknownMethodError(XaibenchError, ValueError):
    """A method name a backend does not have; the message lists what it has."""

    def __init__(self, method: str, backend: str, available):
        self.method = method
        self.backend = backend
        self.available = sorted(available)
        super().__init__(
            f"backend '{backend}' has no method '{method}'; it has: {', '.join(self.available)}"
        )


class BackendUnavailableError(XaibenchError, RuntimeError):
    """A backend whose library or environment is not installed here (e.g. no .venv-tf for
    innvestigate); the message says how to install it."""

    def __init__(self, backend: str, reason: str):
        self.backend = backend
        self.reason = reason
        super().__init__(f"backend '{backend}' is not available: {reason}")


class ExportError(XaibenchError, TypeError):
    """A model another library cannot mirror layer by layer; the message names the layer."""

    def __init__(self, backend: str, path: str, kind: str, reason: str = ""):
        self.backend = backend
        self.path = path
        self.kind = kind
        message = f"backend '{backend}' cannot mirror layer '{path}' of type {kind}"
        if reason:
            message += f": {reason}"
        super().__init__(message)
