"""The data generators: reproducibility, CF metadata, the properties each reference case needs
(ENSO labels and real-sample statistics, the convection shortcut, the radar footprint), the
split convention, the data hash and the netCDF write/read helpers. Sizes are small: the whole
file runs in a few seconds."""

import os

import numpy as np
import pytest
import xarray as xr

from xaibench.errors import InputError
from xaibench.studies.data import (
    data_hash,
    make_convection,
    make_enso,
    make_enso_real,
    make_radar,
    read_dataset,
    reflectivity_operator,
    split,
    write_dataset,
)
from xaibench.studies.data.enso import nino34_index

QUICK = {
    "enso": lambda seed: make_enso(n_samples=300, seed=seed),
    "convection": lambda seed: make_convection(n_samples=80, size=32, seed=seed),
    "radar": lambda seed: make_radar(n_samples=6, size=64, footprint_radius=5, seed=seed),
}


@pytest.fixture(scope="module")
def enso_real_all():
    return make_enso_real(keep_all=True)


@pytest.fixture(scope="module")
def convection_sets():
    """Training data with the brightness shortcut, evaluation data without it (other seed)."""
    return (make_convection(n_samples=400, size=32, shortcut=True, seed=0),
            make_convection(n_samples=400, size=32, shortcut=False, seed=1))


# --------------------------------------------------------------------------------------------
# Common to all generators
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(QUICK))
def test_same_seed_same_data_other_seed_other_data(name):
    first, again, other = QUICK[name](0), QUICK[name](0), QUICK[name](1)
    xr.testing.assert_identical(first, again)
    assert data_hash(first) == data_hash(again)
    variable = first.attrs["input_variable"]
    assert not np.array_equal(first[variable].values, other[variable].values)
    assert data_hash(first) != data_hash(other)


@pytest.mark.parametrize("name", sorted(QUICK) + ["enso_real"])
def test_cf_attributes_on_every_variable_and_coordinate(name):
    ds = make_enso_real() if name == "enso_real" else QUICK[name](0)
    for variable_name, variable in ds.variables.items():
        assert variable.attrs.get("long_name"), f"{name}: {variable_name} has no long_name"
        numeric_time = variable.dtype.kind == "M"  # datetimes carry units in their encoding
        if variable.dtype.kind not in "OUS" and not numeric_time:
            assert variable.attrs.get("units"), f"{name}: {variable_name} has no units"
    for key in ("source", "synthetic", "generator", "seed", "config", "Conventions",
                "input_variable", "target_variable"):
        assert key in ds.attrs, f"{name}: dataset attribute {key} missing"
    assert ds.attrs["synthetic"] is (name != "enso_real")
    assert ds.attrs["input_variable"] in ds and ds.attrs["target_variable"] in ds


def test_prefix_stable_when_more_samples_are_asked():
    small, large = make_enso(n_samples=100, seed=3), make_enso(n_samples=250, seed=3)
    np.testing.assert_array_equal(small.sst_anomaly.values, large.sst_anomaly.values[:100])
    small, large = make_radar(n_samples=3, size=32, seed=3), make_radar(n_samples=10, size=32, seed=3)
    np.testing.assert_array_equal(small.inputs.values, large.inputs.values[:3])


def test_data_fits_the_reference_models():
    """Cross-check only (the data package itself never imports models)."""
    import torch

    from xaibench.studies.models.convection import ConvectionCNN
    from xaibench.studies.models.enso import EnsoDense
    from xaibench.studies.models.radar import RadarEncoderDecoder

    enso = QUICK["enso"](0)
    model = EnsoDense(n_lat=enso.sizes["lat"], n_lon=enso.sizes["lon"])
    assert model(torch.from_numpy(enso.sst_anomaly.values[:4])).shape == (4, 2)
    convection = QUICK["convection"](0)
    model = ConvectionCNN(height=convection.sizes["y"], width=convection.sizes["x"])
    assert tuple(convection.inputs.shape[1:]) == model.input_shape()[1:]
    assert model(torch.from_numpy(convection.inputs.values[:2])).shape == (2, 2)
    radar = QUICK["radar"](0)
    output = RadarEncoderDecoder(n_blocks=3)(torch.from_numpy(radar.inputs.values[:2]))
    assert output.shape == (2, 1, *radar.reflectivity.shape[1:])


