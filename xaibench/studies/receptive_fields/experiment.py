"""Receptive fields of the radar networks - the encoder-decoders (N = 1, 2, 3) and the vision
transformer radar_vit - against the data's true footprint: what workflows/receptive_fields.smk
runs through `xaibench receptive-field`.

    measure(model_dir, data, ...)    TRF (exact, empirical, textbook) and ERF maps of one trained
                                     network and of the same network at initialization -> Dataset
    table_rows(measured)             one row per (state, target pixel) for receptive_fields.csv
    figure(measured, out_png)        ERF maps with the TRF box and the true footprint

(The ERF-map measurement of many pixels the engine benchmark times, erf_map_call and
erf_map_pixels, is library: xaibench.receptive_field.)

Two target pixels: the centre of the patch and one `edge_distance` pixels from the top-left
corner (its TRF is clipped by the border: the edge effect). The initialized network is the
trained one's starting point (the same seed and constructor as xaibench.studies.models.training uses).

The transformer (architecture "radar_vit"): every token attends to every token, so each output
pixel can depend on every input pixel; its TRF is the whole image (the empirical check by input
gradients confirms it). It has no textbook recurrence (trf_recurrence NaN) and no n_blocks (NaN);
its per-layer table has three stages: the patch embedding (a patch wide), the attention blocks
and the per-token decoder (the whole image). Its ERF is measured exactly as the CNNs' is, so the
question "does it learn the data's locality?" is answered by the same columns: the ERF against
the true footprint, initialized against trained.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import torch

from xaibench import receptive_field as receptive
from xaibench.errors import InputError

#: the architectures (xaibench.studies.models.setups.MODELS) whose receptive fields are measured
ARCHITECTURES = ("radar", "radar_vit")
STATES = ("initialized", "trained")
#: map name in the file -> what the table column is called
MAP_METHODS = {"gradient": "erf_gradient", "lrp.epsilon": "erf_lrp", "lrp.alpha1beta0": "erf_lrp_alpha1beta0",
               "backward_optimization": "erf_backward_optimization"}
POSITIONS = ("centre", "edge")
TABLE_COLUMNS = [
    "model", "architecture", "n_blocks", "trained", "position", "pixel_y", "pixel_x",
    "trf_analytic", "trf_empirical", "trf_recurrence", "trf_interior_smallest", "trf_interior_largest",
    "erf_gradient", "erf_lrp", "erf_lrp_alpha1beta0", "erf_backward_optimization",
    "erf_gradient_sigma", "erf_lrp_sigma", "erf_lrp_alpha1beta0_sigma",
    "true_footprint", "true_footprint_sigma", "trf_covers_footprint",
    "erf_gradient_footprint_share", "erf_lrp_footprint_share",
    "model_test_r2", "samples",
]


def initial_model(metadata: dict) -> torch.nn.Module:
    """The radar network as training built it before the first step (same constructor and seed)."""
    from xaibench.studies.models import REGISTRY

    architecture = metadata.get("architecture")
    if architecture not in ARCHITECTURES:
        raise InputError(f"receptive fields are measured on the radar networks ({', '.join(ARCHITECTURES)}); "
                         f"this model is '{architecture}'")
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(int(metadata.get("seed", 0)))
        model = REGISTRY[architecture](**metadata["constructor"])
    return model.eval()


class _Stage:
    """One row of a transformer's per-layer TRF table (the fields the CNNs' LayerReceptiveField
    rows give the netCDF file)."""

    def __init__(self, path: str, kind: str, size: int, recurrence: float):
        self.path, self.kind = path, kind
        self.size, self.size_smallest, self.size_recurrence = (size,), (size,), (recurrence,)


def _transformer_layers(model, height: int, width: int) -> list[_Stage]:
    """The TRF after each stage of a RadarViT: a patch after the patch embedding (kernel = stride,
    so the textbook recurrence holds there), the whole image after the first attention block
    (global attention: every token reads every token; no recurrence), unchanged by the
    per-token decoder."""
    whole = max(height, width)
    stages = [_Stage("patch_embedding", "Conv2d", model.patch_size, float(model.patch_size))]
    stages += [_Stage(f"blocks.{i}", "EncoderBlock (global self-attention)", whole, math.nan)
               for i in range(model.depth)]
    stages.append(_Stage("decoder", "Linear per token (unpatchify)", whole, math.nan))
    return stages


def _theoretical_fields(architecture, model, x, pixel_list, trf_samples, seed):
    """(exact TRF boxes per pixel, the empirical boxes, the per-layer rows) of one network."""
    height, width = x.shape[-2:]
    empirical = [receptive.empirical_receptive_field(model, tuple(x.shape[1:]), p, trf_samples, seed)[0]
                 for p in pixel_list]
    if architecture == "radar_vit":  # global attention: every output pixel reads the whole image
        boxes = [[(0, height - 1), (0, width - 1)] for _ in pixel_list]
        return boxes, empirical, _transformer_layers(model, height, width)
    boxes = [receptive.receptive_field_box(model, (height, width), p) for p in pixel_list]
    return boxes, empirical, receptive.receptive_field_layers(model)


def target_pixels(height: int, width: int, edge_distance: int) -> dict[str, tuple[int, int]]:
    if not 0 <= edge_distance < min(height, width):
        raise InputError(f"edge_distance {edge_distance} is outside a {height} x {width} patch")
    return {"centre": (height // 2, width // 2), "edge": (edge_distance, edge_distance)}


def measure(model_dir, data, samples: int = 16, optimization_samples: int = 4, steps: int = 20,
            step_size: float = 0.01, change_threshold: float = 0.01, edge_distance: int = 4,
            trf_samples: int = 16, seed: int = 0, log=print):
    """TRF and ERF maps of the trained network in model_dir and of its initialization, on the
    first `samples` inputs of `data` (a radar data set or its path). Returns an xarray.Dataset."""
    import xarray as xr

    from xaibench.io import read_dataset
    from xaibench.studies.models.training import load_trained

    log = log or (lambda message: None)
    for name, value in (("samples", samples), ("optimization_samples", optimization_samples), ("steps", steps),
                        ("trf_samples", trf_samples)):
        if int(value) != value or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value}")
    if not 0 <= change_threshold < 1:
        raise InputError(f"change_threshold must be in [0, 1), got {change_threshold}")
    trained, metadata = load_trained(model_dir)
    dataset = read_dataset(data) if not hasattr(data, "data_vars") else data
    if "inputs" not in dataset or "footprint_radius" not in dataset.attrs:
        raise InputError(f"{data}: not a radar data set (needs 'inputs' and the footprint_radius attribute)")
    if dataset.sizes["sample"] < samples:
        raise InputError(f"{data}: has {dataset.sizes['sample']} samples, {samples} asked for")
    x = torch.from_numpy(np.asarray(dataset["inputs"].values[:samples], dtype=np.float32))
    height, width = x.shape[-2:]
    pixels = target_pixels(height, width, edge_distance)
    pixel_list = list(pixels.values())
    footprint_radius = int(dataset.attrs["footprint_radius"])
    models = {"initialized": initial_model(metadata), "trained": trained}
    architecture = metadata["architecture"]
    n_blocks = int(metadata["constructor"]["n_blocks"]) if architecture == "radar" else None
    name = _network_name(architecture, n_blocks)
    log(f"{name}: {samples} inputs {tuple(x.shape[1:])}, pixels {pixels}, "
        f"footprint {2 * footprint_radius + 1} pixels")

    # TRF: exact boxes, the empirical check and the per-layer table (the same for both states)
    started = time.perf_counter()
    boxes, empirical, layers = _theoretical_fields(architecture, trained, x, pixel_list, trf_samples, seed)
    log(f"TRF: exact {[receptive.box_width(b) for b in boxes]}, empirical "
        f"{[receptive.box_width(b) for b in empirical]}, recurrence {layers[-1].size_recurrence[0]:g}, "
        f"interior {layers[-1].size_smallest[0]}-{layers[-1].size[0]} ({time.perf_counter() - started:.1f} s)")

    maps = np.zeros((len(STATES), len(MAP_METHODS), len(pixels), height, width), dtype=np.float64)
    for s, state in enumerate(STATES):
        model = models[state]
        for m, method in enumerate(MAP_METHODS):
            started = time.perf_counter()
            if method == "backward_optimization":
                values = receptive.backward_optimization_changes(model, x[:optimization_samples], pixel_list,
                                                                 steps=steps, step_size=step_size)
            else:
                values = receptive.effective_receptive_field(model, x, pixel_list, method)
            maps[s, m] = values.detach().double().cpu().numpy()
            log(f"  {state:11s} {method:22s} {time.perf_counter() - started:6.2f} s")

    def box_array(list_of_boxes):
        return xr.DataArray(np.array(list_of_boxes, dtype=np.int64), dims=("position", "axis", "bound"))

    ds = xr.Dataset(
        {
            "erf": xr.DataArray(maps, dims=("state", "method", "position", "y", "x"), attrs={
                "units": "1", "long_name": "effective receptive field map: mean over inputs of |attribution| "
                "summed over channels (backward_optimization: mean |optimized input - input|)"}),
            "trf_box": box_array(boxes).assign_attrs(long_name="exact TRF box (first, last) per axis, inclusive"),
            "empirical_trf_box": box_array(empirical).assign_attrs(
                long_name="bounding box of the input-gradient support of a positive-weight copy"),
            "pixel": xr.DataArray(np.array(pixel_list, dtype=np.int64), dims=("position", "axis"),
                                  attrs={"long_name": "explained output pixel (row, column)"}),
            "layer_path": ("layer", [row.path for row in layers]),
            "layer_kind": ("layer", [row.kind for row in layers]),
            "layer_trf_recurrence": ("layer", [row.size_recurrence[0] for row in layers]),
            "layer_trf_smallest": ("layer", [row.size_smallest[0] for row in layers]),
            "layer_trf_largest": ("layer", [row.size[0] for row in layers]),
        },
        coords={"state": list(STATES), "method": list(MAP_METHODS), "position": list(pixels),
                "axis": ["y", "x"], "bound": ["first", "last"], "y": np.arange(height), "x": np.arange(width)},
        attrs={
            "title": f"receptive fields of the {name}",
            "synthetic": "true: the inputs are synthetic storm-like fields (xaibench.studies.data.radar)",
            # netCDF attributes cannot be None: -1 says "not an encoder-decoder"
            "n_blocks": n_blocks if n_blocks is not None else -1, "architecture": architecture,
            "model": str(metadata.get("model", "")),
            "model_test_r2": _test_r2(metadata),
            "footprint_radius": footprint_radius, "samples": int(samples),
            # the same size measure on the true footprint kernel (summed over channels)
            "footprint_sigma_fit": _footprint_sigma(dataset),
            "optimization_samples": int(optimization_samples), "steps": int(steps), "step_size": float(step_size),
            "change_threshold": float(change_threshold), "trf_samples": int(trf_samples), "seed": int(seed),
            "mass_fraction": receptive.MASS_FRACTION,
            "convention": "see xaibench.receptive_field: exact dependency boxes; TRF of the network "
                          "= largest interior box width; recurrence = textbook r += (k-1) j",
        },
    )
    return ds


def _network_name(architecture: str, n_blocks: int | None) -> str:
    if architecture == "radar_vit":
        return "radar vision transformer (radar_vit)"
    return f"radar encoder-decoder N = {n_blocks}"


def _n_blocks(ds) -> float:
    """The encoder-decoder's N from a `measure` result (NaN for the transformer)."""
    n = int(ds.attrs["n_blocks"])
    return n if n >= 0 else math.nan


