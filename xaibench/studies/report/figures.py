"""The report's figures, drawn from explanation files (see explanations.py for their format).

    enso_composite_maps(files, out_png, region=None, ...)     composite relevance maps (Toms et al.)
    convection_relevance(files, out_png, ...)                 relevance per frame and channel,
                                                              static vs temporal share
    radar_relevance(file, out_png, samples=(0,), ...)         inputs, output pixel, relevance and
                                                              the true footprint

Every function checks all its files before drawing (InputError naming the file and the
problem), writes one PNG to the path it is given and returns the numbers it drew, so that
tables and tests can use them without reading pixels.

Drawing: matplotlib's Agg canvas on a Figure object (no pyplot, no global backend switch),
inside matplotlib's default style (a user's matplotlibrc does not change the report), a fixed
dpi, and PNG metadata without the "Software" entry; Agg writes no timestamp, so the same
files give byte-identical PNGs. Files are written atomically (temporary file, then rename), so
an interrupted workflow job never leaves a half-written figure under the final name.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import matplotlib.style
import numpy as np
import pandas as pd
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from xaibench import metrics
from xaibench.errors import InputError
from xaibench.io import atomic_path
from xaibench.studies.data.enso import NINO34_BOX
from xaibench.studies.report import maps
from xaibench.studies.report.explanations import check_same_grid, read_explanations

DPI = 150
RELEVANCE_COLORMAP = "RdBu_r"   # diverging, red = positive relevance
SHARE_COLORMAP = "magma_r"      # sequential, for shares of |relevance|
INPUT_COLORMAP = "viridis"


# ---------------------------------------------------------------------------------------------
# Figure plumbing


def new_figure(width: float, height: float) -> Figure:
    """A Figure on an Agg canvas, constrained layout."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, out_png, dpi: int = DPI) -> Path:
    """Write `figure` to `out_png` as a PNG, deterministically and atomically."""
    out_png = Path(out_png)
    with atomic_path(out_png) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi, metadata={"Software": None})
    return out_png


