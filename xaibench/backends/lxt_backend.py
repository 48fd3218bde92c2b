"""The same explanations computed by LXT 2.1 (lxt.efficient: AttnLRP and CP-LRP), in process.

LXT explains a transformer in a gradient x input framework. It patches the forward methods of
torch's module classes so that the plain gradient times the input is the rule it wants, and it
patches zennit's BasicHook (monkey_patch_zennit) so that zennit's rules (Epsilon, Gamma, ...) on
Linear and Conv2d modules fit that framework. For torchvision's VisionTransformer, LXT 2.1 ships
one patch map, lxt.efficient.models.vit_torch.cp_LRP:

- nn.GELU: the identity rule (lxt.efficient.rules.identity_rule_implicit: the local derivative
  replaced by GELU(x) / (x + 1e-10));
- nn.LayerNorm: the standard deviation held constant (stop_gradient), so the layer is linear in
  its input and gradient x input gives it the z rule (no epsilon, no stabilizer);
- nn.MultiheadAttention: CP-LRP, query and key detached (stop_gradient), so the attention
  weights are constants and the value gets all the relevance.

The backend applies that map and zennit's rule (from the method table: table.METHODS[m].lxt) on
every nn.Linear and nn.Conv2d of the model. attention="attnlrp" replaces the attention patch by
AttnLRP in LXT's efficient form, the wrapper LXT 2.1 applies to the attention functions of
Hugging Face models (lxt.efficient.patches.wrap_attention_forward): the gradient into query and
key divided by 4 and into the value by 2 (the uniform rule on A V and on Q K^T), and the plain
gradient through the softmax, which in gradient x input is AttnLRP's softmax rule
x_i (R_i - s_i sum_j R_j). LXT 2.1 ships no AttnLRP map for torchvision's ViT; this one is built
from LXT's own rule (lxt.efficient.rules.divide_gradient), not from the backend's arithmetic.

What LXT computes that the native engine does not (table.LXT_DIFFERENCES, measured and pinned
in tests/test_lxt_agreement.py):
- nn.MultiheadAttention uses its projection weights functionally (F.multi_head_attention_forward
  calls F.linear with in_proj_weight and out_proj.weight; out_proj's forward never runs), so
  zennit's rule never reaches them: the in- and out-projections get gradient x input, the z rule;
- LayerNorm gets the z rule whatever the method (native: the method's rule, with epsilon or gamma).
Under lrp.z every layer has the z rule on both sides and the two agree to rounding.

Only torchvision's VisionTransformer with the standard patch embedding is explained: every module
must be one the map or zennit's rule covers (conv_proj, LayerNorm, MultiheadAttention, the MLP's
Linear/GELU/Dropout, the Linear head). A conv stem, a pre-logits Tanh, another norm layer or any
other model is refused, naming the module: LXT would give it the plain gradient silently.

LXT's patches are global (the classes, not the model): the backend applies them for the call
only, under a lock, and restores every class attribute it patched in a `finally`, so every other
model and backend behaves as before. The user's model is not modified: zennit's hooks are
removed, the parameters are untouched (zennit's parameter modifiers work on copies), no .grad is
written (torch.autograd.grad with respect to the input only), and a model explained in another
dtype runs as a copy in that dtype. Mode and input policies are the native engine's
(engine.check_input, engine.check_mode).
"""

from __future__ import annotations

import copy
import threading
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn

from .. import targets as targets_module
from ..errors import UnknownMethodError, UnsupportedLayerError, XaibenchError
from ..explanation import Explanation
from ..lrp import composites as native_composites
from ..lrp import engine
from . import table

VERSION = "2.1"

#: canonical name -> the table's description of the LXT run
METHODS = {name: method.lxt for name, method in table.METHODS.items() if method.lxt is not None}

#: the native options this backend honours; the others must keep their defaults
OPTIONS = ("epsilon", "gamma", "stabilizer", "bias", "attention")
ATTENTION_MODES = native_composites.ATTENTION_MODES   # the native option's values: "cp", "attnlrp"

#: LXT 2.1's patch maps (lxt.efficient.models.DEFAULT_MAP): what it has, for the refusal message
LXT_MODELS = ("torchvision VisionTransformer (vit_torch.cp_LRP)", "Hugging Face llama, qwen2, qwen3, gemma3, bert "
              "and gpt2 (their modeling modules; not explained by this backend)")

_LOCK = threading.Lock()   # the patches are global: one LXT call at a time in this process


class LxtPatchError(XaibenchError, RuntimeError):
    """LXT's patches are already applied in this process by someone else."""


