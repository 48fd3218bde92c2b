"""The same explanations computed by zennit 0.5.1, in process.

Each canonical method maps to a zennit composite with the same rules and parameters as
the native engine (see METHODS). zennit registers hooks on the model and, with the
BatchNorm canonizer, edits its weights for the duration of the call; both are undone
when the call returns (tests check the weights bit for bit). The mode and dtype policies are
the native engine's (engine.prepare): a model in train mode where it matters is refused, and a
model explained in another dtype than its own runs as a copy in that dtype.

Known differences from the native engine, measured in the tests:
- a functional `x + y` (residual) gets the plain gradient in zennit (relevance counted
  twice), the native engine splits it by the Norm rule;
- a BatchNorm not directly after a linear layer is Pass in zennit;
- upsampling has no zennit rule (plain gradient): equal to the Norm rule for nearest
  upsampling of non-zero inputs, different for bilinear;
- modules zennit does not know get the plain gradient silently. explain() says which: the
  Explanation's `gradient_fallback` lists every leaf module the composite maps to no rule
  (and that is not a selection whose gradient is the rule: identity, dropout, flatten, max
  pooling, nearest upsampling, zero padding, shuffles), and every functional arithmetic step
  of the forward (x + y, a * x, F.layer_norm, ...) that zennit's module hooks cannot see, as
  "path (Type)" and "path: function name". zennit 0.5.1 maps every module of
  zennit.types.Activation (ReLU, SiLU, GELU, Hardswish, Sigmoid, Tanh, ..., even
  MultiheadAttention) to Pass, the identity rule, and BatchNorm to Pass: those are rules, not
  a fallback. LayerNorm, GroupNorm, Softmax inside the model, bilinear upsampling, Embedding
  and any custom leaf module are not mapped: the plain gradient.

A model the native engine cannot trace (UnsupportedLayerError) is still explained by zennit,
which needs no trace: the input and mode checks are the engine's, the final softmax/sigmoid
module is found by running the model once, and explanation.native_trace names the reason.
"""

from __future__ import annotations

import copy
import operator
import weakref

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .. import layers
from .. import targets as targets_module
from ..errors import ExportError, InputError, UnknownMethodError, UnsupportedLayerError
from ..explanation import Explanation
from ..lrp import composites as native_composites
from ..lrp import engine
from . import table


def _zennit():
    try:
        import zennit.canonizers
        import zennit.composites
        import zennit.rules
        import zennit.types
    except ImportError as error:  # pragma: no cover - the set-up installs it
        raise ImportError("the zennit backend needs zennit==0.5.1 (pip install 'xaibench[zennit]')") from error
    return zennit


def _zero(o):
    return None if o["bias"] else ["bias"]


def _rule(z, rule: table.Rule, o):
    kwargs = {keyword: o[option] for keyword, option in rule.params.items()}
    return getattr(z.rules, rule.name)(**kwargs, **rule.fixed, zero_params=_zero(o))


def build_composite(spec: table.Zennit, o, z):
    """The zennit composite a table entry describes (None: the plain gradient)."""
    canonizers = [z.canonizers.SequentialMergeBatchNorm()]
    if spec.kind == "gradient":
        return None
    if spec.kind == "composite":
        kwargs = {keyword: o[option] for keyword, option in spec.params.items()}
        return getattr(z.composites, spec.composite)(**kwargs, stabilizer=o["stabilizer"], zero_params=_zero(o),
                                                     canonizers=canonizers)
    layer_map = z.composites.layer_map_base(o["stabilizer"])
    if spec.everywhere is not None:
        layer_map = layer_map + [(z.types.Linear, _rule(z, spec.everywhere, o))]
    else:
        layer_map = layer_map + [(z.types.Convolution, _rule(z, spec.conv, o)), (nn.Linear, _rule(z, spec.dense, o))]
    if spec.first is not None:
        return z.composites.SpecialFirstLayerMapComposite(
            layer_map=layer_map, first_map=[(z.types.Linear, _rule(z, spec.first, o))], canonizers=canonizers)
    return z.composites.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)


