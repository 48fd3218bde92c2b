"""Receptive fields (xaibench.receptive_field): the exact TRF box, its empirical check,
ERF maps and their sizes, and bad input.

- gradient and LRP relevance of one output are exactly zero outside the analytic TRF box, for
  random fully convolutional networks drawn by hypothesis (weights from strategies.randomize);
- the box equals the support of input gradients of a positive-weight copy (empirical TRF),
  border pixels included;
- the radar networks: 8, 22 and 46-54 (textbook recurrence 50; 48 for the variant whose last
  3x3 convolution runs at full resolution);
- ERF maps lie inside the TRF; batched targets give the per-pixel maps;
- Luo et al.: the Gaussian sigma of n stacked uniform k-kernels is sqrt(n (k^2 - 1) / 12) (exact,
  1e-9) and of random positive kernels within 10 % of it, while ERF / TRF shrinks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import make_input, randomize, snapshot
from torch import nn

import xaibench
from xaibench import receptive_field as receptive
from xaibench.errors import InputError, UnsupportedLayerError
from xaibench.studies.models import RadarEncoderDecoder

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d}
_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_LINEAR_MODE = {1: "linear", 2: "bilinear"}


def _radar(n_blocks: int, filters: int = 8, seed: int = 0) -> RadarEncoderDecoder:
    """A radar network with seeded weights (independent of the tests run before)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RadarEncoderDecoder(n_blocks, filters=filters)


