"""Quantus 0.6.0 runs of our faithfulness and axiomatic metrics, on the same Setting.

    QUANTUS: {our metric name: function(setting, **options) -> np.ndarray [B]}
    quantus_road_accuracy_curve(setting, percentages, noise) -> [B, P]  Quantus's own ROAD curve

Each function maps Quantus's arguments to our definition with our defaults (normalise=False, abs
as ours, softmax off, the baseline as a number, the same subset sizes and steps) and applies
setting.options[metric] like our metrics do. Quantus wants a classifier-like [B, outputs] model and
channel-first arrays: the model is wrapped (FlatInput) to take x as [B, 1, n] (flat metrics) or
[B, planes, H, W] (region perturbation), reshape it back and return model(x).flatten(1); y_batch is
our flat target. Quantus converts every input to float32 (torch.Tensor(x)) before the model: the
wrapper casts it back to the model's dtype, so a float64 model sees x rounded to float32.

Random draws: Quantus draws from numpy's global state. Where its sequence of calls is known
(faithfulness correlation: np.random.choice per run and sample; monotonicity: np.random.uniform per
group and draw; ROAD noise: np.random.randn per imputation) the call is patched to hand out our
own draws in Quantus's order, so the randomized metrics agree to rounding. The global numpy state
is restored afterwards.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from unittest import mock

import numpy as np
import quantus
import torch
from quantus.functions.perturb_func import noisy_linear_imputation as quantus_imputation
from torch import nn

from xaibench.metrics import evaluation as E
from xaibench.metrics import faithfulness as F


class FlatInput(nn.Module):
    """Takes Quantus's reshaped, float32 input, gives the model x as [N, *input] in its dtype and
    returns model(x).flatten(1)."""

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], dtype: torch.dtype):
        super().__init__()
        self.inner, self.input_shape, self.dtype = model, tuple(input_shape), dtype

    def forward(self, x):
        return self.inner(x.reshape(-1, *self.input_shape).to(self.dtype)).flatten(1)


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _options(setting: E.Setting, name: str, defaults: dict, given: dict) -> dict:
    return {**defaults, **setting.options.get(name, {}), **given}


def _scalar_baseline(setting: E.Setting, baseline=None) -> float:
    """The baseline as a number (Quantus takes only a constant here), else a ValueError."""
    baseline = setting.baseline if baseline is None else baseline
    if baseline is None:
        return 0.0
    values = torch.as_tensor(baseline).unique()
    if values.numel() != 1:
        raise ValueError("Quantus replaces features by one constant: a per-feature baseline cannot be mapped")
    return float(values)


def _planes_shape(x: torch.Tensor) -> tuple[int, ...]:
    """[B, planes, H, W] (1-D inputs: [B, 1, 1, L]) for Quantus's image metrics."""
    if x.ndim == 2:
        return (x.shape[0], 1, 1, x.shape[1])
    return (x.shape[0], int(np.prod(x.shape[1:-2], dtype=np.int64)), *x.shape[-2:])


def _model(setting: E.Setting) -> FlatInput:
    parameter = next(iter(setting.model.parameters()), None)
    dtype = parameter.dtype if parameter is not None else setting.x.dtype
    return FlatInput(setting.model, tuple(setting.x.shape[1:]), dtype).eval()


@contextlib.contextmanager
def _quiet_global_state(**patches):
    """Warnings off, numpy.random functions patched (name=function), numpy's global state restored."""
    state = np.random.get_state()  # noqa: NPY002 (Quantus draws from the global state)
    try:
        with warnings.catch_warnings(), contextlib.ExitStack() as stack:
            warnings.simplefilter("ignore")
            for name, function in patches.items():
                stack.enter_context(mock.patch.object(np.random, name, function))
            yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _run(metric, setting: E.Setting, x_shape: tuple[int, ...], relevance: np.ndarray | None = None, **patches):
    """metric(model, x_batch, y_batch, a_batch, ...) on the Setting with x reshaped to x_shape."""
    a_batch = _numpy(setting.relevance) if relevance is None else relevance
    with _quiet_global_state(**patches):
        return metric(model=_model(setting), x_batch=_numpy(setting.x).reshape(x_shape),
                      y_batch=_numpy(setting.target), a_batch=a_batch.reshape(x_shape), channel_first=True,
                      softmax=False, batch_size=setting.x.shape[0], device=str(setting.x.device))