#: canonical name -> the table's description of the zennit run
METHODS = {name: method.zennit for name, method in table.METHODS.items() if method.zennit is not None}


class _StripFinal:
    """Make the model's final softmax/sigmoid module an identity for the call (a forward
    hook returning the module's input), so zennit explains the logit like the engine."""

    def __init__(self, model, paths):
        self.handles = []
        self.model = model
        self.paths = paths

    def __enter__(self):
        for path in self.paths:
            try:
                module = self.model.get_submodule(path)
            except AttributeError:
                raise InputError(f"the zennit backend cannot strip the functional final layer '{path}'; "
                                 "end the model with an nn.Softmax/nn.Sigmoid module") from None
            self.handles.append(module.register_forward_hook(lambda m, inputs, output: inputs[0]))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


# --- where zennit falls back to the plain gradient ---------------------------------------------
def _selection(module: nn.Module) -> bool:
    """A leaf module without a zennit rule whose plain gradient is nevertheless what the native
    rule does: every output is one input (or a copy of it), so relevance goes back unchanged
    (nearest upsampling: summed over the copies, the Norm rule for non-zero inputs; max pooling:
    the winner takes all, native's default)."""
    if isinstance(module, (*layers.IDENTITY, nn.Flatten, nn.Unflatten, nn.ChannelShuffle, nn.PixelShuffle,
                           nn.PixelUnshuffle, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)):
        return True
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        return True   # an empty container: the identity (torchvision's shufflenet has some)
    if isinstance(module, nn.Upsample):
        return module.mode == "nearest"
    if isinstance(module, nn.modules.padding._ConstantPadNd):
        return module.value == 0
    # torchvision's Permute module; its StochasticDepth is the identity in eval mode
    torchvision = type(module).__module__.startswith("torchvision.")
    return torchvision and (type(module).__name__ == "Permute"
                            or (type(module).__name__ == "StochasticDepth" and not module.training))


#: functional steps whose gradient is the native rule (shape changes, selections, copies, ReLU:
#: relevance reaches a ReLU's zero outputs only under flat/w^2)
_SELECTION_FUNCTIONS = {operator.getitem, getattr, torch.flatten, torch.cat, torch.concat, torch.stack,
                        torch.reshape, torch.permute, torch.transpose, torch.squeeze, torch.unsqueeze,
                        torch.chunk, torch.split, torch.relu, F.relu, F.dropout, F.max_pool1d, F.max_pool2d,
                        F.max_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
                        torch.channel_shuffle, F.pixel_shuffle, F.pixel_unshuffle}
_SELECTION_METHODS = {"view", "reshape", "flatten", "permute", "transpose", "contiguous", "size", "dim",
                      "chunk", "split", "squeeze", "unsqueeze", "expand", "expand_as", "relu", "relu_", "clone",
                      "detach", "to", "type_as", "__getitem__"}


class _LeafTracer(torch.fx.Tracer):
    """Every module without children is one node (zennit sees modules, not their insides)."""

    def is_leaf_module(self, module, qualified_name):
        return next(module.children(), None) is None or super().is_leaf_module(module, qualified_name)


def _function_name(node) -> str:
    target = node.target
    if node.op == "call_method":
        return f"Tensor.{target}"
    module = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", str(target))
    return f"{module.replace('torch.nn.functional', 'F').replace('_operator', 'operator')}.{name}".lstrip(".")


def _nodes(node) -> list:
    """The fx nodes among a node's arguments."""
    found = []
    torch.fx.node.map_arg((node.args, node.kwargs), found.append)
    return found


