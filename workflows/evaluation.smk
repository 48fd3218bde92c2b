# The evaluation study (docs/metrics/, xaibench/studies/evaluation/): every reference case's maps
# scored with the evaluation metrics (faithfulness, robustness, randomization, complexity,
# localization, axiomatic) as skill scores against a uniform random map (Bommer et al. 2024), with
# Quantus 0.6.0's value of the same metric beside ours on the cases evaluation.quantus names; then
# one table of every case, Bommer et al.'s trade-off, the faithfulness metrics against the ground
# truth, a figure per case, and the agreement and timing of ours against Quantus.
# All inputs are synthetic data of the papers' setups (README, "Data").

include: "evaluation_helpers.smk"


rule evaluate_case:
    input:
        explanations="results/explanations/{model}",
        weights="results/models/{model}/model.safetensors",
    output:
        "results/evaluation/cases/{model}.csv",
    log:
        "results/logs/evaluation/{model}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(MODELS),
    params:
        model_dir=subpath(input.weights, parent=True),
        options=lambda wildcards: _evaluation_options(wildcards.model),
    threads: 1
    shell:
        "xaibench evaluation case --explanations {input.explanations} --model {params.model_dir} "
        "--out {output} {params.options} > {log} 2>&1"


rule evaluate_groundtruth:
    input:
        relevance="results/groundtruth/relevance.nc",
        weights="results/groundtruth/model/model.safetensors",
    output:
        "results/evaluation/cases/groundtruth.csv",
    log:
        "results/logs/evaluation/groundtruth.log",
    conda:
        "envs/xaibench.yaml"
    params:
        model_dir=subpath(input.weights, parent=True),
        options=_evaluation_options("groundtruth"),
        mask_fraction=EVALUATION["groundtruth_mask_fraction"],
    threads: 1
    shell:
        "xaibench evaluation groundtruth --relevance {input.relevance} --model {params.model_dir} "
        "--mask-fraction {params.mask_fraction} --out {output} {params.options} > {log} 2>&1"


rule evaluation_summary:
    input:
        scores=_scored(),
        correlations="results/groundtruth/correlations.csv",
    output:
        scores="results/evaluation/scores.csv",
        skills="results/evaluation/skills.csv",
        tradeoff="results/evaluation/tradeoff.csv",
        summary="results/evaluation/summary.md",
        figures=report(expand("results/evaluation/{case}.png",
                              case=EVALUATED_CASES + (["groundtruth"] if "groundtruth" in EVALUATION["cases"] else [])),
                       caption="report/evaluation_figure.rst", category="Evaluation"),
    log:
        "results/logs/evaluation/summary.log",
    conda:
        "envs/xaibench.yaml"
    params:
        out=subpath(output.scores, parent=True),
    shell:
        "xaibench evaluation summary --scores {input.scores} --correlations {input.correlations} "
        "--out {params.out} > {log} 2>&1"


rule evaluation_summary_page:
    input:
        "results/evaluation/summary.md",
    output:
        report("results/evaluation/summary.html", caption="report/evaluation_table.rst", category="Evaluation"),
    log:
        "results/logs/evaluation/summary_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule evaluation_quantus:
    input:
        explanations=expand("results/explanations/{model}", model=[m for m in EVALUATION["quantus"]["cases"]
                                                                    if m in MODELS]),
        weights=expand("results/models/{model}/model.safetensors", model=[m for m in EVALUATION["quantus"]["cases"]
                                                                           if m in MODELS]),
        relevance="results/groundtruth/relevance.nc",
        groundtruth="results/groundtruth/model/model.safetensors",
    output:
        table="results/evaluation/quantus.csv",
        markdown="results/evaluation/quantus.md",
    log:
        "results/logs/evaluation/quantus.log",
    conda:
        "envs/xaibench.yaml"
    params:
        cases=lambda wildcards, input: " ".join(
            f"--case {folder} {os.path.dirname(weights)}" for folder, weights in zip(input.explanations, input.weights)),
        groundtruth=lambda wildcards, input: (f"--groundtruth {input.relevance} {os.path.dirname(input.groundtruth)}"
                                              if "groundtruth" in EVALUATION["quantus"]["cases"] else ""),
        out=subpath(output.table, parent=True),
        samples=EVALUATION["quantus"]["samples"],
        seed=EVALUATION["seed"],
        options=evaluation_metric_options(),
    threads: 1   # the timings are at one torch thread
    shell:
        "xaibench evaluation quantus {params.cases} {params.groundtruth} --samples {params.samples} "
        "--seed {params.seed} {params.options} --out {params.out} > {log} 2>&1"


rule evaluation_quantus_page:
    input:
        "results/evaluation/quantus.md",
    output:
        report("results/evaluation/quantus.html", caption="report/evaluation_quantus.rst", category="Evaluation"),
    log:
        "results/logs/evaluation/quantus_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"
