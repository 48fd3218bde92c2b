"""Measures of an explanation, in two parts.

Correctness (measures.py): is the map computed right? Conservation, agreement between libraries,
region mass, pattern and rank correlation, deletion curves, channel and time shares. Per sample,
numpy float64, on numpy arrays, torch tensors or xarray DataArrays.

Quality (the evaluation metrics, batched torch on the model's device, seeded): is the map a good
explanation? One module per category of Quantus and Bommer et al. (2024):
    faithfulness.py     faithfulness correlation, pixel flipping / region perturbation (AOPC), ROAD,
                        monotonicity correlation
    robustness.py       average and max sensitivity, local Lipschitz estimate
    randomization.py    model parameter randomization (cascading, independent), random logit
    complexity.py       sparseness (Gini), complexity (entropy)
    localization.py     top-k intersection, relevance rank accuracy, relevance mass accuracy
    axiomatic.py        completeness, non-sensitivity
    evaluation.py       what every metric is given (Setting), the registry (METRICS) and the
                        skill score against a random attribution
Definitions with their sources: docs/metrics/.
"""

from .measures import (
                       SAMPLE,
                       TINY,
                       Conservation,
                       RegionMass,
                       agreement,
                       agreement_per_sample,
                       channel_shares,
                       conservation_residual,
                       deletion_curve,
                       deletion_score,
                       ledger_closure,
                       pattern_correlation,
                       pearson,
                       region_mass,
                       residual,
                       spearman,
                       spearman_per_sample,
                       summary,
                       temporal_shares,
)

__all__ = ["SAMPLE", "TINY", "Conservation", "RegionMass", "agreement", "agreement_per_sample", "channel_shares",
           "conservation_residual", "deletion_curve", "deletion_score", "ledger_closure", "pattern_correlation",
           "pearson", "region_mass", "residual", "spearman", "spearman_per_sample", "summary", "temporal_shares"]
