"""The Keras twin of a PyTorch model (xaibench/backends/keras_export.py) that innvestigate explains.

The twin must compute the same function before any explanation of it means anything:
forward outputs agree to 1e-5 relative in float32 (measured: ~1e-7) on the three reference
networks and on random mirrorable networks, and to 1e-12 in float64 (measured: ~3e-16) on a
residual net and a U-Net, which become Keras functional graphs (Add, Concatenate). A model the
exporter cannot mirror gets an ExportError naming the layer, never a silently different Keras model.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import ResidualNet, TinyUNet, conv_networks, dense_networks
from torch import nn

import xaibench
from xaibench.backends import keras_export
from xaibench.errors import ExportError, InputError
from xaibench.studies.models.convection import ConvectionCNN
from xaibench.studies.models.enso import EnsoDense
from xaibench.studies.models.radar import RadarEncoderDecoder
from xaibench.studies.networks import SkipResNet, SkipUNet

pytestmark = pytest.mark.tf

MIRRORABLE = st.one_of(
    dense_networks(activations=("relu",)),
    conv_networks(activations=("relu",), resamples=("maxpool", "avgpool", "adaptive", "nearest"), transposed=False,
                  pool_padding=False),
)


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def _reference_models():
    torch.manual_seed(0)
    enso = EnsoDense(n_lat=18, n_lon=30, softmax=True)   # the softmax is stripped on both sides
    convection = ConvectionCNN(height=32, width=32)
    yield "enso", enso, torch.randn(enso.input_shape(4)), nn.Sequential(*list(enso)[:-1])
    yield "convection", convection, torch.rand(convection.input_shape(3)), convection
    for blocks in (1, 2, 3):
        radar = RadarEncoderDecoder(blocks)
        yield f"radar{blocks}", radar, torch.rand(radar.input_shape(2, 32, 32)), radar


@pytest.mark.parametrize("name", ["enso", "convection", "radar1", "radar2", "radar3"])
def test_twin_of_each_reference_network_computes_the_same_output(innvestigate_worker, name):
    model, x, explained = next((m, x, e) for n, m, x, e in _reference_models() if n == name)
    model.eval()
    with torch.no_grad():
        expected = explained(x)
    twin = innvestigate_worker.keras_forward(model, x)
    assert twin.shape == expected.shape
    assert relative_error(twin, expected) <= 1e-5


@settings(max_examples=15)
@given(case=MIRRORABLE)
def test_twin_of_random_networks_computes_the_same_output(innvestigate_worker, case):
    model = case.model.eval()
    with torch.no_grad():
        expected = model(case.x)
    twin = innvestigate_worker.keras_forward(model, case.x)
    assert relative_error(twin, expected) <= 1e-5, case


def test_flatten_reorders_the_next_linear_from_channels_first_to_channels_last():
    conv = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 5, 2))
    spec = keras_export.export(conv, torch.randn(1, 2, 6, 7))
    assert [layer["kind"] for layer in spec.layers] == ["conv", "flatten", "dense"]   # ReLU fused into conv
    kernel = spec.weights["2/kernel"]                      # [in (H, W, C order), out]
    weight = conv[3].weight.detach().double().numpy()      # [out, in (C, H, W order)]
    # input feature (c=1, h=2, w=3) sits at C,H,W index 1*20 + 2*5 + 3 and H,W,C index (2*5 + 3)*3 + 1
    assert kernel[(2 * 5 + 3) * 3 + 1, 0] == weight[0, 1 * 20 + 2 * 5 + 3]
    assert spec.input_shape == [6, 7, 2]


def test_output_index_of_a_map_follows_keras_channels_last_order():
    # torch output (C=2, H=3, W=4): flat index of (c=1, h=2, w=3) -> Keras (h, w, c) = (2*4 + 3)*2 + 1
    assert int(keras_export.keras_output_index([1 * 12 + 2 * 4 + 3], (2, 3, 4))[0]) == (2 * 4 + 3) * 2 + 1
    assert int(keras_export.keras_output_index([5], (7,))[0]) == 5


# --- residual nets and U-Nets: exported as Keras functional graphs --------------------------------
# SkipResNet and SkipUNet are shared test networks (xaibench/studies/networks.py): the census runs them too.
def dag_model(name, bias=True, seed=0):
    """A seeded float64 SkipResNet or SkipUNet and an input batch for it."""
    torch.manual_seed(seed)
    model = (SkipResNet if name == "resnet" else SkipUNet)(bias).double().eval()
    return model, torch.randn(3, 2, 6 if name == "resnet" else 8, 6 if name == "resnet" else 8, dtype=torch.float64)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = nn.Linear(3, 3)

    def forward(self, x):
        return x + torch.relu(self.inner(x))


class _Merge(nn.Module):
    """Merges the exporter refuses (each names the layer)."""

    def __init__(self, how):
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.flatten = nn.Flatten()
        self.mean = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        h = self.conv(x)
        if self.how == "number":
            return h + 1.0
        if self.how == "subtract":
            return x - h
        if self.how == "broadcast":
            return h + self.mean(h)
        if self.how == "batch":
            return torch.cat([h, x], 0)
        return torch.cat([self.flatten(h), self.flatten(x)], 1)   # "flattened"


@pytest.mark.parametrize("model, x, layer", [
    (nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)), torch.randn(2, 3), "'1' of type Tanh"),
    (nn.Sequential(nn.ConvTranspose2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 36, 2)), torch.randn(2, 1, 4, 4),
     "'0' of type ConvTranspose2d"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.LeakyReLU(), nn.Flatten(), nn.Linear(8, 2)), torch.randn(2, 1, 4, 4),
     "'1' of type LeakyReLU"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, padding=1), nn.Flatten(), nn.Linear(2 * 4, 2)),
     torch.randn(2, 1, 5, 5), "'1' of type MaxPool2d: padding"),
    (_Merge("number"), torch.randn(2, 2, 4, 4), "'add .add.' of type add: adding a number"),
    (_Merge("subtract"), torch.randn(2, 2, 4, 4), "'sub .sub.' of type sub"),
    (_Merge("broadcast"), torch.randn(2, 2, 4, 4), "'add .add.' of type add: a broadcasting addition"),
    (_Merge("batch"), torch.randn(2, 2, 4, 4), "'cat .cat.' of type cat: concatenation along the batch"),
    (_Merge("flattened"), torch.randn(2, 2, 4, 4), "'cat .cat.' of type cat: a flattened feature map"),
])
def test_a_model_the_exporter_cannot_mirror_gets_an_error_naming_the_layer(model, x, layer):
    with pytest.raises(ExportError, match=layer):
        keras_export.export(model, x)


def test_a_graph_names_each_layers_inputs_and_a_chain_is_written_as_before():
    spec = keras_export.export(*dag_model("resnet"))
    rows = [(layer["kind"], layer["name"], layer["inputs"], layer.get("activation")) for layer in spec.layers]
    assert rows[:5] == [
        ("conv", "stem", ["input"], "relu"),
        ("conv", "f1.0", ["stem"], "relu"),
        ("conv", "f1.2", ["f1.0"], None),   # its output is added to the skip before the ReLU
        ("add", "add (add)", ["stem", "f1.2"], None),
        ("relu", "relu_1 (relu)", ["add (add)"], None),   # nothing to fuse into: a layer of its own
    ]
    assert ("add", "add_1 (add)", ["projection", "f2.2"], None) in rows   # torch.add, projection skip
    unet = keras_export.export(*dag_model("unet"))
    merges = [(layer["name"], layer["inputs"], layer["axis"]) for layer in unet.layers
              if layer["kind"] == "concatenate"]
    assert merges == [("cat (cat)", ["up", "encode2"], -1), ("cat_1 (cat)", ["up #2", "encode1"], -1)]
    assert unet.layers[-1]["name"] == "out" and unet.output_shape == [1, 8, 8]
    chain = keras_export.export(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2)),
                                torch.randn(1, 2, 4, 4))
    assert all("inputs" not in layer for layer in chain.layers)
    skip = keras_export.export(_Residual(), torch.randn(2, 3))   # the model input itself is the skip
    assert [(layer["kind"], layer["inputs"]) for layer in skip.layers] == [("dense", ["input"]),
                                                                          ("add", ["input", "inner"])]


class _Details(nn.Module):
    """A concatenation along a spatial dim (torch dim 3 -> Keras axis 2), an addition of two
    flattened maps, and a BatchNorm1d between Flatten and Linear (its features reordered too)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 3, 1)
        self.flatten = nn.Flatten()
        self.norm = nn.BatchNorm1d(3 * 4 * 10)
        self.head = nn.Linear(3 * 4 * 10, 2)

    def forward(self, x):
        h = torch.cat([self.a(x), torch.relu(self.b(x))], dim=3)
        flat = self.flatten(h) + self.flatten(torch.relu(h))
        return self.head(torch.relu(self.norm(flat)))