def _footprint_sigma(dataset) -> float:
    """gaussian_sigma of the data's footprint kernel summed over channels (NaN without one)."""
    if "footprint_kernel" not in dataset:
        return math.nan
    kernel = np.abs(np.asarray(dataset["footprint_kernel"].values, dtype=np.float64)).sum(axis=0)
    return receptive.gaussian_sigma(torch.from_numpy(kernel))


def _test_r2(metadata: dict) -> float:
    """The trained model's R^2 on its test split (NaN when the metadata lacks it)."""
    value = metadata.get("skill", {}).get("test", {}).get("r2")
    return float(value) if value is not None else math.nan


def table_rows(ds) -> pd.DataFrame:
    """One row per (state, target pixel) of a `measure` result (TABLE_COLUMNS)."""
    rows = []
    radius = int(ds.attrs["footprint_radius"])
    height, width = ds.sizes["y"], ds.sizes["x"]
    threshold = float(ds.attrs["change_threshold"])
    for state in ds["state"].values:
        for p, position in enumerate(ds["position"].values):
            pixel = tuple(int(v) for v in ds["pixel"].values[p])
            trf_box = [tuple(map(int, b)) for b in ds["trf_box"].values[p]]
            footprint = [(max(c - radius, 0), min(c + radius, n - 1)) for c, n in zip(pixel, (height, width))]
            row = {
                "model": str(ds.attrs.get("model", "")), "architecture": str(ds.attrs.get("architecture", "radar")),
                "n_blocks": _n_blocks(ds), "trained": state == "trained", "position": str(position),
                "pixel_y": pixel[0], "pixel_x": pixel[1],
                "trf_analytic": receptive.box_width(trf_box),
                "trf_empirical": receptive.box_width(ds["empirical_trf_box"].values[p]),
                "trf_recurrence": float(ds["layer_trf_recurrence"].values[-1]),
                "trf_interior_smallest": int(ds["layer_trf_smallest"].values[-1]),
                "trf_interior_largest": int(ds["layer_trf_largest"].values[-1]),
                "true_footprint": 2 * radius + 1,
                "true_footprint_sigma": float(ds.attrs["footprint_sigma_fit"]),
                "trf_covers_footprint": all(t0 <= f0 and f1 <= t1 for (t0, t1), (f0, f1) in zip(trf_box, footprint)),
                "model_test_r2": float(ds.attrs["model_test_r2"]) if state == "trained" else math.nan,
                "samples": int(ds.attrs["samples"]),
            }
            footprint_mask = receptive.box_mask(footprint, (height, width)).numpy()
            for method, column in MAP_METHODS.items():
                values = ds["erf"].sel({"state": state, "method": method}).values[p]
                if method == "backward_optimization":
                    row[column] = receptive.box_width(receptive.changed_box(values, threshold))
                    continue
                row[column] = receptive.mass_width(values, pixel)
                row[column + "_sigma"] = receptive.gaussian_sigma(values)
                if method in ("gradient", "lrp.epsilon"):
                    total = values.sum()
                    share = float(values[footprint_mask].sum() / total) if total else math.nan
                    row[column + "_footprint_share"] = share
            rows.append(row)
    return _integer_n_blocks(pd.DataFrame(rows, columns=TABLE_COLUMNS))


