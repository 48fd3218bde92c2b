"""Composites: which rule each layer gets, and the named presets.

A composite maps a layer kind ('dense' for nn.Linear, 'conv' for convolutions and
transposed convolutions, 'batchnorm' for a BatchNorm that could not be merged into a
neighbouring layer, 'norm' for LayerNorm, GroupNorm, InstanceNorm and RMSNorm with their
standard deviation held constant; without a 'norm' entry these take the 'batchnorm' rule) to
a rule, with an optional special rule for the first layer(s): the linear layers fed by the
model input through shape-only operations. Parameter-free linear operations (sums, average
pooling, upsampling) always take the Norm rule (z-rule with a fixed stabilizer, as zennit),
elementwise nonlinearities pass relevance through (the identity rule), max pooling is
winner-take-all unless maxpool='proportional', and a product of two tensors that both
depend on the input gives half to each factor unless product='gate_constant'.

The named presets live in an open registry, name -> builder (a function of the merged
options dict returning a Composite): REGISTRY (read-only view), names(), description()
(the builder docstring's first line). register_composite(name, builder) adds one, e.g.
a user's own rule mix, which xaibench.explain(model, x, method=name) and
xaibench.methods("native") then see; composite(method, **options) builds it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from . import rules as R

MAXPOOL_MODES = ("winner_take_all", "proportional")


@dataclass
class Composite:
    name: str
    layer_rules: dict[str, R.Rule]
    first_rules: dict[str, R.Rule] = field(default_factory=dict)
    maxpool: str = "winner_take_all"
    product: str = "uniform"
    #: attention weights (a softmax feeding a matrix product): 'cp' held constant (CP-LRP),
    #: 'attnlrp' AttnLRP's softmax rule and the uniform rule on the product
    attention: str = "cp"
    norm_stabilizer: float = R.DEFAULT_STABILIZER
    #: the input bounds of the z^B rule, in model-input space (None: per-sample min/max)
    low: object = None
    high: object = None
    #: targets explained per relevance walk after the one shared forward pass (None: as many as keep
    #: the walk's largest tensor within engine.WALK_ELEMENTS); bounds the memory, never the result
    target_chunk: int | None = None

    def __post_init__(self):
        if self.maxpool not in MAXPOOL_MODES:
            raise ValueError(f"maxpool must be one of {MAXPOOL_MODES}, got {self.maxpool!r}")
        chunk = self.target_chunk
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"target_chunk must be None (automatic) or an integer >= 1, got {chunk!r}")

    def rule_for(self, kind: str, first: bool) -> R.Rule:
        if first and kind in self.first_rules:
            return self.first_rules[kind]
        if kind == "norm" and "norm" not in self.layer_rules:
            return self.layer_rules["batchnorm"]  # a normalization takes BatchNorm's rule unless named
        return self.layer_rules[kind]

    def needs_bounds(self) -> bool:
        return any(isinstance(r, R.ZBox) for r in self.first_rules.values())

    def describe(self) -> str:
        parts = [f"{kind}: {rule!r}" for kind, rule in self.layer_rules.items()]
        parts += [f"first {kind}: {rule!r}" for kind, rule in self.first_rules.items()]
        return f"{self.name} ({'; '.join(parts)}; maxpool {self.maxpool})"


def _everywhere(name, rule, **extra):
    return Composite(name, {"dense": rule, "conv": rule, "batchnorm": rule}, **extra)


def _dense_conv(name, o, dense, conv, first=None, batchnorm=None):
    """dense(o) on dense layers, conv(o) on conv layers, batchnorm(o) (default dense(o)) on
    unmerged BatchNorms, and first(o) (a dict kind -> rule) on the first layer(s)."""
    layer = {"dense": dense(o), "conv": conv(o), "batchnorm": (batchnorm or dense)(o)}
    firsts = {} if first is None else first(o)
    return Composite(name, layer, firsts)


# ---------------------------------------------------------------------------------------------
# The registry: canonical method name -> builder (the merged options dict -> Composite)

Builder = Callable[[dict], Composite]

_BUILDERS: dict[str, Builder] = {}

#: read-only live view of the registry, name -> builder (register_composite adds to it)
REGISTRY: Mapping[str, Builder] = MappingProxyType(_BUILDERS)

PREFIX = "lrp."


def register_composite(name: str, builder: Builder | None = None, *, replace: bool = False):
    """Register builder (a function of the options dict returning a Composite) as the LRP
    method `name`, usable as xaibench.explain(model, x, method=name) and listed by
    xaibench.methods("native"). The options dict holds every DEFAULT_OPTIONS key (the user's
    values merged over the defaults). Without builder it is a decorator:

        @register_composite("lrp.my_rule")
        def my_rule(o):
            \"\"\"epsilon on dense, z+ on conv.\"\"\"
            return Composite("lrp.my_rule", {...})

    Names must start with "lrp."; an existing name is refused unless replace=True.
    """
    if not isinstance(name, str) or not name.startswith(PREFIX) or len(name) == len(PREFIX):
        raise ValueError(f"a composite name must start with '{PREFIX}' (e.g. 'lrp.my_rule'), got {name!r}")
    if builder is None:
        return lambda function: register_composite(name, function, replace=replace)
    if not callable(builder):
        raise TypeError(f"the builder of composite {name!r} must be callable (options dict -> Composite), "
                        f"got {type(builder).__name__}")
    if name in _BUILDERS and not replace:
        raise ValueError(f"composite {name!r} is already registered; pass replace=True to replace it")
    _BUILDERS[name] = builder
    return builder


def unregister_composite(name: str) -> Builder:
    """Remove a registered composite (e.g. one a test registered); returns its builder."""
    from ..errors import UnknownMethodError

    if name not in _BUILDERS:
        raise UnknownMethodError(name, "native", _BUILDERS)
    return _BUILDERS.pop(name)


def names() -> list[str]:
    """The registered composite names, sorted."""
    return sorted(_BUILDERS)


def description(name: str) -> str:
    """The first line of the builder's docstring ('' if it has none)."""
    doc = inspect.getdoc(_BUILDERS[name]) or ""
    return doc.splitlines()[0] if doc else ""


