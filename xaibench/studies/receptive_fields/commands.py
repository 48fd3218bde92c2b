"""`xaibench receptive-field measure|table|figure`: the commands of the receptive-field study
(workflows/receptive_fields.smk)."""

import time
from pathlib import Path

from xaibench.errors import InputError


def add_commands(commands) -> dict:
    """`xaibench receptive-field measure|table|figure` (workflows/receptive_fields.smk)."""
    parser = commands.add_parser(
        "receptive-field", help="theoretical and effective receptive fields of the radar networks (CNNs and radar_vit)",
        description="measure: TRF and ERF maps of a trained radar network and its initialization (netCDF "
                    "and CSV); table: concatenate the CSVs; figure: the ERF maps with the TRF box and the "
                    "true footprint (PNG).")
    actions = parser.add_subparsers(dest="receptive_field_command", metavar="ACTION", required=True)
    measure_parser = actions.add_parser("measure", help="TRF and ERF maps of one trained radar network")
    measure_parser.add_argument("--model", required=True, metavar="DIR", help="folder with model.safetensors/json")
    measure_parser.add_argument("--data", required=True, metavar="FILE.nc", help="the radar data set")
    measure_parser.add_argument("--out", required=True, metavar="FILE.nc", help="the maps (netCDF)")
    measure_parser.add_argument("--table", required=True, metavar="FILE.csv", help="this network's rows")
    measure_parser.add_argument("--samples", type=int, default=16, help="inputs averaged over (gradient, LRP)")
    measure_parser.add_argument("--optimization-samples", type=int, default=4,
                                help="inputs optimized by backward optimization")
    measure_parser.add_argument("--steps", type=int, default=20, help="backward-optimization steps")
    measure_parser.add_argument("--step-size", type=float, default=0.01, help="backward-optimization step size")
    measure_parser.add_argument("--change-threshold", type=float, default=0.01,
                                help="a pixel counts as changed when its change is at least this share of "
                                     "the largest change")
    measure_parser.add_argument("--edge-distance", type=int, default=4,
                                help="the off-centre pixel's distance from the top and left border")
    measure_parser.add_argument("--trf-samples", type=int, default=16, help="inputs of the empirical TRF check")
    measure_parser.add_argument("--seed", type=int, default=0, help="seed of the empirical TRF check")
    measure_parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    table_parser = actions.add_parser("table", help="concatenate the per-network CSVs")
    table_parser.add_argument("tables", nargs="+", metavar="FILE.csv")
    table_parser.add_argument("--out", required=True, metavar="FILE.csv")
    figure_parser = actions.add_parser("figure", help="the ERF maps of one network (PNG)")
    figure_parser.add_argument("maps", metavar="FILE.nc", help="written by `receptive-field measure`")
    figure_parser.add_argument("--out", required=True, metavar="FILE.png")
    return {"receptive-field": main}


def main(args) -> int:
    if args.receptive_field_command == "measure":
        return _main_measure(args)
    if args.receptive_field_command == "table":
        return _main_table(args)
    return _main_figure(args)


def _main_measure(args) -> int:
    import torch

    from xaibench.io import write_csv, write_dataset
    from xaibench.studies.receptive_fields.experiment import measure, table_rows

    if args.threads < 1:
        raise InputError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ds = measure(args.model, args.data, samples=args.samples, optimization_samples=args.optimization_samples,
                 steps=args.steps, step_size=args.step_size, change_threshold=args.change_threshold,
                 edge_distance=args.edge_distance, trf_samples=args.trf_samples, seed=args.seed)
    table = table_rows(ds)
    write_dataset(ds, args.out)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, args.table)
    print(table.to_string(index=False))
    print(f"took {time.perf_counter() - started:.1f} s")
    return 0


def _main_table(args) -> int:
    import pandas as pd

    from xaibench.io import write_csv
    from xaibench.studies.receptive_fields.experiment import TABLE_COLUMNS, _integer_n_blocks

    frames = []
    for path in args.tables:
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read {path}: {error}") from None
        missing = [c for c in TABLE_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(f"{path} lacks the column(s) {missing}: not written by `receptive-field measure`")
        frames.append(frame[TABLE_COLUMNS])
    table = pd.concat(frames, ignore_index=True)
    # the encoder-decoders by N, then the transformer (no N); n_blocks stays an integer column
    table = _integer_n_blocks(table).sort_values(["n_blocks", "trained", "position"], kind="stable", na_position="last")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_csv(table, args.out)
    print(table.to_string(index=False))
    return 0


def _main_figure(args) -> int:
    from xaibench.io import read_dataset
    from xaibench.studies.receptive_fields.experiment import figure

    ds = read_dataset(args.maps)
    if "erf" not in ds or "trf_box" not in ds:
        raise InputError(f"{args.maps}: not written by `xaibench receptive-field measure`")
    figure(ds, args.out)
    return 0
