"""Every rule on single layers against the dense-matrix re-implementation (float64, 1e-10).

The engine path under test is the whole one (trace -> forward -> relevance walk) with a
random relevance at the layer output for two targets at once; the reference
(xaibench/lrp/reference.py) builds each layer's matrix from the torch module itself and
applies the textbook formulas.
"""

import zlib

import pytest
import torch
from torch import nn

from xaibench.lrp import composites
from xaibench.lrp.graph import trace
from xaibench.lrp.reference import engine_vs_reference, layer_matrix
from xaibench.lrp.reference import relevance as reference_relevance
from xaibench.studies.conformance.table import LAYERS, PARAMETER_FREE, RULES

TOLERANCE = 1e-10


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "ignore_bias"])
@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_linear_layer_rules_match_dense_reference(layer, rule, bias):
    build, shape = LAYERS[layer]
    method, options, ref_rule, ref_options = RULES[rule]
    error = engine_vs_reference(build(), shape, method, {**options, "bias": bias}, ref_rule, ref_options,
                                seed=zlib.crc32(f"{layer}/{rule}".encode()) % 1000)
    assert error < TOLERANCE, f"{layer}/{rule}: error {error:.3g}"


@pytest.mark.parametrize("layer", sorted(PARAMETER_FREE))
def test_parameter_free_layers_match_dense_reference(layer):
    build, shape, ref_rule, options, reference_function = PARAMETER_FREE[layer]
    error = engine_vs_reference(build(), shape, "lrp.epsilon", options, ref_rule, {},
                                reference_function=reference_function)
    assert error < TOLERANCE, f"{layer}: error {error:.3g}"


def test_reference_check_detects_a_wrong_rule():
    """The comparison is not vacuous: the engine's gamma against the reference with another gamma."""
    build, shape = LAYERS["conv2d"]
    error = engine_vs_reference(build(), shape, "lrp.gamma", {"gamma": 0.25}, "gamma", {"gamma": 0.3})
    assert error > 1e-4


def test_ledger_books_exactly_what_the_reference_does_not_pass_on():
    torch.manual_seed(2)
    module = nn.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    graph = trace(nn.Sequential(module)).to(torch.float64, x.device)
    composite = composites.composite("lrp.alpha2beta1")
    state = {"composite": composite}
    values = graph.forward(x, state)
    r_out = torch.randn((2,) + tuple(values[graph.explained_name].shape[1:]), dtype=torch.float64)
    _, rows = graph.relevance(values, r_out, state)
    (step, total_out, total_in, absorbed) = rows[0]
    M, b = layer_matrix(module, (2, 4, 4))
    for row in range(2):
        expected_in = reference_relevance("alpha_beta", M, b, x[row].reshape(-1), r_out[row].reshape(-1),
                                          alpha=2.0, beta=1.0).sum()
        expected_absorbed = r_out[row].sum() - expected_in
        assert torch.allclose(absorbed.total()[row], expected_absorbed, atol=1e-10)
        assert torch.allclose(total_in[row], expected_in, atol=1e-10)


def test_batchnorm_merge_leaves_output_unchanged_and_rules_see_merged_layer():
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(-2, 2)
    bn.bias.data.uniform_(-1, 1)
    model = nn.Sequential(conv, bn).double().eval()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
    graph = trace(model).to(torch.float64, x.device)
    assert torch.allclose(graph.forward(x, {})[graph.explained_name], model(x), atol=1e-12)
    assert "merged" in graph.steps[1].kind
    # the merged conv against the reference built from the (conv, bn) pair as one affine map
    error = engine_vs_reference(model, (2, 4, 4), "lrp.epsilon", {"epsilon": 0.1}, "epsilon", {"epsilon": 0.1})
    assert error < TOLERANCE
