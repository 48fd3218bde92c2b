"""Never a wrong map without saying so (issue 14, items 1-9 and 11).

Each test here reproduces a case where the engine or a backend used to return a map of
something other than the model the user gave (an edited model, a hooked model, a model in
train mode, another dtype, an unbatched input), or changed the user's model. The rule: a
faithful explanation of exactly model(x), recorded as such, or an error that names the cause.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from strategies import randomize
from torch import nn

import xaibench
from xaibench.errors import InputError, XaibenchError

NATIVE_METHODS = ["lrp.epsilon", "lrp.zplus", "gradient", "input_x_gradient", "integrated_gradients",
                  "smoothgrad", "occlusion"]


def _x(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _mlp():
    model = nn.Sequential(OrderedDict([("encoder", nn.Linear(4, 6)), ("act", nn.ReLU()),
                                       ("head", nn.Linear(6, 3))]))
    return randomize(model, seed=0).eval()


def _bitwise_state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_bit_identical(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key].dtype == value.dtype, key
        assert torch.equal(after[key], value), f"{key} changed by {float((after[key] - value).abs().max()):.3g}"


# --- 1, 2: the cached graph must follow the model ------------------------------------------------
@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_replacing_a_submodule_between_calls_is_seen(method):
    model, x = _mlp(), _x(8, 4)
    xaibench.explain(model, x, method)
    model.act = nn.LeakyReLU(0.2)
    e = xaibench.explain(model, x, method, target=0)
    assert torch.allclose(e.output, model(x)[:, 0], atol=1e-6)


def test_changing_a_module_attribute_between_calls_is_seen():
    model = randomize(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.LeakyReLU(0.1), nn.Flatten(),
                                    nn.Linear(2 * 6 * 6, 2)), seed=1).eval()
    x = _x(3, 1, 6, 6)
    xaibench.explain(model, x)
    model[1].negative_slope = 0.5
    e = xaibench.explain(model, x, target=1)
    assert torch.allclose(e.output, model(x)[:, 1], atol=1e-6)
    model[0].padding = (0, 0)
    with pytest.raises(XaibenchError):  # the head no longer fits: an error, not the old graph
        xaibench.explain(model, x)


def test_changing_a_buffer_by_assignment_is_seen():
    model = randomize(nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)), seed=2).eval()
    x = _x(6, 4)
    xaibench.explain(model, x)
    model[1].running_mean = torch.full((5,), 3.0)
    e = xaibench.explain(model, x, target=0)
    assert torch.allclose(e.output, model(x)[:, 0], atol=1e-5)


def test_editing_a_plain_tensor_attribute_in_place_is_seen():
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)
            self.shift = torch.zeros(4)  # neither a parameter nor a buffer: fx reads it as an attribute

        def forward(self, x):
            return self.linear(x + self.shift)

    model, x = randomize(Shifted(), seed=3).eval(), _x(3, 4)
    xaibench.explain(model, x)
    model.shift.add_(1.5)
    e = xaibench.explain(model, x, target=1)
    assert torch.allclose(e.output, model(x)[:, 1], atol=1e-6)


@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_a_forward_hook_added_after_the_first_call_is_refused(method):
    model, x = _mlp(), _x(5, 4)
    xaibench.explain(model, x, method)
    handle = model.act.register_forward_hook(lambda module, inputs, output: output * 2)
    try:
        with pytest.raises(InputError, match="hook"):
            xaibench.explain(model, x, method)
    finally:
        handle.remove()
    xaibench.explain(model, x, method)  # the hook removed: explained again


def test_a_forward_pre_hook_added_later_is_refused():
    model, x = _mlp(), _x(5, 4)
    xaibench.explain(model, x)
    handle = model.head.register_forward_pre_hook(lambda module, inputs: (inputs[0] + 1,))
    try:
        with pytest.raises(InputError, match="hook"):
            xaibench.explain(model, x)
    finally:
        handle.remove()


# --- 3: train mode --------------------------------------------------------------------------------
def _dropout_batchnorm_model():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2))
    return randomize(model, seed=4)


@pytest.mark.parametrize("backend", ["native", "zennit"])
def test_a_model_in_train_mode_is_refused_with_the_mode_named(backend):
    model, x = _dropout_batchnorm_model().train(), _x(6, 4)
    with pytest.raises(InputError, match="train") as info:
        xaibench.explain(model, x, "lrp.epsilon", backend=backend)
    assert "mode='eval'" in str(info.value)
    assert "BatchNorm1d" in str(info.value) and "Dropout" in str(info.value)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("backend", ["native", "zennit"])
def test_mode_eval_explains_the_eval_model_and_records_it(backend):
    model, x = _dropout_batchnorm_model().train(), _x(6, 4)
    before = _bitwise_state(model)
    e = xaibench.explain(model, x, "lrp.epsilon", target=0, backend=backend, mode="eval")
    assert e.mode == "eval"
    assert all(m.training for m in model.modules()), "the user's train mode must be restored"
    _assert_bit_identical(model, before)
    reference = copy.deepcopy(model).eval()
    assert torch.allclose(e.output, reference(x)[:, 0], atol=1e-5)


def test_a_train_mode_model_without_mode_dependent_layers_is_explained():
    model, x = _mlp().train(), _x(4, 4)  # ReLU and Linear behave the same in both modes
    e = xaibench.explain(model, x)
    assert e.mode == "train"
    assert torch.allclose(e.output, model(x).max(1).values, atol=1e-6)


def test_custom_code_reading_self_training_counts_as_mode_dependent():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x):
            if self.training:
                x = x * 0.5
            return self.linear(x)

    model, x = Noisy().train(), _x(3, 4)
    with pytest.raises(InputError, match="Noisy"):
        xaibench.explain(model, x)
    e = xaibench.explain(model, x, target=0, mode="eval")
    assert torch.allclose(e.output, model.eval()(x)[:, 0], atol=1e-6)


def test_bad_mode_is_named():
    with pytest.raises(ValueError, match="mode"):
        xaibench.explain(_mlp(), _x(2, 4), mode="inference")


# --- 4: z^B reaches the layer that sees the input -------------------------------------------------
def _zbox_reference(model, x, low, high):
    """Hand-computed z^B at the first conv (bounds carried through the monotone layers before it),
    z+ on every later layer, for model = [pre..., conv, ReLU, flatten, linear]."""
    *pre, conv, _relu, _flatten, linear = list(model)
    a = x
    lo, hi = low.expand_as(x), high.expand_as(x)
    for layer in pre:
        a, lo, hi = layer(a), layer(lo), layer(hi)
        lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    a = a.detach().requires_grad_(True)
    z1 = conv(a)
    h = z1.clamp(min=0)
    out = linear(h.flatten(1))
    target = out.argmax(1)
    r_out = out.gather(1, target[:, None]).squeeze(1)
    # z+ at the dense layer (with positive bias, as the engine and zennit)
    wp, bp = linear.weight.clamp(min=0), linear.bias.clamp(min=0)
    hf = h.flatten(1)
    zp = hf @ wp.t() + bp
    s = torch.zeros_like(zp).scatter(1, target[:, None], (r_out / (zp.gather(1, target[:, None]).squeeze(1)
                                                                   + 1e-6))[:, None])
    r_h = (hf * (s @ wp)).view_as(h)
    # z^B at the conv: x w - l w+ - h w- (no bias)
    w = conv.weight
    zb = (F.conv2d(a, w, None, conv.stride, conv.padding) - F.conv2d(lo, w.clamp(min=0), None, conv.stride,
          conv.padding) - F.conv2d(hi, w.clamp(max=0), None, conv.stride, conv.padding))
    zb = zb + torch.where(zb >= 0, 1e-6, -1e-6)
    s1 = r_h / zb
    grad = lambda weight, inp: torch.autograd.grad(  # noqa: E731
        F.conv2d(inp, weight, None, conv.stride, conv.padding), inp, s1, retain_graph=True)[0]
    lo_, hi_ = lo.detach().clone().requires_grad_(True), hi.detach().clone().requires_grad_(True)
    relevance = (a * grad(w, a) - lo_ * grad(w.clamp(min=0), lo_) - hi_ * grad(w.clamp(max=0), hi_)).detach()
    # back through the layers before the conv: activations and scaling pass relevance on,
    # average pooling takes the z-rule with the Norm stabilizer (1e-6)
    for layer in reversed(pre):
        if isinstance(layer, nn.AvgPool2d):
            probe = x.detach().clone().requires_grad_(True)
            pooled = layer(probe)
            s_pool = relevance / (pooled + torch.where(pooled >= 0, 1e-6, -1e-6))
            relevance = (x * torch.autograd.grad(pooled, probe, s_pool.detach())[0]).detach()
    return relevance


@pytest.mark.parametrize("pre", ["avgpool", "leaky_relu", "scale_negative"])
def test_zbox_goes_to_the_first_linear_layer_behind_monotone_layers(pre):
    layers = {"avgpool": [nn.AvgPool2d(2)], "leaky_relu": [nn.LeakyReLU(0.2)],
              "scale_negative": [_Scale(-2.0)]}[pre]
    side = 8
    seen = side // 2 if pre == "avgpool" else side  # the spatial size the conv sees
    model = nn.Sequential(*layers, nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * seen * seen, 3))
    model = randomize(model, seed=5).double().eval()
    x = _x(3, 1, side, side, dtype=torch.float64)
    low, high = torch.tensor(-5.0, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64)
    e = xaibench.explain(model, x, "lrp.zbox", low=-5.0, high=5.0)
    assert "ZBox" in e.ledger.rows[-1].rule or any("ZBox" in r.rule for r in e.ledger.rows)
    expected = _zbox_reference(model, x, low, high)
    assert torch.allclose(e.relevance, expected, atol=1e-10), float((e.relevance - expected).abs().max())
    assert float(e.conservation_error.max()) < 1e-10


class _Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def test_zbox_refuses_when_bounds_cannot_reach_the_first_layer():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            return self.head(self.conv(x - x[:, :, :, :1]).flatten(1))

    model, x = randomize(Mixed(), seed=6).eval(), _x(2, 1, 4, 4)
    with pytest.raises(XaibenchError, match="z\\^B") as info:
        xaibench.explain(model, x, "lrp.zbox", low=-4.0, high=4.0)
    assert "conv" in str(info.value)


# --- 5: one operation, one rule ------------------------------------------------------------------
class _FunctionalNearest(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(F.interpolate(torch.relu(x), scale_factor=2, mode="nearest")).sum((2, 3))


class _ModuleNearest(nn.Module):
    def __init__(self, conv):
        super().__init__()
        self.conv = conv
        self.up = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x):
        return self.conv(self.up(torch.relu(x))).sum((2, 3))


@pytest.mark.parametrize("method", ["lrp.flat", "lrp.epsilon", "lrp.wsquare"])
def test_functional_and_module_nearest_upsampling_take_the_same_rule(method):
    conv = randomize(nn.Conv2d(2, 2, 3, padding=1), seed=7).double()
    x = _x(3, 2, 4, 4, dtype=torch.float64)
    functional = xaibench.explain(_FunctionalNearest(conv).eval(), x, method, target=0)
    module = xaibench.explain(_ModuleNearest(conv).eval(), x, method, target=0)
    assert torch.allclose(functional.relevance, module.relevance, atol=1e-12)
    # relevance reaching the upsampling is copied back whole: nothing absorbed there
    rows = [r for r in functional.ledger.rows if "interpolate" in r.layer]
    assert rows and all(float(r.absorbed.abs().max()) == 0 for r in rows)


@pytest.mark.parametrize("size", [None, (7, 5)])
def test_nearest_resampling_to_any_size_conserves(size):
    class Resample(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            if size is None:
                return self.conv(F.interpolate(x, scale_factor=1.5, mode="nearest")).sum((2, 3))
            return self.conv(F.interpolate(x, size=size, mode="nearest")).sum((2, 3))

    model = randomize(Resample(), seed=8).double().eval()
    e = xaibench.explain(model, _x(2, 1, 6, 6, dtype=torch.float64), "lrp.flat")
    assert float(e.relative_conservation_error.max()) < 1e-12
    rows = [r for r in e.ledger.rows if "interpolate" in r.layer]
    assert rows and all(float(r.absorbed.abs().max()) == 0 for r in rows), "nearest copies: nothing absorbed"


# --- 6: unbatched input, reductions over the batch --------------------------------------------------
def _fcn():
    return randomize(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 1, 1)), seed=9).eval()


@pytest.mark.parametrize("method", NATIVE_METHODS)
def test_an_unbatched_input_is_named(method):
    with pytest.raises(InputError, match="batch dimension") as info:
        xaibench.explain(_fcn(), _x(2, 5, 5), method, target=0)
    assert "(2, 5, 5)" in str(info.value) and "Conv2d" in str(info.value)


def test_an_unbatched_input_is_named_for_pooling_before_any_conv():
    model = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(2, 1, 1)).eval()
    with pytest.raises(InputError, match="batch dimension"):
        xaibench.explain(model, _x(2, 4, 4), "gradient", target=0)


@pytest.mark.parametrize("reduction", ["mean0", "sum_all", "mean_keepdim0"])
def test_a_reduction_over_the_batch_dimension_is_named(reduction):
    class Reduce(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 4)

        def forward(self, x):
            h = self.linear(x)
            if reduction == "mean0":
                return h - h.mean(0)
            if reduction == "sum_all":
                return h * 1.0 + torch.sum(h)
            return h - torch.mean(h, 0, keepdim=True)

    with pytest.raises(XaibenchError, match="batch dimension"):
        xaibench.explain(randomize(Reduce(), seed=10).eval(), _x(4, 4))


# --- 7, 8, 9: dtypes --------------------------------------------------------------------------------
@pytest.mark.parametrize("backend, method", [("native", m) for m in NATIVE_METHODS]
                         + [("zennit", m) for m in ["lrp.epsilon", "lrp.zplus", "lrp.zbox", "gradient"]])
@pytest.mark.parametrize("model_dtype", [torch.float32, torch.float64])
def test_the_model_is_bit_identical_after_any_backend_and_dtype(backend, method, model_dtype):
    model = randomize(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                                    nn.Flatten(), nn.Linear(3 * 16, 2)), seed=11).to(model_dtype).eval()
    with torch.no_grad():  # values that float32 cannot hold, so a round trip through it shows
        for tensor in list(model.parameters()) + [model[1].running_mean]:
            tensor.add_(torch.rand(tensor.shape, generator=torch.Generator().manual_seed(3), dtype=model_dtype)
                        * 1e-3)
    before = _bitwise_state(model)
    for dtype in (None, torch.float32, torch.float64):
        for x_dtype in (torch.float32, torch.float64):
            xaibench.explain(model, _x(2, 2, 4, 4, dtype=x_dtype), method, backend=backend, dtype=dtype)
            _assert_bit_identical(model, before)
    assert all(p.dtype == model_dtype for p in model.parameters())


def test_zennit_explains_a_float64_model_given_float32_input_in_float64():
    model = randomize(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), seed=12).double().eval()
    x = _x(3, 4)
    zennit = xaibench.explain(model, x, "lrp.epsilon", backend="zennit")
    native = xaibench.explain(model, x, "lrp.epsilon")
    assert zennit.relevance.dtype == native.relevance.dtype == torch.float64
    assert torch.allclose(zennit.relevance, native.relevance, atol=1e-12)


def _resnet_like():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
            self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)

        def forward(self, x):
            return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))

    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), Block(), Block(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    model = randomize(model, seed=13)
    with torch.no_grad():  # running variances near zero make a float32 fold visibly inexact
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(1e-4, 1e-3, generator=torch.Generator().manual_seed(1))
                m.running_mean.uniform_(-30, 30, generator=torch.Generator().manual_seed(2))
    return model.eval()


def test_float64_on_a_float32_model_folds_batchnorm_in_float64():
    model = _resnet_like()
    x = _x(2, 1, 6, 6, dtype=torch.float64)
    requested = xaibench.explain(model, x, "lrp.epsilon", target=0, dtype=torch.float64)
    copy64 = xaibench.explain(copy.deepcopy(model).double(), x, "lrp.epsilon", target=0)
    scale = float(copy64.relevance.abs().max())
    assert float((requested.relevance - copy64.relevance).abs().max()) / scale < 1e-12


@pytest.mark.parametrize("method", ["lrp.epsilon", "gradient", "integrated_gradients"])
def test_the_model_dtype_decides_and_a_cast_input_is_recorded(method):
    model = randomize(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)), seed=14).double().eval()
    x = _x(3, 4)  # float32 input, float64 model
    e = xaibench.explain(model, x, method)
    assert e.relevance.dtype == torch.float64 and e.dtype == torch.float64
    assert e.input_dtype == torch.float32
    assert x.dtype == torch.float32  # the user's input is not changed
    e32 = xaibench.explain(model, x, method, dtype=torch.float32)
    assert e32.dtype == torch.float32 and e32.relevance.dtype == torch.float32


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_by_name(half):
    model = _mlp()
    with pytest.raises(InputError, match=str(half).replace("torch.", "")):
        xaibench.explain(model, _x(2, 4), dtype=half)
    with pytest.raises(InputError, match=str(half).replace("torch.", "")):
        xaibench.explain(copy.deepcopy(model).to(half), _x(2, 4))
    e = xaibench.explain(model, _x(2, 4).to(half))  # a half input to a float32 model: cast, recorded
    assert e.dtype == torch.float32 and e.input_dtype == half


def test_a_model_with_mixed_parameter_dtypes_is_named():
    model = _mlp()
    model.head.double()
    with pytest.raises(InputError, match="head"):
        xaibench.explain(model, _x(2, 4))


# --- 11: the documented import path ---------------------------------------------------------------
def test_methods_is_both_the_subpackage_and_the_list_of_names():
    import xaibench.methods as methods_package

    assert xaibench.methods.optimal_input is methods_package.optimal_input
    assert "lrp.epsilon" in xaibench.methods()["native"]
    assert xaibench.methods("native") == xaibench.methods()["native"]


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_to_the_size_of_a_skip_tensor(mode):
    """size=skip.shape[2:] (U-Net style) is a traced value, not a number: still explained, with
    the rule of its mode (nearest copies, bilinear takes the Norm rule)."""
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(1, 2, 3, stride=2, padding=1)
            self.head = nn.Conv2d(3, 1, 1)

        def forward(self, x):
            h = F.interpolate(torch.relu(self.down(x)), size=x.shape[2:], mode=mode)
            return self.head(torch.cat([h, x], 1)).sum((2, 3))

    model = randomize(Skip(), seed=15).double().eval()
    x = _x(2, 1, 7, 7, dtype=torch.float64)
    e = xaibench.explain(model, x, "lrp.flat", target=0)
    assert torch.allclose(e.output, model(x)[:, 0])
    assert float(e.relative_conservation_error.max()) < 1e-12
    rows = [r for r in e.ledger.rows if "interpolate" in r.layer]
    assert rows and ("copy" in rows[0].rule) == (mode == "nearest")
