"""The `xaibench` command: what the workflow rules call (no logic lives in the rules).

    xaibench bench --out results/engine [--batch-scale F] [--repeats N] [--models enso,convection,radar]
    xaibench conformance --out results/engine [--quick]
    xaibench census --out results/census [--quick] [--seed N]
    xaibench methods [--markdown docs/methods.md]
    xaibench data | train | explain-case | metrics-case | figure | table   (the reference-case pipeline)
    xaibench regression check|update [--results results] [--baseline results/baseline]
    xaibench validate MODULE:FACTORY --weights FILE --inputs FILE.nc [--variable NAME] [--method M ...]
                      [--target T] [--out DIR] [--tolerance NAME=VALUE ...]
    xaibench train MODEL --data FILE.nc --out DIR [--epochs N] [--batch-size N] [--lr X] [--optimizer sgd|adam] [--lr-schedule constant|cosine]
                   [--seed N] [--threads N] [--eval-data [NAME=]FILE.nc ...]
    xaibench groundtruth explain|score|figure     the ground-truth attribution benchmark (xaibench.groundtruth)
    xaibench receptive-field measure|table|figure the radar networks' receptive fields (xaibench.physics)

Exit status: 0 on success, 1 when a run fails, 2 on a usage error (argparse's convention).
`validate` gates a CI: 0 when every check passes, 1 when one fails, 2 for bad input.
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
                       help="comma-separated backends to time beside the gradient: native, zennit, innvestigate "
                            "(default: %(default)s)")

    conformance = commands.add_parser(
        "conformance", help="the conformance table (conservation, agreement with zennit)",
        description="Writes OUT/conformance.csv and OUT/conformance.md.")
    conformance.add_argument("--out", default="results/engine", help="output folder (default: %(default)s)")
    conformance.add_argument("--quick", action="store_true", help="the quick configuration (small sizes)")

    census = commands.add_parser(
        "census", help="cross-library agreement census: every method on zennit and innvestigate vs native",
        description="Writes OUT/agreement.csv and OUT/agreement.md (see xaibench.census).")
    census.add_argument("--out", default="results/census", help="output folder (default: %(default)s)")
    census.add_argument("--quick", action="store_true",
                        help="the quick configuration (five small models, four samples; minutes on two cores)")
    census.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the weights and inputs")

    methods = commands.add_parser("methods", help="list the canonical method names per backend")
    methods.add_argument("--markdown", metavar="FILE",
                         help="write the method table (what each backend runs) as markdown to FILE")

    validate = commands.add_parser(
        "validate", help="check your own model's explanations (conservation, backends, randomization)",
        description="Explain your model on your inputs with each method on every backend and check: "
                    "conservation of the native LRP explanation, agreement of the other backends with "
                    "it, and that the relevance changes when the top layers are re-initialized "
                    "(Adebayo et al. 2018). Exit status 0: all checks pass; 1: a check fails; "
                    "2: bad input.")
    validate.add_argument("model", metavar="MODULE:FACTORY",
                          help="a function returning the torch.nn.Module: package.module:build (imported "
                               "from the current folder, like python -m) or path/to/file.py:build")
    validate.add_argument("--weights", required=True, metavar="FILE",
                          help="state dict as .safetensors or .pt/.pth (loaded with weights_only=True)")
    validate.add_argument("--inputs", required=True, metavar="FILE.nc",
                          help="netCDF inputs; the first dimension of the variable is the sample")
    validate.add_argument("--variable", default=None, metavar="NAME",
                          help="the data variable holding the inputs (default: the only one)")
    validate.add_argument("--method", dest="methods", action="extend", nargs="+", default=None, metavar="M",
                          help="canonical method name(s) (default: lrp.epsilon lrp.zplus lrp.alpha1beta0 "
                               "gradient input_x_gradient; see `xaibench methods`)")
    validate.add_argument("--target", type=_non_negative_int, default=None, metavar="T",
                          help="flat output index to explain (default: the argmax of each sample's output)")
    validate.add_argument("--out", default=None, metavar="DIR",
                          help="write verdict.json, verdict.csv and relevance_<method>.nc there")
    validate.add_argument("--tolerance", dest="tolerances", action="append", type=_tolerance, default=[],
                          metavar="NAME=VALUE",
                          help="override a tolerance: conservation=1e-10 (relative; float32: 1e-5), "
                               "agreement=1e-4 (relative to sum|R|), randomization=0.9 (Spearman must be below)")
    validate.add_argument("--dtype", choices=("auto", "float64", "float32"), default="auto",
                          help="precision of the explanations (auto: float64 when the model runs in it)")
    validate.add_argument("--samples", type=_positive_int, default=None, metavar="N",
                          help="use only the first N samples")
    validate.add_argument("--cascade", type=_positive_int, default=None, metavar="N",
                          help="re-initialize at most N layers from the top (default: all)")
    validate.add_argument("--seed", type=int, default=0, help="seed of the re-initialized weights")
    validate.add_argument("--backends", default=None, metavar="B1,B2",
                          help="comma-separated backends compared with native (default: all others)")
    validate.add_argument("--factory-kwargs", type=_json_object, default=None, metavar="JSON",
                          help="keyword arguments of the factory as a JSON object")

    train = commands.add_parser(
        "train", help="train a reference network (seeded, bit-reproducible on CPU)",
        description="Train MODEL (enso, convection, radar1, radar2, radar3, groundtruth) on a data set written by the "
                    "data step, keep the epoch with the lowest validation loss and write DIR/model.safetensors "
                    "and DIR/model.json (metadata: config, data hash, history, skill). Options not given "
                    "take the model's defaults (the paper's setup; see xaibench.models.training).")
    train.add_argument("model", metavar="MODEL", help="enso, convection, radar1, radar2, radar3 or groundtruth")
    train.add_argument("--data", required=True, metavar="FILE.nc", help="training data (netCDF from xaibench.data)")
    train.add_argument("--out", required=True, metavar="DIR", help="folder for model.safetensors and model.json")
    train.add_argument("--epochs", type=_positive_int, default=None, metavar="N")
    train.add_argument("--batch-size", type=_positive_int, default=None, metavar="N")
    train.add_argument("--lr", type=_positive_float, default=None, metavar="X", help="learning rate")
    train.add_argument("--optimizer", choices=("sgd", "adam"), default=None,
                       help="the optimizer (default: the model's, see xaibench.models.training)")
    train.add_argument("--lr-schedule", dest="lr_schedule", choices=("constant", "cosine"), default=None,
                       help="constant (default) or cosine decay from --lr toward 0 over the epochs")
    train.add_argument("--seed", type=_non_negative_int, default=None, metavar="N",
                       help="seed of the initial weights and the shuffling (default 0)")
    train.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                       help="torch threads during training (default 1; results are bit-identical only "
                            "for the same thread count)")
    train.add_argument("--eval-data", dest="eval_data", action="extend", nargs="+", default=[],
                       metavar="[NAME=]FILE.nc",
                       help="extra evaluation set(s), scored with the best model (name: the file's stem)")
    _add_case_commands(commands)
    from .regression import add_commands as add_regression_commands

    add_regression_commands(commands)   # xaibench regression check|update
    for module in _command_modules():
        COMMANDS.update(module.add_commands(commands))
    return parser


#: Modules that add their own subcommands: each has add_commands(subparsers) -> {name: handler}.
#: A concern that owns a workflow (xaibench/<concern>) keeps its command beside its code.
COMMAND_MODULES = ("xaibench.groundtruth", "xaibench.physics.adjoint_experiment",
                   "xaibench.physics.receptive_field")


def _command_modules():
    import importlib

    return [importlib.import_module(name) for name in COMMAND_MODULES]


def _add_case_commands(commands):
    """The steps of the reference-case pipeline (workflows/cases.smk)."""
    data = commands.add_parser("data", help="generate a data set as netCDF (xaibench.data)")
    data.add_argument("name", help="enso, enso_real, convection, radar, groundtruth, or a name whose --settings give "
                                   "'generator'")
    data.add_argument("--settings", type=_json_object, default={}, metavar="JSON",
                      help="the generator's keyword arguments (and 'generator' when NAME is not one)")
    data.add_argument("--out", required=True, metavar="FILE.nc")

    explain = commands.add_parser("explain-case", help="explain a trained reference network on every backend")
    explain.add_argument("case", help="enso, convection, radar1, radar2 or radar3")
    explain.add_argument("--model", required=True, metavar="DIR", help="folder with model.safetensors/model.json")
    explain.add_argument("--data", required=True, metavar="FILE.nc")
    explain.add_argument("--out", required=True, metavar="DIR")
    explain.add_argument("--samples", type=_positive_int, default=16, metavar="N", help="samples per subset")
    explain.add_argument("--backends", default=None, metavar="B1,B2", help="default: every backend")
    explain.add_argument("--methods", nargs="+", default=None, metavar="M", help="default: xaibench.cases'")
    explain.add_argument("--eval-data", dest="eval_data", action="extend", nargs="+", default=[],
                         metavar="NAME=FILE.nc", help="the extra evaluation sets training used")

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


def _tolerance(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    return name.strip(), number


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


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


def _census(args) -> int:
    from .census import run_census

    started = time.perf_counter()
    table = run_census(args.out, quick=args.quick, seed=args.seed)
    errors = int(table["status"].str.startswith("error").sum())
    print(f"wrote {args.out}/agreement.csv and agreement.md in {time.perf_counter() - started:.1f} s "
          f"({len(table)} rows, {errors} with errors)")
    return 1 if errors else 0


def _methods(args) -> int:
    from . import api
    from .backends import table as method_table

    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(method_table.markdown())
        print(f"wrote {args.markdown}")
        return 0
    table = api.methods()
    names = sorted({name for names in table.values() for name in names})
    backends = list(table)
    width = max(len(name) for name in names)
    print(f"{'method':{width}s}  " + "  ".join(backends))
    for name in names:
        marks = "  ".join(f"{'yes' if name in table[b] else '-':{len(b)}s}" for b in backends)
        print(f"{name:{width}s}  {marks}")
    return 0


def _validate(args) -> int:
    from .errors import InputError
    from .validate import DEFAULT_METHODS, validate

    try:
        report = validate(args.model, weights=args.weights, inputs=args.inputs, variable=args.variable,
                          methods=args.methods or DEFAULT_METHODS, target=args.target,
                          tolerances=dict(args.tolerances), dtype=args.dtype, seed=args.seed,
                          cascade=args.cascade, samples=args.samples, factory_kwargs=args.factory_kwargs,
                          backends=None if args.backends is None
                          else [b.strip() for b in args.backends.split(",") if b.strip()])
        print(report.table())
        if args.out:
            report.write(args.out)
            print(f"wrote {args.out}/verdict.json, verdict.csv and relevance_<method>.nc")
    except InputError as error:  # bad input: one line, no traceback, status 2
        print(f"xaibench validate: error: {error}", file=sys.stderr)
        return 2
    return report.exit_code


def _train(args) -> int:
    from pathlib import Path

    from .errors import InputError
    from .models.training import format_epoch, train

    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "threads": args.threads, "optimizer": args.optimizer, "lr_schedule": args.lr_schedule}
    config = {key: value for key, value in overrides.items() if value is not None}
    evaluation = {}
    for item in args.eval_data:
        name, separator, path = item.partition("=")
        if not separator:
            name, path = Path(item).stem, item
        if not name or not path or name in evaluation:
            print(f"xaibench train: error: --eval-data {item!r}: give NAME=FILE.nc with a new name "
                  f"(names so far: {', '.join(evaluation) or 'none'})", file=sys.stderr)
            return 2
        evaluation[name] = path
    try:
        result = train(args.model, args.data, config, out=args.out, evaluation=evaluation,
                       progress=lambda record: print(format_epoch(record), flush=True))
    except InputError as error:  # bad input: one line, no traceback, status 2
        print(f"xaibench train: error: {error}", file=sys.stderr)
        return 2
    metadata = result.metadata
    skills = ", ".join(f"{name} {scores['skill']:.4f}" for name, scores in result.skill.items()
                       if scores["skill"] is not None)  # None: R^2 of a constant target
    print(f"best epoch {metadata['best_epoch']} of {metadata['epochs_run']}; {metadata['skill_name']}: {skills}")
    print(f"wrote {result.directory}/model.safetensors and model.json in {metadata['wall_time_s']:.1f} s")
    return 0


def _eval_data(items) -> dict:
    evaluation = {}
    for item in items:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise ValueError(f"--eval-data {item!r}: give NAME=FILE.nc")
        evaluation[name] = path
    return evaluation


def _data(args) -> int:
    from .data import GENERATORS, generate, write_dataset

    settings = dict(args.settings)
    generator = settings.pop("generator", args.name)
    if generator not in GENERATORS:
        raise ValueError(f"unknown data set '{generator}'; known: {', '.join(GENERATORS)} "
                         "(or give {{\"generator\": ...}} in --settings)")
    dataset = generate(generator, **settings)
    write_dataset(dataset, args.out)
    print(f"wrote {args.out}: {dict(dataset.sizes)}")
    return 0


def _explain_case(args) -> int:
    from .cases import explain_case

    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    written = explain_case(args.case, args.model, args.data, args.out, methods=args.methods, backends=backends,
                           n_samples=args.samples, evaluation=_eval_data(args.eval_data) or None,
                           log=lambda line: print(line, flush=True))
    print(f"wrote {len(written)} files to {args.out}")
    return 0


def _metrics_case(args) -> int:
    from .cases import metrics_case

    frame = metrics_case(args.case, args.explanations, args.data, args.out, per_sample_csv=args.per_sample)
    print(frame.to_string(max_rows=100))
    return 0


#: what each case's figure draws by default (method__backend file stems)
FIGURE_FILES = {
    "enso": ["lrp.epsilon__native", "lrp.alpha1beta0__native", "input_x_gradient__native",
             "integrated_gradients__native", "deep_taylor__innvestigate", "lrp.alpha1beta0__innvestigate"],
    "convection": ["lrp.epsilon__native", "lrp.alpha1beta0__native", "input_x_gradient__native"],
    "radar": ["lrp.alpha1beta0__native"],
}


def _figure(args) -> int:
    from pathlib import Path

    from .report import convection_relevance, enso_composite_maps, radar_relevance

    kind = "radar" if args.case.startswith("radar") else args.case
    if kind not in FIGURE_FILES:
        raise ValueError(f"unknown case '{args.case}'; known: enso, convection, radar1, radar2, radar3")
    folder = Path(args.explanations)
    stems = args.methods or FIGURE_FILES[kind]
    files = [folder / f"{stem}.nc" for stem in stems if (folder / f"{stem}.nc").exists()]
    if not files:
        raise ValueError(f"none of {', '.join(stems)} in {folder}")
    if kind == "enso":
        enso_composite_maps(files, args.out, subset=args.subset)
    elif kind == "convection":
        convection_relevance(files, args.out, subset=args.subset)
    else:
        radar_relevance(files[0], args.out, samples=(0, 1))
    print(f"wrote {args.out} from {', '.join(f.name for f in files)}")
    return 0


def _regression(args) -> int:
    from .regression import main as regression_main

    return regression_main(args)


def _table(args) -> int:
    import os

    import pandas as pd

    from .report import write_table

    frame = pd.concat([pd.read_csv(path) for path in args.inputs], ignore_index=True)
    frame.to_csv(f"{args.out}.partial", index=False)
    os.replace(f"{args.out}.partial", args.out)   # a half-written table never looks finished
    write_table(args.out, args.markdown, title="Metrics of the reference cases")
    print(f"wrote {args.out} and {args.markdown} ({len(frame)} rows)")
    return 0


COMMANDS = {"bench": _bench, "conformance": _conformance, "census": _census, "methods": _methods, "validate": _validate,
            "train": _train, "data": _data, "explain-case": _explain_case, "metrics-case": _metrics_case,
            "figure": _figure, "table": _table, "regression": _regression}


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
