"""The engine on CUDA (marker `cuda`; skipped where torch sees no CUDA device). `make bench-gpu`
runs these, then the benchmark on CUDA (results/engine/bench_cuda.csv).

- the ledger closes on CUDA in float64 (1e-10 of the ledger's scale) and float32 (1e-5) on the
  reference networks of the benchmark and on a transformer zoo (ViT, Swin, an encoder stack);
- CPU and CUDA give the same map in float64 (1e-10 relative to the map's largest value), so
  nothing in the engine depends on where it runs;
- everything the engine returns lives on the input's device;
- peak memory of lrp.epsilon against one gradient, measured by torch.cuda: recorded, and
  bounded loosely (the benchmark states the figure; a test only catches a leak).

Needs torch and torchvision only (zennit, TensorFlow and the data stack are not used): it runs
with the device machine's own python3 and PYTHONPATH set to the repository.
"""

from __future__ import annotations

import pytest
import torch
from strategies import assert_ledger_closes
from torch import nn

import xaibench

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")]

METHODS = ["lrp.epsilon", "lrp.gamma", "lrp.alpha2beta1", "lrp.zplus", "lrp.epsilon_plus"]


def _bench_case(name):
    from xaibench.studies.bench import timing

    case = timing.make_case(name, {"enso": 8, "convection": 2, "radar": 1}[name], torch.device("cpu"), seed=0)
    return case.model, case.x, case.target


def _transformer(name):
    from test_transformers import ZOO, _input

    build, shape = ZOO[name]
    return build(), _input(shape, torch.float32), None


MODELS = {
    "enso": lambda: _bench_case("enso"),
    "convection": lambda: _bench_case("convection"),
    "radar": lambda: _bench_case("radar"),
    "vit": lambda: _transformer("vit"),
    "swin": lambda: _transformer("swin"),
    "encoder": lambda: _transformer("encoder_post_norm"),
}


def _on(device, model, x):
    return model.to(device), x.to(device)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_ledger_closes_on_cuda(name, dtype, tolerance):
    model, x, target = MODELS[name]()
    model, x = _on("cuda", model, x)
    for method in METHODS:
        e = xaibench.explain(model, x, method, target=target, dtype=dtype)
        assert e.relevance.device.type == "cuda" and e.output.device.type == "cuda"
        assert_ledger_closes(e, tolerance)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_cpu_and_cuda_give_the_same_map(name):
    model, x, target = MODELS[name]()
    for method in ("lrp.epsilon", "lrp.alpha2beta1", "gradient"):
        cpu = xaibench.explain(model, x, method, target=target, dtype=torch.float64)
        model_cuda, x_cuda = _on("cuda", model, x)
        cuda = xaibench.explain(model_cuda, x_cuda, method, target=target, dtype=torch.float64)
        model, x = _on("cpu", model, x)
        difference = (cuda.relevance.cpu() - cpu.relevance).abs().max() / cpu.relevance.abs().max()
        assert float(difference) < 1e-10, (name, method, float(difference))


def test_epsilon_peak_memory_on_cuda_is_measured_and_bounded():
    from xaibench.studies.bench import timing

    device = torch.device("cuda")
    case = timing.make_case("radar", 2, device, seed=0)
    gradient = timing.peak_memory_mb(case.gradient_floor, device)
    epsilon = timing.peak_memory_mb(lambda: xaibench.explain(case.model, case.x, "lrp.epsilon", target=case.target),
                                    device)
    assert gradient > 0 and epsilon > 0
    assert epsilon < 10 * gradient, (epsilon, gradient)   # a leak, not the target (the benchmark's figure)


def test_a_model_on_cuda_with_a_cpu_input_is_named():
    model = nn.Sequential(nn.Linear(4, 3)).cuda()
    with pytest.raises(xaibench.InputError, match="model is on cuda"):
        xaibench.explain(model, torch.randn(2, 4), "lrp.epsilon")


def test_every_evaluation_metric_gives_the_same_value_on_cuda_as_on_cpu():
    """The evaluation metrics follow the model's and the input's device (float64: 1e-8 relative)."""
    pytest.importorskip("scipy")
    from xaibench.metrics import evaluation as E

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).double()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 2:5, 2:5] = True

    def explain(model_, x_, target_):
        return xaibench.explain(model_, x_, "lrp.epsilon", target=target_).relevance

    options = {"monotonicity_correlation": {"nr_samples": 3}, "non_sensitivity": {"nr_samples": 1, "groups": 16},
               "average_sensitivity": {"samples": 4}, "max_sensitivity": {"samples": 4},
               "local_lipschitz_estimate": {"samples": 4}}
    values = {}
    for device in ("cpu", "cuda"):
        moved = model.to(device)
        setting = E.Setting(moved, x.to(device), target.to(device), explain(moved, x.to(device), target.to(device)),
                            explain, mask=mask.to(device), options=options)
        values[device] = {name: metric(setting) for name, metric in E.metrics().items()}
        assert all(value.device.type == "cpu" for value in values[device].values())
    for name in values["cpu"]:
        assert torch.allclose(values["cpu"][name], values["cuda"][name], rtol=1e-8, atol=1e-12, equal_nan=True), name
