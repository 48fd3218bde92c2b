"""Robustness: how much a map changes when the input changes a little (Quantus's robustness category).

    average_sensitivity(setting, samples=50, radius=0.1, relative=True)
                        mean over x' = x + U[-radius, radius] of ||e(x) - e(x')|| / ||e(x)||
    max_sensitivity(setting, samples=50, radius=0.1, relative=True)
                        the same, maximum over the perturbations
    local_lipschitz_estimate(setting, samples=50, std=0.1)
                        max over x' = x + N(0, std^2) of ||e(x) - e(x')|| / ||x - x'||

The perturbed copies of every sample are re-explained together, setting.batch_size rows per call of
setting.explain. The noise is drawn from numpy's RandomState(setting.seed) in Quantus's order (one
[B, features] draw per perturbation step), so that np.random.seed(seed) before a Quantus metric gives
the same perturbations and the values agree to rounding. Definitions and defaults: docs/metrics/robustness.md.
"""

from __future__ import annotations

import numpy as np
import torch

from .evaluation import Metric, Setting

#: Quantus's lipschitz_constant adds this to the denominator ||x - x'||
LIPSCHITZ_EPSILON = 1e-10


def _require_explain(setting: Setting, name: str):
    if setting.explain is None:
        raise ValueError(f"{name} needs setting.explain (a function re-explaining perturbed inputs)")


def _require_positive(value, name: str, integer: bool = False):
    if integer and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")


def explain_in_chunks(explain, model, x: torch.Tensor, target: torch.Tensor, batch_size: int) -> torch.Tensor:
    """explain(model, x, target) on setting.batch_size rows at a time, concatenated: [N, *input] on x's
    device. Perturbed copies of a batch go through the explainer together, not one by one."""
    maps = []
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        relevance = explain(model, x[rows], target[rows])
        maps.append(torch.as_tensor(relevance).detach().to(x.device))
    return torch.cat(maps)


def _perturbed_rows(x: torch.Tensor, noise: np.ndarray) -> torch.Tensor:
    """x (repeated per perturbation step) plus float64 noise, rounded once to x's dtype, as Quantus
    does (it adds float64 numpy noise to the float32 input and stores the result as float32)."""
    repeated = x.reshape(1, x.shape[0], -1).double().cpu() + torch.from_numpy(noise)
    return repeated.reshape(-1, *x.shape[1:]).to(x.device, x.dtype)


