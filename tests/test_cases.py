"""The reference cases: explanation files (dims, coordinates, attributes, the same relevance as a
direct xaibench.explain call), the samples and regions each case chooses, skipped backends, and
the metrics CSV. Tiny data and models trained for an epoch or a few: about half a minute."""

import csv
import json

import numpy as np
import pytest
import torch
from conftest import train_small_radar1

import xaibench
from xaibench.errors import BackendUnavailableError, ExportError, InputError
from xaibench.studies import sweep
from xaibench.studies.cases import pipeline as cases
from xaibench.studies.cases import registry
from xaibench.studies.cases.case import INTERFACE, Case
from xaibench.studies.data import make_convection, make_enso, read_dataset, split, write_dataset
from xaibench.studies.models.training import load_trained, train


@pytest.fixture(scope="module")
def enso(tmp_path_factory):
    root = tmp_path_factory.mktemp("enso")
    write_dataset(make_enso(n_samples=300, seed=0), root / "data.nc")
    train("enso", root / "data.nc", {"epochs": 6, "lr": 0.01}, out=root / "model")   # learns: accuracy 1
    return root


@pytest.fixture(scope="module")
def enso_explained(enso):
    files = cases.explain_case("enso", enso / "model", enso / "data.nc", enso / "explanations",
                               methods=["lrp.epsilon", "lrp.zbox", "gradient", "deep_taylor"],
                               backends=["native", "zennit"], n_samples=4)
    return files


@pytest.fixture(scope="module")
def convection(tmp_path_factory):
    root = tmp_path_factory.mktemp("convection")
    write_dataset(make_convection(n_samples=40, size=16, seed=0), root / "data.nc")
    train("convection", root / "data.nc", {"epochs": 1, "batch_size": 8}, out=root / "model")
    cases.explain_case("convection", root / "model", root / "data.nc", root / "explanations",
                       methods=["lrp.epsilon", "lrp.zplus", "gradient"], backends=["native", "zennit"], n_samples=4)
    return root


@pytest.fixture(scope="module")
def radar(tmp_path_factory):
    root = train_small_radar1(tmp_path_factory.mktemp("radar"))
    cases.explain_case("radar1", root / "model", root / "data.nc", root / "explanations",
                       methods=["lrp.epsilon", "integrated_gradients"], backends=["native"], n_samples=3)
    return root


def _direct(root, ds, case):
    """xaibench.explain on the file's input, target and options."""
    model, _ = load_trained(root / "model")
    x = cases.model_input(cases.get_case(case), ds["input"].values)
    return xaibench.explain(model, x, ds.attrs["method"], target=torch.from_numpy(ds["target"].values),
                            backend=ds.attrs["backend"], **json.loads(ds.attrs["options"]))


# --- ENSO ----------------------------------------------------------------------------------------
def test_enso_files_have_the_inputs_dims_coords_and_attrs(enso, enso_explained):
    names = [path.name for path in enso_explained]
    assert names == ["lrp.epsilon__native.nc", "lrp.zbox__native.nc", "gradient__native.nc",
                     "lrp.epsilon__zennit.nc", "lrp.zbox__zennit.nc", "gradient__zennit.nc", "skipped.csv"]
    data = read_dataset(enso / "data.nc")
    ds = read_dataset(enso / "explanations" / "lrp.epsilon__native.nc")
    assert ds["relevance"].dims == ("sample", "lat", "lon") and ds["input"].dims == ("sample", "lat", "lon")
    for name in ("output", "target", "label", "prediction", "subset", "source_sample", "conservation_error"):
        assert ds[name].dims == ("sample",), name
    np.testing.assert_array_equal(ds["lat"].values, data["lat"].values)
    np.testing.assert_array_equal(ds["lon"].values, data["lon"].values)
    assert ds["lat"].attrs["units"] == "degrees_north"
    assert ds["relevance"].attrs["units"] == "1" and ds["output"].attrs["units"] == "1"
    assert ds["input"].attrs["units"] == "K"
    assert read_dataset(enso / "explanations" / "gradient__native.nc")["relevance"].attrs["units"] == "K-1"
    assert {"method": "lrp.epsilon", "backend": "native", "case": "enso", "model": "enso", "lrp": True,
            "known_differences": "", "dtype": "float32"}.items() <= ds.attrs.items()
    assert json.loads(ds.attrs["options"]) == {"epsilon": 0.1}
    assert set(json.loads(ds.attrs["subsets"])) == {"test", "real_winters"}


