"""The census zoo (xaibench.studies.census.zoo): modern architectures on every backend.

These tests run the zoo on its two tiny architectures (and one added for the test) on native and
zennit, so they need no TF environment and take seconds: the documented columns, a verdict per
row, zennit's gradient fallback named in the note and the verdict, and a model the native engine
cannot explain giving rows instead of a crash.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

import xaibench
from xaibench.studies import sweep
from xaibench.studies.census import agreement, zoo
from xaibench.studies.networks import DiffusionUNet, TwoBranchNet

TINY = zoo.ZooSettings(("two_branch", "diffusion_unet"), integrated_gradients_steps=4)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    return out, zoo.run_zoo(out, settings=TINY, backends=("native", "zennit"), log=None)


def test_zoo_writes_the_csv_and_markdown_with_the_documented_columns(tiny_zoo):
    out, table = tiny_zoo
    written = pd.read_csv(out / "zoo.csv")
    assert list(written.columns) == zoo.COLUMNS
    assert agreement.COLUMNS == zoo.COLUMNS[:len(agreement.COLUMNS)]   # the metrics of agreement.csv
    assert set(written["model"]) == set(TINY.architectures)
    assert set(written["backend"]) == {"native", "zennit"}
    assert set(written["verdict"]) <= set(zoo.VERDICTS)
    # every method on native, and on zennit every method it has (no integrated gradients)
    for name in TINY.architectures:
        part = written[written["model"] == name]
        assert set(part[part["backend"] == "native"]["method"]) == set(zoo.METHODS)
        assert set(part[part["backend"] == "zennit"]["method"]) == set(zoo.METHODS) - {"integrated_gradients"}
    assert (written["n_samples"] == zoo.N_SAMPLES).all() and (written["dtype"] == "float64").all()
    text = (out / "zoo.md").read_text()
    assert "## Where the libraries agree with native and where not" in text and "## All rows" in text
    assert "| two_branch" in text and "| diffusion_unet" in text


def test_zoo_two_branch_net_agrees_with_zennit(tiny_zoo):
    _, table = tiny_zoo
    rows = table[(table["model"] == "two_branch") & (table["backend"] == "zennit")]
    assert (rows["verdict"] == "agrees").all(), rows[["method", "verdict", "status", "note"]]
    lrp = rows[rows["method"].str.startswith("lrp.")]
    assert lrp["conservation_residual_max"].notna().all()
    assert (lrp["max_relative_difference"] <= zoo.AGREEMENT).all()


def test_zoo_names_zennits_gradient_fallback_on_the_diffusion_unet(tiny_zoo):
    """GroupNorm has no zennit rule (SiLU is Pass), and the residual adds are functional: the
    note names them, and the row is not an unexplained disagreement, whether the native engine
    explains the model yet (differs: zennit gradient fallback) or not (no native reference)."""
    _, table = tiny_zoo
    rows = table[(table["model"] == "diffusion_unet") & (table["backend"] == "zennit")
                 & table["method"].str.startswith("lrp.")]
    assert (rows["status"] == "ok").all(), rows["status"].tolist()
    for note in rows["note"]:
        assert note.count(agreement.FALLBACK) == 1, note
        assert "encode.norm1 (GroupNorm)" in note and "encode: operator.add" in note, note
        assert "SiLU" not in note
    assert set(rows["verdict"]) <= {"differs: zennit gradient fallback", "no native reference"}
    assert rows["conservation_residual_max"].notna().all()   # measured even without a native reference
    gradient = table[(table["model"] == "diffusion_unet") & (table["backend"] == "zennit")
                     & (table["method"] == "gradient")]
    assert agreement.FALLBACK not in gradient["note"].iloc[0]


class _FunctionalResidual(nn.Module):
    """A residual net the native engine explains today; zennit has no rule for its `h + f(h)`."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 5)
        self.block = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5))
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        return self.head(h + self.block(h))


class _Unexplainable(nn.Module):
    """A module the native engine has no rule for (a custom leaf that sorts its input)."""

    def forward(self, x):
        return torch.sort(x, dim=1).values


def test_zoo_labels_a_fallback_difference_and_records_native_failures(monkeypatch):
    monkeypatch.setitem(zoo.ARCHITECTURES, "residual", zoo.Architecture(
        "residual", "functional residual", _FunctionalResidual, (6,)))
    monkeypatch.setitem(zoo.ARCHITECTURES, "unexplainable", zoo.Architecture(
        "unexplainable", "custom leaf", lambda: nn.Sequential(nn.Linear(6, 4), _Unexplainable(), nn.Linear(4, 2)),
        (6,)))
    table = zoo.run_zoo(None, settings=zoo.ZooSettings(("residual", "unexplainable"), 4),
                        backends=("native", "zennit"), methods=["lrp.epsilon", "gradient"], log=None)
    rows = table.set_index(["model", "method", "backend"])
    residual = rows.loc[("residual", "lrp.epsilon", "zennit")]
    assert residual["verdict"] == "differs: zennit gradient fallback"
    assert residual["max_relative_difference"] > 1e-3
    assert residual["note"] == f"{agreement.FALLBACK}: (model): operator.add"
    assert rows.loc[("residual", "gradient", "zennit"), "verdict"] == "agrees"
    # the native engine cannot explain the custom leaf: rows, not a crash; zennit still runs
    native = rows.loc[("unexplainable", "lrp.epsilon", "native")]
    assert native["status"].startswith(("skipped: UnsupportedLayerError", "error: ")), native["status"]
    assert native["verdict"] in ("skipped", "error")
    other = rows.loc[("unexplainable", "lrp.epsilon", "zennit")]
    assert other["status"] == "ok" and other["verdict"] == "no native reference"
    assert math.isnan(other["max_relative_difference"]) and not math.isnan(other["conservation_residual_max"])
    assert "1 (_Unexplainable)" in other["note"] and agreement.NO_NATIVE in other["note"]


def test_zoo_asks_every_backend_by_default_and_marks_heavy_architectures():
    triples = zoo.triples_for(list(sweep.backends()), zoo.METHODS)
    assert {backend for _, backend, _ in triples} == {
        b for b in sweep.backends() if any(m in xaibench.methods(b) for m in zoo.METHODS)}
    assert set(zoo.QUICK.architectures) < set(zoo.DEFAULT.architectures) == set(zoo.ARCHITECTURES)
    assert {"wide_resnet50_2", "resnext50_32x4d"} <= set(zoo.DEFAULT.architectures) - set(zoo.QUICK.architectures)
    with pytest.raises(ValueError, match="unknown zoo architecture"):
        zoo.run_zoo(None, settings=zoo.ZooSettings(("nonexistent",), 4), log=None)


def test_the_zoo_networks_are_plain_modules_with_the_blocks_they_promise():
    model = DiffusionUNet(channels=2, width=8, groups=4)
    kinds = {type(m) for m in model.modules()}
    assert {nn.GroupNorm, nn.SiLU, nn.Upsample, nn.Conv2d} <= kinds
    x = torch.randn(2, 2, 16, 16)
    assert model(x).shape == x.shape
    assert TwoBranchNet(channels=2, size=8)(torch.randn(2, 2, 8, 8)).shape == (2, 3)
    first, second = (zoo.build_architecture(zoo.ARCHITECTURES["diffusion_unet"], 1) for _ in range(2))
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b) and a.dtype == torch.float64


def test_cli_census_has_the_zoo_option():
    from xaibench import cli

    parser, _ = cli.build_parser()
    assert parser.parse_args(["census", "--zoo", "--quick"]).zoo is True
    assert parser.parse_args(["census"]).zoo is False
