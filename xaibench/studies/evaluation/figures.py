"""The evaluation's figures and summary, from the scores (scoring.py) of every case.

    category_skills(scores) -> DataFrame     mean skill score per case x method x backend x category
    case_figure(scores, case, out_png)       methods x categories, the mean skill in each cell
    tradeoff(scores) -> DataFrame            Bommer et al.'s trade-off, per case: the salience
                                             methods' mean category skill minus the sensitivity methods'
    groundtruth_ranking(scores, correlations_csv) -> DataFrame
                                             per faithfulness metric: Spearman, over the methods, of
                                             its value with the methods' correlation with the truth
    summary(scores_csvs, out_dir, correlations_csv=None)
                                             scores.csv (all cases), skills.csv, tradeoff.csv,
                                             groundtruth_ranking.csv and summary.md
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from xaibench.errors import InputError
from xaibench.metrics.evaluation import CATEGORIES
from xaibench.studies.report.figures import default_style, new_figure, save_png

#: Bommer et al. (2024)'s two families: salience methods (the map is "how much of the output
#: this input carries") and sensitivity methods (how much the output would change)
SALIENCE = ("input_x_gradient", "integrated_gradients", "lrp.z", "lrp.epsilon", "lrp.zplus", "lrp.alpha1beta0",
            "lrp.alpha2beta1", "lrp.zbox", "lrp.preset_a", "lrp.preset_b", "lrp.epsilon_plus",
            "lrp.epsilon_alpha2beta1", "lrp.epsilon_plus_flat", "lrp.gamma", "lrp.flat", "lrp.wsquare",
            "deep_taylor")
SENSITIVITY = ("gradient", "smoothgrad")
#: what Bommer et al. found for the salience family against the sensitivity family
BOMMER_FINDING = {"robustness": ">=", "faithfulness": ">", "complexity": ">", "randomization": "<"}


def category_skills(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean skill score per (case, method, backend, category) over the metrics with a value."""
    finite = scores[np.isfinite(scores["skill_score"])]
    return (finite.groupby(["case", "method", "backend", "category"], sort=False)["skill_score"].mean()
            .rename("skill").reset_index())


@default_style
def case_figure(scores: pd.DataFrame, case: str, out_png) -> Path:
    """One case: rows method (backend), columns the categories, the mean skill score in each
    cell (blue above the random map, red below, saturated beyond +-1; grey where not computed)."""
    skills = category_skills(scores[scores["case"] == case])
    if skills.empty:
        raise InputError(f"no skill score for case {case!r}")
    skills["row"] = skills["method"] + " (" + skills["backend"] + ")"
    grid = skills.pivot(index="row", columns="category", values="skill")
    grid = grid.reindex(columns=[c for c in CATEGORIES if c in grid.columns])
    limit = 1.0   # the skill score's scale: beyond +-1 the colour saturates, the number says how far
    figure = new_figure(1.2 * grid.shape[1] + 3.5, 0.32 * grid.shape[0] + 1.4)
    axis = figure.add_subplot()
    colormap = matplotlib.colormaps["RdBu"].with_extremes(bad="0.85")
    image = axis.imshow(np.ma.masked_invalid(grid.values), cmap=colormap, vmin=-limit, vmax=limit, aspect="auto")
    axis.set_xticks(range(grid.shape[1]), grid.columns, rotation=30, ha="right")
    axis.set_yticks(range(grid.shape[0]), grid.index)
    for (i, j), value in np.ndenumerate(grid.values):
        if np.isfinite(value):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if abs(value) > 0.6 * limit else "black")
    axis.set_title(f"{case}: mean skill score per category (1 optimum, 0 random map)")
    figure.colorbar(image, ax=axis, shrink=0.8, label="skill score (colour saturates beyond +-1)")
    return save_png(figure, out_png)


def tradeoff(scores: pd.DataFrame) -> pd.DataFrame:
    """Per case and category: the mean skill of the salience and of the sensitivity methods (native
    backend), their difference, and whether the sign is Bommer et al.'s (BOMMER_FINDING)."""
    skills = category_skills(scores[scores["backend"] == "native"])
    rows = []
    for (case, category), group in skills.groupby(["case", "category"], sort=False):
        salience = group[group["method"].isin(SALIENCE)]["skill"]
        sensitivity = group[group["method"].isin(SENSITIVITY)]["skill"]
        if salience.empty or sensitivity.empty:
            continue
        difference = float(salience.mean() - sensitivity.mean())
        expected = BOMMER_FINDING.get(category)
        holds = {">": difference > 0, ">=": difference >= -0.05, "<": difference < 0}.get(expected)
        rows.append({"case": case, "category": category, "salience": float(salience.mean()),
                     "sensitivity": float(sensitivity.mean()), "difference": difference,
                     "bommer": {">": "salience higher", ">=": "similar or salience higher",
                                "<": "sensitivity higher"}.get(expected, ""),
                     "holds": "" if holds is None else ("yes" if holds else "no")})
    return pd.DataFrame(rows, columns=["case", "category", "salience", "sensitivity", "difference", "bommer",
                                       "holds"])


