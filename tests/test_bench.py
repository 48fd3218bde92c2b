"""The engine benchmark (xaibench/studies/bench/timing.py): what run_benchmark writes.

The timings themselves are measurements, never compared; these tests run one tiny
configuration (the ENSO network, a small batch, one timed call) and check the documented
tables, the gradient floor every ratio refers to, and that bad settings are refused before
anything is timed. The innvestigate test starts the worker and is marked tf.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

from xaibench.studies.bench import timing as bench


def test_one_tiny_run_writes_bench_csv_and_bench_md_with_the_documented_columns(tmp_path):
    table = bench.run_benchmark(tmp_path, models=["enso"], batches={"enso": 2}, repeats=1,
                                methods=["lrp.epsilon", "lrp.zbox"], backends=["native"], device="cpu", log=None)
    written = pd.read_csv(tmp_path / "bench.csv")
    assert list(written.columns) == bench.COLUMNS
    assert list(zip(written["method"], written["backend"])) == [
        ("gradient", "autograd"), ("lrp.epsilon", "native"), ("lrp.zbox", "native")]
    assert (written["model"] == "enso").all() and (written["batch"] == 2).all() and (written["device"] == "cpu").all()
    assert (written["median_s"] > 0).all()
    assert written["ratio_to_gradient"].iloc[0] == 1.0   # the floor is its own reference
    assert math.isclose(written["ratio_to_gradient"].iloc[1], written["median_s"].iloc[1] / written["median_s"].iloc[0])
    assert list(table.columns) == bench.COLUMNS and len(table) == 3
    text = (tmp_path / "bench.md").read_text()
    assert text.startswith("# Engine benchmark")
    assert "## Native engine vs zennit" in text and "| lrp.zbox" in text


@pytest.mark.parametrize("options, match", [
    ({"models": ["mnist"]}, "unknown model"),
    ({"repeats": 0}, "repeats must be at least 1"),
    ({"batch_scale": 0.0}, "batch_scale must be positive"),
    ({"backends": ["native", "shap"]}, "unknown backend 'shap'"),
    ({"backends": ["captum"]}, "include 'native'"),
    ({"methods": ["gradient"]}, "not native LRP methods"),
])
def test_bad_settings_are_refused_before_any_timing(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        bench.run_benchmark(tmp_path, **{"models": ["enso"], "repeats": 1, "log": None, **options})
    assert not (tmp_path / "bench.csv").exists()


@pytest.mark.tf
def test_bench_times_innvestigate_end_to_end(innvestigate_worker, tmp_path):
    table = bench.run_benchmark(tmp_path, models=["enso"], batches={"enso": 4}, repeats=1,
                                methods=["lrp.epsilon", "lrp.gamma"], backends=["native", "innvestigate"],
                                log=None)
    assert list(pd.read_csv(tmp_path / "bench.csv").columns) == bench.COLUMNS
    rows = table[table["backend"] == "innvestigate"]
    assert rows["method"].tolist() == ["lrp.epsilon"]   # innvestigate has no lrp.gamma: no row
    assert rows["median_s"].iloc[0] > 0
    assert rows["peak_mem_mb"].isna().all()   # the worker's memory is not this process's
    text = (tmp_path / "bench.md").read_text()
    assert "file exchange with the worker" in text
    assert "worker_peak_rss_mb" in text


# --- the GPU command (make bench-gpu): its CPU-side parts ------------------------------------------
def test_tables_are_named_by_device_so_a_gpu_run_keeps_the_cpu_figures():
    import torch

    assert bench.table_stem(torch.device("cpu")) == "bench"
    assert bench.table_stem(torch.device("cuda")) == bench.table_stem(torch.device("cuda", 1)) == "bench_cuda"


def test_cuda_without_a_device_is_named_before_any_timing(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA device"):
        bench.run_benchmark(tmp_path, models=["enso"], repeats=1, backends=["native"], device="cuda", log=None)
    assert not list(tmp_path.iterdir())


def test_the_bench_command_takes_a_device(tmp_path):
    from xaibench import cli

    parser, _ = cli.build_parser()
    assert parser.parse_args(["bench", "--device", "cuda"]).device == "cuda"
    assert parser.parse_args(["bench"]).device == "cpu"   # the workflow's bench.csv: CPU unless asked
    with pytest.raises(SystemExit):
        parser.parse_args(["bench", "--device", "tpu"])


def test_make_bench_gpu_runs_the_cuda_tests_then_the_cuda_benchmark():
    """The target exists, installs nothing, and its two steps are the marker's tests and the
    benchmark on CUDA without zennit (not on the lent machines)."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    dry = subprocess.run(["make", "--no-print-directory", "-n", "bench-gpu"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    # under `make test` the outer make's MAKEFLAGS reach this one: keep the recipe lines only
    lines = [line for line in dry.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("make")]
    assert len(lines) == 2 and "pip" not in dry
    assert "-m cuda tests/test_cuda.py" in lines[0]
    assert "xaibench.cli bench --device cuda --backends native" in lines[1] and "--out results/engine" in lines[1]