# ---------------------------------------------------------------------------------------------
# The built-in presets (zennit / innvestigate names in brackets)

def _epsilon_rule(o):
    return R.Epsilon(o["epsilon"], o["bias"])


def _zplus_rule(o):
    return R.ZPlus(o["stabilizer"], o["bias"])


def _alpha2beta1_rule(o):
    return R.AlphaBeta(2.0, 1.0, o["stabilizer"], o["bias"])


def _alpha1beta0_rule(o):
    return R.AlphaBeta(1.0, 0.0, o["stabilizer"], o["bias"])


def _gamma_rule(o):
    return R.Gamma(o["gamma"], o["stabilizer"], o["bias"])


def _flat_first(o):
    rule = R.Flat(o["stabilizer"], o["bias"])
    return {"dense": rule, "conv": rule, "batchnorm": rule}


def _zbox_first_conv(o):
    return {"conv": R.ZBox(o["low"], o["high"], o["stabilizer"], o["bias"])}


@register_composite("lrp.z")
def lrp_z(o):
    """LRP-0 on every layer: R_i = sum_j z_ij / z_j R_j, z_ij = x_i w_ij."""
    return _everywhere("lrp.z", R.Z(o["stabilizer"], o["bias"]))


@register_composite("lrp.epsilon")
def lrp_epsilon(o):
    """LRP-epsilon on every layer: R_i = sum_j z_ij / (z_j + epsilon sign(z_j)) R_j."""
    return _everywhere("lrp.epsilon", _epsilon_rule(o))


@register_composite("lrp.gamma")
def lrp_gamma(o):
    """LRP-gamma on every layer: R_i = sum_j x_i (w_ij + gamma w_ij^+) / sum_i' x_i' (w_i'j + gamma w_i'j^+) R_j."""
    return _everywhere("lrp.gamma", _gamma_rule(o))


@register_composite("lrp.zplus")
def lrp_zplus(o):
    """LRP-z+ on every layer: R_i = sum_j z_ij^+ / z_j^+ R_j."""
    return _everywhere("lrp.zplus", _zplus_rule(o))


@register_composite("lrp.alpha_beta")
def lrp_alpha_beta(o):
    """LRP-alpha-beta on every layer: R_i = sum_j (alpha z_ij^+ / z_j^+ - beta z_ij^- / z_j^-) R_j."""
    return _everywhere("lrp.alpha_beta", R.AlphaBeta(o["alpha"], o["beta"], o["stabilizer"], o["bias"]))


@register_composite("lrp.alpha1beta0")
def lrp_alpha1beta0(o):
    """LRP-alpha1-beta0 on every layer: R_i = sum_j z_ij^+ / z_j^+ R_j (alpha = 1, beta = 0)."""
    return _everywhere("lrp.alpha1beta0", _alpha1beta0_rule(o))


@register_composite("lrp.alpha2beta1")
def lrp_alpha2beta1(o):
    """LRP-alpha2-beta1 on every layer: R_i = sum_j (2 z_ij^+ / z_j^+ - z_ij^- / z_j^-) R_j."""
    return _everywhere("lrp.alpha2beta1", _alpha2beta1_rule(o))


@register_composite("lrp.zbox")
def lrp_zbox(o):
    """z^B on the first layer (z_ij = x_i w_ij - l_i w_ij^+ - h_i w_ij^-), z+ elsewhere (deep Taylor, bounded input)."""
    box = R.ZBox(o["low"], o["high"], o["stabilizer"], o["bias"])
    return _everywhere("lrp.zbox", _zplus_rule(o), first_rules={"dense": box, "conv": box})


