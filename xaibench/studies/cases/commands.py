"""`xaibench explain-case | gather-case | metrics-case | figure | table`: the steps of the
reference-case pipeline (workflows/cases.smk). `explain-case --chunk I/N` explains one chunk of
the samples (a scatter job); `gather-case` merges the N chunk folders into the folder one
`explain-case` without --chunk writes (xaibench.studies.chunks)."""

from xaibench.studies.arguments import chunk_spec, positive_int


def add_commands(commands) -> dict:
    """The reference-case pipeline's commands."""
    explain = commands.add_parser("explain-case", help="explain a trained reference network on every backend")
    explain.add_argument("case", help="a registered case (xaibench/studies/cases/registry.py; an unknown name "
                                        "is refused with the list)")
    explain.add_argument("--model", required=True, metavar="DIR", help="folder with model.safetensors/model.json")
    explain.add_argument("--data", required=True, metavar="FILE.nc")
    explain.add_argument("--out", required=True, metavar="DIR")
    explain.add_argument("--samples", type=positive_int, default=16, metavar="N", help="samples per subset")
    explain.add_argument("--backends", default=None, metavar="B1,B2", help="default: every backend")
    explain.add_argument("--methods", nargs="+", default=None, metavar="M", help="default: xaibench.studies.cases'")
    explain.add_argument("--eval-data", dest="eval_data", action="extend", nargs="+", default=[],
                         metavar="NAME=FILE.nc", help="the extra evaluation sets training used")
    explain.add_argument("--batch-size", dest="batch_size", type=positive_int, default=None, metavar="B",
                         help="samples per explanation call (default: all at once); chunks are whole batches")
    explain.add_argument("--chunk", type=chunk_spec, default=None, metavar="I/N",
                         help="explain only chunk I of N (from 1) into --out, for gather-case")

    gather = commands.add_parser("gather-case", help="merge the folders of explain-case --chunk 1/N ... N/N")
    gather.add_argument("case")
    gather.add_argument("--chunks", required=True, nargs="+", metavar="DIR", help="every chunk's folder, any order")
    gather.add_argument("--out", required=True, metavar="DIR")

    metrics = commands.add_parser("metrics-case", help="metrics of a case's explanations (CSV)")
    metrics.add_argument("case")
    metrics.add_argument("--explanations", required=True, metavar="DIR")
    metrics.add_argument("--data", required=True, metavar="FILE.nc")
    metrics.add_argument("--out", required=True, metavar="FILE.csv")
    metrics.add_argument("--per-sample", dest="per_sample", default=None, metavar="FILE.csv")

    figure = commands.add_parser("figure", help="the relevance figure of a case (PNG)")
    figure.add_argument("case")
    figure.add_argument("--explanations", required=True, metavar="DIR")
    figure.add_argument("--out", required=True, metavar="FILE.png")
    figure.add_argument("--subset", default=None, help="draw one subset (e.g. test, real_winters, no_shortcut)")
    figure.add_argument("--methods", nargs="+", default=None, metavar="METHOD__BACKEND",
                        help="explanation files to draw (default: a few methods per case)")

    table = commands.add_parser("table", help="concatenate metrics CSVs into one CSV and a markdown table")
    table.add_argument("inputs", nargs="+", metavar="FILE.csv")
    table.add_argument("--out", required=True, metavar="FILE.csv")
    table.add_argument("--markdown", required=True, metavar="FILE.md")
    return {"explain-case": _explain_case, "gather-case": _gather_case, "metrics-case": _metrics_case,
            "figure": _figure, "table": _table}


def _eval_data(items) -> dict:
    evaluation = {}
    for item in items:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise ValueError(f"--eval-data {item!r}: give NAME=FILE.nc")
        evaluation[name] = path
    return evaluation


def _explain_case(args) -> int:
    from xaibench.studies.cases.pipeline import explain_case

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    written = explain_case(args.case, args.model, args.data, args.out, methods=args.methods, backends=backends,
                           n_samples=args.samples, evaluation=_eval_data(args.eval_data) or None,
                           batch_size=args.batch_size, chunk=args.chunk, log=lambda line: print(line, flush=True))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _gather_case(args) -> int:
    from xaibench.studies.cases.pipeline import gather_case

    written = gather_case(args.case, args.chunks, args.out, log=lambda line: print(line, flush=True))
    print(f"wrote {len(written)} files to {args.out} from {len(args.chunks)} chunks")
    return 0


def _metrics_case(args) -> int:
    from xaibench.studies.cases.pipeline import metrics_case

    frame = metrics_case(args.case, args.explanations, args.data, args.out, per_sample_csv=args.per_sample)
    print(frame.to_string(max_rows=100))
    return 0


def _figure(args) -> int:
    from pathlib import Path

    from xaibench.studies.cases.registry import CASES

    if args.case not in CASES:
        raise ValueError(f"unknown case '{args.case}'; known: {', '.join(CASES)}")
    case = CASES[args.case]
    folder = Path(args.explanations)
    stems = args.methods or list(case.figure_files)
    files = [folder / f"{stem}.nc" for stem in stems if (folder / f"{stem}.nc").exists()]
    if not files:
        raise ValueError(f"none of {', '.join(stems)} in {folder}")
    case.figure(files, args.out, subset=args.subset)
    print(f"wrote {args.out} from {', '.join(f.name for f in files)}")
    return 0


def _table(args) -> int:
    import pandas as pd

    from xaibench.io import write_csv
    from xaibench.studies.report import write_table

    frame = pd.concat([pd.read_csv(path) for path in args.inputs], ignore_index=True)
    write_csv(frame, args.out)
    write_table(args.out, args.markdown, title="Metrics of the reference cases")
    print(f"wrote {args.out} and {args.markdown} ({len(frame)} rows)")
    return 0
