"""The one table: each canonical method as the native engine, zennit, innvestigate, captum and lxt run it.

Everything that says "method M on backend B means this" lives here: the zennit rules or
composite, the innvestigate analyzer and its keyword arguments, the captum attribution
class and LRP rule, and the zennit rule LXT puts on Linear/Conv2d, as functions of the
canonical options (xaibench.lrp.composites.DEFAULT_OPTIONS). The backends read it, and
docs/methods.md is generated from it (`xaibench methods --markdown docs/methods.md`;
tests/test_table.py checks the file is current), so nothing is written twice. So are the
documented differences (DIFFERENCES, and LXT_DIFFERENCES for lxt): where another backend cannot agree with the native
engine, why, and the control that `xaibench validate` runs before it calls such a
disagreement KNOWN.

Option names are the native engine's: epsilon, gamma, stabilizer, alpha, beta, low, high,
bias (True: biases take part in the rules and absorb their share; False: innvestigate's
`_IB` "ignore bias" analyzers, zennit's zero_params=["bias"], captum's set_bias_to_zero).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .. import layers


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
class Captum:
    """How captum 0.9.0 runs a method: the captum.attr class, and for LRP the rule on Linear and
    Conv2d with its parameters {captum keyword: canonical option} (xaibench/backends/captum_backend.py)."""

    attribution: str
    rule: str | None = None
    params: dict = field(default_factory=dict)
    text: str = ""

    def describe(self) -> str:
        if self.attribution != "LRP":
            return self.text
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (f"LRP: {self.rule}({args}) on Linear/Conv2d (bias=False: set_bias_to_zero); "
                "EpsilonRule(epsilon=stabilizer) on pooling, BatchNorm2d, Addition_Module" + self.text)


@dataclass(frozen=True)
class Lxt:
    """How LXT 2.1 runs a method on a torchvision VisionTransformer (xaibench/backends/lxt_backend.py):
    the zennit rule on every nn.Linear and nn.Conv2d (zennit's BasicHook patched by LXT's
    monkey_patch_zennit into its gradient x input framework), LXT's vit_torch patch map elsewhere."""

    rule: Rule

    def describe(self) -> str:
        return (f"{_rule(self.rule)} on Linear/Conv2d (zennit, monkey_patch_zennit); LayerNorm std held "
                "constant: z rule; MultiheadAttention in/out projections (used functionally): gradient x input, "
                "z rule; GELU: identity rule; attention='cp': query, key detached (vit_torch.cp_LRP), 'attnlrp': "
                "divide_gradient (query, key / 4, value / 2), softmax by its gradient; torchvision "
                "VisionTransformer only; bias=True only")


_CAPTUM_SIGN = ("; refused where a Linear/Conv2d receives negative values (captum's rule assumes "
                "non-negative inputs)")


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    native: bool = True
    zennit: Zennit | None = None
    innvestigate: Innvestigate | None = None
    captum: Captum | None = None
    lxt: Lxt | None = None
    options: tuple = ()          # canonical options the method reads
    lrp: bool = True             # a relevance-conserving method (checked by the ledger)
    native_only_options: tuple = ()  # options only the native engine honours (the other backends refuse them)


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
_GAMMA = Rule("Gamma", {"gamma": "gamma", "stabilizer": "stabilizer"})
_ZPLUS = Rule("ZPlus", {"stabilizer": "stabilizer"})
_AB10 = Rule("AlphaBeta", {"stabilizer": "stabilizer"}, {"alpha": 1.0, "beta": 0.0})
_AB21 = Rule("AlphaBeta", {"stabilizer": "stabilizer"}, {"alpha": 2.0, "beta": 1.0})


def _alpha_beta(alpha, beta):
    name = f"lrp.alpha_{alpha}_beta_{beta}"
    return Innvestigate(lambda o: name + _bias_suffix(o), text=f"{name} (bias=False: {name}_IB)")


