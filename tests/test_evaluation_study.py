"""The evaluation study (xaibench/studies/evaluation/): scoring a case's files, the random
reference and the skill score, the summary (trade-off, ranking against the ground truth, figures),
the commands, and `xaibench validate --metrics`."""

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xaibench.cli import main as cli_main
from xaibench.metrics import evaluation as E
from xaibench.studies.data import make_enso, write_dataset
from xaibench.studies.evaluation import figures, scoring
from xaibench.studies.models.training import train

METHODS = ["gradient", "input_x_gradient", "lrp.epsilon"]
#: metrics cheap enough for the tests, one or more of each category
CHEAP = ["faithfulness_correlation", "pixel_flipping_aopc", "average_sensitivity", "mprt_cascading", "sparseness",
         "complexity", "relevance_mass_accuracy", "top_k_intersection", "completeness"]


@pytest.fixture(scope="module")
def enso(tmp_path_factory):
    """A small trained ENSO case explained by three methods on native and zennit (4 samples)."""
    from xaibench.studies.cases import pipeline

    root = tmp_path_factory.mktemp("enso_evaluation")
    write_dataset(make_enso(n_samples=300, seed=0), root / "data.nc")
    train("enso", root / "data.nc", {"epochs": 6, "lr": 0.01}, out=root / "model")
    pipeline.explain_case("enso", root / "model", root / "data.nc", root / "explanations", methods=METHODS,
                          backends=["native", "zennit"], n_samples=2)
    return root


def test_skill_score_is_one_at_the_optimum_zero_at_random_and_nan_when_random_is_optimal():
    assert E.skill_score(1.0, 0.2, 1.0) == 1.0
    assert E.skill_score(0.2, 0.2, 1.0) == 0.0
    assert E.skill_score(0.6, 0.2, 1.0) == pytest.approx(0.5)
    assert E.skill_score(0.5, 2.0, 0.0) == pytest.approx(0.75)    # lower is better: optimum 0
    assert E.skill_score(3.0, 2.0, 0.0) == pytest.approx(-0.5)    # worse than random
    assert math.isnan(E.skill_score(0.5, 1.0, 1.0))
    assert math.isnan(E.skill_score(0.5, math.nan, 1.0))


def test_score_case_writes_one_row_per_map_and_metric_with_its_reasons(enso, tmp_path):
    lines = []
    table = scoring.score_case(enso / "explanations", enso / "model", tmp_path / "scores.csv", metrics=CHEAP,
                               explain_backends=["native"], log=lines.append)
    # one log line per map, each saying how far the case is
    counted = [re.match(r"\[\s*(\d+)/(\d+) ", line).groups() for line in lines]
    assert counted == [(str(k), str(2 * len(METHODS))) for k in range(1, 2 * len(METHODS) + 1)]
    written = pd.read_csv(tmp_path / "scores.csv")
    assert list(written.columns) == list(scoring.SCORE_COLUMNS)
    assert len(written) == len(table) == 2 * len(METHODS) * len(CHEAP)
    assert set(written["case"]) == {"enso"}
    native = written[written["backend"] == "native"]
    # every metric has a value on native: the Nino3.4 box is the localization mask, native re-explains
    assert native["value"].notna().all(), native[native["value"].isna()][["method", "metric", "note"]]
    assert native["random_value"].notna().all()
    # zennit does not re-explain here: its robustness and randomization rows say why, the others have values
    zennit = written[written["backend"] == "zennit"]
    reexplaining = zennit["metric"].isin(["average_sensitivity", "mprt_cascading"])
    assert zennit[reexplaining]["value"].isna().all()
    assert zennit[reexplaining]["note"].str.contains("explain_backends").all()
    assert zennit[~reexplaining]["value"].notna().all()
    # the random reference is shared: one value per metric whatever the map
    assert (written.groupby("metric")["random_value"].nunique() == 1).all()


