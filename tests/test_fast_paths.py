"""The engine's fast paths keep its results: the stabilizer's sign by copysign, transposes and
products written in place, and the walk that releases each layer's value once it is explained.
Why each exists (measured on radar N=3): xaibench/lrp/stabilizer.py, Graph.relevance."""

import pytest
import torch
import torchvision
from torch import nn

import xaibench
from xaibench.lrp import rules as R
from xaibench.lrp.engine import prepare
from xaibench.lrp.operators import DenseOperator
from xaibench.lrp.stabilizer import stabilize


def test_zero_denominator_gets_plus_epsilon_and_the_sign_of_nonzero_ones():
    z = torch.tensor([0.0, 2.0, -3.0, 1e-30, -1e-30], dtype=torch.float64)
    denominator, shift = stabilize(z, 0.5)
    torch.testing.assert_close(shift, torch.tensor([0.5, 0.5, -0.5, 0.5, -0.5], dtype=torch.float64))
    torch.testing.assert_close(denominator, z + shift)


def test_negative_zero_denominator_changes_neither_relevance_nor_ledger():
    """z_j = -0.0 only when every term x_i w_ij of it is zero, so its shift's sign (copysign gives
    -eps there) reaches no input and the stabilizer absorbs R_j whole either way."""
    weight = torch.tensor([[-1.0, 2.0, 0.0], [0.5, 0.25, -1.0]], dtype=torch.float64)
    op = DenseOperator(weight, None)
    x = torch.tensor([[0.0, 0.0, 3.0]], dtype=torch.float64)  # output 0's terms: -0.0, +0.0, 0 * 3
    z_plus = torch.tensor([[0.0, -3.0]], dtype=torch.float64)
    z_minus = torch.tensor([[-0.0, -3.0]], dtype=torch.float64)
    relevance = torch.tensor([[0.7, -0.4]], dtype=torch.float64)
    rule = R.Epsilon(epsilon=0.1)
    r_plus, a_plus = rule.relevance(op, x, z_plus, relevance)
    r_minus, a_minus = rule.relevance(op, x, z_minus, relevance)
    assert torch.equal(r_plus, r_minus)
    torch.testing.assert_close(a_plus.stabilizer, a_minus.stabilizer, rtol=0, atol=0)
    # the stabilizer took output 0's relevance whole, plus its share of output 1
    share_1 = 0.1 * -0.4 / (-3.0 - 0.1) * -1.0
    torch.testing.assert_close(a_plus.stabilizer, torch.tensor([0.7 + share_1], dtype=torch.float64))