def groundtruth_ranking(scores: pd.DataFrame, correlations_csv) -> pd.DataFrame:
    """Per faithfulness metric on the ground-truth network: Spearman over the (method, backend)
    pairs of the metric's value (oriented so that larger is better) with the pair's mean Pearson
    correlation with the exact attribution (the ground-truth study's correlations.csv)."""
    from scipy.stats import spearmanr

    truth = pd.read_csv(correlations_csv)
    truth = truth[(truth["model"] == "trained") & (truth["reference"] == "ground_truth")]
    truth = truth.set_index(["method", "backend"])["mean_pearson"]
    faithful = scores[(scores["case"] == "groundtruth") & (scores["category"] == "faithfulness")]
    rows = []
    for metric, group in faithful.groupby("metric", sort=False):
        group = group[np.isfinite(group["value"])]
        keys = [key for key in zip(group["method"], group["backend"]) if key in truth.index]
        if len(keys) < 3:
            continue
        values = group.set_index(["method", "backend"]).loc[keys, "value"].to_numpy()
        oriented = values if bool(group["higher_is_better"].iloc[0]) else -values
        correlation = spearmanr(oriented, truth.loc[keys].to_numpy()).statistic
        best_metric = keys[int(np.argmax(oriented))]
        best_truth = keys[int(np.argmax(truth.loc[keys].to_numpy()))]
        rows.append({"metric": metric, "pairs": len(keys), "spearman_with_truth": float(correlation),
                     "best_by_metric": "/".join(best_metric), "best_by_truth": "/".join(best_truth)})
    return pd.DataFrame(rows, columns=["metric", "pairs", "spearman_with_truth", "best_by_metric", "best_by_truth"])


def summary(scores_csvs, out_dir, correlations_csv=None, figures: bool = True) -> list[Path]:
    """Concatenate the cases' scores and write scores.csv, skills.csv, tradeoff.csv,
    groundtruth_ranking.csv (with correlations_csv), summary.md and one figure per case
    (<case>.png) into out_dir. Returns the files written."""
    from xaibench.io import write_csv, write_text

    paths = [Path(path) for path in scores_csvs]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise InputError(f"missing scores: {', '.join(missing)}")
    scores = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_csv(scores, out / "scores.csv")]
    skills = category_skills(scores)
    written.append(write_csv(skills, out / "skills.csv"))
    trade = tradeoff(scores)
    written.append(write_csv(trade, out / "tradeoff.csv"))
    ranking = None
    if correlations_csv is not None and (scores["case"] == "groundtruth").any():
        ranking = groundtruth_ranking(scores, correlations_csv)
        written.append(write_csv(ranking, out / "groundtruth_ranking.csv"))
    written.append(write_text(out / "summary.md", _markdown(scores, skills, trade, ranking)))
    if figures:
        for case in dict.fromkeys(scores["case"]):
            written.append(case_figure(scores, case, out / f"{case}.png"))
    return written


def _markdown(scores, skills, trade, ranking) -> str:
    native = skills[skills["backend"] == "native"]
    lines = ["# Evaluation skill scores", "",
             "Mean skill score per category (1: the metric's optimum, 0: a uniform random map, negative: worse "
             "than random; Bommer et al. 2024), native backend. All inputs are synthetic except where a case "
             "says otherwise (README, 'Data').", ""]
    for case, group in native.groupby("case", sort=False):
        grid = group.pivot(index="method", columns="category", values="skill")
        grid = grid.reindex(columns=[c for c in CATEGORIES if c in grid.columns])
        lines += [f"## {case}", "", _table(grid.reset_index(), digits=2), ""]
    if not trade.empty:
        held = trade[trade["holds"] != ""]
        lines += ["## Bommer et al.'s trade-off", "",
                  f"Salience methods (LRP, input x gradient, integrated gradients) against sensitivity methods "
                  f"(gradient, SmoothGrad), mean category skill, native backend. The finding holds in "
                  f"{(held['holds'] == 'yes').sum()} of {len(held)} case x category cells.", "",
                  _table(trade, digits=2), ""]
    if ranking is not None and not ranking.empty:
        lines += ["## Faithfulness against the ground truth", "",
                  "Spearman rank correlation, over the method x backend pairs, of each faithfulness metric (larger "
                  "= more faithful) with the pair's mean correlation with the exact attribution.", "",
                  _table(ranking, digits=2), ""]
    counted = scores[np.isfinite(scores["quantus_value"])]
    if not counted.empty:
        lines += ["## Quantus beside ours", "",
                  f"{len(counted)} rows carry Quantus 0.6.0's value of the same metric on the same samples "
                  "(scores.csv, quantus_value); results/evaluation/quantus.md has the agreement and timing.", ""]
    return "\n".join(lines)


def _table(frame: pd.DataFrame, digits: int = 3) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)

    def cell(value):
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.{digits}f}"
        return str(value)

    return "\n".join([header, rule] + ["| " + " | ".join(cell(v) for v in row) + " |"
                                       for row in frame.itertuples(index=False)])
