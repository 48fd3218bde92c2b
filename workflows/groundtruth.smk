# The ground-truth attribution benchmark (Mamalakis, Ebert-Uphoff and Barnes 2022; docs/papers.md
# section 6): data with exact attributions -> the dense regression network -> explanations on
# every backend (and of the true function) -> correlation with the ground truth and deletion
# faithfulness -> table and figures. All data are synthetic; the input correlation comes from
# the real HadISST sample. Logic: xaibench/studies/groundtruth/benchmark.py and xaibench/studies/data/groundtruth.py.
#
# The explanations are scattered like the cases' (workflows/cases.smk): explain_groundtruth_chunk
# explains chunk I of N of the samples (groundtruth.explain.chunks), whole batches of
# groundtruth.explain.batch_size; on a cluster each is one GPU job (its name starts with explain_
# for the SLURM profile). groundtruth_gather, a CPU job, merges them into relevance.nc, the file one
# unchunked job writes (the same arrays and attributes; `seconds`, the wall time, is summed).

GROUNDTRUTH = config["groundtruth"]


scattergather:
    groundtruth=GROUNDTRUTH["explain"]["chunks"],


rule groundtruth_data:
    output:
        "results/groundtruth/data.nc",
    log:
        "results/logs/groundtruth/data.log",
    conda:
        "envs/xaibench.yaml"
    params:
        settings=json.dumps(GROUNDTRUTH["data"]),
    shell:
        "xaibench data groundtruth --settings '{params.settings}' --out {output} > {log} 2>&1"


rule groundtruth_train:
    input:
        "results/groundtruth/data.nc",
    output:
        weights="results/groundtruth/model/model.safetensors",
        metadata="results/groundtruth/model/model.json",
    log:
        "results/logs/groundtruth/train.log",
    conda:
        "envs/xaibench.yaml"
    params:
        out=subpath(output.weights, parent=True),
        training=GROUNDTRUTH["training"],
    threads: 1   # bit-reproducible on CPU for a fixed thread count
    shell:
        "xaibench train groundtruth --data {input} --out {params.out} --optimizer {params.training[optimizer]} "
        "--epochs {params.training[epochs]} --batch-size {params.training[batch_size]} "
        "--lr {params.training[lr]} --lr-schedule {params.training[lr_schedule]} --seed {params.training[seed]} "
        "--threads {threads} > {log} 2>&1"


rule explain_groundtruth_chunk:
    input:
        weights="results/groundtruth/model/model.safetensors",
        data="results/groundtruth/data.nc",
    output:
        temp("results/chunks/groundtruth/relevance_{scatteritem}.nc"),
    log:
        "results/logs/groundtruth/explain_{scatteritem}.log",
    conda:
        "envs/xaibench.yaml"
    params:
        model_dir=subpath(input.weights, parent=True),
        samples=GROUNDTRUTH["explain"]["samples"],
        backends=",".join(GROUNDTRUTH["explain"]["backends"]),
        methods=" ".join(GROUNDTRUTH["explain"]["methods"]),
        batch_size=_batch_option(GROUNDTRUTH["explain"]),
    shell:
        "xaibench groundtruth explain --model {params.model_dir} --data {input.data} --out {output} "
        "--samples {params.samples} --backends {params.backends} --methods {params.methods} "
        "{params.batch_size} --chunk {wildcards.scatteritem} > {log} 2>&1"


rule groundtruth_gather:
    input:
        gather.groundtruth("results/chunks/groundtruth/relevance_{scatteritem}.nc"),
    output:
        "results/groundtruth/relevance.nc",
    log:
        "results/logs/groundtruth/gather.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench groundtruth gather --chunks {input} --out {output} > {log} 2>&1"


rule groundtruth_score:
    input:
        relevance="results/groundtruth/relevance.nc",
        weights="results/groundtruth/model/model.safetensors",
        data="results/groundtruth/data.nc",
    output:
        table="results/groundtruth/correlations.csv",
        per_sample="results/groundtruth/per_sample.csv",
        faithfulness="results/groundtruth/faithfulness.csv",
        markdown="results/groundtruth/correlations.md",
    log:
        "results/logs/groundtruth/score.log",
    conda:
        "envs/xaibench.yaml"
    params:
        model_dir=subpath(input.weights, parent=True),
        out=subpath(output.table, parent=True),
    shell:
        "xaibench groundtruth score --relevance {input.relevance} --model {params.model_dir} --data {input.data} "
        "--out {params.out} > {log} 2>&1"


rule groundtruth_page:
    input:
        "results/groundtruth/correlations.md",
    output:
        report("results/groundtruth/correlations.html", caption="report/groundtruth_table.rst",
               category="Ground truth"),
    log:
        "results/logs/groundtruth/page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule groundtruth_figure:
    input:
        relevance="results/groundtruth/relevance.nc",
        scores="results/groundtruth/correlations.csv",
    output:
        report("results/figures/groundtruth_{kind}.png", caption="report/groundtruth_figure.rst",
               category="Ground truth"),
    log:
        "results/logs/figures/groundtruth_{kind}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        kind="histograms|maps|faithfulness",
    params:
        scores=subpath(input.scores, parent=True),
    shell:
        "xaibench groundtruth figure {wildcards.kind} --relevance {input.relevance} --scores {params.scores} "
        "--out {output} > {log} 2>&1"