def _details():
    torch.manual_seed(5)
    model = _Details().double()
    with torch.no_grad():
        model.norm.running_mean.normal_(0, 0.5)
        model.norm.running_var.uniform_(0.5, 2.0)
        model.norm.weight.uniform_(0.5, 1.5)
        model.norm.bias.normal_(0, 0.5)
    return model.eval(), torch.randn(3, 2, 4, 5, dtype=torch.float64)


def _strategies_model(name):
    torch.manual_seed(6)
    if name == "strategies-resnet":
        return ResidualNet(conv=True, channels=2, n_out=2, blocks=2, bias=True, final_relu=False, activation="relu")
    return TinyUNet(2, 3, name.rsplit("-", 1)[1], bias=True, activation="relu")


DAG_CASES = [(name, dtype) for name in ("resnet", "unet", "details", "strategies-resnet", "strategies-unet-nearest")
             for dtype in (torch.float64, torch.float32)] + [("strategies-unet-bilinear", torch.float32)]


@pytest.mark.parametrize("name, dtype", DAG_CASES)
def test_twin_of_a_residual_net_and_a_unet_computes_the_same_output(innvestigate_worker, name, dtype):
    if name == "details":
        model, x = _details()
    elif name.startswith("strategies"):
        model, x = _strategies_model(name), torch.randn(3, 2, 6, 6)
    else:
        model, x = dag_model(name)
    model, x = model.to(dtype).eval(), x.to(dtype)
    with torch.no_grad():
        expected = model(x)
    twin = innvestigate_worker.keras_forward(model, x)
    assert twin.shape == expected.shape
    error = relative_error(twin, expected)
    print(f"{name} {dtype}: Keras twin vs PyTorch {error:.1e}")
    assert error <= (1e-12 if dtype == torch.float64 else 1e-5)


