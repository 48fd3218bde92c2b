"""The interface of a reference case: what explain_case and metrics_case ask of it.

A case is a frozen `Case` (subclassed once per kind of data) with
    fields     name, kind, model (the trained network, training.MODEL_NAMES; default: name),
               input_variable, input_dims, coords, region_dims, target_class (classifiers: the
               logit explained), output_long_name, output_units, region_long_name,
               input_bounds (z^B bounds; None: min and max over the data and the explained
               inputs), figure_files (the method__backend files its figure draws by default)
    samples    default_evaluation(data, n_samples) -> {subset: (Dataset, description)}
               samples(model, data, sets, n_samples) -> (samples Dataset, {subset: description})
               data_region(data) -> the region when it is one for the whole file, else None
               model_input(inputs) -> the tensor the model takes
    explaining zbox_bounds(data, samples) -> (low, high)
    metrics    pattern_correlation(ds, reference) -> per-sample values or None
               shares(ds) -> {share column: per-sample values} (its extra measures)
    figure     figure(files, out_png, subset) draws the case's relevance figure
The generic parts (subsets, finishing, options, files, metrics) are xaibench.studies.cases.pipeline's.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

#: every attribute a case provides (tests/test_cases.py checks each registered case)
INTERFACE = ("name", "kind", "model", "input_variable", "input_dims", "coords", "region_dims", "target_class",
             "output_long_name", "output_units", "region_long_name", "input_bounds", "figure_files", "classifier",
             "default_evaluation", "samples", "data_region", "model_input", "zbox_bounds", "pattern_correlation",
             "shares", "figure")


@dataclass(frozen=True)
class Case(abc.ABC):
    """A reference network and what is explained of it."""

    name: str                      # the case's name (the registry key; files' `case` attribute)
    kind: str                      # the data it reads: enso, convection, radar
    input_variable: str
    input_dims: tuple[str, ...]    # the input's dimensions after `sample`
    coords: tuple[str, ...]        # coordinates copied from the data
    region_dims: tuple[str, ...]
    target_class: int | None       # classifiers: the logit explained
    output_long_name: str
    output_units: str
    region_long_name: str
    figure_files: tuple[str, ...] = ()
    input_bounds: tuple[float, float] | None = None
    model: str = ""                # the trained network (training.MODEL_NAMES); "" means `name`

    def __post_init__(self):
        if not self.model:
            object.__setattr__(self, "model", self.name)

    @property
    def classifier(self) -> bool:
        return self.target_class is not None

    # --- samples ---------------------------------------------------------------------------------
    def default_evaluation(self, data, n_samples: int) -> dict:
        """{subset: (Dataset, description)}: the evaluation sets used when none are given."""
        return {}

    @abc.abstractmethod
    def samples(self, model, data, sets: dict, n_samples: int):
        """(samples, sources): the chosen rows of `sets` ({subset: (Dataset, description)}, the test
        block first) as a Dataset with input, target, subset, source_sample (region, extras),
        and {subset: description} of the subsets used."""

    def data_region(self, data):
        """The expected region when one holds for every sample (a DataArray over region_dims), else None."""
        return None

    def model_input(self, inputs: np.ndarray):
        """The data's input array [sample, *input dims] as the model takes it."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))

    # --- explaining ------------------------------------------------------------------------------
    def zbox_bounds(self, data, samples) -> tuple[float, float]:
        """input_bounds, or the min and max over the data file and every explained input."""
        if self.input_bounds is not None:
            return float(self.input_bounds[0]), float(self.input_bounds[1])
        values = [np.asarray(data[self.input_variable].values), np.asarray(samples["input"].values)]
        return float(min(v.min() for v in values)), float(max(v.max() for v in values))

    # --- metrics ---------------------------------------------------------------------------------
    def pattern_correlation(self, ds, reference):
        """Per-sample pattern correlation of ds's relevance with the reference's, or None (not measured)."""
        return None

    def shares(self, ds) -> dict:
        """{column: per-sample values} of the case's share columns (pipeline.SHARE_COLUMNS)."""
        return {}

    # --- figure ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def figure(self, files, out_png, subset: str | None = None):
        """Draw the case's relevance figure from explanation files (figure_files by default)."""


@dataclass(frozen=True)
class ClassifierCase(Case):
    """A classifier case: the target_class logit of the rows `pick` chooses in every subset."""

    no_sample_hint: str = ""       # appended to the error when no subset has a sample to explain

    @abc.abstractmethod
    def pick(self, model, subset, n_samples: int) -> np.ndarray:
        """Indices (positions) of the samples to explain in one subset."""

    def sample_variables(self, subset, chosen: np.ndarray) -> dict:
        """Extra per-sample variables of the chosen rows (e.g. the region when it is per sample)."""
        return {}

    def samples(self, model, data, sets, n_samples):
        import xarray as xr

        from xaibench.errors import InputError

        parts, sources = [], {}
        for name, (subset, source) in sets.items():
            sources[name] = source
            chosen = self.pick(model, subset, n_samples)
            if chosen.size:
                parts.append(self._rows(model, subset, chosen, name))
        if not parts:
            raise InputError(f"case {self.name}: no sample to explain in {', '.join(sets)} " + self.no_sample_hint)
        return xr.concat(parts, dim="sample", data_vars="all", coords="minimal", compat="override"), sources

    def _rows(self, model, subset, chosen, name):
        import xarray as xr

        inputs = subset[self.input_variable].isel(sample=chosen)
        prediction = predict(model, self.model_input(inputs.values)).argmax(1).numpy()
        n = chosen.size
        variables = {
            "input": inputs.drop_vars(own_coords(inputs, self.coords)),
            "target": ("sample", np.full(n, self.target_class, dtype=np.int64)),
            "label": ("sample", np.asarray(subset["label"].values[chosen], dtype=np.int64), subset["label"].attrs),
            "prediction": ("sample", prediction.astype(np.int64)),
            "subset": ("sample", np.array([name] * n)),
            "source_sample": ("sample", np.asarray(subset["sample"].values[chosen], dtype=np.int64)),
        }
        variables.update(self.sample_variables(subset, chosen))
        return xr.Dataset(variables).drop_vars("sample", errors="ignore")


def predict(model, x, batch: int = 256):
    """The model's outputs for x, in batches, without gradients, on the CPU."""
    import torch

    parameter = next(iter(model.parameters()))
    outputs = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch):
            outputs.append(model(x[start:start + batch].to(parameter.device, parameter.dtype)).cpu())
    return torch.cat(outputs)


def call_text(kwargs: dict) -> str:
    """Keyword arguments as `key=value, ...`, sorted (the description of a generated subset)."""
    return ", ".join(f"{key}={value!r}" for key, value in sorted(kwargs.items()))


def own_coords(array, coords) -> list[str]:
    """The coordinates of `array` that are not among `coords` (to drop)."""
    return [c for c in array.coords if c not in coords]
