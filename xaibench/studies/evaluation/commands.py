"""`xaibench evaluation case|groundtruth|summary|quantus`: the commands of the evaluation study
(workflows/evaluation.smk)."""

from xaibench.studies.arguments import json_object, non_negative_int, positive_float, positive_int


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _common(parser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="folder with model.safetensors/json")
    parser.add_argument("--out", required=True, metavar="FILE.csv", help="the scores (one row per map x metric)")
    parser.add_argument("--samples", type=positive_int, default=None, metavar="N", help="the first N samples")
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--backends", type=_names, default=None, metavar="B1,B2", help="maps of these backends")
    parser.add_argument("--methods", type=_names, default=None, metavar="M1,M2", help="maps of these methods")
    parser.add_argument("--metrics", type=_names, default=None, metavar="NAME1,NAME2",
                        help="these metrics (default: every one, `xaibench evaluation metrics` lists them)")
    parser.add_argument("--explain-backends", dest="explain_backends", type=_names, default=["native"],
                        metavar="B1,B2", help="backends that re-explain for robustness and randomization")
    parser.add_argument("--quantus", action="store_true", help="also run Quantus 0.6.0's version of each metric")
    parser.add_argument("--options", type=json_object, default=None, metavar="JSON",
                        help='per-metric options over the defaults: {"metric": {"option": value}}')


def add_commands(commands) -> dict:
    """`xaibench evaluation ...` (the rules of workflows/evaluation.smk)."""
    parser = commands.add_parser(
        "evaluation", help="evaluation metrics as skill scores on every case, checked against Quantus",
        description="case: score a reference case's explanation files; groundtruth: score the ground-truth "
                    "benchmark's maps; summary: the table, trade-off, ranking and figures of every case; "
                    "quantus: agreement and timing of our metrics against Quantus 0.6.0; metrics: list them.")
    actions = parser.add_subparsers(dest="evaluation_command", metavar="ACTION", required=True)
    case = actions.add_parser("case", help="score one case's <method>__<backend>.nc files")
    case.add_argument("--explanations", required=True, metavar="DIR")
    _common(case)
    truth = actions.add_parser("groundtruth", help="score the ground-truth benchmark's relevance.nc")
    truth.add_argument("--relevance", required=True, metavar="FILE.nc")
    truth.add_argument("--mask-fraction", dest="mask_fraction", type=positive_float, default=0.1,
                       help="localization's mask: the cells with this share of the largest |true attribution|")
    _common(truth)
    summary = actions.add_parser("summary", help="scores.csv, skills, trade-off, ranking, summary.md, figures")
    summary.add_argument("--scores", required=True, nargs="+", metavar="FILE.csv")
    summary.add_argument("--correlations", default=None, metavar="FILE.csv",
                         help="the ground-truth study's correlations.csv (for the ranking)")
    summary.add_argument("--out", required=True, metavar="DIR")
    quantus = actions.add_parser("quantus", help="agreement and timing against Quantus 0.6.0 (quantus.csv, .md)")
    quantus.add_argument("--case", nargs=2, action="append", default=[], metavar=("EXPLANATIONS_DIR", "MODEL_DIR"),
                         help="a reference case's explanation folder and model (repeatable)")
    quantus.add_argument("--groundtruth", nargs=2, default=None, metavar=("RELEVANCE_NC", "MODEL_DIR"),
                         help="the ground-truth benchmark's relevance.nc and model")
    quantus.add_argument("--method", default="lrp.epsilon", help="the map compared (native backend)")
    quantus.add_argument("--out", required=True, metavar="DIR")
    quantus.add_argument("--samples", type=positive_int, default=8)
    quantus.add_argument("--seed", type=non_negative_int, default=0)
    quantus.add_argument("--repeats", type=positive_int, default=3, help="timings: the best of this many")
    quantus.add_argument("--options", type=json_object, default=None, metavar="JSON",
                         help='per-metric options over the defaults, for both: {"metric": {"option": value}}')
    actions.add_parser("metrics", help="list the metrics with category, direction, optimum and source")
    return {"evaluation": _command}


def _command(args) -> int:
    def say(line):
        print(line, flush=True)

    if args.evaluation_command == "metrics":
        from xaibench.metrics.evaluation import metrics

        for metric in metrics().values():
            direction = "higher" if metric.higher_is_better else "lower"
            needs = f", needs {'+'.join(metric.needs)}" if metric.needs else ""
            say(f"{metric.name:28s} {metric.category:14s} {direction} is better, optimum {metric.optimum:g}"
                f"{needs}; {metric.source}")
        return 0
    if args.evaluation_command == "summary":
        from xaibench.studies.evaluation.figures import summary

        for path in summary(args.scores, args.out, correlations_csv=args.correlations):
            say(f"wrote {path}")
        return 0
    if args.evaluation_command == "quantus":
        from xaibench.errors import InputError
        from xaibench.metrics.evaluation import metrics
        from xaibench.studies.evaluation.quantus_check import compare
        from xaibench.studies.evaluation.scoring import case_setting, groundtruth_setting

        if not args.case and not args.groundtruth:
            raise InputError("evaluation quantus needs at least one --case or --groundtruth")
        unknown = [name for name in (args.options or {}) if name not in metrics()]
        if unknown:
            raise InputError(f"unknown metric(s) in --options: {', '.join(unknown)}; metrics: {', '.join(metrics())}")
        settings = dict(case_setting(folder, model, args.method, samples=args.samples, seed=args.seed)
                        for folder, model in args.case)
        if args.groundtruth:
            settings["groundtruth"] = groundtruth_setting(*args.groundtruth, args.method, samples=args.samples,
                                                          seed=args.seed)
        for setting in settings.values():
            setting.options = dict(args.options or {})
        table = compare(args.out, settings, repeats=args.repeats, log=say)
        say(table.to_string(index=False))
        return 0
    from xaibench.studies.evaluation import scoring

    common = {"samples": args.samples, "seed": args.seed, "backends": args.backends, "methods": args.methods,
              "metrics": args.metrics, "explain_backends": args.explain_backends, "quantus": args.quantus,
              "options": args.options, "log": say}
    if args.evaluation_command == "case":
        scoring.score_case(args.explanations, args.model, args.out, **common)
    else:
        scoring.score_groundtruth(args.relevance, args.model, args.out, mask_fraction=args.mask_fraction, **common)
    say(f"wrote {args.out}")
    return 0
