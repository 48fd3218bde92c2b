"""The public entry points: explain() and methods()."""

from __future__ import annotations

from torch import nn

from .errors import UnknownMethodError
from .explanation import Explanation
from .lrp import composites
from .lrp.engine import explain_lrp
from .methods import METHODS as NATIVE_METHODS

BACKENDS = ("native", "zennit", "innvestigate")


def methods(backend: str | None = None):
    """Canonical method names per backend (or for one backend)."""
    from .backends import table as backend_table

    table = {
        "native": sorted(NATIVE_METHODS) + sorted(composites.PRESETS),
        "zennit": backend_table.available("zennit"),
        "innvestigate": backend_table.available("innvestigate"),
    }
    if backend is None:
        return table
    if backend not in table:
        raise ValueError(f"unknown backend '{backend}'; backends: {', '.join(table)}")
    return table[backend]


def explain(model: nn.Module, x, method: str = "lrp.epsilon", target=None, backend: str = "native",
            dtype=None, **options) -> Explanation:
    """Explain model(x) for the target output(s) with a method on a backend.

    See DESIGN.md for targets and options. Native LRP returns a ledger and the
    conservation error per sample; dtype=torch.float64 runs in double precision.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if backend == "native":
        if method in composites.PRESETS:
            explanation = explain_lrp(model, x, composites.composite(method, **options), target, dtype)
        elif method in NATIVE_METHODS:
            explanation = NATIVE_METHODS[method](model, x, target, dtype, **options)
        else:
            raise UnknownMethodError(method, backend, methods("native"))
        explanation.options = dict(options)
        return explanation
    if backend == "zennit":
        from .backends import zennit_backend

        return zennit_backend.explain(model, x, method, target, dtype, **options)
    if backend == "innvestigate":
        from .backends import innvestigate_backend

        return innvestigate_backend.explain(model, x, method, target, dtype, **options)
    raise ValueError(f"unknown backend '{backend}'; backends: {', '.join(BACKENDS)}")