def test_enso_explains_correct_el_nino_samples_of_the_test_block_and_the_real_winters(enso, enso_explained):
    ds = read_dataset(enso / "explanations" / "lrp.epsilon__native.nc")
    assert (ds["label"].values == 1).all() and (ds["prediction"].values == 1).all() and (ds["target"] == 1).all()
    assert sorted(set(ds["subset"].values.tolist())) == ["real_winters", "test"]
    test_rows = ds["subset"].values == "test"
    assert test_rows.sum() == 4
    test_block = split(read_dataset(enso / "data.nc"))["test"]
    assert set(ds["source_sample"].values[test_rows]) <= set(test_block["sample"].values)
    np.testing.assert_array_equal(ds["input"].values[test_rows],
                                  test_block["sst_anomaly"].sel(sample=ds["source_sample"].values[test_rows]).values)
    np.testing.assert_array_equal(ds["region"].values, read_dataset(enso / "data.nc")["nino34_region"].values)


@pytest.mark.parametrize("name", ["lrp.epsilon__native", "lrp.zbox__native", "gradient__zennit", "lrp.zbox__zennit"])
def test_relevance_equals_a_direct_explain_call(enso, enso_explained, name):
    ds = read_dataset(enso / "explanations" / f"{name}.nc")
    direct = _direct(enso, ds, "enso")
    np.testing.assert_array_equal(ds["relevance"].values, direct.relevance.numpy().reshape(ds["relevance"].shape))
    np.testing.assert_array_equal(ds["output"].values, direct.output.numpy())


def test_zbox_bounds_hold_every_explained_map(enso, enso_explained):
    ds = read_dataset(enso / "explanations" / "lrp.zbox__native.nc")
    options = json.loads(ds.attrs["options"])
    assert options["low"] <= float(ds["input"].min()) and options["high"] >= float(ds["input"].max())


def test_enso_metrics_csv(enso, enso_explained):
    out = enso / "metrics.csv"
    frame = cases.metrics_case("enso", enso / "explanations", enso / "data.nc", out,
                               per_sample_csv=enso / "per_sample.csv")
    with open(out) as handle:
        assert next(csv.reader(handle)) == cases.METRICS_COLUMNS
    rows = {(r.method, r.backend): r for r in frame.itertuples()}
    assert set(rows) == {(m, b) for m in ("lrp.epsilon", "lrp.zbox", "gradient") for b in ("native", "zennit")}
    native, zennit = rows["lrp.epsilon", "native"], rows["lrp.epsilon", "zennit"]
    assert native.ledger_closure_max < 1e-5 and native.reference == "" and np.isnan(native.agreement_max)
    assert zennit.reference == "lrp.epsilon" and zennit.agreement_max < 1e-5 and np.isnan(zennit.ledger_closure_max)
    assert zennit.pattern_correlation_median > 0.999 and zennit.spearman_median > 0.99
    assert np.isnan(rows["gradient", "native"].conservation_residual_max)   # per unit of input: no residual
    assert 0 < native.region_mass_mean < 1 and (frame["status"] == "ok").all()
    assert frame["share_visible"].isna().all()
    per_sample = __import__("pandas").read_csv(enso / "per_sample.csv")
    assert list(per_sample.columns) == cases.PER_SAMPLE_COLUMNS and len(per_sample) == 6 * 8


def test_region_mass_of_relevance_in_the_nino34_box_is_one(enso, enso_explained, tmp_path):
    ds = read_dataset(enso / "explanations" / "lrp.epsilon__native.nc")
    ds["relevance"] = ds["relevance"].copy(data=np.where(ds["region"].values, np.abs(ds["relevance"].values) + 1, 0)
                                           .astype(np.float32))
    write_dataset(ds, tmp_path / "lrp.epsilon__native.nc")
    frame = cases.metrics_case("enso", tmp_path, None, tmp_path / "metrics.csv")
    assert frame.loc[0, "region_mass_mean"] == 1.0 and frame.loc[0, "region_mass_positive_mean"] == 1.0


def test_metrics_refuse_explanations_of_other_data(enso, enso_explained, tmp_path):
    write_dataset(make_enso(n_samples=50, seed=1), tmp_path / "other.nc")
    with pytest.raises(InputError, match="other data"):
        cases.metrics_case("enso", enso / "explanations", tmp_path / "other.nc", tmp_path / "metrics.csv")
    with pytest.raises(InputError, match="case"):
        cases.metrics_case("radar1", enso / "explanations", None, tmp_path / "metrics.csv")


