"""The one table: each canonical method as the native engine, zennit and innvestigate run it.

Everything that says "method M on backend B means this" lives here: the zennit rules or
composite and the innvestigate analyzer and its keyword arguments, as functions of the
canonical options (xaibench.lrp.composites.DEFAULT_OPTIONS). The backends read it, and
docs/methods.md is generated from it (`xaibench methods --markdown docs/methods.md`; a test
checks the file is current), so nothing is written twice.

Option names are the native engine's: epsilon, gamma, stabilizer, alpha, beta, low, high,
bias (True: biases take part in the rules and absorb their share; False: innvestigate's
`_IB` "ignore bias" analyzers, zennit's zero_params=["bias"]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Rule:
    """A zennit rule class and its parameters: {zennit keyword: canonical option}."""

    name: str
    params: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Zennit:
    """How zennit runs a method. kind:
    "gradient"  plain autograd (no composite)
    "rules"     one rule for dense and conv layers (`everywhere`), or `dense`/`conv` apart,
                optionally `first` for the layer fed by the input
    "composite" one of zennit's named composites with `params` {keyword: option}
    """

    kind: str
    everywhere: Rule | None = None
    dense: Rule | None = None
    conv: Rule | None = None
    first: Rule | None = None
    composite: str | None = None
    params: dict = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "gradient":
            return "autograd gradient"
        if self.kind == "composite":
            return f"composites.{self.composite}({_params(self.params)})"
        parts = []
        if self.everywhere:
            parts.append(f"{_rule(self.everywhere)} on Linear/Conv")
        if self.dense:
            parts.append(f"{_rule(self.dense)} on Linear")
        if self.conv:
            parts.append(f"{_rule(self.conv)} on Conv")
        if self.first:
            parts.append(f"{_rule(self.first)} on the first layer")
        return "; ".join(parts) + " (SequentialMergeBatchNorm)"


@dataclass(frozen=True)
class Innvestigate:
    """How innvestigate 2.1.2 runs a method: the analyzer name and keyword arguments, both
    functions of the canonical options. Arrays (a baseline, bounds) travel beside them."""

    analyzer: Callable[[dict], str]
    kwargs: Callable[[dict], dict] = lambda o: {}
    text: str = ""

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    native: bool = True
    zennit: Zennit | None = None
    innvestigate: Innvestigate | None = None
    options: tuple = ()          # canonical options the method reads
    lrp: bool = True             # a relevance-conserving method (checked by the ledger)


def _params(params):
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _rule(rule: Rule) -> str:
    args = [f"{k}={v}" for k, v in rule.params.items()] + [f"{k}={v}" for k, v in rule.fixed.items()]
    return f"{rule.name}({', '.join(args)})"


def _bias_suffix(o):
    return "" if o["bias"] else "_IB"


def _same(name):
    return lambda o: name


_EPSILON = Rule("Epsilon", {"epsilon": "epsilon"})
_ZPLUS = Rule("ZPlus", {"stabilizer": "stabilizer"})
_AB10 = Rule("AlphaBeta", {"stabilizer": "stabilizer"}, {"alpha": 1.0, "beta": 0.0})
_AB21 = Rule("AlphaBeta", {"stabilizer": "stabilizer"}, {"alpha": 2.0, "beta": 1.0})


def _alpha_beta(alpha, beta):
    name = f"lrp.alpha_{alpha}_beta_{beta}"
    return Innvestigate(lambda o: name + _bias_suffix(o), text=f"{name} (bias=False: {name}_IB)")


_TABLE = [
    Method("gradient", "the input gradient of the explained output (saliency)", lrp=False,
           zennit=Zennit("gradient"), innvestigate=Innvestigate(_same("gradient"), text="gradient")),
    Method("input_x_gradient", "input times gradient", lrp=False, zennit=Zennit("gradient"),
           innvestigate=Innvestigate(_same("input_t_gradient"), text="input_t_gradient")),
    Method("integrated_gradients", "integrated gradients from a baseline (Sundararajan et al. 2017)", lrp=False,
           options=("baseline", "steps", "rule"),
           innvestigate=Innvestigate(_same("integrated_gradients"), lambda o: {"steps": o.get("steps", 64)},
                                     "integrated_gradients(steps, reference_inputs=baseline): a left Riemann sum "
                                     "(points k/steps, k = 0..steps-1; native rule='riemann_left')")),
    Method("smoothgrad", "gradient averaged over noisy copies of the input (Smilkov et al. 2017)", lrp=False,
           options=("noise_level", "samples", "seed"),
           innvestigate=Innvestigate(_same("smoothgrad"), lambda o: {"augment_by_n": o.get("samples", 32)},
                                     "smoothgrad(augment_by_n=samples): 2.1.2 ignores noise_scale, the noise "
                                     "std is always 1 in input units; TF's own random numbers")),
    Method("occlusion", "output drop when patches of the input are replaced by a fill value", lrp=False,
           options=("patch", "stride", "fill")),
    Method("lrp.z", "LRP-0 on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=Rule("Epsilon", {"epsilon": "stabilizer"})),
           innvestigate=Innvestigate(lambda o: "lrp", lambda o: {"rule": "Z", "rule_kwargs": {"bias": o["bias"]}},
                                     "lrp(rule=ZRule(bias)); divides by z only where z == 0 (safe_divide)")),
    Method("lrp.epsilon", "LRP-epsilon on every layer", options=("epsilon", "bias"),
           zennit=Zennit("rules", everywhere=_EPSILON),
           innvestigate=Innvestigate(_same("lrp.epsilon"), lambda o: {"epsilon": o["epsilon"], "bias": o["bias"]},
                                     "lrp.epsilon(epsilon, bias)")),
    Method("lrp.gamma", "LRP-gamma on every layer (zennit 0.5's generalized form)",
           options=("gamma", "stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=Rule("Gamma", {"gamma": "gamma", "stabilizer": "stabilizer"}))),
    Method("lrp.zplus", "LRP-z+ on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=_ZPLUS),
           innvestigate=Innvestigate(lambda o: "lrp.z_plus" if not o["bias"] else "lrp.alpha_1_beta_0",
                                     text="lrp.z_plus (= alpha_1_beta_0_IB); bias=True: lrp.alpha_1_beta_0")),
    Method("lrp.alpha_beta", "LRP-alpha-beta with the given alpha, beta (alpha - beta = 1)",
           options=("alpha", "beta", "stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=Rule("AlphaBeta", {"alpha": "alpha", "beta": "beta",
                                                                "stabilizer": "stabilizer"})),
           innvestigate=Innvestigate(_same("lrp.alpha_beta"),
                                     lambda o: {"alpha": o["alpha"], "beta": o["beta"], "bias": o["bias"]},
                                     "lrp.alpha_beta(alpha, beta, bias)")),
    Method("lrp.alpha1beta0", "LRP-alpha1-beta0 on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=_AB10), innvestigate=_alpha_beta(1, 0)),
    Method("lrp.alpha2beta1", "LRP-alpha2-beta1 on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=_AB21), innvestigate=_alpha_beta(2, 1)),
    Method("lrp.zbox", "z^B on the first layer, z+ elsewhere (deep Taylor with bounded input)",
           options=("low", "high", "stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=_ZPLUS,
                         first=Rule("ZBox", {"low": "low", "high": "high", "stabilizer": "stabilizer"})),
           innvestigate=Innvestigate(lambda o: "lrp.z_plus" if not o["bias"] else "lrp.alpha_1_beta_0",
                                     text="lrp.z_plus / lrp.alpha_1_beta_0 with input_layer_rule=(low, high) "
                                          "(BoundedRule)")),
    Method("lrp.wsquare", "LRP-w^2 on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=Rule("WSquare", {"stabilizer": "stabilizer"})),
           innvestigate=Innvestigate(_same("lrp.w_square"), text="lrp.w_square (ignores biases)")),
    Method("lrp.flat", "LRP-flat on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=Rule("Flat", {"stabilizer": "stabilizer"})),
           innvestigate=Innvestigate(_same("lrp.flat"), text="lrp.flat (ignores biases)")),
    Method("lrp.epsilon_plus", "epsilon on dense, z+ on conv", options=("epsilon", "stabilizer", "bias"),
           zennit=Zennit("composite", composite="EpsilonPlus", params={"epsilon": "epsilon"})),
    Method("lrp.epsilon_alpha2beta1", "epsilon on dense, alpha2-beta1 on conv",
           options=("epsilon", "stabilizer", "bias"),
           zennit=Zennit("composite", composite="EpsilonAlpha2Beta1", params={"epsilon": "epsilon"})),
    Method("lrp.epsilon_plus_flat", "flat on the first layer, epsilon on dense, z+ on conv",
           options=("epsilon", "stabilizer", "bias"),
           zennit=Zennit("composite", composite="EpsilonPlusFlat", params={"epsilon": "epsilon"})),
    Method("lrp.epsilon_gamma_box", "z^B on a first conv, gamma on conv, epsilon on dense",
           options=("low", "high", "epsilon", "gamma", "stabilizer", "bias"),
           zennit=Zennit("composite", composite="EpsilonGammaBox",
                         params={"low": "low", "high": "high", "epsilon": "epsilon", "gamma": "gamma"})),
    Method("lrp.preset_a", "epsilon on dense, alpha1-beta0 on conv, alpha2-beta1 on batchnorm",
           options=("epsilon", "stabilizer", "bias"),
           zennit=Zennit("rules", dense=_EPSILON, conv=_AB10),
           innvestigate=Innvestigate(_same("lrp.sequential_preset_a"), lambda o: {"epsilon": o["epsilon"]},
                                     "lrp.sequential_preset_a(epsilon); BN: AlphaBetaX2m100Rule")),
    Method("lrp.preset_b", "epsilon on dense, alpha2-beta1 on conv and batchnorm",
           options=("epsilon", "stabilizer", "bias"),
           zennit=Zennit("rules", dense=_EPSILON, conv=_AB21),
           innvestigate=Innvestigate(_same("lrp.sequential_preset_b"), lambda o: {"epsilon": o["epsilon"]},
                                     "lrp.sequential_preset_b(epsilon); BN: AlphaBetaX2m100Rule")),
    Method("deep_taylor", "innvestigate's deep Taylor: z+ on layers followed by ReLU, w^2 on the others, "
           "output clipped at 0 (used by Toms et al. 2020); nearest native method: lrp.zplus", native=False,
           innvestigate=Innvestigate(_same("deep_taylor"), text="deep_taylor")),
    Method("deep_taylor.bounded", "deep_taylor with z^B on the first layer; nearest native method: lrp.zbox",
           native=False, options=("low", "high"),
           innvestigate=Innvestigate(_same("deep_taylor.bounded"), text="deep_taylor.bounded(low, high)")),
]

METHODS: dict[str, Method] = {method.name: method for method in _TABLE}

#: for methods no native preset mirrors exactly, the native method to compare with
NEAREST_NATIVE = {"deep_taylor": "lrp.zplus", "deep_taylor.bounded": "lrp.zbox"}


def available(backend: str) -> list[str]:
    """Canonical names a backend has according to the table."""
    if backend == "native":
        return sorted(name for name, method in METHODS.items() if method.native)
    return sorted(name for name, method in METHODS.items() if getattr(method, backend) is not None)


def markdown() -> str:
    """docs/methods.md: the table as the user reads it."""
    lines = [
        "# Methods and what each backend runs",
        "",
        "Generated from `xaibench/backends/table.py` by `xaibench methods --markdown docs/methods.md`;",
        "do not edit by hand. Options are the native engine's names; `bias=False` means biases",
        "take no share (innvestigate's `_IB` analyzers, zennit's `zero_params=['bias']`).",
        "",
        "| method | what it is | options | native | zennit 0.5.1 | innvestigate 2.1.2 |",
        "|---|---|---|---|---|---|",
    ]
    for method in _TABLE:
        cells = [f"`{method.name}`", method.description, ", ".join(method.options) or "-",
                 "yes" if method.native else "-",
                 method.zennit.describe() if method.zennit else "-",
                 method.innvestigate.describe() if method.innvestigate else "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


# --- documented differences ------------------------------------------------------------------------
_ALPHA_BETA_FAMILY = {"lrp.alpha1beta0", "lrp.alpha2beta1", "lrp.alpha_beta", "lrp.zplus", "lrp.zbox",
                      "lrp.preset_a", "lrp.preset_b"}
_PINNED = "pinned in tests/test_innvestigate_agreement.py"


def known_differences(backend: str, method: str, options: dict, model) -> list[str]:
    """The documented reasons (measured and pinned in the tests) why `backend` cannot agree
    with the native engine for this method on this model; empty when it should agree.
    xaibench validate reports a disagreement with such a reason as KNOWN, not as a failure."""
    from torch import nn

    modules = list(model.modules())
    has_bias = any(getattr(m, "bias", None) is not None and isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))
                   for m in modules)
    if method in ("lrp.preset_a", "lrp.preset_b"):   # alpha-beta on conv layers only, epsilon on dense ones
        has_bias = any(getattr(m, "bias", None) is not None and isinstance(m, nn.modules.conv._ConvNd)
                       for m in modules)
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in modules)
    has_interpolation = any(isinstance(m, nn.Upsample) and m.mode != "nearest" for m in modules)
    bias = options.get("bias", True)
    reasons = []
    if backend == "innvestigate":
        if method in _ALPHA_BETA_FAMILY and bias and has_bias:
            reasons.append("innvestigate's alpha-beta rule divides both streams by the full bias, not b+ and b- "
                           f"(innvestigate issue 116; {_PINNED})")
        if method == "lrp.wsquare" and bias and has_bias:
            reasons.append("innvestigate's w^2 rule ignores biases (equals native bias=False)")
        if method.startswith("lrp.") and has_batchnorm:
            reasons.append("innvestigate linearizes BatchNorm with the variance squared and the mean not scaled "
                           f"by gamma ({_PINNED})")
        if method in ("lrp.flat", "lrp.wsquare") and any(
                isinstance(m, nn.modules.conv._ConvNd) and m.padding not in ("same", "valid")
                and any(_as_tuple(m.padding)) and not _same_padding(m) for m in modules):
            reasons.append("innvestigate's flat/w^2 rules give relevance to explicit zero padding, then drop it")
        if method == "smoothgrad":
            reasons.append("innvestigate 2.1.2's SmoothGrad ignores noise_scale (noise std always 1 in input "
                           "units) and draws its own random numbers")
        if method == "integrated_gradients" and options.get("rule", "riemann_trapezoid") != "riemann_left":
            reasons.append("innvestigate's integrated gradients is a left Riemann sum "
                           "(compare with rule='riemann_left')")
    if backend in ("innvestigate", "zennit") and method in ("lrp.flat", "lrp.wsquare") and has_interpolation:
        reasons.append(f"{backend} passes relevance through (bi/tri)linear upsampling by the plain gradient "
                       "(native: the Norm rule); flat/w^2 send relevance to the zero outputs of ReLUs, "
                       "where the two differ")
    return reasons


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _same_padding(conv) -> bool:
    """Padding that Keras expresses as 'same' (stride 1, 2p = dilation (k - 1))."""
    rank = len(conv.kernel_size)
    pads = _as_tuple(conv.padding) * (rank if len(_as_tuple(conv.padding)) == 1 else 1)
    dilation = _as_tuple(conv.dilation) * (rank if len(_as_tuple(conv.dilation)) == 1 else 1)
    return all(s == 1 for s in _as_tuple(conv.stride)) and all(
        2 * p == d * (k - 1) for p, d, k in zip(pads, dilation, conv.kernel_size))