def _lxt():
    try:
        import lxt.efficient
        import lxt.efficient.models.vit_torch
        import lxt.efficient.patches
        import lxt.efficient.rules
        import lxt.efficient.zennit_patches
        import zennit.composites
        import zennit.core
        import zennit.rules
    except ImportError as error:  # pragma: no cover - the set-up installs it
        raise ImportError("the lxt backend needs lxt==2.1 and transformers==4.52.4 (env/requirements-lxt.txt: "
                          f"pip install --no-deps lxt==2.1): {error}") from error
    return lxt, zennit


# --- which models ------------------------------------------------------------------------------
def _covered_types():
    """The module types of a torchvision VisionTransformer that LXT's map or zennit's rule covers."""
    from torchvision.models import vision_transformer as vt

    # out_proj is a NonDynamicallyQuantizableLinear (its forward never runs: MultiheadAttention uses its weight)
    return (vt.VisionTransformer, vt.Encoder, vt.EncoderBlock, vt.MLPBlock, nn.Sequential, nn.Conv2d, nn.Linear,
            nn.modules.linear.NonDynamicallyQuantizableLinear, nn.LayerNorm, nn.MultiheadAttention, nn.GELU,
            nn.Dropout, nn.Identity)


def check_model(model: nn.Module) -> None:
    """Refuse what LXT 2.1's vit_torch map does not cover (UnsupportedLayerError naming the module):
    exact types only (a subclass may compute otherwise), the root a VisionTransformer or a subclass
    with its forward."""
    from torchvision.models.vision_transformer import VisionTransformer

    kind = type(model)
    if not isinstance(model, VisionTransformer) or kind.forward is not VisionTransformer.forward \
            or kind._process_input is not VisionTransformer._process_input:
        raise UnsupportedLayerError("(model)", kind.__name__,
                                    f"the lxt backend explains torchvision's VisionTransformer only; LXT {VERSION} "
                                    f"has patch maps for: {'; '.join(LXT_MODELS)}")
    covered = _covered_types()
    for path, module in model.named_modules():
        if module is not model and type(module) not in covered:
            raise UnsupportedLayerError(path or "(model)", type(module).__name__,
                                        f"LXT {VERSION}'s patch map for torchvision's ViT (vit_torch.cp_LRP) and "
                                        "zennit's rules on Linear/Conv2d do not cover it; LXT would give it the "
                                        "plain gradient (a conv stem, a pre-logits Tanh or another norm layer are "
                                        "not supported)")
        if isinstance(module, nn.MultiheadAttention) and (module.bias_k is not None or module.add_zero_attn):
            raise UnsupportedLayerError(path, "MultiheadAttention", "add_bias_kv / add_zero_attn: constant keys "
                                        "and values, which torchvision's ViT does not have")
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
            raise UnsupportedLayerError(path, "LayerNorm", "LXT's layer_norm_forward normalizes the last dimension "
                                        "only")


# --- the patches, applied for one call and restored -----------------------------------------------
def _attnlrp_forward(self, query, key, value, *args, **kwargs):
    """AttnLRP on nn.MultiheadAttention in LXT's efficient form (lxt.efficient.patches.wrap_attention_forward
    for Hugging Face attention): the uniform rule on A V (value / 2) and on Q K^T (query, key / 4:
    half of the half that A gets), the plain gradient through the softmax. The projections are
    linear, so dividing before them is dividing after them."""
    from lxt.efficient.rules import divide_gradient

    query = divide_gradient(query, 4)
    key = divide_gradient(key, 4)
    value = divide_gradient(value, 2)
    return self.original_forward(query, key, value, *args, **kwargs)


def _patched_attributes(zennit):
    """(class, attribute) pairs LXT's patches set: saved before and restored after each call."""
    return [(nn.GELU, "forward"), (nn.GELU, "original_forward"), (nn.LayerNorm, "forward"),
            (nn.LayerNorm, "original_forward"), (nn.MultiheadAttention, "forward"),
            (nn.MultiheadAttention, "original_forward"), (zennit.core.BasicHook, "forward"),
            (zennit.core.BasicHook, "backward")]


_MISSING = object()


def _patch_map(lxt, attention):
    """LXT's map for torchvision's ViT; with attention='attnlrp' its attention entry replaced."""
    from torchvision.models import vision_transformer

    patch_map = dict(lxt.efficient.models.vit_torch.cp_LRP)
    if attention == "attnlrp":
        patch_map[vision_transformer.nn.MultiheadAttention] = partial(
            lxt.efficient.patches.patch_method, _attnlrp_forward, keep_original=True)
    return patch_map