def default_style(function):
    """Run a figure function inside matplotlib's default style (ignoring a user's rc settings)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with matplotlib.style.context("default"):
            return function(*args, **kwargs)

    return wrapper


def _symmetric_limit(*arrays) -> float:
    """max |value| over arrays, 1 when all are zero (a colour scale needs a non-zero range)."""
    limit = max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    return limit if limit > 0 else 1.0


def _case_text(explanations, subset: str | None = None) -> str:
    """', case X, subset Y' from the files' 'case' attribute and the subset drawn ('subsets A + B'
    when several subsets are pooled; nothing for what the files do not say)."""
    cases = sorted({str(e.data.attrs["case"]) for e in explanations if e.data.attrs.get("case")})
    text = f", case{'s' if len(cases) > 1 else ''} {', '.join(cases)}" if cases else ""
    if subset is not None:
        return text + f", subset {subset}"
    pooled = sorted({str(v) for e in explanations if "subset" in e.data.variables for v in e.data["subset"].values})
    if pooled:
        text += f", subset{'s' if len(pooled) > 1 else ''} {' + '.join(pooled)}"
    return text


def subset_mask(explanation, subset: str | None) -> np.ndarray:
    """Samples of a file in `subset` (its 'subset' variable, e.g. xaibench.studies.cases' "test" and
    "real_winters"); all samples when subset is None."""
    data = explanation.data
    if subset is None:
        return np.ones(data.sizes["sample"], dtype=bool)
    if "subset" not in data.variables:
        raise InputError(f"{explanation.name}: no 'subset' variable, cannot select subset '{subset}'")
    values = np.asarray(data["subset"].values).astype(str)
    if not (values == subset).any():
        raise InputError(f"{explanation.name}: no sample in subset '{subset}'; it has "
                         f"{', '.join(sorted(set(values)))}")
    return values == subset


# ---------------------------------------------------------------------------------------------
# 1. ENSO composite maps


def normalised_composite(relevance) -> np.ndarray:
    """Toms et al.'s composite: each sample's map divided by its own max |R|, then the mean over
    samples (axis 0), in float64. A map that is zero everywhere stays zero (it has no max)."""
    relevance = np.asarray(relevance, dtype=np.float64)
    if relevance.shape[0] == 0:
        raise ValueError("a composite needs at least one sample")
    flat = np.abs(relevance.reshape(relevance.shape[0], -1))
    scale = flat.max(axis=1)
    scale = np.where(scale > 0, scale, 1.0).reshape((-1,) + (1,) * (relevance.ndim - 1))
    return (relevance / scale).mean(axis=0)


def enso_selection(explanation, target_class: int = 1, subset: str | None = None) -> np.ndarray:
    """Samples of an ENSO file that enter the composite, as Toms et al. composite the correctly
    classified El Nino maps (class 1): explained output (target) == target_class, and, where the
    file has them, true class (label) and predicted class (prediction) == target_class; only the
    samples of `subset` when it is given (see subset_mask)."""
    data = explanation.data
    keep = subset_mask(explanation, subset) & (data["target"].values == target_class)
    present = [v for v in ("label", "prediction") if v in data.variables and data[v].dims == ("sample",)]
    for variable in present:
        keep &= data[variable].values == target_class
    if not keep.any():
        which = " and ".join(["target", *present])
        where = f" in subset '{subset}'" if subset is not None else ""
        raise InputError(f"{explanation.name}: no sample{where} has {which} == {target_class}; nothing to composite")
    return keep


@default_style
def enso_composite_maps(files, out_png, region=None, target_class: int = 1, subset: str | None = None,
                        show_input: bool = True, box=NINO34_BOX, ncols: int | None = None,
                        dpi: int = DPI) -> xr.Dataset:
    """Composite relevance maps, one panel per explanation file ('method (backend)').

    files: ENSO explanation files (paths or Datasets), all on the same lat/lon grid.
    region: (lon_min, lon_max, lat_min, lat_max) in degrees east/north shown on the maps
        (lon_min -> lon_max eastward, may cross 180); None = the grid's cells.
    target_class: composite the samples with target (and label, if present) == target_class
        (1 = El Nino); see enso_selection.
    subset: composite only the samples of this subset (the files' 'subset' variable; cases.py
        writes "test", synthetic maps, and "real_winters", the real HadISST winters); None pools
        all samples (the title then names the pooled subsets).
    show_input: add a first panel with the composite (plain mean) input SST anomaly of the
        first file's selected samples, with its own colour scale.
    box: the box drawn on every map (default Nino3.4, 5S-5N, 170W-120W); None draws none.

    Maps: Robinson centred on 180, land and coastlines from the shipped Natural Earth 110m
    files. Relevance panels share one diverging colour scale, symmetric about 0.
    Returns a Dataset: composite (panel, lat, lon), n_samples (panel), method/backend (panel)
    and, with show_input, input_composite (lat, lon)."""
    import cartopy  # noqa: F401  (fail early, before reading files, if cartopy is missing)

    explanations = read_explanations(files, "enso")
    check_same_grid(explanations, ("lat", "lon"))
    maps.configure_cartopy()
    first = explanations[0].data
    lat, lon = first["lat"].values.astype(np.float64), first["lon"].values.astype(np.float64)

    composites, counts = [], []
    for explanation in explanations:
        keep = enso_selection(explanation, target_class, subset)
        composites.append(normalised_composite(explanation.data["relevance"].values[keep]))
        counts.append(int(keep.sum()))
    input_composite = None
    if show_input:
        keep = enso_selection(explanations[0], target_class, subset)
        input_composite = first["input"].values[keep].astype(np.float64).mean(axis=0)

    # Longitudes relative to 180, sorted, so that the cells are continuous across the date line.
    relative_lon = maps.relative_longitude(lon)
    lon_order, lat_order = np.argsort(relative_lon, kind="stable"), np.argsort(lat, kind="stable")
    if np.any(np.diff(relative_lon[lon_order]) <= 0) or np.any(np.diff(lat[lat_order]) <= 0):
        raise InputError(f"{explanations[0].name}: lat/lon coordinates repeat a value; expected a regular grid")
    lon_edges = maps.cell_edges(relative_lon[lon_order])
    lat_edges = np.clip(maps.cell_edges(lat[lat_order]), -90.0, 90.0)
    if region is None:
        region = (lon_edges[0] + maps.CENTRAL_LONGITUDE, lon_edges[-1] + maps.CENTRAL_LONGITUDE,
                  lat_edges[0], lat_edges[-1])
    if len(region) != 4:
        raise ValueError(f"region must be (lon_min, lon_max, lat_min, lat_max), got {region}")

    def on_grid(values):
        return np.asarray(values)[np.ix_(lat_order, lon_order)]

    panels = ([("composite input (mean of the same samples)", input_composite)] if show_input else []) + [
        (explanation.title + f", n = {count}", composite)
        for explanation, composite, count in zip(explanations, composites, counts)]
    ncols = ncols or (1 if len(panels) == 1 else 2 if len(panels) <= 4 else 3)
    nrows = -(-len(panels) // ncols)
    figure = new_figure(4.0 * ncols, 2.5 * nrows + 0.9)
    relevance_limit = _symmetric_limit(*composites)
    relevance_axes, relevance_mesh, input_mesh, input_axes = [], None, None, None
    for position, (title, values) in enumerate(panels):
        ax = figure.add_subplot(nrows, ncols, position + 1, projection=maps.map_projection())
        maps.set_region(ax, *region)
        is_input = show_input and position == 0
        limit = _symmetric_limit(values) if is_input else relevance_limit
        mesh = ax.pcolormesh(lon_edges, lat_edges, on_grid(values), cmap=RELEVANCE_COLORMAP, vmin=-limit,
                             vmax=limit, transform=maps.data_crs(), zorder=1)
        maps.add_land_and_coastlines(ax)
        if box is not None:
            maps.add_box(ax, box["lon_min"], box["lon_max"], box["lat_min"], box["lat_max"])
        if is_input:
            input_mesh, input_axes = mesh, ax
        else:
            relevance_mesh = mesh
            relevance_axes.append(ax)
        ax.set_title(title, fontsize=9)
    if input_mesh is not None:
        units = first["input"].attrs.get("units", "")
        figure.colorbar(input_mesh, ax=input_axes, orientation="horizontal", shrink=0.7, pad=0.02,
                        label=f"input{f' ({units})' if units else ''}")
    figure.colorbar(relevance_mesh, ax=relevance_axes, orientation="horizontal", shrink=0.6, pad=0.02,
                    label="composite relevance (each map / its max |R|, then mean)")
    figure.suptitle(f"Composite relevance for class {target_class}{_case_text(explanations, subset)}"
                    + (" (box: Nino3.4)" if box is NINO34_BOX else ""), fontsize=11)
    save_png(figure, out_png, dpi)

    return xr.Dataset(
        {
            "composite": (("panel", "lat", "lon"), np.stack(composites),
                          {"long_name": "mean over samples of relevance / max |relevance| per sample", "units": "1"}),
            "n_samples": (("panel",), np.array(counts, dtype=np.int64), {"long_name": "samples composited"}),
            **({"input_composite": (("lat", "lon"), input_composite,
                                    {"long_name": "mean input of the composited samples (first file)",
                                     "units": first["input"].attrs.get("units", "")})}
               if input_composite is not None else {}),
        },
        coords={"lat": first["lat"], "lon": first["lon"],
                "method": ("panel", [e.method for e in explanations]),
                "backend": ("panel", [e.backend for e in explanations]),
                "file": ("panel", [e.name for e in explanations])},
        attrs={"target_class": int(target_class), "subset": "all" if subset is None else subset},
    )


# ---------------------------------------------------------------------------------------------
# 2. Convection: relevance per frame and channel


def absolute_shares(relevance) -> np.ndarray:
    """|R| / sum |R| per sample (axis 0), float64: each sample's shares sum to 1 (0 where R = 0)."""
    magnitude = np.abs(np.asarray(relevance, dtype=np.float64))
    total = magnitude.reshape(magnitude.shape[0], -1).sum(axis=1)
    total = np.where(total > 0, total, 1.0).reshape((-1,) + (1,) * (magnitude.ndim - 1))
    return magnitude / total


