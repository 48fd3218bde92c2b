"""Quantus 0.6.0 runs of our robustness, randomization, complexity and localization metrics.

    QUANTUS: {our metric name: function(setting, **options) -> np.ndarray [B]}

Each function hands Quantus the same Setting as our metric (model, x, map, target, explain, mask,
seed) with its arguments mapped to our default definition: normalise=False, abs as ours, softmax off,
the same noise bounds and sample counts. Quantus wants a classifier-like [B, outputs] model and
numpy arrays: the model is wrapped to return model(x).flatten(1) (FlatOutput), y_batch is our flat
target, and the explain function gets the unwrapped model back. Where Quantus draws random numbers
from numpy's global state (the sensitivities' and the Lipschitz estimate's noise, RandomLogit's
other class), np.random.seed(setting.seed) before the call reproduces our draws; MPRT seeds torch
itself with seed + 1 per layer, as we do. The global numpy and torch states are restored afterwards.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from xaibench.metrics import evaluation as E
from xaibench.metrics import localization, randomization


class FlatOutput(nn.Module):
    """model(x).flatten(1): a classifier-like output whose column is our flat target index."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.inner = model

    def forward(self, x):
        return self.inner(x).flatten(1)


def _unwrapped(model: nn.Module) -> nn.Module:
    return model.inner if isinstance(model, FlatOutput) else model


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _explain_function(setting: E.Setting) -> Callable:
    """Quantus's explain_func(model, inputs, targets) -> numpy map, running setting.explain."""

    def explain(model, inputs, targets, **kwargs):
        x = torch.as_tensor(np.asarray(inputs)).to(setting.x.device, setting.x.dtype)
        target = torch.as_tensor(np.asarray(targets)).long().to(setting.x.device)
        return _numpy(setting.explain(_unwrapped(model), x, target)).astype(np.asarray(inputs).dtype)

    return explain


@contextlib.contextmanager
def _seeded_global_state(seed: int):
    """np.random.seed(seed) for Quantus's draws; numpy's and torch's global states restored after."""
    numpy_state = np.random.get_state()  # noqa: NPY002 (Quantus draws from the global state)
    with torch.random.fork_rng(devices=[]):
        np.random.seed(seed)  # noqa: NPY002
        try:
            yield
        finally:
            np.random.set_state(numpy_state)  # noqa: NPY002


def _run(metric, setting: E.Setting, with_explain: bool = False, s_batch=None, a_batch=None, x_batch=None):
    """metric(model, x_batch, y_batch, a_batch, ...) on the Setting, as float64 [B]."""
    x_batch = _numpy(setting.x) if x_batch is None else x_batch
    arguments = dict(model=FlatOutput(setting.model).eval(), x_batch=x_batch, y_batch=_numpy(setting.target),
                     a_batch=_numpy(setting.relevance) if a_batch is None else a_batch, s_batch=s_batch,
                     channel_first=True, softmax=False, batch_size=setting.x.shape[0],
                     device=str(setting.x.device))
    if with_explain:
        arguments["explain_func"] = _explain_function(setting)
    with warnings.catch_warnings(), _seeded_global_state(setting.seed):
        warnings.simplefilter("ignore")
        scores = metric(**arguments)
    return scores


def _float_array(scores) -> np.ndarray:
    return np.asarray(scores, dtype=np.float64)


# --- robustness -------------------------------------------------------------------------------------------

def quantus_average_sensitivity(setting: E.Setting, samples: int = 50, radius: float = 0.1,
                                relative: bool = True) -> np.ndarray:
    """Quantus AvgSensitivity(lower_bound=radius, nr_samples=samples, uniform noise, Frobenius norms).
    Quantus always divides by ||e(x)||: relative=False has no Quantus counterpart."""
    import quantus

    if not relative:
        raise ValueError("Quantus's AvgSensitivity always divides by ||e(x)|| (relative=True)")
    metric = quantus.AvgSensitivity(nr_samples=samples, lower_bound=radius, abs=False, normalise=False,
                                    disable_warnings=True)
    return _float_array(_run(metric, setting, with_explain=True))