def _functional_fallback(model: nn.Module, relu_matters: bool = False) -> list[str]:
    """The functional steps of the forward that zennit leaves to the gradient (torch.fx).
    relu_matters: a functional relu counts too (under flat and w^2, see _spreads_to_dead_units)."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception as error:  # data-dependent control flow, ...: say so instead of guessing
        return [f"(functional steps not inspected: torch.fx could not trace the model: "
                f"{type(error).__name__}: {' '.join(str(error).split())[:120]})"]
    found = []
    sizes = set()   # nodes that are shapes or numbers computed from them, not tensors
    for node in graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        operands = _nodes(node)
        if (node.op == "call_method" and node.target in ("size", "dim")) or node.target is getattr or (
                operands and all(a in sizes for a in operands)):
            sizes.add(node)
            continue
        relu = node.target in (torch.relu, F.relu, "relu", "relu_")
        if node.op == "call_function" and node.target in _SELECTION_FUNCTIONS and not (relu and relu_matters):
            continue
        if node.op == "call_method" and node.target in _SELECTION_METHODS and not (relu and relu_matters):
            continue
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack)[-1] if stack else "(model)"
        found.append(f"{path}: {_function_name(node)}")
    return list(dict.fromkeys(found))


def gradient_fallback(model: nn.Module, composite, stripped=()) -> list[str]:
    """What zennit leaves to the plain gradient under `composite` (None: the gradient is the
    method, nothing to report): each leaf module the composite's module_map gives no hook,
    as zennit's Composite.register asks it (same order, a fresh context, so a first-layer map
    sees the same first layer), unless its gradient is the rule anyway (_selection) or it is a
    final softmax/sigmoid stripped for the call; then the functional arithmetic steps."""
    if composite is None:
        return []
    found = []
    context = {}
    for name, module in model.named_modules():
        hook = composite.module_map(context, name, module)
        if hook is not None or next(module.children(), None) is not None:
            continue
        if _selection(module) or name in stripped:
            continue
        found.append(f"{name or '(model)'} ({type(module).__name__})")
    return found + _functional_fallback(model, relu_matters=_spreads_to_dead_units(composite))


#: how a note names zennit's gradient fallback (the census, the reference cases' metrics)
FALLBACK = "zennit gradient fallback"
FALLBACK_LISTED = 8   # entries of a fallback list named in a note; the rest are counted by kind


def fallback_note(fallback: list[str]) -> str:
    """'zennit gradient fallback: <paths and types>' (gradient_fallback's list),
    the first FALLBACK_LISTED entries by name and the rest counted by kind."""
    note = f"{FALLBACK}: " + ", ".join(fallback[:FALLBACK_LISTED])
    rest = fallback[FALLBACK_LISTED:]
    if rest:
        note += f" and {len(rest)} more ({fallback_kinds(rest)})"
    return note


def fallback_kinds(fallback: list[str]) -> str:
    """gradient_fallback's entries counted by kind: '8 operator.add, 2 Upsample'."""
    kinds: dict[str, int] = {}
    for entry in fallback:
        kind = entry.rsplit("(", 1)[-1].rstrip(")") if entry.endswith(")") else entry.rsplit(": ", 1)[-1]
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{count} {kind}" for kind, count in kinds.items())



def _spreads_to_dead_units(composite) -> bool:
    """Whether the composite has a rule that ignores the input (flat, w^2): relevance then reaches
    a ReLU's zero outputs, where zennit's Pass (a ReLU module) passes it and the plain gradient of
    a functional relu drops it."""
    rules = [rule for _kind, rule in getattr(composite, "layer_map", [])]
    rules += [rule for _kind, rule in getattr(composite, "first_map", [])]
    return any(type(rule).__name__ in ("Flat", "WSquare") for rule in rules)


#: model -> its fingerprint and {key: value} (_per_model_state): the gradient fallback lists and the
#: BatchNorm merge check, whose fx traces the benchmark's timings of zennit must not include
_FALLBACK_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _per_model_state(model: nn.Module, key, compute):
    """compute() once per model state (its engine fingerprint) and key: the fx traces behind the
    fallback list and the merge check cost milliseconds the benchmark must not time."""
    fingerprint = engine.fingerprint(model)
    entry = _FALLBACK_CACHE.get(model)
    if entry is None or entry["fingerprint"] != fingerprint:   # new, or changed since: the old values are stale
        entry = _FALLBACK_CACHE[model] = {"fingerprint": fingerprint, "values": {}}
    if key not in entry["values"]:
        entry["values"][key] = compute()
    return entry["values"][key]


def _cached_fallback(model: nn.Module, method: str, composite, stripped) -> list[str]:
    return list(_per_model_state(model, ("fallback", method, tuple(stripped)),
                                 lambda: gradient_fallback(model, composite, stripped)))


def check_batchnorm_merges(model: nn.Module, z) -> None:
    """Raise ExportError where zennit's BatchNorm merge would go wrong (batchnorm_merge_problem)."""
    problem = _per_model_state(model, ("batchnorm merges",), lambda: batchnorm_merge_problem(model, z))
    if problem is not None:
        raise ExportError("zennit", *problem)


def batchnorm_merge_problem(model: nn.Module, z) -> tuple[str, str, str] | None:
    """zennit's SequentialMergeBatchNorm merges every BatchNorm that comes right after a linear
    module in the order of the module tree, whether or not that module feeds it. Where it does
    not (DenseNet: a BatchNorm after a concatenation follows the previous layer's conv), zennit
    either merges into the wrong layer silently (the widths match) or fails halfway, leaving the
    merges it made in the user's model. Checked on the traced graph before zennit runs: each
    such BatchNorm must read that module's output, and be its only reader. Returns None, or
    (BatchNorm path, type, reason) of the first one that does not."""
    leaves = [(name, module) for name, module in model.named_modules() if next(module.children(), None) is None]
    pairs = [(before, after) for before, after in zip(leaves, leaves[1:])
             if isinstance(before[1], z.types.Linear) and isinstance(after[1], z.types.BatchNorm)]
    if not pairs:
        return None
    try:
        graph = _LeafTracer().trace(model)
    except Exception as error:
        return (pairs[0][1][0], type(pairs[0][1][1]).__name__,
                "zennit's SequentialMergeBatchNorm pairs each BatchNorm with the module before it in the module "
                f"tree; torch.fx cannot trace the model to check that this module feeds it ({type(error).__name__})")
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(node.target, []).append(node)
    for (linear, _), (norm, module) in pairs:
        norm_calls, linear_calls = calls.get(norm, []), calls.get(linear, [])
        feeds = (len(norm_calls) == 1 and len(linear_calls) == 1 and norm_calls[0].args
                 and norm_calls[0].args[0] is linear_calls[0] and len(linear_calls[0].users) == 1)
        if not feeds:
            return (norm, type(module).__name__,
                    f"zennit's SequentialMergeBatchNorm would merge it into '{linear}', the module before it in the "
                    "module tree, which does not feed it alone (the result would be another network, or a failure "
                    "halfway through that leaves the merges in the model)")
    return None


def _zennit_failure(model: nn.Module, error: RuntimeError) -> ExportError:
    """zennit failing inside torch, as one line naming zennit (its BatchNorm merge, the known
    cause, is checked before it runs: check_batchnorm_merges)."""
    return ExportError("zennit", type(model).__name__, type(model).__name__,
                       f"zennit failed inside torch: {str(error).splitlines()[0]}")


def _final_modules(model: nn.Module, x) -> list[str]:
    """The path of the final softmax/sigmoid module whose output the model returns (the engine
    finds it in its trace; without one, a run of the model with forward hooks finds it)."""
    produced = []
    handles = [module.register_forward_hook(lambda m, inputs, output, name=name: produced.append((output, name)))
               for name, module in model.named_modules() if isinstance(module, layers.FINAL)]
    try:
        with torch.no_grad():
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return [name for tensor, name in produced if tensor is output][-1:]


def explain(model: nn.Module, x, method: str, target=None, dtype=None, **options) -> Explanation:
    if method not in METHODS:
        raise UnknownMethodError(method, "zennit", METHODS)
    z = _zennit()
    unknown = set(options) - set(native_composites.DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(native_composites.DEFAULT_OPTIONS)}")
    o = {**native_composites.DEFAULT_OPTIONS, **options}
    if o["maxpool"] != "winner_take_all":
        raise ValueError("zennit has only winner-take-all max pooling (the plain gradient)")
    if o["product"] != "uniform":
        raise ValueError("zennit has no rule for products of two tensors (they take the plain gradient): "
                         "product= is a native option")
    if o.get("attention", "cp") != "cp":
        raise ValueError("zennit has no attention rules: attention= is a native option")
    native_trace = "ok"
    try:
        prepared = engine.prepare(model, x, dtype)  # the same mode and dtype policy as the native engine
    except UnsupportedLayerError as error:
        # zennit needs no trace: the engine's input and mode checks, then zennit's own run
        native_trace = f"the native engine cannot trace the model ({' '.join(str(error).split())})"
        x = engine.check_input(x, model, dtype)
        engine.check_mode(model)
        stripped = None
    else:
        x, graph = prepared.x, prepared.graph
        stripped = graph.stripped
        with torch.no_grad():
            graph.forward(x, {"composite": None})  # a wrong input shape gets an error naming the layer
    if method in ("lrp.zbox", "lrp.epsilon_gamma_box") and (o["low"] is None or o["high"] is None):
        flat = x.reshape(x.shape[0], -1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        o["low"] = flat.min(1).values.view(shape) if o["low"] is None else o["low"]
        o["high"] = flat.max(1).values.view(shape) if o["high"] is None else o["high"]

    # zennit runs the model itself: in another dtype it runs a copy, never the user's model
    # cast there and back (a float64 model would come back with its weights rounded)
    if (engine.model_dtype(model) or x.dtype) != x.dtype:
        model = copy.deepcopy(model).to(x.dtype)
    if stripped is None:
        stripped = _final_modules(model, x)
    training = {m: m.training for m in model.modules()}
    try:
        with _StripFinal(model, stripped), torch.no_grad():
            output = model(x)
        selected = targets_module.resolve(output, target)
        repeated = x.repeat((selected.count,) + (1,) * (x.dim() - 1))
        if selected.count > 1 and torch.is_tensor(o["low"]) and o["low"].dim() > 0:
            o["low"] = o["low"].repeat((selected.count,) + (1,) * (o["low"].dim() - 1))
            o["high"] = o["high"].repeat((selected.count,) + (1,) * (o["high"].dim() - 1))
        composite = build_composite(METHODS[method], o, z)
        if composite is not None:
            check_batchnorm_merges(model, z)  # before zennit edits any weight
        attributor = z.attribution.Gradient(model=model, composite=composite)
        seed = selected.selection
        if composite is not None:
            def seed_fn(out):
                return seed * out
        else:
            def seed_fn(out):
                return seed
        fallback = _cached_fallback(model, method, composite, stripped)
        with _StripFinal(model, stripped):
            try:
                _, relevance = attributor(repeated.clone().requires_grad_(True), seed_fn)
            except RuntimeError as error:
                raise _zennit_failure(model, error) from None
    finally:
        for module, flag in training.items():  # zennit's canonizers must not leave a mode change
            module.train(flag)
    if method == "input_x_gradient":
        relevance = relevance * repeated
    explained = selected.explained(output)
    explanation = Explanation(selected.arrange(relevance.detach()), selected.arrange(explained), method, "zennit",
                              selected.description, stripped=list(stripped), options=dict(options))
    # plain attributes (not fields of Explanation): where zennit used the plain gradient, and
    # whether the native engine could trace the model
    explanation.gradient_fallback = fallback
    explanation.native_trace = native_trace
    return explanation
