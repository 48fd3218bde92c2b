"""The lxt backend (LXT 2.1, xaibench/backends/lxt_backend.py) on torchvision's VisionTransformer.

What it computes is checked against an independent gradient x input reference written here
with forward hooks on a copy of the model (no LXT code): the standard deviation of each
LayerNorm detached, GELU's gradient replaced by GELU(x) / x (the identity rule), query and key
of each nn.MultiheadAttention detached (CP-LRP) or the gradient into query, key and value scaled
by 1/4, 1/4, 1/2 (AttnLRP), and on every Linear/Conv2d module whose forward runs the gradient at
its output z scaled by z / (z + eps sign z) (the epsilon rule; the z rule with eps tiny). The
agreement with the native engine is tests/test_lxt_agreement.py.

LXT patches torch's and zennit's classes globally: the tests check that every patched attribute
is back after a call (also after a failure), that other models and the zennit backend compute
exactly what they computed before, and that the user's model is left as it was.
"""

from __future__ import annotations

import copy

import pytest
import torch
from strategies import full_snapshot, unchanged
from torch import nn

import xaibench
from xaibench.backends import table
from xaibench.errors import InputError, UnknownMethodError, UnsupportedLayerError
from xaibench.metrics import agreement_per_sample
from xaibench.studies import sweep

pytest.importorskip("lxt.efficient")
from torchvision.models.vision_transformer import VisionTransformer  # noqa: E402

from xaibench.backends import lxt_backend  # noqa: E402

F64 = torch.float64
STABILIZER = 1e-12
REFERENCE_AGREEMENT = 1e-8   # LXT's own 1e-10 stabilizers (identity rule, zennit patch) are the only difference


def small_vit(seed=0, dtype=F64, **kw):
    """A torchvision ViT small enough for a unit test, with every parameter random and of order
    one (torchvision zeroes the head, the class token and the attention biases)."""
    torch.manual_seed(seed)
    settings = dict(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                    num_classes=5)
    model = VisionTransformer(**{**settings, **kw})
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("weight") and parameter.dim() > 1:
                fan_in = parameter[0].numel()
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * (1.5 / fan_in) ** 0.5)
            elif "ln" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn(parameter.shape, generator=generator))
            else:   # biases, class token, positional embedding
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.to(dtype).eval()


