"""xaibench.io: the one atomic writer every study writes through, and the rule that nobody else
writes a results file (issue 15: ten copies of an atomic write had drifted, and two markdown
writers were not atomic at all)."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from xaibench import io
from xaibench.errors import InputError

PACKAGE = Path(__file__).resolve().parents[1] / "xaibench"


class Interrupted(Exception):
    pass


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_an_interrupted_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.md"
    io.write_text(path, "old\n")
    with pytest.raises(Interrupted), io.atomic_path(path) as temporary:
        temporary.write_text("half of the new ")
        raise Interrupted
    assert path.read_text() == "old\n"
    assert _leftovers(tmp_path) == []


def test_a_failing_writer_of_a_new_file_leaves_nothing(tmp_path):
    frame = pd.DataFrame({"a": [1.0]})

    class Broken(pd.DataFrame):
        def to_csv(self, *args, **kwargs):
            super().to_csv(*args, **kwargs)
            raise Interrupted

    with pytest.raises(Interrupted):
        io.write_csv(Broken(frame), tmp_path / "new" / "t.csv")
    assert not (tmp_path / "new" / "t.csv").exists()
    assert _leftovers(tmp_path / "new") == []


def test_new_files_get_the_permissions_of_a_plain_open_and_old_files_keep_theirs(tmp_path):
    umask = os.umask(0o022)
    try:
        io.write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        (tmp_path / "old.txt").write_text("x")
        os.chmod(tmp_path / "old.txt", 0o600)
        io.write_text(tmp_path / "old.txt", "y")
        assert (tmp_path / "old.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(umask)


def test_every_writer_round_trips(tmp_path):
    assert io.write_bytes(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert io.write_text(tmp_path / "t.md", "| a |\n").read_text() == "| a |\n"
    assert io.write_json(tmp_path / "j.json", {"a": [1, 2]}).read_text() == '{"a": [1, 2]}\n'
    frame = pd.DataFrame({"method": ["lrp.z"], "value": [0.25]})
    pd.testing.assert_frame_equal(pd.read_csv(io.write_csv(frame, tmp_path / "c.csv")), frame)
    ds = xr.Dataset({"r": ("sample", np.arange(3.0))}, attrs={"synthetic": True, "source": "test"})
    back = io.read_dataset(io.write_dataset(ds, tmp_path / "d.nc"))
    xr.testing.assert_identical(back, ds)        # booleans in attributes survive the trip
    with pytest.raises(ValueError):              # NaN is not JSON: refused, nothing written
        io.write_json(tmp_path / "nan.json", {"a": float("nan")})
    assert not (tmp_path / "nan.json").exists()


def test_reading_a_missing_or_broken_file_names_it(tmp_path):
    with pytest.raises(InputError, match="not found.*missing.nc"):
        io.read_dataset(tmp_path / "missing.nc")
    (tmp_path / "broken.nc").write_bytes(b"not netcdf")
    with pytest.raises(InputError, match="broken.nc"):
        io.read_dataset(tmp_path / "broken.nc")


def test_model_files_refuse_weights_from_another_run(tmp_path):
    import torch

    state = {"w": torch.arange(4.0)}
    written = io.save_model_files(state, {"model": "x", "skill": float("inf")}, tmp_path / "a")
    assert written["skill"] is None and written["weights_file"] == io.WEIGHTS_FILE
    loaded, metadata = io.load_model_files(tmp_path / "a")
    assert torch.equal(loaded["w"], state["w"]) and metadata == written
    io.save_model_files({"w": torch.zeros(4)}, {"model": "x"}, tmp_path / "b")
    (tmp_path / "a" / io.WEIGHTS_FILE).write_bytes((tmp_path / "b" / io.WEIGHTS_FILE).read_bytes())
    with pytest.raises(InputError, match="sha256 differs"):
        io.load_model_files(tmp_path / "a")


# --- nobody else writes a results file -------------------------------------------------------
#: (file, what it writes) that are not results files: exchange files and logs of the innvestigate
#: worker, the kernel's /proc interface the benchmark resets its memory counter through, and the
#: figures verdict.html inlines (rendered into memory; the page itself goes through xaibench.io).
NOT_RESULTS = {
    ("backends/innvestigate_backend.py", "open"),          # the worker's log
    ("backends/innvestigate_backend.py", "write_text"),    # the model spec handed to the worker
    ("backends/innvestigate_worker.py", "fdopen"),         # the worker's replies on stdout
    ("studies/bench/timing.py", "open"),                   # /proc/<pid>/clear_refs
    ("studies/validate/page.py", "savefig"),               # PNG bytes into memory, inlined in verdict.html
}
WRITERS = {"write_text", "write_bytes", "to_csv", "to_netcdf", "savefig", "to_parquet"}


def _writes(path: Path):
    """(call, line) of every call that writes a file outside an atomic_path block's temporary: a
    Path's write_text/write_bytes, a table's, data set's or figure's to_csv/to_netcdf/savefig into
    anything but the name `temporary`, os.replace/os.rename, tempfile's writers, open(..., "w")."""
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        if isinstance(function, ast.Attribute):
            name, owner = function.attr, function.value
            first = node.args[0] if node.args else None
            into_temporary = isinstance(first, ast.Name) and first.id == "temporary"
            if name in WRITERS and (node.args or node.keywords) and not into_temporary:
                yield name, node.lineno
            elif isinstance(owner, ast.Name) and (owner.id, name) in {("os", "replace"), ("os", "rename"),
                                                                       ("tempfile", "mkstemp"),
                                                                       ("tempfile", "NamedTemporaryFile")}:
                yield f"{owner.id}.{name}", node.lineno
            elif name == "fdopen" and _writing_mode(node):
                yield name, node.lineno
        elif isinstance(function, ast.Name) and function.id == "open" and _writing_mode(node):
            yield "open", node.lineno


def _writing_mode(node: ast.Call) -> bool:
    modes = [node.args[1]] if len(node.args) > 1 else [k.value for k in node.keywords if k.arg == "mode"]
    return any(isinstance(m, ast.Constant) and any(c in str(m.value) for c in "wax") for m in modes)


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "io.py" or p.parent != PACKAGE),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_are_written_only_through_xaibench_io(path):
    relative = str(path.relative_to(PACKAGE))
    found = [(name, line) for name, line in _writes(path) if (relative, name) not in NOT_RESULTS]
    assert not found, f"{relative} writes files itself at {found}: use xaibench.io (atomic_path, write_*)"