def test_float64_bilinear_upsampling_is_refused_with_the_reason():
    """TensorFlow's bilinear resize computes in float32 whatever the Keras float type: the
    float64 twin of a bilinear U-Net differs from PyTorch by ~1e-8 (measured 7e-9)."""
    model = _strategies_model("strategies-unet-bilinear").double().eval()
    with pytest.raises(ExportError, match="'up' of type Upsample: TensorFlow's bilinear resize"):
        keras_export.export(model, torch.randn(2, 2, 6, 6, dtype=torch.float64))
    keras_export.export(model.float(), torch.randn(2, 2, 6, 6))


def test_float64_3d_pooling_is_refused_with_the_reason(innvestigate_worker):
    model = nn.Sequential(nn.Conv3d(1, 2, 2), nn.ReLU(), nn.AvgPool3d(2), nn.Flatten(), nn.Linear(16, 2)).double()
    with pytest.raises(ExportError, match="float64 3D pooling"):
        xaibench.explain(model, torch.randn(2, 1, 5, 5, 5, dtype=torch.float64), "lrp.epsilon", backend="innvestigate")


def test_innvestigate_refuses_what_it_cannot_do_with_a_clear_error(innvestigate_worker):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.randn(3, 4)
    with pytest.raises(xaibench.errors.UnknownMethodError, match="lrp.gamma"):
        xaibench.explain(model, x, "lrp.gamma", backend="innvestigate")
    with pytest.raises(InputError, match="one output index"):
        xaibench.explain(model, x, "lrp.epsilon", target=torch.ones(2, dtype=torch.bool), backend="innvestigate")
    with pytest.raises(ValueError, match="riemann_left"):
        xaibench.explain(model, x, "integrated_gradients", rule="riemann_trapezoid", backend="innvestigate")
    with pytest.raises(ValueError, match="unknown option"):
        xaibench.explain(model, x, "lrp.epsilon", epsilom=0.1, backend="innvestigate")
    with pytest.raises(ValueError, match="ignores its noise_scale"):   # innvestigate 2.1.2: std is always 1
        xaibench.explain(model, x, "smoothgrad", noise_level=0.2, backend="innvestigate")


def test_the_users_model_and_input_are_unchanged(innvestigate_worker):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Dropout(0.5), nn.Linear(3, 2))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 4)
    before = x.clone()
    model.eval()
    xaibench.explain(model, x, "lrp.epsilon", backend="innvestigate")
    model.train()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(x, before)
    assert model.training


def test_several_targets_per_sample_equal_separate_calls(innvestigate_worker):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    both = xaibench.explain(model, x, "lrp.epsilon", target=torch.tensor([[0, 2]] * 4), backend="innvestigate")
    for t, column in ((0, 0), (2, 1)):
        alone = xaibench.explain(model, x, "lrp.epsilon", target=t, backend="innvestigate")
        torch.testing.assert_close(both.relevance[:, column], alone.relevance, rtol=0, atol=1e-14)


def test_a_wrapper_analyzer_does_not_change_a_later_first_layer_rule(innvestigate_worker):
    """innvestigate's integrated gradients calls the twin's layers on new inputs, which
    hides the input layer from a z^B analyzer built afterwards; each wrapper has its own twin."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.rand(3, 5, dtype=torch.float64)
    options = {"low": 0.0, "high": 1.0, "stabilizer": 1e-30}
    native = xaibench.explain(model, x, "lrp.zbox", bias=False, **options)
    xaibench.explain(model, x, "integrated_gradients", rule="riemann_left", backend="innvestigate")
    xaibench.explain(model, x, "smoothgrad", backend="innvestigate")
    after = xaibench.explain(model, x, "lrp.zbox", bias=False, backend="innvestigate", **options)
    torch.testing.assert_close(after.relevance, native.relevance, rtol=1e-9, atol=1e-12)