def test_a_model_is_explained_only_with_its_training_data_and_case(enso, tmp_path):
    write_dataset(make_enso(n_samples=50, seed=1), tmp_path / "other.nc")
    with pytest.raises(InputError, match="trained on other data"):
        cases.explain_case("enso", enso / "model", tmp_path / "other.nc", tmp_path / "out", methods=["gradient"])
    with pytest.raises(InputError, match="not convection"):
        cases.explain_case("convection", enso / "model", enso / "data.nc", tmp_path / "out", methods=["gradient"])
    with pytest.raises(InputError, match="unknown method"):
        cases.explain_case("enso", enso / "model", enso / "data.nc", tmp_path / "out", methods=["lrp.nonsense"])


# --- skipped backends --------------------------------------------------------------------------
def test_unavailable_and_failing_backends_are_recorded_not_raised(enso, tmp_path, monkeypatch):
    from xaibench.backends import innvestigate_backend, zennit_backend

    def cannot_mirror(model, x, method, *args, **kwargs):
        if method == "gradient":
            raise RuntimeError("something else broke")
        raise ExportError("zennit", "1", "Linear", "a test stand-in")

    def not_installed(*args, **kwargs):
        raise BackendUnavailableError("innvestigate", "no TF environment (a test stand-in)")

    monkeypatch.setattr(zennit_backend, "explain", cannot_mirror)
    monkeypatch.setattr(innvestigate_backend, "explain", not_installed)
    out = tmp_path / "explanations"
    files = cases.explain_case("enso", enso / "model", enso / "data.nc", out,
                               methods=["lrp.epsilon", "gradient", "deep_taylor"], n_samples=2,
                               backends=["native", "zennit", "innvestigate"])
    assert [p.name for p in files] == ["lrp.epsilon__native.nc", "gradient__native.nc", "skipped.csv"]
    with open(out / "skipped.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["method"], r["backend"], r["status"]) for r in rows] == [
        ("lrp.epsilon", "zennit", "skipped"), ("gradient", "zennit", "error"),
        ("lrp.epsilon", "innvestigate", "skipped"), ("gradient", "innvestigate", "skipped"),
        ("deep_taylor", "innvestigate", "skipped")]
    assert "ExportError" in rows[0]["reason"] and "something else broke" in rows[1]["reason"]
    assert all("BackendUnavailableError" in r["reason"] for r in rows[2:])
    frame = cases.metrics_case("enso", out, enso / "data.nc", tmp_path / "metrics.csv")
    statuses = dict(zip(zip(frame["method"], frame["backend"]), frame["status"]))
    assert statuses["lrp.epsilon", "native"] == "ok"
    assert statuses["lrp.epsilon", "zennit"].startswith("skipped: ExportError")
    assert statuses["gradient", "zennit"].startswith("error: RuntimeError")
    assert statuses["deep_taylor", "innvestigate"].startswith("skipped: BackendUnavailableError")


def test_pairs_are_the_backends_that_have_each_method():
    # (the order no longer matters: innvestigate's wrappers get a Keras twin of their own)
    pairs = sweep.pairs(["smoothgrad", "integrated_gradients", "lrp.zbox", "deep_taylor"], ["native", "innvestigate"])
    innvestigate = [m for m, b in pairs if b == "innvestigate"]
    assert "deep_taylor" in innvestigate
    assert ("deep_taylor", "native") not in pairs


# --- the registry ---------------------------------------------------------------------------------
def test_the_registry_holds_the_six_reference_cases_each_with_the_whole_interface():
    assert list(registry.CASES) == ["enso", "convection", "radar1", "radar2", "radar3", "radar_vit"]
    assert cases.CASE_NAMES == tuple(registry.CASES)
    modules = {name: __import__(f"xaibench.studies.cases.{name}", fromlist=["CASES"]) for name in registry.MODULES}
    assert {case.name for module in modules.values() for case in module.CASES} == set(registry.CASES)
    for module in modules.values():
        for case in module.CASES:
            assert isinstance(case, Case) and registry.get_case(case.name) is case
            assert not getattr(type(case), "__abstractmethods__", None), type(case)
            for name in INTERFACE:
                assert hasattr(case, name), (case.name, name)
            assert case.model == case.name and case.figure_files
    assert [registry.get_case(f"radar{n}").output_long_name.split()[0] for n in (1, 2, 3, "_vit")] == \
        ["radar1", "radar2", "radar3", "radar_vit"]
    assert registry.get_case("radar1").zbox_bounds(None, None) == (0.0, 1.0)
    with pytest.raises(InputError, match="unknown case 'radar7'"):
        registry.get_case("radar7")
    with pytest.raises(TypeError):   # an abstract case (no samples, no figure) cannot be made
        Case("x", "x", "v", (), (), (), None, "", "1", "")


