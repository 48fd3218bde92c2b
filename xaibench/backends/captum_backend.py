"""The same explanations computed by Captum 0.9.0 (captum.attr), in process.

Each canonical method maps to a captum attribution class (table.METHODS[...].captum): LRP with
captum's own rules, Saliency(abs=False) for the gradient, InputXGradient, IntegratedGradients,
NoiseTunnel over Saliency for SmoothGrad, Occlusion. The mode and dtype policies are the native
engine's (engine.prepare), and a final softmax/sigmoid is stripped as there (graph.stripped).

Captum always runs on a deep copy of the model, never on the user's: its LRP overwrites the
weights in place during attribution (Gamma/Alpha1_Beta0 rules) and leaves attributes
(`rule`, `activations`) on the modules; the copy's final softmax/sigmoid modules are replaced
by nn.Identity. tests/test_captum_agreement.py checks the user's model is bit-identical after.

Captum's LRP defects (docs/papers.md section 7), turned into errors the sweep skips
(UnsupportedLayerError) instead of a traceback from inside captum or a silently different map:
- an exact-type whitelist of layers (Linear, Conv2d, MaxPool1-3d, AvgPool2d, AdaptiveAvgPool2d,
  BatchNorm2d, Addition_Module with rules; ReLU, Tanh, Dropout passed): any other leaf module
  (Conv1d, Conv3d, ConvTranspose, Upsample, LeakyReLU, a subclass of Conv2d, ...) is refused,
  naming its path and type. Shape-only modules (Flatten, Unflatten, Identity) get a pass-through
  rule here (captum raises for them, although it passes a functional view by the gradient);
- Alpha1_Beta0_Rule and GammaRule change the weights (w+, w + gamma w+), which is z+ / gamma
  only where the layer's input is non-negative: a layer that receives negative values is
  refused; GammaRule also boosts the positive weights where z_j < 0 (native, zennit 0.5: the
  negative contributions), so a gamma layer whose relevance reaches an output with z_j < 0 is
  refused;
- a module called twice in one forward pass, or a non-leaf module computing with its own
  parameters (which captum would silently pass by the gradient), is refused.
A functional `x + y` (instead of captum's Addition_Module) gets the plain gradient in captum,
as in zennit: relevance counted twice (not detected here).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .. import targets as targets_module
from ..errors import InputError, UnknownMethodError, UnsupportedLayerError
from ..explanation import Explanation
from ..lrp import composites as native_composites
from ..lrp import engine
from ..methods.occlusion import per_dim
from . import table

VERSION = "0.9.0"

#: canonical name -> the table's description of the captum run
METHODS = {name: method.captum for name, method in table.METHODS.items() if method.captum is not None}

#: Riemann rules of the native integrated gradients -> captum's method names
RIEMANN = {"riemann_trapezoid": "riemann_trapezoid", "riemann_left": "riemann_left",
           "riemann_midpoint": "riemann_middle"}

#: the options captum honours per non-LRP method, with the native engine's defaults
OPTIONS = {
    "gradient": {},
    "input_x_gradient": {},
    "integrated_gradients": {"baseline": "zeros", "steps": 64, "rule": "riemann_trapezoid"},
    "smoothgrad": {"samples": 32},
    "occlusion": {"patch": 1, "stride": None, "fill": 0.0, "per_channel": False},
}
#: the noise of SmoothGrad: native's default, noise_level x (max - min) of each sample
SMOOTHGRAD_NOISE_LEVEL = 0.1
SMOOTHGRAD_SEED = 0

SHAPE_ONLY = (nn.Flatten, nn.Unflatten, nn.Identity)


def _captum():
    try:
        import captum.attr
        from captum.attr._core import lrp
        from captum.attr._utils import lrp_rules
    except ImportError as error:
        raise ImportError(f"the captum backend needs captum=={VERSION} (pip install captum=={VERSION})") from error
    return captum.attr, lrp, lrp_rules


class _Explained(nn.Module):
    """The stripped copy, its output flattened per row ([N, outputs]) so that captum's integer
    targets are the flat output indices; a mask target sums the selected outputs ([N, 1])."""

    def __init__(self, model, mask=None):
        super().__init__()
        self.model = model
        self.mask = mask

    def forward(self, x):
        out = self.model(x).reshape(x.shape[0], -1)
        if self.mask is None:
            return out
        return (out * self.mask).sum(1, keepdim=True)


def _working_copy(model, dtype, stripped):
    """A deep copy in the computation dtype, each stripped final layer replaced by nn.Identity."""
    working = copy.deepcopy(model)
    if (engine.model_dtype(working) or dtype) != dtype:
        working = working.to(dtype)
    for path in stripped:
        parent_path, _, name = path.rpartition(".")
        try:
            parent = working.get_submodule(parent_path)
            parent.get_submodule(name)
        except AttributeError:
            raise InputError(f"the captum backend cannot strip the functional final layer '{path}'; "
                             "end the model with an nn.Softmax/nn.Sigmoid module") from None
        setattr(parent, name, nn.Identity())
    return working


def _captum_targets(selected):
    """captum's target (a list of flat indices, one per row) and the mask, if the target is one."""
    rows = selected.selection.reshape(selected.selection.shape[0], -1)
    if torch.is_tensor(selected.description) and selected.description.dtype == torch.bool:
        first = rows[:1]
        if not bool((rows == first).all()):
            raise InputError("the captum backend takes a boolean target mask only when it is the same for every "
                             "sample (shaped like one sample's output)")
        return [0] * rows.shape[0], first
    return rows.argmax(1).tolist(), None


