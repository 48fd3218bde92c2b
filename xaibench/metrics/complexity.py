"""Complexity: how concentrated a map is (Quantus's complexity category). Deterministic, map only.

    sparseness(setting, epsilon=0.0)   Gini index of |R| (Chalasani et al. 2020): higher is sparser
    complexity(setting)                Shannon entropy of |R| / sum |R| (Bhatt et al. 2020): lower is simpler

Both act on every element of the map (a channel is its own feature). Definitions: docs/metrics/complexity.md.
"""

from __future__ import annotations

import torch

from .evaluation import Metric, Setting


def _magnitudes(setting: Setting) -> torch.Tensor:
    """[B, features] float64 on the CPU: |R| per sample."""
    relevance = setting.relevance.detach()
    return relevance.reshape(relevance.shape[0], -1).double().cpu().abs()


def sparseness(setting: Setting, *, epsilon: float = 0.0) -> torch.Tensor:
    """[B] float64: the Gini index of |R| + epsilon, sum_i (2i - n - 1) a_(i) / (n sum_i a_i) with a
    sorted ascending (Chalasani et al. 2020; Hurley & Rickard 2009). 0 for a constant map, 1 - 1/n for
    a one-hot map. Quantus Sparseness adds epsilon = 1e-7 to every |R_i|, which makes it depend on the
    map's scale (g * sum a / (sum a + n 1e-7)); the default 0 keeps the index scale-free. NaN for an
    all-zero map (with epsilon 0)."""
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
    magnitudes = _magnitudes(setting) + epsilon
    count = magnitudes.shape[1]
    ordered = magnitudes.sort(dim=1).values
    weights = 2 * torch.arange(1, count + 1, dtype=torch.float64) - count - 1
    total = ordered.sum(1)
    gini = (weights * ordered).sum(1) / (count * total)
    return torch.where(total > 0, gini, torch.full_like(gini, float("nan")))


def complexity(setting: Setting) -> torch.Tensor:
    """[B] float64: the entropy -sum_i p_i log p_i of p = |R| / sum |R| (natural log, 0 log 0 = 0;
    Bhatt et al. 2020). 0 for a one-hot map, log n for a constant one. NaN for an all-zero map.
    Quantus Complexity uses log(p + 1e-12): a difference below n 1e-12."""
    magnitudes = _magnitudes(setting)
    total = magnitudes.sum(1, keepdim=True)
    shares = magnitudes / total
    entropy = -torch.special.xlogy(shares, shares).sum(1)
    return torch.where(total[:, 0] > 0, entropy, torch.full_like(entropy, float("nan")))


METRICS = (
    Metric("sparseness", "complexity", sparseness, higher_is_better=True, optimum=1.0,
           source="Chalasani, Chen, Chowdhury, Wu, Jha (2020), Concise explanations of neural networks using "
                  "adversarial training, ICML"),
    Metric("complexity", "complexity", complexity, higher_is_better=False, optimum=0.0,
           source="Bhatt, Weller, Moura (2020), Evaluating and aggregating feature-based model explanations, "
                  "IJCAI"),
)