def test_a_new_case_is_one_registered_definition(enso, monkeypatch, tmp_path):
    """A case explaining the first test samples of the ENSO network whatever their class: only the
    case definition is new, explain_case and metrics_case run it unchanged."""
    from dataclasses import dataclass

    from xaibench.studies.cases.enso import EnsoCase

    @dataclass(frozen=True)
    class EveryWinter(EnsoCase):
        def default_evaluation(self, data, n_samples):
            return {}

        def pick(self, model, subset, n_samples):
            return np.arange(min(n_samples, subset.sizes["sample"]))

    monkeypatch.setattr(registry, "CASES", dict(registry.CASES))
    new = registry.register(EveryWinter(**{**registry.get_case("enso").__dict__, "name": "enso_every_winter",
                                          "model": "enso"}))
    with pytest.raises(InputError, match="taken"):
        registry.register(new)
    assert registry.get_case("enso_every_winter") is new
    files = cases.explain_case("enso_every_winter", enso / "model", enso / "data.nc", tmp_path / "out",
                               methods=["gradient"], backends=["native"], n_samples=3)
    assert [p.name for p in files] == ["gradient__native.nc", "skipped.csv"]
    ds = read_dataset(files[0])
    assert ds.attrs["case"] == "enso_every_winter" and ds.attrs["model"] == "enso"
    assert ds["subset"].values.tolist() == ["test"] * 3
    test_block = split(read_dataset(enso / "data.nc"))["test"]
    np.testing.assert_array_equal(ds["source_sample"].values, test_block["sample"].values[:3])
    frame = cases.metrics_case("enso_every_winter", tmp_path / "out", enso / "data.nc", tmp_path / "metrics.csv")
    assert frame["case"].tolist() == ["enso_every_winter"] and (frame["status"] == "ok").all()