def explain(model: nn.Module, x, method: str, target=None, dtype=None, **options) -> Explanation:
    if method not in METHODS:
        raise UnknownMethodError(method, "captum", METHODS)
    attr, lrp_module, rules = _captum()
    spec = METHODS[method]
    o = _options(method, spec, options)
    prepared = engine.prepare(model, x, dtype)  # the same mode and dtype policy as the native engine
    x, graph = prepared.x, prepared.graph
    with torch.no_grad():
        graph.forward(x, {"composite": None})  # a wrong input shape gets an error naming the layer
    working = _working_copy(model, x.dtype, graph.stripped)
    with torch.no_grad():
        output = working(x)
    selected = targets_module.resolve(output, target)
    indices, mask = _captum_targets(selected)
    wrapped = _Explained(working, mask)
    repeated = x.repeat((selected.count,) + (1,) * (x.dim() - 1)).detach()
    conservation_error = None

    if spec.attribution == "LRP":
        _refuse_functional_merges(graph)
        relevance = _lrp(wrapped, repeated, indices, method, spec, o, lrp_module, rules)
    elif spec.attribution == "Saliency":
        relevance = attr.Saliency(wrapped).attribute(repeated.requires_grad_(True), target=indices, abs=False)
    elif spec.attribution == "InputXGradient":
        relevance = attr.InputXGradient(wrapped).attribute(repeated.requires_grad_(True), target=indices)
    elif spec.attribution == "IntegratedGradients":
        from ..methods import common

        baseline = common.reference("baseline", o["baseline"], x)
        baselines = baseline.repeat((selected.count,) + (1,) * (x.dim() - 1))
        steps = common.integer("steps", o["steps"], minimum=2 if o["rule"] == "riemann_trapezoid" else 1)
        relevance, delta = attr.IntegratedGradients(wrapped).attribute(
            repeated, baselines=baselines, target=indices, n_steps=steps,
            method=RIEMANN[common.choice("rule", o["rule"], tuple(RIEMANN))], return_convergence_delta=True)
        conservation_error = selected.arrange(delta.abs().to(x.dtype))
    elif spec.attribution == "NoiseTunnel":
        relevance = _smoothgrad(attr, wrapped, x, selected, indices, o)
    elif spec.attribution == "Occlusion":
        relevance = _occlusion(attr, wrapped, x, repeated, indices, selected, o)
    else:  # pragma: no cover - the table names only the classes above
        raise AssertionError(spec.attribution)
    explained = selected.explained(output)
    return Explanation(selected.arrange(relevance.detach()), selected.arrange(explained), method, "captum",
                       selected.description, conservation_error=conservation_error, stripped=graph.stripped,
                       options=dict(options))


def _options(method, spec, options):
    if spec.attribution == "LRP":
        known = native_composites.DEFAULT_OPTIONS
        unknown = set(options) - set(known)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        o = {**known, **options}
        if o["maxpool"] != "winner_take_all":
            raise ValueError("captum passes max pooling by its EpsilonRule: winner-take-all only")
        if o.get("product", "uniform") != "uniform":
            raise ValueError("captum has no rule for products of two tensors (they take the plain gradient): "
                             "product= is a native option")
        if o.get("attention", "cp") != "cp":
            raise ValueError("captum has no attention rules: attention= is a native option")
        return o
    known = OPTIONS[method]
    unknown = set(options) - set(known)
    if unknown:
        raise ValueError(f"the captum backend's '{method}' has no option(s) {sorted(unknown)}; "
                         f"its options are: {sorted(known) or 'none'}")
    return {**known, **options}