def _perturbation_ratios(setting: Setting, samples: int, draw, numerator_only: bool, over_input: bool):
    """[B, samples] float64: ||e(x) - e(x')|| divided by ||e(x)|| (sensitivity, relative), by 1 (plain)
    or by ||x - x'|| (Lipschitz). draw(rng, steps) -> float64 noise [steps, B, features], drawn from one
    RandomState in perturbation order; steps are chunked so that each explain call has at most
    setting.batch_size rows."""
    x, relevance = setting.x, setting.relevance
    batch = x.shape[0]
    rng = np.random.RandomState(setting.seed)
    original = relevance.detach().reshape(batch, -1).double().cpu()
    steps_per_chunk = max(1, setting.batch_size // max(batch, 1))
    ratios = []
    for first_step in range(0, samples, steps_per_chunk):
        steps = min(steps_per_chunk, samples - first_step)
        noise = draw(rng, steps)
        perturbed = _perturbed_rows(x, noise)
        target = setting.target.to(x.device).repeat(steps)
        maps = explain_in_chunks(setting.explain, setting.model, perturbed, target, setting.batch_size)
        difference = original[None] - maps.reshape(steps, batch, -1).double().cpu()
        numerator = torch.linalg.vector_norm(difference, dim=-1)
        if over_input:
            moved = perturbed.reshape(steps, batch, -1).cpu() - x.reshape(1, batch, -1).cpu()
            numerator = numerator / (torch.linalg.vector_norm(moved.double(), dim=-1) + LIPSCHITZ_EPSILON)
        elif not numerator_only:
            numerator = numerator / torch.linalg.vector_norm(original, dim=-1)[None]
        ratios.append(numerator)
    return torch.cat(ratios).T.contiguous()


def _sensitivities(setting: Setting, samples: int, radius: float, relative: bool, name: str) -> torch.Tensor:
    _require_explain(setting, name)
    _require_positive(samples, "samples", integer=True)
    _require_positive(radius, "radius")
    features = setting.x[0].numel()
    batch = setting.x.shape[0]

    def draw(rng, steps):
        return rng.uniform(low=-radius, high=radius, size=(steps, batch, features))

    return _perturbation_ratios(setting, samples, draw, numerator_only=not relative, over_input=False)


def average_sensitivity(setting: Setting, *, samples: int = 50, radius: float = 0.1,
                        relative: bool = True) -> torch.Tensor:
    """[B] float64: the mean over `samples` perturbations x' = x + U[-radius, radius] (every feature
    independently) of ||e(x) - e(x')||_2 / ||e(x)||_2 (Yeh et al. 2019; Bhatt et al. 2020; Quantus
    AvgSensitivity with lower_bound=radius, uniform noise, Frobenius norms). relative=False drops the
    division by ||e(x)|| (Yeh et al.'s plain form, which depends on the map's scale). Lower is better,
    0 is a map that does not move. NaN for an all-zero map when relative."""
    return _sensitivities(setting, samples, radius, relative, "average_sensitivity").mean(1)


def max_sensitivity(setting: Setting, *, samples: int = 50, radius: float = 0.1,
                    relative: bool = True) -> torch.Tensor:
    """[B] float64: the maximum over `samples` perturbations x' = x + U[-radius, radius] of
    ||e(x) - e(x')||_2 / ||e(x)||_2 (Yeh et al. 2019's max-sensitivity, estimated by sampling as
    Quantus MaxSensitivity). Options as average_sensitivity."""
    return _sensitivities(setting, samples, radius, relative, "max_sensitivity").max(1).values


def local_lipschitz_estimate(setting: Setting, *, samples: int = 50, std: float = 0.1) -> torch.Tensor:
    """[B] float64: the maximum over `samples` perturbations x' = x + N(0, std^2) (every feature) of
    ||e(x) - e(x')||_2 / (||x - x'||_2 + 1e-10) (Alvarez-Melis & Jaakkola 2018; Quantus
    LocalLipschitzEstimate with perturb_std=std, Euclidean norms, normalise=False). Lower is better."""
    _require_explain(setting, "local_lipschitz_estimate")
    _require_positive(samples, "samples", integer=True)
    _require_positive(std, "std")
    features = setting.x[0].numel()
    batch = setting.x.shape[0]

    def draw(rng, steps):
        return rng.normal(loc=0.0, scale=std, size=(steps, batch, features))

    ratios = _perturbation_ratios(setting, samples, draw, numerator_only=False, over_input=True)
    return ratios.max(1).values


SOURCE_SENSITIVITY = ("Yeh, Hsieh, Suggala, Inouye, Ravikumar (2019), On the (in)fidelity and sensitivity of "
                      "explanations, NeurIPS")
SOURCE_LIPSCHITZ = ("Alvarez-Melis, Jaakkola (2018), On the robustness of interpretability methods, "
                    "ICML Workshop on Human Interpretability in Machine Learning")

METRICS = (
    Metric("average_sensitivity", "robustness", average_sensitivity, higher_is_better=False, optimum=0.0,
           needs=("explain",), deterministic=False, source=SOURCE_SENSITIVITY),
    Metric("max_sensitivity", "robustness", max_sensitivity, higher_is_better=False, optimum=0.0,
           needs=("explain",), deterministic=False, source=SOURCE_SENSITIVITY),
    Metric("local_lipschitz_estimate", "robustness", local_lipschitz_estimate, higher_is_better=False, optimum=0.0,
           needs=("explain",), deterministic=False, source=SOURCE_LIPSCHITZ),
)
