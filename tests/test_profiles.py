"""The SLURM profile (workflows/profiles/slurm): it parses, asks for GPUs where the workflow trains
and explains, plans the real workflow (the paper-scale one with its explanations scattered into
chunks, one GPU job each), and makes the sbatch calls we mean with the installed plugin.

No cluster here. The last test runs Snakemake with the profile for real against a toy workflow,
with a fake `sbatch` first on PATH that records its command line and refuses the job: what it
records is exactly what snakemake-executor-plugin-slurm would submit.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "workflows" / "profiles" / "slurm"
GPU_PREFIXES = ("train_", "explain_")

# pinned in the main environment (it brings snakemake): missing is a failure, not a skip
import snakemake_executor_plugin_slurm  # noqa: E402,F401


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def requests_gpu(resources: dict) -> bool:
    return "gpu" in str(resources.get("gres", "")) or bool(resources.get("gpu"))


def snakemake(*args, cwd=ROOT, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env, timeout=timeout,
                          capture_output=True, text=True)


def test_profile_parses_with_executor_and_gpu_requests():
    config = profile()
    assert config["executor"] == "slurm"
    assert config["jobs"] >= 1 and config["latency-wait"] >= 30 and config["retries"] >= 1
    assert {"slurm_partition", "runtime", "mem_mb"} <= set(config["default-resources"])
    assert not requests_gpu(config["default-resources"])   # only the rules that need one
    gpu_rules = {name for name in config["set-resources"] if name.startswith(GPU_PREFIXES)}
    assert any(name.startswith("train_") for name in gpu_rules)
    assert any(name.startswith("explain_") for name in gpu_rules)
    for name in gpu_rules:
        resources = config["set-resources"][name]
        assert requests_gpu(resources), name
        # the plugin refuses GPU flags in slurm_extra (use gres/gpu resources instead)
        assert not re.search(r"--(gres|gpus)\b", str(resources.get("slurm_extra", ""))), name


def test_every_train_and_explain_rule_of_the_workflow_gets_a_gpu():
    """set-resources matches rule names exactly: a train_/explain_ rule the profile does not name runs on CPU."""
    listed = snakemake("--list-rules", "--configfile", "workflows/config/quick.yaml")
    assert listed.returncode == 0, listed.stderr
    rules = [line.strip() for line in listed.stdout.splitlines() if line.strip()]
    assert "conformance" in rules
    configured = profile()["set-resources"]
    missing = [rule for rule in rules if rule.startswith(GPU_PREFIXES) and not requests_gpu(configured.get(rule, {}))]
    assert not missing, f"add these rules to {PROFILE / 'config.yaml'} set-resources: {missing}"


def test_dry_run_of_the_workflow_with_the_profile():
    """Snakemake's own profile loading: the profile's keys and resource expressions are valid, the plugin is
    installed, and the whole reproduction is planned (--forceall) without submitting anything."""
    result = snakemake("-n", "--forceall", "--nolock", "--profile", "workflows/profiles/slurm",
                       "--configfile", "workflows/config/quick.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout + result.stderr
    assert "Using profile workflows/profiles/slurm" in out
    for rule in ("conformance", "census", "bench"):
        assert re.search(rf"^{rule}\s+1$", out, re.MULTILINE), f"{rule} not planned:\n{out[-2000:]}"
    assert "This was a dry-run" in out
    planned = planned_jobs(out)
    assert planned
    for rule, job in planned:
        gpu = "gres=gpu:1" in job["resources"]
        assert gpu == rule.startswith(GPU_PREFIXES), f"{rule}: {job['resources']}"


def planned_jobs(out: str) -> list[tuple[str, dict]]:
    """(rule, {"wildcards": ..., "resources": ...}) of every job a dry run prints: the wildcards
    and the resources each would be submitted with, as Snakemake evaluated them."""
    planned = []
    for line in out.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line)
        if match:
            planned.append((match.group(1), {"wildcards": "", "resources": ""}))
        elif planned and line.strip().startswith(("wildcards:", "resources:")):
            key, _, value = line.strip().partition(":")
            planned[-1][1][key] = value.strip()
    return planned


def job_counts(out: str) -> dict[str, int]:
    """{rule: jobs} from the "Job stats" table of a dry run."""
    table = out[out.index("Job stats:"):]
    return {fields[0]: int(fields[1]) for fields in map(str.split, table.splitlines()[3:])
            if len(fields) == 2 and fields[1].isdigit() and fields[0] != "total"}


def test_dry_run_of_the_paper_scale_workflow_scatters_the_explanations_into_gpu_jobs():
    """default.yaml with the profile: each model's explanations and the ground truth's are N chunk jobs
    (the configuration's chunks), every one a GPU job, gathered by one CPU job each."""
    config = yaml.safe_load((ROOT / "workflows" / "config" / "default.yaml").read_text())
    models = list(config["cases"]["training"])
    case_chunks, groundtruth_chunks = config["cases"]["explain"]["chunks"], config["groundtruth"]["explain"]["chunks"]
    assert case_chunks > 1 and groundtruth_chunks > 1   # the paper scale scatters
    result = snakemake("-n", "--forceall", "--nolock", "--profile", "workflows/profiles/slurm",
                       "--configfile", "workflows/config/default.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout + result.stderr
    counts = job_counts(out)
    assert counts["explain_model_chunk"] == len(models) * case_chunks, counts
    assert counts["gather_explanations"] == len(models), counts
    assert counts["explain_groundtruth_chunk"] == groundtruth_chunks, counts
    assert counts["groundtruth_gather"] == 1, counts
    assert "explain_model" not in counts and "groundtruth_explain" not in counts   # no unchunked rule is left
    jobs = planned_jobs(out)
    items = {f"{index}-of-{case_chunks}" for index in range(1, case_chunks + 1)}
    for model in models:
        scattered = {re.search(r"scatteritem=([\w-]+)", job["wildcards"]).group(1) for rule, job in jobs
                     if rule == "explain_model_chunk" and f"model={model}," in job["wildcards"]}
        assert scattered == items, (model, scattered)
    for rule, job in jobs:
        if rule in ("explain_model_chunk", "explain_groundtruth_chunk"):
            assert "gres=gpu:1" in job["resources"], (rule, job)
        if rule in ("gather_explanations", "groundtruth_gather"):
            assert "gpu" not in job["resources"], (rule, job)
    # the chunk jobs' commands: each explains its chunk in the configured batches
    assert re.search(r"xaibench explain-case enso .*--batch-size "
                     rf"{config['cases']['explain']['batch_size']} --chunk 2-of-{case_chunks}", out)
    assert re.search(r"xaibench groundtruth explain .*--batch-size "
                     rf"{config['groundtruth']['explain']['batch_size']} --chunk 1-of-{groundtruth_chunks}", out)


TOY_WORKFLOW = """
rule all:
    input: "train.txt", "explain.txt", "plain.txt", "bench.txt"

rule {train}:
    output: "train.txt"
    shell: "touch {{output}}"

rule {explain}:
    output: "explain.txt"
    shell: "touch {{output}}"

rule plain:
    output: "plain.txt"
    threads: 2
    shell: "touch {{output}}"

rule bench:   # like the real one: all the cores Snakemake has
    output: "bench.txt"
    threads: workflow.cores
    shell: "touch {{output}}"
"""


def test_sbatch_calls_the_plugin_makes_with_the_profile(tmp_path):
    configured = profile()["set-resources"]
    train = next(name for name in configured if name.startswith("train_"))
    explain = next(name for name in configured if name.startswith("explain_"))
    (tmp_path / "Snakefile").write_text(TOY_WORKFLOW.format(train=train, explain=explain))
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "sbatch-calls.txt"
    (fake / "sbatch").write_text(textwrap.dedent("""\
        #!/bin/sh
        printf '%s\\n' "$*" >> "$FAKE_SBATCH_LOG"
        echo "fake sbatch: recorded, not submitted" >&2
        exit 1
        """))
    (fake / "sacct").write_text("#!/bin/sh\nexit 0\n")   # the plugin asks sacct for a default account
    for tool in fake.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}", "FAKE_SBATCH_LOG": str(calls)}
    env.pop("SLURM_JOB_ID", None)
    result = snakemake("--profile", str(PROFILE), "--slurm-init-seconds-before-status-checks", "1",
                       cwd=tmp_path, env=env, timeout=120)
    assert result.returncode != 0   # every submission was refused
    assert calls.is_file(), result.stdout[-3000:] + result.stderr[-3000:]
    submitted = {}
    for line in calls.read_text().splitlines():
        rule = re.search(r"--comment (?:')?rule_(\w+)", line).group(1)
        submitted.setdefault(rule, []).append(line.split(" --wrap=")[0])
    assert set(submitted) == {train, explain, "plain", "bench"}

    config = profile()
    gpu_partition = configured[train]["slurm_partition"]
    for rule in (train, explain):
        first = submitted[rule][0]
        assert "--gres=gpu:1" in first and f"-p {gpu_partition}" in first, first
        assert f"--mem {configured[rule]['mem_mb'].split('*')[0].strip()}" in first
    for rule in ("plain", "bench"):
        first = submitted[rule][0]
        assert "gpu" not in first and f"-p {config['default-resources']['slurm_partition']}" in first, first
    assert "--cpus-per-task=2" in submitted["plain"][0]                # the rule's threads
    assert f"--cpus-per-task={config['cores']}" in submitted["bench"][0]   # one node, from `cores`
    assert "--exclusive" in submitted["bench"][0]
    # retries: a second submission with memory and time scaled by the attempt
    assert len(submitted["plain"]) == 1 + config["retries"]
    base_mem = int(str(config["default-resources"]["mem_mb"]).split("*")[0])
    assert f"--mem {base_mem * 2}" in submitted["plain"][1]
