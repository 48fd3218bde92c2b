"""The native LRP engine: prepare (trace + canonize, cached per model) and explain."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from .. import targets as targets_module
from ..errors import InputError
from ..explanation import Explanation
from .composites import Composite
from .graph import Graph, trace
from .ledger import Ledger, LedgerRow

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()


def _signature(model: nn.Module):
    """Identity and version of every parameter and buffer: changes when weights are
    replaced or modified in place (an optimizer step), so a stale graph is never used."""
    items = []
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        items.append((name, id(t), t.data_ptr(), t._version, t.dtype, str(t.device), tuple(t.shape)))
    return tuple(items)


def prepared_graph(model: nn.Module, dtype: torch.dtype, device: torch.device) -> tuple[Graph, dict]:
    """The traced graph of a model in a dtype and on a device, cached while the model's
    parameters are unchanged. Returns (graph, cache entry for per-graph flags)."""
    signature = _signature(model)
    entry = _CACHE.get(model)
    if entry is None or entry["signature"] != signature:
        entry = {"signature": signature, "base": trace(model), "graphs": {}}
        _CACHE[model] = entry
    key = (dtype, str(device))
    if key not in entry["graphs"]:
        entry["graphs"][key] = {"graph": entry["base"].to(dtype, device), "verified": False}
    return entry["graphs"][key]["graph"], entry["graphs"][key]


def check_input(x, model: nn.Module, dtype=None) -> torch.Tensor:
    """A float tensor with a batch dimension, finite, on the model's device."""
    if not torch.is_tensor(x):
        try:
            import numpy as np

            x = torch.as_tensor(np.asarray(x))
        except Exception:
            raise InputError(f"input must be a tensor or an array, got {type(x).__name__}") from None
    if not x.dtype.is_floating_point:
        raise InputError(f"input must be floating point, got {x.dtype}")
    if x.dim() < 2:
        raise InputError(
            f"input of shape {tuple(x.shape)} has no batch dimension; pass x[None] for one sample")
    if x.shape[0] == 0:
        raise InputError("input has no samples (batch size 0)")
    finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise InputError(f"input contains NaN or Inf in sample(s) {bad[:20]}"
                         + (f" and {len(bad) - 20} more" if len(bad) > 20 else ""))
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.device != x.device:
        raise InputError(f"the model is on {parameter.device} but the input is on {x.device}")
    if dtype is not None:
        x = x.to(dtype)
    return x.detach()


def _verify(model: nn.Module, graph: Graph, x: torch.Tensor, state: dict):
    """Once per prepared graph: the traced graph must reproduce the model's own output
    (it would not if, say, a forward hook changes what a layer returns)."""
    training = {m: m.training for m in model.modules()}
    parameter = next(iter(model.parameters()), None)
    model_dtype = parameter.dtype if parameter is not None else x.dtype
    try:
        model.eval()
        with torch.no_grad():
            reference = model(x.to(model_dtype))
    finally:
        for module, flag in training.items():
            module.train(flag)
    values = graph.forward(x, dict(state), until=graph.output_name)
    ours = values[graph.output_name]
    if not torch.is_tensor(reference) or reference.shape != ours.shape:
        raise InputError("the traced graph does not reproduce the model's output shape "
                         f"({tuple(ours.shape)} vs {getattr(reference, 'shape', type(reference))})")
    scale = reference.abs().max().clamp(min=1e-6).to(ours.dtype)
    difference = (ours - reference.to(ours.dtype)).abs().max() / scale
    tolerance = 1e-3 if model_dtype == torch.float32 or ours.dtype == torch.float32 else 1e-8
    if difference > tolerance:
        raise InputError(
            f"the traced graph does not reproduce the model's output (relative difference "
            f"{float(difference):.3g}); forward hooks or data-dependent code are not supported")


def explain_lrp(model: nn.Module, x, composite: Composite, target=None, dtype=None) -> Explanation:
    x = check_input(x, model, dtype)
    graph, flags = prepared_graph(model, x.dtype, x.device)
    state = {"composite": composite}
    with torch.no_grad():
        values = graph.forward(x, state)  # first: a wrong input shape gets an error naming the layer
    if not flags["verified"]:
        _verify(model, graph, x, state)
        flags["verified"] = True
    with torch.no_grad():
        output = values[graph.explained_name]
        if composite.needs_bounds():
            _set_bounds(graph, composite, x, state)
        selected = targets_module.resolve(output, target)
        seed = selected.selection * output.unsqueeze(0).expand(
            (selected.count,) + tuple(output.shape)).reshape(selected.selection.shape)
        relevance, rows = graph.relevance(values, seed, state)
        explained = selected.explained(output)

    def arrange(v):
        if not torch.is_tensor(v):
            v = torch.full_like(explained, float(v))
        return selected.arrange(v)

    ledger = Ledger([
        LedgerRow(step.path, step.kind, step.rule_name(composite), arrange(r_out), arrange(r_in),
                  arrange(a.bias), arrange(a.stabilizer), arrange(a.dropped), arrange(a.constant))
        for step, r_out, r_in, a in rows
    ])
    relevance = selected.arrange(relevance)
    output_arranged = selected.arrange(explained)
    dims = tuple(range(output_arranged.dim(), relevance.dim()))
    input_total = relevance.sum(dims)
    conservation_error = (input_total + ledger.absorbed() - output_arranged).abs()
    return Explanation(relevance=relevance, output=output_arranged, method=composite.name,
                       backend="native", target=selected.description, ledger=ledger,
                       conservation_error=conservation_error, stripped=graph.stripped)


def _set_bounds(graph: Graph, composite: Composite, x: torch.Tensor, state: dict):
    """z^B bounds in input space -> per first layer. Default: each sample's min and max."""
    def as_bound(value, reduce):
        if value is None:
            flat = x.reshape(x.shape[0], -1)
            v = reduce(flat)
            return v.view((-1,) + (1,) * (x.dim() - 1)).expand_as(x)
        t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
        try:
            return t.expand_as(x)
        except RuntimeError:
            raise InputError(f"z^B bound of shape {tuple(t.shape)} does not broadcast to the input "
                             f"{tuple(x.shape)}") from None

    low = as_bound(composite.low, lambda f: f.min(1).values)
    high = as_bound(composite.high, lambda f: f.max(1).values)
    if bool((low > x).any()) or bool((high < x).any()):
        raise InputError("the input lies outside the z^B bounds low <= x <= high")
    lows, highs = graph.map_bounds(low, state), graph.map_bounds(high, state)
    for name in lows:
        state[("bounds", name)] = {"low": lows[name], "high": highs[name]}
