"""The public entry points: explain() and methods()."""

from __future__ import annotations

import torch
from torch import nn

from . import outputs
from .errors import OneInputOnlyError, UnknownMethodError
from .explanation import Explanation
from .lrp import composites, engine
from .lrp.engine import explain_lrp
from .methods import METHODS as NATIVE_METHODS

BACKENDS = ("native", "zennit", "innvestigate", "captum", "lxt")


def methods(backend: str | None = None):
    """Canonical method names per backend (or for one backend)."""
    from .backends import table as backend_table

    table = {
        "native": sorted(NATIVE_METHODS) + composites.names(),
        "zennit": backend_table.available("zennit"),
        "innvestigate": backend_table.available("innvestigate"),
        "captum": backend_table.available("captum"),
        "lxt": backend_table.available("lxt"),
    }
    if backend is None:
        return table
    if backend not in table:
        raise ValueError(f"unknown backend '{backend}'; backends: {', '.join(table)}")
    return table[backend]


def explain(model: nn.Module, x, method: str = "lrp.epsilon", target=None, backend: str = "native",
            dtype=None, mode=None, output=None, **options) -> Explanation:
    """Explain model(x) for the target output(s) with a method on a backend.

    x: a tensor [B, ...], or a tuple of tensors (x1, x2, ...) for a model with several
    inputs (native LRP, gradient and input x gradient): the relevance is then a tuple shaped
    like them, with one ledger across them.

    output: for a model returning several outputs, which one is explained (an index into
    a tuple, a key of a dict); without it such a model gets an error listing the choices.

    target: None (the argmax per sample), an output index, one index per sample [B],
    several per sample [B, T], or a boolean mask over the output (docs/architecture.md,
    "Public API"). options: the method's own (epsilon, gamma, alpha/beta, low/high, bias,
    ...; docs/methods.md lists them per method and backend).

    dtype: the dtype to compute in (float32 or float64); default the model's own. An input
    of another dtype is cast to it, and the explanation records both (e.dtype,
    e.input_dtype); the model itself is never cast (a copy of its parameters is).

    mode: None explains the model as it is; a model in train mode whose output depends on
    the mode (dropout, BatchNorm, code reading self.training) is refused with an error that
    names those layers. mode='eval' explains it as in evaluation mode and restores the
    model's own mode afterwards. e.mode records the mode explained.

    Native LRP returns a ledger and the conservation error per sample.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    with engine.evaluation_mode(model, mode):
        explanation = _explain(model, x, method, target, backend, dtype, output, options)
        explanation.mode = engine.recorded_mode(model)
    first = explanation.relevance[0] if isinstance(explanation.relevance, tuple) else explanation.relevance
    explanation.dtype = first.dtype
    if torch.is_tensor(x):
        explanation.input_dtype = x.dtype
    explanation.output_choice = output
    return explanation


def _explain(model, x, method, target, backend, dtype, output, options) -> Explanation:
    if backend == "native":
        if method in composites.REGISTRY:
            explanation = explain_lrp(model, x, composites.composite(method, **options), target, dtype, output)
        elif method in NATIVE_METHODS:
            explanation = NATIVE_METHODS[method](model, x, target, dtype, output=output, **options)
        else:
            raise UnknownMethodError(method, backend, methods("native"))
        explanation.options = dict(options)
        return explanation
    if isinstance(x, (tuple, list)):
        raise OneInputOnlyError(f"backend '{backend}' explains models with one input tensor; for several inputs use "
                         "backend='native'")
    model = outputs.for_backend(model, output)
    if backend == "zennit":
        from .backends import zennit_backend

        return zennit_backend.explain(model, x, method, target, dtype, **options)
    if backend == "innvestigate":
        from .backends import innvestigate_backend

        return innvestigate_backend.explain(model, x, method, target, dtype, **options)
    if backend == "captum":
        from .backends import captum_backend

        return captum_backend.explain(model, x, method, target, dtype, **options)
    if backend == "lxt":
        from .backends import lxt_backend

        return lxt_backend.explain(model, x, method, target, dtype, **options)
    raise ValueError(f"unknown backend '{backend}'; backends: {', '.join(BACKENDS)}")
