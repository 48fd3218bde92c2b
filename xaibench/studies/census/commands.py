"""`xaibench census`: the cross-library census's command (workflows/engine.smk)."""

import time

from xaibench.studies.arguments import non_negative_int


def add_commands(commands) -> dict:
    """`xaibench census`."""
    census = commands.add_parser(
        "census", help="cross-library agreement census: every method on zennit and innvestigate vs native",
        description="Writes OUT/agreement.csv and OUT/agreement.md (see xaibench.studies.census); with --zoo "
                    "also OUT/zoo.csv and OUT/zoo.md (modern architectures on every backend, census/zoo.py).")
    census.add_argument("--out", default="results/census", help="output folder (default: %(default)s)")
    census.add_argument("--quick", action="store_true",
                        help="the quick configuration (five small models, four samples; minutes on two cores)")
    census.add_argument("--seed", type=non_negative_int, default=0, help="seed of the weights and inputs")
    census.add_argument("--zoo", action="store_true",
                        help="also the zoo: torchvision backbones, a diffusion U-Net and a two-branch net on every "
                             "backend (--quick leaves out the heavy ones)")
    return {"census": _census}


def _census(args) -> int:
    from xaibench.studies.census.agreement import run_census

    started = time.perf_counter()
    table = run_census(args.out, quick=args.quick, seed=args.seed)
    errors = int(table["status"].str.startswith("error").sum())
    print(f"wrote {args.out}/agreement.csv and agreement.md in {time.perf_counter() - started:.1f} s "
          f"({len(table)} rows, {errors} with errors)")
    if args.zoo:
        from xaibench.studies.census.zoo import run_zoo

        started = time.perf_counter()
        zoo = run_zoo(args.out, quick=args.quick, seed=args.seed)
        # the zoo's errors are findings (architectures the native engine cannot explain yet), not a failed run
        print(f"wrote {args.out}/zoo.csv and zoo.md in {time.perf_counter() - started:.1f} s ({len(zoo)} rows, "
              f"{int(zoo['status'].str.startswith('error').sum())} with errors)")
    return 1 if errors else 0