def _integer_n_blocks(table: pd.DataFrame) -> pd.DataFrame:
    """n_blocks as a nullable integer: the CNNs' rows keep "1", "2", "3" in the CSV (the regression
    gate compares it as text) and the transformer's is empty, not "nan" turning them into "1.0"."""
    table["n_blocks"] = table["n_blocks"].astype("Int64")
    return table


# ---------------------------------------------------------------------------------------------
# The figure

def figure(ds, out_png, dpi: int | None = None):
    """ERF maps of one network: rows = (initialized, centre), (trained, centre), (trained, edge);
    columns = gradient, LRP-epsilon, LRP-alpha1beta0, backward optimization. Solid: the exact TRF
    box; dashed: the true footprint; dotted: the square holding 95 % of the mass (for backward
    optimization: the box of the changed pixels)."""
    import matplotlib.style
    from matplotlib.patches import Rectangle

    from xaibench.studies.report.figures import DPI, new_figure, save_png

    table = table_rows(ds)
    radius = int(ds.attrs["footprint_radius"])
    threshold = float(ds.attrs["change_threshold"])
    panels = [("initialized", "centre"), ("trained", "centre"), ("trained", "edge")]
    with matplotlib.style.context("default"):
        fig = new_figure(3.0 * len(MAP_METHODS), 3.0 * len(panels) + 0.6)
        axes = fig.subplots(len(panels), len(MAP_METHODS), squeeze=False)
        for r, (state, position) in enumerate(panels):
            p = list(ds["position"].values).index(position)
            pixel = tuple(int(v) for v in ds["pixel"].values[p])
            row = table[(table["trained"] == (state == "trained")) & (table["position"] == position)].iloc[0]
            for c, (method, column) in enumerate(MAP_METHODS.items()):
                ax = axes[r][c]
                values = ds["erf"].sel({"state": state, "method": method}).values[p]
                peak = values.max()
                ax.imshow(values / peak if peak > 0 else values, cmap="magma_r", vmin=0, vmax=1,
                          interpolation="nearest")

                def square(box, style, colour, ax=ax):
                    (y0, y1), (x0, x1) = box
                    if y1 >= y0 and x1 >= x0:
                        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                               edgecolor=colour, linewidth=1.2, linestyle=style))

                trf_box = [tuple(int(v) for v in b) for b in ds["trf_box"].values[p]]
                square(trf_box, "-", "tab:blue")
                # zoom on the TRF box and the footprint with a margin (a 256 x 256 patch would hide
                # an 8-pixel field)
                footprint = [(max(v - radius, 0), v + radius) for v in pixel]
                (y0, y1), (x0, x1) = [(min(a[0], b[0]), max(a[1], b[1])) for a, b in zip(trf_box, footprint)]
                margin = max(4, max(y1 - y0, x1 - x0) // 4)
                ax.set_xlim(max(x0 - margin, 0) - 0.5, min(x1 + margin, ds.sizes["x"] - 1) + 0.5)
                ax.set_ylim(min(y1 + margin, ds.sizes["y"] - 1) + 0.5, max(y0 - margin, 0) - 0.5)
                square(footprint, "--", "tab:green")
                if method == "backward_optimization":
                    square(receptive.changed_box(values, threshold), ":", "black")
                    text = f"changed box {row[column]}"
                else:
                    square(receptive.mass_box(values, pixel), ":", "black")
                    text = f"95 %: {row[column]}, sigma {row[column + '_sigma']:.1f}"
                ax.plot(pixel[1], pixel[0], "+", color="tab:cyan", markersize=8)
                ax.set_title(f"{method}, {state}, {position}\n{text}", fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
        centre = table[table["position"] == "centre"].iloc[0]
        if str(ds.attrs.get("architecture", "radar")) == "radar_vit":
            trf = (f"solid blue: TRF = the whole image ({int(centre['trf_analytic'])} pixels, global attention; "
                   f"empirical {int(centre['trf_empirical'])})")
        else:
            trf = (f"solid blue: exact TRF box (centre pixel {int(centre['trf_analytic'])}; interior "
                   f"{int(centre['trf_interior_smallest'])}-{int(centre['trf_interior_largest'])}, textbook "
                   f"recurrence {centre['trf_recurrence']:g})")
        name = _network_name(str(ds.attrs.get("architecture", "radar")), int(ds.attrs["n_blocks"]))
        fig.suptitle(f"{name[0].upper()}{name[1:]}, synthetic data, maps zoomed on the TRF and the footprint\n"
                     f"{trf}; dashed green: true footprint {2 * radius + 1}; dotted: ERF (95 % of the mass)",
                     fontsize=9)
        save_png(fig, out_png, dpi or DPI)
    return table
