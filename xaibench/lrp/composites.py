"""Composites: which rule each layer gets, and the named presets.

A composite maps a layer kind ('dense' for nn.Linear, 'conv' for convolutions and
transposed convolutions, 'batchnorm' for a BatchNorm that could not be merged into a
neighbouring layer) to a rule, with an optional special rule for the first layer(s): the
linear layers fed by the model input through shape-only operations. Parameter-free linear
operations (sums, average pooling, upsampling) always take the Norm rule (z-rule with a
fixed stabilizer, as zennit), activations pass relevance through, and max pooling is
winner-take-all unless maxpool='proportional'.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import rules as R

MAXPOOL_MODES = ("winner_take_all", "proportional")


@dataclass
class Composite:
    name: str
    layer_rules: dict[str, R.Rule]
    first_rules: dict[str, R.Rule] = field(default_factory=dict)
    maxpool: str = "winner_take_all"
    norm_stabilizer: float = R.DEFAULT_STABILIZER
    #: the input bounds of the z^B rule, in model-input space (None: per-sample min/max)
    low: object = None
    high: object = None

    def __post_init__(self):
        if self.maxpool not in MAXPOOL_MODES:
            raise ValueError(f"maxpool must be one of {MAXPOOL_MODES}, got {self.maxpool!r}")

    def rule_for(self, kind: str, first: bool) -> R.Rule:
        if first and kind in self.first_rules:
            return self.first_rules[kind]
        return self.layer_rules[kind]

    def needs_bounds(self) -> bool:
        return any(isinstance(r, R.ZBox) for r in self.first_rules.values())

    def describe(self) -> str:
        parts = [f"{kind}: {rule!r}" for kind, rule in self.layer_rules.items()]
        parts += [f"first {kind}: {rule!r}" for kind, rule in self.first_rules.items()]
        return f"{self.name} ({'; '.join(parts)}; maxpool {self.maxpool})"


def _everywhere(name, rule, **extra):
    return Composite(name, {"dense": rule, "conv": rule, "batchnorm": rule}, **extra)


#: canonical method name -> (what it is, function of the options building the composite)
def _presets():
    def z(o):
        return _everywhere("lrp.z", R.Z(o["stabilizer"], o["bias"]))

    def epsilon(o):
        return _everywhere("lrp.epsilon", R.Epsilon(o["epsilon"], o["bias"]))

    def gamma(o):
        return _everywhere("lrp.gamma", R.Gamma(o["gamma"], o["stabilizer"], o["bias"]))

    def zplus(o):
        return _everywhere("lrp.zplus", R.ZPlus(o["stabilizer"], o["bias"]))

    def alpha_beta(alpha, beta, name):
        def build(o):
            a = o["alpha"] if alpha is None else alpha
            b = o["beta"] if beta is None else beta
            return _everywhere(name, R.AlphaBeta(a, b, o["stabilizer"], o["bias"]))
        return build

    def zbox(o):
        box = R.ZBox(o["low"], o["high"], o["stabilizer"], o["bias"])
        plus = R.ZPlus(o["stabilizer"], o["bias"])
        return Composite("lrp.zbox", {"dense": plus, "conv": plus, "batchnorm": plus},
                         {"dense": box, "conv": box})

    def wsquare(o):
        return _everywhere("lrp.wsquare", R.WSquare(o["stabilizer"], o["bias"]))

    def flat(o):
        return _everywhere("lrp.flat", R.Flat(o["stabilizer"], o["bias"]))

    def dense_conv(name, dense, conv, first=None, batchnorm=None):
        def build(o):
            layer = {"dense": dense(o), "conv": conv(o), "batchnorm": (batchnorm or dense)(o)}
            firsts = {} if first is None else first(o)
            return Composite(name, layer, firsts)
        return build

    def eps(o):
        return R.Epsilon(o["epsilon"], o["bias"])

    def plus(o):
        return R.ZPlus(o["stabilizer"], o["bias"])

    def ab21(o):
        return R.AlphaBeta(2.0, 1.0, o["stabilizer"], o["bias"])

    def ab10(o):
        return R.AlphaBeta(1.0, 0.0, o["stabilizer"], o["bias"])

    def flat_first(o):
        rule = R.Flat(o["stabilizer"], o["bias"])
        return {"dense": rule, "conv": rule, "batchnorm": rule}

    def box_first_conv(o):
        return {"conv": R.ZBox(o["low"], o["high"], o["stabilizer"], o["bias"])}

    def gamma_rule(o):
        return R.Gamma(o["gamma"], o["stabilizer"], o["bias"])

    return {
        "lrp.z": ("LRP-0 on every layer", z),
        "lrp.epsilon": ("LRP-epsilon on every layer", epsilon),
        "lrp.gamma": ("LRP-gamma on every layer", gamma),
        "lrp.zplus": ("LRP-z+ on every layer", zplus),
        "lrp.alpha_beta": ("LRP-alpha-beta with the given alpha, beta", alpha_beta(None, None, "lrp.alpha_beta")),
        "lrp.alpha1beta0": ("LRP-alpha1-beta0 on every layer", alpha_beta(1.0, 0.0, "lrp.alpha1beta0")),
        "lrp.alpha2beta1": ("LRP-alpha2-beta1 on every layer", alpha_beta(2.0, 1.0, "lrp.alpha2beta1")),
        "lrp.zbox": ("z^B on the first layer, z+ elsewhere (deep Taylor, bounded input)", zbox),
        "lrp.wsquare": ("LRP-w^2 on every layer", wsquare),
        "lrp.flat": ("LRP-flat on every layer", flat),
        "lrp.epsilon_plus": ("epsilon on dense, z+ on conv (zennit EpsilonPlus)",
                             dense_conv("lrp.epsilon_plus", eps, plus)),
        "lrp.epsilon_alpha2beta1": ("epsilon on dense, alpha2-beta1 on conv (zennit EpsilonAlpha2Beta1)",
                                    dense_conv("lrp.epsilon_alpha2beta1", eps, ab21)),
        "lrp.epsilon_plus_flat": ("flat on the first layer, epsilon on dense, z+ on conv (zennit EpsilonPlusFlat)",
                                  dense_conv("lrp.epsilon_plus_flat", eps, plus, first=flat_first)),
        "lrp.epsilon_gamma_box": ("z^B on a first conv, gamma on conv, epsilon on dense (zennit EpsilonGammaBox)",
                                  dense_conv("lrp.epsilon_gamma_box", eps, gamma_rule, first=box_first_conv)),
        "lrp.preset_a": ("epsilon on dense, alpha1-beta0 on conv, alpha2-beta1 on batchnorm "
                         "(innvestigate sequential_preset_a)",
                         dense_conv("lrp.preset_a", eps, ab10, batchnorm=ab21)),
        "lrp.preset_b": ("epsilon on dense, alpha2-beta1 on conv and batchnorm "
                         "(innvestigate sequential_preset_b)",
                         dense_conv("lrp.preset_b", eps, ab21, batchnorm=ab21)),
    }


PRESETS = _presets()

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
}


def composite(method: str, **options) -> Composite:
    """The composite of a canonical LRP method name with the given options."""
    from ..errors import UnknownMethodError

    if method not in PRESETS:
        raise UnknownMethodError(method, "native", PRESETS)
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)} for {method}; known: {sorted(DEFAULT_OPTIONS)}"
        )
    merged = {**DEFAULT_OPTIONS, **options}
    built = PRESETS[method][1](merged)
    built.maxpool = merged["maxpool"]
    built.norm_stabilizer = merged["stabilizer"]
    built.low, built.high = merged["low"], merged["high"]
    built.__post_init__()
    return built