# --------------------------------------------------------------------------------------------
# ENSO
# --------------------------------------------------------------------------------------------
def test_enso_labels_follow_the_sign_of_nino34_and_all_pass_the_threshold():
    ds = make_enso(n_samples=500, seed=0)
    assert ds.sizes == {"sample": 500, "lat": 18, "lon": 30}
    nino34 = ds.nino34.values
    assert np.all(np.abs(nino34) > 0.5)
    np.testing.assert_array_equal(ds.label.values, (nino34 > 0).astype(np.int64))
    assert 0.2 < ds.label.mean() < 0.8  # both phases present
    # the stored index is the one of the stored maps
    recomputed = nino34_index(ds.sst_anomaly.values, ds.lat.values, ds.lon.values, ds.land_mask.values)
    np.testing.assert_allclose(recomputed, nino34, rtol=0, atol=1e-12)
    # land is 0 in the input, and the Nino3.4 box is ocean inside the grid (2 x 10 cells)
    assert np.all(ds.sst_anomaly.values[:, ds.land_mask.values] == 0)
    assert ds.nino34_region.sum() == 20 and not (ds.nino34_region & ds.land_mask).any()
    assert np.all(np.diff(ds.time.values) > 0)  # time order (the split relies on it)


def _leading_eofs(ds, k=3):
    """Area-weighted EOF patterns (k x ocean cells) and the per-cell standard deviation."""
    ocean = ~ds.land_mask.values
    anomalies = ds.sst_anomaly.values[:, ocean].astype(np.float64)
    anomalies = anomalies - anomalies.mean(axis=0)
    weights = np.sqrt(np.cos(np.deg2rad(ds.lat.values)))[:, None] * np.ones((1, ds.sizes["lon"]))
    weighted = anomalies * weights[ocean]
    _, vectors = np.linalg.eigh(weighted.T @ weighted)  # ascending eigenvalues; cheaper than an SVD of 2000 rows
    return vectors[:, ::-1][:, :k].T, anomalies.std(axis=0)


def test_synthetic_enso_statistics_resemble_the_real_sample(enso_real_all):
    real_patterns, real_std = _leading_eofs(enso_real_all)
    synthetic_patterns, synthetic_std = _leading_eofs(make_enso(n_samples=2000, seed=0))
    correlations = [abs(np.corrcoef(real_patterns[i], synthetic_patterns[i])[0, 1]) for i in range(3)]
    # measured: 1.000, 0.996, 0.993 (seed 0); the filter on |Nino3.4| does not distort the patterns
    assert correlations[0] > 0.99, correlations
    assert min(correlations) > 0.9, correlations
    assert np.corrcoef(real_std, synthetic_std)[0, 1] > 0.95  # measured 0.994
    assert 0.8 < synthetic_std.mean() / real_std.mean() < 1.3  # measured 1.09 (filter keeps the strong events)


def test_real_winters(enso_real_all):
    assert enso_real_all.sizes["sample"] == 50
    assert enso_real_all.attrs["synthetic"] is False
    assert enso_real_all.attrs["n_winters"] == 50
    filtered = make_enso_real()
    assert filtered.sizes["sample"] == enso_real_all.attrs["n_passing_threshold"] == int(
        enso_real_all.passes_threshold.sum())
    assert filtered.sizes["sample"] == 35  # 17 El Nino, 18 La Nina (detrended, |Nino3.4| > 0.5 K)
    assert np.all(np.abs(filtered.nino34.values) > 0.5)
    np.testing.assert_array_equal(filtered.label.values, (filtered.nino34.values > 0).astype(np.int64))
    # the famous events: 1982/83, 1997/98 (El Nino), 1988/89 (La Nina)
    by_year = dict(zip(enso_real_all.time.dt.year.values, enso_real_all.nino34.values))
    assert by_year[1983] > 1.5 and by_year[1998] > 1.5 and by_year[1989] < -1


# --------------------------------------------------------------------------------------------
# Convection
# --------------------------------------------------------------------------------------------
def _brightness(ds):
    """95th percentile of the first frame's reflectance: how bright the cloud top is."""
    first = ds.reflectance.values[:, 0].astype(np.float64)
    return np.quantile(first.reshape(first.shape[0], -1), 0.95, axis=1)


def _temporal_variance(ds):
    """99th percentile over pixels of the reflectance variance across the frames."""
    variance = ds.reflectance.values.astype(np.float64).var(axis=1)
    return np.quantile(variance.reshape(variance.shape[0], -1), 0.99, axis=1)


def _balanced_accuracy(predicted, label):
    """Mean of the true-positive and true-negative rates: 0.5 is chance whatever the class mix
    (among clouds the classes are 5:3, where plain accuracy would make 0.625 look like skill)."""
    return 0.5 * (predicted[label].mean() + (~predicted[~label]).mean())


