# CI's regression gate: recompute the quick metrics and compare them with results/baseline/
# (tolerances in results/baseline/tolerances.yaml). Not part of `rule all`: a reproduction
# elsewhere should not fail because a number moved; `make check-baseline` runs it.
# After an intended change: make update-baseline (xaibench regression update).


rule regression:
    input:
        tables=expand("results/{path}", path=REGRESSION_TABLES),
        spec="results/baseline/tolerances.yaml",
    output:
        "results/regression/check.txt",
    log:
        "results/logs/regression/check.log",
    conda:
        "envs/xaibench.yaml"
    # Exit 1 names the drifted metrics in the log; the output exists only when nothing drifted.
    shell:
        "xaibench regression check --results results --baseline results/baseline > {log} 2>&1 && cp {log} {output}"
