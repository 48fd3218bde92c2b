"""The ledger closes on the architectures researchers use today (issue 16): every torchvision
classification backbone that builds at 64x64 in the test budget, and a diffusion-style U-Net
(GroupNorm, SiLU, concatenation skips).

The torchvision networks get random weights scaled to keep activations of order one (He
initialization, BatchNorm statistics near (0, 1), ConvNeXt's layer scale at 0.5): torchvision's
own initialization leaves logits near 1e-9 at random weights, where every rule's stabilizer
would absorb the whole output and the check would say nothing. The closure is relative to the
largest term the ledger adds up (strategies.assert_ledger_closes): float64 1e-10, float32 1e-5.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from strategies import assert_ledger_closes
from torch import nn

import xaibench
from xaibench.studies.networks import DiffusionUNet

torchvision = pytest.importorskip("torchvision")

BACKBONES = ["mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny",
             "regnet_y_400mf", "regnet_x_400mf", "shufflenet_v2_x0_5", "resnext50_32x4d", "wide_resnet50_2",
             "densenet121", "resnet18", "squeezenet1_1", "mnasnet0_5"]


def awake(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)

    def normal(shape, std, mean=0.0):
        return torch.randn(shape, generator=generator) * std + mean

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                module.weight.copy_(normal(module.weight.shape, math.sqrt(2.0 / module.weight[0].numel())))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(normal(module.running_mean.shape, 0.1))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
            if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                module.weight.copy_(normal(module.weight.shape, 0.2, 1.0))
                module.bias.copy_(normal(module.bias.shape, 0.1))
        for name, parameter in model.named_parameters():
            if "layer_scale" in name:
                parameter.fill_(0.5)
    return model.eval()


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


def test_in_place_operations_do_not_change_the_values_the_rules_read():
    """nn.SiLU(inplace=True), F.relu(x, inplace=True), x.relu_() and x *= 2 would overwrite the
    stored output of the layer before them, and the ledger would no longer close."""
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = (nn.Linear(4, 4) for _ in range(4))
            self.act = nn.SiLU(inplace=True)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = self.act(self.a(x))
            x = F.relu(self.b(x), inplace=True)
            x = self.c(x).relu_()
            x = self.d(x)
            x *= 2.0
            return self.head(F.hardtanh(x, -3.0, 3.0, True))

    model = awake(InPlace()).double()
    x = _input(torch.float64)[:, 0, 0, :4]
    e = xaibench.explain(model, x, "lrp.epsilon")
    assert_ledger_closes(e, 1e-10)
    assert torch.allclose(e.output, model(x).max(1).values)