def test_the_cuda_tests_are_collected_and_skipped_without_a_device():
    """`pytest -m cuda` finds them (not 'no tests collected'), and here, without CUDA, skips each."""
    import subprocess
    import sys
    from pathlib import Path

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: make bench-gpu runs them")
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda",
                             "tests/test_cuda.py"], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:]
    assert " skipped" in result.stdout and " passed" not in result.stdout and " failed" not in result.stdout


# --- thread counts, the larger models and the targets' table --------------------------------------
def test_each_thread_count_is_a_full_pass_and_the_targets_table_is_written(tmp_path):
    import torch

    before = torch.get_num_threads()
    table = bench.run_benchmark(tmp_path, models=["enso"], batches={"enso": 2}, repeats=1, threads=[1, 0],
                                methods=["lrp.epsilon", "lrp.epsilon_plus"], backends=["native", "zennit"], log=None)
    assert torch.get_num_threads() == before   # the caller's setting comes back
    # the passes are told apart by what was asked (the baseline's key), also where 'all' is one core
    assert list(table["threads_asked"].unique()) == ["1", "all"]
    assert set(table.loc[table["threads_asked"] == "all", "threads"]) == {before}
    for _, part in table.groupby("threads_asked"):
        assert list(zip(part["method"], part["backend"])) == [
            ("gradient", "autograd"), ("lrp.epsilon", "native"), ("lrp.epsilon", "zennit"),
            ("lrp.epsilon_plus", "native"), ("lrp.epsilon_plus", "zennit")]
        assert part["ratio_to_gradient"].iloc[0] == 1.0   # each thread count has its own floor
    checked = pd.read_csv(tmp_path / "bench_targets.csv")
    assert list(checked.columns) == bench.TARGET_COLUMNS
    assert len(checked) == 2 * 4   # epsilon, epsilon_plus, native/zennit, memory; no alpha2beta1 timed
    assert (tmp_path / "bench_targets.md").read_text().startswith("# Engine benchmark: the targets")
    assert "bench_targets.md" in (tmp_path / "bench.md").read_text()


def _row(model, method, backend, median, memory=1.0, threads=1):
    return {"model": model, "method": method, "backend": backend, "device": "cpu", "threads_asked": str(threads),
            "threads": threads, "batch": 2,
            "median_s": median, "ratio_to_gradient": median / 1.0, "peak_mem_mb": memory}


def test_targets_are_met_or_missed_by_the_stated_limits():
    table = pd.DataFrame([
        _row("radar", "gradient", "autograd", 1.0, memory=100.0),
        _row("radar", "lrp.epsilon", "native", 1.2, memory=151.0),     # at the limit: met; memory 1.51: missed
        _row("radar", "lrp.epsilon", "zennit", 2.0),
        _row("radar", "lrp.epsilon_plus", "native", 2.01),              # just over: missed
        _row("radar", "lrp.epsilon_plus", "zennit", 2.4),               # native/zennit 0.8375: the slowest
        _row("radar", "erf_map.gradient[8 pixels]", "native", 2.0),
        _row("radar", "erf_map_loop.gradient[8 pixels]", "native", 6.0),   # 3x: met
        _row("radar", "erf_map.lrp.epsilon[8 pixels]", "native", 5.0),
        _row("radar", "erf_map_loop.lrp.epsilon[8 pixels]", "native", 7.5),   # 1.5x: met (never loses)
    ], columns=bench.COLUMNS)
    checked = bench.targets(table).set_index("target")
    assert bool(checked.loc["lrp.epsilon / one gradient", "met"])
    assert not bool(checked.loc["lrp.epsilon_plus / one gradient", "met"])
    assert "lrp.alpha2beta1 / one gradient" not in checked.index   # not measured: no row
    slowest = checked.loc["slowest native / zennit (lrp.epsilon_plus, of 2 methods)"]
    assert slowest["value"] == pytest.approx(2.01 / 2.4) and not bool(slowest["met"])
    memory = checked.loc["lrp.epsilon peak memory / gradient's"]
    assert memory["value"] == pytest.approx(1.51) and not bool(memory["met"])
    erf = checked.loc["ERF maps of 8 pixels, gradient: loop / batched time"]
    assert erf["value"] == pytest.approx(3.0) and bool(erf["met"])
    assert bool(checked.loc["ERF maps of 8 pixels, lrp.epsilon: loop / batched time", "met"])
    slower = bench.targets(table.assign(median_s=table["median_s"].where(
        table["method"] != "erf_map_loop.lrp.epsilon[8 pixels]", 4.0))).set_index("target")
    assert not bool(slower.loc["ERF maps of 8 pixels, lrp.epsilon: loop / batched time", "met"])   # batching lost


