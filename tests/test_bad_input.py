"""What the user gets wrong, and what xaibench must not do to the user's things.

No silent fallback: every mistake raises an xaibench error naming what is wrong (a layer path
and type, a sample index, a target value: the bad targets are in tests/test_targets.py), never
a raw torch RuntimeError from deep inside. The model and the input are left exactly as they
were, on both backends.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from strategies import batchnorm_model, mlp, randomize, snapshot
from torch import nn

import xaibench

BACKENDS = ["native", "zennit"]


def _x(batch=3, features=4, seed=0):
    return torch.randn(batch, features, generator=torch.Generator().manual_seed(seed))


# --- modules without a rule ----------------------------------------------------------------------
class _Sine(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return self.linear(torch.sin(x))


class _LSTMIndexed(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x):
        return self.lstm(x)[0][:, -1]


class _LSTMUnpacked(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 3, batch_first=True)

    def forward(self, x):
        output, _ = self.lstm(x)
        return output[:, -1]


def _nested(activation):
    return nn.Sequential(nn.Linear(4, 5), nn.Sequential(nn.Linear(5, 5), activation), nn.Linear(5, 2))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("model, x, path, kind", [
    (_nested(nn.Softshrink()), _x(), "1.1", "Softshrink"),
    (_nested(nn.Tanhshrink()), _x(), "1.1", "Tanhshrink"),
    (_Sine(), _x(), "sin", "sin"),
    (_LSTMIndexed(), torch.randn(2, 5, 4), "lstm", "LSTM"),
    (_LSTMUnpacked(), torch.randn(2, 5, 4), "lstm", "LSTM"),
], ids=["softshrink", "tanhshrink", "torch.sin", "lstm-indexed", "lstm-unpacked"])
def test_module_without_rule_is_named(backend, model, x, path, kind):
    if backend == "zennit":
        # zennit itself needs no trace and gives such a layer the plain gradient: the explanation names it
        try:
            e = xaibench.explain(model, x, "lrp.epsilon", backend=backend)
            message = " ".join(e.gradient_fallback) + " " + e.native_trace
        except xaibench.XaibenchError as error:  # e.g. the LSTM in train mode: named too
            message = str(error)
        assert f"'{path}" in message or f"{path} (" in message, message
        assert kind in message, message
        return
    with pytest.raises(xaibench.UnsupportedLayerError) as info:
        xaibench.explain(model, x, "lrp.epsilon", backend=backend)
    message = str(info.value)
    assert f"'{path}" in message, message
    assert kind in message, message


# --- bad inputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["lrp.epsilon", "gradient"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_input_names_the_sample(backend, method, bad):
    x = _x(batch=4)
    x[2, 1] = bad
    with pytest.raises(ValueError, match=r"\[2\]"):
        xaibench.explain(mlp(), x, method, backend=backend)


def test_both_infinities_and_large_finite_values_are_told_apart():
    """The finiteness check sums the input first: +Inf and -Inf together, or NaN beside Inf, must
    still be caught, and finite values whose float32 sum overflows must not be refused."""
    x = _x(batch=4)
    x[1, 0], x[3, 2] = float("inf"), -float("inf")
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        xaibench.explain(mlp(), x, "lrp.epsilon")
    large = _x(batch=4)
    large[0, 0] = large[1, 0] = 3e38   # finite; their float32 sum is inf
    assert torch.isinf(large.sum())
    e = xaibench.explain(mlp(), large, "lrp.epsilon")
    assert torch.isfinite(e.relevance).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["lrp.epsilon", "gradient"])
def test_wrong_input_shape_names_the_layer(backend, method):
    model = mlp()
    with pytest.raises(xaibench.InputError) as info:
        xaibench.explain(model, _x(features=5), method, backend=backend)
    assert isinstance(info.value, ValueError)
    assert "encoder" in str(info.value), str(info.value)
    # also once the model's graph is prepared and verified by a good call
    xaibench.explain(model, _x(), method, backend=backend)
    with pytest.raises(xaibench.InputError, match="encoder"):
        xaibench.explain(model, _x(features=5), method, backend=backend)


def test_wrong_shape_in_a_conv_net_names_the_layer():
    model = randomize(nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(2, 3, 3)), ("act", nn.ReLU()), ("flatten", nn.Flatten()),
        ("head", nn.Linear(3 * 4 * 4, 2))])), seed=1)
    xaibench.explain(model, torch.randn(1, 2, 6, 6), "lrp.epsilon")
    with pytest.raises(xaibench.InputError, match="head"):
        xaibench.explain(model, torch.randn(1, 2, 7, 7), "lrp.epsilon")
    with pytest.raises(xaibench.InputError, match="conv"):
        xaibench.explain(model, torch.randn(1, 3, 6, 6), "lrp.epsilon")


@pytest.mark.parametrize("backend", BACKENDS)
def test_unknown_method_lists_what_the_backend_has(backend):
    with pytest.raises(xaibench.UnknownMethodError) as info:
        xaibench.explain(mlp(), _x(), "lrp.no_such_rule", backend=backend)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "lrp.no_such_rule" in message
    for name in xaibench.methods(backend):
        assert name in message


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_without_batch_dimension(backend):
    with pytest.raises(xaibench.InputError, match="batch"):
        xaibench.explain(mlp(), torch.randn(4), "lrp.epsilon", backend=backend)


# --- the model and the input are left untouched --------------------------------------------------
@pytest.mark.parametrize("train_mode", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("backend, method, options", [
    ("native", "lrp.epsilon", {}),
    ("native", "lrp.zbox", {}),
    ("native", "lrp.epsilon_gamma_box", {"dtype": torch.float64}),
    ("native", "gradient", {}),
    ("native", "input_x_gradient", {"dtype": torch.float64}),
    ("zennit", "lrp.epsilon", {}),
    ("zennit", "lrp.epsilon_gamma_box", {}),
    ("zennit", "lrp.alpha2beta1", {"dtype": torch.float64}),
    ("zennit", "input_x_gradient", {}),
])
def test_model_and_input_are_left_untouched(train_mode, backend, method, options):
    model = batchnorm_model()
    model.train(train_mode)
    model[3].train(not train_mode)  # a mixed state must come back as it was
    before = snapshot(model)
    x = torch.randn(3, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0] = 0.0
    x_before = x.clone()
    for requires_grad in (False, True):
        x.requires_grad_(requires_grad)
        # a model partly in train mode is explained as in eval mode on request (tests/test_trust.py
        # checks the refusal without it), and must come back in its mixed mode
        e = xaibench.explain(model, x, method, backend=backend, mode="eval", **options)
        assert e.relevance.shape == x.shape
        assert x.requires_grad == requires_grad
        assert x.grad is None
        assert torch.equal(x.detach(), x_before)
    state, training, dtypes = snapshot(model)
    assert state.keys() == before[0].keys()
    for key in state:
        assert torch.equal(state[key], before[0][key]), f"{key} changed"
        assert state[key].dtype == before[0][key].dtype
    assert training == before[1]
    assert dtypes == before[2]
    for name, module in model.named_modules():
        assert not module._forward_hooks, f"forward hook left on '{name}'"
        assert not module._forward_pre_hooks, f"forward pre-hook left on '{name}'"
        assert not module._backward_hooks, f"backward hook left on '{name}'"
        assert not getattr(module, "_backward_pre_hooks", {}), f"backward pre-hook left on '{name}'"
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, f"gradient left on '{name}'"


def test_users_hooks_survive():
    """A hook the user registered stays registered and is the only one left."""
    model = mlp()
    calls = []
    handle = model.head.register_forward_hook(lambda m, i, o: calls.append(1))
    for backend in BACKENDS:
        xaibench.explain(model, _x(), "lrp.epsilon", backend=backend)
    assert len(model.head._forward_hooks) == 1
    handle.remove()


# --- a final softmax is stripped -----------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.zplus", "gradient", "input_x_gradient"])
@pytest.mark.parametrize("last", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.Sigmoid()],
                         ids=["softmax", "log_softmax", "sigmoid"])
def test_final_softmax_is_stripped(backend, method, last):
    with_softmax = mlp(last)
    without = mlp()
    x = _x()
    with torch.no_grad():
        logits = without(x)
    for target in (None, 2, torch.tensor([[0, 1], [2, 0], [1, 2]])):
        a = xaibench.explain(with_softmax, x, method, target=target, backend=backend, dtype=torch.float64)
        b = xaibench.explain(without, x, method, target=target, backend=backend, dtype=torch.float64)
        torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a.output, b.output, rtol=1e-12, atol=1e-12)
        expected_target = logits.argmax(1) if target is None else target
        if torch.is_tensor(expected_target) and expected_target.dim() == 2:
            expected = logits.gather(1, expected_target)
        elif torch.is_tensor(expected_target):
            expected = logits.gather(1, expected_target[:, None])[:, 0]
        else:
            expected = logits[:, expected_target]
        torch.testing.assert_close(a.output, expected.double(), rtol=1e-6, atol=1e-6)
    if backend == "native":
        assert a.stripped == ["last"]
