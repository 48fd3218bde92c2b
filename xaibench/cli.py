"""The `xaibench` command: what the workflow rules call (no logic lives in the rules).

    xaibench bench --out results/engine [--batch-scale F] [--repeats N] [--models enso,convection,radar]
    xaibench conformance --out results/engine [--quick]
    xaibench methods

Exit status: 0 on success, 1 when a run fails, 2 on a usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback


def _models(text: str) -> list[str]:
    from .bench import MODEL_NAMES

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODEL_NAMES)}")
    return names


def _bounded(convert, minimum, strict, word):
    """An argparse type: a number of `convert`'s kind, above (or from) `minimum`."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {word}: {text!r}") from None
        if value < minimum or (strict and value == minimum):
            relation = "above" if strict else "at least"
            raise argparse.ArgumentTypeError(f"must be {relation} {minimum}, got {text}")
        return value
    return parse


_positive_float = _bounded(float, 0, True, "a number")
_positive_int = _bounded(int, 1, False, "an integer")
_non_negative_int = _bounded(int, 0, False, "an integer")


def _batches(text: str) -> dict[str, int]:
    from .bench import MODEL_NAMES

    batches = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in MODEL_NAMES or not value:
            raise argparse.ArgumentTypeError(
                f"expected MODEL=SIZE[,MODEL=SIZE...] with MODEL in {', '.join(MODEL_NAMES)}, got {item!r}")
        batches[name] = _positive_int(value)
    return batches


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xaibench", description="Checkable attribution (LRP) for earth-science neural networks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    bench = commands.add_parser(
        "bench", help="time the native LRP engine, zennit and one gradient on the reference networks",
        description="Writes OUT/bench.csv and OUT/bench.md.")
    bench.add_argument("--out", default="results/engine", help="output folder (default: %(default)s)")
    bench.add_argument("--batch-scale", type=_positive_float, default=1.0,
                       help="multiply the quick batch sizes (enso 64, convection 4, radar 2) by F")
    bench.add_argument("--batches", type=_batches, default=None, metavar="MODEL=SIZE,...",
                       help="batch size per model before scaling, e.g. enso=128,radar=4")
    bench.add_argument("--repeats", type=_positive_int, default=3,
                       help="timed calls per measurement after one warm-up; the median is reported")
    bench.add_argument("--models", type=_models, default=None, metavar="M1,M2",
                       help="comma-separated subset of enso,convection,radar (default: all)")
    bench.add_argument("--threads", type=_non_negative_int, default=0,
                       help="torch.set_num_threads (0: torch's default)")
    bench.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs")
    bench.add_argument("--backends", default="native,zennit",
                       help="comma-separated backends to time beside the gradient (default: %(default)s)")

    conformance = commands.add_parser(
        "conformance", help="the conformance table (conservation, agreement with zennit)",
        description="Writes OUT/conformance.csv and OUT/conformance.md.")
    conformance.add_argument("--out", default="results/engine", help="output folder (default: %(default)s)")
    conformance.add_argument("--quick", action="store_true", help="the quick configuration (small sizes)")

    commands.add_parser("methods", help="list the canonical method names per backend")
    return parser


def _bench(args) -> int:
    from . import bench

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    started = time.perf_counter()
    bench.run_benchmark(args.out, models=args.models or bench.MODEL_NAMES, batch_scale=args.batch_scale,
                        batches=args.batches, repeats=args.repeats, threads=args.threads or None,
                        seed=args.seed, backends=backends)
    print(f"wrote {args.out}/bench.csv and bench.md in {time.perf_counter() - started:.1f} s")
    return 0


def _conformance(args) -> int:
    try:
        from .conformance import write_conformance
    except ImportError as error:
        raise RuntimeError(f"the conformance module is not available ({error})") from error
    write_conformance(args.out, quick=args.quick)
    print(f"wrote {args.out}/conformance.csv and conformance.md")
    return 0


def _methods(args) -> int:
    from . import api

    table = api.methods()
    names = sorted({name for names in table.values() for name in names})
    backends = list(table)
    width = max(len(name) for name in names)
    print(f"{'method':{width}s}  " + "  ".join(backends))
    for name in names:
        marks = "  ".join(f"{'yes' if name in table[b] else '-':{len(b)}s}" for b in backends)
        print(f"{name:{width}s}  {marks}")
    return 0


COMMANDS = {"bench": _bench, "conformance": _conformance, "methods": _methods}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("xaibench: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line (a traceback for the unexpected), status 1
        from .bench import BenchmarkError
        from .errors import XaibenchError

        if not isinstance(error, (ValueError, XaibenchError, BenchmarkError, ImportError)):
            traceback.print_exc()
        print(f"xaibench {args.command}: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
