"""`xaibench regression check|update`: the regression gate's commands (workflows/regression.smk, CI)."""

import sys


def main_check(args) -> int:
    """`xaibench regression check`: 0 no drift, 1 drift (named), 2 a malformed spec or baseline."""
    from xaibench.studies.regression.gate import RegressionSpecError, compare

    try:
        report = compare(args.results, args.baseline)
    except RegressionSpecError as error:
        print(f"xaibench regression check: error: {error}", file=sys.stderr)
        return 2
    print(report.text())
    return 0 if report.ok else 1


def main_update(args) -> int:
    """`xaibench regression update`: rewrite the baseline tables from the results (0), or say why not (2)."""
    from xaibench.studies.regression.gate import RegressionSpecError, update

    try:
        written = update(args.results, args.baseline, files=args.files or None)
    except RegressionSpecError as error:
        print(f"xaibench regression update: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print("review with `git diff results/baseline` and commit the tables")
    return 0


def add_commands(commands) -> dict:
    """`xaibench regression check|update` (argparse subparsers)."""
    regression = commands.add_parser(
        "regression", help="compare the metrics tables with the committed baseline (CI), or update it",
        description="check: exit 1 when a metric drifts beyond its tolerance in results/baseline/tolerances.yaml "
                    "(a missing row or file is a drift; new rows are reported, not failures); "
                    "update: copy the current metrics into the baseline (the tolerances are kept).")
    actions = regression.add_subparsers(dest="regression_command", metavar="ACTION", required=True)
    for name, handler, text in (("check", main_check, "compare results with the baseline"),
                                ("update", main_update, "copy the current metrics into the baseline")):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--results", default="results", help="results folder (default: %(default)s)")
        action.add_argument("--baseline", default="results/baseline",
                            help="baseline folder with tolerances.yaml (default: %(default)s)")
        if name == "update":
            action.add_argument("--file", dest="files", action="append", default=[], metavar="PATH",
                                help="update only this table (path relative to --results; repeatable)")
        action.set_defaults(regression_handler=handler)
    return {"regression": main}


def main(args) -> int:
    """Dispatch `xaibench regression ACTION`."""
    return args.regression_handler(args)


if __name__ == "__main__":   # python -m xaibench.studies.regression.commands check|update (= xaibench regression)
    import argparse

    _parser = argparse.ArgumentParser(prog="python -m xaibench.studies.regression.commands")
    add_commands(_parser.add_subparsers(dest="command", required=True))
    sys.exit(main(_parser.parse_args(["regression", *sys.argv[1:]])))