@default_style
def convection_relevance(files, out_png, subset: str | None = None, dpi: int = DPI) -> pd.DataFrame:
    """Relevance per frame (time) and channel, averaged over the convective samples (label 1).

    files: convection explanation files (paths or Datasets) with a label variable.
    subset: only the samples of this subset (the files' 'subset' variable; cases.py writes
        "test", brightness separates the classes, and "no_shortcut", brightness matched);
        None pools all samples (the title then names the pooled subsets).
    Top: per file a block of channel rows x frame columns of the mean share of |R| per pixel
    (|R| / sum |R| per sample, then the mean over convective samples), one colour scale for all.
    Bottom: per file, the static (brightness) vs temporal (change) split of the relevance
    (xaibench.metrics.temporal_shares: R(t) = its time mean at each pixel and channel + the
    rest; static = T sum mean^2 / sum R^2, the same numbers as the metrics table) and the share
    of |R| per channel (metrics.channel_shares), each the mean over the convective samples.
    Returns one row per file: file, method, backend, subset, n_samples, share_static,
    share_temporal and share_<channel> per channel."""
    explanations = read_explanations(files, "convection")
    check_same_grid(explanations, ("channel", "time"))
    rows, mean_maps = [], []
    for explanation in explanations:
        if not explanation.has_labels:
            raise InputError(f"{explanation.name}: no 'label' variable; the convection figure averages over "
                             f"convective samples (label == 1)")
        keep = subset_mask(explanation, subset) & (explanation.data["label"].values == 1)
        if not keep.any():
            where = f" in subset '{subset}'" if subset is not None else ""
            raise InputError(f"{explanation.name}: no convective sample (label == 1){where}")
        relevance = explanation.data["relevance"].values[keep]   # (sample, channel, time, y, x)
        mean_maps.append(absolute_shares(relevance).mean(axis=0))
        static, temporal = metrics.temporal_shares(relevance, time_axis=2)
        channel_shares = metrics.channel_shares(relevance, channel_axis=1)
        row = {"file": explanation.name, "method": explanation.method, "backend": explanation.backend,
               "subset": "all" if subset is None else subset, "n_samples": int(keep.sum()),
               "share_static": _nanmean(static), "share_temporal": _nanmean(temporal)}
        for index, channel in enumerate(explanation.data["channel"].values):
            row[f"share_{channel}"] = _nanmean(channel_shares[:, index])
        rows.append(row)
    table = pd.DataFrame(rows)

    first = explanations[0].data
    channels = [str(c) for c in first["channel"].values]
    times = first["time"].values
    time_units = first["time"].attrs.get("units", "")
    n_channels, n_frames = len(channels), len(times)
    map_rows = len(explanations) * n_channels
    bars_height = max(2.6, 0.3 * len(explanations) + 1.4)
    figure = new_figure(1.45 * n_frames + 1.6, 1.35 * map_rows + bars_height + 0.4)
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.35 * map_rows, bars_height])
    axes = top.subplots(map_rows, n_frames, squeeze=False)
    limit = max(float(m.max()) for m in mean_maps) or 1.0
    image = None
    for index, (explanation, mean_map) in enumerate(zip(explanations, mean_maps)):
        for channel_index, channel in enumerate(channels):
            row = index * n_channels + channel_index
            for frame in range(n_frames):
                ax = axes[row, frame]
                image = ax.imshow(mean_map[channel_index, frame], origin="lower", cmap=SHARE_COLORMAP,
                                  vmin=0.0, vmax=limit, interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(f"t = {times[frame]:g}{f' {time_units}' if time_units else ''}", fontsize=8)
            # Horizontal labels: a method name is longer than a row is high.
            label = (f"{explanation.title}\nn = {table['n_samples'][index]}\n" if channel_index == 0 else "") + channel
            axes[row, 0].set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center", labelpad=4)
    top.colorbar(image, ax=axes, shrink=0.8, label="mean share of |R| per pixel")
    top.suptitle(f"Relevance per frame and channel, convective samples{_case_text(explanations, subset)}",
                 fontsize=10)

    bar_static, bar_channel = bottom.subplots(1, 2)
    names = [e.title for e in explanations]
    positions = np.arange(len(names))
    parts = [("share_static", "static (brightness)", "tab:orange"),
             ("share_temporal", "temporal (change)", "tab:blue")]
    _stacked_bars(bar_static, positions, names, table, parts)
    bar_static.set_title("split of \u03a3 R\u00b2: time mean per pixel (static) + the rest (temporal)",
                         fontsize=8)
    palette = ["tab:gray", "tab:red", "tab:green", "tab:purple", "tab:brown"]
    _stacked_bars(bar_channel, positions, names, table,
                  [(f"share_{c}", c, palette[i % len(palette)]) for i, c in enumerate(channels)])
    bar_channel.set_title("share of |R| per channel", fontsize=8)
    bar_channel.set_yticklabels([])
    save_png(figure, out_png, dpi)
    return table


def _nanmean(values) -> float:
    """Mean over the finite values (NaN marks a sample with R = 0), NaN when there are none."""
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def _stacked_bars(ax, positions, names, table, parts) -> None:
    left = np.zeros(len(positions))
    for column, label, colour in parts:
        values = np.nan_to_num(table[column].to_numpy(dtype=np.float64))
        bars = ax.barh(positions, values, left=left, color=colour, label=label, height=0.6)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v >= 0.08 else "" for v in values], label_type="center",
                     fontsize=7)
        left = left + values
    ax.set_yticks(positions, names, fontsize=7)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=len(parts), frameon=False)