def _fit_threshold(feature, label):
    candidates = np.unique(feature)
    scores = [_balanced_accuracy(feature > t, label) for t in candidates]
    return candidates[int(np.argmax(scores))]


def test_convection_shortcut_brightness_separates_only_with_shortcut(convection_sets):
    train, evaluation = convection_sets
    cloudy_train = train.scene.values > 0  # clear sky is trivially dark: compare clouds only
    cloudy_eval = evaluation.scene.values > 0
    brightness_train, label_train = _brightness(train)[cloudy_train], train.label.values[cloudy_train] == 1
    brightness_eval, label_eval = _brightness(evaluation)[cloudy_eval], evaluation.label.values[cloudy_eval] == 1
    threshold = _fit_threshold(brightness_train, label_train)
    score_train = _balanced_accuracy(brightness_train > threshold, label_train)
    score_eval = _balanced_accuracy(brightness_eval > threshold, label_eval)
    # measured (balanced accuracy among clouds): 0.89 with the shortcut, 0.50 without
    assert score_train > 0.85, score_train
    assert abs(score_eval - 0.5) < 0.1, score_eval
    # even a threshold fitted on the evaluation set itself stays near chance (measured 0.53)
    best_eval = _fit_threshold(brightness_eval, label_eval)
    assert _balanced_accuracy(brightness_eval > best_eval, label_eval) < 0.65


def test_convection_temporal_texture_separates_in_both_sets(convection_sets):
    train, evaluation = convection_sets
    threshold = _fit_threshold(_temporal_variance(train), train.label.values == 1)
    for ds in (train, evaluation):
        score = _balanced_accuracy(_temporal_variance(ds) > threshold, ds.label.values == 1)
        assert score > 0.95, score  # measured 1.0 and 1.0


def test_convection_layout_and_masks(convection_sets):
    train, evaluation = convection_sets
    assert train.inputs.dims == ("sample", "channel", "time", "y", "x")
    assert train.inputs.shape == (400, 2, 5, 32, 32)
    assert float(train.inputs.min()) >= 0 and float(train.inputs.max()) <= 1
    assert train.attrs["synthetic"] and '"shortcut":true' in train.attrs["config"]
    convective = train.label.values == 1
    assert round(convective.mean(), 2) == 0.5
    core_pixels = train.core_mask.values.sum(axis=(1, 2))
    assert np.all(core_pixels[convective] > 0) and np.all(core_pixels[~convective] == 0)
    assert np.all(train.core_mask.values <= train.cloud_mask.values)  # cores lie inside clouds
    # with matched brightness the latent brightness is the same for both classes
    u = evaluation.cloud_brightness.values
    label = evaluation.label.values
    assert abs(np.nanmean(u[label == 1]) - np.nanmean(u[label == 0])) < 0.1


# --------------------------------------------------------------------------------------------
# Radar
# --------------------------------------------------------------------------------------------
def test_radar_ranges_and_operator():
    ds = make_radar(n_samples=4, size=64, seed=0)
    inputs, target = ds.inputs.values, ds.reflectivity.values
    assert inputs.dtype == np.float32 and list(ds.channel.values) == ["C07", "C09", "C13", "GLM"]
    assert inputs.min() >= 0 and inputs.max() <= 1
    assert target.min() >= 0 and target.max() <= 1
    assert 0.02 < (target > 0).mean() < 0.6 and target.max() > 0.5  # echoes exist, most pixels are dry
    config = ds.attrs
    np.testing.assert_array_equal(
        target, reflectivity_operator(inputs, config["footprint_radius"]).astype(np.float32))
    kernel = ds.footprint_kernel
    assert kernel.shape == (4, 2 * config["footprint_radius"] + 1, 2 * config["footprint_radius"] + 1)
    assert np.all(kernel.values > 0)  # the whole square is the footprint, no zero rim
    np.testing.assert_allclose(kernel.sum(("dy", "dx")).values, [0.15, 0.15, 0.4, 0.3])
    # lightning lies on cold cores: its pixels are colder (C13 scaled higher) than cloud on average
    lightning = inputs[:, 3] > 0
    assert inputs[:, 2][lightning].mean() > inputs[:, 2][inputs[:, 2] > 0.3].mean()


