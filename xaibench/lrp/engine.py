"""The native LRP engine: prepare (trace + canonize, cached per model) and explain."""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .. import targets as targets_module
from ..errors import InputError, UnsupportedLayerError
from ..explanation import Explanation
from .composites import Composite
from .graph import Graph, shapes_of, trace
from .ledger import Ledger, LedgerRow
from .rules import Absorbed, ZBox

_CACHE: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()

#: the dtypes relevance is computed in: below float32 the ledger's sums lose the check
COMPUTE_DTYPES = (torch.float32, torch.float64)


# --- what the model computes: the key of the cached graph -----------------------------------------
def _simple(value):
    """A module attribute as a comparable value: numbers, strings and tuples of them by
    value, anything else by identity (a replaced object changes the fingerprint)."""
    if value is None or isinstance(value, (bool, int, float, str, torch.dtype, torch.device)):
        return value
    if torch.is_tensor(value):  # a plain tensor attribute read by forward(): edited in place too
        return ("tensor", _tensor_key(value))
    if isinstance(value, (tuple, list)) and all(
            v is None or isinstance(v, (bool, int, float, str)) for v in value):
        return (type(value).__name__, tuple(value))
    return ("id", id(value))


def _tensor_key(t):
    if t is None:
        return None
    return (id(t), t.data_ptr(), t._version, t.dtype, str(t.device), tuple(t.shape))


def fingerprint(model: nn.Module) -> tuple:
    """Everything that decides what model(x) computes and that the traced graph copies: per
    module its type and identity, its forward (class or instance), its plain attributes
    (stride, padding, negative_slope, eps, ...), its training flag, its hooks, and the
    identity and version of every parameter and buffer (an optimizer step or an in-place
    edit bumps the version). Any change re-traces; measured at about 1 ms for resnet50
    (the bench writes the figure), against a forward pass of the model for a check per call."""
    from torch.nn.modules import module as module_globals

    items = [("global hooks", tuple(map(id, module_globals._global_forward_hooks.values())),
              tuple(map(id, module_globals._global_forward_pre_hooks.values())))]
    for name, module in model.named_modules(remove_duplicate=False):
        attributes = tuple((k, _simple(v)) for k, v in vars(module).items()
                           if not k.startswith("_") and k != "training")
        hooks = tuple(tuple(map(id, getattr(module, store).values()))
                      for store in ("_forward_hooks", "_forward_pre_hooks"))
        tensors = tuple((k, _tensor_key(t)) for k, t in
                        list(module._parameters.items()) + list(module._buffers.items()))
        items.append((name, id(module), type(module), id(type(module).forward),
                      id(vars(module).get("forward")), module.training, attributes, hooks, tensors))
    return tuple(items)


# --- policies: dtype and mode ------------------------------------------------------------------------
def model_dtype(model: nn.Module):
    """The floating dtype of the model's parameters and buffers (None if it has none); a
    model mixing dtypes gets an error naming one tensor of each."""
    seen = {}
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.dtype.is_floating_point:
            seen.setdefault(t.dtype, name)
    if len(seen) > 1:
        listed = ", ".join(f"'{name}' is {str(d).replace('torch.', '')}" for d, name in seen.items())
        raise InputError(f"the model mixes floating dtypes ({listed}); cast it to one dtype (model.float() or "
                         "model.double())")
    return next(iter(seen), None)


def compute_dtype(model: nn.Module, x: torch.Tensor, dtype=None) -> torch.dtype:
    """The dtype the explanation is computed in: `dtype` if given, else the model's own
    (else the input's, for a model without floating tensors). Only float32 and float64:
    in half precision the ledger's sums would be too coarse to check anything."""
    own = model_dtype(model)
    chosen = dtype if dtype is not None else (own or x.dtype)
    if chosen not in COMPUTE_DTYPES:
        name = str(chosen).replace("torch.", "")
        whose = "requested" if dtype is not None else ("the model's dtype" if own else "the input's dtype")
        raise InputError(f"cannot explain in {name} ({whose}): relevance is computed in float32 or "
                         "float64; pass dtype=torch.float32 (the model is then explained as a float32 copy)")
    return chosen


