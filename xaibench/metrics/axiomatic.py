"""Axiomatic: does the map obey a property every faithful map must have?

    completeness(model, x, target, relevance, baseline=None)        |sum R - (f(x) - f(x0))| / |f(x) - f(x0)|
    non_sensitivity(model, x, target, relevance, ...)               features where "zero attribution" and
                                                                    "no effect on the output" disagree

Conventions as xaibench.metrics.evaluation (float64 [B] on the CPU, seeded draws made here, nothing
given is modified). Definitions, defaults and the differences from Quantus: docs/metrics/axiomatic.md.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .evaluation import Metric, explained_output, from_setting
from .faithfulness import baseline_for, check_inputs, outputs_of_rows, positive_int

__all__ = ["completeness", "non_sensitivity", "zero_attribution", "METRICS"]


def completeness(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                 baseline=None, batch_size: int = 256) -> torch.Tensor:
    """[B] float64: |sum R - (f(x) - f(x0))| / |f(x) - f(x0)|, x0 the baseline (default zeros):
    the share of the output difference the map lacks or adds (Sundararajan et al. 2017's
    completeness; 0 for integrated gradients with an exact integral). NaN where f(x) = f(x0).

    For LRP this is not the ledger's closure: LRP conserves f(x) minus what biases and stabilisers
    absorb, not f(x) - f(0); this residual measures how far the map is from explaining the
    difference to the baseline. Cost: 2 model calls per sample."""
    target, relevance = check_inputs(x, target, relevance)
    difference = explained_output(model, x, target, batch_size) - explained_output(
        model, baseline_for(x, baseline), target, batch_size)
    total = relevance.reshape(x.shape[0], -1).double().sum(1).cpu()
    residual = (total - difference).abs()
    return torch.where(difference != 0, residual / difference.abs(), torch.full_like(residual, math.nan))


def zero_attribution(relevance: torch.Tensor, eps: float) -> torch.Tensor:
    """[B, n] bool: |R_i| < eps * max_j |R_j| per sample (every feature of an all-zero map)."""
    magnitude = relevance.reshape(relevance.shape[0], -1).double().abs()
    largest = magnitude.max(1, keepdim=True).values
    return (magnitude < eps * largest) | (magnitude == 0)


def non_sensitivity(model: nn.Module, x: torch.Tensor, target: torch.Tensor, relevance: torch.Tensor, *,
                    perturbation: str = "uniform", nr_samples: int = 4, uniform_low: float = 0.0,
                    uniform_high: float = 1.0, baseline=None, features_in_step: int | None = 1,
                    attribution_eps: float = 1e-5, output_eps: float = 1e-5, fraction: bool = True, seed: int = 0,
                    batch_size: int = 256, groups: int = 1024) -> torch.Tensor:
    """[B] float64: the number (fraction=False) or the fraction of feature groups where "zero
    attribution" and "no effect on the output" disagree: |A0 symmetric-difference F0|, the paper's
    non-sensitivity (Nguyen & Martinez 2020). Lower is better, 0 the optimum.

    Groups: features_in_step consecutive features (input order; 1 = per feature, the paper);
    features_in_step=None: ceil(features / groups), at most `groups` groups (the registry's cost cap).
    A0: groups whose every |R_i| < attribution_eps * max |R| (relative to the map's largest value).
    F0: groups whose perturbation changes the output by less than output_eps (absolute) in every
    one of nr_samples draws. perturbation "uniform": each feature of the group independently
    U(uniform_low, uniform_high) per draw (the paper perturbs with random values); "baseline": the
    group set to the baseline once (Quantus's NonSensitivity; misses features whose value already
    is the baseline). Cost: groups * nr_samples + 1 model calls per sample ("baseline": groups + 1)."""
    target, relevance = check_inputs(x, target, relevance)
    if perturbation not in ("uniform", "baseline"):
        raise ValueError(f"perturbation must be 'uniform' or 'baseline', got {perturbation!r}")
    n_samples, n_features = x.shape[0], x[0].numel()
    if features_in_step is None:
        features_in_step = math.ceil(n_features / positive_int(groups, "groups"))
    features_in_step = positive_int(features_in_step, "features_in_step", n_features)
    draws = 1 if perturbation == "baseline" else positive_int(nr_samples, "nr_samples")
    n_groups = math.ceil(n_features / features_in_step)
    group_of_feature = torch.arange(n_features, device=x.device) // features_in_step
    zero = torch.zeros(n_samples, n_groups, dtype=torch.long)
    zero.index_add_(1, group_of_feature.cpu(), (~zero_attribution(relevance, attribution_eps)).long().cpu())
    zero_groups = zero == 0
    no_effect = no_effect_groups(model, x, target, group_of_feature, n_groups, draws, perturbation,
                                 (uniform_low, uniform_high), baseline_for(x, baseline), output_eps, seed, batch_size)
    disagreements = (zero_groups ^ no_effect).sum(1).double()
    return disagreements / n_groups if fraction else disagreements


def no_effect_groups(model, x, target, group_of_feature, n_groups, draws, perturbation, bounds, baseline,
                     output_eps, seed, batch_size) -> torch.Tensor:
    """[B, groups] bool: perturbing the group changes the explained output by less than output_eps
    in every draw. Uniform values from torch.Generator(seed), [draws, n] per sample in order."""
    generator = torch.Generator().manual_seed(seed)
    n_samples = x.shape[0]
    original = explained_output(model, x, target, batch_size)
    flat_x, flat_baseline = x.reshape(n_samples, -1), baseline.reshape(n_samples, -1)
    result = torch.empty(n_samples, n_groups, dtype=torch.bool)
    for sample in range(n_samples):
        if perturbation == "uniform":
            values = torch.rand(draws, flat_x.shape[1], generator=generator, dtype=torch.float64)
            values = (bounds[0] + (bounds[1] - bounds[0]) * values).to(x.device, x.dtype)
        else:
            values = flat_baseline[sample][None, :]

        def make_rows(start, stop, sample=sample, values=values):
            index = torch.arange(start, stop, device=x.device)
            group, draw = index // draws, index % draws
            in_group = group_of_feature[None, :] == group[:, None]
            rows = torch.where(in_group, values[draw], flat_x[sample][None, :])
            return rows.reshape(stop - start, *x.shape[1:])

        outputs = outputs_of_rows(model, make_rows, n_groups * draws, target[sample], batch_size)
        result[sample] = ((outputs - original[sample]).abs() < output_eps).reshape(n_groups, draws).all(1)
    return result


METRICS = (
    Metric("completeness", "axiomatic", from_setting(completeness, "baseline", "batch_size"), higher_is_better=False,
           optimum=0.0, source="Sundararajan, Taly & Yan (2017), ICML"),
    Metric("non_sensitivity", "axiomatic",
           from_setting(non_sensitivity, "baseline", "seed", "batch_size", features_in_step=None),
           higher_is_better=False, optimum=0.0, deterministic=False,
           source="Nguyen & Martinez (2020), arXiv 2007.07584"),
)