@register_composite("lrp.wsquare")
def lrp_wsquare(o):
    """LRP-w^2 on every layer: R_i = sum_j w_ij^2 / sum_i' w_i'j^2 R_j."""
    return _everywhere("lrp.wsquare", R.WSquare(o["stabilizer"], o["bias"]))


@register_composite("lrp.flat")
def lrp_flat(o):
    """LRP-flat on every layer: R_i = sum_j 1 / sum_i' 1 R_j (uniform over the receptive field)."""
    return _everywhere("lrp.flat", R.Flat(o["stabilizer"], o["bias"]))


@register_composite("lrp.epsilon_plus")
def lrp_epsilon_plus(o):
    """epsilon (z_ij / (z_j + eps sign z_j)) on dense, z+ (z_ij^+ / z_j^+) on conv (zennit EpsilonPlus)."""
    return _dense_conv("lrp.epsilon_plus", o, _epsilon_rule, _zplus_rule)


@register_composite("lrp.epsilon_alpha2beta1")
def lrp_epsilon_alpha2beta1(o):
    """epsilon on dense, alpha2-beta1 (2 z_ij^+ / z_j^+ - z_ij^- / z_j^-) on conv (zennit EpsilonAlpha2Beta1)."""
    return _dense_conv("lrp.epsilon_alpha2beta1", o, _epsilon_rule, _alpha2beta1_rule)


@register_composite("lrp.epsilon_plus_flat")
def lrp_epsilon_plus_flat(o):
    """flat (1 / sum_i' 1) on the first layer, epsilon on dense, z+ on conv (zennit EpsilonPlusFlat)."""
    return _dense_conv("lrp.epsilon_plus_flat", o, _epsilon_rule, _zplus_rule, first=_flat_first)


@register_composite("lrp.epsilon_gamma_box")
def lrp_epsilon_gamma_box(o):
    """z^B on a first conv, gamma ((w + gamma w^+) x) on conv, epsilon on dense (zennit EpsilonGammaBox)."""
    return _dense_conv("lrp.epsilon_gamma_box", o, _epsilon_rule, _gamma_rule, first=_zbox_first_conv)


@register_composite("lrp.preset_a")
def lrp_preset_a(o):
    """epsilon on dense, alpha1-beta0 (z^+/z^+) on conv, alpha2-beta1 on BN (innvestigate sequential_preset_a)."""
    return _dense_conv("lrp.preset_a", o, _epsilon_rule, _alpha1beta0_rule, batchnorm=_alpha2beta1_rule)


@register_composite("lrp.preset_b")
def lrp_preset_b(o):
    """epsilon on dense, alpha2-beta1 (2 z^+/z^+ - z^-/z^-) on conv and batchnorm (innvestigate sequential_preset_b)."""
    return _dense_conv("lrp.preset_b", o, _epsilon_rule, _alpha2beta1_rule, batchnorm=_alpha2beta1_rule)


DEFAULT_OPTIONS = {
    "epsilon": R.DEFAULT_EPSILON,
    "gamma": R.DEFAULT_GAMMA,
    "stabilizer": R.DEFAULT_STABILIZER,
    "alpha": 1.0,
    "beta": 0.0,
    "low": None,
    "high": None,
    "bias": True,
    "maxpool": "winner_take_all",
    "product": "uniform",
    "attention": "cp",
    "target_chunk": None,
}

#: the rules for a product of two tensors that both depend on the input (steps.ProductStep)
PRODUCT_MODES = ("uniform", "gate_constant")
#: the rules for attention (steps.MatmulStep, steps.SoftmaxStep); docs/rules.md says why 'cp' is the default
ATTENTION_MODES = ("cp", "attnlrp")


def composite(method: str, **options) -> Composite:
    """The composite of a canonical LRP method name with the given options."""
    from ..errors import UnknownMethodError

    if method not in _BUILDERS:
        raise UnknownMethodError(method, "native", _BUILDERS)
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for {method}; known: {sorted(DEFAULT_OPTIONS)}"
        )
    merged = {**DEFAULT_OPTIONS, **options}
    builder = _BUILDERS[method]
    built = builder(dict(merged))
    if not isinstance(built, Composite):
        raise TypeError(
            f"the builder of composite {method!r} ({getattr(builder, '__qualname__', builder)!r}) returned "
            f"{type(built).__name__}, not a xaibench.lrp.Composite")
    if merged["product"] not in PRODUCT_MODES:
        raise ValueError(f"product must be one of {PRODUCT_MODES}, got {merged['product']!r}")
    if merged["attention"] not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {merged['attention']!r}")
    built.maxpool = merged["maxpool"]
    built.attention = merged["attention"]
    built.product = merged["product"]
    built.norm_stabilizer = merged["stabilizer"]
    built.low, built.high = merged["low"], merged["high"]
    built.target_chunk = merged["target_chunk"]
    built.__post_init__()
    return built