def images(n=3, seed=1, dtype=F64):
    return torch.randn((n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- the independent reference ---------------------------------------------------------------------
class _Scale(torch.autograd.Function):
    """The value unchanged, the gradient times a factor."""

    @staticmethod
    def forward(ctx, t, factor):
        ctx.factor = factor
        return t.view_as(t)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def _gradient_scaled(out, factor):
    """out's value with the gradient times factor (a tensor held constant)."""
    return out * factor + (out * (1 - factor)).detach()


def reference(model, x, target, epsilon, attention="cp"):
    """Gradient x input of a copy of the model with the rules of the module docstring."""
    model = copy.deepcopy(model)

    def epsilon_rule(module, inputs, out):
        sign = torch.where(out >= 0, 1.0, -1.0).to(out.dtype)
        return _gradient_scaled(out, (out / (out + epsilon * sign)).detach())

    def layer_norm(module, inputs, out):
        (h,) = inputs
        mean = h.mean(-1, keepdim=True)
        std = torch.sqrt(((h - mean) ** 2).mean(-1, keepdim=True) + module.eps).detach()
        return (h - mean) / std * module.weight + module.bias

    def identity_rule(module, inputs, out):
        (h,) = inputs
        return h * (out / h).detach()

    def attention_rule(module, args, kwargs):
        query, key, value = args
        if attention == "cp":
            return (query.detach(), key.detach(), value), kwargs
        return (_Scale.apply(query, 0.25), _Scale.apply(key, 0.25), _Scale.apply(value, 0.5)), kwargs

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            module.register_forward_hook(epsilon_rule)
        elif isinstance(module, nn.LayerNorm):
            module.register_forward_hook(layer_norm)
        elif isinstance(module, nn.GELU):
            module.register_forward_hook(identity_rule)
        elif isinstance(module, nn.MultiheadAttention):
            module.register_forward_pre_hook(attention_rule, with_kwargs=True)
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return (x * gradient).detach()


# --- what the backend computes ------------------------------------------------------------------
def test_the_table_lists_lxt_and_the_studies_see_it():
    assert xaibench.methods("lxt") == table.available("lxt") == ["lrp.epsilon", "lrp.gamma", "lrp.z"]
    assert "lxt" in sweep.backends()
    assert "Linear/Conv2d" in table.METHODS["lrp.epsilon"].lxt.describe()


@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
@pytest.mark.parametrize("method", ["lrp.z", "lrp.epsilon"])
def test_the_backend_computes_the_rules_it_claims(method, attention):
    model, x = small_vit(), images()
    options = {"stabilizer": STABILIZER, "attention": attention}
    if method == "lrp.epsilon":
        options["epsilon"] = 0.25
    explanation = xaibench.explain(model, x, method, target=2, backend="lxt", **options)
    expected = reference(model, x, 2, options.get("epsilon", STABILIZER), attention)
    assert explanation.backend == "lxt" and explanation.relevance.dtype == F64
    difference = agreement_per_sample(explanation.relevance, expected)
    assert float(difference.max()) < REFERENCE_AGREEMENT, difference
    with torch.no_grad():
        assert torch.equal(explanation.output, model(x)[:, 2])


def test_the_attention_projections_are_used_functionally_so_zennit_never_hooks_them():
    """nn.MultiheadAttention computes with in_proj_weight and out_proj.weight by F.linear; out_proj's
    forward never runs, so LXT's zennit rule cannot reach it: gradient x input, the z rule there
    (one of the differences to native, tests/test_lxt_agreement.py)."""
    model = small_vit()
    calls = []
    projection = model.encoder.layers[0].self_attention.out_proj
    handle = projection.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            model(images(1))
        xaibench.explain(model, images(1), "lrp.epsilon", target=0, backend="lxt")
    finally:
        handle.remove()
    assert calls == []


def test_relevance_is_conserved_when_the_model_has_no_constants():
    """CP-LRP with the z rule conserves: with every bias, the class token and the positional
    embedding at zero, nothing but LXT's 1e-10 stabilizers can absorb any of the output."""
    model = small_vit()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name in ("class_token", "encoder.pos_embedding"):
                parameter.zero_()
    explanation = xaibench.explain(model, images(), "lrp.z", target=1, backend="lxt", stabilizer=STABILIZER)
    total = explanation.relevance.sum((1, 2, 3))
    assert torch.allclose(total, explanation.output, rtol=1e-8, atol=0), (total, explanation.output)


def test_several_targets_are_the_single_targets_stacked():
    model, x = small_vit(), images(2)
    both = xaibench.explain(model, x, "lrp.epsilon", target=[[0, 3], [1, 4]], backend="lxt")
    assert both.relevance.shape == (2, 2, 3, 32, 32)
    for sample, targets in enumerate([[0, 3], [1, 4]]):
        for column, target in enumerate(targets):
            one = xaibench.explain(model, x[sample:sample + 1], "lrp.epsilon", target=target, backend="lxt")
            assert torch.allclose(both.relevance[sample, column], one.relevance[0], rtol=1e-10, atol=1e-14)


def test_gamma_runs_and_differs_from_epsilon():
    model, x = small_vit(), images(2)
    gamma = xaibench.explain(model, x, "lrp.gamma", target=0, backend="lxt", gamma=0.25)
    small = xaibench.explain(model, x, "lrp.gamma", target=0, backend="lxt", gamma=0.0, stabilizer=STABILIZER)
    z = xaibench.explain(model, x, "lrp.z", target=0, backend="lxt", stabilizer=STABILIZER)
    assert torch.isfinite(gamma.relevance).all()
    assert float(agreement_per_sample(small.relevance, z.relevance).max()) < 1e-10   # gamma = 0 is the z rule
    assert float(agreement_per_sample(gamma.relevance, z.relevance).max()) > 1e-3


# --- the user's model and everything else stay as they were ----------------------------------------
def _class_attributes():
    import zennit.core

    owners = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention, zennit.core.BasicHook)
    return {(owner, name): value for owner in owners for name, value in vars(owner).items()
            if name in ("forward", "backward", "original_forward")}


def _bystanders():
    """Another model with the patched classes in it, and what it computes (its output, its
    gradient, its zennit explanation)."""
    torch.manual_seed(3)
    other = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3)).double().eval()
    attention = nn.MultiheadAttention(8, 2, batch_first=True).double().eval()
    x = torch.randn(4, 6, dtype=F64, requires_grad=True)
    tokens = torch.randn(2, 5, 8, dtype=F64, requires_grad=True)

    def compute():
        out = other(x)
        (gradient,) = torch.autograd.grad(out.sum(), x)
        attended = attention(tokens, tokens, tokens, need_weights=False)[0]
        (attention_gradient,) = torch.autograd.grad(attended.sum(), tokens)
        zennit = xaibench.explain(other, x.detach(), "lrp.epsilon", target=0, backend="zennit").relevance
        return [out.detach(), gradient, attended.detach(), attention_gradient, zennit]
    return compute