def quantus_max_sensitivity(setting: E.Setting, samples: int = 50, radius: float = 0.1,
                            relative: bool = True) -> np.ndarray:
    """Quantus MaxSensitivity with the same mapping as quantus_average_sensitivity."""
    import quantus

    if not relative:
        raise ValueError("Quantus's MaxSensitivity always divides by ||e(x)|| (relative=True)")
    metric = quantus.MaxSensitivity(nr_samples=samples, lower_bound=radius, abs=False, normalise=False,
                                    disable_warnings=True)
    return _float_array(_run(metric, setting, with_explain=True))


def quantus_local_lipschitz_estimate(setting: E.Setting, samples: int = 50, std: float = 0.1) -> np.ndarray:
    """Quantus LocalLipschitzEstimate(perturb_std=std, nr_samples=samples, normalise=False): its
    default normalise=True would divide every map by its max |R|."""
    import quantus

    metric = quantus.LocalLipschitzEstimate(nr_samples=samples, perturb_std=std, perturb_mean=0.0, abs=False,
                                            normalise=False, disable_warnings=True)
    return _float_array(_run(metric, setting, with_explain=True))


# --- randomization ----------------------------------------------------------------------------------------

SIMILARITY_FUNCTIONS = {"spearman": "correlation_spearman", "pearson": "correlation_pearson", "ssim": "ssim"}


def _similarity_function(kind: str):
    """Quantus's similarity function, returning an array: its ssim returns a list, on which MPRT calls
    .tolist() and fails (a Quantus 0.6.0 defect), so it is wrapped."""
    import quantus

    if kind not in SIMILARITY_FUNCTIONS:
        raise ValueError(f"similarity must be one of {tuple(SIMILARITY_FUNCTIONS)}, got {kind!r}")
    function = getattr(quantus.similarity_func, SIMILARITY_FUNCTIONS[kind])

    def as_array(a, b, **kwargs):
        return np.asarray(function(a, b, **kwargs))

    return as_array


def quantus_mprt_layers(setting: E.Setting, order: str = "cascading", similarity: str = "spearman",
                        absolute: bool = True) -> dict[str, np.ndarray]:
    """{layer name: [B] similarity} of Quantus MPRT (layer_order top_down / independent, seed =
    setting.seed, normalise=False), without its "original" entry; names as in our model."""
    import quantus

    layer_order = {"cascading": "top_down", "independent": "independent"}[order]
    metric = quantus.MPRT(similarity_func=_similarity_function(similarity), layer_order=layer_order,
                          seed=setting.seed, abs=absolute, normalise=False, disable_warnings=True)
    scores = _run(metric, setting, with_explain=True)
    return {name.removeprefix("inner."): _float_array(values) for name, values in scores.items()
            if name != "original"}


def _quantus_mprt(setting: E.Setting, order: str, similarity: str, absolute: bool, aggregate: str) -> np.ndarray:
    """The mean over the randomized layers (Quantus's return_average_correlation would also average in
    the "original" entry, the map against itself, see docs/metrics/randomization.md), or the last."""
    per_layer = list(quantus_mprt_layers(setting, order, similarity, absolute).values())
    if order == "independent":   # Quantus goes bottom-up there; ours is top-down in both orders
        per_layer = per_layer[::-1]
    if aggregate == "mean":
        return np.stack(per_layer).mean(0)
    if aggregate == "last":
        return per_layer[-1]
    raise ValueError(f"aggregate must be 'mean' or 'last', got {aggregate!r}")


def _only_all_features(support: str) -> None:
    if support != "all":
        raise ValueError(f"Quantus compares maps over every feature (support='all'), not support={support!r}")


def quantus_mprt_cascading(setting: E.Setting, similarity: str = "spearman", absolute: bool = True,
                           aggregate: str = "mean", support: str = "all") -> np.ndarray:
    _only_all_features(support)
    return _quantus_mprt(setting, "cascading", similarity, absolute, aggregate)


def quantus_mprt_independent(setting: E.Setting, similarity: str = "spearman", absolute: bool = True,
                             aggregate: str = "mean", support: str = "all") -> np.ndarray:
    _only_all_features(support)
    return _quantus_mprt(setting, "independent", similarity, absolute, aggregate)


