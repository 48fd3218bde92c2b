"""The engine benchmark: time and peak memory of LRP on the three reference networks.

For each reference network and each LRP method, up to four things are timed on the same input:
the native engine, zennit and innvestigate (for the methods each has; innvestigate only when
asked for, with backends=[..., "innvestigate"]) and the floor, one plain autograd gradient of
the raw model (forward + backward to the input for the same target). Each is
called once to warm up (the native engine traces and caches the model's graph there), then
`repeats` times; the median is reported, with its ratio to the gradient of the same model.
The floor is timed before and after a model's methods and the lower median kept, so that
one window of contention on a shared machine does not skew every ratio of a model.

Peak memory is measured after every timing of the run (all models, all thread counts), one
separate call per row, so that no timed call runs under the measurement's allocator setting:
- CUDA: torch.cuda max_memory_allocated minus the memory allocated before the call;
- CPU: the peak of live memory, read from the resident set. glibc's malloc is first told
  (mallopt M_MMAP_THRESHOLD = 64 KiB) to give every block of 64 KiB or more its own mapping,
  returned to the system when freed, so the resident set follows the live tensors. Writing
  "5" to /proc/self/clear_refs resets the high-water mark VmHWM to the current RSS; VmHWM
  after the call minus VmRSS before it is the peak. Under the default allocator the growth
  of the resident set also counts pages the heap kept from blocks freed earlier in the call,
  which depends on the order of allocations more than on what is live: radar N=3's
  lrp.epsilon grew it by 151 MiB and the gradient by 103, against live peaks of 100 and 90.
  NaN where /proc or glibc is not available.

innvestigate runs in a worker process in the TF environment (backends/innvestigate_backend.py);
it is timed end to end through xaibench.explain, so its time includes exporting the model's
weights (hashed to find the worker's cached twin), the twin's forward check and the .npz file
exchange with the worker. The warm-up call builds the analyzer graph once; the timed calls reuse
it. The main process's resident set does not see the worker's memory, so peak_mem_mb is NaN for
innvestigate; the worker's own resident-set high-water mark (absolute: it includes TensorFlow
itself) is recorded beside it (worker_memory(); bench.md lists it).

The targets are the argmax logit for the classifiers and the centre output pixel for the
radar encoder-decoder and the radar transformer. Inputs and models are drawn from fixed seeds
(untrained weights: the time of a rule does not depend on what the network learned).

Models: the three reference shapes (ENSO, convection, radar N=3) with every LRP method, and two
larger ones with the methods that have targets (TARGET_METHODS): torchvision's resnet50 at
3x128x128 and the radar transformer of the reference cases (radar_vit). Each runs at every
thread count asked for (the `threads` column); ERF-map rows compare several output pixels in one
call against a loop of single-pixel calls (radar only).

The targets of issue 18 are checked in a second table, bench_targets.csv/.md (targets()): each
row a model, a thread count, a target, its limit, the measured value and whether it is met.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import math
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from xaibench import api
from xaibench.errors import XaibenchError
from xaibench.io import write_csv, write_text
from xaibench.studies import sweep
from xaibench.studies.models import ConvectionCNN, EnsoDense, RadarEncoderDecoder

COLUMNS = ["model", "method", "backend", "device", "threads_asked", "threads", "batch", "median_s", "ratio_to_gradient",
           "peak_mem_mb"]
MODEL_NAMES = ("enso", "convection", "radar", "resnet50", "vit")
#: the methods the targets name; the models beyond the three reference shapes run these only
#: (every method on resnet50 would take about 20 minutes per thread count on two cores)
TARGET_METHODS = ("lrp.epsilon", "lrp.epsilon_plus", "lrp.alpha2beta1")
MODEL_METHODS = {"resnet50": TARGET_METHODS, "vit": TARGET_METHODS}
#: the targets (issue 18): ratio to one gradient per method, native over zennit, memory over the gradient's
GRADIENT_LIMITS = {"lrp.epsilon": 1.2, "lrp.epsilon_plus": 2.0, "lrp.alpha2beta1": 3.0}
ZENNIT_LIMIT = 0.8
MEMORY_LIMIT = 1.5
ERF_LIMIT = 3.0   # batched ERF maps 3x faster than the pixel loop, or (chunked) never slower
TARGET_COLUMNS = ["model", "threads_asked", "threads", "target", "limit", "value", "met"]
#: (model, method, backend) pairs another library could not run on the model, with its reason (bench.md)
SKIPPED_COLUMNS = ["model", "method", "backend", "threads_asked", "threads", "reason"]
#: the innvestigate worker's memory, apart from bench.csv (another process: see the module docstring)
WORKER_COLUMNS = ["model", "method", "batch", "worker_peak_rss_mb"]
#: batch sizes of the quick configuration (minutes on two CPU cores); --batch-scale multiplies them
QUICK_BATCH = {"enso": 64, "convection": 4, "radar": 2, "resnet50": 2, "vit": 2}
QUICK_REPEATS = 3


class BenchmarkError(XaibenchError, RuntimeError):
    """One or more benchmark runs failed (the message lists them)."""


@dataclass
class Case:
    """One reference network with its input and target."""

    name: str
    model: nn.Module
    x: torch.Tensor
    target: int | None          # for xaibench.explain: None = argmax, int = flat output index
    description: str

    def gradient_floor(self) -> torch.Tensor:
        """One plain autograd gradient of the raw model for the same target."""
        x = self.x.detach().clone().requires_grad_(True)
        output = self.model(x)
        flat = output.reshape(output.shape[0], -1)
        if self.target is None:
            index = flat.detach().argmax(1, keepdim=True)
        else:
            index = torch.full((flat.shape[0], 1), self.target, dtype=torch.long, device=flat.device)
        (grad,) = torch.autograd.grad(flat.gather(1, index).sum(), x)
        return grad


def make_case(name: str, batch: int, device: torch.device, seed: int = 0) -> Case:
    """The reference network `name` (untrained, seeded weights) with a seeded input batch."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if name == "enso":
        model = EnsoDense(90, 180, hidden=8)
        x = torch.randn((batch, 1, 90, 180), generator=generator)  # standardized SST anomalies
        target, description = None, "dense 8-8-2, 90x180 grid"
    elif name == "convection":
        model = ConvectionCNN(height=64, width=64)
        x = torch.rand((batch, 2, 5, 64, 64), generator=generator)  # scaled reflectance / BT
        target, description = None, "3D CNN, 2x5x64x64"
    elif name == "radar":
        model = RadarEncoderDecoder(n_blocks=3)
        x = torch.rand((batch, 4, 256, 256), generator=generator)  # scaled BT and lightning
        target = 128 * 256 + 128  # the centre output pixel
        description = "encoder-decoder N=3, 4x256x256"
    elif name == "resnet50":
        import torchvision

        model = torchvision.models.resnet50(weights=None)
        x = torch.randn((batch, 3, 128, 128), generator=generator)
        target, description = None, "torchvision resnet50, 3x128x128"
    elif name == "vit":
        from xaibench.studies.models.radar_vit import RadarViT
        from xaibench.studies.models.setups import MODELS as SETUPS

        # the reference case's transformer (its setup) at the quick configuration's size, 64x64
        model = RadarViT(4, 64, 64, **SETUPS["radar_vit"][1])
        x = torch.rand((batch, 4, 64, 64), generator=generator)
        target = 32 * 64 + 32  # the centre output pixel
        description = "radar_vit: 8x8 patches of 4x64x64, width 64, 3 blocks, 4 heads"
    else:
        raise ValueError(f"unknown model '{name}'; models: {', '.join(MODEL_NAMES)}")
    model = model.to(device).eval()
    return Case(name, model, x.to(device), target, description)