def test_a_map_equal_to_the_random_reference_has_skill_zero(enso):
    """The random reference is the same draw as E.random_relevance(x, seed): scoring that very map
    gives value == random value, skill 0, on every deterministic metric."""
    from xaibench.studies.models.training import load_trained

    _, setting = scoring.case_setting(enso / "explanations", enso / "model", "lrp.epsilon")
    model, _ = load_trained(enso / "model")
    random_map = E.random_relevance(setting.x, setting.seed)
    entry = scoring.Entry("random", "native", setting.x, setting.target, random_map, None, "no explain")
    table = scoring.score("enso", model, [entry], mask=setting.mask,
                          metrics=["sparseness", "complexity", "relevance_mass_accuracy", "pixel_flipping_aopc"])
    finite = table[np.isfinite(table["skill_score"])]
    assert len(finite) >= 3
    assert np.allclose(finite["skill_score"], 0.0, atol=1e-12)


def test_an_unknown_metric_is_refused_naming_it(enso, tmp_path, capsys):
    code = cli_main(["evaluation", "case", "--explanations", str(enso / "explanations"), "--model",
                     str(enso / "model"), "--out", str(tmp_path / "s.csv"), "--metrics", "sparseness,flatness"])
    assert code == 1   # the CLI's status for a refused input: one line, no traceback
    err = capsys.readouterr().err
    assert "unknown metric(s) flatness" in err and "Traceback" not in err
    assert not (tmp_path / "s.csv").exists()


def test_options_of_an_unknown_metric_are_refused_not_ignored(enso, tmp_path, capsys):
    code = cli_main(["evaluation", "case", "--explanations", str(enso / "explanations"), "--model",
                     str(enso / "model"), "--out", str(tmp_path / "s.csv"), "--metrics", "sparseness",
                     "--options", '{"sparsenes": {"epsilon": 1e-7}}'])
    assert code == 1
    assert "sparsenes (in options)" in capsys.readouterr().err


def test_the_metrics_command_lists_every_category(capsys):
    assert cli_main(["evaluation", "metrics"]) == 0
    out = capsys.readouterr().out
    for category in E.CATEGORIES:
        assert category in out


def _frame(rows):
    columns = list(scoring.SCORE_COLUMNS)
    base = {column: math.nan for column in columns}
    return pd.DataFrame([{**base, **row} for row in rows], columns=columns)


def test_the_tradeoff_compares_the_two_families_per_category():
    rows = []
    for method, faithful, random_ in (("lrp.epsilon", 0.8, 0.1), ("integrated_gradients", 0.6, 0.3),
                                      ("gradient", 0.2, 0.7), ("smoothgrad", 0.0, 0.9)):
        rows.append({"case": "c", "method": method, "backend": "native", "metric": "f", "category": "faithfulness",
                     "skill_score": faithful})
        rows.append({"case": "c", "method": method, "backend": "native", "metric": "r",
                     "category": "randomization", "skill_score": random_})
    # another backend does not enter the trade-off
    rows.append({"case": "c", "method": "gradient", "backend": "zennit", "metric": "f", "category": "faithfulness",
                 "skill_score": 5.0})
    trade = figures.tradeoff(_frame(rows)).set_index("category")
    assert trade.loc["faithfulness", "salience"] == pytest.approx(0.7)
    assert trade.loc["faithfulness", "sensitivity"] == pytest.approx(0.1)
    assert trade.loc["faithfulness", "holds"] == "yes"
    assert trade.loc["randomization", "difference"] == pytest.approx(0.2 - 0.8)
    assert trade.loc["randomization", "holds"] == "yes"
    rows[1]["skill_score"] = 2.0    # lrp.epsilon now beats the sensitivity methods on randomization
    assert figures.tradeoff(_frame(rows)).set_index("category").loc["randomization", "holds"] == "no"