def quantus_random_logit(setting: E.Setting, similarity: str = "ssim", absolute: bool = False,
                         num_outputs: int | None = None, support: str = "all") -> np.ndarray:
    """Quantus RandomLogit(num_classes = the model's outputs, seed = setting.seed, normalise=False).
    One Quantus batch holds every sample: Quantus reseeds per batch, so samples b and b + batch_size
    would otherwise get the same draw."""
    import quantus

    _only_all_features(support)

    if num_outputs is None:
        num_outputs = randomization.output_count(setting.model, setting.x)
    metric = quantus.RandomLogit(similarity_func=_similarity_function(similarity), num_classes=int(num_outputs),
                                 seed=setting.seed, abs=absolute, normalise=False, disable_warnings=True)
    return _float_array(_run(metric, setting, with_explain=True))


# --- complexity -------------------------------------------------------------------------------------------

def quantus_sparseness(setting: E.Setting, epsilon: float = 0.0) -> np.ndarray:
    """Quantus Sparseness(abs=True, normalise=False). It adds 1e-7 to |R| whatever epsilon says, so
    it agrees with ours to about n 1e-7 / sum |R| (relative)."""
    import quantus

    metric = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)
    return _float_array(_run(metric, setting))


def quantus_complexity(setting: E.Setting) -> np.ndarray:
    """Quantus Complexity(abs=True, normalise=False)."""
    import quantus

    metric = quantus.Complexity(abs=True, normalise=False, disable_warnings=True)
    return _float_array(_run(metric, setting))


# --- localization -----------------------------------------------------------------------------------------

def _localization_run(metric, setting: E.Setting, relevance: str) -> np.ndarray:
    """Quantus wants one-channel masks [B, 1, ...] shaped like x after the channel: every array goes
    in flattened to [B, 1, features] (the localisation metrics flatten them anyway). The map is the
    one Quantus should rank: R ("raw", Quantus abs=False), |R|, or max(R, 0) ("positive", which
    Quantus cannot do itself, so it gets the clipped map)."""
    batch = setting.x.shape[0]
    mask = _numpy(localization._mask_rows(setting)).reshape(batch, 1, -1)
    relevance_rows = _numpy(localization._relevance_rows(setting, relevance)).reshape(batch, 1, -1)
    x_rows = _numpy(setting.x).reshape(batch, 1, -1)
    return _float_array(_run(metric, setting, s_batch=mask, a_batch=relevance_rows, x_batch=x_rows))


def quantus_top_k_intersection(setting: E.Setting, k: int | float = 0.1, relevance: str = "raw") -> np.ndarray:
    """Quantus TopKIntersection(k = our k as a count, abs=False, normalise=False) on R, |R| or max(R, 0)."""
    import quantus

    count = localization.feature_count(k, setting.relevance[0].numel())
    metric = quantus.TopKIntersection(k=count, abs=False, normalise=False, disable_warnings=True)
    return _localization_run(metric, setting, relevance)


def quantus_relevance_rank_accuracy(setting: E.Setting, relevance: str = "raw") -> np.ndarray:
    """Quantus RelevanceRankAccuracy(abs=False, normalise=False) on the mapped map."""
    import quantus

    metric = quantus.RelevanceRankAccuracy(abs=False, normalise=False, disable_warnings=True)
    return _localization_run(metric, setting, relevance)


def quantus_relevance_mass_accuracy(setting: E.Setting, relevance: str = "positive") -> np.ndarray:
    """Quantus RelevanceMassAccuracy(abs=False, normalise=False): it divides the raw sums; given
    max(R, 0) it computes Arras et al.'s positive-relevance definition, our default."""
    import quantus

    metric = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)
    return _localization_run(metric, setting, relevance)


#: the options under which our metric computes Quantus's definition, where our default differs:
#: MPRT and random logit compare the maps over the union of their supports by default
#: (xaibench.metrics.randomization)
QUANTUS_FORM = {"mprt_cascading": {"support": "all"}, "mprt_independent": {"support": "all"},
                "random_logit": {"support": "all"}}

QUANTUS: dict[str, Callable[..., np.ndarray]] = {
    "average_sensitivity": quantus_average_sensitivity,
    "max_sensitivity": quantus_max_sensitivity,
    "local_lipschitz_estimate": quantus_local_lipschitz_estimate,
    "mprt_cascading": quantus_mprt_cascading,
    "mprt_independent": quantus_mprt_independent,
    "random_logit": quantus_random_logit,
    "sparseness": quantus_sparseness,
    "complexity": quantus_complexity,
    "top_k_intersection": quantus_top_k_intersection,
    "relevance_rank_accuracy": quantus_relevance_rank_accuracy,
    "relevance_mass_accuracy": quantus_relevance_mass_accuracy,
}