# --- LRP -------------------------------------------------------------------------------------------
def _rules(rules, o, spec):
    """The rule classes: the method's rule for Linear/Conv2d, EpsilonRule(stabilizer) (native's
    Norm rule) for the parameter-free layers and BatchNorm2d, a pass-through for shape-only ones."""

    class EpsilonWithoutBias(rules.EpsilonRule):
        """EpsilonRule with the bias left out of z (bias=False), as set_bias_to_zero does for
        captum's Gamma and Alpha1_Beta0 rules: the bias is zeroed on the working copy only."""

        def _manipulate_weights(self, module, inputs, outputs):
            if getattr(module, "bias", None) is not None:
                module.bias.data = torch.zeros_like(module.bias.data)

    class PassThrough(rules.EpsilonRule):
        """Relevance unchanged through a shape-only module (what the gradient of a view is)."""

        def _create_backward_hook_input(self, inputs):
            return lambda grad: grad

        def _create_backward_hook_output(self, outputs):
            def hook(grad):
                self.relevance_output[grad.device] = grad.data
                return grad
            return hook

    def linear_rule():
        if spec.rule == "EpsilonRule":
            epsilon = o[spec.params["epsilon"]]
            return rules.EpsilonRule(epsilon=epsilon) if o["bias"] else EpsilonWithoutBias(epsilon=epsilon)
        if spec.rule == "GammaRule":
            rule = rules.GammaRule(gamma=o["gamma"], set_bias_to_zero=not o["bias"])
        else:
            rule = rules.Alpha1_Beta0_Rule(set_bias_to_zero=not o["bias"])
        rule.STABILITY_FACTOR = o["stabilizer"]  # the class default is 1e-9
        return rule

    return linear_rule, (lambda: rules.EpsilonRule(epsilon=o["stabilizer"])), PassThrough


def _check_and_set_rules(working, lrp_module, rules, o, spec):
    """Give every leaf module of the working copy its rule; refuse what captum cannot explain."""
    from captum.attr._utils.custom_modules import Addition_Module

    linear_rule, norm_rule, pass_through = _rules(rules, o, spec)
    supported = tuple(lrp_module.SUPPORTED_LAYERS_WITH_RULES)
    nonlinear = tuple(lrp_module.SUPPORTED_NON_LINEAR_LAYERS)
    names = ", ".join(sorted({k.__name__ for k in supported + nonlinear + SHAPE_ONLY}))
    assigned = {}
    for path, module in working.named_modules():
        children = list(module.children())
        if children:
            if list(module.parameters(recurse=False)):
                raise UnsupportedLayerError(path or "(model)", type(module).__name__,
                                            "captum's LRP sees only leaf modules; this one computes with its own "
                                            "parameters, which captum would pass by the plain gradient")
            continue
        kind = type(module)
        if kind in (nn.Linear, nn.Conv2d):
            module.rule = linear_rule()
        elif kind in supported or kind is Addition_Module:
            module.rule = norm_rule()
        elif kind in SHAPE_ONLY:
            module.rule = pass_through()
        elif kind in nonlinear:
            continue
        else:
            raise UnsupportedLayerError(path, kind.__name__,
                                        f"captum {VERSION}'s LRP has rules only for these exact types: {names}")
        assigned[path] = module.rule  # captum deletes module.rule after the call; the rule keeps its record
    return assigned


def _lrp(wrapped, repeated, indices, method, spec, o, lrp_module, rules):
    from captum.attr import LRP

    working = wrapped.model
    assigned = _check_and_set_rules(working, lrp_module, rules, o, spec)
    record = _record_layers(working, repeated)
    modifies_weights = spec.rule in ("GammaRule", "Alpha1_Beta0_Rule")
    if modifies_weights:
        for path, (low, _) in record.items():
            module = working.get_submodule(path)
            if type(module) in (nn.Linear, nn.Conv2d) and low < 0:
                raise UnsupportedLayerError(path, type(module).__name__,
                                            f"captum's {spec.rule} uses the weights {_MODIFIED[spec.rule]}, which is "
                                            f"{method} only for non-negative inputs; this layer receives values down "
                                            f"to {low:.3g}")
    relevance = LRP(wrapped).attribute(repeated.clone().requires_grad_(True), target=indices)
    if spec.rule == "GammaRule":
        for path, rule in assigned.items():
            module = working.get_submodule(path)
            if type(module) not in (nn.Linear, nn.Conv2d):
                continue
            z = record[path][1]
            arriving = rule.relevance_output.get(z.device)
            if arriving is not None and bool(((z < 0) & (arriving != 0)).any()):
                raise UnsupportedLayerError(path, type(module).__name__,
                                            "captum's GammaRule boosts the positive weights also where the layer "
                                            "output z_j < 0 (native, zennit 0.5: the negative contributions); "
                                            "relevance reaches such outputs here")
    return relevance


_MODIFIED = {"GammaRule": "w + gamma w+", "Alpha1_Beta0_Rule": "w+"}