def test_the_groundtruth_ranking_is_the_spearman_of_metric_and_truth(tmp_path):
    truth = pd.DataFrame({"method": ["a", "b", "c", "d"], "backend": "native", "model": "trained",
                          "reference": "ground_truth", "mean_pearson": [0.9, 0.5, 0.1, -0.2]})
    truth.to_csv(tmp_path / "correlations.csv", index=False)
    rows = []
    for method, faithful, inverse in (("a", 4.0, 0.1), ("b", 3.0, 0.2), ("c", 2.0, 0.3), ("d", 1.0, 0.4)):
        rows.append({"case": "groundtruth", "method": method, "backend": "native", "metric": "up",
                     "category": "faithfulness", "value": faithful, "higher_is_better": True})
        rows.append({"case": "groundtruth", "method": method, "backend": "native", "metric": "down",
                     "category": "faithfulness", "value": inverse, "higher_is_better": False})
        rows.append({"case": "groundtruth", "method": method, "backend": "native", "metric": "flip",
                     "category": "faithfulness", "value": -faithful, "higher_is_better": True})
    ranking = figures.groundtruth_ranking(_frame(rows), tmp_path / "correlations.csv").set_index("metric")
    assert ranking.loc["up", "spearman_with_truth"] == pytest.approx(1.0)
    assert ranking.loc["down", "spearman_with_truth"] == pytest.approx(1.0)   # lower is better: oriented
    assert ranking.loc["flip", "spearman_with_truth"] == pytest.approx(-1.0)
    assert ranking.loc["up", "best_by_metric"] == "a/native"


def test_summary_writes_the_tables_the_markdown_and_a_figure_per_case(enso, tmp_path):
    scoring.score_case(enso / "explanations", enso / "model", tmp_path / "enso.csv", metrics=CHEAP)
    written = figures.summary([tmp_path / "enso.csv"], tmp_path / "out")
    names = {path.name for path in written}
    assert {"scores.csv", "skills.csv", "tradeoff.csv", "summary.md", "enso.png"} <= names
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "## enso" in text and "trade-off" in text
    assert (tmp_path / "out" / "enso.png").stat().st_size > 1000


def test_validate_metrics_adds_skill_scores_and_metrics_csv_without_touching_the_model(tmp_path):
    from xaibench.studies.validate.checks import validate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(4, 3, 4))
    report = validate(model, inputs=x, methods=["lrp.epsilon", "gradient"], backends=[],
                      metrics=["sparseness", "average_sensitivity", "mprt_cascading", "top_k_intersection"],
                      out=tmp_path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    rows = {(row["method"], row["metric"]): row for row in report.metrics}
    assert len(rows) == 2 * 4
    assert math.isfinite(rows[("lrp.epsilon", "sparseness")]["skill_score"])
    assert math.isfinite(rows[("gradient", "mprt_cascading")]["value"])
    assert math.isnan(rows[("gradient", "top_k_intersection")]["value"])       # no region in a user's file
    assert "mask" in rows[("gradient", "top_k_intersection")]["note"]
    assert (tmp_path / "metrics.csv").exists()
    assert "evaluation metrics: skill score" in report.table()
    # measurements, not verdicts: the checks and the exit status are those of a run without --metrics
    plain = validate(model, inputs=x, methods=["lrp.epsilon", "gradient"], backends=[])
    assert [(c.check, c.status) for c in plain.checks] == [(c.check, c.status) for c in report.checks]
    assert plain.exit_code == report.exit_code


def test_validate_refuses_an_unknown_metric_before_any_work():
    from xaibench.errors import InputError
    from xaibench.studies.validate.checks import validate

    with pytest.raises(InputError, match="flatness"):
        validate(nn.Linear(3, 2), inputs=np.zeros((2, 3)), metrics=["flatness"])
    with pytest.raises(InputError, match="flatness"):   # one name as a string, not its letters
        validate(nn.Linear(3, 2), inputs=np.zeros((2, 3)), metrics="flatness")


def test_the_quantus_table_agrees_on_every_metric_or_names_the_known_difference(tmp_path):
    """quantus_check.compare on a float64 dense network: each metric Quantus has either agrees to
    1e-6 (randomized ones too: the draws are replayed) or is one of the KNOWN_DIFFERENCES, with
    the reason in the note; quantus.csv and quantus.md are written with both times."""
    pytest.importorskip("quantus")
    from xaibench.studies.evaluation import quantus_check

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(24, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
    x = torch.randn(4, 2, 12, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 1])

    def explain(model_, x_, target_):
        import xaibench

        return xaibench.explain(model_, x_, "input_x_gradient", target=target_).relevance

    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :5] = True
    options = {"faithfulness_correlation": {"runs": 10, "subset_size": 4},
               "monotonicity_correlation": {"nr_samples": 3, "features_in_step": 4},
               "non_sensitivity": {"nr_samples": 1, "features_in_step": 4},
               "average_sensitivity": {"samples": 4}, "max_sensitivity": {"samples": 4},
               "local_lipschitz_estimate": {"samples": 4}, "pixel_flipping_aopc": {"features_in_step": 4},
               "region_perturbation_aopc": {"patch_size": 2}, "road": {"noise": 0.0}}
    setting = E.Setting(model, x, target, explain(model, x, target), explain, mask=mask, seed=1, options=options)
    table = quantus_check.compare(tmp_path, {"dense": setting}, repeats=1)
    assert set(table["metric"]) == set(quantus_check.quantus_functions())
    for row in table.itertuples(index=False):
        if row.agrees is True:
            assert row.max_relative_difference <= quantus_check.TOLERANCE, row
        else:
            assert row.agrees == "known difference", row
            assert quantus_check.KNOWN_DIFFERENCES[row.metric] in row.note
    assert (table["agrees"] == True).sum() >= 12  # noqa: E712
    assert table["ours_seconds"].notna().all() and table["quantus_seconds"].notna().all()
    text = (tmp_path / "quantus.md").read_text()
    assert "Quantus 0.6.0" in text and "| dense | sparseness |" in text


