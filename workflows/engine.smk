# The native LRP engine: conformance (conservation, agreement with zennit), the cross-library
# agreement census (every method on zennit and innvestigate against native) and the benchmark
# (time and peak memory against zennit, innvestigate and one plain gradient).


rule conformance:
    output:
        table="results/engine/conformance.csv",
        layers="results/engine/conformance_layers.csv",
        markdown="results/engine/conformance.md",
    log:
        "results/logs/engine/conformance.log",
    conda:
        "envs/xaibench.yaml"
    params:
        out=subpath(output.table, parent=True),
        quick="--quick" if config["conformance"]["quick"] else "",
    shell:
        "xaibench conformance --out {params.out} {params.quick} > {log} 2>&1"


rule conformance_page:
    input:
        "results/engine/conformance.md",
    output:
        report("results/engine/conformance.html", caption="report/conformance_table.rst", category="Engine"),
    log:
        "results/logs/engine/conformance_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule census:
    output:
        table="results/census/agreement.csv",
        markdown="results/census/agreement.md",
        zoo="results/census/zoo.csv",
        zoo_markdown="results/census/zoo.md",
    log:
        "results/logs/engine/census.log",
    conda:
        "envs/xaibench.yaml"
    params:
        out=subpath(output.table, parent=True),
        quick="--quick" if config["census"]["quick"] else "",
        seed=config["census"]["seed"],
    shell:
        "xaibench census --zoo --out {params.out} {params.quick} --seed {params.seed} > {log} 2>&1"


rule census_page:
    input:
        "results/census/agreement.md",
    output:
        report("results/census/agreement.html", caption="report/census_table.rst", category="Census"),
    log:
        "results/logs/engine/census_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule census_zoo_page:
    input:
        "results/census/zoo.md",
    output:
        report("results/census/zoo.html", caption="report/census_zoo.rst", category="Census"),
    log:
        "results/logs/engine/census_zoo_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule bench:
    output:
        table="results/engine/bench.csv",
        markdown="results/engine/bench.md",
        targets="results/engine/bench_targets.csv",
        targets_markdown="results/engine/bench_targets.md",
    log:
        "results/logs/engine/bench.log",
    conda:
        "envs/xaibench.yaml"
    params:
        out=subpath(output.table, parent=True),
        models=",".join(config["bench"]["models"]),
        backends=",".join(config["bench"]["backends"]),
        batch_scale=config["bench"]["batch_scale"],
        repeats=config["bench"]["repeats"],
        seed=config["bench"]["seed"],
        # 0: all the cores the rule gets (torch's default in the job); the table's threads_asked says "all"
        thread_counts=",".join(str(n) for n in config["bench"]["threads"]),
    # All the cores (unless the configuration's counts are all given and smaller), so no other job
    # runs beside it: timings taken beside another job are not comparable.
    threads: workflow.cores if 0 in config["bench"]["threads"] else max(config["bench"]["threads"])
    shell:
        "xaibench bench --out {params.out} --models {params.models} --backends {params.backends} "
        "--batch-scale {params.batch_scale} --repeats {params.repeats} "
        "--seed {params.seed} --threads {params.thread_counts} > {log} 2>&1"


rule bench_page:
    input:
        "results/engine/bench.md",
    output:
        report("results/engine/bench.html", caption="report/bench_table.rst", category="Engine"),
    log:
        "results/logs/engine/bench_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"


rule bench_targets_page:
    input:
        "results/engine/bench_targets.md",
    output:
        report("results/engine/bench_targets.html", caption="report/bench_targets.rst", category="Engine"),
    log:
        "results/logs/engine/bench_targets_page.log",
    conda:
        "envs/xaibench.yaml"
    shell:
        "xaibench report-table {input} --out {output} > {log} 2>&1"