# --- measuring -----------------------------------------------------------------------------
def _synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(function: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    function()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        result = function()
        _synchronize(device)
        times.append(time.perf_counter() - start)
        del result
    return statistics.median(times)


def _release_free_memory():
    """Hand the allocator's free pages back to the system (glibc malloc_trim), so that the
    resident set holds live data only and a call's allocations show up as RSS growth even
    where malloc reuses blocks freed by an earlier call."""
    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise KeyError(field)


M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3   # glibc's mallopt parameters
MAPPED_BLOCK = 64 * 1024
ALLOCATORS = ("steady", "default")


def _mallopt(*settings) -> bool:
    """glibc's mallopt(parameter, value) for each pair; False where glibc is not there or refuses."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all([bool(libc.mallopt(parameter, value)) for parameter, value in settings])
    except (OSError, AttributeError):
        return False


def steady_allocator() -> bool:
    """glibc's malloc in the state a long-running process settles into, fixed for the whole run:
    blocks up to 32 MiB (the most its own dynamic threshold reaches) come from the heap, and
    freed memory stays there (trim threshold 1 GiB), so a call reuses what the call before it
    freed instead of faulting fresh pages in. Under the default settings the threshold moves
    with the history of the process, and with it the floor: one ENSO gradient took 1.7 ms in
    one process and 5.5 ms in the next, so no ratio to it was reproducible. False where glibc
    is not there (the allocator is then left as it is)."""
    return _mallopt((M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 2**30), (M_TOP_PAD, 64 * 2**20))


def settled_allocator() -> bool:
    """After a benchmark: glibc's malloc as a warmed-up process has it by itself (mmap threshold
    32 MiB, trim threshold twice that), neither mapping every block (the memory measurement) nor
    holding a GiB of freed memory (steady_allocator), so the rest of the process (a test session,
    say) runs as usual. mallopt cannot hand the thresholds back to glibc's own adjustment."""
    return _mallopt((M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 64 * 2**20), (M_TOP_PAD, 0))