@pytest.mark.parametrize("threads", [[], [-1], [1, 1], [1.5], "2"])
def test_bad_thread_counts_are_refused(tmp_path, threads):
    with pytest.raises(ValueError, match="threads"):
        bench.run_benchmark(tmp_path, models=["enso"], repeats=1, threads=threads, log=None)


def test_the_command_takes_thread_counts_and_methods():
    from xaibench import cli

    parser, _ = cli.build_parser()
    args = parser.parse_args(["bench", "--threads", "1,0", "--methods", "lrp.epsilon,lrp.z", "--models", "vit"])
    assert args.threads == [1, 0] and args.methods == ["lrp.epsilon", "lrp.z"] and args.models == ["vit"]
    assert parser.parse_args(["bench"]).threads == [0] and parser.parse_args(["bench"]).methods is None
    for bad in (["--threads", "1,1"], ["--threads", "x"], ["--methods", "gradient"], ["--models", "vgg"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["bench", *bad])


@pytest.mark.parametrize("name", ["resnet50", "vit"])
def test_the_larger_models_are_explained_with_the_target_methods(name):
    """The default method set of the larger models, and that the engine explains them with a
    closing ledger (one sample each; float32, as benchmarked)."""
    import torch

    from xaibench import api

    assert bench.MODEL_METHODS[name] == bench.TARGET_METHODS == tuple(bench.GRADIENT_LIMITS)
    case = bench.make_case(name, 1, torch.device("cpu"))
    explanation = api.explain(case.model, case.x, "lrp.epsilon", target=case.target)
    scale = float(explanation.output.abs().max())
    assert float(explanation.conservation_error.max()) <= 1e-4 * max(scale, 1.0)
    assert explanation.relevance.shape == case.x.shape


def test_a_library_that_cannot_take_the_model_is_not_timed_and_said_so(tmp_path, monkeypatch):
    """innvestigate has no twin of resnet50's padded max pooling: an ExportError of another
    backend leaves that pair out of the table, names it in bench.md, and fails nothing."""
    from xaibench import api
    from xaibench.errors import ExportError

    explain = api.explain

    def refusing(model, x, method, backend="native", **options):
        if backend == "zennit":
            raise ExportError("zennit", "pool", "MaxPool2d", "padding")
        return explain(model, x, method, backend=backend, **options)
    monkeypatch.setattr(api, "explain", refusing)
    table = bench.run_benchmark(tmp_path, models=["enso"], batches={"enso": 2}, repeats=1, threads=1,
                                methods=["lrp.epsilon"], backends=["native", "zennit"], log=None)
    assert list(table["backend"]) == ["autograd", "native"]
    text = (tmp_path / "bench.md").read_text()
    assert "## Not timed" in text and "cannot mirror layer 'pool'" in text


def test_the_allocator_setting_is_checked_and_recorded(tmp_path):
    with pytest.raises(ValueError, match="allocator must be one of steady, default"):
        bench.run_benchmark(tmp_path, models=["enso"], repeats=1, allocator="jemalloc", log=None)
    bench.run_benchmark(tmp_path, models=["enso"], batches={"enso": 2}, repeats=1, threads=1,
                        methods=["lrp.epsilon"], backends=["native"], log=None)
    assert "steady_allocator" in (tmp_path / "bench.md").read_text()