# ---------------------------------------------------------------------------------------------
# 3. Radar: relevance of one output pixel, with the true footprint


def square_mask(shape, target_y: int, target_x: int, radius: int) -> np.ndarray:
    """Boolean (y, x) mask of the (2R+1)^2 square around (target_y, target_x), clipped to the patch."""
    mask = np.zeros(shape, dtype=bool)
    mask[max(target_y - radius, 0): target_y + radius + 1, max(target_x - radius, 0): target_x + radius + 1] = True
    return mask


def footprint_share(relevance, mask) -> float:
    """Share of |R| (summed over channels; relevance (channel, y, x)) inside the boolean (y, x)
    mask. NaN when the mask is None or R = 0."""
    magnitude = np.abs(np.asarray(relevance, dtype=np.float64)).sum(axis=0)
    total = magnitude.sum()
    if mask is None or total == 0:
        return float("nan")
    return float(magnitude[np.asarray(mask, dtype=bool)].sum() / total)


def _footprints(explanation, footprint_radius, target_y, target_x, shape):
    """(masks [sample] -> (y, x) bool or None, description): the true footprint of each explained
    pixel, from footprint_radius (the argument, else the file's attribute) as a square, else from
    the file's 'region' variable (sample, y, x) (xaibench.studies.cases writes the clipped square there),
    else none."""
    radius = footprint_radius if footprint_radius is not None else explanation.data.attrs.get("footprint_radius")
    if radius is not None:
        if np.ndim(radius) != 0 or int(radius) != radius or int(radius) < 0:
            raise InputError(f"{explanation.name}: footprint_radius must be a non-negative integer, got {radius!r}")
        radius = int(radius)
        width = 2 * radius + 1
        return (lambda s: square_mask(shape, int(target_y[s]), int(target_x[s]), radius)), \
            f"dashed: true footprint, {width} x {width} pixels"
    region = explanation.data.get("region")
    if region is not None:
        if region.dims != ("sample", "y", "x"):
            raise InputError(f"{explanation.name}: 'region' has dims {region.dims}, expected ('sample', 'y', 'x')")
        values = np.asarray(region.values, dtype=bool)
        return (lambda s: values[s]), "dashed: true footprint (the file's region)"
    return (lambda s: None), "true footprint unknown (no footprint_radius, no region)"


