"""`xaibench adjoint` and `xaibench adjoint-figure`: the commands of the adjoint study (workflows/adjoint.smk)."""

import json
import sys

from xaibench.errors import InputError


def add_commands(commands) -> dict:
    """`xaibench adjoint` and `xaibench adjoint-figure` (see the module docstring)."""
    experiment = commands.add_parser(
        "adjoint", help="relevance vs the adjoint sensitivity of a linear ocean model (bridge on/off)",
        description="Simulate the linear ocean model with and without the atmospheric bridge, train the "
                    "XAIRT network per lag, explain it with LRP and compare with the adjoint sensitivity. "
                    "Writes OUT/comparison.csv, OUT/comparison_networks.csv, OUT/remote_attribution.csv and "
                    "OUT/maps.nc.")
    experiment.add_argument("--config", default="{}", metavar="JSON",
                            help="settings as a JSON object (see xaibench.studies.adjoint.experiment.DEFAULTS)")
    experiment.add_argument("--out", required=True, metavar="DIR")
    experiment.add_argument("--threads", type=int, default=1, metavar="N",
                            help="torch threads (default 1: bit-reproducible on CPU for a fixed count)")
    figure = commands.add_parser("adjoint-figure", help="maps of adjoint sensitivity beside relevance at one lag")
    figure.add_argument("--maps", required=True, metavar="FILE.nc", help="maps.nc written by `xaibench adjoint`")
    figure.add_argument("--lag", required=True, type=int, metavar="DAYS")
    figure.add_argument("--out", required=True, metavar="FILE.png")
    return {"adjoint": _experiment_command, "adjoint-figure": _figure_command}


def _experiment_command(args) -> int:
    import torch

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as error:
        print(f"xaibench adjoint: error: --config is not JSON: {error}", file=sys.stderr)
        return 2
    if args.threads < 1:
        print(f"xaibench adjoint: error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from xaibench.studies.adjoint.experiment import run_experiment

    try:
        run_experiment(config, args.out, log=lambda line: print(line, flush=True))
    except InputError as error:  # bad input: one line, status 2
        print(f"xaibench adjoint: error: {error}", file=sys.stderr)
        return 2
    return 0


def _figure_command(args) -> int:
    from xaibench.studies.adjoint.figures import sensitivity_relevance_maps

    try:
        sensitivity_relevance_maps(args.maps, args.lag, args.out)
    except InputError as error:
        print(f"xaibench adjoint-figure: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
