# Helpers of the rule files (snakemake --lint wants functions apart from rules).

import json

CASES = config["cases"]
MODELS = list(CASES["training"])
RADAR_MODELS = [model for model in MODELS if model.startswith("radar")]


def _training(model):
    return CASES["training"][model]


def _data_file(model):
    return f"results/data/{_training(model)['data']}.nc"


def _eval_files(model):
    return {name: f"results/data/{data}.nc" for name, data in _training(model)["eval"].items()}


def _eval_option(model):
    files = _eval_files(model)
    return ("--eval-data " + " ".join(f"{name}={path}" for name, path in files.items())) if files else ""


def _batch_option(explain):
    """--batch-size for the explain commands (a null batch_size: every sample in one call)."""
    return "" if explain["batch_size"] is None else f"--batch-size {explain['batch_size']}"


def case_outputs():
    """The targets the cases add to the reproduction: the metrics table (and its page for the
    report) and every figure."""
    figures = []
    if "enso" in MODELS:
        figures += expand("results/figures/enso_{subset}.png", subset=["test", "real_winters"])
    if "convection" in MODELS:
        figures += expand("results/figures/convection_{subset}.png", subset=["test", "no_shortcut"])
    figures += expand("results/figures/{model}.png", model=RADAR_MODELS)
    return ["results/metrics/metrics.csv", "results/metrics/metrics.html"] + figures


# The tables the regression gate compares (results/baseline/tolerances.yaml lists them).
from xaibench.studies.regression import load_spec

REGRESSION_TABLES = list(load_spec("results/baseline").files)