def mode_dependent_modules(model: nn.Module) -> list[str]:
    """The modules in training mode whose forward reads self.training (dropout, BatchNorm,
    custom code with `if self.training`): their output depends on the mode."""
    found = []
    for name, module in model.named_modules():
        forward = type(module).forward
        code = getattr(forward, "__code__", None)
        if module.training and code is not None and "training" in code.co_names:
            found.append(f"'{name or '(model)'}' ({type(module).__name__})")
    return found


def check_mode(model: nn.Module):
    """A model whose output depends on its training mode is explained only in eval mode:
    in train mode dropout is random and BatchNorm normalizes by the batch, which no rule
    explains. Never silently: the caller switches with explain(..., mode='eval')."""
    dependent = mode_dependent_modules(model)
    if dependent:
        listed = ", ".join(dependent[:5]) + (f" and {len(dependent) - 5} more" if len(dependent) > 5 else "")
        raise InputError(f"the model is in train mode and {listed} behave differently in training; call "
                         "model.eval() first, or pass mode='eval' to explain it as in evaluation mode (the "
                         "model's own mode is restored afterwards)")


MODES = (None, "eval")


@contextmanager
def evaluation_mode(model: nn.Module, mode=None):
    """mode='eval': model.eval() for the call, every module's own flag restored afterwards
    (so a model in train mode is explained as in evaluation mode); None: nothing changes."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    flags = {module: module.training for module in model.modules()} if mode == "eval" else {}
    try:
        if mode == "eval":
            model.eval()
        yield
    finally:
        for module, flag in flags.items():
            module.train(flag)


def recorded_mode(model: nn.Module) -> str:
    """The mode an explanation records: 'eval', or 'train' for a model in train mode whose
    output does not depend on it (no dropout, no BatchNorm)."""
    return "train" if model.training else "eval"


# --- the prepare step: checked input, cached graph, verified once per model state ----------------
def prepared_graph(model: nn.Module, dtype: torch.dtype, device: torch.device, output=None,
                   example=None) -> tuple[Graph, dict]:
    """The traced graph of a model in a dtype and on a device (explaining `output` of a model
    with several), cached while the model's fingerprint is unchanged. Parameters are copied
    to `dtype` before any arithmetic (a BatchNorm is folded in the dtype explained). A model
    that only traces with concrete shapes gets a graph per input shape (of `example`).
    Returns (graph, per-graph flags)."""
    key = fingerprint(model)
    entry = _CACHE.get(model)
    if entry is None or entry["fingerprint"] != key:
        entry = {"fingerprint": key, "graphs": {}}
        _CACHE[model] = entry
    slot = (dtype, str(device), type(output), output)
    if entry["graphs"].get(slot) == "specialized" and example is not None:
        slot = slot + (shapes_of(example),)  # this model traces only with concrete shapes
    if slot not in entry["graphs"]:
        graph = trace(model, dtype, output, example).to(dtype, device)
        if graph.specialized_to is not None:
            entry["graphs"][slot] = "specialized"
            slot = slot + (graph.specialized_to,)
        entry["graphs"][slot] = {"graph": graph, "verified": False}
    return entry["graphs"][slot]["graph"], entry["graphs"][slot]


def as_tensor(x) -> torch.Tensor:
    if torch.is_tensor(x):
        return x
    try:
        import numpy as np

        return torch.as_tensor(np.asarray(x))
    except Exception:
        raise InputError(f"input must be a tensor or an array, got {type(x).__name__}") from None


def check_input(x, model: nn.Module, dtype=None) -> torch.Tensor:
    """A float tensor with a batch dimension, finite, on the model's device, in the dtype
    the explanation is computed in (see compute_dtype). The user's tensor is not changed."""
    x = as_tensor(x)
    if not x.dtype.is_floating_point:
        raise InputError(f"input must be floating point, got {x.dtype}")
    if x.dim() < 2:
        raise InputError(
            f"input of shape {tuple(x.shape)} has no batch dimension; pass x[None] for one sample")
    if x.shape[0] == 0:
        raise InputError("input has no samples (batch size 0)")
    # A finite sum means every element is finite (a NaN or an Inf anywhere makes any sum non-finite);
    # it costs one pass without a mask (ENSO's 64 maps: 0.05 ms against 2.2 ms for isfinite, more
    # than a whole gradient). A non-finite sum (a NaN, an Inf, or large finite values overflowing)
    # takes the exact per-sample check, which names the samples.
    if not bool(torch.isfinite(x.sum())):
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            raise InputError(f"input contains NaN or Inf in sample(s) {bad[:20]}"
                             + (f" and {len(bad) - 20} more" if len(bad) > 20 else ""))
    parameter = next(iter(model.parameters()), None)
    if parameter is not None and parameter.device != x.device:
        raise InputError(f"the model is on {parameter.device} but the input is on {x.device}")
    return x.detach().to(compute_dtype(model, x, dtype))


