# Helpers of workflows/evaluation.smk (snakemake --lint wants functions apart from rules).

import os

EVALUATION = config["evaluation"]
# a case the evaluation names must be a trained model or the ground truth: a typo is refused
# before any job, naming it (the schema cannot know cases.training's keys)
for _listed in (EVALUATION["cases"], EVALUATION["quantus"]["cases"]):
    _unknown = [case for case in _listed if case not in MODELS and case != "groundtruth"]
    if _unknown:
        raise ValueError(f"evaluation: unknown case(s) {', '.join(_unknown)}; the cases are "
                         f"{', '.join(MODELS)} and groundtruth")
EVALUATED_CASES = [model for model in EVALUATION["cases"] if model in MODELS]


def _evaluation_options(case):
    """The command-line options every scoring job shares."""
    options = (f"--samples {EVALUATION['cases'][case]} --seed {EVALUATION['seed']} "
               f"--backends {','.join(EVALUATION['backends'])} "
               f"--explain-backends {','.join(EVALUATION['explain_backends'])}")
    options += " " + evaluation_metric_options()
    if case in EVALUATION["quantus"]["cases"]:
        options += " --quantus"
    return options


def evaluation_metric_options():
    """--options '<JSON>' of evaluation.options, or "" when it is empty."""
    if not EVALUATION["options"]:
        return ""
    return f"--options '{json.dumps(EVALUATION['options'], sort_keys=True)}'"


def _scored():
    """The per-case score tables the summary concatenates (the ground truth last, when scored)."""
    files = expand("results/evaluation/cases/{model}.csv", model=EVALUATED_CASES)
    if "groundtruth" in EVALUATION["cases"]:
        files.append("results/evaluation/cases/groundtruth.csv")
    return files


def evaluation_outputs():
    """The targets the evaluation adds to the reproduction (with the tables' pages for the report)."""
    return [rules.evaluation_summary.output.scores, rules.evaluation_quantus.output.table,
            rules.evaluation_summary_page.output, rules.evaluation_quantus_page.output]