def test_the_patches_are_undone_and_other_models_compute_what_they_did():
    compute = _bystanders()
    before_attributes, before = _class_attributes(), compute()
    for attention in ("cp", "attnlrp"):
        xaibench.explain(small_vit(), images(1), "lrp.gamma", target=0, backend="lxt", attention=attention)
        after = _class_attributes()
        assert after.keys() == before_attributes.keys()
        assert all(after[k] is before_attributes[k] for k in after)
        assert not hasattr(nn.GELU, "original_forward") and not hasattr(nn.MultiheadAttention, "original_forward")
        for old, new in zip(before, compute()):
            assert torch.equal(old, new)


def test_the_patches_are_undone_after_a_failure(monkeypatch):
    before = _class_attributes()
    seen = {}

    def failing(*args, **kwargs):
        seen["layer_norm"] = nn.LayerNorm.forward.__module__
        raise RuntimeError("planted failure")
    monkeypatch.setattr(lxt_backend.torch.autograd, "grad", failing)
    with pytest.raises(RuntimeError, match="planted failure"):
        xaibench.explain(small_vit(), images(1), "lrp.epsilon", target=0, backend="lxt")
    assert seen["layer_norm"] == "lxt.efficient.patches"   # it was patched during the call
    after = _class_attributes()
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in after)


def test_a_process_where_lxt_is_already_patched_is_refused_and_left_alone():
    from lxt.efficient.patches import layer_norm_forward

    original = nn.LayerNorm.forward
    nn.LayerNorm.forward = layer_norm_forward
    try:
        with pytest.raises(lxt_backend.LxtPatchError, match="already applied"):
            xaibench.explain(small_vit(), images(1), "lrp.epsilon", target=0, backend="lxt")
        assert nn.LayerNorm.forward is layer_norm_forward and not hasattr(nn.GELU, "original_forward")
    finally:
        nn.LayerNorm.forward = original


def test_the_users_model_is_left_as_it_was():
    model = small_vit()
    model.encoder.layers[1].mlp[0].weight.requires_grad_(False)   # a mix of frozen and trainable parameters
    handle = model.heads.register_forward_hook(lambda module, inputs, output: None)
    snapshot = full_snapshot(model)
    for method in ("lrp.epsilon", "lrp.gamma", "lrp.z"):
        xaibench.explain(model, images(2), method, target=None, backend="lxt")
    assert unchanged(model, snapshot)
    assert all(p.grad is None for p in model.parameters())
    assert len(model.heads._forward_hooks) == 1
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
               for m in model.modules() if m is not model.heads)
    handle.remove()