def _outline(ax, mask, colour) -> None:
    """Draw a mask's outline: its bounding box when the mask fills it (a square), else a contour."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return
    top, bottom, left, right = rows[0], rows[-1], columns[0], columns[-1]
    if mask[top:bottom + 1, left:right + 1].all():
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                               edgecolor=colour, linewidth=1.0, linestyle="--"))
    else:
        ax.contour(mask.astype(np.float64), levels=[0.5], colors=[colour], linewidths=1.0, linestyles="--")


def _pixel_index(explanation, variable: str, size: int) -> np.ndarray:
    values = np.asarray(explanation.data[variable].values)
    if not np.issubdtype(values.dtype, np.number) or not np.all(np.isfinite(values)) \
            or not np.all(values == np.round(values)):
        raise InputError(f"{explanation.name}: '{variable}' must hold integer pixel indices, got {values[:5]}")
    values = values.astype(np.int64)
    if values.min() < 0 or values.max() >= size:
        raise InputError(f"{explanation.name}: '{variable}' outside the patch (0..{size - 1}): "
                         f"{values.min()}..{values.max()}")
    return values


@default_style
def radar_relevance(file, out_png, samples=(0,), per_channel: bool = False, footprint_radius: int | None = None,
                    window: int | None = None, dpi: int = DPI) -> pd.DataFrame:
    """For chosen samples: the input channels, the explained output pixel (+), the relevance for
    that pixel (summed over channels, or per channel) and the true footprint square.

    file: one radar explanation file (path or Dataset); target_y/target_x are the explained
        output pixel's row/column indices.
    samples: positions (0-based) along the file's sample dimension.
    footprint_radius: half-width of the true footprint in pixels (the square is 2R+1 wide);
        None = the file's 'footprint_radius' attribute, else the file's 'region' variable
        (sample, y, x), else no footprint.
    window: show only +-window pixels around the output pixel (None: the whole patch).
    Returns one row per sample: sample, target_y, target_x, target_pixel (how cases.py chose the
    pixel, if the file says), output, relevance_sum, footprint_pixels and footprint_share (share
    of |R| inside the footprint; NaN without one)."""
    if isinstance(file, (list, tuple)):
        if len(file) != 1:
            raise InputError(f"radar_relevance draws one explanation file, got {len(file)}")
        file = file[0]
    (explanation,) = read_explanations(file, "radar")
    data = explanation.data
    n_samples, n_channels, size_y, size_x = data["relevance"].shape
    samples = [int(s) for s in np.atleast_1d(samples)]
    if not samples:
        raise InputError(f"{explanation.name}: no samples chosen")
    bad = [s for s in samples if not 0 <= s < n_samples]
    if bad:
        raise InputError(f"{explanation.name}: sample positions {bad} outside 0..{n_samples - 1}")
    target_y = _pixel_index(explanation, "target_y", size_y)
    target_x = _pixel_index(explanation, "target_x", size_x)
    footprint_of, footprint_text = _footprints(explanation, footprint_radius, target_y, target_x, (size_y, size_x))
    how_chosen = data["target_pixel"].values if "target_pixel" in data.variables else None
    channels = [str(c) for c in data["channel"].values]
    inputs = data["input"].values.astype(np.float64)
    relevance = data["relevance"].values.astype(np.float64)
    outputs = data["output"].values

    # Summed: one row per sample, the inputs then the relevance. Per channel: two rows per
    # sample, the relevance of each channel under that channel's input.
    rows_per_sample, ncols = (2, n_channels) if per_channel else (1, n_channels + 1)
    figure = new_figure(2.2 * ncols + 1.2, 2.3 * rows_per_sample * len(samples) + 0.6)
    axes = figure.subplots(rows_per_sample * len(samples), ncols, squeeze=False)
    input_low = min(float(inputs[s].min()) for s in samples)
    input_high = max(float(inputs[s].max()) for s in samples)
    if input_high <= input_low:
        input_high = input_low + 1.0
    extent = (-0.5, size_x - 0.5, -0.5, size_y - 0.5)
    rows, input_image, input_axes = [], None, []
    for index, sample in enumerate(samples):
        ty, tx = int(target_y[sample]), int(target_x[sample])
        footprint = footprint_of(sample)
        share = footprint_share(relevance[sample], footprint)
        rows.append({"sample": data["sample"].values[sample], "target_y": ty, "target_x": tx,
                     "target_pixel": "" if how_chosen is None else str(how_chosen[sample]),
                     "output": float(outputs[sample]), "relevance_sum": float(relevance[sample].sum()),
                     "footprint_pixels": 0 if footprint is None else int(footprint.sum()),
                     "footprint_share": share})
        shown = relevance[sample] if per_channel else relevance[sample].sum(axis=0, keepdims=True)
        limit = _symmetric_limit(shown)
        first_row = rows_per_sample * index
        input_cells = [(first_row, c) for c in range(n_channels)]
        relevance_cells = ([(first_row + 1, c) for c in range(n_channels)] if per_channel
                           else [(first_row, n_channels)])
        panels = [(cell, "input", c) for c, cell in enumerate(input_cells)]
        panels += [(cell, "relevance", c) for c, cell in enumerate(relevance_cells)]
        relevance_image, relevance_axes = None, []
        for (row, column), kind, which in panels:
            ax = axes[row, column]
            if kind == "input":
                input_image = ax.imshow(inputs[sample, which], origin="lower", extent=extent, cmap=INPUT_COLORMAP,
                                        vmin=input_low, vmax=input_high, interpolation="nearest")
                title, edge, marker = f"input {channels[which]}", "white", "red"
                input_axes.append(ax)
            else:
                relevance_image = ax.imshow(shown[which], origin="lower", extent=extent, cmap=RELEVANCE_COLORMAP,
                                            vmin=-limit, vmax=limit, interpolation="nearest")
                title = f"relevance {channels[which]}" if per_channel else "relevance, sum of channels"
                edge, marker = "black", "black"
                relevance_axes.append(ax)
            if footprint is not None:
                _outline(ax, footprint, edge)
            ax.plot(tx, ty, marker="+", color=marker, markersize=9, markeredgewidth=1.5)
            if window is not None:
                ax.set_xlim(max(tx - window, 0) - 0.5, min(tx + window, size_x - 1) + 0.5)
                ax.set_ylim(max(ty - window, 0) - 0.5, min(ty + window, size_y - 1) + 0.5)
            ax.tick_params(labelsize=6)
            ax.set_title(title, fontsize=8)
        in_footprint = f"\n{share:.0%} of |R| in footprint" if np.isfinite(share) else ""
        chosen = f", {rows[-1]['target_pixel']}" if rows[-1]["target_pixel"] else ""
        axes[first_row, 0].set_ylabel(f"sample {rows[-1]['sample']}, output {rows[-1]['output']:.3g}\n"
                                      f"pixel (y={ty}, x={tx}){chosen}{in_footprint}", fontsize=8)
        if per_channel:  # inputs and relevance in rows of their own: a colour bar beside each
            figure.colorbar(input_image, ax=input_axes[-n_channels:], shrink=0.9, label="input")
        figure.colorbar(relevance_image, ax=relevance_axes, shrink=0.9, label="relevance")
    if not per_channel:
        figure.colorbar(input_image, ax=input_axes, orientation="horizontal", shrink=0.5, pad=0.02, label="input")
    figure.suptitle(f"{explanation.title}{_case_text([explanation])}: relevance of one output pixel (+); "
                    f"{footprint_text}", fontsize=10)
    save_png(figure, out_png, dpi)
    return pd.DataFrame(rows)