@dataclass
class Prepared:
    """What every native method and backend starts from."""

    x: torch.Tensor | tuple  # checked, in the computation dtype (a tuple for several inputs)
    graph: Graph
    flags: dict
    input_dtype: torch.dtype  # the dtype the user passed (recorded when it differs)
    mode: str

    @property
    def several(self) -> bool:
        return isinstance(self.x, tuple)

    @property
    def inputs(self) -> tuple:
        return self.x if self.several else (self.x,)

    @property
    def dtype(self):
        return self.inputs[0].dtype


def check_inputs(x, model: nn.Module, dtype=None) -> tuple:
    """Several inputs (a tuple or list of tensors): each checked as check_input does, in one
    dtype, with one batch size. Returns (checked tuple, the dtype the user gave)."""
    if len(x) == 0:
        raise InputError("an empty tuple of inputs")
    tensors = [as_tensor(t) for t in x]
    checked = []
    for i, t in enumerate(tensors):
        try:
            checked.append(check_input(t, model, dtype))
        except InputError as error:
            raise InputError(f"input {i}: {error}") from None
    chosen = dtype or checked[0].dtype
    checked = [t.to(chosen) for t in checked]
    batches = [t.shape[0] for t in checked]
    if len(set(batches)) > 1:
        raise InputError(f"the inputs have different batch sizes {batches}: every input needs one row per sample")
    return tuple(checked), tensors[0].dtype


def prepare(model: nn.Module, x, dtype=None, output=None) -> Prepared:
    """Check the input (a tensor, or a tuple of tensors for a model with several inputs) and
    the model's mode, get the cached graph and verify it against the model itself whenever
    the graph is new, i.e. after any change of the model (see fingerprint). The caller runs
    graph.forward first thing, so a wrong input shape gets an error naming the layer.
    output: which of several outputs is explained (an index or a key)."""
    if isinstance(x, (tuple, list)):
        x, input_dtype = check_inputs(x, model, dtype)
        first = x[0]
    else:
        x = as_tensor(x)
        input_dtype = x.dtype
        x = check_input(x, model, dtype)
        first = x
    graph, flags = prepared_graph(model, first.dtype, first.device, output, x)  # a layer without a rule: named first
    if len(x if isinstance(x, tuple) else (x,)) != len(graph.input_names):
        given = f"{len(x)} input tensors" if isinstance(x, tuple) else "one input tensor"
        raise InputError(f"the model takes {len(graph.input_names)} input tensor(s) ({', '.join(graph.input_names)}) "
                         f"but got {given}; pass several inputs as a tuple (x1, x2, ...)")
    check_mode(model)
    if not flags["verified"]:
        _verify(model, graph, x, output)
        flags["verified"] = True
    return Prepared(x, graph, flags, input_dtype, recorded_mode(model))


def select_output(result, output):
    """The output explained from what the model returned: itself, or output= of a tuple or dict."""
    if output is None or torch.is_tensor(result):
        return result
    return result[output]


