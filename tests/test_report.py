"""The report's figures and tables (xaibench.studies.report), from tiny synthetic explanation files in the
format xaibench.studies.cases writes (one file per method x backend; see xaibench.studies.report.explanations),
and the offline Natural Earth set-up of the maps."""

from __future__ import annotations

import socket
import urllib.request
import warnings

import cartopy  # noqa: E402  pinned in the main environment: missing is a failure, not a skip
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xaibench.errors import InputError
from xaibench.io import write_dataset
from xaibench.studies.report import (
    convection_relevance,
    enso_composite_maps,
    footprint_share,
    maps,
    normalised_composite,
    radar_relevance,
    read_explanations,
    write_table,
)
from xaibench.studies.report.figures import square_mask

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The HadISST sample's grid: Pacific 22.5S-62.5N, 117.5E-97.5W (117.5..262.5 E), 5 degrees.
ENSO_LAT = np.arange(-22.5, 62.6, 5.0)
ENSO_LON = np.arange(117.5, 262.6, 5.0)


def _per_sample(rng, n, labels=True):
    variables = {
        "output": (("sample",), rng.normal(size=n).astype(np.float32), {"long_name": "explained output"}),
        "target": (("sample",), np.ones(n, dtype=np.int64), {"long_name": "explained output index"}),
    }
    if labels:
        variables["label"] = (("sample",), (np.arange(n) % 2).astype(np.int64), {"long_name": "true class"})
    return variables


def enso_explanation(method="lrp.z", backend="native", n=6, seed=0, labels=True) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    shape = (n, ENSO_LAT.size, ENSO_LON.size)
    sst = rng.normal(size=shape).astype(np.float32)
    relevance = (sst * rng.uniform(0.5, 2.0, size=(n, 1, 1))).astype(np.float32)
    return xr.Dataset(
        {"relevance": (("sample", "lat", "lon"), relevance, {"units": "1"}),
         "input": (("sample", "lat", "lon"), sst, {"units": "K"}),
         **_per_sample(rng, n, labels)},
        coords={"sample": np.arange(n),
                "lat": ("lat", ENSO_LAT, {"units": "degrees_north"}),
                "lon": ("lon", ENSO_LON, {"units": "degrees_east"})},
        attrs={"method": method, "backend": backend, "case": "enso"},
    )


