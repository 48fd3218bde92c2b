# Receptive fields (TRF, ERF) of the radar encoder-decoders (docs/papers.md sections 2 and 4): the exact
# and textbook TRF, its empirical check, and ERF maps (gradient, LRP, backward optimization) of
# each trained radar network and of its initialization, against the data's true footprint.


include: "receptive_fields_helpers.smk"


rule receptive_field_measure:
    input:
        weights="results/models/{model}/model.safetensors",
        metadata="results/models/{model}/model.json",
        data=lambda wildcards: _data_file(wildcards.model),
    output:
        maps="results/erf/{model}.nc",
        table="results/erf/{model}.csv",
    log:
        "results/logs/erf/{model}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(RADAR_MODELS) or "radar",
    params:
        model_dir=subpath(input.weights, parent=True),
        options=receptive_field_options(),
    threads: 1   # bit-reproducible on CPU for a fixed thread count
    shell:
        "xaibench receptive-field measure --model {params.model_dir} --data {input.data} --out {output.maps} "
        "--table {output.table} {params.options} --threads {threads} > {log} 2>&1"


rule receptive_field_table:
    input:
        expand("results/erf/{model}.csv", model=RADAR_MODELS),
    output:
        "results/erf/receptive_fields.csv",
    log:
        "results/logs/erf/table.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench receptive-field table {input} --out {output} > {log} 2>&1"


rule receptive_field_page:
    input:
        "results/erf/receptive_fields.csv",
    output:
        report("results/erf/receptive_fields.html", caption="report/receptive_fields_table.rst",
               category="Receptive fields"),
    log:
        "results/logs/erf/page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule receptive_field_figure:
    input:
        "results/erf/{model}.nc",
    output:
        report("results/figures/erf_{model}.png", caption="report/receptive_fields.rst",
               category="Receptive fields"),
    log:
        "results/logs/erf/figure_{model}.log",
    conda:
        "envs/xaibench.yaml"
    wildcard_constraints:
        model="|".join(RADAR_MODELS) or "radar",
    shell:
        "xaibench receptive-field figure {input} --out {output} > {log} 2>&1"