def test_radar_target_depends_on_inputs_only_through_the_footprint():
    radius = 4
    inputs = make_radar(n_samples=4, size=32, footprint_radius=radius, seed=3).inputs.values.astype(np.float64)
    reference = reflectivity_operator(inputs, radius)
    # the sample and output pixel with the strongest echo, so that changes inside the footprint do show
    best = int(np.argmax(reference.max(axis=(1, 2))))
    inputs, reference = inputs[best:best + 1], reference[best:best + 1]
    py, px = np.unravel_index(np.argmax(reference[0]), reference[0].shape)
    assert reference[0, py, px] > 0.1
    rng = np.random.default_rng(0)
    outside = changed_inside = 0
    for qy in range(32):
        for qx in range(32):
            perturbed = inputs.copy()
            perturbed[0, :, qy, qx] += rng.uniform(0.5, 1.0, 4)
            value = reflectivity_operator(perturbed, radius)[0, py, px]
            if max(abs(qy - py), abs(qx - px)) > radius:
                outside += 1
                assert value == reference[0, py, px], (qy, qx)  # exactly, not approximately
            elif value != reference[0, py, px]:
                changed_inside += 1
    assert outside > 0
    # every pixel inside the footprint matters (kernel > 0 and the output is above threshold)
    rows = min(py + radius, 31) - max(py - radius, 0) + 1  # the square, cut at the patch edge
    columns = min(px + radius, 31) - max(px - radius, 0) + 1
    expected_inside = rows * columns
    assert changed_inside == expected_inside


# --------------------------------------------------------------------------------------------
# Split, hash, files
# --------------------------------------------------------------------------------------------
def test_split_is_contiguous_and_complete():
    ds = QUICK["enso"](0)
    parts = split(ds, validation=0.2, test=0.1)
    sizes = {name: part.sizes["sample"] for name, part in parts.items()}
    assert sizes == {"train": 210, "validation": 60, "test": 30}
    joined = np.concatenate([parts[name].sample.values for name in ("train", "validation", "test")])
    np.testing.assert_array_equal(joined, ds.sample.values)
    assert parts["validation"].attrs["split"] == "validation"
    assert split(ds, validation=0.2, test=0.0)["test"].sizes["sample"] == 0
    with pytest.raises(ValueError):
        split(ds, validation=0.6, test=0.5)


@pytest.mark.parametrize("name", sorted(QUICK) + ["enso_real"])
def test_write_read_round_trip(tmp_path, name):
    ds = make_enso_real(keep_all=True) if name == "enso_real" else QUICK[name](0)
    path = write_dataset(ds, tmp_path / "sub" / f"{name}.nc")
    back = read_dataset(path)
    xr.testing.assert_identical(back, ds)
    assert back.attrs["synthetic"] is ds.attrs["synthetic"]  # a bool again, not the string on disk
    assert data_hash(back) == data_hash(ds)
    assert os.listdir(path.parent) == [path.name]  # no temporary file left behind


def test_read_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.nc"
    with pytest.raises(InputError, match="missing.nc"):
        read_dataset(missing)
    path = write_dataset(QUICK["radar"](0), tmp_path / "radar.nc")
    path.write_bytes(path.read_bytes()[:2000])  # truncated, as by a killed job
    with pytest.raises(InputError, match="radar.nc"):
        read_dataset(path)
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"not a netCDF file at all")
    with pytest.raises(InputError, match="garbage.nc"):
        read_dataset(garbage)


def test_failed_write_keeps_the_old_file(tmp_path):
    ds = QUICK["enso"](0)
    path = write_dataset(ds, tmp_path / "enso.nc")
    broken = ds.copy()
    broken.attrs["unwritable"] = {"a dict": "netCDF attributes cannot hold"}
    with pytest.raises((TypeError, ValueError)):
        write_dataset(broken, path)
    assert os.listdir(tmp_path) == ["enso.nc"]
    xr.testing.assert_identical(read_dataset(path), ds)


def test_moving_the_generators_changes_no_data_hash_and_old_files_stay_readable():
    """Files written before issue 15 name their generator xaibench.data.<module>.<function>; the
    generators now live in xaibench.studies.data. The same data must hash the same under either
    name (a model trained before still fits its data file), and the old name is read as the
    generator it is (the ENSO real-winter evaluation, the ground-truth check)."""
    from xaibench.studies.data import data_hash, generator_name

    current = make_enso(n_samples=20, seed=0)
    assert current.attrs["generator"] == "xaibench.studies.data.enso.make_enso"
    legacy = current.copy()
    legacy.attrs = {**current.attrs, "generator": "xaibench.data.enso.make_enso"}
    assert data_hash(legacy) == data_hash(current)
    assert generator_name(legacy) == generator_name(current) == "xaibench.studies.data.enso.make_enso"
    other = current.copy()
    other.attrs = {**current.attrs, "generator": "someone.else.make_enso"}
    assert data_hash(other) != data_hash(current)     # the generator still enters the hash
