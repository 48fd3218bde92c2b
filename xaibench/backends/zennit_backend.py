"""The same explanations computed by zennit 0.5.1, in process.

Each canonical method maps to a zennit composite with the same rules and parameters as
the native engine (see METHODS). zennit registers hooks on the model and, with the
BatchNorm canonizer, edits its weights for the duration of the call; both are undone
when the call returns, and the model's train/eval mode is restored.

Known differences from the native engine, measured in the tests:
- a functional `x + y` (residual) gets the plain gradient in zennit (relevance counted
  twice), the native engine splits it by the Norm rule;
- a BatchNorm not directly after a linear layer is Pass in zennit;
- upsampling has no zennit rule (plain gradient): equal to the Norm rule for nearest
  upsampling of non-zero inputs, different for bilinear;
- modules zennit does not know get the plain gradient silently.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import targets as targets_module
from ..errors import InputError, UnknownMethodError
from ..explanation import Explanation
from ..lrp import composites as native_composites
from ..lrp.engine import check_input, prepared_graph


def _zennit():
    try:
        import zennit.canonizers
        import zennit.composites
        import zennit.rules
        import zennit.types
    except ImportError as error:  # pragma: no cover - the set-up installs it
        raise ImportError("the zennit backend needs zennit==0.5.1 (pip install 'xaibench[zennit]')") from error
    return zennit


def _single(rule_builder):
    def build(o, z):
        base = z.composites.layer_map_base(o["stabilizer"])
        return z.composites.LayerMapComposite(layer_map=base + [(z.types.Linear, rule_builder(o, z))],
                                              canonizers=[z.canonizers.SequentialMergeBatchNorm()])
    return build


def _zero(o):
    return None if o["bias"] else ["bias"]


def _dense_conv(dense, conv):
    def build(o, z):
        base = z.composites.layer_map_base(o["stabilizer"])
        layer_map = base + [(z.types.Convolution, conv(o, z)), (nn.Linear, dense(o, z))]
        return z.composites.LayerMapComposite(layer_map=layer_map,
                                              canonizers=[z.canonizers.SequentialMergeBatchNorm()])
    return build


def _epsilon(o, z):
    return z.rules.Epsilon(epsilon=o["epsilon"], zero_params=_zero(o))


def _alpha_beta(alpha, beta):
    def rule(o, z):
        a = o["alpha"] if alpha is None else alpha
        b = o["beta"] if beta is None else beta
        return z.rules.AlphaBeta(alpha=a, beta=b, stabilizer=o["stabilizer"], zero_params=_zero(o))
    return rule


def _named(cls_name, *keys):
    def build(o, z):
        kwargs = {k: o[k] for k in keys}
        return getattr(z.composites, cls_name)(
            **kwargs, stabilizer=o["stabilizer"], zero_params=_zero(o),
            canonizers=[z.canonizers.SequentialMergeBatchNorm()])
    return build


def _zbox(o, z):
    base = z.composites.layer_map_base(o["stabilizer"])
    plus = z.rules.ZPlus(stabilizer=o["stabilizer"], zero_params=_zero(o))
    box = z.rules.ZBox(low=o["low"], high=o["high"], stabilizer=o["stabilizer"], zero_params=_zero(o))
    return z.composites.SpecialFirstLayerMapComposite(
        layer_map=base + [(z.types.Linear, plus)], first_map=[(z.types.Linear, box)],
        canonizers=[z.canonizers.SequentialMergeBatchNorm()])


#: canonical name -> zennit composite builder (None: plain gradient, no composite)
METHODS = {
    "gradient": None,
    "input_x_gradient": None,
    "lrp.z": _single(lambda o, z: z.rules.Epsilon(epsilon=o["stabilizer"], zero_params=_zero(o))),
    "lrp.epsilon": _single(_epsilon),
    "lrp.gamma": _single(lambda o, z: z.rules.Gamma(gamma=o["gamma"], stabilizer=o["stabilizer"],
                                                    zero_params=_zero(o))),
    "lrp.zplus": _single(lambda o, z: z.rules.ZPlus(stabilizer=o["stabilizer"], zero_params=_zero(o))),
    "lrp.alpha_beta": _single(_alpha_beta(None, None)),
    "lrp.alpha1beta0": _single(_alpha_beta(1.0, 0.0)),
    "lrp.alpha2beta1": _single(_alpha_beta(2.0, 1.0)),
    "lrp.zbox": _zbox,
    "lrp.wsquare": _single(lambda o, z: z.rules.WSquare(stabilizer=o["stabilizer"], zero_params=_zero(o))),
    "lrp.flat": _single(lambda o, z: z.rules.Flat(stabilizer=o["stabilizer"], zero_params=_zero(o))),
    "lrp.epsilon_plus": _named("EpsilonPlus", "epsilon"),
    "lrp.epsilon_alpha2beta1": _named("EpsilonAlpha2Beta1", "epsilon"),
    "lrp.epsilon_plus_flat": _named("EpsilonPlusFlat", "epsilon"),
    "lrp.epsilon_gamma_box": _named("EpsilonGammaBox", "low", "high", "epsilon", "gamma"),
    "lrp.preset_a": _dense_conv(_epsilon, _alpha_beta(1.0, 0.0)),
    "lrp.preset_b": _dense_conv(_epsilon, _alpha_beta(2.0, 1.0)),
}


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
    x = check_input(x, model, dtype)
    graph, _ = prepared_graph(model, x.dtype, x.device)
    with torch.no_grad():
        graph.forward(x, {})  # a wrong input shape gets an error naming the layer, before zennit runs
    if method in ("lrp.zbox", "lrp.epsilon_gamma_box") and (o["low"] is None or o["high"] is None):
        flat = x.reshape(x.shape[0], -1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        o["low"] = flat.min(1).values.view(shape) if o["low"] is None else o["low"]
        o["high"] = flat.max(1).values.view(shape) if o["high"] is None else o["high"]

    training = {m: m.training for m in model.modules()}
    parameter = next(iter(model.parameters()), None)
    original_dtype = x.dtype if parameter is None else parameter.dtype
    try:
        model.eval()
        if x.dtype != original_dtype:
            model.to(x.dtype)
        with _StripFinal(model, graph.stripped), torch.no_grad():
            output = model(x)
        selected = targets_module.resolve(output, target)
        repeated = x.repeat((selected.count,) + (1,) * (x.dim() - 1))
        if selected.count > 1 and torch.is_tensor(o["low"]) and o["low"].dim() > 0:
            o["low"] = o["low"].repeat((selected.count,) + (1,) * (o["low"].dim() - 1))
            o["high"] = o["high"].repeat((selected.count,) + (1,) * (o["high"].dim() - 1))
        builder = METHODS[method]
        composite = None if builder is None else builder(o, z)
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
        if x.dtype != original_dtype:
            model.to(original_dtype)
        for module, flag in training.items():
            module.train(flag)
    if method == "input_x_gradient":
        relevance = relevance * repeated
    explained = selected.explained(output)
    return Explanation(selected.arrange(relevance.detach()), selected.arrange(explained), method, "zennit",
                       selected.description, options=dict(options))
