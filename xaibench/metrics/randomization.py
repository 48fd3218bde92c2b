"""Randomization: does the map depend on the model's parameters and on the explained output?

    model_parameter_randomization(setting, order="cascading", similarity="spearman", absolute=True)
                        (layer names top-down, [L, B] similarity of the map with the map of each
                        randomized model): Adebayo et al. (2018)'s sanity check
    mprt_cascading(setting, ...), mprt_independent(setting, ...)
                        [B]: the mean similarity over the layers (the registered scores)
    random_logit(setting, similarity="ssim", absolute=False, num_outputs=None)
                        [B]: similarity of the map with the map of a randomly chosen other output
    similarity(a, b, kind)
                        [B] float64 Spearman / Pearson / SSIM of two batches of maps

A layer is a module that owns parameters, found and ordered by its last call in a forward pass
(parameterized_layers, shared with `xaibench validate`'s cascade); it is re-initialized with its own
reset_parameters() on a deep copy under torch.manual_seed(seed + 1), the seed Quantus's MPRT uses for
every layer, so that its randomized weights equal Quantus's. The user's model and the global random
state stay as they were. Definitions and defaults: docs/metrics/randomization.md.

The MPRT and random-logit similarities are taken, by default, over the features where either map is non-zero
(support="union"): a network with a small receptive field (the radar CNNs: 1.3 % of the 64 x 64 x
4 inputs for one output pixel) gives exact zeros elsewhere in every map, randomized or not, and
Spearman over all features then reads those tied zeros as agreement: 0.9999 whatever the weights
inside the receptive field do; SSIM of the maps of two different radar pixels gave 0.98 for the
same reason. support="all" is Adebayo et al.'s, Sixt et al.'s and Quantus's form (the one compared
with Quantus). The two are the same for maps without exact zeros.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .evaluation import Metric, NotApplicable, Setting
from .robustness import _require_explain, explain_in_chunks

SIMILARITIES = ("spearman", "pearson", "ssim")
ORDERS = ("cascading", "independent")
#: skimage.metrics.structural_similarity's defaults (Quantus's ssim uses them on the flattened maps)
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03


def _rows(maps: torch.Tensor) -> torch.Tensor:
    return maps.detach().reshape(maps.shape[0], -1).double().cpu()


def _pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row; NaN where a row is constant (as scipy)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    correlation = (a * b).sum(1) / denominator
    return torch.where(denominator > 0, correlation.clamp(-1.0, 1.0), torch.full_like(correlation, float("nan")))


def _average_ranks(rows: torch.Tensor) -> torch.Tensor:
    """Ranks 1..F per row, ties sharing their average rank (scipy.stats.rankdata's 'average')."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(rows.numpy(), axis=1, method="average").astype(np.float64))


def _ssim_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per row of the flattened maps, over full windows of 7 features, data range
    max - min of both maps (skimage's structural_similarity on 1-D arrays, as Quantus's ssim calls it)."""
    if a.shape[1] < SSIM_WINDOW:
        raise ValueError(f"ssim needs maps of at least {SSIM_WINDOW} features, got {a.shape[1]}")
    both = torch.cat([a, b], dim=1)
    data_range = (both.max(1).values - both.min(1).values)[:, None]
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def window_mean(values):
        return torch.nn.functional.avg_pool1d(values[:, None], SSIM_WINDOW, stride=1)[:, 0]

    covariance_scale = SSIM_WINDOW / (SSIM_WINDOW - 1)
    mean_a, mean_b = window_mean(a), window_mean(b)
    variance_a = covariance_scale * (window_mean(a * a) - mean_a ** 2)
    variance_b = covariance_scale * (window_mean(b * b) - mean_b ** 2)
    covariance = covariance_scale * (window_mean(a * b) - mean_a * mean_b)
    index = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)
             / ((mean_a ** 2 + mean_b ** 2 + c1) * (variance_a + variance_b + c2)))
    return index.mean(1)


def similarity(a: torch.Tensor, b: torch.Tensor, kind: str = "spearman") -> torch.Tensor:
    """[B] float64 on the CPU: the similarity of a[i] and b[i] over all their elements.
    spearman: Pearson correlation of average ranks; pearson; ssim: see _ssim_rows. NaN where a
    correlation is undefined (a constant map)."""
    if kind not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {kind!r}")
    a, b = _rows(a), _rows(b)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} and {tuple(b.shape)}")
    if kind == "pearson":
        return _pearson_rows(a, b)
    if kind == "spearman":
        return _pearson_rows(_average_ranks(a), _average_ranks(b))
    return _ssim_rows(a, b)


SUPPORTS = ("union", "all")


def _compare(original: torch.Tensor, other: torch.Tensor, kind: str, absolute: bool,
             support: str = "all") -> torch.Tensor:
    """similarity(original, other) per sample; support "union": over the features where either map
    is non-zero only (module docstring: why), "all": over every feature (Adebayo et al., Quantus)."""
    if support not in SUPPORTS:
        raise ValueError(f"support must be one of {SUPPORTS}, got {support!r}")
    if absolute:
        original, other = original.abs(), other.abs()
    if support == "all":
        return similarity(original, other, kind)
    a, b = _rows(original), _rows(other)
    values = []
    for row_a, row_b in zip(a, b):
        kept = (row_a != 0) | (row_b != 0)
        if int(kept.sum()) < 2:   # nothing, or one feature, to correlate
            values.append(torch.tensor([float("nan")], dtype=torch.float64))
            continue
        values.append(similarity(row_a[kept][None], row_b[kept][None], kind))
    return torch.cat(values)


def parameterized_layers(model: nn.Module, x, select: Callable | None = None) -> list[str]:
    """Paths of the modules that own parameters, in the order of their last call in a forward pass
    (the last one is the top layer), found with hooks on a copy of the model. x: a tensor or a
    tuple of them (the first sample is enough). select: for a model with several outputs, picks
    the explained one from the model's result; then only the layers it depends on (whose
    parameters get a gradient from it) are listed, since re-initializing another output's head
    cannot change its relevance."""
    probe = copy.deepcopy(model).eval()
    first = tuple(t[:1] for t in x) if isinstance(x, tuple) else x[:1]
    calls = []
    handles = [module.register_forward_hook(lambda m, i, o, name=name: calls.append(name))
               for name, module in probe.named_modules()
               if name and any(True for _ in module.parameters(recurse=False))]

    def run():
        return probe(*first) if isinstance(first, tuple) else probe(first)

    try:
        if select is None:
            with torch.no_grad():
                run()
        else:
            for parameter in probe.parameters():
                parameter.requires_grad_(True)
                parameter.grad = None
            with torch.enable_grad():
                select(run()).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    last = {name: index for index, name in enumerate(calls)}
    if select is not None:
        last = {name: index for name, index in last.items()
                if any(p.grad is not None for p in probe.get_submodule(name).parameters(recurse=False))}
    return sorted(last, key=last.get)


def randomized_copy(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    """A deep copy with the given layers re-initialized; layers[i] gets seed + i, so the top layer
    is re-initialized the same way at every level of a cascade. The global random state is left
    as it was."""
    randomized = copy.deepcopy(model)
    for index, path in enumerate(layers):
        module = randomized.get_submodule(path)
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + index)
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
            else:  # a custom module: normal values at the scale of its current weights
                for parameter in module.parameters(recurse=False):
                    scale = float(parameter.std()) if parameter.numel() > 1 else float(parameter.abs().mean())
                    parameter.normal_(0.0, scale or 1.0)
    return randomized


def _randomized_models(model, x: torch.Tensor, order: str, seed: int):
    """Yields (layer name, randomized deep copy), top layer first: cascading re-initializes one more
    layer at each step, independent only that layer. Every reset runs under manual_seed(seed + 1)."""
    layers = parameterized_layers(model, x[:1])[::-1]
    if not layers:
        raise ValueError("the model has no layer with parameters to randomize")
    current = model
    for layer in layers:
        source = current if order == "cascading" else model
        current = randomized_copy(source, [layer], seed + 1)
        yield layer, current


def model_parameter_randomization(setting: Setting, *, order: str = "cascading", similarity: str = "spearman",
                                  absolute: bool = True, support: str = "union") -> tuple[list[str], torch.Tensor]:
    """(layer names from the output side, [L, B] float64): the similarity of setting.relevance with
    the map explain() gives for each randomized model (Adebayo et al. 2018). order "cascading":
    step l has the top l + 1 layers re-initialized; "independent": only layer l. absolute compares
    |R| (Quantus MPRT's abs=True). Lower is better: a map that ignores the parameters stays at 1."""
    _require_explain(setting, "model_parameter_randomization")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    names, rows = [], []
    for name, randomized in _randomized_models(setting.model, setting.x, order, setting.seed):
        maps = explain_in_chunks(setting.explain, randomized, setting.x, setting.target, setting.batch_size)
        names.append(name)
        rows.append(_compare(setting.relevance, maps, similarity, absolute, support))
    return names, torch.stack(rows)


def _aggregate(per_layer: torch.Tensor, aggregate: str) -> torch.Tensor:
    if aggregate == "mean":
        return per_layer.mean(0)
    if aggregate == "last":
        return per_layer[-1].clone()
    raise ValueError(f"aggregate must be 'mean' or 'last', got {aggregate!r}")


def mprt_cascading(setting: Setting, *, similarity: str = "spearman", absolute: bool = True, support: str = "union",
                   aggregate: str = "mean") -> torch.Tensor:
    """[B] float64: cascading MPRT's similarity averaged over the randomized layers (Bommer et al.
    2024), or that of the fully randomized model (aggregate="last")."""
    _, per_layer = model_parameter_randomization(setting, order="cascading", similarity=similarity,
                                                 absolute=absolute, support=support)
    return _aggregate(per_layer, aggregate)


def mprt_independent(setting: Setting, *, similarity: str = "spearman", absolute: bool = True, support: str = "union",
                     aggregate: str = "mean") -> torch.Tensor:
    """[B] float64: independent MPRT's similarity averaged over the layers (each randomized alone)."""
    _, per_layer = model_parameter_randomization(setting, order="independent", similarity=similarity,
                                                 absolute=absolute, support=support)
    return _aggregate(per_layer, aggregate)


def output_count(model, x: torch.Tensor) -> int:
    """The number of outputs per sample: model(x[:1]).flatten(1).shape[1]."""
    with torch.no_grad():
        return int(model(x[:1]).flatten(1).shape[1])


def other_outputs(target: torch.Tensor, num_outputs: int, seed: int) -> torch.Tensor:
    """LongTensor [B]: for each sample an output other than its target, uniform among the others,
    drawn as Quantus's RandomLogit does (np.random.seed(seed); randint(0, num_outputs - 1, B)
    indexes the outputs without the target)."""
    target = target.detach().cpu().long()
    if num_outputs < 2:
        raise NotApplicable(f"random_logit needs a model with at least 2 outputs, got {num_outputs}")
    if bool(((target < 0) | (target >= num_outputs)).any()):
        raise ValueError(f"target must lie in [0, {num_outputs}), got {target.tolist()}")
    index = torch.from_numpy(np.random.RandomState(seed).randint(0, num_outputs - 1, target.shape[0])).long()
    return index + (index >= target).long()


def random_logit(setting: Setting, *, similarity: str = "ssim", absolute: bool = False,
                 num_outputs: int | None = None, support: str = "union") -> torch.Tensor:
    """[B] float64: the similarity of setting.relevance with the map of another output chosen at
    random (Sixt et al. 2020): a class-sensitive map differs, so lower is better. num_outputs: how
    many outputs to draw from (default: the model's output size per sample, e.g. every pixel of a
    radar map). similarity "ssim" (Quantus's default), "spearman" or "pearson"."""
    _require_explain(setting, "random_logit")
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    if num_outputs is None:
        num_outputs = output_count(setting.model, setting.x)
    other = other_outputs(setting.target, int(num_outputs), setting.seed).to(setting.target.device)
    maps = explain_in_chunks(setting.explain, setting.model, setting.x, other, setting.batch_size)
    return _compare(setting.relevance, maps, similarity, absolute, support)


SOURCE_MPRT = ("Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim (2018), Sanity checks for saliency maps, "
               "NeurIPS")
SOURCE_RANDOM_LOGIT = ("Sixt, Granz, Landgraf (2020), When explanations lie: why many modified BP attributions "
                       "fail, ICML")

METRICS = (
    Metric("mprt_cascading", "randomization", mprt_cascading, higher_is_better=False, optimum=0.0,
           needs=("explain",), deterministic=False, source=SOURCE_MPRT),
    Metric("mprt_independent", "randomization", mprt_independent, higher_is_better=False, optimum=0.0,
           needs=("explain",), deterministic=False, source=SOURCE_MPRT),
    Metric("random_logit", "randomization", random_logit, higher_is_better=False, optimum=0.0,
           needs=("explain",), deterministic=False, source=SOURCE_RANDOM_LOGIT),
)
