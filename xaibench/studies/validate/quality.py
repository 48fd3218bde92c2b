"""`xaibench validate --metrics`: the evaluation metrics (xaibench.metrics, docs/metrics/) of each
method's native map on the researcher's own model and inputs, as skill scores against a uniform
random map (Bommer et al. 2024). Opt-in, because the re-explaining metrics (robustness,
randomization) cost tens of explanations per method; the checks stay fast without it.

These are measurements, not verdicts: a low skill says how the map behaves under that metric,
not that it was computed wrong (the checks say that). Localization needs a known region, which a
researcher's file does not give, so those metrics are not computed here."""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from torch import nn

from xaibench.metrics import evaluation as E


class ChosenOutput(nn.Module):
    """The model with its explained output chosen (a tuple index or dict key), so that the metrics
    see one tensor [B, ...] as for any model."""

    def __init__(self, model: nn.Module, output=None):
        super().__init__()
        self.model, self.output = model, output

    def forward(self, x):
        result = self.model(x)
        return result if self.output is None else result[self.output]


def quality_rows(model: nn.Module, x, explanations: dict, dtype: torch.dtype, seed: int,
                 method_options: dict | None = None, output=None, names: list[str] | None = None) -> list[dict]:
    """One dict per method x metric: method, metric, category, value, random_value, skill_score,
    optimum, higher_is_better, samples, seconds, note. explanations: {method: the native
    Explanation validate made}. A model with several inputs gets one row saying why not."""
    import xaibench

    if isinstance(x, tuple):
        return [{"method": method, "metric": "", "note": "the evaluation metrics take a model with one input"}
                for method in explanations]
    # the metrics run the model in the explanations' precision: on a copy, the user's model stays as it is
    wrapped = ChosenOutput(copy.deepcopy(model).to(dtype), output).eval()
    rows, reference = [], None
    for method, explanation in explanations.items():
        options = dict((method_options or {}).get(method, {}))

        def explain(model_, inputs, target, method=method, options=options):
            # the metrics hand back the wrapper (or a randomized copy of it): explain what it wraps
            inner = model_.model if isinstance(model_, ChosenOutput) else model_
            return xaibench.explain(inner, inputs, method, target=target, dtype=dtype, output=output,
                                    **options).relevance.detach()

        if explanation.target.dtype == torch.bool or explanation.target.shape != (x.shape[0],):
            rows.append({"method": method, "metric": "", "note": "the evaluation metrics explain one output index "
                         "per sample; this target is a mask or several indices"})
            continue
        target = explanation.target.long().cpu()
        setting = E.Setting(wrapped, x.to(dtype), target, explanation.relevance.detach().to(dtype), explain, seed=seed)
        if reference is None:   # one random map for every method: the same samples
            reference = E.random_reference(setting, names)
        for score in E.evaluate(setting, names, reference):
            rows.append({"method": method, **asdict(score)})
    return rows