def test_a_method_that_refuses_the_perturbed_input_is_a_nan_with_its_reason_and_a_bug_still_raises():
    """z^B refuses inputs outside its bounds, which robustness's noise produces: that metric is NaN
    with the reason; an unexpected error of the explain function is not swallowed."""
    from xaibench.errors import InputError

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 2)).double().eval()
    x = torch.rand(3, 6, dtype=torch.float64)
    target = torch.zeros(3, dtype=torch.long)

    def refusing(model_, x_, target_):
        raise InputError("the input lies outside the z^B bounds low <= x <= high")

    setting = E.Setting(model, x, target, x.clone(), refusing, options={"average_sensitivity": {"samples": 2}})
    (score,) = E.evaluate(setting, ["average_sensitivity"])
    assert math.isnan(score.value) and "z^B bounds" in score.note
    assert math.isfinite(score.random_value)    # the random reference does not call the method

    def broken(model_, x_, target_):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        E.evaluate(setting.with_relevance(x.clone(), broken), ["average_sensitivity"])


def test_a_metric_without_a_value_for_this_model_is_a_nan_with_its_reason():
    """random logit of a one-output regression (the ground-truth network) has no other output."""
    model = nn.Sequential(nn.Linear(5, 1)).double().eval()
    x = torch.randn(3, 5, dtype=torch.float64)
    setting = E.Setting(model, x, torch.zeros(3, dtype=torch.long), x.clone(), lambda m, x_, t: x_.clone())
    (score,) = E.evaluate(setting, ["random_logit"])
    assert math.isnan(score.value) and math.isnan(score.skill_score)
    assert "at least 2 outputs" in score.note


def test_a_step_cap_above_the_number_of_patches_takes_every_patch():
    """One configuration serves ENSO (12 patches of 8 x 8) and radar (256): steps is a cap."""
    from xaibench.metrics import faithfulness

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, 2)).double().eval()
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    target = torch.tensor([0, 1])
    relevance = torch.randn(2, 16, 16, dtype=torch.float64)
    every = faithfulness.region_perturbation_aopc(model, x, target, relevance, patch_size=8)
    capped = faithfulness.region_perturbation_aopc(model, x, target, relevance, patch_size=8, steps=20)
    assert torch.equal(every, capped)
