"""The studies: the benchmark built on the library (docs/architecture.md, "Rooms").

Each study is one room (a package) with its run, scores, figures and its `xaibench` commands
(commands.py). Studies may import the library and the shared rooms (data, models, report,
sweep, chunks, networks, arguments); a study never imports another study's modules (tests/test_architecture.py).

    data/              seeded generators of the reference data sets, the shipped Natural Earth land
    models/            the reference architectures and their seeded training
    sweep.py           the one method x backend runner (options per backend, skip/error policy, Outcome)
    chunks.py          chunks of an explanation step's samples (scatter jobs) and what their gather checks
    networks.py        the named small test networks of the census, the conformance table and the tests
    arguments.py       argparse types shared by the commands
    cases/             the reference cases (ENSO, convection, radar N = 1-3) explained and scored
    conformance/       the engine against the dense-matrix reference; the ledger's closure
    census/            cross-library agreement of every method on every backend
    bench/             time and peak memory of the engine and the other backends
    groundtruth/       the ground-truth attribution benchmark (Mamalakis et al. 2022)
    adjoint/           relevance against the adjoint of a linear ocean model (with the model)
    receptive_fields/  the radar networks' theoretical and effective receptive fields
    evaluation/        evaluation metrics as skill scores on every case, checked against Quantus
    validate/          `xaibench validate`: the checks for a researcher's own model
    regression/        the regression gate against results/baseline/
    report/            figures, maps and tables of the report; `xaibench report-table` (a table as an HTML page)
"""

#: The modules that add `xaibench` subcommands, in --help order; each has
#: add_commands(subparsers) -> {command name: handler}. A new study adds its line here.
COMMAND_MODULES = (
    "xaibench.studies.validate.commands",
    "xaibench.studies.data.commands",
    "xaibench.studies.models.commands",
    "xaibench.studies.cases.commands",
    "xaibench.studies.conformance.commands",
    "xaibench.studies.census.commands",
    "xaibench.studies.bench.commands",
    "xaibench.studies.groundtruth.commands",
    "xaibench.studies.adjoint.commands",
    "xaibench.studies.receptive_fields.commands",
    "xaibench.studies.evaluation.commands",
    "xaibench.studies.regression.commands",
    "xaibench.studies.report.commands",
)


def lazy_exports(package: str, sources: dict[str, str]):
    """A module __getattr__ (PEP 562) for a room's package: each public name in `sources`
    ({name: module}) is imported from its module on first use, so that importing the room's
    commands.py (every `xaibench` call does) does not load the room's work."""
    import sys
    from importlib import import_module

    def __getattr__(name):
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(sources[name]), name)
        setattr(sys.modules[package], name, value)   # looked up once
        return value

    return __getattr__