def map_every_large_block() -> bool:
    """mallopt(M_MMAP_THRESHOLD, 64 KiB) for the rest of the process (see the module
    docstring); False where glibc is not there."""
    return _mallopt((M_MMAP_THRESHOLD, MAPPED_BLOCK))


def peak_memory_mb(function: Callable[[], object], device: torch.device) -> float:
    """Peak memory added by one call, in MiB (NaN where it cannot be measured). On CPU it is
    the live memory's peak once map_every_large_block() has been called, else the resident
    set's growth."""
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        result = function()
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del result
        return (peak - before) / 2**20
    try:
        _release_free_memory()
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current RSS
        before = _status_kb("VmRSS")
        result = function()
        peak = _status_kb("VmHWM")
        del result
        return max(peak - before, 0.0) / 1024
    except (OSError, KeyError, ValueError):
        return math.nan


def worker_memory(function: Callable[[], object]) -> float:
    """The innvestigate worker's resident-set high-water mark during one call, in MiB: absolute
    (TensorFlow, the loaded twins and analyzers included), not the growth, because TensorFlow's
    allocator keeps memory freed by the warm-up call. NaN where /proc is not available."""
    from xaibench.backends import innvestigate_backend

    try:
        process = innvestigate_backend.worker("float32").process
        with open(f"/proc/{process.pid}/clear_refs", "w") as clear:
            clear.write("5")  # resets the worker's VmHWM to its current RSS
        result = function()
        with open(f"/proc/{process.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    del result
                    return float(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return math.nan


# --- the benchmark -----------------------------------------------------------------------
def lrp_methods(backend: str = "native") -> list[str]:
    return [m for m in api.methods(backend) if m.startswith("lrp.")]


def _options(method: str, x: torch.Tensor) -> dict:
    if "box" in method:  # z^B needs input bounds: the batch's range
        return {"low": float(x.min()), "high": float(x.max())}
    return {}


def run_benchmark(out_dir: str | Path | None = "results/engine", models: Iterable[str] = MODEL_NAMES,
                  batch_scale: float = 1.0, batches: dict | None = None, repeats: int = QUICK_REPEATS,
                  threads: int | Iterable[int] | None = None, seed: int = 0, methods: Iterable[str] | None = None,
                  backends: Iterable[str] = ("native", "zennit"), device: str | None = None,
                  allocator: str = "steady", log: Callable[[str], None] | None = print) -> pd.DataFrame:
    """Run the benchmark, write bench.csv and bench.md, and the targets' check bench_targets.csv and
    .md, to out_dir (if given; bench_cuda*.* on CUDA, table_stem), return the table.

    batches: batch size per model (default QUICK_BATCH), each multiplied by batch_scale.
    threads: a thread count or several, each a full pass over the models (torch.set_num_threads;
    None or 0: torch's default, all the cores).
    methods: the LRP methods of every model (default: all of them for the three reference shapes,
    TARGET_METHODS for the larger models, MODEL_METHODS).
    allocator: "steady" (steady_allocator(): the CPU timings of a settled process, reproducible
    from run to run) or "default" (glibc as the process found it; for comparison).
    """
    log = log or (lambda message: None)
    models = list(models)
    unknown = [m for m in models if m not in MODEL_NAMES]
    if unknown or not models:
        raise ValueError(f"unknown model(s) {unknown}; models: {', '.join(MODEL_NAMES)}")
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if batch_scale <= 0:
        raise ValueError(f"batch_scale must be positive, got {batch_scale}")
    thread_counts = _thread_counts(threads)
    if allocator not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {allocator!r}")
    backends = list(backends)
    known = sweep.backends()   # the one list: xaibench.api.BACKENDS
    for backend in backends:
        if backend not in known:
            raise ValueError(f"unknown backend '{backend}'; the benchmark runs {', '.join(known)}")
    if "native" not in backends:
        raise ValueError("the benchmark compares every backend with the native engine: include 'native' in backends")
    if "innvestigate" in backends:   # fail before any timing, not once per method
        from xaibench.backends import innvestigate_backend

        innvestigate_backend.check_available()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA device here (torch.cuda.is_available() "
                         "is False)")
    batch_sizes = {**QUICK_BATCH, **(batches or {})}
    all_methods = lrp_methods("native")
    chosen = None if methods is None else list(methods)
    bad = [m for m in (chosen or []) if m not in all_methods]
    if bad:
        raise ValueError(f"not native LRP methods: {bad}; methods: {', '.join(all_methods)}")

    rows, failures, worker_rows, memory_calls, skipped = [], [], [], [], []
    if allocator == "steady" and device.type == "cpu" and not steady_allocator():
        log("glibc's mallopt is not available: timings under the allocator as it is")
    started = time.perf_counter()
    default_threads = torch.get_num_threads()
    try:
        for count in thread_counts:
            torch.set_num_threads(count or default_threads)
            log(f"engine benchmark on {device} ({torch.get_num_threads()} threads), repeats {repeats}")
            for name in models:
                batch = max(1, round(batch_sizes[name] * batch_scale))
                case = make_case(name, batch, device, seed)
                model_methods = chosen if chosen is not None else list(MODEL_METHODS.get(name, all_methods))
                available = set(sweep.pairs(model_methods, backends))   # (method, backend) where the backend has it
                log(f"{name}: {case.description}, batch {batch}")
                rows += _measure_model(case, model_methods, backends, available, device, repeats, failures, log,
                                       memory_calls, skipped, thread_label(count))
        _measure_memory(memory_calls, device, failures, log, worker_rows)
    finally:
        torch.set_num_threads(default_threads)
        if device.type == "cpu":
            settled_allocator()
    table = pd.DataFrame(rows, columns=COLUMNS)
    worker = pd.DataFrame(worker_rows, columns=WORKER_COLUMNS)
    checked = targets(table)
    log(f"benchmark took {time.perf_counter() - started:.1f} s")
    if out_dir is not None:
        write_tables(table, out_dir, worker, table_stem(device), checked,
                     pd.DataFrame(skipped, columns=SKIPPED_COLUMNS))
    log(summary(table))
    if failures:
        raise BenchmarkError(f"{len(failures)} benchmark run(s) failed:\n  " + "\n  ".join(failures))
    return table


def _thread_counts(threads) -> list[int]:
    counts = [threads] if threads is None or isinstance(threads, int) else list(threads)
    counts = [0 if c is None else c for c in counts]
    if not counts or any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError(f"threads must be a count >= 0 (0: all the cores) or a list of them, got {threads!r}")
    if len(set(counts)) != len(counts):
        raise ValueError(f"threads lists a count twice: {counts}")
    return counts


def thread_label(count: int) -> str:
    """The threads_asked column: the count asked for, 'all' for 0 (torch's default, all the cores).
    The regression baseline is keyed by it, so that it holds on a machine with more cores."""
    return "all" if count == 0 else str(count)


def _measure_model(case: Case, methods, backends, available, device, repeats, failures, log,
                   memory_calls, skipped, asked: str) -> list[dict]:
    """The rows of one model: the gradient floor, then every method on every backend. Each
    timed row's call goes to memory_calls, for _measure_memory."""
    rows = []
    threads = torch.get_num_threads()

    def row(method, backend, function):
        try:
            median = time_call(function, device, repeats)
        except sweep.SKIPPABLE as error:
            if backend in ("native", "autograd"):
                raise
            # another library that cannot take this model (innvestigate has no twin of resnet50's
            # padded max pooling): not timed, said in bench.md, not a failure of the benchmark
            skipped.append({"model": case.name, "method": method, "backend": backend, "threads": threads,
                            "threads_asked": asked,
                            "reason": sweep.one_line(error)})
            log(f"  {method:34s} {backend:8s} not timed: {sweep.one_line(error)}")
            return math.nan
        except Exception as error:  # recorded, reported, and raised after the table is written
            failures.append(f"{case.name} {method} {backend} ({threads} threads): {type(error).__name__}: {error}")
            log(f"  FAILED {method} [{backend}]: {type(error).__name__}: {error}")
            median = math.nan
        rows.append({"model": case.name, "method": method, "backend": backend, "device": device.type,
                     "threads_asked": asked, "threads": threads, "batch": case.x.shape[0], "median_s": median,
                     "peak_mem_mb": math.nan})
        if not math.isnan(median):   # measured after every timing of the run (_measure_memory)
            memory_calls.append((rows[-1], function))
        log(f"  {method:34s} {backend:8s} {median * 1e3:10.2f} ms")
        return median

    gradient_s = row("gradient", "autograd", case.gradient_floor)
    for method in methods:
        options = _options(method, case.x)
        for backend in backends:
            if (method, backend) not in available:
                continue

            def call(method=method, backend=backend, options=options):
                return api.explain(case.model, case.x, method, target=case.target, backend=backend, **options)

            row(method, backend, call)
    if case.name == "radar":   # ERF maps of several output pixels in one call ([B, T] targets) against a loop
        from xaibench import receptive_field
        from xaibench.receptive_field import ERF_MAP_PIXELS, erf_map_call, erf_map_pixels

        pixels = erf_map_pixels(*case.x.shape[-2:])
        for method in ("gradient", "lrp.epsilon"):
            row(f"{ERF_BATCHED}.{method}[{ERF_MAP_PIXELS} pixels]", "native",
                erf_map_call(case.model, case.x, method=method))

            def one_pixel_per_call(method=method):   # the same maps, one pixel per call
                return receptive_field.effective_receptive_field_loop(case.model, case.x, pixels, method)

            row(f"{ERF_LOOP}.{method}[{ERF_MAP_PIXELS} pixels]", "native", one_pixel_per_call)
    # The floor again after the methods: on a shared machine one contended window would
    # otherwise skew every ratio of the model; the lower of the two medians is the floor.
    try:
        again = time_call(case.gradient_floor, device, repeats)
    except Exception:  # the first measurement already recorded the failure, if any
        again = math.nan
    if again < gradient_s:
        gradient_s = rows[0]["median_s"] = again
        log(f"  gradient (again)                   autograd {again * 1e3:10.2f} ms")
    for r in rows:
        r["ratio_to_gradient"] = r["median_s"] / gradient_s
    return rows


ERF_BATCHED, ERF_LOOP = "erf_map", "erf_map_loop"


def _measure_memory(memory_calls, device, failures, log, worker_rows):
    """Peak memory of every timed row, one call each, after all the timings (module docstring),
    at the row's thread count; innvestigate's in its worker."""
    if device.type == "cpu" and not map_every_large_block():
        log("  (glibc's mallopt is not available: CPU memory is the resident set's growth)")
    log("peak memory (MiB), one call per row:")
    for row, function in memory_calls:
        torch.set_num_threads(row["threads"])
        try:
            if row["backend"] == "innvestigate":   # its memory is in another process
                worker_rows.append({"model": row["model"], "method": row["method"], "batch": row["batch"],
                                    "worker_peak_rss_mb": worker_memory(function)})
            else:
                row["peak_mem_mb"] = peak_memory_mb(function, device)
        except Exception as error:
            failures.append(f"{row['model']} {row['method']} {row['backend']} (memory): "
                            f"{type(error).__name__}: {error}")
        log(f"  {row['model']:10s} {row['threads']:2d} threads {row['method']:34s} {row['backend']:8s} "
            f"{row['peak_mem_mb']:9.1f}")


def targets(table: pd.DataFrame) -> pd.DataFrame:
    """The targets of issue 18 against one benchmark table: per model and thread count, each
    method's time over one gradient (GRADIENT_LIMITS), the slowest native/zennit time ratio over
    the methods both have (ZENNIT_LIMIT), lrp.epsilon's peak memory over the gradient's
    (MEMORY_LIMIT), and on radar the pixel loop's time over the batched ERF maps' (ERF_LIMIT; a
    value below 1 would mean batching loses). Only what was measured gets a row."""
    out = []
    for (model, asked), part in table.groupby(["model", "threads_asked"], sort=False):
        where = {"model": model, "threads_asked": asked, "threads": int(part["threads"].iloc[0])}
        value = functools.partial(_measured, part)
        add = functools.partial(_add_target, out, where)

        for method, limit in GRADIENT_LIMITS.items():
            measured = value(method, "native", "ratio_to_gradient")
            add(f"{method} / one gradient", f"<= {limit:g}", measured, measured <= limit)
        native = part[part["backend"] == "native"].set_index("method")["median_s"]
        zennit = part[part["backend"] == "zennit"].set_index("method")["median_s"]
        ratios = (native / zennit).dropna()   # the methods both ran
        if len(ratios):
            both = ratios.index
            worst = ratios.idxmax()
            add(f"slowest native / zennit ({worst}, of {len(both)} methods)", f"<= {ZENNIT_LIMIT:g}",
                float(ratios.max()), float(ratios.max()) <= ZENNIT_LIMIT)
        memory = value("lrp.epsilon", "native", "peak_mem_mb") / value("gradient", "autograd", "peak_mem_mb")
        add("lrp.epsilon peak memory / gradient's", f"<= {MEMORY_LIMIT:g}", memory, memory <= MEMORY_LIMIT)
        for method in ("gradient", "lrp.epsilon"):
            batched = part[part["method"].str.startswith(f"{ERF_BATCHED}.{method}[")]
            loop = part[part["method"].str.startswith(f"{ERF_LOOP}.{method}[")]
            if len(batched) and len(loop):
                speedup = float(loop["median_s"].iloc[0] / batched["median_s"].iloc[0])
                label = batched["method"].iloc[0].split("[")[1].rstrip("]")
                # the target: 3x faster than the loop, or chunked automatically so that
                # batching never loses (>= 1); both count as met, the value says which
                add(f"ERF maps of {label}, {method}: loop / batched time",
                    f">= {ERF_LIMIT:g}, or >= 1 (never loses: chunked)", speedup, speedup >= 1.0)
    return pd.DataFrame(out, columns=TARGET_COLUMNS)


def _measured(part: pd.DataFrame, method: str, backend: str, column: str) -> float:
    hit = part[(part["method"] == method) & (part["backend"] == backend)][column]
    return float(hit.iloc[0]) if len(hit) else math.nan


def _add_target(out: list, where: dict, target: str, limit: str, measured: float, met: bool):
    if not math.isnan(measured):   # only what was measured gets a row
        out.append({**where, "target": target, "limit": limit, "value": measured, "met": bool(met)})


def comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, thread count and method: native / zennit (and native / innvestigate) time and
    memory ratios."""
    lrp = table[table["backend"].isin(["native", "zennit", "innvestigate"])]
    wide = lrp.pivot_table(index=["model", "threads_asked", "method"], columns="backend",
                           values=["median_s", "peak_mem_mb", "ratio_to_gradient"], dropna=False)
    out = pd.DataFrame(index=wide.index)
    out["native_ratio_to_gradient"] = wide[("ratio_to_gradient", "native")]
    if ("median_s", "zennit") in wide.columns:
        out["zennit_ratio_to_gradient"] = wide[("ratio_to_gradient", "zennit")]
        out["time_native_over_zennit"] = wide[("median_s", "native")] / wide[("median_s", "zennit")]
        out["mem_native_over_zennit"] = (wide[("peak_mem_mb", "native")]
                                         / wide[("peak_mem_mb", "zennit")])
    if ("median_s", "innvestigate") in wide.columns:
        out["innvestigate_ratio_to_gradient"] = wide[("ratio_to_gradient", "innvestigate")]
        out["time_native_over_innvestigate"] = wide[("median_s", "native")] / wide[("median_s", "innvestigate")]
    order = {m: i for i, m in enumerate(MODEL_NAMES)}
    out = out.reset_index()
    return out.sort_values(["model", "threads_asked", "method"], key=lambda s: s.map(order) if s.name == "model" else s,
                           kind="stable").reset_index(drop=True)


def table_stem(device: torch.device) -> str:
    """The tables' file name: bench (CPU) or bench_<device type> (bench_cuda), so that a GPU run
    never overwrites the CPU figures beside it."""
    return "bench" if device.type == "cpu" else f"bench_{device.type}"


def write_tables(table: pd.DataFrame, out_dir: str | Path, worker: pd.DataFrame | None = None,
                 stem: str = "bench", checked: pd.DataFrame | None = None, skipped: pd.DataFrame | None = None):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(table, out / f"{stem}.csv")
    checked = targets(table) if checked is None else checked
    write_csv(checked, out / f"{stem}_targets.csv")
    write_text(out / f"{stem}_targets.md", targets_markdown(checked))
    device = ", ".join(sorted(table["device"].unique()))
    threads = ", ".join(str(t) for t in sorted(table["threads"].unique()))
    text = [
        "# Engine benchmark",
        "",
        f"Device: {device}; torch {torch.__version__}; threads: {threads}. On CPU the timings run with glibc's "
        "malloc held in a long-running process's state (timing.steady_allocator: freed memory reused, not "
        "faulted in again), unless the run says --allocator default. "
        "median_s: median wall time of one call; ratio_to_gradient: over one plain autograd "
        "gradient of the same model at the same thread count (forward + backward); peak_mem_mb: peak "
        "memory added by one call (CPU: resident-set growth). The targets met and missed: "
        f"{stem}_targets.md.",
        "",
        table.to_markdown(index=False, floatfmt=".4g"),
        "",
        "## Native engine vs zennit" + (" and innvestigate" if "innvestigate" in set(table["backend"]) else ""),
        "",
        comparison(table).to_markdown(index=False, floatfmt=".3g"),
        "",
    ]
    if skipped is not None and len(skipped):
        text += ["## Not timed", "", "Pairs another library cannot run on the model (no row above):", "",
                 skipped.to_markdown(index=False), ""]
    if "innvestigate" in set(table["backend"]):
        text += [
            "## innvestigate",
            "",
            "innvestigate 2.1.2 runs in a worker process in the TF environment. Its median_s is end to end "
            "through xaibench.explain after one warm-up call that builds the analyzer graph: it includes "
            "exporting the weights, the Keras twin's forward check and the .npz file exchange with the "
            "worker, not only the analysis. Its peak_mem_mb is empty (NaN): the worker's memory is not in "
            "this process's resident set. The worker's resident-set high-water mark during one call is "
            "below; it is absolute (TensorFlow, the loaded twins and their analyzers included), not the "
            "call's growth, because TensorFlow's allocator keeps what the warm-up call freed.",
            "",
        ]
        if worker is not None and len(worker):
            text += [worker.to_markdown(index=False, floatfmt=".4g"), ""]
    write_text(out / f"{stem}.md", "\n".join(text))


def targets_markdown(checked: pd.DataFrame) -> str:
    met = int(checked["met"].sum())
    return "\n".join([
        "# Engine benchmark: the targets",
        "",
        f"{met} of {len(checked)} met. Each value is a ratio measured in one run (bench.csv): a method's median time "
        "over one plain gradient of the same model at the same thread count, native over zennit on the same work, "
        "peak memory over the gradient's, and for ERF maps the time of a loop of single-pixel calls over one "
        "call with every pixel as a [B, T] target. Where a target is missed, README.md (\"The fast engine\") "
        "says what the profile shows against the floor.",
        "",
        checked.to_markdown(index=False, floatfmt=".3g") if len(checked) else "(nothing measured)",
        "",
    ])


def summary(table: pd.DataFrame) -> str:
    lines = ["summary (ratio to one gradient; native/zennit time and memory):"]
    compared = comparison(table)
    for (name, threads), part in compared.groupby(["model", "threads_asked"], sort=False):
        native = part["native_ratio_to_gradient"]
        line = (f"  {name:10s} threads {threads}: lrp.epsilon "
                f"x{_value(part, 'lrp.epsilon', 'native_ratio_to_gradient'):.2f}, "
                f"native range x{native.min():.2f}-x{native.max():.2f}")
        if "time_native_over_zennit" in part:
            line += (f"; native/zennit time median {part['time_native_over_zennit'].median():.2f} "
                     f"(range {part['time_native_over_zennit'].min():.2f}-"
                     f"{part['time_native_over_zennit'].max():.2f}), memory median "
                     f"{part['mem_native_over_zennit'].median():.2f}")
        if "time_native_over_innvestigate" in part:
            line += (f"; native/innvestigate time median {part['time_native_over_innvestigate'].median():.2f} "
                     f"(range {part['time_native_over_innvestigate'].min():.2f}-"
                     f"{part['time_native_over_innvestigate'].max():.2f})")
        lines.append(line)
    return "\n".join(lines)


def _value(part: pd.DataFrame, method: str, column: str) -> float:
    selected = part.loc[part["method"] == method, column]
    return float(selected.iloc[0]) if len(selected) else math.nan