# --- random fully convolutional networks -------------------------------------------------------
@st.composite
def conv_maps(draw, linear_upsampling=True):
    """(model, input shape (C, *spatial), description): 1-5 stages of Conv (kernel 1-3, stride
    1-2, padding, dilation 1-2) | ConvTranspose (kernel 1-3, stride 1-2) -> [BatchNorm] ->
    ReLU/LeakyReLU -> [MaxPool | AvgPool | nearest (or linear) Upsample x2]; output: a map."""
    dims = draw(st.sampled_from([1, 2]))
    size = draw(st.integers(9, 16)) if dims == 2 else draw(st.integers(12, 32))
    channels = in_channels = draw(st.integers(1, 3))
    layers, parts, current = [], [f"{dims}d in={channels}x{size}"], size
    for _ in range(draw(st.integers(1, 5))):
        out = draw(st.integers(1, 4))
        if draw(st.integers(0, 3)) == 0 and current * 2 + 2 <= 2 * size:
            k, s = draw(st.integers(1, 3)), draw(st.integers(1, 2))
            layers.append(_CONV_T[dims](channels, out, k, stride=s))
            current = (current - 1) * s + k
            parts.append(f"ConvT(k{k},s{s})")
        else:
            d = draw(st.integers(1, 2))
            k = draw(st.integers(1, 3))
            if d * (k - 1) + 1 > current:
                d, k = 1, 1
            p = draw(st.integers(0, d * (k - 1) // 2))
            s = draw(st.integers(1, 2))
            layers.append(_CONV[dims](channels, out, k, stride=s, padding=p, dilation=d))
            current = (current + 2 * p - d * (k - 1) - 1) // s + 1
            parts.append(f"Conv(k{k},s{s},p{p},d{d})")
        channels = out
        if draw(st.integers(0, 3)) == 0:
            layers.append(_BATCHNORM[dims](channels))
            parts.append("BN")
        layers.append(nn.ReLU() if draw(st.booleans()) else nn.LeakyReLU(0.1))
        kinds = ["none", "maxpool", "avgpool", "nearest"] + (["linear"] if linear_upsampling else [])
        kind = draw(st.sampled_from(kinds))
        if kind in ("maxpool", "avgpool") and current >= 3:
            k, s = draw(st.integers(2, 3)), draw(st.integers(1, 2))
            p = draw(st.integers(0, k // 2))
            layers.append((_MAXPOOL if kind == "maxpool" else _AVGPOOL)[dims](k, stride=s, padding=p))
            current = (current + 2 * p - k) // s + 1
            parts.append(f"{kind}(k{k},s{s},p{p})")
        elif kind in ("nearest", "linear") and current * 2 <= 2 * size:
            mode = "nearest" if kind == "nearest" else _LINEAR_MODE[dims]
            layers.append(nn.Upsample(scale_factor=2, mode=mode))
            current *= 2
            parts.append(f"Upsample({mode})")
    model = randomize(nn.Sequential(*layers), draw(st.integers(0, 2**31 - 1)), bias_scale=1.0)
    return model, (in_channels,) + (size,) * dims, " ".join(parts)


def _output_pixel(draw, model, shape):
    with torch.no_grad():
        spatial = tuple(model(torch.zeros((1,) + shape)).shape[2:])
    return tuple(draw(st.integers(0, n - 1)) for n in spatial), spatial


@given(case=conv_maps(), data=st.data())
def test_gradient_and_relevance_are_zero_outside_the_trf(case, data):
    model, shape, description = case
    pixel, spatial = _output_pixel(data.draw, model, shape)
    out_channels = model(torch.zeros((1,) + shape)).shape[1]
    channel = data.draw(st.integers(0, out_channels - 1))
    flat = channel * math.prod(spatial) + int(np.ravel_multi_index(pixel, spatial))
    mask = receptive.receptive_field_mask(model, shape[1:], pixel)
    x = make_input((2,) + shape, seed=len(description))
    for method in ("gradient", "lrp.epsilon", "lrp.alpha1beta0"):
        relevance = xaibench.explain(model, x, method, target=flat, dtype=torch.float64).relevance
        outside = relevance.abs().sum(dim=(0, 1))[~mask]
        assert outside.numel() == 0 or float(outside.max()) == 0.0, (method, description, pixel)


@given(case=conv_maps(), data=st.data())
def test_empirical_trf_equals_the_analytic_box(case, data):
    """Exact equality of bounding boxes, border pixels included (padding, dilation, transposed
    gaps and linear weights of exactly 0 read nothing). Max pooling passes the gradient to one
    winner per window, so the empirical support is the union over 48 random inputs."""
    model, shape, description = case
    pixel, _ = _output_pixel(data.draw, model, shape)
    analytic = receptive.receptive_field_box(model, shape[1:], pixel)
    empirical, support = receptive.empirical_receptive_field(model, shape, pixel, samples=48)
    assert empirical == analytic, (description, pixel)
    assert not bool((support & ~receptive.box_mask(analytic, shape[1:])).any())


def test_the_model_is_left_untouched():
    model = _radar(2, filters=4).train()
    before = snapshot(model)
    receptive.empirical_receptive_field(model, (4, 16, 16), (8, 8), samples=2)
    receptive.receptive_field_layers(model)
    receptive.effective_receptive_field(model.eval(), torch.rand(2, 4, 16, 16), [(8, 8)])
    model.train()
    after = snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]


# --- the radar networks ------------------------------------------------------------------------
@pytest.mark.parametrize("n_blocks, recurrence, smallest, largest",
                         [(1, 8, 8, 8), (2, 22, 22, 22), (3, 50, 46, 54)])
def test_radar_trf(n_blocks, recurrence, smallest, largest):
    model = _radar(n_blocks)
    last = receptive.receptive_field_layers(model)[-1]
    assert last.size_recurrence == (recurrence, recurrence)
    assert last.size_smallest == (smallest, smallest) and last.size == (largest, largest)
    assert receptive.theoretical_receptive_field(model) == (largest, largest)
    # the empirical support equals the analytic box at every kind of position: interior (both
    # phases modulo 8), near and at the border
    for pixel in [(32, 32), (34, 35), (37, 39), (3, 60), (0, 0), (63, 63)]:
        analytic = receptive.receptive_field_box(model, (64, 64), pixel)
        empirical, _ = receptive.empirical_receptive_field(model, (4, 64, 64), pixel, samples=16)
        assert empirical == analytic, pixel
    widths = {receptive.box_width(receptive.receptive_field_box(model, (128, 128), (p, 64))) for p in range(64, 72)}
    assert widths == {smallest, largest}


def test_radar_trf_per_layer_and_the_48_variant():
    rows = receptive.receptive_field_layers(_radar(3, filters=4))
    decoder = [row.size_recurrence[0] for row in rows if row.kind == "Conv2d"][3:]
    assert decoder == [38, 46, 50, 50]  # the three decoder convolutions and the 1x1 output
    # the variant whose last 3x3 convolution runs at full resolution (after the last upsampling)
    layers, channels = [], 4
    for _ in range(3):
        layers += [nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = 4
    for _ in range(2):
        layers += [nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Upsample(scale_factor=2)]
    layers += [nn.Upsample(scale_factor=2), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1)]
    variant = nn.Sequential(*layers)
    last = receptive.receptive_field_layers(variant)[-1]
    assert last.size_recurrence == (48, 48) and last.size_smallest == (46, 46) and last.size == (54, 54)


# --- effective receptive fields ----------------------------------------------------------------
def test_erf_lies_inside_the_trf_and_batched_targets_equal_a_loop():
    model = _radar(2).eval()
    x = torch.rand((3, 4, 32, 32), generator=torch.Generator().manual_seed(0))
    pixels = [(16, 16), (2, 29), (17, 5)]
    for method in ("gradient", "lrp.epsilon", "lrp.alpha1beta0"):
        maps = receptive.effective_receptive_field(model, x, pixels, method, dtype=torch.float64, chunk_rows=4)
        loop = receptive.effective_receptive_field_loop(model, x, pixels, method, dtype=torch.float64)
        torch.testing.assert_close(maps, loop, rtol=1e-10, atol=1e-14)
        for erf_map, pixel in zip(maps, pixels):
            box = receptive.receptive_field_box(model, (32, 32), pixel)
            assert float(erf_map[~receptive.box_mask(box, (32, 32))].abs().max()) == 0.0, (method, pixel)
            assert float(erf_map.sum()) > 0
            assert 0 < receptive.mass_width(erf_map, pixel) <= receptive.box_width(box)
    changes = receptive.backward_optimization_changes(model, x[:2], pixels, steps=3, step_size=0.1)
    for change, pixel in zip(changes, pixels):
        trf = receptive.receptive_field_box(model, (32, 32), pixel)
        changed = receptive.changed_box(change, 0.0)
        assert all(t0 <= c0 and c1 <= t1 for (t0, t1), (c0, c1) in zip(trf, changed)), pixel


def _stack(n: int, k: int, dims: int, uniform: bool, seed: int = 0) -> nn.Module:
    """n convolutions of width k (no padding) with ReLU, 4 channels, then a 1x1 sum; float64."""
    generator = torch.Generator().manual_seed(seed)
    layers, channels = [], 1
    for _ in range(n):
        conv = _CONV[dims](channels, 4, k, bias=False)
        with torch.no_grad():
            if uniform:
                conv.weight.fill_(1.0 / (channels * k**dims))
            else:
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=generator))
        layers += [conv, nn.ReLU()]
        channels = 4
    head = _CONV[dims](channels, 1, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    return nn.Sequential(*layers, head).double()


def _centre_erf(model, n, k, dims, samples=4):
    size = n * (k - 1) + 9
    x = torch.rand((samples, 1) + (size,) * dims, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = size - n * (k - 1)
    pixel = (out // 2,) * dims
    erf_map = receptive.effective_receptive_field(model, x, [pixel])[0]
    centre = tuple(p + n * (k - 1) // 2 for p in pixel)
    return erf_map, centre


@given(n=st.integers(1, 8), k=st.integers(2, 5), dims=st.sampled_from([1, 2]))
def test_uniform_kernel_stacks_give_sigma_sqrt_n(n, k, dims):
    """n uniform k-kernels: the ERF is the n-fold convolution of a box, variance n (k^2-1)/12 per axis."""
    erf_map, _ = _centre_erf(_stack(n, k, dims, uniform=True), n, k, dims)
    assert receptive.gaussian_sigma(erf_map) == pytest.approx(math.sqrt(n * (k * k - 1) / 12), rel=1e-9)


def test_random_positive_stacks_give_sigma_sqrt_n_and_a_shrinking_erf_over_trf():
    """Random positive 3x3 kernels (4 channels): sigma within 10 % of sqrt(2 n / 3) (measured:
    within 1.5 % for n = 1..16), and the 95 % width over the TRF falls with depth."""
    ratios = []
    for n in (2, 4, 8, 16):
        model = _stack(n, 3, 2, uniform=False, seed=n)
        erf_map, centre = _centre_erf(model, n, 3, 2)
        assert receptive.gaussian_sigma(erf_map) == pytest.approx(math.sqrt(2 * n / 3), rel=0.10), n
        trf = receptive.theoretical_receptive_field(model)[0]
        assert trf == 2 * n + 1
        ratios.append(receptive.mass_width(erf_map, centre) / trf)
    assert all(later < earlier for earlier, later in zip(ratios, ratios[1:])), ratios


def test_sizes_of_known_maps():
    square = torch.zeros(21, 21)
    square[8:13, 8:13] = 1.0
    assert receptive.mass_width(square, (10, 10)) == 5
    assert receptive.mass_width(square, (10, 10), fraction=0.2) == 3   # 9 of 25 pixels
    assert receptive.mass_box(square, (10, 10)) == [(8, 12), (8, 12)]
    point = torch.zeros(9)
    point[2] = 3.0
    assert receptive.gaussian_sigma(point) == 0.0 and receptive.mass_width(point, (2,)) == 1
    two = torch.zeros(9)
    two[[1, 5]] = 1.0
    assert receptive.gaussian_sigma(two) == pytest.approx(2.0)
    assert receptive.changed_box(torch.tensor([0.0, 0.001, 0.5, 1.0, 0.0]), 0.01) == [(2, 3)]
    assert receptive.changed_box(torch.tensor([0.0, 0.001, 0.5, 1.0, 0.0]), 0.0) == [(1, 3)]
    assert receptive.mass_width(torch.zeros(5, 5), (2, 2)) == 0 and math.isnan(receptive.gaussian_sigma(torch.zeros(3)))


# --- the workflow's measurement on a tiny case ---------------------------------------------------
def test_measure_table_and_figure(tmp_path):
    from xaibench.studies.data.radar import make_radar
    from xaibench.studies.models.training import save_trained
    from xaibench.studies.receptive_fields import experiment

    data = make_radar(n_samples=3, size=32, footprint_radius=3, seed=0)
    with torch.random.fork_rng(devices=[]):  # as xaibench.studies.models.training seeds the initial weights
        torch.manual_seed(0)
        model = RadarEncoderDecoder(2, filters=4)
    save_trained(model, {"format": "xaibench.trained-model/1", "model": "radar2", "architecture": "radar",
                         "constructor": {"n_blocks": 2, "in_channels": 4, "filters": 4}, "seed": 0,
                         "skill": {"test": {"r2": 0.5}}}, tmp_path / "model")
    ds = experiment.measure(tmp_path / "model", data, samples=2, optimization_samples=1, steps=2,
                            edge_distance=2, trf_samples=4, log=None)
    table = experiment.table_rows(ds)
    assert list(table.columns) == experiment.TABLE_COLUMNS and len(table) == 4
    centre = table[(table["position"] == "centre") & table["trained"]].iloc[0]
    assert centre["trf_analytic"] == centre["trf_empirical"] == 22 and centre["true_footprint"] == 7
    assert centre["trf_covers_footprint"] and centre["model_test_r2"] == 0.5
    assert (table["erf_gradient"] <= table["trf_analytic"]).all() and (table["erf_lrp"] <= table["trf_analytic"]).all()
    # the initialized network is the trained one's start: here nothing was trained, so equal maps
    np.testing.assert_array_equal(ds["erf"].sel({"state": "initialized"}).values,
                                  ds["erf"].sel({"state": "trained"}).values)
    experiment.figure(ds, tmp_path / "erf.png")
    assert (tmp_path / "erf.png").stat().st_size > 10_000


# --- bad input ---------------------------------------------------------------------------------
class _Branching(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return self.a(x) + self.b(x)


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1)), "'1' of type Flatten"),
    (nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular")), "padding_mode 'circular'"),
    (nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2, mode="bicubic")), "mode 'bicubic'"),
    (_Branching(), "not a single chain"),
])
def test_unsupported_layers_are_named(model, message):
    with pytest.raises(UnsupportedLayerError, match=message):
        receptive.receptive_field_box(model, (8, 8), (2, 2))