def _verify(model: nn.Module, graph: Graph, x, output=None):
    """The traced graph must reproduce the model's own output (it would not if, say, a
    forward hook changes what a layer returns). The model runs in its own mode, which
    check_mode has made sure does not matter, and in its own dtype."""
    inputs = x if isinstance(x, tuple) else (x,)
    own_dtype = model_dtype(model) or inputs[0].dtype
    with torch.no_grad():
        # the graph first: a wrong input shape gets an error naming the layer, not torch's
        ours = graph.forward(x, {"composite": None}, until=graph.output_name)[graph.output_name]
        reference = select_output(model(*(t.to(own_dtype) for t in inputs)), output)
    if not torch.is_tensor(reference) or reference.shape != ours.shape:
        raise InputError("the traced graph does not reproduce the model's output shape "
                         f"({tuple(ours.shape)} vs {getattr(reference, 'shape', type(reference))})")
    scale = reference.abs().max().clamp(min=1e-6).to(ours.dtype)
    difference = (ours - reference.to(ours.dtype)).abs().max() / scale
    tolerance = 1e-3 if torch.float32 in (own_dtype, ours.dtype) else 1e-8
    if difference > tolerance:
        raise InputError(
            f"the traced graph does not reproduce the model's output (relative difference "
            f"{float(difference):.3g}); forward hooks that change a layer's output and data-dependent code "
            "are not supported")


def explain_lrp(model: nn.Module, x, composite: Composite, target=None, dtype=None, output=None) -> Explanation:
    """LRP with a composite. x: a tensor, or a tuple of tensors for a model with several
    inputs: the relevance is then a tuple shaped like them, and one ledger covers them all
    (the sum over every input plus what was absorbed equals the output)."""
    prepared = prepare(model, x, dtype, output)
    x, graph = prepared.x, prepared.graph
    state = {"composite": composite}
    with torch.no_grad():
        values = graph.forward(x, state, lean=True)
        explained_output = values[graph.explained_name]
        if composite.needs_bounds():
            _set_bounds(graph, composite, prepared.inputs, values, state)
        selected = targets_module.resolve(explained_output, target)
        seed = selected.selection * explained_output.unsqueeze(0).expand(
            (selected.count,) + tuple(explained_output.shape)).reshape(selected.selection.shape)
        per_walk = targets_per_walk(selected.count, values, explained_output.shape[0], composite.target_chunk)
        relevance, rows = _walk_in_chunks(graph, values, seed, state, selected.count, per_walk)
        explained = selected.explained(explained_output)

    ledger = _ledger(rows, composite, explained, selected)
    per_input = relevance if isinstance(relevance, tuple) else (relevance,)
    per_input = tuple(selected.arrange(r) for r in per_input)
    output_arranged = selected.arrange(explained)
    input_total = sum(r.sum(tuple(range(output_arranged.dim(), r.dim()))) for r in per_input)
    conservation_error = (input_total + ledger.absorbed() - output_arranged).abs()
    return Explanation(relevance=per_input if prepared.several else per_input[0], output=output_arranged,
                       method=composite.name, backend="native", target=selected.description, ledger=ledger,
                       conservation_error=conservation_error, stripped=graph.stripped,
                       dtype=prepared.dtype, input_dtype=prepared.input_dtype, mode=prepared.mode)


def _ledger(rows, composite: Composite, explained: torch.Tensor, selected) -> Ledger:
    """The ledger's rows from the walk's per-step sums ([T*B] tensors, or numbers for a share a
    step never has): stacked into one [T*B, steps, 6] tensor and arranged once ([B, ...] or
    [B, T, ...]), each row's columns views of it. Arranging each of them alone was 4 ms of a
    25 ms call on the radar transformer (60 steps x 6 columns)."""
    if not rows:
        return Ledger([])
    zero = explained.new_zeros(explained.shape)

    def as_row(v):
        if torch.is_tensor(v):
            return v
        return zero if v == 0 else torch.full_like(explained, float(v))

    columns = [as_row(v) for _, r_out, r_in, a in rows
               for v in (r_out, r_in, a.bias, a.stabilizer, a.dropped, a.constant)]
    block = selected.arrange(torch.stack(columns, 1).view(explained.shape[0], len(rows), 6))
    return Ledger([LedgerRow(step.path, step.kind, step.rule_name(composite), *block[..., i, :].unbind(-1))
                   for i, (step, *_) in enumerate(rows)])