def test_float32_models_and_other_dtypes():
    model32 = small_vit(dtype=torch.float32)
    x32 = images(2, dtype=torch.float32)
    own = xaibench.explain(model32, x32, "lrp.epsilon", target=0, backend="lxt")
    assert own.relevance.dtype == torch.float32
    as64 = xaibench.explain(model32, x32, "lrp.epsilon", target=0, backend="lxt", dtype=F64)
    assert as64.relevance.dtype == F64 and as64.input_dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model32.parameters())   # a copy ran in float64
    assert float(agreement_per_sample(own.relevance, as64.relevance).max()) < 1e-4


def test_train_mode_is_refused_or_explained_as_eval():
    model = small_vit(dropout=0.1).train()
    with pytest.raises(InputError, match="train mode"):
        xaibench.explain(model, images(1), "lrp.epsilon", target=0, backend="lxt")
    explanation = xaibench.explain(model, images(1), "lrp.epsilon", target=0, backend="lxt", mode="eval")
    assert explanation.mode == "eval" and model.training and all(m.training for m in model.modules())


# --- what it refuses ---------------------------------------------------------------------------------
def test_other_models_and_methods_are_refused_with_what_lxt_has():
    cnn = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 30 * 30, 3)).double()
    with pytest.raises(UnsupportedLayerError, match="VisionTransformer only.*llama, qwen2, qwen3, gemma3, bert"):
        xaibench.explain(cnn, images(1), "lrp.epsilon", backend="lxt")
    with pytest.raises(UnsupportedLayerError, match="'heads.act' of type Tanh"):
        xaibench.explain(small_vit(representation_size=8), images(1), "lrp.epsilon", backend="lxt")
    class Doubled(VisionTransformer):
        def forward(self, x):
            return 2 * super().forward(x)
    with pytest.raises(UnsupportedLayerError, match="type Doubled"):
        xaibench.explain(Doubled(32, 8, 1, 2, 16, 32).double().eval(), images(1), "lrp.epsilon", backend="lxt")
    with pytest.raises(UnknownMethodError, match="it has: lrp.epsilon, lrp.gamma, lrp.z"):
        xaibench.explain(small_vit(), images(1), "lrp.zplus", backend="lxt")
    with pytest.raises(ValueError, match="bias=False"):
        xaibench.explain(small_vit(), images(1), "lrp.epsilon", backend="lxt", bias=False)
    with pytest.raises(ValueError, match="native options"):
        xaibench.explain(small_vit(), images(1), "lrp.epsilon", backend="lxt", product="gate_constant")
    with pytest.raises(ValueError, match="attention must be one of"):
        xaibench.explain(small_vit(), images(1), "lrp.epsilon", backend="lxt", attention="raw")
    with pytest.raises(ValueError, match="unknown option"):
        xaibench.explain(small_vit(), images(1), "lrp.epsilon", backend="lxt", alpha_beta=1)


def test_a_refused_model_costs_no_lxt_import(monkeypatch):
    """The model is checked before lxt (5 s to import) is needed: the studies' sweeps skip the
    census's small nets at once."""
    def no_import():
        raise AssertionError("lxt imported for a model the backend refuses")
    monkeypatch.setattr(lxt_backend, "_lxt", no_import)
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    with pytest.raises(UnsupportedLayerError):
        xaibench.explain(cnn, torch.ones(1, 12, dtype=F64), "lrp.epsilon", backend="lxt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_on_cuda_the_map_is_the_cpu_map():
    model, x = small_vit(), images(2)
    cpu = xaibench.explain(model, x, "lrp.epsilon", target=1, backend="lxt")
    cuda = xaibench.explain(model.cuda(), x.cuda(), "lrp.epsilon", target=1, backend="lxt")
    assert cuda.relevance.device.type == "cuda"
    assert float(agreement_per_sample(cuda.relevance.cpu(), cpu.relevance).max()) < 1e-10