def _record_layers(working, x):
    """One plain forward pass of the working copy: per leaf module (path), the smallest input
    value and the output; a module called twice is refused (captum's LRP cannot explain it)."""
    record, calls, handles = {}, {}, []
    for path, module in working.named_modules():
        if list(module.children()):
            continue

        def hook(module, inputs, output, path=path):
            calls[path] = calls.get(path, 0) + 1
            first = inputs[0] if inputs else None
            low = float(first.min()) if torch.is_tensor(first) and first.numel() else 0.0
            record[path] = (low, output.detach() if torch.is_tensor(output) else None)
        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            working(x)
    finally:
        for handle in handles:
            handle.remove()
    twice = [path for path, count in calls.items() if count > 1]
    if twice:
        module = working.get_submodule(twice[0])
        raise UnsupportedLayerError(twice[0], type(module).__name__,
                                    "captum's LRP cannot explain a module called more than once per forward pass")
    return record


def _refuse_functional_merges(graph):
    """captum's LRP sees modules only: a functional sum or product of two tensors that depend on
    the input (a residual x + f(x), a gate x * g) takes the plain gradient, which passes the whole
    relevance to each operand (15x the native map on the census ResNet). Refused, naming the step."""
    from ..lrp.steps import ProductStep, SumStep

    for step in graph.steps:
        if isinstance(step, SumStep):
            live = [step.inputs[slot] for _sign, slot in step.operands
                    if isinstance(slot, int) and graph.depends.get(step.inputs[slot], False)]
            if len(live) > 1:
                raise UnsupportedLayerError(step.path, step.kind, "captum's LRP gives a functional sum of two tensors "
                                            "the plain gradient (each operand gets the whole relevance); captum needs "
                                            "the sum inside its Addition_Module")
        if isinstance(step, ProductStep):
            raise UnsupportedLayerError(step.path, step.kind, "captum's LRP gives a product of two tensors the plain "
                                        "gradient")


# --- SmoothGrad and occlusion ----------------------------------------------------------------------
def _smoothgrad(attr, wrapped, x, selected, indices, o):
    """NoiseTunnel(Saliency) per sample, with native's default noise std (noise_level x the
    sample's range: captum takes one std per call); torch's global RNG is forked, so it is left
    as it was, and seeded, so a call is reproducible."""
    from ..methods import common

    samples = common.integer("samples", o["samples"])
    batch, count = x.shape[0], selected.count
    tunnel = attr.NoiseTunnel(attr.Saliency(wrapped))
    flat = x.reshape(batch, -1)
    stds = (SMOOTHGRAD_NOISE_LEVEL * (flat.max(1).values - flat.min(1).values)).tolist()
    rows = torch.empty((count * batch,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device)
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(SMOOTHGRAD_SEED)
        for sample in range(batch):
            picked = [t * batch + sample for t in range(count)]
            inputs = x[sample:sample + 1].repeat((count,) + (1,) * (x.dim() - 1))
            rows[picked] = tunnel.attribute(inputs, nt_type="smoothgrad", nt_samples=samples,
                                            stdevs=stds[sample], target=[indices[i] for i in picked], abs=False)
    return rows


def _occlusion(attr, wrapped, x, repeated, indices, selected, o):
    """captum's Occlusion books the whole output drop on every element of a window; divided by
    the window's elements it is native's convention (the drop spread evenly over the window)."""
    from ..methods import common

    if not isinstance(o["per_channel"], bool):
        raise ValueError(f"option 'per_channel' must be True or False, got {o['per_channel']!r}")
    shape = tuple(x.shape[1:])
    spatial = shape if len(shape) == 1 else shape[1:]
    patch = per_dim("patch", o["patch"], spatial)
    stride = per_dim("stride", patch if o["stride"] is None else o["stride"], spatial)
    if any(p > s for p, s in zip(patch, spatial)):
        raise InputError(f"option 'patch' {patch} is larger than the input's spatial size {tuple(spatial)}")
    if any(st > p for st, p, s in zip(stride, patch, spatial) if p < s):
        raise ValueError(f"captum's Occlusion needs stride <= patch, got stride {stride}, patch {patch}")
    if any((s - p) % st for s, p, st in zip(spatial, patch, stride)):
        raise ValueError(f"captum's last occlusion window hangs over the edge where the stride {stride} does not "
                         f"divide size - patch ({tuple(spatial)} - {patch}); native aligns it with the end")
    if len(shape) > 1:
        channels = 1 if o["per_channel"] else shape[0]
        patch, stride = (channels,) + patch, (channels,) + stride
    fill = common.reference("fill", o["fill"], x)
    fills = fill.repeat((selected.count,) + (1,) * (x.dim() - 1))
    with torch.no_grad():
        relevance = attr.Occlusion(wrapped).attribute(repeated, sliding_window_shapes=patch, strides=stride,
                                                      baselines=fills, target=indices)
    elements = 1
    for p in patch:
        elements *= p
    # captum 0.9 divides by its window counts after .float(): a float64 input comes back in
    # float32 (precision included); cast back so the Explanation has the dtype asked for
    return relevance.to(x.dtype) / elements