def test_epsilon_rule_leaves_its_arguments_unchanged():
    """The transpose's output is scaled in place; the layer's input, output and relevance are not."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1).double()
    from xaibench.lrp.operators import ConvOperator
    op = ConvOperator(conv)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    z = conv(x).detach()
    relevance = torch.randn(3 * 2, 4, 6, 6, dtype=torch.float64)  # three targets
    copies = [t.clone() for t in (x, z, relevance)]
    r_in, _ = R.Epsilon().relevance(op, x, z, relevance)
    for original, copy in zip((x, z, relevance), copies):
        assert torch.equal(original, copy)
    # the in-place product is the plain one: x * (W^T s), per target
    eps = torch.tensor(0.1, dtype=torch.float64)
    s = (relevance.view(3, 2, 4, 6, 6) / (z + torch.copysign(eps, z))).view(6, 4, 6, 6)
    c = torch.nn.grad.conv2d_input((6, 3, 6, 6), conv.weight.detach(), s, padding=1)
    torch.testing.assert_close(r_in, (c.view(3, 2, 3, 6, 6) * x).view(6, 3, 6, 6))


def test_released_walk_gives_the_kept_walks_relevance_and_ledger():
    """Releasing each value after its step (the default of explain) against keeping all of them,
    on a network where values are read twice (residual sums, a shared activation) and aliased
    (Identity, flatten views)."""
    from xaibench.lrp import composites

    torch.manual_seed(1)
    model = torchvision.models.resnet18(num_classes=5).double().eval()
    model.fc = nn.Sequential(nn.Identity(), nn.Linear(512, 5)).double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    prepared = prepare(model, x)
    graph = prepared.graph
    composite = composites.composite("lrp.epsilon_plus")
    results = {}
    for release in (False, True):
        state = {"composite": composite}
        with torch.no_grad():
            values = graph.forward(prepared.x, state)
            out = values[graph.explained_name]
            seed = torch.zeros_like(out)
            seed[:, 3] = out[:, 3]
            relevance, rows = graph.relevance(values, seed, state, release=release)
        results[release] = (relevance, [(step.name, r_out, r_in, a.total()) for step, r_out, r_in, a in rows], values)
    kept, released = results[False], results[True]
    assert torch.equal(kept[0], released[0])
    assert [row[0] for row in kept[1]] == [row[0] for row in released[1]]
    for a, b in zip(kept[1], released[1]):
        for u, v in zip(a[1:], b[1:]):
            assert torch.equal(torch.as_tensor(u), torch.as_tensor(v))
    # what was released: every explained step's value but the inputs and the explained node
    assert set(released[2]) < set(kept[2])
    assert graph.explained_name in released[2] and graph.input_name in released[2]
    assert torch.equal(released[2][graph.input_name], prepared.x)


# --- several targets: one forward pass, walks (LRP) or backward passes (gradient) per chunk ------
def _unet_like():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
            self.mid = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
            self.up = nn.Upsample(scale_factor=2)
            self.out = nn.Conv2d(4 + 2, 1, 1)

        def forward(self, x):
            h = self.up(self.mid(self.down(x)))
            return self.out(torch.cat([h, x], 1))
    torch.manual_seed(3)
    return Net().double().eval()


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.alpha2beta1", "lrp.epsilon_plus_flat"])
def test_chunked_targets_give_the_one_walk_result(method):
    model = _unet_like()
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    targets = torch.tensor([[0, 9, 27, 63, 36]] * 3)   # 5 pixels per sample
    whole = xaibench.explain(model, x, method, target=targets, target_chunk=5)
    for chunk in (1, 2, 3):
        part = xaibench.explain(model, x, method, target=targets, target_chunk=chunk)
        torch.testing.assert_close(part.relevance, whole.relevance, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(part.conservation_error, whole.conservation_error, rtol=0, atol=1e-12)
        assert len(part.ledger) == len(whole.ledger)
        for a, b in zip(part.ledger, whole.ledger):
            assert (a.layer, a.rule) == (b.layer, b.rule)
            for column in ("relevance_out", "relevance_in", "absorbed_bias", "absorbed_stabilizer",
                           "absorbed_dropped", "absorbed_constant"):
                torch.testing.assert_close(getattr(a, column), getattr(b, column), rtol=1e-12, atol=1e-15)
    # and each target's map is the map of a call for that target alone
    for t in range(targets.shape[1]):
        alone = xaibench.explain(model, x, method, target=targets[:, t])
        torch.testing.assert_close(whole.relevance[:, t], alone.relevance, rtol=1e-12, atol=1e-15)


def test_automatic_chunks_keep_a_walk_within_the_element_budget(monkeypatch):
    from xaibench.lrp import engine
    model = _unet_like()
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    # the largest value per sample is the concatenation, 6x8x8 (384 elements); 2 samples per target
    walks = []
    original = engine._walk_in_chunks

    def spy(graph, values, seed, state, count, per_walk):
        walks.append(per_walk)
        return original(graph, values, seed, state, count, per_walk)
    monkeypatch.setattr(engine, "_walk_in_chunks", spy)
    monkeypatch.setattr(engine, "WALK_ELEMENTS", 2 * 384 * 3)
    targets = torch.tensor([[0, 1, 2, 3, 4, 5, 6]] * 2)
    xaibench.explain(model, x, "lrp.epsilon", target=targets)
    monkeypatch.setattr(engine, "WALK_ELEMENTS", 1)
    xaibench.explain(model, x, "lrp.epsilon", target=targets)
    xaibench.explain(model, x, "lrp.epsilon", target=targets, target_chunk=4)
    assert walks == [3, 1, 4]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_target_chunk_is_named(bad):
    model = _unet_like()
    with pytest.raises(ValueError, match="target_chunk must be None"):
        xaibench.explain(model, torch.rand(1, 2, 8, 8, dtype=torch.float64), "lrp.epsilon", target_chunk=bad)


@pytest.mark.parametrize("method", ["gradient", "input_x_gradient"])
def test_several_gradient_targets_are_the_single_target_gradients(method):
    """One forward pass, one backward pass per target through the retained graph."""
    model = _unet_like()
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    x_before = x.clone()
    targets = torch.tensor([[0, 9, 27], [63, 36, 1], [5, 5, 7]])
    several = xaibench.explain(model, x, method, target=targets)
    assert several.relevance.shape == (3, 3, 2, 8, 8)
    for t in range(3):
        alone = xaibench.explain(model, x, method, target=targets[:, t])
        torch.testing.assert_close(several.relevance[:, t], alone.relevance, rtol=0, atol=0)
        torch.testing.assert_close(several.output[:, t], alone.output, rtol=0, atol=0)
    assert torch.equal(x, x_before) and not x.requires_grad


# --- lean forward: activations recomputed from their input, not held ----------------------------
def test_a_lean_forward_holds_activations_as_recipes_that_recompute_them_exactly():
    from xaibench.lrp.graph import LeanValues, _Recipe

    model = _unet_like()
    x = torch.rand(2, 2, 8, 8, dtype=torch.float64)
    graph = prepare(model, x).graph
    with torch.no_grad():
        full = graph.forward(x, {"composite": None})
        lean = graph.forward(x, {"composite": None}, lean=True)
    assert isinstance(lean, LeanValues) and set(lean) == set(full)
    held = {name for name in lean if isinstance(dict.__getitem__(lean, name), _Recipe)}
    relus = {step.name for step in graph.steps if step.kind == "ReLU"}
    assert held == relus   # both ReLUs; the input, the convolutions, pooling and the output stay
    for name in full:
        assert torch.equal(lean[name], full[name]), name


def test_explain_gives_the_same_map_and_ledger_with_and_without_the_lean_forward(monkeypatch):
    from xaibench.lrp.graph import Graph

    model = _unet_like()
    x = torch.rand(3, 2, 8, 8, dtype=torch.float64)
    lean = xaibench.explain(model, x, "lrp.epsilon_plus_flat", target=[[1, 40]] * 3)
    forward = Graph.forward
    monkeypatch.setattr(Graph, "forward", lambda self, x, state, until=None, lean=False: forward(self, x, state, until))
    full = xaibench.explain(model, x, "lrp.epsilon_plus_flat", target=[[1, 40]] * 3)
    assert torch.equal(lean.relevance, full.relevance)
    for a, b in zip(lean.ledger, full.ledger):
        assert torch.equal(a.relevance_in, b.relevance_in) and torch.equal(a.absorbed, b.absorbed)