def convection_explanation(method="lrp.epsilon", backend="native", n=4, size=8, frames=5, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    dims = ("sample", "channel", "time", "y", "x")
    inputs = rng.uniform(size=(n, 2, frames, size, size)).astype(np.float32)
    relevance = rng.normal(size=inputs.shape).astype(np.float32)
    return xr.Dataset(
        {"relevance": (dims, relevance), "input": (dims, inputs), **_per_sample(rng, n)},
        coords={"sample": np.arange(n), "channel": ["reflectance", "brightness_temperature"],
                "time": ("time", np.arange(frames) * 2.0, {"units": "min"}),
                "y": (np.arange(size) + 0.5) * 2.0, "x": (np.arange(size) + 0.5) * 2.0},
        attrs={"method": method, "backend": backend, "case": "convection"},
    )


def radar_explanation(method="lrp.alpha1beta0", backend="zennit", n=3, size=16, radius=2, seed=0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    dims = ("sample", "channel", "y", "x")
    inputs = rng.uniform(size=(n, 4, size, size)).astype(np.float32)
    target_y = rng.integers(radius, size - radius, n)
    target_x = rng.integers(radius, size - radius, n)
    relevance = np.zeros_like(inputs)
    for s in range(n):  # relevance inside the footprint only
        rows = slice(target_y[s] - radius, target_y[s] + radius + 1)
        columns = slice(target_x[s] - radius, target_x[s] + radius + 1)
        relevance[s, :, rows, columns] = 1
    per_sample = _per_sample(rng, n, labels=False)
    per_sample["target"] = (("sample",), target_y * size + target_x)
    return xr.Dataset(
        {"relevance": (dims, relevance), "input": (dims, inputs), **per_sample,
         "target_y": (("sample",), target_y), "target_x": (("sample",), target_x)},
        coords={"sample": np.arange(n), "channel": ["C07", "C09", "C13", "GLM"],
                "y": (np.arange(size) + 0.5) * 3.0, "x": (np.arange(size) + 0.5) * 3.0},
        attrs={"method": method, "backend": backend, "case": "radar", "footprint_radius": radius},
    )


def written(tmp_path, datasets, stem):
    paths = []
    for index, ds in enumerate(datasets):
        paths.append(write_dataset(ds, tmp_path / f"{stem}_{index}.nc"))
    return paths


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1000


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Any network access or cartopy download fails the test; cartopy's download folder is an
    empty temporary path that must stay absent."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    import cartopy.io
    import cartopy.io.shapereader

    monkeypatch.setattr(cartopy.io, "urlopen", refuse)  # cartopy binds urlopen at import
    monkeypatch.setattr(cartopy.io.Downloader, "_urlopen", refuse)
    monkeypatch.setattr(cartopy.io.Downloader, "acquire_resource", refuse)
    monkeypatch.setattr(cartopy.io.shapereader.NEShpDownloader, "acquire_resource", refuse)
    download_dir = tmp_path / "cartopy-downloads"
    monkeypatch.setitem(cartopy.config, "data_dir", download_dir)
    monkeypatch.setitem(cartopy.config, "pre_existing_data_dir", cartopy.config["pre_existing_data_dir"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", cartopy.io.DownloadWarning)
        yield download_dir
    assert not download_dir.exists()


# --- Natural Earth, offline ---------------------------------------------------------------------


def test_shipped_natural_earth_files_read_offline(no_network):
    from cartopy.io import shapereader

    for name, expected in (("coastline", 134), ("land", 127)):
        path = maps.natural_earth_path(name)
        assert path.is_relative_to(maps.NATURAL_EARTH_DIR)
        reader = shapereader.Reader(path)
        geometries = list(reader.geometries())
        reader.close()
        assert len(geometries) == expected
    assert (maps.NATURAL_EARTH_DIR / "README.txt").is_file()


def test_cartopy_natural_earth_resolves_to_shipped_files(no_network):
    from cartopy.io import shapereader

    assert maps.configure_cartopy() == maps.NATURAL_EARTH_DIR
    assert cartopy.config["pre_existing_data_dir"] == maps.NATURAL_EARTH_DIR
    for name in ("coastline", "land"):
        path = shapereader.natural_earth(resolution="110m", category="physical", name=name)
        assert path == maps.natural_earth_path(name)


def test_coastlines_draw_without_network(no_network, tmp_path):
    from xaibench.studies.report.figures import new_figure, save_png

    figure = new_figure(4, 3)
    ax = figure.add_subplot(projection=maps.map_projection())
    maps.set_region(ax, 117.5, 262.5, -22.5, 62.5)
    maps.add_land_and_coastlines(ax)
    maps.add_box(ax, 190, 240, -5, 5)
    out = save_png(figure, tmp_path / "coast.png")
    assert_png(out)


# --- figures ------------------------------------------------------------------------------------


def test_enso_composite_maps(no_network, tmp_path):
    files = written(tmp_path, [enso_explanation(), enso_explanation("lrp.zplus", "zennit", seed=1)], "enso")
    out = tmp_path / "figures" / "enso.png"
    result = enso_composite_maps(files, out)
    assert_png(out)
    assert result["composite"].dims == ("panel", "lat", "lon")
    assert list(result["method"].values) == ["lrp.z", "lrp.zplus"]
    assert list(result["n_samples"].values) == [3, 3]  # target 1 and label 1: samples 1, 3, 5


def test_enso_composite_is_toms_normalisation():
    relevance = np.zeros((2, 2, 2))
    relevance[0, 0, 0], relevance[0, 1, 1] = 4.0, -2.0
    relevance[1, 0, 0] = 0.5
    expected = np.array([[1.0, 0.0], [0.0, -0.25]])  # mean of [[1, 0], [0, -0.5]] and [[1, 0], [0, 0]]
    np.testing.assert_allclose(normalised_composite(relevance), expected)
    np.testing.assert_array_equal(normalised_composite(np.zeros((1, 2, 2))), np.zeros((2, 2)))


def test_enso_figure_options_and_in_memory_datasets(no_network, tmp_path):
    out = tmp_path / "enso.png"
    result = enso_composite_maps([enso_explanation(labels=False)], out, region=(150, 280, -30, 30),
                                 show_input=False, box=None)
    assert_png(out)
    assert "input_composite" not in result and int(result["n_samples"][0]) == 6


def test_figures_are_deterministic(no_network, tmp_path):
    ds = enso_explanation()
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    enso_composite_maps([ds], first)
    enso_composite_maps([ds], second)
    assert first.read_bytes() == second.read_bytes()
    assert b"Software" not in first.read_bytes() and b"tIME" not in first.read_bytes()


def test_convection_relevance(tmp_path):
    files = written(tmp_path, [convection_explanation(), convection_explanation("gradient", "zennit", seed=1)],
                    "convection")
    out = tmp_path / "convection.png"
    table = convection_relevance(files, out)
    assert_png(out)
    assert list(table["n_samples"]) == [2, 2]
    np.testing.assert_allclose(table["share_static"] + table["share_temporal"], 1.0)
    np.testing.assert_allclose(table["share_reflectance"] + table["share_brightness_temperature"], 1.0)


def test_convection_static_and_temporal_shares(tmp_path):
    """The bars are metrics.temporal_shares: the time mean per pixel is static, the rest temporal."""
    ds = convection_explanation(n=2)
    relevance = np.zeros(ds["relevance"].shape, dtype=np.float32)
    relevance[:, :, :, 2, 2] = 1.0                   # the same on every frame: brightness
    ds["relevance"].values[...] = relevance
    table = convection_relevance([ds], tmp_path / "static.png")
    assert table["share_static"][0] == pytest.approx(1.0)
    relevance[:] = 0.0
    relevance[:, 0, -1, 2, 2], relevance[:, 0, -2, 2, 2] = 1.0, -1.0   # a frame difference: change
    ds["relevance"].values[...] = relevance
    table = convection_relevance([ds], tmp_path / "temporal.png")
    assert table["share_temporal"][0] == pytest.approx(1.0)
    assert table["share_reflectance"][0] == pytest.approx(1.0)


def test_subsets_are_selected_or_named(tmp_path):
    ds = convection_explanation(n=4)
    ds["subset"] = ("sample", np.array(["test", "test", "no_shortcut", "no_shortcut"]))
    table = convection_relevance([ds], tmp_path / "c.png", subset="no_shortcut")
    assert table["n_samples"][0] == 1 and table["subset"][0] == "no_shortcut"  # label 1: sample 3
    with pytest.raises(InputError, match="no sample in subset 'nope'; it has no_shortcut, test"):
        convection_relevance([ds], tmp_path / "c.png", subset="nope")
    enso = enso_explanation()
    with pytest.raises(InputError, match="no 'subset' variable"):
        enso_composite_maps([enso], tmp_path / "e.png", subset="test")


def test_enso_selection_uses_prediction_when_present(no_network, tmp_path):
    ds = enso_explanation()
    ds["prediction"] = ("sample", np.array([1, 1, 1, 0, 1, 1]))  # sample 3 misclassified
    result = enso_composite_maps([ds], tmp_path / "e.png", show_input=False)
    assert int(result["n_samples"][0]) == 2  # label 1 and predicted 1: samples 1, 5


def test_radar_relevance(tmp_path):
    (path,) = written(tmp_path, [radar_explanation()], "radar")
    out = tmp_path / "radar.png"
    table = radar_relevance(path, out, samples=[0, 2])
    assert_png(out)
    assert list(table["sample"]) == [0, 2]
    np.testing.assert_allclose(table["footprint_share"], 1.0)  # all relevance lies in the footprint
    assert list(table["footprint_pixels"]) == [25, 25]
    out_channels = tmp_path / "radar_channels.png"
    table = radar_relevance(radar_explanation(), out_channels, samples=1, per_channel=True, window=4,
                            footprint_radius=1)
    assert_png(out_channels)
    assert table["footprint_share"][0] == pytest.approx(9 / 25)


def test_radar_footprint_from_the_region_variable_or_none(tmp_path):
    ds = radar_explanation(radius=2)
    del ds.attrs["footprint_radius"]
    table = radar_relevance(ds, tmp_path / "none.png")
    assert np.isnan(table["footprint_share"][0]) and table["footprint_pixels"][0] == 0
    # xaibench.studies.cases writes the footprint as region(sample, y, x); a smaller one here (radius 1)
    size = ds.sizes["y"]
    ds["region"] = (("sample", "y", "x"), np.stack([square_mask((size, size), int(y), int(x), 1)
                                                    for y, x in zip(ds["target_y"].values, ds["target_x"].values)]))
    ds["target_pixel"] = ("sample", np.array(["max_reflectivity", "centre", "centre"]))
    table = radar_relevance(ds, tmp_path / "region.png", samples=[0, 1])
    assert_png(tmp_path / "region.png")
    np.testing.assert_allclose(table["footprint_share"], 9 / 25)
    assert list(table["target_pixel"]) == ["max_reflectivity", "centre"]
    ds["region"].values[0, 0, 0] = True  # not a square: drawn as a contour
    radar_relevance(ds, tmp_path / "contour.png", samples=[0])


def test_footprint_share_clips_at_the_patch_edge():
    relevance = np.ones((2, 5, 5))
    assert footprint_share(relevance, square_mask((5, 5), 0, 0, 1)) == pytest.approx(4 / 25)
    assert np.isnan(footprint_share(relevance, None))


# --- bad input ----------------------------------------------------------------------------------


def test_missing_relevance_names_the_file(tmp_path):
    (path,) = written(tmp_path, [enso_explanation().drop_vars("relevance")], "norelevance")
    with pytest.raises(InputError, match=r"norelevance_0\.nc.*no 'relevance' variable"):
        enso_composite_maps([path], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_wrong_dims_name_the_file_and_the_dims(tmp_path):
    (path,) = written(tmp_path, [enso_explanation()], "enso")
    with pytest.raises(InputError, match=r"enso_0\.nc.*'relevance' has dims \('sample', 'lat', 'lon'\).*"
                                         r"convection explanation needs"):
        convection_relevance([path], tmp_path / "x.png")
    transposed = enso_explanation().transpose("sample", "lon", "lat")
    with pytest.raises(InputError, match=r"dataset #0 \(lrp.z, native\).*dims \('sample', 'lon', 'lat'\)"):
        enso_composite_maps([transposed], tmp_path / "x.png")


@pytest.mark.parametrize("problem", ["no_file", "not_netcdf", "no_target", "no_method", "nan", "no_lat",
                                     "input_dims", "other_grid"])
def test_bad_files_raise_input_errors_naming_the_file(tmp_path, problem):
    good = enso_explanation()
    bad = good.copy(deep=True)
    path = tmp_path / f"bad_{problem}.nc"
    if problem == "no_file":
        pass
    elif problem == "not_netcdf":
        path.write_text("not a netCDF file")
    else:
        if problem == "no_target":
            bad = bad.drop_vars("target")
        elif problem == "no_method":
            del bad.attrs["method"]
        elif problem == "nan":
            bad["relevance"][2, 0, 0] = np.nan
        elif problem == "no_lat":
            bad = bad.drop_vars("lat")
        elif problem == "input_dims":
            bad["input"] = bad["input"].isel(lon=0)
        elif problem == "other_grid":
            bad = bad.assign_coords(lat=bad["lat"] + 1.0)
        write_dataset(bad, path)
    files = [good, path] if problem == "other_grid" else [path]
    with pytest.raises(InputError, match=f"bad_{problem}"):
        enso_composite_maps(files, tmp_path / "x.png")


def test_radar_bad_target_pixel_and_sample(tmp_path):
    ds = radar_explanation()
    with pytest.raises(InputError, match=r"sample positions \[7\]"):
        radar_relevance(ds, tmp_path / "x.png", samples=[7])
    ds["target_y"] = ds["target_y"] + 0.5
    with pytest.raises(InputError, match="target_y.*integer pixel indices"):
        radar_relevance(ds, tmp_path / "x.png")
    with pytest.raises(InputError, match="no 'target_x' variable"):
        radar_relevance(radar_explanation().drop_vars("target_x"), tmp_path / "x.png")


def test_convection_needs_labels(tmp_path):
    with pytest.raises(InputError, match="no 'label' variable"):
        convection_relevance([convection_explanation().drop_vars("label")], tmp_path / "x.png")


def test_read_explanations_accepts_paths_and_datasets(tmp_path):
    (path,) = written(tmp_path, [radar_explanation()], "radar")
    files = read_explanations([path, radar_explanation(backend="native")], "radar")
    assert [f.title for f in files] == ["lrp.alpha1beta0 (zennit)", "lrp.alpha1beta0 (native)"]
    assert files[0].name == str(path)


# --- tables -------------------------------------------------------------------------------------


def test_write_table_markdown_and_html(tmp_path):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"method": ["lrp.z", "gradient"], "error": [1.23456789e-7, 0.5]}).to_csv(csv, index=False)
    markdown = write_table(csv, tmp_path / "metrics.md", title="Conservation").read_text()
    assert markdown.startswith("## Conservation") and "| lrp.z" in markdown and "1.235e-07" in markdown
    page = write_table(csv, tmp_path / "metrics.html", columns=["method"]).read_text()
    assert "<table" in page and "gradient" in page and "error" not in page
    with pytest.raises(InputError, match="missing.csv"):
        write_table(tmp_path / "missing.csv", tmp_path / "x.md")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match="empty.csv"):
        write_table(tmp_path / "empty.csv", tmp_path / "x.md")
    with pytest.raises(InputError, match=r"no column\(s\) \['nope'\]"):
        write_table(csv, tmp_path / "x.md", columns=["nope"])


def test_report_captions_exist_and_say_what_is_synthetic():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "workflows" / "report"
    for name in ("enso_composite", "convection_relevance", "radar_relevance", "table"):
        text = (folder / f"{name}.rst").read_text()
        assert "synthetic" in text, name
