# The xaibench reproduction. `make reproduce` runs the quick configuration:
#     snakemake --cores 2 --configfile workflows/config/quick.yaml
# Plain `snakemake --cores N` runs the paper-scale configuration (workflows/config/default.yaml).
# Each configuration file is complete and used alone (no merge of one into the other).
# Rules only call the `xaibench` command; the logic lives in the library.

from snakemake.utils import min_version, validate

min_version("9.0")


# One complete configuration per run, never a merge of two: default.yaml only when the command
# line names no configuration file (`--configfile` replaces it; snakemake itself would merge it
# key by key into a `configfile:` declared here). workflow.overwrite_configfiles is what
# snakemake got from --configfile, and what it forwards to cluster jobs.
if not workflow.overwrite_configfiles:

    configfile: "workflows/config/default.yaml"


# Fails before any job runs, naming the key, when the configuration does not match the schema.
# The schema has no defaults: every key is required, so each configuration file is complete.
validate(config, schema="workflows/config/schema.yaml")


include: "workflows/common.smk"
include: "workflows/engine.smk"
include: "workflows/cases.smk"
include: "workflows/groundtruth.smk"
include: "workflows/adjoint.smk"
include: "workflows/receptive_fields.smk"
include: "workflows/evaluation.smk"
include: "workflows/regression.smk"


rule all:
    input:
        rules.conformance.output,
        rules.census.output,
        rules.bench.output,
        # the tables as pages (xaibench report-table): the report shows .html in the page, .md/.csv as downloads
        rules.conformance_page.output,
        rules.census_page.output,
        rules.census_zoo_page.output,
        rules.bench_page.output,
        rules.bench_targets_page.output,
        case_outputs(),
        rules.groundtruth_score.output,
        rules.groundtruth_page.output,
        expand("results/figures/groundtruth_{kind}.png", kind=["histograms", "maps", "faithfulness"]),
        receptive_field_outputs(),
        adjoint_outputs(),
        evaluation_outputs(),
    default_target: True
