# The native LRP engine: conformance (conservation, agreement with zennit), the cross-library
# agreement census (every method on zennit and innvestigate against native) and the benchmark
# (time and peak memory against zennit, innvestigate and one plain gradient).


rule conformance:
    output:
        table="results/engine/conformance.csv",
        layers="results/engine/conformance_layers.csv",
        markdown=report("results/engine/conformance.md", caption="report/conformance_table.rst", category="Engine"),
    log:
        "results/logs/engine/conformance.log",
    conda:
        "envs/xaibench.yaml"
    params:
        out=subpath(output.table, parent=True),
        quick="--quick" if config["conformance"]["quick"] else "",
    shell:
        "xaibench conformance --out {params.out} {params.quick} > {log} 2>&1"


rule census:
    output:
        table="results/census/agreement.csv",
        markdown=report("results/census/agreement.md", caption="report/census_table.rst", category="Census"),
        zoo="results/census/zoo.csv",
        zoo_markdown=report("results/census/zoo.md", caption="report/census_zoo.rst", category="Census"),
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


rule bench:
    output:
        table="results/engine/bench.csv",
        markdown=report("results/engine/bench.md", caption="report/bench_table.rst", category="Engine"),
        targets="results/engine/bench_targets.csv",
        targets_markdown=report("results/engine/bench_targets.md", caption="report/bench_targets.rst",
                                category="Engine"),
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
