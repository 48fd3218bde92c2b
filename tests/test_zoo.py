"""The ledger closes on the architectures researchers use today (issue 16): every torchvision
classification backbone that builds at 64x64 in the test budget, and a diffusion-style U-Net
(GroupNorm, SiLU, concatenation skips).

The torchvision networks get random weights that keep activations of order one
(xaibench.studies.networks.awaken): torchvision's own initialization leaves logits near 1e-9 at
random weights, where every rule's stabilizer would absorb the whole output and the check would
say nothing. The closure is relative to the
largest term the ledger adds up (strategies.assert_ledger_closes): float64 1e-10, float32 1e-5.
"""

from __future__ import annotations

import pytest
import torch
from strategies import assert_ledger_closes

import xaibench
from xaibench.studies.networks import DiffusionUNet
from xaibench.studies.networks import awaken as awake

torchvision = pytest.importorskip("torchvision")

BACKBONES = ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny",
             "regnet_y_400mf", "regnet_x_400mf", "shufflenet_v2_x0_5", "resnext50_32x4d", "wide_resnet50_2",
             "densenet121", "resnet18", "squeezenet1_1", "mnasnet0_5"]


def _input(dtype, channels=3, size=64):
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.fixture(scope="module", params=BACKBONES)
def backbone(request):
    return request.param, awake(getattr(torchvision.models, request.param)(weights=None))


def test_backbone_ledger_closes(backbone):
    name, model = backbone
    model64 = model.double()
    x = _input(torch.float64)
    for method in ("lrp.z", "lrp.epsilon", "lrp.gamma", "lrp.alpha2beta1"):
        e = xaibench.explain(model64, x, method)
        assert_ledger_closes(e, 1e-10)
    # squeeze-excitation gates (MobileNetV3, EfficientNet, RegNetY) are found and held constant
    assert_ledger_closes(xaibench.explain(model64, x, "lrp.epsilon", product="gate_constant"), 1e-10)
    reference = model64(x)
    assert torch.allclose(e.output, reference.max(1).values, rtol=1e-10)
    e32 = xaibench.explain(model.float(), x.float(), "lrp.epsilon")
    assert_ledger_closes(e32, 1e-5)


def test_diffusion_unet_ledger_closes_on_a_pixel_and_a_region():
    model = awake(DiffusionUNet(channels=2, width=8, groups=4)).double()
    x = _input(torch.float64, channels=2, size=16)
    out = model(x)
    kinds = " ".join(row.kind for row in xaibench.explain(model, x, "lrp.epsilon", target=5).ledger)
    assert all(kind in kinds for kind in ("GroupNorm", "SiLU", "cat", "Upsample"))
    for method in ("lrp.z", "lrp.epsilon", "lrp.gamma", "lrp.epsilon_plus"):
        assert_ledger_closes(xaibench.explain(model, x, method, target=5), 1e-10)
    region = torch.zeros(out.shape[1:], dtype=torch.bool)
    region[:, 4:8, 4:8] = True
    e = xaibench.explain(model, x, "lrp.epsilon", target=region)
    assert_ledger_closes(e, 1e-10)
    assert torch.allclose(e.output, (out * region).sum((1, 2, 3)), rtol=1e-10)


def test_torchvision_segmentation_model_returns_a_dict_and_output_chooses():
    model = awake(torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=3)).double()
    x = _input(torch.float64)[:1]
    with pytest.raises(xaibench.InputError, match="output="):
        xaibench.explain(model, x, "lrp.epsilon")
    region = torch.zeros(3, 64, 64, dtype=torch.bool)
    region[1, 20:40, 20:40] = True
    e = xaibench.explain(model, x, "lrp.epsilon", output="out", target=region)
    assert_ledger_closes(e, 1e-10)
    assert torch.allclose(e.output, (model(x)["out"] * region).sum((1, 2, 3)), rtol=1e-10)
