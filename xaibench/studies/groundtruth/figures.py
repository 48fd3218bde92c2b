"""Figures of the ground-truth attribution benchmark (xaibench.studies.groundtruth).

    histograms(scores_dir, out_png)      per-sample Pearson correlation with the ground truth, per method
                                         (one panel each), every backend overlaid (as Mamalakis et al. Fig. 4)
    example_maps(relevance_nc, out_png)  one test sample: the exact attribution beside each method's map
    faithfulness(scores_dir, out_png)    mean correlation with the ground truth vs the deletion score
    draw(kind, relevance=..., scores=..., out_png=...)   the CLI's entry
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from xaibench.errors import InputError
from xaibench.studies.report import maps
from xaibench.studies.report.figures import RELEVANCE_COLORMAP, default_style, new_figure, save_png

BACKEND_COLORS = {"native": "tab:blue", "zennit": "tab:orange", "innvestigate": "tab:green"}
BACKEND_WIDTHS = {"native": 3.2, "zennit": 2.0, "innvestigate": 1.0}


def _scores(scores_dir) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    folder = Path(scores_dir)
    files = [folder / name for name in ("correlations.csv", "per_sample.csv", "faithfulness.csv")]
    missing = [str(path) for path in files if not path.exists()]
    if missing:
        raise InputError(f"missing {', '.join(missing)}; run `xaibench groundtruth score` first")
    return tuple(pd.read_csv(path) for path in files)


@default_style
def histograms(scores_dir, out_png, model: str = "trained") -> Path:
    """One panel per method: histograms of the per-sample Pearson correlation with the ground
    truth for each backend (the positive part too, dashed, for positive-only methods)."""
    table, per_sample, _ = _scores(scores_dir)
    per_sample = per_sample[per_sample["model"] == model]
    methods = list(dict.fromkeys(table[table["model"] == model]["method"]))
    if not methods:
        raise InputError(f"no explanations of the {model} network in {scores_dir}")
    ncols = 3
    nrows = -(-len(methods) // ncols)
    figure = new_figure(3.6 * ncols, 2.4 * nrows + 0.6)
    bins = np.linspace(-1, 1, 41)
    for position, method in enumerate(methods):
        ax = figure.add_subplot(nrows, ncols, position + 1)
        rows = per_sample[per_sample["method"] == method]
        for (backend, reference), group in rows.groupby(["backend", "reference"], sort=False):
            values = group["pearson"].dropna().to_numpy()
            style = "--" if reference == "positive_part" else "-"
            label = backend + (" vs positive part" if reference == "positive_part" else "")
            # backends that compute the same map draw the same line: wider lines below, so each shows
            ax.hist(values, bins=bins, histtype="step", linestyle=style, linewidth=BACKEND_WIDTHS.get(backend, 1.0),
                    color=BACKEND_COLORS.get(backend, "0.3"), label=f"{label} (mean {values.mean():.2f})")
        ax.axvline(0, color="0.6", linewidth=0.6)
        ax.set_title(method, fontsize=10)
        ax.set_xlim(-1, 1)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=6.5, loc="upper left", frameon=False)
        if position % ncols == 0:
            ax.set_ylabel("samples", fontsize=8)
        if position >= (nrows - 1) * ncols:
            ax.set_xlabel("Pearson correlation with the ground truth", fontsize=8)
    title = "trained network" if model == "trained" else "the true function"
    figure.suptitle(f"Ground-truth benchmark: per-sample correlation of each heat map with the exact attribution "
                    f"({title}; synthetic data)", fontsize=10)
    return save_png(figure, out_png)


@default_style
def example_maps(relevance_nc, out_png, sample: int = 0, model: str = "trained") -> Path:
    """The exact attribution of one test sample beside each method's heat map (the native backend
    where it has the method, else the first backend that does), each scaled by its max |value|."""
    import cartopy  # noqa: F401  (fail before reading when cartopy is missing)

    from xaibench.metrics import pearson
    from xaibench.studies.data import read_dataset
    from xaibench.studies.data.groundtruth import to_map

    ds = read_dataset(relevance_nc)
    if not 0 <= sample < ds.sizes["sample"]:
        raise InputError(f"sample {sample} is not in {relevance_nc} ({ds.sizes['sample']} samples)")
    chosen = {}
    for index in range(ds.sizes["explanation"]):
        method, backend, name = (str(ds[key].values[index]) for key in ("method", "backend", "model"))
        if name == model and (method not in chosen or backend == "native"):
            chosen[method] = (index, backend)
    truth = ds["attribution"].values[sample]
    panels = [("ground truth C_i(X_i)/D", truth)]
    for method, (index, backend) in chosen.items():
        values = ds["relevance"].values[index, sample]
        correlation = float(pearson(values[None], truth[None])[0])
        panels.append((f"{method} ({backend}), r = {correlation:.2f}", values))
    maps.configure_cartopy()
    lat, lon = ds["lat_grid"].values.astype(np.float64), ds["lon_grid"].values.astype(np.float64)
    lon_edges = maps.cell_edges(maps.relative_longitude(lon))
    lat_edges = np.clip(maps.cell_edges(lat), -90, 90)
    ncols = 4
    nrows = -(-len(panels) // ncols)
    figure = new_figure(3.4 * ncols, 2.3 * nrows + 0.8)
    mesh = None
    for position, (title, values) in enumerate(panels):
        ax = figure.add_subplot(nrows, ncols, position + 1, projection=maps.map_projection())
        scaled = values / max(np.abs(values).max(), np.finfo(float).tiny)
        mesh = ax.pcolormesh(lon_edges, lat_edges, to_map(scaled, ds), cmap=RELEVANCE_COLORMAP, vmin=-1, vmax=1,
                             transform=maps.data_crs(), zorder=1)
        maps.set_region(ax, lon_edges[0] + maps.CENTRAL_LONGITUDE, lon_edges[-1] + maps.CENTRAL_LONGITUDE,
                        lat_edges[0], lat_edges[-1])
        maps.add_land_and_coastlines(ax)
        ax.set_title(title, fontsize=8)
    figure.colorbar(mesh, ax=figure.axes, orientation="horizontal", shrink=0.5, pad=0.02,
                    label="value / max |value| of the map")
    figure.suptitle(f"Test sample {int(ds['sample'].values[sample])}: exact attribution and heat maps "
                    f"({'trained network' if model == 'trained' else 'true function'}; synthetic data)", fontsize=10)
    return save_png(figure, out_png)


@default_style
def faithfulness(scores_dir, out_png) -> Path:
    """Mean Pearson correlation with the ground truth (x) against the relative deletion score (y)
    per method and backend: where the two kinds of evidence agree and where they part."""
    table, _, _ = _scores(scores_dir)
    rows = table[(table["reference"] == "ground_truth")]
    figure = new_figure(8.0, 4.2)
    for panel, model in enumerate(("trained", "true_function")):
        ax = figure.add_subplot(1, 2, panel + 1)
        # one point per method: the native backend's where it has the method (the others agree with
        # it or differ for documented reasons; the table has every backend)
        subset = rows[rows["model"] == model].copy()
        subset["native_first"] = subset["backend"] != "native"
        subset = subset.sort_values("native_first", kind="stable").drop_duplicates("method")
        labels: dict[tuple, list] = {}
        for _, row in subset.iterrows():
            point = (row["mean_pearson"], row["faithfulness_relative"])
            ax.scatter(*point, s=22, color=BACKEND_COLORS.get(row["backend"], "0.3"))
            key = (round(point[0] * 20), round(point[1] * 20))   # within 0.05: one label
            labels.setdefault(key, [point]).append(row["method"] + ("" if row["backend"] == "native"
                                                               else f" ({row['backend']})"))
        for point, *names in labels.values():   # methods at (nearly) the same point share one label
            right = point[0] > 0.5   # labels of points on the right go to their left, inside the axes
            label = ax.annotate("\n".join(names), point, fontsize=6, xytext=(-4 if right else 4, 0),
                                textcoords="offset points", ha="right" if right else "left", va="center")
            label.set_in_layout(False)   # a long label must not squeeze the panels
        ax.axhline(0, color="0.7", linewidth=0.6)
        ax.axhline(1, color="0.7", linewidth=0.6, linestyle="--")
        ax.set_xlim(-0.25, 1.25)
        ax.margins(y=0.12)   # room for the labels above the top point
        ax.set_xlabel("mean Pearson with the ground truth", fontsize=8)
        ax.set_ylabel("deletion score (0 random, 1 ground-truth order)", fontsize=8)
        ax.set_title("trained network" if model == "trained" else "true function", fontsize=9)
        ax.tick_params(labelsize=7)
    figure.suptitle("Correlation with the ground truth vs faithfulness (no ground truth needed)", fontsize=10)
    return save_png(figure, out_png)


def draw(kind: str, *, relevance=None, scores=None, out_png) -> Path:
    if kind == "maps":
        if relevance is None:
            raise InputError("the maps figure needs --relevance FILE.nc")
        return example_maps(relevance, out_png)
    if scores is None:
        raise InputError(f"the {kind} figure needs --scores DIR")
    return histograms(scores, out_png) if kind == "histograms" else faithfulness(scores, out_png)
