"""What every evaluation metric is given, how it is called, and the skill score.

    Setting(model, x, target, relevance, explain=None, mask=None, baseline=None, seed=0, ...)
                                   one batch of explained samples and the map under evaluation
    explained_output(model, x, target, batch_size)
                                   [N] float64: the explained output value of each row of x
    Metric(name, category, compute, higher_is_better, optimum, needs, deterministic, source)
    metrics() -> {name: Metric}    every registered metric (each category module's METRICS)
    random_explain(seed)           an Explain returning a uniform random map (the skill's reference)
    skill_score(value, random_value, optimum)
                                   (value - random) / (optimum - random), Bommer et al. (2024)

Conventions of every metric (the category modules faithfulness.py, robustness.py, ...):
- A feature is one element of the input: a relevance map has the input's shape, and removing,
  perturbing or ranking features acts element by element (a channel is its own feature).
- `target` is a LongTensor [B]: the flat index into model(x)[b].flatten() of the explained
  output, the same target the map explains (classifiers: the class; radar maps: the pixel).
- Outputs are explained as they are (no softmax added).
- A metric returns a float64 tensor [B] on the CPU, one value per sample; NaN where the value is
  undefined for a sample (a constant map, an empty mask), never an error for that alone.
- Randomness comes from torch.Generator(seed) (or numpy's default_rng(seed)) made inside the
  metric: the same Setting gives the same values, on CPU bit for bit.
- Nothing given is modified: model weights, x and relevance are as before the call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

#: (model, x [N, *input], target [N]) -> relevance [N, *input]
Explain = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

CATEGORIES = ("faithfulness", "robustness", "randomization", "complexity", "localization", "axiomatic")
#: the modules that register metrics, one per category
MODULES = {category: f"xaibench.metrics.{category}" for category in CATEGORIES}


class NotApplicable(ValueError):
    """A metric that has no value for this model, by definition (random logit of a one-output
    regression): evaluate() reports NaN with this message instead of failing."""


@dataclass
class Setting:
    """One batch of explained samples and the map under evaluation.

    model       the network, in eval mode (metrics never change it)
    x           [B, *input] the explained inputs
    target      LongTensor [B]: flat output index explained per sample
    relevance   [B, *input]: the map under evaluation
    explain     re-explains perturbed inputs or randomized models (robustness, randomization);
                None: metrics that need it are not computed
    mask        bool [B, *input] (or broadcastable to it): where the relevance should be
                (localization); None: those metrics are not computed
    baseline    the value a removed feature takes: a tensor broadcastable to x; None = zeros
    seed        the seed of every random draw
    batch_size  rows per forward pass of the model (perturbed copies are batched)
    """

    model: nn.Module
    x: torch.Tensor
    target: torch.Tensor
    relevance: torch.Tensor
    explain: Explain | None = None
    mask: torch.Tensor | None = None
    baseline: torch.Tensor | None = None
    seed: int = 0
    batch_size: int = 256
    options: dict = field(default_factory=dict)   # per-metric option overrides: {metric name: {option: value}}

    def __post_init__(self):
        if self.relevance.shape != self.x.shape:
            raise ValueError(f"relevance {tuple(self.relevance.shape)} and x {tuple(self.x.shape)} differ in shape")
        if self.target.shape != (self.x.shape[0],):
            raise ValueError(f"target must be [B] = [{self.x.shape[0]}], got {tuple(self.target.shape)}")

    def baseline_like(self) -> torch.Tensor:
        """The baseline broadcast to x's shape (zeros when none was given)."""
        if self.baseline is None:
            return torch.zeros_like(self.x)
        return torch.broadcast_to(self.baseline.to(self.x.device, self.x.dtype), self.x.shape)

    def with_relevance(self, relevance: torch.Tensor, explain: Explain | None = None) -> Setting:
        """The same samples with another map (and explain function): the random reference."""
        return Setting(self.model, self.x, self.target, relevance, explain, self.mask, self.baseline, self.seed,
                       self.batch_size, self.options)


