# Relevance vs the adjoint sensitivity of a linear ocean model (the XAIRT study, docs/papers.md
# section 5) as a controlled experiment: the model runs with and without an atmospheric bridge
# (tropical Atlantic SST -> NE Pacific forcing, not part of the ocean operator), the XAIRT dense
# network is trained per lag and explained with LRP, and relevance is compared with the exact
# adjoint sensitivity. Everything is synthetic except the Natural Earth land mask. Logic:
# xaibench/studies/adjoint/ocean.py and adjoint_experiment.py. Times on one core of a shared 2-core
# machine: quick (4-degree grid, 36000 days, 3 lags x 3 networks) about 1 minute plus 5 s per
# figure; default (3-degree grid, 73000 days, 7 lags x 3 networks, 60 epochs) about 12 minutes.


include: "adjoint_helpers.smk"


rule adjoint_experiment:
    output:
        comparison="results/adjoint/comparison.csv",
        attribution="results/adjoint/remote_attribution.csv",
        per_network="results/adjoint/comparison_networks.csv",
        maps="results/adjoint/maps.nc",
    log:
        "results/logs/adjoint/experiment.log",
    conda:
        "envs/xaibench.yaml"
    params:
        out=subpath(output.comparison, parent=True),
        settings=adjoint_settings(),
    threads: 1   # bit-reproducible on CPU for a fixed thread count
    shell:
        "xaibench adjoint --config '{params.settings}' --out {params.out} --threads {threads} > {log} 2>&1"


rule adjoint_comparison_page:
    input:
        "results/adjoint/comparison.csv",
    output:
        report("results/adjoint/comparison.html", caption="report/adjoint_table.rst", category="Adjoint"),
    log:
        "results/logs/adjoint/comparison_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule adjoint_attribution_page:
    input:
        "results/adjoint/remote_attribution.csv",
    output:
        report("results/adjoint/remote_attribution.html", caption="report/adjoint_attribution.rst",
               category="Adjoint"),
    log:
        "results/logs/adjoint/attribution_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule adjoint_figure:
    input:
        "results/adjoint/maps.nc",
    output:
        report("results/figures/adjoint_lag{lag}.png", caption="report/adjoint_maps.rst", category="Adjoint",
               subcategory="maps"),
    log:
        "results/logs/figures/adjoint_lag{lag}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        lag=adjoint_lags(),
    shell:
        "xaibench adjoint-figure --maps {input} --lag {wildcards.lag} --out {output} > {log} 2>&1"
