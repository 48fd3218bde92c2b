"""The `xaibench` command: what the workflow rules call (no logic lives in the rules).

cli.py only assembles. The library adds one command of its own (`methods`); every study room
adds its commands through one interface, add_commands(subparsers) -> {name: handler}, listed in
xaibench.studies.COMMAND_MODULES (docs/architecture.md, "Rooms"). `xaibench --help` lists them:

    xaibench methods [--markdown docs/methods.md]                    the method names per backend
    xaibench validate MODULE:FACTORY --weights FILE --inputs FILE.nc  check your own model
    xaibench data | train | explain-case | gather-case | metrics-case | figure | table   the cases
    xaibench conformance | census | bench                            the engine's tables
    xaibench groundtruth | adjoint | adjoint-figure | receptive-field the studies' commands
    xaibench regression check|update                                 the regression gate (CI)
    xaibench report-table FILE.md|FILE.csv --out FILE.html           a table as a page for the report

Exit status: 0 on success, 1 when a run fails, 2 on a usage error (argparse's convention).
`validate` gates a CI: 0 when every check passes, 1 when one fails, 2 for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback


def add_commands(commands) -> dict:
    """The library's own command: `xaibench methods`."""
    methods = commands.add_parser("methods", help="list the canonical method names per backend")
    methods.add_argument("--markdown", metavar="FILE",
                         help="write the method table (what each backend runs) as markdown to FILE")
    return {"methods": _methods}


def _methods(args) -> int:
    from . import api
    from .backends import table as method_table
    from .io import write_text

    if args.markdown:
        write_text(args.markdown, method_table.markdown())
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


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The argument parser with every command, and {command name: handler}."""
    from .studies import COMMAND_MODULES

    parser = argparse.ArgumentParser(
        prog="xaibench", description="Checkable attribution (LRP) for earth-science neural networks.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    handlers = {}
    for module in [sys.modules[__name__], *map(importlib.import_module, COMMAND_MODULES)]:
        added = module.add_commands(commands)
        clash = set(added) & set(handlers)
        if clash:
            raise RuntimeError(f"{module.__name__} adds the command(s) {sorted(clash)} a room has already added")
        handlers.update(added)
    return parser, handlers


def main(argv=None) -> int:
    parser, handlers = build_parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        print("xaibench: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one clear line (a traceback for the unexpected), status 1
        from .errors import XaibenchError

        if not isinstance(error, (ValueError, XaibenchError, ImportError)):
            traceback.print_exc()
        print(f"xaibench {args.command}: error: {type(error).__name__}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