#: elements of the largest tensor of one relevance walk when the targets are chunked automatically:
#: 2**22 (16 MiB in float32). ERF maps of 8 radar pixels (N=3, 256x256, 2 samples; 4M-element
#: layers per target) on one CPU thread, one forward pass then walks of 1, 2, 4 or 8 targets:
#: 8.3x, 9.3x, 10.4x and 10.8x one gradient, against 8.5x for a loop of whole calls. Larger walks
#: lose because every new large tensor is fresh memory the allocator has to fault in.
WALK_ELEMENTS = 2 ** 22


def targets_per_walk(count: int, values: dict, batch: int, chosen: int | None) -> int:
    """How many of `count` targets one relevance walk explains: `chosen` (the target_chunk
    option) if given, else as many as keep the walk's largest per-layer tensor (its rows are
    targets x samples) within WALK_ELEMENTS, at least one."""
    if chosen is not None:
        return min(chosen, count)
    largest = max((v.numel() // batch for v in values.values()
                   if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == batch), default=1)
    return max(1, min(count, WALK_ELEMENTS // max(1, batch * largest)))


def _walk_in_chunks(graph: Graph, values: dict, seed: torch.Tensor, state: dict, count: int, per_walk: int):
    """graph.relevance over the targets in chunks of per_walk (the seed is target-major, so a
    chunk is a block of rows), all from the one forward pass; the last walk releases the
    values. Returns what one walk over every target returns: relevance and ledger rows,
    concatenated in the same row order."""
    if per_walk >= count:
        return graph.relevance(values, seed, state, release=True)
    batch = seed.shape[0] // count
    parts, sizes = [], []
    for start in range(0, count, per_walk):
        stop = min(start + per_walk, count)
        parts.append(graph.relevance(values, seed[start * batch:stop * batch], state, release=stop == count))
        sizes.append((stop - start) * batch)
    relevances = [part[0] if isinstance(part[0], tuple) else (part[0],) for part in parts]
    joined = tuple(torch.cat(pieces) for pieces in zip(*relevances))
    walks = [part[1] for part in parts]
    if len({tuple(step.name for step, *_ in walk) for walk in walks}) != 1:
        raise RuntimeError("the chunked relevance walks visited different steps (an engine bug: the steps a walk "
                           "reaches depend on the graph, not on the targets)")

    def rows_of(values_per_walk):
        return torch.cat([v if torch.is_tensor(v) else seed.new_full((n,), float(v))
                          for v, n in zip(values_per_walk, sizes)])

    rows = []
    for per_step in zip(*walks):
        step = per_step[0][0]
        absorbed = Absorbed(*(rows_of([getattr(a, field) for *_, a in per_step])
                              for field in ("bias", "stabilizer", "dropped", "constant")))
        rows.append((step, rows_of([r_out for _, r_out, _, _ in per_step]),
                     rows_of([r_in for _, _, r_in, _ in per_step]), absorbed))
    return (joined if len(joined) > 1 else joined[0]), rows


def _set_bounds(graph: Graph, composite: Composite, inputs: tuple, values: dict, state: dict):
    """z^B bounds in input space -> per first layer. Default: each sample's min and max (of
    each input, for a model with several)."""
    def as_bound(x, value, reduce):
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

    lows = tuple(as_bound(x, composite.low, lambda f: f.min(1).values) for x in inputs)
    highs = tuple(as_bound(x, composite.high, lambda f: f.max(1).values) for x in inputs)
    for x, low, high in zip(inputs, lows, highs):
        if bool((low > x).any()) or bool((high < x).any()):
            raise InputError("the input lies outside the z^B bounds low <= x <= high")
    for step in graph.linear_steps():
        if step.first and step.name in graph.bounds_blocked and isinstance(
                composite.rule_for(step.op.kind, True), ZBox):
            blocker = graph.bounds_blocked[step.name]
            raise UnsupportedLayerError(
                step.path, step.kind, f"z^B needs bounds on the input of this first layer, but they cannot be "
                f"carried through '{blocker}' (only monotone steps carry them: activations, pooling, reshapes, "
                "padding, scaling, adding a constant); use a method without z^B")
    for name, (layer_low, layer_high) in graph.map_bounds(lows, highs, values).items():
        state[("bounds", name)] = {"low": layer_low, "high": layer_high}