def _original_output(setting: E.Setting) -> np.ndarray:
    """f(x) as Quantus computes it (input through float32)."""
    x = torch.Tensor(_numpy(setting.x)).to(setting.x.device)
    with torch.no_grad():
        out = _model(setting)(x)
    return _numpy(out.gather(1, setting.target.to(out.device)[:, None]).squeeze(1)).astype(np.float64)


def _flat_shape(setting: E.Setting) -> tuple[int, int, int]:
    return (setting.x.shape[0], 1, setting.x[0].numel())


class _Replay:
    """A stand-in for a numpy.random function that hands out prepared draws in order."""

    def __init__(self, draws):
        self.draws, self.calls = iter(draws), 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return next(self.draws)


# --- faithfulness -------------------------------------------------------------------------------------
def quantus_faithfulness_correlation(setting: E.Setting, **given) -> np.ndarray:
    """Quantus's FaithfulnessCorrelation (abs=False, normalise=False, the constant baseline) with
    our random subsets replayed through np.random.choice (Quantus: run by run, sample by sample)."""
    options = _options(setting, "faithfulness_correlation", {"runs": 100, "subset_size": None, "subset_fraction": 0.05,
                                                              "baseline": None}, given)
    n_samples, n_features = setting.x.shape[0], setting.x[0].numel()
    size = options["subset_size"] or F.default_subset_size(n_features, options["subset_fraction"])
    subsets = F.random_subsets(n_samples, n_features, options["runs"], size, setting.seed).numpy()
    replay = _Replay(subsets[sample, run] for run in range(options["runs"]) for sample in range(n_samples))
    metric = quantus.FaithfulnessCorrelation(nr_runs=options["runs"], subset_size=size, abs=False, normalise=False,
                                             perturb_baseline=_scalar_baseline(setting, options["baseline"]),
                                             return_aggregate=False, disable_warnings=True)
    return np.asarray(_run(metric, setting, _flat_shape(setting), choice=replay), dtype=np.float64)


def quantus_pixel_flipping_curve(setting: E.Setting, features_in_step: int = 1, baseline=None) -> np.ndarray:
    """[B, steps]: Quantus's PixelFlipping curve f(x_k) (abs=False, normalise=False)."""
    metric = quantus.PixelFlipping(features_in_step=features_in_step, abs=False, normalise=False,
                                   perturb_baseline=_scalar_baseline(setting, baseline), return_aggregate=False,
                                   disable_warnings=True)
    return np.asarray(_run(metric, setting, _flat_shape(setting)), dtype=np.float64)


def quantus_pixel_flipping_aopc(setting: E.Setting, **given) -> np.ndarray:
    """mean_k f(x) - f(x_k) over Quantus's PixelFlipping curve (first `steps` steps)."""
    options = _options(setting, "pixel_flipping_aopc", {"features_in_step": None, "steps": None, "baseline": None},
                       given)
    step = options["features_in_step"] or math.ceil(setting.x[0].numel() / 50)
    curves = quantus_pixel_flipping_curve(setting, step, options["baseline"])[:, :options["steps"]]
    return (_original_output(setting)[:, None] - curves).mean(1)


def quantus_region_perturbation_aopc(setting: E.Setting, **given) -> np.ndarray:
    """Mean of Quantus's RegionPerturbation drops f(x) - f(x_k) (order "morf", abs=False,
    normalise=False), x as [B, planes, H, W] so patches span every leading axis like ours."""
    options = _options(setting, "region_perturbation_aopc", {"patch_size": 4, "steps": None, "baseline": None}, given)
    _, n_patches = F.patch_ids(tuple(setting.x.shape[1:]), options["patch_size"])
    metric = quantus.RegionPerturbation(patch_size=options["patch_size"], order="morf",
                                        regions_evaluation=options["steps"] or n_patches, abs=False, normalise=False,
                                        perturb_baseline=_scalar_baseline(setting, options["baseline"]),
                                        return_aggregate=False, disable_warnings=True)
    return np.asarray(_run(metric, setting, _planes_shape(setting.x)), dtype=np.float64).mean(1)