_TABLE = [
    Method("gradient", "the input gradient of the explained output (saliency)", lrp=False,
           zennit=Zennit("gradient"), innvestigate=Innvestigate(_same("gradient"), text="gradient"),
           captum=Captum("Saliency", text="Saliency(abs=False)")),
    Method("input_x_gradient", "input times gradient", lrp=False, zennit=Zennit("gradient"),
           innvestigate=Innvestigate(_same("input_t_gradient"), text="input_t_gradient"),
           captum=Captum("InputXGradient", text="InputXGradient")),
    Method("integrated_gradients", "integrated gradients from a baseline (Sundararajan et al. 2017)", lrp=False,
           options=("baseline", "steps", "rule"), native_only_options=("batch_steps",),
           innvestigate=Innvestigate(_same("integrated_gradients"), lambda o: {"steps": o.get("steps", 64)},
                                     "integrated_gradients(steps, reference_inputs=baseline): a left Riemann sum "
                                     "(points k/steps, k = 0..steps-1; native rule='riemann_left')"),
           captum=Captum("IntegratedGradients", text="IntegratedGradients(baselines=baseline, n_steps=steps, "
                         "method=riemann_trapezoid / riemann_left / riemann_middle for rule); its path points "
                         "come from a float32 torch.linspace")),
    Method("smoothgrad", "gradient averaged over noisy copies of the input (Smilkov et al. 2017)", lrp=False,
           options=("noise_level", "samples", "seed"),
           native_only_options=("noise_level", "seed", "kind", "batch_samples"),
           innvestigate=Innvestigate(_same("smoothgrad"), lambda o: {"augment_by_n": o.get("samples", 32)},
                                     "smoothgrad(augment_by_n=samples): 2.1.2 ignores noise_scale, the noise "
                                     "std is always 1 in input units; TF's own random numbers"),
           captum=Captum("NoiseTunnel", text="NoiseTunnel(Saliency(abs=False), nt_type='smoothgrad', "
                         "nt_samples=samples, stdevs=0.1 x (max - min) of each sample, native's default); "
                         "torch's random numbers, seed 0")),
    Method("occlusion", "output drop when patches of the input are replaced by a fill value", lrp=False,
           options=("patch", "stride", "fill"),
           captum=Captum("Occlusion", text="Occlusion(sliding_window_shapes=(C, *patch), strides=(C, *stride), "
                         "baselines=fill) / elements per window (captum books the whole drop on every element); "
                         "a stride that does not divide size - patch is refused")),
    Method("lrp.z", "LRP-0 on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=Rule("Epsilon", {"epsilon": "stabilizer"})),
           captum=Captum("LRP", "EpsilonRule", {"epsilon": "stabilizer"}),
           lxt=Lxt(Rule("Epsilon", {"epsilon": "stabilizer"})),
           innvestigate=Innvestigate(lambda o: "lrp", lambda o: {"rule": "Z", "rule_kwargs": {"bias": o["bias"]}},
                                     "lrp(rule=ZRule(bias)); divides by z only where z == 0 (safe_divide)")),
    Method("lrp.epsilon", "LRP-epsilon on every layer", options=("epsilon", "bias"),
           zennit=Zennit("rules", everywhere=_EPSILON), captum=Captum("LRP", "EpsilonRule", {"epsilon": "epsilon"}),
           lxt=Lxt(_EPSILON),
           innvestigate=Innvestigate(_same("lrp.epsilon"), lambda o: {"epsilon": o["epsilon"], "bias": o["bias"]},
                                     "lrp.epsilon(epsilon, bias)")),
    Method("lrp.gamma", "LRP-gamma on every layer (zennit 0.5's generalized form)",
           options=("gamma", "stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=_GAMMA), lxt=Lxt(_GAMMA),
           captum=Captum("LRP", "GammaRule", {"gamma": "gamma", "STABILITY_FACTOR": "stabilizer"},
                         _CAPTUM_SIGN + " or where relevance reaches an output z_j < 0")),
    Method("lrp.zplus", "LRP-z+ on every layer", options=("stabilizer", "bias"),
           zennit=Zennit("rules", everywhere=_ZPLUS),
           captum=Captum("LRP", "Alpha1_Beta0_Rule", {"STABILITY_FACTOR": "stabilizer"}, _CAPTUM_SIGN),
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
           zennit=Zennit("rules", everywhere=_AB10), innvestigate=_alpha_beta(1, 0),
           captum=Captum("LRP", "Alpha1_Beta0_Rule", {"STABILITY_FACTOR": "stabilizer"}, _CAPTUM_SIGN)),
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
        "| method | what it is | options | native | zennit 0.5.1 | innvestigate 2.1.2 | captum 0.9.0 | lxt 2.1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in _TABLE:
        cells = [f"`{method.name}`", method.description, ", ".join(method.options) or "-",
                 "yes" if method.native else "-",
                 method.zennit.describe() if method.zennit else "-",
                 method.innvestigate.describe() if method.innvestigate else "-",
                 method.captum.describe() if method.captum else "-",
                 method.lxt.describe() if method.lxt else "-"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += [
        "",
        "## Documented differences",
        "",
        "Where another backend cannot agree with the native engine. `xaibench validate` reports such a",
        "disagreement as KNOWN only when the control agrees within the agreement tolerance: the same",
        "comparison with the cause removed on both backends, or the native engine recomputing what the",
        "other library computes. Otherwise the documented cause does not explain it: FAIL.",
        "",
        "| backends | when | what the other library computes | control |",
        "|---|---|---|---|",
    ]
    for difference in all_differences():
        kind = "native recomputes" if difference.control.native_only else "cause removed"
        cells = [", ".join(difference.backends), difference.when, difference.reason,
                 f"{kind}: {difference.control.text}"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


# --- documented differences ------------------------------------------------------------------------
# Each entry says when another backend cannot agree with the native engine, why, and the control
# that earns the KNOWN verdict of `xaibench validate`: a comparison in which the documented cause
# cannot act, so that the two backends must agree there within the agreement tolerance. A
# difference whose control also disagrees is not (only) the documented one: a FAIL.

_ALPHA_BETA_FAMILY = {"lrp.alpha1beta0", "lrp.alpha2beta1", "lrp.alpha_beta", "lrp.zplus", "lrp.zbox",
                      "lrp.preset_a", "lrp.preset_b"}
_PRESETS = {"lrp.preset_a", "lrp.preset_b"}   # alpha-beta on conv layers only, epsilon on dense ones
_PINNED = "pinned in tests/test_innvestigate_agreement.py"
_PINNED_CAPTUM = "pinned in tests/test_captum_agreement.py"
_CAPTUM_WEIGHT_RULES = {"lrp.alpha1beta0", "lrp.zplus", "lrp.gamma"}   # captum rules that change the weights


@dataclass
class Comparison:
    """What one side of a control explains: method, options (the native engine's names) and
    model, a deep copy of the user's that the control may change; x is the input batch, read only."""

    method: str
    options: dict
    model: nn.Module
    x: torch.Tensor


@dataclass(frozen=True)
class Control:
    """A comparison without the documented cause. `change` edits a Comparison in place.
    native_only: the native engine recomputes what the other library computes (the stronger
    proof), and the other backend's explanation is used as measured; otherwise both backends
    explain the changed comparison (the cause removed)."""

    text: str
    change: Callable[[Comparison], None]
    native_only: bool = False


@dataclass(frozen=True)
class KnownDifference:
    """Why `backends` cannot agree with the native engine where `applies`, and the control."""

    backends: tuple
    when: str                                          # the condition of `applies`, in words (docs/methods.md)
    reason: str                                        # what the other library computes instead
    applies: Callable[[str, dict, nn.Module], bool]    # (method, options, model)
    control: Control


def _has_bias(model, kinds) -> bool:
    return any(isinstance(m, kinds) and m.bias is not None for m in model.modules())


def _has_batchnorm(model) -> bool:
    return any(isinstance(m, layers.BATCHNORM) for m in model.modules())


def _explicitly_padded(conv) -> bool:
    """A conv the Keras twin exports as ZeroPadding + a 'valid' conv (keras_export._conv)."""
    return (isinstance(conv, layers.CONV_ANY) and conv.padding not in ("same", "valid") and any(_as_tuple(conv.padding))
            and not _same_padding(conv))


def _interpolating(upsample) -> bool:
    return isinstance(upsample, nn.Upsample) and upsample.mode != "nearest"


def _replace_children(model, replace):
    """Each submodule m for which replace(m) is not None becomes replace(m), in its parent; a
    module registered under several names gets one replacement, shared as the original was."""
    replacements = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) not in replacements:
                replacements[id(child)] = replace(child)
            if replacements[id(child)] is not None:
                setattr(parent, name, replacements[id(child)])


class ExplicitlyPadded(nn.Module):
    """conv(x) computed as F.pad(x), then the same conv with padding 0: how the Keras twin
    mirrors a conv whose padding is not 'same'. Takes over the conv (of a control's copy)."""

    def __init__(self, conv):
        super().__init__()
        rank = len(conv.kernel_size)
        padding = _as_tuple(conv.padding) * (rank if len(_as_tuple(conv.padding)) == 1 else 1)
        self.pad = [p for p in reversed(padding) for _ in (0, 1)]   # F.pad: the last dimension first
        conv.padding = (0,) * rank
        self.conv = conv

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


# the controls: each changes its own copy (Comparison.model), never the user's model
def _ignore_alpha_beta_biases(c):
    """bias=False: the biases still act in the forward pass, the rules leave them out. The
    presets have no bias option in innvestigate: their conv biases are set to 0 instead."""
    if c.method in _PRESETS:
        with torch.no_grad():
            for conv in c.model.modules():
                if isinstance(conv, layers.CONV_ANY) and conv.bias is not None:
                    conv.bias.zero_()
    else:
        c.options["bias"] = False


def _native_without_biases(c):
    c.options["bias"] = False


def _remove_batchnorms(c):
    """Every BatchNorm module replaced by nn.Identity (the Keras twin's forward check has
    already compared the BatchNorm layers themselves with PyTorch)."""
    _replace_children(c.model, lambda m: nn.Identity() if isinstance(m, layers.BATCHNORM) else None)


def _pad_explicitly(c):
    """The Keras twin's split of a padded conv, in PyTorch: the native rule then, like
    innvestigate's, sees the padded positions as inputs and the padding's reverse drops their share."""
    _replace_children(c.model, lambda m: ExplicitlyPadded(m) if _explicitly_padded(m) else None)


def _nearest_upsampling(c):
    for upsample in c.model.modules():
        if _interpolating(upsample):
            upsample.mode, upsample.align_corners = "nearest", None


def _gradient_instead(c):
    c.method, c.options = "gradient", {}


def _left_riemann_sum(c):
    c.options["rule"] = "riemann_left"


def _batch_bounds(c):
    """The bounds the innvestigate backend bakes into the analyzer: the whole batch's min and max."""
    if c.options.get("low") is None:
        c.options["low"] = float(c.x.min())
    if c.options.get("high") is None:
        c.options["high"] = float(c.x.max())


DIFFERENCES = [
    KnownDifference(
        ("innvestigate",), "alpha-beta family (z+, z^B, the presets' conv layers) with bias=True, on a model "
        "whose conv/linear layers have biases",
        f"innvestigate's alpha-beta rule divides both streams by the full bias, not b+ and b- (innvestigate "
        f"issue 116; {_PINNED})",
        lambda method, options, model: method in _ALPHA_BETA_FAMILY and options.get("bias", True)
        and _has_bias(model, layers.CONV_ANY if method in _PRESETS else layers.CONV_OR_LINEAR),
        Control("both with bias=False, the presets with their conv biases set to 0", _ignore_alpha_beta_biases)),
    KnownDifference(
        ("innvestigate",), "lrp.wsquare with bias=True, on a model with biases",
        "innvestigate's w^2 rule ignores biases (equals native bias=False)",
        lambda method, options, model: method == "lrp.wsquare" and options.get("bias", True)
        and _has_bias(model, layers.CONV_OR_LINEAR),
        Control("native with bias=False", _native_without_biases, native_only=True)),
    KnownDifference(
        ("innvestigate",), "LRP methods on a model with BatchNorm",
        "innvestigate explains BatchNorm as a layer of its own with its bn_layer_rule (native merges it into "
        "the adjacent linear layer) and linearizes it with the variance squared and the mean not scaled by "
        f"gamma ({_PINNED})",
        lambda method, options, model: method.startswith("lrp.") and _has_batchnorm(model),
        Control("both on the model with each BatchNorm replaced by nn.Identity", _remove_batchnorms)),
    KnownDifference(
        ("innvestigate",), "lrp.flat, lrp.wsquare on a conv with padding Keras cannot express as 'same'",
        "innvestigate's flat/w^2 rules give relevance to explicit zero padding, then drop it",
        lambda method, options, model: method in ("lrp.flat", "lrp.wsquare")
        and any(map(_explicitly_padded, model.modules())),
        Control("native with each such conv split into F.pad and an unpadded conv, as the Keras twin is",
                _pad_explicitly, native_only=True)),
    KnownDifference(
        ("innvestigate",), "smoothgrad",
        "innvestigate 2.1.2's SmoothGrad ignores noise_scale (noise std always 1 in input units) and draws "
        "its own random numbers",
        lambda method, options, model: method == "smoothgrad",
        # the noise itself cannot be compared: random on both sides, with different scales
        Control("both with the gradient that SmoothGrad averages; the noise is not compared",
                _gradient_instead)),
    KnownDifference(
        ("innvestigate",), "integrated_gradients with a rule other than riemann_left",
        "innvestigate's integrated gradients is a left Riemann sum (compare with rule='riemann_left')",
        lambda method, options, model: method == "integrated_gradients"
        and options.get("rule", "riemann_trapezoid") != "riemann_left",
        Control("native with rule='riemann_left'", _left_riemann_sum, native_only=True)),
    KnownDifference(
        ("innvestigate",), "lrp.zbox without low or high",
        "the innvestigate backend bakes one pair of z^B bounds into the analyzer: the whole batch's min and "
        "max (native: each sample's own)",
        lambda method, options, model: method == "lrp.zbox"
        and (options.get("low") is None or options.get("high") is None),
        Control("native with the batch's min and max as low and high", _batch_bounds, native_only=True)),
    KnownDifference(
        ("captum",), "lrp.alpha1beta0, lrp.zplus, lrp.gamma with bias=True, on a model whose conv/linear layers "
        "have biases",
        f"captum's Alpha1_Beta0_Rule and GammaRule keep the full bias b in z_j (native: b+ with the positive "
        f"contributions; gamma also boosts it) ({_PINNED_CAPTUM})",
        lambda method, options, model: method in _CAPTUM_WEIGHT_RULES and options.get("bias", True)
        and _has_bias(model, layers.CONV_OR_LINEAR),
        Control("both with bias=False (captum's set_bias_to_zero)", _native_without_biases)),
    KnownDifference(
        ("captum",), "LRP methods on a model with BatchNorm",
        f"captum's LRP gives BatchNorm2d its own EpsilonRule (native merges it into the adjacent linear layer) "
        f"({_PINNED_CAPTUM})",
        lambda method, options, model: method.startswith("lrp.") and _has_batchnorm(model),
        Control("both on the model with each BatchNorm replaced by nn.Identity", _remove_batchnorms)),
    KnownDifference(
        ("captum",), "integrated_gradients with rule riemann_trapezoid (the native default)",
        f"captum's riemann_trapezoid weighs its points k/(n-1) by 1/n (the two ends 1/(2n)): (n-1)/n times the "
        f"trapezoid rule, so completeness misses 1/n of f(x) - f(baseline) ({_PINNED_CAPTUM})",
        lambda method, options, model: method == "integrated_gradients"
        and options.get("rule", "riemann_trapezoid") == "riemann_trapezoid",
        Control("both with rule='riemann_left'", _left_riemann_sum)),
    KnownDifference(
        ("captum",), "smoothgrad",
        "captum's NoiseTunnel draws its own random numbers (torch's generator, seed 0), with native's default noise "
        "std",
        lambda method, options, model: method == "smoothgrad",
        Control("both with the gradient that SmoothGrad averages; the noise is not compared", _gradient_instead)),
    KnownDifference(
        ("zennit", "innvestigate"), "lrp.flat, lrp.wsquare on a model with (bi/tri)linear upsampling",
        "zennit and innvestigate pass relevance through (bi/tri)linear upsampling by the plain gradient "
        "(native: the Norm rule); flat/w^2 send relevance to the zero outputs of ReLUs, where the two differ",
        lambda method, options, model: method in ("lrp.flat", "lrp.wsquare")
        and any(map(_interpolating, model.modules())),
        Control("both with nearest upsampling", _nearest_upsampling)),
]


# --- LXT 2.1 (xaibench/backends/lxt_backend.py) -----------------------------------------------------
# Where LXT's recipe for torchvision's ViT gives a part of the network another rule than the native
# engine does. Each control is native_only: the native engine explains a copy of the model with that
# part written out in operations it explains by the z rule, as LXT's gradient x input does (measured:
# all of lrp.epsilon, lrp.gamma, lrp.z, with attention='cp' and 'attnlrp', agree to ~1e-11 then;
# tests/test_lxt_agreement.py). Kept apart from DIFFERENCES because tests/test_table.py checks every
# entry there on a 1x8x8 example input, which no torchvision ViT takes; tests/test_lxt_agreement.py
# runs the same check on these. documented_differences, known_differences and markdown read both.
_PINNED_LXT = "pinned in tests/test_lxt_agreement.py"
_LXT_RULES = ("lrp.epsilon", "lrp.gamma")


def _has(model, kinds) -> bool:
    return any(isinstance(m, kinds) for m in model.modules())


class WrittenOutLayerNorm(nn.Module):
    """A LayerNorm as (x - mean) / sqrt(var + eps) * weight + bias (of a control's copy): the
    native engine holds the divisor constant and gives the mean subtraction and the bias the
    z rule of sums, which is LXT's layer_norm_forward under gradient x input."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.dims = tuple(range(-len(norm.normalized_shape), 0))
        self.eps, self.weight, self.bias = norm.eps, norm.weight, norm.bias

    def forward(self, x):
        centered = x - x.mean(self.dims, keepdim=True)
        y = centered / torch.sqrt((centered * centered).mean(self.dims, keepdim=True) + self.eps)
        if self.weight is not None:
            y = y * self.weight
        return y if self.bias is None else y + self.bias


class WrittenOutAttention(nn.Module):
    """nn.MultiheadAttention (self-attention with packed projections, as torchvision's ViT has
    it) written out: each projection as the products x_k w_jk summed over k, which the native
    engine explains by the z rule (a product with a parameter is a scaling, the sum takes the
    z rule), as LXT's gradient x input does with the F.linear calls the module makes; then the
    softmax and the two matrix products, for which the native attention= option applies.
    Memory: tokens x width x 3 width per sample."""

    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        if not attention._qkv_same_embed_dim or attention.bias_k is not None or attention.add_zero_attn:
            raise ValueError("WrittenOutAttention: packed projections without bias_k/add_zero_attn only")
        self.heads, self.batch_first = attention.num_heads, attention.batch_first
        self.in_weight, self.in_bias = attention.in_proj_weight, attention.in_proj_bias
        self.out_weight, self.out_bias = attention.out_proj.weight, attention.out_proj.bias

    @staticmethod
    def project(x, weight, bias):
        y = (x.unsqueeze(-1) * weight.t()).sum(-2)
        return y if bias is None else y + bias

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, **kwargs):
        if key_padding_mask is not None or attn_mask is not None or kwargs.get("is_causal"):
            raise ValueError("WrittenOutAttention: no masks")
        x = query if self.batch_first else query.transpose(0, 1)
        batch, tokens, width = x.shape
        q, k, v = self.project(x, self.in_weight, self.in_bias).chunk(3, dim=-1)
        shape = (batch, tokens, self.heads, width // self.heads)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(-2, -1) * (width // self.heads) ** -0.5, dim=-1)
        out = self.project((weights @ v).transpose(1, 2).reshape(batch, tokens, width), self.out_weight,
                           self.out_bias)
        return (out if self.batch_first else out.transpose(0, 1)), None


def _write_out_layer_norms(c):
    _replace_children(c.model, lambda m: WrittenOutLayerNorm(m) if type(m) is nn.LayerNorm else None)


def _write_out_attention(c):
    _replace_children(c.model, lambda m: WrittenOutAttention(m) if isinstance(m, nn.MultiheadAttention) else None)


LXT_DIFFERENCES = [
    KnownDifference(
        ("lxt",), "lrp.epsilon, lrp.gamma on a model with LayerNorm",
        "LXT gives LayerNorm the z rule whatever the method: its layer_norm_forward holds the standard deviation "
        "constant and gradient x input does the rest, with no epsilon or gamma (native: the method's rule on the "
        f"normalization's matrix) ({_PINNED_LXT})",
        lambda method, options, model: method in _LXT_RULES and _has(model, nn.LayerNorm),
        Control("native with each LayerNorm written out as (x - mean) / std * weight + bias (the z rule of sums on "
                "the mean subtraction and the bias)", _write_out_layer_norms, native_only=True)),
    KnownDifference(
        ("lxt",), "lrp.epsilon, lrp.gamma on a model with nn.MultiheadAttention",
        "nn.MultiheadAttention computes its in- and out-projections by F.linear with its own weights (out_proj's "
        "forward never runs), so LXT's zennit rule never reaches them: gradient x input, the z rule (native: the "
        f"method's rule on the projections) ({_PINNED_LXT})",
        lambda method, options, model: method in _LXT_RULES and _has(model, nn.MultiheadAttention),
        Control("native with each nn.MultiheadAttention written out, its projections as products with the weights "
                "summed (the z rule)", _write_out_attention, native_only=True)),
]


def all_differences() -> list[KnownDifference]:
    """DIFFERENCES and LXT_DIFFERENCES."""
    return DIFFERENCES + LXT_DIFFERENCES


def documented_differences(backend: str, method: str, options: dict, model) -> list[KnownDifference]:
    """The documented reasons (measured and pinned in the tests) why `backend` cannot agree
    with the native engine for this method on this model, each with its control; empty when
    it should agree."""
    return [d for d in all_differences() if backend in d.backends and d.applies(method, options, model)]


def known_differences(backend: str, method: str, options: dict, model) -> list[str]:
    """The reasons of documented_differences, as text (the census and the case files record them)."""
    return [d.reason for d in documented_differences(backend, method, options, model)]


def control(differences: list[KnownDifference], method: str, options: dict, model, x):
    """The control of these differences together: (native side, other side), each a Comparison
    on its own deep copy of the model with every cause removed. The other side is None when
    every control is native_only: the other backend's measured explanation is the control's."""
    removing = [d.control for d in differences if not d.control.native_only]
    recomputing = [d.control for d in differences if d.control.native_only]
    native = Comparison(method, dict(options), copy.deepcopy(model), x)
    other = Comparison(method, dict(options), copy.deepcopy(model), x) if removing else None
    for step in removing:
        step.change(native)
        step.change(other)
    for step in recomputing:
        step.change(native)
    return native, other


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _same_padding(conv) -> bool:
    """Padding that Keras expresses as 'same' (stride 1, 2p = dilation (k - 1))."""
    rank = len(conv.kernel_size)
    pads = _as_tuple(conv.padding) * (rank if len(_as_tuple(conv.padding)) == 1 else 1)
    dilation = _as_tuple(conv.dilation) * (rank if len(_as_tuple(conv.dilation)) == 1 else 1)
    return all(s == 1 for s in _as_tuple(conv.stride)) and all(
        2 * p == d * (k - 1) for p, d, k in zip(pads, dilation, conv.kernel_size))
