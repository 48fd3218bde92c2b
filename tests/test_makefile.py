"""The Makefile's Snakemake calls mean what their targets say.

Snakemake's --configfile takes one or more paths, so a target written after it is read as a
second configuration file: `make check-baseline` once failed on every machine with
"No such file or directory: 'regression'". These tests read each recipe as make would run it
(`make -n`) and parse its snakemake call with Snakemake's own argument parser.
"""

import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _snakemake_calls(target: str) -> list:
    from snakemake.cli import get_argument_parser

    printed = subprocess.run(["make", "-n", "--no-print-directory", "-o", "setup", target], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    calls = []
    for line in printed.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        at = next((i for i, word in enumerate(words) if word.endswith("bin/snakemake")), None)
        if at is not None:
            calls.append(get_argument_parser().parse_args(words[at + 1:]))
    assert calls, f"`make -n {target}` runs no snakemake:\n{printed}"
    return calls


@pytest.mark.parametrize("target, targets", [("check-baseline", [["regression"]]),
                                             ("reproduce", [[], []])])
def test_each_snakemake_call_reads_one_configuration_and_the_targets_meant(target, targets):
    calls = _snakemake_calls(target)
    assert [sorted(call.targets) for call in calls] == targets
    for call in calls:
        assert [Path(path).as_posix() for path in call.configfile] == ["workflows/config/quick.yaml"]