def _road_noise(setting: E.Setting, percentages, noise: float, percentage_major: bool = False) -> list[np.ndarray]:
    """Our ROAD noise split into Quantus's calls: one standard normal block per (sample,
    percentage) from default_rng(seed) in our order, handed out sample by sample (quantus_road) or
    percentage by percentage (Quantus's ROAD loop), cut plane by plane (the removed values of the
    plane, 1-D: scipy returns a 1-D solution for Quantus's one-channel right-hand side)."""
    generator = np.random.default_rng(setting.seed)
    planes_shape = _planes_shape(setting.x)[1:]
    flat = setting.relevance.reshape(setting.x.shape[0], -1).double().cpu()
    ranking = torch.argsort(flat, dim=1, descending=True, stable=True).numpy()
    pieces = {}
    for sample in range(setting.x.shape[0]):
        for column, percentage in enumerate(percentages):
            removed = np.zeros(flat.shape[1], dtype=bool)
            removed[ranking[sample, :F.removed_count(flat.shape[1], percentage)]] = True
            per_plane = removed.reshape(planes_shape[0], -1).sum(1)
            solved = per_plane[per_plane < removed.size // planes_shape[0]]
            block = generator.standard_normal(int(solved.sum())) if noise else np.zeros(int(solved.sum()))
            pieces[sample, column] = [piece for piece in np.split(block, np.cumsum(solved)[:-1]) if piece.size]
    keys = sorted(pieces, key=lambda key: key[::-1]) if percentage_major else list(pieces)
    return [piece for key in keys for piece in pieces[key]]


def quantus_road(setting: E.Setting, **given) -> np.ndarray:
    """Our ROAD score, mean_p f(x) - f(x_p), with x_p made by Quantus's noisy_linear_imputation
    (plane by plane, the removed elements of that plane) and our noise replayed through
    np.random.randn: checks the imputation, Quantus's ROAD itself reports only accuracies. The
    imputed inputs reach the model in its dtype (not through float32 as in Quantus's metrics)."""
    options = _options(setting, "road", {"percentages": F.DEFAULT_PERCENTAGES, "noise": 0.01}, given)
    percentages, noise = list(options["percentages"]), options["noise"]
    replay = _Replay(_road_noise(setting, percentages, noise))
    samples = _numpy(setting.x).astype(np.float64)
    planes_shape = _planes_shape(setting.x)[1:]
    flat = setting.relevance.reshape(setting.x.shape[0], -1).double().cpu()
    ranking = torch.argsort(flat, dim=1, descending=True, stable=True).numpy()
    imputed = np.empty((len(samples), len(percentages), flat.shape[1]))
    with _quiet_global_state(randn=replay):
        for sample in range(len(samples)):
            planes = samples[sample].reshape(planes_shape)
            for column, percentage in enumerate(percentages):
                removed = np.zeros(flat.shape[1], dtype=bool)
                removed[ranking[sample, :F.removed_count(flat.shape[1], percentage)]] = True
                imputed[sample, column] = _impute_planes(planes, removed.reshape(planes_shape), noise)
    model = _model(setting)
    rows = torch.from_numpy(imputed.reshape(-1, flat.shape[1])).to(setting.x.device, model.dtype)
    with torch.no_grad():
        out = model(rows)
    targets = setting.target.to(out.device).repeat_interleave(len(percentages))
    outputs = _numpy(out.gather(1, targets[:, None]).squeeze(1)).astype(np.float64).reshape(len(samples), -1)
    return (_original_output(setting)[:, None] - outputs).mean(1)


def _impute_planes(planes: np.ndarray, removed: np.ndarray, noise: float) -> np.ndarray:
    """Quantus's imputation of each plane's removed values (a fully removed plane: zeros, as ours)."""
    result = planes.copy()
    for index, (plane, mask) in enumerate(zip(planes, removed)):
        if mask.all():
            result[index] = 0.0
        elif mask.any():
            result[index] = quantus_imputation(plane[None], np.flatnonzero(mask), noise=noise)[0]
    return result.reshape(-1)


class _ROADPerSample(quantus.ROAD):
    """Quantus's ROAD keeping the per-sample [B, P] accuracies (its postprocess averages them)."""

    def custom_postprocess(self, **kwargs) -> None:
        return None


def quantus_road_accuracy_curve(setting: E.Setting, percentages=F.DEFAULT_PERCENTAGES,
                                noise: float = 0.0) -> np.ndarray:
    """[B, P]: Quantus's own ROAD (argmax still the target) on x as [B, 1, H, W]; only inputs with
    a single plane, as Quantus imputes a pixel in every channel at once."""
    shape = _planes_shape(setting.x)
    if shape[1] != 1:
        raise ValueError(f"Quantus's ROAD imputes whole pixels: needs one plane, got {shape[1]}")
    replay = _Replay(_road_noise(setting, list(percentages), noise, percentage_major=True))
    metric = _ROADPerSample(percentages=list(percentages), noise=noise, abs=False, normalise=False,
                            return_aggregate=False, disable_warnings=True)
    scores = _run(metric, setting, shape, randn=replay)
    return np.asarray(scores[0], dtype=np.float64)


def quantus_monotonicity_correlation(setting: E.Setting, **given) -> np.ndarray:
    """Quantus's MonotonicityCorrelation (normalise=False, baseline "uniform" on [low, high)) with
    our uniform draws replayed through np.random.uniform (Quantus: group by group, draw by draw,
    one value per sample)."""
    options = _options(setting, "monotonicity_correlation", {"nr_samples": 100, "features_in_step": None,
                                                              "absolute": True, "uniform_low": 0.0,
                                                              "uniform_high": 1.0}, given)
    n_samples, n_features = setting.x.shape[0], setting.x[0].numel()
    step = options["features_in_step"] or math.ceil(n_features / 32)
    n_groups = math.ceil(n_features / step)
    draws = F.monotonicity_draws(n_samples, n_groups, options["nr_samples"], options["uniform_low"],
                                 options["uniform_high"], setting.seed)
    replay = _Replay(draws[:, group, draw] for group in range(n_groups) for draw in range(options["nr_samples"]))
    metric = quantus.MonotonicityCorrelation(nr_samples=options["nr_samples"], features_in_step=step,
                                             abs=options["absolute"], normalise=False, perturb_baseline="uniform",
                                             perturb_func_kwargs={"uniform_low": options["uniform_low"],
                                                                  "uniform_high": options["uniform_high"]},
                                             return_aggregate=False, disable_warnings=True)
    return np.asarray(_run(metric, setting, _flat_shape(setting), uniform=replay), dtype=np.float64)


# --- axiomatic ----------------------------------------------------------------------------------------
def quantus_completeness(setting: E.Setting, **given) -> np.ndarray:
    """Quantus's Completeness (abs=False, normalise=False, the constant baseline, identity output):
    a bool from the exact float equality sum R == f(x) - f(x0), returned as 0.0 (equal, our
    optimum) or 1.0 (not equal); not our residual (docs/metrics/axiomatic.md)."""
    options = _options(setting, "completeness", {"baseline": None}, given)
    metric = quantus.Completeness(abs=False, normalise=False, perturb_baseline=_scalar_baseline(setting,
                                                                                                options["baseline"]),
                                  return_aggregate=False, disable_warnings=True)
    complete = np.asarray(_run(metric, setting, _flat_shape(setting)), dtype=bool)
    return np.where(complete, 0.0, 1.0)


def quantus_non_sensitivity(setting: E.Setting, **given) -> np.ndarray:
    """Quantus's NonSensitivity (abs=True, normalise=False, features_in_step=1, the constant
    baseline) with the map given as |R| / max |R| scaled so that Quantus's single eps tests our
    attribution_eps on it; a fraction of the features when fraction=True. Quantus perturbs each
    feature once to the baseline: our perturbation="baseline", not our default "uniform"."""
    options = _options(setting, "non_sensitivity", {"attribution_eps": 1e-5, "output_eps": 1e-5, "fraction": True,
                                                     "baseline": None}, given)
    magnitude = setting.relevance.reshape(setting.x.shape[0], -1).double().abs().cpu()
    scaled = magnitude / magnitude.max(1, keepdim=True).values * options["output_eps"] / options["attribution_eps"]
    metric = quantus.NonSensitivity(eps=options["output_eps"], features_in_step=1, abs=True, normalise=False,
                                    perturb_baseline=_scalar_baseline(setting, options["baseline"]),
                                    return_aggregate=False, disable_warnings=True)
    counts = np.asarray(_run(metric, setting, _flat_shape(setting), relevance=scaled.numpy()), dtype=np.float64)
    return counts / setting.x[0].numel() if options["fraction"] else counts


QUANTUS: dict[str, Callable[..., np.ndarray]] = {
    "faithfulness_correlation": quantus_faithfulness_correlation,
    "pixel_flipping_aopc": quantus_pixel_flipping_aopc,
    "region_perturbation_aopc": quantus_region_perturbation_aopc,
    "road": quantus_road,
    "monotonicity_correlation": quantus_monotonicity_correlation,
    "completeness": quantus_completeness,
    "non_sensitivity": quantus_non_sensitivity,
}
