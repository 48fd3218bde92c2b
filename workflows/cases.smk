# The three reference cases of the field (ENSO dense net, convection 3D CNN, GREMLIN radar
# encoder-decoder N = 1, 2, 3): data -> training -> explanations on every backend -> metrics
# -> figures. Everything is synthetic except the real HadISST winters (data set enso_real).
# Rules named train_* and explain_* ask for a GPU in the SLURM profile (workflows/profiles/).
#
# The explanations are scattered: explain_model_chunk explains chunk I of N of a model's samples
# (cases.explain.chunks; Snakemake's scatter item I-of-N), whole batches of cases.explain.batch_size
# samples, and gather_explanations merges the N chunk folders into results/explanations/{model},
# the files one unchunked job writes, bit for bit (xaibench/studies/chunks.py says why batches make
# that hold). On a cluster each chunk is one GPU job; the gather is a CPU job. With one chunk the
# gather only copies (the quick configuration).

scattergather:
    explain_case=CASES["explain"]["chunks"],


rule data:
    output:
        "results/data/{dataset}.nc",
    log:
        "results/logs/data/{dataset}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        dataset="|".join(CASES["data"]),
    params:
        settings=lambda wildcards: json.dumps(CASES["data"][wildcards.dataset]),
    shell:
        "xaibench data {wildcards.dataset} --settings '{params.settings}' --out {output} > {log} 2>&1"


rule train_model:
    input:
        data=lambda wildcards: _data_file(wildcards.model),
        evaluation=lambda wildcards: list(_eval_files(wildcards.model).values()),
    output:
        weights="results/models/{model}/model.safetensors",
        metadata="results/models/{model}/model.json",
    log:
        "results/logs/train/{model}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(MODELS),
    params:
        out=subpath(output.weights, parent=True),
        epochs=lambda wildcards: _training(wildcards.model)["epochs"],
        batch_size=lambda wildcards: _training(wildcards.model)["batch_size"],
        lr=lambda wildcards: _training(wildcards.model)["lr"],
        seed=lambda wildcards: _training(wildcards.model)["seed"],
        evaluation=lambda wildcards: _eval_option(wildcards.model),
    threads: 1   # bit-reproducible on CPU for a fixed thread count
    shell:
        "xaibench train {wildcards.model} --data {input.data} --out {params.out} --epochs {params.epochs} "
        "--batch-size {params.batch_size} --lr {params.lr} --seed {params.seed} --threads {threads} "
        "{params.evaluation} > {log} 2>&1"


rule explain_model_chunk:
    input:
        weights="results/models/{model}/model.safetensors",
        data=lambda wildcards: _data_file(wildcards.model),
        evaluation=lambda wildcards: list(_eval_files(wildcards.model).values()),
    output:
        temp(directory("results/chunks/explanations/{model}/{scatteritem}")),
    log:
        "results/logs/explain/{model}_{scatteritem}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(MODELS),
    params:
        model_dir=subpath(input.weights, parent=True),
        samples=CASES["explain"]["samples"],
        backends=",".join(CASES["explain"]["backends"]),
        batch_size=_batch_option(CASES["explain"]),
        evaluation=lambda wildcards: _eval_option(wildcards.model),
    shell:
        "xaibench explain-case {wildcards.model} --model {params.model_dir} --data {input.data} --out {output} "
        "--samples {params.samples} --backends {params.backends} {params.batch_size} "
        "--chunk {wildcards.scatteritem} {params.evaluation} > {log} 2>&1"


rule gather_explanations:
    input:
        gather.explain_case("results/chunks/explanations/{{model}}/{scatteritem}"),
    output:
        directory("results/explanations/{model}"),
    log:
        "results/logs/explain/{model}_gather.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(MODELS),
    shell:
        "xaibench gather-case {wildcards.model} --chunks {input} --out {output} > {log} 2>&1"


rule metrics_model:
    input:
        explanations="results/explanations/{model}",
        data=lambda wildcards: _data_file(wildcards.model),
    output:
        table="results/metrics/{model}.csv",
        per_sample="results/metrics/{model}_per_sample.csv",
    log:
        "results/logs/metrics/{model}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(MODELS),
    shell:
        "xaibench metrics-case {wildcards.model} --explanations {input.explanations} --data {input.data} "
        "--out {output.table} --per-sample {output.per_sample} > {log} 2>&1"


rule metrics_table:
    input:
        expand("results/metrics/{model}.csv", model=MODELS),
    output:
        table="results/metrics/metrics.csv",
        markdown="results/metrics/metrics.md",
    log:
        "results/logs/metrics/table.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench table {input} --out {output.table} --markdown {output.markdown} > {log} 2>&1"


rule metrics_page:
    input:
        "results/metrics/metrics.md",
    output:
        report("results/metrics/metrics.html", caption="report/table.rst", category="Metrics"),
    log:
        "results/logs/metrics/page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule figure_enso:
    input:
        "results/explanations/enso",
    output:
        report("results/figures/enso_{subset}.png", caption="report/enso_composite.rst", category="Relevance",
               subcategory="ENSO"),
    log:
        "results/logs/figures/enso_{subset}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        subset="test|real_winters",
    shell:
        "xaibench figure enso --explanations {input} --subset {wildcards.subset} --out {output} > {log} 2>&1"


rule figure_convection:
    input:
        "results/explanations/convection",
    output:
        report("results/figures/convection_{subset}.png", caption="report/convection_relevance.rst",
               category="Relevance", subcategory="convection"),
    log:
        "results/logs/figures/convection_{subset}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        subset="test|no_shortcut",
    shell:
        "xaibench figure convection --explanations {input} --subset {wildcards.subset} --out {output} > {log} 2>&1"


rule figure_radar:
    input:
        "results/explanations/{model}",
    output:
        report("results/figures/{model}.png", caption="report/radar_relevance.rst", category="Relevance",
               subcategory="radar"),
    log:
        "results/logs/figures/{model}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(RADAR_MODELS) or "radar",
    shell:
        "xaibench figure {wildcards.model} --explanations {input} --out {output} > {log} 2>&1"