def test_figure_command_takes_files_and_drawing_from_the_case(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from xaibench.studies.cases import commands

    drawn = []
    case = registry.get_case("radar2")
    monkeypatch.setattr(type(case), "figure", lambda self, files, out, subset=None: drawn.append(
        (self.name, [f.name for f in files], subset)))
    (tmp_path / "lrp.alpha1beta0__native.nc").write_bytes(b"")
    args = SimpleNamespace(case="radar2", explanations=tmp_path, out=tmp_path / "f.png", subset=None, methods=None)
    assert commands._figure(args) == 0
    assert drawn == [("radar2", ["lrp.alpha1beta0__native.nc"], None)]
    with pytest.raises(ValueError, match="unknown case"):
        commands._figure(SimpleNamespace(**{**vars(args), "case": "radar7"}))


def test_method_options_go_through_the_sweep():
    smoothgrad = cases.method_options("enso", "smoothgrad", "native")
    assert smoothgrad == {"noise_level": 0.1, "samples": 32, "seed": 0}
    assert cases.method_options("enso", "smoothgrad", "innvestigate") == \
        sweep.options_for("smoothgrad", "innvestigate", smoothgrad) == {"samples": 32}
    assert cases.method_options("radar1", "lrp.zbox", "zennit", (0.0, 1.0), {"lrp.zbox": {"epsilon": 0.5}}) == \
        {"epsilon": 0.5, "low": 0.0, "high": 1.0}


# --- convection ----------------------------------------------------------------------------------
def test_convection_files_and_samples(convection):
    data = read_dataset(convection / "data.nc")
    ds = read_dataset(convection / "explanations" / "lrp.epsilon__native.nc")
    dims = ("sample", "channel", "time", "y", "x")
    assert ds["relevance"].dims == dims and ds["input"].dims == dims and ds["region"].dims == ("sample", "y", "x")
    assert ds["channel"].values.tolist() == ["reflectance", "brightness_temperature"]
    for coord in ("time", "y", "x"):
        np.testing.assert_array_equal(ds[coord].values, data[coord].values)
    assert ds["time"].attrs["units"] == "min"
    assert sorted(set(ds["subset"].values.tolist())) == ["no_shortcut", "test"]
    assert "shortcut=False" in json.loads(ds.attrs["subsets"])["no_shortcut"]
    for subset in ("test", "no_shortcut"):
        rows = ds["subset"].values == subset
        assert sorted(ds["label"].values[rows].tolist()) == [0, 0, 1, 1]
        assert (ds["scene"].values[rows][ds["label"].values[rows] == 0] == 1).all()   # clouds, not clear sky
    rows = ds["subset"].values == "test"
    source = data.sel(sample=ds["source_sample"].values[rows])
    np.testing.assert_array_equal(ds["region"].values[rows], source["core_mask"].values)
    np.testing.assert_array_equal(ds["input"].values[rows], source["inputs"].values)
    direct = _direct(convection, ds, "convection")
    np.testing.assert_array_equal(ds["relevance"].values, direct.relevance.numpy())


def test_convection_metrics_have_channel_and_time_shares(convection):
    frame = cases.metrics_case("convection", convection / "explanations", convection / "data.nc",
                               convection / "metrics.csv")
    for column in ("share_visible", "share_ir", "share_static", "share_temporal"):
        assert frame[column].between(0, 1).all(), column
    np.testing.assert_allclose(frame["share_visible"] + frame["share_ir"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(frame["share_static"] + frame["share_temporal"], 1.0, rtol=1e-6)
    zennit = frame[(frame["backend"] == "zennit") & (frame["method"] == "lrp.epsilon")].iloc[0]
    assert zennit.agreement_max < 1e-5 and np.isnan(zennit.pattern_correlation_median)


# --- radar ---------------------------------------------------------------------------------------
def test_radar_explains_two_pixels_per_sample_with_their_footprint(radar):
    data = read_dataset(radar / "data.nc")
    ds = read_dataset(radar / "explanations" / "lrp.epsilon__native.nc")
    assert ds["relevance"].dims == ("sample", "channel", "y", "x")
    assert ds["channel"].values.tolist() == ["C07", "C09", "C13", "GLM"]
    width = data.sizes["x"]
    np.testing.assert_array_equal(ds["target"].values, ds["target_y"].values * width + ds["target_x"].values)
    assert ds["target_pixel"].values.tolist() == ["max_reflectivity", "centre"] * 3
    assert (ds["target_y"].values[1::2] == 8).all() and (ds["target_x"].values[1::2] == 8).all()
    radius = data.attrs["footprint_radius"]
    for row in range(ds.sizes["sample"]):
        ty, tx = int(ds["target_y"][row]), int(ds["target_x"][row])
        expected = np.zeros((16, 16), dtype=bool)
        expected[max(ty - radius, 0):ty + radius + 1, max(tx - radius, 0):tx + radius + 1] = True
        np.testing.assert_array_equal(ds["region"].values[row], expected)
        reflectivity = data["reflectivity"].sel(sample=int(ds["source_sample"][row])).values
        if ds["target_pixel"].values[row] == "max_reflectivity":
            assert reflectivity[ty, tx] == reflectivity[radius:-radius, radius:-radius].max()
    direct = _direct(radar, ds, "radar1")
    np.testing.assert_array_equal(ds["relevance"].values, direct.relevance.numpy())
    model, _ = load_trained(radar / "model")
    with torch.no_grad():
        output = model(torch.from_numpy(ds["input"].values)).reshape(ds.sizes["sample"], -1)
    np.testing.assert_allclose(ds["output"].values, output[np.arange(6), ds["target"].values].numpy(), rtol=1e-5)
    ig = read_dataset(radar / "explanations" / "integrated_gradients__native.nc")
    assert ig.attrs["lrp"] is False and "completeness" in ig["conservation_error"].attrs["long_name"]
    frame = cases.metrics_case("radar1", radar / "explanations", radar / "data.nc", radar / "metrics.csv")
    ledger = dict(zip(frame["method"], frame["ledger_closure_max"]))
    assert frame["region_mass_mean"].between(0, 1).all()
    assert np.isnan(ledger["integrated_gradients"]) and ledger["lrp.epsilon"] < 1e-5


# --- innvestigate --------------------------------------------------------------------------------
@pytest.mark.tf
def test_enso_on_innvestigate_with_deep_taylor(enso, tmp_path, innvestigate_worker):
    out = tmp_path / "explanations"
    cases.explain_case("enso", enso / "model", enso / "data.nc", out,
                       methods=["lrp.epsilon", "lrp.zplus", "deep_taylor"], backends=["native", "innvestigate"],
                       n_samples=3)
    ds = read_dataset(out / "deep_taylor__innvestigate.nc")
    assert ds["relevance"].dims == ("sample", "lat", "lon") and ds.attrs["backend"] == "innvestigate"
    frame = cases.metrics_case("enso", out, enso / "data.nc", tmp_path / "metrics.csv")
    rows = {(r.method, r.backend): r for r in frame.itertuples()}
    assert rows["deep_taylor", "innvestigate"].reference == "lrp.zplus"
    assert rows["deep_taylor", "innvestigate"].agreement_max < 0.1
    assert rows["lrp.epsilon", "innvestigate"].agreement_max < 1e-5
    assert "issue 116" in rows["lrp.zplus", "innvestigate"].known_differences
    assert (frame["status"] == "ok").all()