def test_bad_input_is_named():
    model = _radar(1, filters=2)
    with pytest.raises(InputError, match=r"pixel \(40, 3\) is outside"):
        receptive.receptive_field_box(model, (32, 32), (40, 3))
    with pytest.raises(InputError, match="too small"):
        receptive.receptive_field_box(nn.Sequential(nn.Conv2d(1, 1, 5)), (3, 3), (0, 0))
    with pytest.raises(InputError, match="sequence of integer"):
        receptive.receptive_field_box(model, (32, 32), "centre")
    with pytest.raises(InputError, match="NaN"):
        receptive.mass_width(torch.tensor([1.0, float("nan")]), (0,))
    with pytest.raises(InputError, match="abs"):
        receptive.gaussian_sigma(torch.tensor([1.0, -1.0]))
    with pytest.raises(InputError, match="no convolution"):
        receptive.theoretical_receptive_field(nn.Sequential(nn.ReLU()))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        receptive.theoretical_receptive_field("model")
    with pytest.raises(InputError, match="input_shape"):
        receptive.empirical_receptive_field(model, (32, 32, 0), (1, 1))


def test_the_command_reports_bad_files(tmp_path, capsys):
    from xaibench.cli import main

    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["receptive-field", "table", str(bad), "--out", str(tmp_path / "out.csv")]) == 1
    assert "lacks the column" in capsys.readouterr().err
    assert main(["receptive-field", "measure", "--model", str(tmp_path / "none"), "--data", str(bad),
                 "--out", str(tmp_path / "m.nc"), "--table", str(tmp_path / "m.csv")]) == 1
    assert "not found" in capsys.readouterr().err
    assert not (tmp_path / "out.csv").exists()
