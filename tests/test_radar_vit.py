"""radar_vit, the transformer reference case: the model's shape and unpatchify, the LRP ledger
closing through its attention in float64, its training setup, its receptive-field rows (TRF =
the whole image) and its place in the configurations. Small instances only: each test runs in
about a second."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

import xaibench
from xaibench.errors import InputError
from xaibench.studies.models import RadarViT
from xaibench.studies.models.setups import MODELS, default_config


def _tiny(seed: int = 0, dtype=torch.float64) -> RadarViT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RadarViT(height=16, width=16, patch_size=4, embed_width=8, depth=2, heads=2).to(dtype).eval()


def test_shape_and_unpatchify_put_each_token_on_its_own_patch():
    model = _tiny()
    x = torch.rand(3, 4, 16, 16, dtype=torch.float64)
    assert model(x).shape == (3, 1, 16, 16)
    # the decoder's output for token (r, c) lands on pixels [4r, 4r + 4) x [4c, 4c + 4)
    with torch.no_grad():
        model.decoder.weight.zero_()
        model.decoder.bias.copy_(torch.arange(16, dtype=torch.float64))
    out = model(x)[0, 0]
    assert out[5, 9] == 1 * 4 + 1 and out[0, 15] == 3 and out[15, 0] == 12


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="not a whole number of 5 x 5 patches"):
        RadarViT(height=16, width=16, patch_size=5)
    with pytest.raises(ValueError, match="width 10 is not a multiple of heads 4"):
        RadarViT(height=16, width=16, embed_width=10, heads=4)
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        RadarViT(depth=0)


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.alpha1beta0", "lrp.zplus"])
@pytest.mark.parametrize("attention", ["cp", "attnlrp"])
def test_the_ledger_closes_through_the_transformer_in_float64(method, attention):
    model = _tiny(seed=1)
    x = torch.rand(2, 4, 16, 16, dtype=torch.float64)
    e = xaibench.explain(model, x, method, target=torch.tensor([5 * 16 + 9, 0]), attention=attention)
    scale = float(e.output.abs().max())
    assert scale > 0 and float(e.conservation_error.max()) < 1e-10 * scale
    # the positional embedding is a constant: it takes a share, booked as absorbed
    assert float(sum(row.absorbed.abs().sum() for row in e.ledger.rows)) > 0


def test_the_training_setup_is_the_radar_one_on_radar_data():
    architecture, fixed = MODELS["radar_vit"]
    assert architecture == "radar_vit" and fixed["patch_size"] >= 1
    assert default_config("radar_vit")["optimizer"] == default_config("radar1")["optimizer"] == "adam"


def test_training_saves_and_reloads_and_refuses_other_data(tmp_path):
    from xaibench.studies.data.enso import make_enso
    from xaibench.studies.data.radar import make_radar
    from xaibench.studies.models.training import load_trained, train

    data = make_radar(n_samples=10, size=16, footprint_radius=2, seed=0)
    result = train("radar_vit", data, {"epochs": 1, "batch_size": 4}, out=tmp_path)
    model, metadata = load_trained(tmp_path)
    assert metadata["architecture"] == "radar_vit" and metadata["constructor"]["height"] == 16
    assert "rmsd_dbz" in metadata["skill"]["test"]
    x = torch.rand(2, 4, 16, 16)
    assert torch.equal(model(x), result.model(x))
    with pytest.raises(InputError, match="needs radar data"):
        train("radar_vit", make_enso(n_samples=20, seed=0), {"epochs": 1})


def test_receptive_field_rows_of_an_untrained_transformer(tmp_path):
    from xaibench.studies.data.radar import make_radar
    from xaibench.studies.models.training import save_trained
    from xaibench.studies.receptive_fields import experiment

    data = make_radar(n_samples=3, size=16, footprint_radius=2, seed=0)
    model = _tiny(seed=0, dtype=torch.float32)
    constructor = {k: v for k, v in model.metadata().items() if k != "name"}
    save_trained(model, {"format": "xaibench.trained-model/1", "model": "radar_vit", "architecture": "radar_vit",
                         "constructor": constructor, "seed": 0, "skill": {"test": {"r2": 0.25}}}, tmp_path / "model")
    ds = experiment.measure(tmp_path / "model", data, samples=2, optimization_samples=1, steps=2,
                            edge_distance=2, trf_samples=2, log=None)
    table = experiment.table_rows(ds)
    assert list(table.columns) == experiment.TABLE_COLUMNS and len(table) == 4
    assert (table["model"] == "radar_vit").all() and table["n_blocks"].isna().all()
    # global attention: the TRF is the whole image, and the gradient support confirms it
    assert (table["trf_analytic"] == 16).all() and (table["trf_empirical"] == 16).all()
    assert table["trf_recurrence"].isna().all() and table["trf_covers_footprint"].all()
    assert ((table["erf_gradient"] >= 1) & (table["erf_gradient"] <= 16)).all()
    assert all(math.isfinite(v) for v in table["erf_lrp_sigma"])
    trained = table[table["trained"] & (table["position"] == "centre")].iloc[0]
    assert trained["model_test_r2"] == 0.25 and trained["true_footprint"] == 5
    # nothing was trained here: the initialized maps are the trained ones
    assert (ds["erf"].sel({"state": "initialized"}).values == ds["erf"].sel({"state": "trained"}).values).all()
    experiment.figure(ds, tmp_path / "erf.png")
    assert (tmp_path / "erf.png").stat().st_size > 10_000


def test_the_receptive_field_study_refuses_other_architectures():
    from xaibench.studies.receptive_fields import experiment

    with pytest.raises(InputError, match="radar, radar_vit.*'enso'"):
        experiment.initial_model({"architecture": "enso", "constructor": {}})


@pytest.mark.parametrize("name", ["quick", "default"])
def test_both_configurations_train_radar_vit_on_the_radar_data(name):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "workflows" / "config" / f"{name}.yaml").read_text())
    training = config["cases"]["training"]
    assert training["radar_vit"]["data"] == training["radar1"]["data"] == "radar"
    schema = yaml.safe_load((root / "workflows" / "config" / "schema.yaml").read_text())
    assert "radar_vit" in schema["properties"]["cases"]["properties"]["training"]["properties"]


def test_zennit_on_the_transformer_is_labelled_a_gradient_fallback_in_the_metrics(tmp_path):
    """zennit has no rule for attention's matrix products and softmax: it gives them the plain
    gradient. The case's file and its metrics row say so (they said "ok" and nothing else)."""
    from xaibench.io import read_dataset, write_dataset
    from xaibench.studies.cases import pipeline as cases
    from xaibench.studies.data.radar import make_radar
    from xaibench.studies.models.training import train

    write_dataset(make_radar(n_samples=10, size=16, footprint_radius=2, seed=0), tmp_path / "data.nc")
    train("radar_vit", tmp_path / "data.nc", {"epochs": 1, "batch_size": 4}, out=tmp_path / "model")
    cases.explain_case("radar_vit", tmp_path / "model", tmp_path / "data.nc", tmp_path / "explanations",
                       methods=["lrp.epsilon"], backends=["native", "zennit"], n_samples=2)
    zennit_file = read_dataset(tmp_path / "explanations" / "lrp.epsilon__zennit.nc")
    native_file = read_dataset(tmp_path / "explanations" / "lrp.epsilon__native.nc")
    assert "matmul" in zennit_file.attrs["gradient_fallback"] and native_file.attrs["gradient_fallback"] == ""
    frame = cases.metrics_case("radar_vit", tmp_path / "explanations", tmp_path / "data.nc", tmp_path / "m.csv")
    notes = dict(zip(frame["backend"], frame["known_differences"].fillna("")))
    assert "zennit gradient fallback" in notes["zennit"] and "fallback" not in notes["native"]
