"""`xaibench validate`: check a researcher's own model (exit 0 all checks pass, 1 a check fails,
2 bad input).

A model with several inputs (forward(self, sst, wind)) gets one variable per input, in the
order of its forward arguments, by repeating --variable (one name each, so that a name is never
taken for the model argument):

    xaibench validate pkg.models:build --weights w.safetensors --inputs era5.nc --variable sst --variable wind
    xaibench validate pkg.models:build --weights w.safetensors --inputs sst.nc --inputs wind.nc

(several --inputs files: each file's only variable, or the i-th --variable of the i-th file).
--output KEY chooses the output explained of a model returning a tuple (an index) or a dict
(a key); without it such a model gets an error listing the choices.

The console shows a summary (one row per method and check; the randomization cascade one row
per method); verdict.csv / verdict.json under --out hold every row, verdict.html the summary
with the maps, the randomization curve and the ledger. Progress goes to stderr, and only when
it is a terminal."""

import argparse
import sys

from xaibench.studies.arguments import json_object, non_negative_int, positive_int


def add_commands(commands) -> dict:
    """`xaibench validate`."""
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
    validate.add_argument("--inputs", required=True, action="append", metavar="FILE.nc",
                          help="netCDF inputs; the first dimension of the variable is the sample. A model with "
                               "several inputs: one file per input (repeat --inputs), or one file and several "
                               "--variable")
    validate.add_argument("--variable", dest="variables", action="append", default=None, metavar="NAME",
                          help="the data variable holding the inputs (default: the only one). A model with "
                               "several inputs: one per input, in the order of its forward arguments, e.g. "
                               "--variable sst --variable wind; the relevance files then hold relevance_sst and "
                               "relevance_wind")
    validate.add_argument("--output", default=None, metavar="KEY",
                          help="for a model returning a tuple or dict: the output explained (an index or key; "
                               "without it the error lists the choices)")
    validate.add_argument("--method", dest="methods", action="extend", nargs="+", default=None, metavar="M",
                          help="canonical method name(s) (default: lrp.epsilon lrp.zplus lrp.alpha1beta0 "
                               "gradient input_x_gradient; see `xaibench methods`)")
    validate.add_argument("--target", type=non_negative_int, default=None, metavar="T",
                          help="flat output index to explain (default: the argmax of each sample's output)")
    validate.add_argument("--out", default=None, metavar="DIR",
                          help="write verdict.json, verdict.csv (every check and layer), verdict.html (a "
                               "self-contained page: summary, relevance maps, randomization curve, ledger per "
                               "layer) and relevance_<method>.nc there")
    validate.add_argument("--tolerance", dest="tolerances", action="append", type=_tolerance, default=[],
                          metavar="NAME=VALUE",
                          help="override a tolerance: conservation=1e-10 (relative; float32: 1e-5), "
                               "agreement=1e-4 (relative to sum|R|), randomization=0.9 (Spearman must be below)")
    validate.add_argument("--dtype", choices=("auto", "float64", "float32"), default="auto",
                          help="precision of the explanations (auto: float64 when the model runs in it)")
    validate.add_argument("--samples", type=positive_int, default=None, metavar="N",
                          help="use only the first N samples")
    validate.add_argument("--cascade", type=positive_int, default=None, metavar="N",
                          help="re-initialize at most N layers from the top (default: all)")
    validate.add_argument("--seed", type=int, default=0, help="seed of the re-initialized weights")
    validate.add_argument("--backends", default=None, metavar="B1,B2",
                          help="comma-separated backends compared with native (default: all others)")
    validate.add_argument("--metrics", nargs="?", const="all", default=None, metavar="NAME1,NAME2",
                          help="also measure the evaluation metrics (faithfulness, robustness, randomization, "
                               "complexity, axiomatic) of each method's map as skill scores against a random map: "
                               "every one, or the named ones (`xaibench evaluation metrics` lists them). Slower; "
                               "measurements, not verdicts; written to metrics.csv")
    validate.add_argument("--factory-kwargs", type=json_object, default=None, metavar="JSON",
                          help="keyword arguments of the factory as a JSON object")
    return {"validate": _validate}


def _tolerance(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    if not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    return name.strip(), number


def _metric_names(text):
    """--metrics: None (not asked), True (every metric) or the named ones."""
    if text is None:
        return False
    if text == "all":
        return True
    return [name.strip() for name in text.split(",") if name.strip()]


def _validate(args) -> int:
    from xaibench.errors import InputError
    from xaibench.studies.validate.checks import DEFAULT_METHODS, validate

    try:
        inputs = args.inputs[0] if len(args.inputs) == 1 else args.inputs
        variable = args.variables[0] if args.variables and len(args.variables) == 1 else args.variables
        report = validate(args.model, weights=args.weights, inputs=inputs, variable=variable, output=args.output,
                          methods=args.methods or DEFAULT_METHODS, target=args.target,
                          tolerances=dict(args.tolerances), dtype=args.dtype, seed=args.seed,
                          cascade=args.cascade, samples=args.samples, factory_kwargs=args.factory_kwargs,
                          metrics=_metric_names(args.metrics),
                          backends=None if args.backends is None
                          else [b.strip() for b in args.backends.split(",") if b.strip()])
        print(report.table())
        if args.out:
            report.write(args.out)
            print(f"wrote {args.out}/verdict.json, verdict.csv (every check, every layer), verdict.html (the "
                  "summary, maps, randomization curve and ledger, for a browser) and relevance_<method>.nc")
    except InputError as error:  # bad input: one line, no traceback, status 2
        print(f"xaibench validate: error: {error}", file=sys.stderr)
        return 2
    return report.exit_code