def explained_output(model: nn.Module, x: torch.Tensor, target: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """[N] float64 on the CPU: model(x)[n].flatten()[target[n]], in batches, without gradients.
    `target` is [N] (one per row) or a scalar broadcast to every row."""
    target = torch.as_tensor(target, dtype=torch.long)
    if target.ndim == 0:
        target = target.expand(x.shape[0])
    parameter = next(iter(model.parameters()), None)
    device = parameter.device if parameter is not None else x.device
    values = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            out = model(x[rows].to(device)).flatten(1)
            values.append(out.gather(1, target[rows].to(out.device)[:, None]).squeeze(1).double().cpu())
    return torch.cat(values) if values else torch.zeros(0, dtype=torch.float64)


@dataclass(frozen=True)
class Metric:
    """A registered metric.

    compute(setting, **options) -> float64 [B]; options override the defaults the metric is
    scored with (the study passes setting.options[name]).
    higher_is_better, optimum: the direction and the best attainable value (the skill score's 1)
    needs: what the Setting must hold beyond model, x, target and relevance ("explain", "mask")
    deterministic: the value depends on no random draw (agreement with Quantus to 1e-6 relative)
    source: the paper that defines it (docs/metrics/ has the definition)
    """

    name: str
    category: str
    compute: Callable[..., torch.Tensor]
    higher_is_better: bool
    optimum: float
    needs: tuple[str, ...] = ()
    deterministic: bool = True
    source: str = ""

    def available(self, setting: Setting) -> bool:
        return all(getattr(setting, need) is not None for need in self.needs)

    def __call__(self, setting: Setting, **options) -> torch.Tensor:
        chosen = {**setting.options.get(self.name, {}), **options}
        return self.compute(setting, **chosen)


def from_setting(function: Callable[..., torch.Tensor], *fields: str, **defaults) -> Callable[..., torch.Tensor]:
    """A Metric's compute for a function of (model, x, target, relevance, **options): the named
    Setting fields (baseline, seed, batch_size) and `defaults` are its options unless overridden."""
    def compute(setting: Setting, **options) -> torch.Tensor:
        chosen = {**{field: getattr(setting, field) for field in fields}, **defaults, **options}
        return function(setting.model, setting.x, setting.target, setting.relevance, **chosen)

    return compute


def metrics() -> dict[str, Metric]:
    """{name: Metric} of every category module's METRICS, in category order."""
    registered = {}
    for category, module_name in MODULES.items():
        module = importlib.import_module(module_name)
        for metric in module.METRICS:
            if metric.category != category:
                raise ValueError(f"{metric.name} is registered in {module_name} but says category {metric.category}")
            if metric.name in registered:
                raise ValueError(f"metric {metric.name} registered twice")
            registered[metric.name] = metric
    return registered


def random_relevance(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A uniform random map on [0, 1) shaped like x (Bommer et al.'s random attribution)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device, x.dtype)


def random_explain(seed: int) -> Explain:
    """An Explain that returns a fresh uniform random map on every call (seeded by call order)."""
    generator = torch.Generator().manual_seed(seed)

    def explain(model, x, target):
        return torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device, x.dtype)

    return explain


def skill_score(value: float, random_value: float, optimum: float) -> float:
    """(value - random_value) / (optimum - random_value): 1 at the optimum, 0 for a random map,
    negative when worse than random (Bommer et al. 2024, eq. for the skill score). NaN when the
    random map already attains the optimum."""
    denominator = optimum - random_value
    if denominator == 0 or denominator != denominator:
        return float("nan")
    return (value - random_value) / denominator


# --- scoring one map with every metric -------------------------------------------------------------
#: errors of a backend that cannot re-explain here (not a wrong map): the value is NaN with the reason.
#: InputError: the method refuses the perturbed input (z^B bounds exceeded by robustness's noise)
CANNOT_EXPLAIN = ("BackendUnavailableError", "ExportError", "UnsupportedLayerError", "InputError")


@dataclass
class Score:
    """One metric of one map: its mean over the samples, the random map's, and the skill score."""

    metric: str
    category: str
    value: float                 # mean over the samples with a value
    random_value: float          # the same metric for a uniform random map (Bommer et al.'s reference)
    skill_score: float           # (value - random_value) / (optimum - random_value)
    optimum: float
    higher_is_better: bool
    samples: int                 # samples with a value
    seconds: float               # time of the metric on the map
    note: str = ""               # why a value is missing


def _mean(values: torch.Tensor) -> tuple[float, int]:
    values = values.double()
    finite = values[torch.isfinite(values)]
    return (float(finite.mean()) if finite.numel() else float("nan")), int(finite.numel())


#: categories whose random reference ignores the model: the same random map on every call
FIXED_REFERENCE = ("randomization",)


def fixed_random_explain(seed: int) -> Explain:
    """An Explain returning random_relevance(x, seed) whatever the model and target: a uniform
    random map that does not depend on the model (the reference of the randomization metrics)."""
    def explain(model, x, target):
        return random_relevance(x, seed)

    return explain


def random_reference(setting: Setting, names: list[str] | None = None) -> dict[str, float]:
    """{metric: mean value of a uniform random map on the same samples}; NaN where the metric is
    not available for the setting.

    The random map under evaluation is random_relevance(x, seed). What the metrics that re-explain
    get differs by category, so that the reference is the uninformative map each one is meant to
    catch, and never one that attains the optimum by construction (which leaves the skill score
    undefined): robustness gets a fresh random map on every call (noise, maximally unstable);
    randomization (FIXED_REFERENCE) gets the same random map on every call, a map independent of
    the model's weights and of the explained output: the failure the model parameter
    randomization test and the random logit test exist to detect (Adebayo et al. 2018; Sixt et al.
    2020). A fresh draw there would give a similarity near 0, the optimum, for a map that explains
    nothing."""
    registry = metrics()
    relevance = random_relevance(setting.x, setting.seed)
    redrawn = setting.with_relevance(relevance, random_explain(setting.seed))
    fixed = setting.with_relevance(relevance, fixed_random_explain(setting.seed))
    values = {}
    for name in names or list(registry):
        metric = registry[name]
        random_setting = fixed if metric.category in FIXED_REFERENCE else redrawn
        try:
            values[name] = _mean(metric(random_setting))[0] if metric.available(random_setting) else float("nan")
        except NotApplicable:
            values[name] = float("nan")
    return values


def evaluate(setting: Setting, names: list[str] | None = None, reference: dict[str, float] | None = None,
             missing_explain: str = "") -> list[Score]:
    """Score one map with the named metrics (default every one). reference: random_reference of
    the same samples (computed when not given; pass it to share it between maps). A metric whose
    needs the setting lacks, or whose re-explanation the backend cannot do here, is a NaN with
    the reason (missing_explain: the reason when setting.explain is None)."""
    import time

    registry = metrics()
    names = list(registry) if names is None else list(names)
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; metrics: {', '.join(registry)}")
    reference = random_reference(setting, names) if reference is None else reference
    scores = []
    for name in names:
        metric = registry[name]
        value, samples, seconds, note = float("nan"), 0, float("nan"), ""
        lacking = [need for need in metric.needs if getattr(setting, need) is None]
        if lacking:
            note = missing_explain if lacking == ["explain"] and missing_explain else \
                f"needs {' and '.join(lacking)}, which this setting lacks"
        else:
            start = time.perf_counter()
            try:
                value, samples = _mean(metric(setting))
                seconds = time.perf_counter() - start
            except Exception as error:
                if type(error).__name__ not in CANNOT_EXPLAIN and not isinstance(error, NotApplicable):
                    raise
                note = f"{type(error).__name__}: {' '.join(str(error).split())}"[:300]
        random_value = reference.get(name, float("nan"))
        skill = skill_score(value, random_value, metric.optimum) if value == value else float("nan")
        scores.append(Score(name, metric.category, value, random_value, skill, metric.optimum,
                            metric.higher_is_better, samples, seconds, note))
    return scores
