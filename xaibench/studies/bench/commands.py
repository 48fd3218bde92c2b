"""`xaibench bench`: the benchmark's command (workflows/engine.smk)."""

import argparse
import time

from xaibench.studies.arguments import non_negative_int, positive_float, positive_int


def add_commands(commands) -> dict:
    """`xaibench bench`."""
    bench = commands.add_parser(
        "bench", help="time the native LRP engine, zennit and one gradient on the reference networks",
        description="Writes OUT/bench.csv and OUT/bench.md, and the targets' check OUT/bench_targets.csv/.md "
                    "(OUT/bench_cuda*.* with --device cuda).")
    bench.add_argument("--out", default="results/engine", help="output folder (default: %(default)s)")
    bench.add_argument("--batch-scale", type=positive_float, default=1.0,
                       help="multiply the quick batch sizes (enso 64, convection 4, radar 2) by F")
    bench.add_argument("--batches", type=_batches, default=None, metavar="MODEL=SIZE,...",
                       help="batch size per model before scaling, e.g. enso=128,radar=4")
    bench.add_argument("--repeats", type=positive_int, default=3,
                       help="timed calls per measurement after one warm-up; the median is reported")
    bench.add_argument("--models", type=_models, default=None, metavar="M1,M2",
                       help="comma-separated subset of enso,convection,radar,resnet50,vit (default: all)")
    bench.add_argument("--methods", type=_methods, default=None, metavar="M1,M2",
                       help="LRP methods for every model (default: all for enso, convection and radar; "
                            "lrp.epsilon, lrp.epsilon_plus and lrp.alpha2beta1 for resnet50 and vit)")
    bench.add_argument("--threads", type=_threads, default=[0], metavar="N1,N2",
                       help="torch thread counts, each a full pass (0: torch's default, all the cores); "
                            "e.g. 1,0 for the rows at one thread and at all threads")
    bench.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs")
    bench.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                       help="where to run (default: %(default)s); cuda writes OUT/bench_cuda.csv and .md")
    bench.add_argument("--allocator", choices=("steady", "default"), default="steady",
                       help="CPU timings with glibc's malloc held in a settled process's state (steady, reproducible "
                            "from run to run) or as the process finds it (default); "
                            "see xaibench/studies/bench/timing.py")
    bench.add_argument("--backends", default="native,zennit",
                       help="comma-separated backends to time beside the gradient: native, zennit, innvestigate "
                            "(default: %(default)s)")
    return {"bench": _bench}


def _models(text: str) -> list[str]:
    from xaibench.studies.bench.timing import MODEL_NAMES

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODEL_NAMES)}")
    return names



def _threads(text: str) -> list[int]:
    counts = [non_negative_int(part.strip()) for part in text.split(",") if part.strip()]
    if not counts or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"expected distinct thread counts N1[,N2...] (0: all the cores), got {text!r}")
    return counts


def _methods(text: str) -> list[str]:
    from xaibench.studies.bench.timing import lrp_methods

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in lrp_methods()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"not native LRP methods: {', '.join(unknown) or '(none given)'}; choose from {', '.join(lrp_methods())}")
    return names


def _batches(text: str) -> dict[str, int]:
    from xaibench.studies.bench.timing import MODEL_NAMES

    batches = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in MODEL_NAMES or not value:
            raise argparse.ArgumentTypeError(
                f"expected MODEL=SIZE[,MODEL=SIZE...] with MODEL in {', '.join(MODEL_NAMES)}, got {item!r}")
        batches[name] = positive_int(value)
    return batches


def _bench(args) -> int:
    import torch

    from xaibench.studies.bench import timing as bench

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    started = time.perf_counter()
    bench.run_benchmark(args.out, models=args.models or bench.MODEL_NAMES, batch_scale=args.batch_scale,
                        batches=args.batches, repeats=args.repeats, threads=args.threads,
                        seed=args.seed, methods=args.methods, backends=backends, device=args.device,
                        allocator=args.allocator)
    stem = bench.table_stem(torch.device(args.device))
    print(f"wrote {args.out}/{stem}.csv, {stem}.md and {stem}_targets.csv/.md in "
          f"{time.perf_counter() - started:.1f} s")
    return 0
