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
- modules zennit does not know get the plain gradient silently.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import targets as targets_module
from ..errors import InputError, UnknownMethodError
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
    prepared = engine.prepare(model, x, dtype)  # the same mode and dtype policy as the native engine
    x, graph = prepared.x, prepared.graph
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
    training = {m: m.training for m in model.modules()}
    try:
        with _StripFinal(model, graph.stripped), torch.no_grad():
            output = model(x)
        selected = targets_module.resolve(output, target)
        repeated = x.repeat((selected.count,) + (1,) * (x.dim() - 1))
        if selected.count > 1 and torch.is_tensor(o["low"]) and o["low"].dim() > 0:
            o["low"] = o["low"].repeat((selected.count,) + (1,) * (o["low"].dim() - 1))
            o["high"] = o["high"].repeat((selected.count,) + (1,) * (o["high"].dim() - 1))
        composite = build_composite(METHODS[method], o, z)
        attributor = z.attribution.Gradient(model=model, composite=composite)
        seed = selected.selection
        if composite is not None:
            def seed_fn(out):
                return seed * out
        else:
            def seed_fn(out):
                return seed
        with _StripFinal(model, graph.stripped):
            _, relevance = attributor(repeated.clone().requires_grad_(True), seed_fn)
    finally:
        for module, flag in training.items():  # zennit's canonizers must not leave a mode change
            module.train(flag)
    if method == "input_x_gradient":
        relevance = relevance * repeated
    explained = selected.explained(output)
    return Explanation(selected.arrange(relevance.detach()), selected.arrange(explained), method, "zennit",
                       selected.description, options=dict(options))
