"""Radar (docs/papers.md section 3), one case per network: radar1/2/3 (the encoder-decoders,
N = 1, 2, 3) and radar_vit (the vision transformer), all from one definition: test samples; two
output pixels per sample, explained as flat output indices
(y * width + x): "max_reflectivity", the pixel of the largest true reflectivity at least R pixels
from the border (anywhere when the patch is smaller than 2R + 1), and "centre" (height // 2,
width // 2). Region: the data's footprint, the (2R + 1)^2 square around the target pixel
(R = the data's footprint_radius attribute), clipped to the patch. z^B bounds: [0, 1] (the
generator clips every scaled input). Evaluation sets are not used."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from xaibench.studies.cases.case import Case, own_coords

logger = logging.getLogger(__name__)
NETWORKS = (1, 2, 3)
#: the transformer reference case, explained exactly as the encoder-decoders are
TRANSFORMER = "radar_vit"


@dataclass(frozen=True)
class RadarCase(Case):
    def samples(self, model, data, sets, n_samples):
        import xarray as xr

        from xaibench.errors import InputError

        radius = int(data.attrs.get("footprint_radius", -1))
        if radius < 0:
            raise InputError("the radar data lack the footprint_radius attribute "
                             "(make them with xaibench.studies.data.make_radar)")
        sets = dict(sets)
        subset, source = sets.pop("test")
        if sets:
            logger.info("radar: evaluation sets %s are not used (radar explains the test block)", ", ".join(sets))
        if subset.sizes["sample"] == 0:
            raise InputError("case radar: the test block of the data is empty")
        chosen = np.arange(min(n_samples, subset.sizes["sample"]))
        height, width = subset.sizes["y"], subset.sizes["x"]
        rows = []
        for index in chosen:
            reflectivity = np.asarray(subset["reflectivity"].values[index], dtype=np.float64)
            interior = np.full(reflectivity.shape, -np.inf)
            if height > 2 * radius and width > 2 * radius:
                interior[radius:height - radius, radius:width - radius] = \
                    reflectivity[radius:height - radius, radius:width - radius]
            else:
                interior = reflectivity
            peak = np.unravel_index(int(np.argmax(interior)), reflectivity.shape)  # first maximum, row-major
            for kind, (ty, tx) in (("max_reflectivity", peak), ("centre", (height // 2, width // 2))):
                rows.append((index, kind, int(ty), int(tx), float(reflectivity[ty, tx])))
        index = np.array([r[0] for r in rows])
        ty = np.array([r[2] for r in rows], dtype=np.int64)
        tx = np.array([r[3] for r in rows], dtype=np.int64)
        yy, xx = np.arange(height)[None, :, None], np.arange(width)[None, None, :]
        region = (np.abs(yy - ty[:, None, None]) <= radius) & (np.abs(xx - tx[:, None, None]) <= radius)
        inputs = subset[self.input_variable].isel(sample=index)
        samples = xr.Dataset({
            "input": inputs.drop_vars(own_coords(inputs, self.coords)),
            "target": ("sample", ty * width + tx),
            "target_y": ("sample", ty, {"long_name": "row index (y) of the explained output pixel", "units": "1"}),
            "target_x": ("sample", tx, {"long_name": "column index (x) of the explained output pixel", "units": "1"}),
            "target_pixel": ("sample", np.array([r[1] for r in rows]),
                             {"long_name": "how the output pixel was chosen: max_reflectivity (largest true "
                                           f"reflectivity at least {radius} pixels from the border) or centre"}),
            "target_reflectivity": ("sample", np.array([r[4] for r in rows]),
                                    {"long_name": "true scaled reflectivity at the target pixel (dBZ = 60 x value)",
                                     "units": "1"}),
            "subset": ("sample", np.array(["test"] * len(rows))),
            "source_sample": ("sample", np.asarray(subset["sample"].values[index], dtype=np.int64)),
            "region": (("sample", "y", "x"), region),
        })
        return samples, {"test": source}

    def figure(self, files, out_png, subset=None):
        """The first file's relevance for the first two rows (one sample's two pixels); subset unused."""
        from xaibench.studies.report import radar_relevance

        return radar_relevance(files[0], out_png, samples=(0, 1))


def radar_case(network: int | str) -> RadarCase:
    """The case of network radar<n> (an int N) or of a radar network named in full (radar_vit)."""
    name = f"radar{network}" if isinstance(network, int) else str(network)
    return RadarCase(name, "radar", "inputs", ("channel", "y", "x"), ("channel", "y", "x"),
                     ("sample", "y", "x"), None,
                     f"{name} output: scaled composite reflectivity at the target pixel (dBZ = 60 x value)", "1",
                     "footprint of the target pixel: the (2R+1)^2 square of the data's operator",
                     figure_files=("lrp.alpha1beta0__native",), input_bounds=(0.0, 1.0))


CASES = (*(radar_case(n) for n in NETWORKS), radar_case(TRANSFORMER))
