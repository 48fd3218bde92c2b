"""Every rule on single layers against the dense-matrix re-implementation (float64, 1e-10).

The engine path under test is the whole one (trace -> forward -> relevance walk) with a
random relevance at the layer output for two targets at once; the reference builds each
layer's matrix from the torch module itself and applies the textbook formulas.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xaibench.lrp import composites
from xaibench.lrp.graph import trace
from xaibench.lrp.reference import layer_matrix, local_matrix, relevance as reference_relevance

TOLERANCE = 1e-10
BATCH, TARGETS = 2, 2


def _layers():
    torch.manual_seed(0)
    return {
        "linear": (nn.Linear(7, 5), (7,)),
        "conv1d_stride_pad": (nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 9)),
        "conv2d": (nn.Conv2d(2, 3, 3, padding=1), (2, 5, 5)),
        "conv2d_groups_dilation": (nn.Conv2d(4, 4, 3, dilation=2, groups=2), (4, 7, 7)),
        "conv2d_same": (nn.Conv2d(2, 2, 3, padding="same"), (2, 4, 5)),
        "conv3d": (nn.Conv3d(2, 3, (2, 3, 3), padding=(0, 1, 1)), (2, 3, 4, 4)),
        "convtranspose1d": (nn.ConvTranspose1d(3, 2, 3, stride=2, padding=1, output_padding=1), (3, 5)),
        "convtranspose2d": (nn.ConvTranspose2d(2, 3, 3, stride=2), (2, 3, 3)),
        "convtranspose3d": (nn.ConvTranspose3d(2, 2, 2, stride=2), (2, 2, 2, 3)),
    }


LAYERS = _layers()

RULES = {
    # name: (canonical method, options, reference rule, reference options)
    "z": ("lrp.z", {}, "z", {}),
    "epsilon": ("lrp.epsilon", {"epsilon": 0.1}, "epsilon", {"epsilon": 0.1}),
    "gamma": ("lrp.gamma", {"gamma": 0.25}, "gamma", {"gamma": 0.25}),
    "zplus": ("lrp.zplus", {}, "zplus", {}),
    "alpha1beta0": ("lrp.alpha1beta0", {}, "alpha_beta", {"alpha": 1.0, "beta": 0.0}),
    "alpha2beta1": ("lrp.alpha2beta1", {}, "alpha_beta", {"alpha": 2.0, "beta": 1.0}),
    "alpha3beta2": ("lrp.alpha_beta", {"alpha": 3.0, "beta": 2.0}, "alpha_beta", {"alpha": 3.0, "beta": 2.0}),
    "zbox": ("lrp.zbox", {}, "zbox", {}),
    "wsquare": ("lrp.wsquare", {}, "wsquare", {}),
    "flat": ("lrp.flat", {}, "flat", {}),
}


def _input(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((BATCH,) + shape, generator=g, dtype=torch.float64)
    x[torch.rand(x.shape, generator=g) < 0.15] = 0.0  # exact zeros exercise the stabilizer
    return x


def _engine(model, x, composite, seed_relevance):
    graph = trace(model).to(torch.float64, x.device)
    state = {"composite": composite}
    values = graph.forward(x, state)
    if composite.needs_bounds():
        low = torch.full_like(x, -3.0)
        high = torch.full_like(x, 3.0)
        lows, highs = graph.map_bounds(low, state), graph.map_bounds(high, state)
        for name in lows:
            state[("bounds", name)] = {"low": lows[name], "high": highs[name]}
    output = values[graph.explained_name]
    if seed_relevance is None:
        g = torch.Generator().manual_seed(1)
        seed_relevance = torch.randn((TARGETS * BATCH,) + tuple(output.shape[1:]), generator=g,
                                     dtype=torch.float64)
    relevance_in, rows = graph.relevance(values, seed_relevance, state)
    return seed_relevance, relevance_in, rows


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "ignore_bias"])
@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_linear_layer_rules_match_dense_reference(layer, rule, bias):
    module, shape = LAYERS[layer]
    module = module.double()
    method, options, ref_rule, ref_options = RULES[rule]
    composite = composites.composite(method, bias=bias, **options)
    x = _input(shape, seed=hash((layer, rule)) % 1000)
    seed_relevance, relevance_in, rows = _engine(nn.Sequential(module), x, composite, None)
    M, b = layer_matrix(module, shape)
    for row in range(TARGETS * BATCH):
        sample = row % BATCH
        extra = {}
        if ref_rule == "zbox":
            extra = {"low": torch.full((M.shape[1],), -3.0, dtype=torch.float64),
                     "high": torch.full((M.shape[1],), 3.0, dtype=torch.float64)}
        expected = reference_relevance(ref_rule, M, b, x[sample].reshape(-1),
                                       seed_relevance[row].reshape(-1), bias=bias, **ref_options, **extra)
        got = relevance_in[row].reshape(-1)
        scale = max(1.0, float(expected.abs().max()))
        assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE * scale), (
            f"{layer}/{rule}: max error {float((got - expected).abs().max()):.3g}")
    # the ledger's absorbed share equals what the reference does not pass on
    (row,) = [r for r in rows if r[0].path == "0"]
    step, r_out, r_in, absorbed = row
    assert torch.allclose(r_out - r_in, absorbed.total(), rtol=0, atol=1e-10 * float(r_out.abs().max() + 1))


PARAMETER_FREE = {
    "avgpool1d": (nn.AvgPool1d(3, stride=2, padding=1), (2, 7), "norm"),
    "avgpool2d": (nn.AvgPool2d(2), (2, 4, 6), "norm"),
    "avgpool3d": (nn.AvgPool3d((1, 2, 2)), (1, 2, 4, 4), "norm"),
    "adaptive_avgpool2d": (nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 7), "norm"),
    "upsample_nearest": (nn.Upsample(scale_factor=2, mode="nearest"), (2, 3, 3), "norm"),
    "upsample_bilinear": (nn.Upsample(scale_factor=2, mode="bilinear"), (1, 3, 4), "norm"),
    "maxpool2d_overlapping": (nn.MaxPool2d(3, stride=2, padding=1), (2, 5, 5), "gradient"),
    "maxpool1d": (nn.MaxPool1d(2), (3, 8), "gradient"),
    "maxpool3d": (nn.MaxPool3d((1, 2, 2)), (2, 2, 4, 4), "gradient"),
}


@pytest.mark.parametrize("layer", sorted(PARAMETER_FREE))
def test_parameter_free_layers_match_dense_reference(layer):
    module, shape, ref_rule = PARAMETER_FREE[layer]
    composite = composites.composite("lrp.epsilon")
    x = _input(shape, seed=7)
    seed_relevance, relevance_in, rows = _engine(nn.Sequential(module), x, composite, None)
    for row in range(TARGETS * BATCH):
        sample = row % BATCH
        if ref_rule == "gradient":
            M = local_matrix(module, x[sample])
            b = torch.zeros(M.shape[0], dtype=torch.float64)
        else:
            M, b = layer_matrix(module, shape)
        expected = reference_relevance(ref_rule, M, b, x[sample].reshape(-1),
                                       seed_relevance[row].reshape(-1), stabilizer=composite.norm_stabilizer)
        got = relevance_in[row].reshape(-1)
        assert torch.allclose(got, expected, rtol=0, atol=TOLERANCE * max(1.0, float(expected.abs().max())))


def test_proportional_maxpool_matches_window_share_reference():
    module, shape = nn.MaxPool2d(2, stride=2), (2, 4, 4)
    composite = composites.composite("lrp.epsilon", maxpool="proportional")
    x = _input(shape, seed=3).abs()
    seed_relevance, relevance_in, _ = _engine(nn.Sequential(module), x, composite, None)
    # the window-membership matrix, from an average pool scaled back to a sum
    M, _ = layer_matrix(lambda t: F.avg_pool2d(t, 2, 2) * 4, shape)
    for row in range(TARGETS * BATCH):
        sample = row % BATCH
        expected = reference_relevance("norm", M, torch.zeros(M.shape[0], dtype=torch.float64),
                                       x[sample].reshape(-1), seed_relevance[row].reshape(-1),
                                       stabilizer=composite.norm_stabilizer)
        assert torch.allclose(relevance_in[row].reshape(-1), expected, rtol=0, atol=1e-10)


def test_batchnorm_merge_leaves_output_unchanged_and_rules_see_merged_layer():
    torch.manual_seed(3)
    conv, bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(-2, 2)
    bn.bias.data.uniform_(-1, 1)
    model = nn.Sequential(conv, bn).double().eval()
    x = _input((2, 4, 4), seed=5)
    graph = trace(model).to(torch.float64, x.device)
    assert torch.allclose(graph.forward(x, {})[graph.explained_name], model(x), atol=1e-12)
    composite = composites.composite("lrp.epsilon", epsilon=0.1)
    seed_relevance, relevance_in, _ = _engine(model, x, composite, None)
    M, b = layer_matrix(model, (2, 4, 4))  # the merged affine map, read off the model itself
    for row in range(TARGETS * BATCH):
        expected = reference_relevance("epsilon", M, b, x[row % BATCH].reshape(-1),
                                       seed_relevance[row].reshape(-1), epsilon=0.1)
        assert torch.allclose(relevance_in[row].reshape(-1), expected, atol=1e-10)
