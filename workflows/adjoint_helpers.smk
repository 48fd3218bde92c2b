# Helpers of workflows/adjoint.smk (snakemake --lint wants functions apart from rules).

ADJOINT = config["adjoint"]


def adjoint_settings():
    """config["adjoint"] (complete: the schema requires every key) as one JSON argument."""
    return json.dumps(ADJOINT, sort_keys=True)


def adjoint_lags():
    """The configured lags as a wildcard pattern (a figure only for a lag the experiment ran)."""
    return "|".join(str(lag) for lag in ADJOINT["lags_days"])


def adjoint_outputs():
    """What the relevance-vs-adjoint comparison adds to the reproduction: the two tables (and their
    pages for the report) and one map figure per lag."""
    lags = ADJOINT["lags_days"]
    return ["results/adjoint/comparison.csv", "results/adjoint/remote_attribution.csv",
            "results/adjoint/comparison.html", "results/adjoint/remote_attribution.html"] + expand(
        "results/figures/adjoint_lag{lag}.png", lag=lags)
