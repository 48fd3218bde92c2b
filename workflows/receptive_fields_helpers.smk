# Helpers of workflows/receptive_fields.smk (snakemake --lint wants functions apart from rules).

RECEPTIVE_FIELDS = config["receptive_fields"]


def receptive_field_options():
    """The `xaibench receptive-field measure` options from config["receptive_fields"]."""
    names = ["samples", "optimization_samples", "steps", "step_size", "change_threshold", "edge_distance",
             "trf_samples", "seed"]
    return " ".join(f"--{name.replace('_', '-')} {RECEPTIVE_FIELDS[name]}" for name in names)


def receptive_field_outputs():
    """What the receptive-field comparison adds to the reproduction: the table (and its page for the
    report) and one figure per radar network (nothing when the configuration trains no radar network)."""
    if not RADAR_MODELS:
        return []
    return ["results/erf/receptive_fields.csv", "results/erf/receptive_fields.html"] + expand("results/figures/erf_{model}.png", model=RADAR_MODELS)