@contextmanager
def patched(attention: str = "cp"):
    """LXT's patches for torchvision's ViT and for zennit, for the duration of the block; every
    class attribute they set is put back as it was (or deleted) afterwards, also on error."""
    if attention not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
    lxt, zennit = _lxt()
    from torchvision.models import vision_transformer

    with _LOCK:
        attributes = _patched_attributes(zennit)
        saved = {(owner, name): vars(owner).get(name, _MISSING) for owner, name in attributes}
        already = [f"{owner.__name__}.{name}" for (owner, name), value in saved.items()
                   if value is not _MISSING and (getattr(value, "__module__", "") or "").startswith("lxt.")]
        if already:
            raise LxtPatchError(f"LXT's patches are already applied in this process ({', '.join(already)}: "
                                "lxt.efficient.monkey_patch or monkey_patch_zennit was called); the lxt backend "
                                "applies and removes them itself for each call")
        try:
            lxt.efficient.monkey_patch(vision_transformer, _patch_map(lxt, attention))
            lxt.efficient.monkey_patch_zennit()
            failed = [f"{owner.__name__}.{name}" for owner, name in attributes
                      if name != "original_forward" and vars(owner).get(name, _MISSING) is saved[(owner, name)]]
            if failed:
                raise LxtPatchError(f"LXT did not patch {', '.join(failed)}")
            yield
        finally:
            for (owner, name), value in saved.items():
                if value is _MISSING:
                    if name in vars(owner):
                        delattr(owner, name)
                else:
                    setattr(owner, name, value)


# --- the explanation ---------------------------------------------------------------------------
def _options(options):
    unknown = set(options) - set(native_composites.DEFAULT_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; known: {sorted(native_composites.DEFAULT_OPTIONS)}")
    o = {**native_composites.DEFAULT_OPTIONS, **options}
    fixed = {k: v for k, v in options.items() if k not in OPTIONS and v != native_composites.DEFAULT_OPTIONS[k]}
    if fixed:
        raise ValueError(f"the lxt backend honours only {', '.join(OPTIONS)}; {sorted(fixed)} are native options "
                         "(a ViT has no max pooling, and LXT's products are its attention rules)")
    if o["attention"] not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {o['attention']!r}")
    if o["bias"] is not True:
        raise ValueError("the lxt backend cannot leave the biases out (bias=False): zennit's zero_params reaches "
                         "the Linear and Conv2d modules only, while gradient x input gives the biases of LayerNorm, "
                         "the attention projections and the positional embedding their share anyway")
    return o


def _rule(zennit, rule: table.Rule, o):
    kwargs = {keyword: o[option] for keyword, option in rule.params.items()}
    return getattr(zennit.rules, rule.name)(**kwargs, **rule.fixed)


def explain(model: nn.Module, x, method: str, target=None, dtype=None, **options) -> Explanation:
    if method not in METHODS:
        raise UnknownMethodError(method, "lxt", METHODS)
    check_model(model)          # before importing lxt (5 s): a model it cannot explain is refused at once
    o = _options(options)
    x = engine.check_input(x, model, dtype)
    engine.check_mode(model)
    _, zennit = _lxt()
    # LXT runs the model itself: in another dtype it runs a copy, never the user's model cast
    if (engine.model_dtype(model) or x.dtype) != x.dtype:
        model = copy.deepcopy(model).to(x.dtype)
    with torch.no_grad():
        output = model(x)
    selected = targets_module.resolve(output, target)
    repeated = x.repeat((selected.count,) + (1,) * (x.dim() - 1)).detach().requires_grad_(True)
    rule = METHODS[method].rule
    composite = zennit.composites.LayerMapComposite(
        [(nn.Conv2d, _rule(zennit, rule, o)), (nn.Linear, _rule(zennit, rule, o))])
    training = {m: m.training for m in model.modules()}
    try:
        with patched(o["attention"]), composite.context(model), torch.enable_grad():
            out = model(repeated)
            # gradient x input: the output's relevance is the selected output itself (seed = selection)
            (gradient,) = torch.autograd.grad(out, repeated, grad_outputs=selected.selection.reshape(out.shape))
    finally:
        for module, flag in training.items():
            module.train(flag)
    relevance = (repeated * gradient).detach()
    explained = selected.explained(output)
    explanation = Explanation(selected.arrange(relevance), selected.arrange(explained), method, "lxt",
                              selected.description, options=dict(options))
    explanation.lxt_rules = rules_text(method, o)
    return explanation


def rules_text(method: str, o: dict) -> str:
    """What LXT applied where, in words (the Explanation's lxt_rules)."""
    attention = ("CP-LRP (query, key detached: vit_torch.cp_LRP)" if o["attention"] == "cp" else
                 "AttnLRP (divide_gradient: query, key / 4, value / 2; softmax by its gradient)")
    rule = METHODS[method].rule
    return (f"{table._rule(rule)} on Linear/Conv2d (zennit, monkey_patch_zennit); LayerNorm: std held constant, "
            "z rule; MultiheadAttention in/out projections: gradient x input (z rule); GELU: identity rule; "
            f"attention: {attention}")
