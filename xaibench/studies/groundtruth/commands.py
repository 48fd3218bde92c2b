"""`xaibench groundtruth explain|gather|score|figure`: the commands of the ground-truth benchmark
(workflows/groundtruth.smk). `explain --chunk I/N` explains one chunk of the samples (a scatter
job); `gather` merges the N chunk files into the relevance.nc one `explain` without --chunk
writes (xaibench.studies.chunks)."""

from xaibench.studies.arguments import chunk_spec, positive_int


def add_commands(commands) -> dict:
    """`xaibench groundtruth explain|gather|score|figure` (the rules of workflows/groundtruth.smk)."""
    parser = commands.add_parser(
        "groundtruth", help="the ground-truth attribution benchmark (Mamalakis et al. 2022)",
        description="explain: explain the trained network's test samples with every method and backend "
                    "(or one chunk of them); gather: merge the chunks into one file; score: correlation with "
                    "the exact attribution and deletion faithfulness; figure: histograms, example maps, "
                    "faithfulness vs correlation.")
    actions = parser.add_subparsers(dest="groundtruth_command", metavar="ACTION", required=True)
    explain = actions.add_parser("explain", help="write relevance.nc")
    explain.add_argument("--model", required=True, metavar="DIR")
    explain.add_argument("--data", required=True, metavar="FILE.nc")
    explain.add_argument("--out", required=True, metavar="FILE.nc")
    explain.add_argument("--samples", type=int, default=500, metavar="N")
    explain.add_argument("--backends", default=None, metavar="B1,B2")
    explain.add_argument("--methods", nargs="+", default=None, metavar="M")
    explain.add_argument("--batch-size", dest="batch_size", type=positive_int, default=None, metavar="B",
                         help="samples per explanation call (default: all at once); chunks are whole batches")
    explain.add_argument("--chunk", type=chunk_spec, default=None, metavar="I/N",
                         help="explain only chunk I of N (from 1) into --out, for gather")
    gather = actions.add_parser("gather", help="merge the files of explain --chunk 1/N ... N/N into relevance.nc")
    gather.add_argument("--chunks", required=True, nargs="+", metavar="FILE.nc", help="every chunk's file, any order")
    gather.add_argument("--out", required=True, metavar="FILE.nc")
    score = actions.add_parser("score", help="write correlations.csv, per_sample.csv, faithfulness.csv, .md")
    score.add_argument("--relevance", required=True, metavar="FILE.nc")
    score.add_argument("--model", required=True, metavar="DIR")
    score.add_argument("--data", required=True, metavar="FILE.nc")
    score.add_argument("--out", required=True, metavar="DIR")
    figure = actions.add_parser("figure", help="one figure (PNG)")
    figure.add_argument("kind", choices=("histograms", "maps", "faithfulness"))
    figure.add_argument("--relevance", metavar="FILE.nc")
    figure.add_argument("--scores", metavar="DIR", help="the folder score wrote")
    figure.add_argument("--out", required=True, metavar="FILE.png")
    return {"groundtruth": _command}


def _command(args) -> int:
    from xaibench.studies.groundtruth.benchmark import explain_benchmark, gather_benchmark, score_benchmark

    if args.groundtruth_command == "explain":
        backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
        path = explain_benchmark(args.model, args.data, args.out, n_samples=args.samples, methods=args.methods,
                                 backends=backends, log=lambda line: print(line, flush=True),
                                 batch_size=args.batch_size, chunk=args.chunk)
        print(f"wrote {path}")
    elif args.groundtruth_command == "gather":
        print(f"wrote {gather_benchmark(args.chunks, args.out)} from {len(args.chunks)} chunks")
    elif args.groundtruth_command == "score":
        table = score_benchmark(args.relevance, args.model, args.data, args.out)
        shown = table[table["model"] == "trained"][["method", "backend", "reference", "mean_pearson", "mean_spearman",
                                                    "faithfulness_relative"]]
        print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        print(f"wrote {args.out}/correlations.csv, per_sample.csv, faithfulness.csv and correlations.md")
    else:
        from xaibench.studies.groundtruth import figures

        drawn = figures.draw(args.kind, relevance=args.relevance, scores=args.scores, out_png=args.out)
        print(f"wrote {drawn}")
    return 0
