"""`xaibench conformance`: the conformance table's command (workflows/engine.smk)."""



def add_commands(commands) -> dict:
    """`xaibench conformance`."""
    conformance = commands.add_parser(
        "conformance", help="the conformance table (conservation, agreement with zennit)",
        description="Writes OUT/conformance.csv and OUT/conformance.md.")
    conformance.add_argument("--out", default="results/engine", help="output folder (default: %(default)s)")
    conformance.add_argument("--quick", action="store_true", help="the quick configuration (small sizes)")
    return {"conformance": _conformance}


def _conformance(args) -> int:
    from xaibench.studies.conformance.table import write_conformance

    write_conformance(args.out, quick=args.quick)
    print(f"wrote {args.out}/conformance.csv and conformance.md")
    return 0
