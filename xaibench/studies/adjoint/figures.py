"""The adjoint experiment's maps: adjoint sensitivity beside LRP relevance at one lag.

    sensitivity_relevance_maps("results/adjoint/maps.nc", lag=60, out_png="results/figures/adjoint_lag60.png")

Reads maps.nc written by adjoint_experiment.run_experiment. Two rows of three maps: the
sensitivity dQ(t)/dT(t - lag) and the sensitivity x the SST anomaly std (bridge-off run) on the
left, the relevance composites of each LRP method with the bridge on and off on the right. Each
panel is divided by its own max |value| (one shared colour scale from -1 to 1). Black box: the
QoI region; dashed green box: the bridge's source region; grey line: the edge of the region the
adjoint reaches at this lag. Titles give the pattern correlation r with the sensitivity and the
remote fraction, recomputed from the file: with one network the numbers of comparison.csv; with
several, those of the maps averaged over the networks (not the mean of the per-network numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from xaibench.errors import InputError

REQUIRED = ("sensitivity", "reached", "anomaly_std", "relevance", "relevance_absolute", "bridge_source")


def read_maps(path):
    """maps.nc as an xarray Dataset, checked to hold what the figure draws."""
    from xaibench.io import read_dataset

    dataset = read_dataset(path)
    missing = [name for name in REQUIRED if name not in dataset]
    if missing:
        raise InputError(f"{path}: not a maps.nc of `xaibench adjoint` (missing {', '.join(missing)})")
    return dataset


def sensitivity_relevance_maps(maps_path, lag: int, out_png, dpi: int | None = None) -> dict:
    """Draw the figure for `lag` (days; one of the file's lags) into out_png; returns the panel
    titles' numbers {panel: {"pattern_correlation": r, "remote_fraction": f}}."""
    import matplotlib.style

    from xaibench import metrics
    from xaibench.studies.report import maps
    from xaibench.studies.report.figures import DPI, RELEVANCE_COLORMAP, new_figure, save_png

    dataset = read_maps(maps_path)
    lags = [int(v) for v in dataset["lag_days"].values]
    if int(lag) not in lags:
        raise InputError(f"{maps_path}: no lag {lag} days; the file has {', '.join(map(str, lags))}")
    at_lag = dataset.sel(lag_days=int(lag))
    lat, lon = dataset["lat"].values, dataset["lon"].values
    sensitivity = at_lag["sensitivity"].values
    ocean = np.isfinite(sensitivity)
    reached = at_lag["reached"].values > 0.5
    cell_lat = np.broadcast_to(lat[:, None], ocean.shape)[ocean]

    def numbers(composite, absolute):
        r = float(metrics.pattern_correlation(composite[ocean][:, None], sensitivity[ocean][:, None], cell_lat))
        absolute = np.where(ocean, absolute, 0.0)
        total = absolute.sum()
        return {"pattern_correlation": r,
                "remote_fraction": float(absolute[ocean & ~reached].sum() / total) if total > 0 else float("nan")}

    panels = [("adjoint sensitivity dQ/dT", sensitivity, None),
              ("sensitivity x anomaly std", sensitivity * at_lag["anomaly_std"].sel(bridge="off").values, None)]
    methods = [str(m) for m in dataset["method"].values]
    results = {}
    for method in methods:
        for setting in ("on", "off"):
            composite = at_lag["relevance"].sel({"method": method, "bridge": setting}).values
            absolute = at_lag["relevance_absolute"].sel({"method": method, "bridge": setting}).values
            found = numbers(composite, absolute)
            name = f"{method}, bridge {setting}"
            results[name] = found
            panels.append((f"{name}\nr = {found['pattern_correlation']:.2f}, remote {found['remote_fraction']:.2f}",
                           composite, found))
    # Layout: sensitivity panels in the first column, one row per method beside them.
    order = []
    for row in range(len(methods)):
        order.append(panels[row] if row < 2 else None)
        order += panels[2 + 2 * row: 4 + 2 * row]
    qoi_box = json.loads(dataset.attrs.get("qoi_region", "null"))
    bridge_box = json.loads(dataset.attrs.get("bridge_source_region", "null"))

    relative_lon = maps.relative_longitude(lon)
    lon_order = np.argsort(relative_lon, kind="stable")
    lon_edges = maps.cell_edges(relative_lon[lon_order])
    lat_edges = np.clip(maps.cell_edges(lat), -90.0, 90.0)
    region = (lon_edges[0] + maps.CENTRAL_LONGITUDE, lon_edges[-1] + maps.CENTRAL_LONGITUDE,
              lat_edges[0], lat_edges[-1])

    with matplotlib.style.context("default"):
        maps.configure_cartopy()
        ncols, nrows = 3, len(methods)
        figure = new_figure(4.2 * ncols, 2.4 * nrows + 0.9)
        mesh, axes = None, []
        for position, panel in enumerate(order):
            if panel is None:
                continue
            title, values, _ = panel
            ax = figure.add_subplot(nrows, ncols, position + 1, projection=maps.map_projection())
            maps.set_region(ax, *region)
            peak = np.nanmax(np.abs(values))
            scaled = values / peak if peak > 0 else values
            mesh = ax.pcolormesh(lon_edges, lat_edges, scaled[:, lon_order], cmap=RELEVANCE_COLORMAP, vmin=-1,
                                 vmax=1, transform=maps.data_crs(), zorder=1)
            ax.contour(relative_lon[lon_order], lat, reached[:, lon_order].astype(float), levels=[0.5],
                       colors="0.4", linewidths=0.8, transform=maps.data_crs(), zorder=4)
            maps.add_land_and_coastlines(ax)
            if qoi_box:
                maps.add_box(ax, qoi_box[2], qoi_box[3], qoi_box[0], qoi_box[1])
            if bridge_box:
                maps.add_box(ax, bridge_box[2], bridge_box[3], bridge_box[0], bridge_box[1], color="tab:green",
                             linestyle="--")
            ax.set_title(title, fontsize=8)
            axes.append(ax)
        figure.colorbar(mesh, ax=axes, orientation="horizontal", shrink=0.5, pad=0.02,
                        label="each panel / its max |value|")
        figure.suptitle(f"Adjoint sensitivity vs LRP relevance, input {lag} days before Q "
                        f"(synthetic linear ocean model)", fontsize=10)
        save_png(figure, Path(out_png), dpi or DPI)
    return results
