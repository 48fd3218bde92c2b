"""The native methods other than LRP: integrated gradients, SmoothGrad, occlusion, optimal input.

Exact identities run in float64 on small networks whose answer is known in closed form (a
linear model: IG = w (x - baseline), occlusion = w x, SmoothGrad = w, optimal input moves
along w); the rest compares against independent re-implementations or against itself under
a different chunking, and checks that every bad option is named in the error.
"""

from __future__ import annotations

import copy

import pytest
import torch
from strategies import NEW_METHODS, batchnorm_model, randn, randomize, relu_net, snapshot
from torch import nn

import xaibench
from xaibench.methods import optimal_input

F64 = torch.float64


def _linear(features=6, outputs=3, seed=0):
    return randomize(nn.Linear(features, outputs), seed=seed)


def _conv_net(seed=1):
    return randomize(nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                   nn.Linear(3 * 5 * 4, 3)), seed=seed)


def _grad_reference(model, x, index):
    """d model(x)[:, index] / dx by autograd on the model itself (not the traced graph)."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(copy.deepcopy(model).double()(x)[:, index].sum(), x)
    return grad


# --- integrated gradients ------------------------------------------------------------------------
def test_integrated_gradients_completeness_residual_shrinks_with_steps():
    model, x = relu_net(), randn(5, 6)
    residual = {}
    for steps in (4, 16, 64, 256, 1024):
        e = xaibench.explain(model, x, "integrated_gradients", steps=steps, dtype=F64)
        assert e.conservation_error.shape == (5,)
        residual[steps] = float(e.relative_conservation_error.max())
    print("IG relative completeness residual (max over samples) vs steps:", residual)
    values = list(residual.values())
    assert all(later < earlier for earlier, later in zip(values, values[1:])), residual
    assert values[0] > 1e-2, residual  # the check can fail: few steps leave a visible residual
    assert values[-1] < 1e-3, residual


@pytest.mark.parametrize("rule", ["riemann_trapezoid", "riemann_left", "riemann_midpoint"])
@pytest.mark.parametrize("baseline", ["zeros", "mean", 0.5, "tensor"])
def test_integrated_gradients_of_a_linear_model_is_exact(rule, baseline):
    model, x = _linear(), randn(4, 6)
    if baseline == "tensor":
        baseline = randn(6, seed=9)  # one map for every sample, broadcast over the batch
    e = xaibench.explain(model, x, "integrated_gradients", target=1, baseline=baseline, rule=rule, steps=3,
                         dtype=F64)
    x = x.double()
    reference = {"zeros": 0.0, "mean": x.mean(0)}[baseline] if isinstance(baseline, str) else baseline
    expected = model.weight[1].double() * (x - torch.as_tensor(reference, dtype=F64))
    torch.testing.assert_close(e.relevance, expected, rtol=1e-12, atol=1e-12)
    assert float(e.conservation_error.max()) < 1e-12
    torch.testing.assert_close(e.output, x @ model.weight[1].double() + model.bias[1].double())


@pytest.mark.parametrize("rule", ["riemann_trapezoid", "riemann_left", "riemann_midpoint"])
def test_integrated_gradients_equals_a_loop_over_steps(rule):
    """An independent Riemann sum on the model itself, one step at a time."""
    model, x, n = relu_net(), randn(3, 6), 10
    e = xaibench.explain(model, x, "integrated_gradients", target=2, steps=n, rule=rule, dtype=F64)
    x = x.double()
    if rule == "riemann_trapezoid":  # n points including both ends, the ends weighted one half
        total = sum(_grad_reference(model, k / (n - 1) * x, 2) * (0.5 if k in (0, n - 1) else 1.0)
                    for k in range(n)) / (n - 1)
    else:
        shift = 0.0 if rule == "riemann_left" else 0.5
        total = sum(_grad_reference(model, (k + shift) / n * x, 2) for k in range(n)) / n
    torch.testing.assert_close(e.relevance, x * total, rtol=1e-12, atol=1e-12)


def test_integrated_gradients_chunking_does_not_change_the_result():
    model, x = relu_net(), randn(4, 6)
    whole = xaibench.explain(model, x, "integrated_gradients", steps=33, dtype=F64)
    for batch_steps in (1, 5, 33, 100):
        part = xaibench.explain(model, x, "integrated_gradients", steps=33, batch_steps=batch_steps, dtype=F64)
        torch.testing.assert_close(part.relevance, whole.relevance, rtol=1e-12, atol=1e-14)


# --- SmoothGrad ----------------------------------------------------------------------------------
def test_smoothgrad_without_noise_is_the_gradient():
    model, x = relu_net(), randn(5, 6)
    gradient = xaibench.explain(model, x, "gradient", dtype=F64)
    one = xaibench.explain(model, x, "smoothgrad", noise_level=0.0, samples=1, dtype=F64)
    assert torch.equal(one.relevance, gradient.relevance)
    many = xaibench.explain(model, x, "smoothgrad", noise_level=0.0, samples=32, batch_samples=5, dtype=F64)
    torch.testing.assert_close(many.relevance, gradient.relevance, rtol=1e-14, atol=0)
    torch.testing.assert_close(many.output, gradient.output, rtol=0, atol=0)


def test_smoothgrad_is_reproducible_and_leaves_the_global_rng_alone():
    model, x = relu_net(), randn(5, 6)
    rng = torch.random.get_rng_state()
    a = xaibench.explain(model, x, "smoothgrad", noise_level=0.3, seed=7, dtype=F64)
    b = xaibench.explain(model, x, "smoothgrad", noise_level=0.3, seed=7, batch_samples=3, dtype=F64)
    c = xaibench.explain(model, x, "smoothgrad", noise_level=0.3, seed=8, dtype=F64)
    assert torch.equal(torch.random.get_rng_state(), rng)
    torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-12, atol=1e-14)  # chunking: same noise
    gradient = xaibench.explain(model, x, "gradient", dtype=F64).relevance
    assert (a.relevance - gradient).abs().max() > 1e-3  # the noise does something on a ReLU net
    assert (a.relevance - c.relevance).abs().max() > 1e-3  # and depends on the seed


def test_smoothgrad_of_a_linear_model_is_its_weight():
    model, x = _linear(), randn(4, 6)
    e = xaibench.explain(model, x, "smoothgrad", target=0, noise_level=1.0, samples=8, dtype=F64)
    torch.testing.assert_close(e.relevance, model.weight[0].double().expand(4, 6), rtol=1e-12, atol=1e-12)
    e = xaibench.explain(model, x, "smoothgrad", target=0, kind="input_x_gradient", dtype=F64)
    torch.testing.assert_close(e.relevance, model.weight[0].double() * x.double(), rtol=1e-12, atol=1e-12)


# --- occlusion -----------------------------------------------------------------------------------
def test_occlusion_of_a_linear_model_with_single_elements_is_w_times_x():
    model, x = _linear(), randn(4, 6)
    for target in (0, 2):
        e = xaibench.explain(model, x, "occlusion", target=target, dtype=F64)
        torch.testing.assert_close(e.relevance, model.weight[target].double() * x.double(), rtol=1e-12, atol=1e-14)
        assert e.relevance.dtype == F64


def _windowed_reference(contribution, windows):
    """Element i gets the mean over the windows holding it of (sum of the window) / its size."""
    total, count = torch.zeros_like(contribution), torch.zeros(contribution.shape[1], dtype=contribution.dtype)
    for window in windows:
        total[:, window] += contribution[:, window].sum(1, keepdim=True) / len(window)
        count[window] += 1
    return total / count


@pytest.mark.parametrize("patch, stride, windows", [
    (2, 1, [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]),
    (4, None, [[0, 1, 2, 3], [2, 3, 4, 5]]),          # the last window is aligned with the end
    (3, 2, [[0, 1, 2], [2, 3, 4], [3, 4, 5]]),
])
def test_occlusion_patches_spread_and_average_the_drop(patch, stride, windows):
    model, x = _linear(), randn(4, 6)
    e = xaibench.explain(model, x, "occlusion", target=1, patch=patch, stride=stride, batch_size=5, dtype=F64)
    contribution = model.weight[1].double() * x.double()
    torch.testing.assert_close(e.relevance, _windowed_reference(contribution, windows), rtol=1e-12, atol=1e-14)


def test_occlusion_channels_together_or_one_at_a_time():
    weight = randn(3, 2 * 5 * 4, seed=3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 4, 3))
    with torch.no_grad():
        model[1].weight.copy_(weight)
    x = randn(2, 2, 5, 4)
    contribution = weight[2].view(2, 5, 4).double() * x.double()
    each = xaibench.explain(model, x, "occlusion", target=2, per_channel=True, dtype=F64)
    torch.testing.assert_close(each.relevance, contribution, rtol=1e-12, atol=1e-14)
    together = xaibench.explain(model, x, "occlusion", target=2, dtype=F64)
    expected = contribution.sum(1, keepdim=True).expand_as(contribution) / 2
    torch.testing.assert_close(together.relevance, expected, rtol=1e-12, atol=1e-14)
    fill = randn(2, 5, 4, seed=4)
    filled = xaibench.explain(model, x, "occlusion", target=2, per_channel=True, fill=fill, dtype=F64)
    expected = weight[2].view(2, 5, 4).double() * (x.double() - fill.double())
    torch.testing.assert_close(filled.relevance, expected, rtol=1e-12, atol=1e-14)


def test_occlusion_chunking_and_2d_patches():
    model, x = _conv_net(), randn(3, 2, 5, 4)
    whole = xaibench.explain(model, x, "occlusion", patch=(2, 3), stride=1, fill="mean", dtype=F64)
    part = xaibench.explain(model, x, "occlusion", patch=(2, 3), stride=1, fill="mean", batch_size=1, dtype=F64)
    torch.testing.assert_close(part.relevance, whole.relevance, rtol=1e-12, atol=1e-14)
    assert whole.relevance.shape == x.shape and float(whole.relevance.abs().max()) > 0


# --- optimal input -------------------------------------------------------------------------------
def test_optimal_input_of_a_linear_model_moves_along_its_weights():
    model, start = _linear(), randn(4, 6)
    start_before = start.clone()
    result = optimal_input(model, start, target=torch.tensor([0, 1, 2, 0]), steps=20, step_size=0.05, dtype=F64)
    assert torch.equal(start, start_before)
    weights = model.weight.detach().double()[[0, 1, 2, 0]]
    cosine = torch.nn.functional.cosine_similarity(result.input - start.double(), weights, dim=1)
    assert float(cosine.min()) > 1 - 1e-12, cosine
    assert result.objective.shape == (4, 21)
    assert bool((result.objective.diff(dim=1) > 0).all())


def test_optimal_input_with_l2_reaches_the_closed_form_optimum():
    """Maximizing w.x + b - l2 |x|^2 ends at w / (2 l2); to a target value v, J ends at v."""
    model, start = _linear(), torch.zeros(2, 6)
    result = optimal_input(model, start, target=1, l2=0.5, steps=300, step_size=0.1, dtype=F64)
    torch.testing.assert_close(result.input, model.weight[1].double().expand(2, 6), rtol=1e-8, atol=1e-8)
    # each step shrinks J - v by 1 - 2 step_size |w|^2: one half here
    step_size = 0.25 / float(model.weight[1].detach().double().square().sum())
    reached = optimal_input(model, randn(2, 6), target=1, target_value=torch.tensor([2.0, -1.0]), steps=100,
                            step_size=step_size, dtype=F64)
    torch.testing.assert_close(reached.objective[:, -1], torch.tensor([2.0, -1.0], dtype=F64), rtol=1e-8, atol=1e-8)


def test_optimal_input_of_the_softmax_output_drives_a_probability_up():
    model, start = relu_net(last=nn.Softmax(dim=1)), randn(3, 6)
    result = optimal_input(model, start, target=0, objective="output", steps=50, step_size=0.5)
    assert result.input.dtype == torch.float32
    assert bool((result.objective[:, -1] > result.objective[:, 0]).all())
    assert bool((result.objective <= 1).all())  # a probability, not a logit
    with torch.no_grad():
        torch.testing.assert_close(result.objective[:, -1], model(result.input)[:, 0])


# --- dtypes, softmax -----------------------------------------------------------------------------
@pytest.mark.parametrize("method", NEW_METHODS)
def test_dtype_and_softmax_stripped(method):
    model, x = relu_net(), randn(3, 6)
    assert xaibench.explain(model, x, method).relevance.dtype == torch.float32
    with_softmax = relu_net(last=nn.Softmax(dim=1))
    a = xaibench.explain(with_softmax, x, method, target=1, dtype=F64)
    b = xaibench.explain(model, x, method, target=1, dtype=F64)
    assert a.stripped == ["last"]
    torch.testing.assert_close(a.relevance, b.relevance, rtol=1e-12, atol=1e-14)


# --- bad options and bad input -------------------------------------------------------------------
@pytest.mark.parametrize("method, options, match", [
    ("integrated_gradients", {"steps": 0}, "steps"),
    ("integrated_gradients", {"steps": 1}, "steps"),            # the trapezoid needs both ends
    ("integrated_gradients", {"steps": 2.5}, "steps"),
    ("integrated_gradients", {"rule": "simpson"}, "rule"),
    ("integrated_gradients", {"baseline": "climatology"}, "baseline"),
    ("integrated_gradients", {"baseline": torch.zeros(7)}, "baseline"),
    ("integrated_gradients", {"baseline": float("nan")}, "baseline"),
    ("integrated_gradients", {"batch_steps": 0}, "batch_steps"),
    ("smoothgrad", {"noise_level": -0.1}, "noise_level"),
    ("smoothgrad", {"noise_level": float("inf")}, "noise_level"),
    ("smoothgrad", {"samples": 0}, "samples"),
    ("smoothgrad", {"seed": "one"}, "seed"),
    ("smoothgrad", {"kind": "lrp"}, "kind"),
    ("occlusion", {"patch": 7}, "patch"),
    ("occlusion", {"patch": 0}, "patch"),
    ("occlusion", {"patch": (1, 1)}, "patch"),
    ("occlusion", {"stride": -1}, "stride"),
    ("occlusion", {"fill": "median"}, "fill"),
    ("occlusion", {"per_channel": "yes"}, "per_channel"),
    ("occlusion", {"batch_size": 0}, "batch_size"),
])
def test_bad_options_name_the_option(method, options, match):
    with pytest.raises(ValueError, match=match):
        xaibench.explain(relu_net(), randn(3, 6), method, **options)


@pytest.mark.parametrize("method", NEW_METHODS + ["gradient"])
def test_unknown_option_lists_the_known_ones(method):
    with pytest.raises(ValueError, match="stepz") as info:
        xaibench.explain(relu_net(), randn(3, 6), method, stepz=3)
    if method == "integrated_gradients":
        assert "steps" in str(info.value) and "baseline" in str(info.value)


def test_mean_baseline_of_one_sample_is_refused():
    with pytest.raises(xaibench.InputError, match="mean"):
        xaibench.explain(relu_net(), randn(1, 6), "integrated_gradients", baseline="mean")


@pytest.mark.parametrize("options, match", [
    ({"steps": 0}, "steps"), ({"step_size": 0.0}, "step_size"), ({"l2": -1.0}, "l2"),
    ({"objective": "probability"}, "objective"), ({"target_value": torch.zeros(5)}, "target_value"),
    ({"target_value": float("nan")}, "target_value"),
])
def test_optimal_input_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        optimal_input(relu_net(), randn(3, 6), target=0, **options)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_nan_input_and_wrong_shape(method):
    x = randn(4, 6)
    x[3, 2] = float("nan")
    with pytest.raises(xaibench.InputError, match=r"\[3\]"):
        xaibench.explain(relu_net(), x, method)
    with pytest.raises(xaibench.InputError, match="l1"):
        xaibench.explain(relu_net(), randn(4, 5), method)
    with pytest.raises(xaibench.InputError, match="target index"):
        xaibench.explain(relu_net(), randn(4, 6), method, target=3)


# --- the model and the input are left untouched --------------------------------------------------
@pytest.mark.parametrize("method", NEW_METHODS + ["optimal_input"])
def test_model_and_input_are_left_untouched(method):
    model = batchnorm_model()
    model.train(True)
    model[3].train(False)
    before = snapshot(model)
    x = randn(3, 2, 6, 6)
    x_before = x.clone()
    for requires_grad in (False, True):
        x.requires_grad_(requires_grad)
        if method == "optimal_input":
            result = optimal_input(model, x, target=1, steps=3, mode="eval")
            assert result.input.shape == x.shape
        else:
            e = xaibench.explain(model, x, method, steps=4, mode="eval") if method == "integrated_gradients" \
                else xaibench.explain(model, x, method, mode="eval")
            assert e.relevance.shape == x.shape
        assert x.requires_grad == requires_grad and x.grad is None
        assert torch.equal(x.detach(), x_before)
    state, training, _ = snapshot(model)
    for key in state:
        assert torch.equal(state[key], before[0][key]), f"{key} changed"
    assert training == before[1]
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, f"gradient left on '{name}'"
