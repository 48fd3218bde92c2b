"""Mutation check of the LRP engine: does the test suite catch each planted defect?

Each mutant is one exact search/replace in one file of xaibench/lrp/. The script copies the
package and the tests to a temporary folder, applies one mutant there (the working tree is
never touched), runs a fast subset of the tests against the copy, and records whether they
failed (killed) or passed (survived). A search text that is not found exactly once is an
error, so a mutant cannot rot silently when the code changes.

    .venv/bin/python tools/mutation.py            # all mutants; exit 1 if any survives
    .venv/bin/python tools/mutation.py --list     # the mutants

The kill table goes to results/mutation.md (mutant, file, killed, the first failing test,
seconds).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the tests that must kill every mutant: the modern blocks' rules (first: 3 s, they kill their
#: mutants before the slower files run), the rules against the dense-matrix references, the
#: ledger, the graph walk's conservation properties, target selection (several targets, masks)
#: and the trust checks (about 1 minute unmutated on 2 cores)
TESTS = ["tests/test_attention.py", "tests/test_modern_blocks.py", "tests/test_transformers.py", "tests/test_rules.py",
         "tests/test_ledger.py",
         "tests/test_graph.py", "tests/test_targets.py", "tests/test_trust.py"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str      # relative to the repository root
    search: str
    replace: str


MUTANTS = [
    Mutant("bias share dropped from the ledger", "xaibench/lrp/rules.py",
           "            absorbed.bias = op.bias_dot(s, op.bias)",
           "            absorbed.bias = 0.0"),
    Mutant("epsilon stabilizer scaled by 1.5 (booked consistently)", "xaibench/lrp/stabilizer.py",
           "step = denominator.new_tensor(epsilon)", "step = denominator.new_tensor(epsilon * 1.5)"),
    Mutant("stabilizer without its sign", "xaibench/lrp/stabilizer.py",
           "shift = torch.copysign(step, denominator)", "shift = step.expand_as(denominator)"),
    Mutant("alpha-beta's positive stream takes the full bias", "xaibench/lrp/rules.py",
           "            Stream(_positive, _positive, _positive),",
           "            Stream(_positive, _positive, _identity),"),
    Mutant("residual sum split equally", "xaibench/lrp/steps.py",
           "            share = per_target((sign * operand).expand_as(output), s)",
           "            share = relevance / len(self.operands)"),
    Mutant("max pooling sends relevance to the wrong element", "xaibench/lrp/steps.py",
           "flat_indices = indices.reshape(x.shape[0], channels, -1).repeat(n // x.shape[0], 1, 1)",
           "flat_indices = indices.reshape(x.shape[0], channels, -1).flip(-1).repeat(n // x.shape[0], 1, 1)"),
    Mutant("z^B low and high swapped", "xaibench/lrp/rules.py",
           'low, high = context["low"], context["high"]', 'high, low = context["low"], context["high"]'),
    Mutant("Norm stabilizer ignores its option", "xaibench/lrp/composites.py",
           'built.norm_stabilizer = merged["stabilizer"]', "built.norm_stabilizer = R.DEFAULT_STABILIZER"),
    Mutant("sign(0) = -1 in the stabilizer", "xaibench/lrp/stabilizer.py",
           "shift = torch.copysign(step, denominator)", "shift = torch.where(denominator > 0, step, -step)"),
    Mutant("SelectStep passes half", "xaibench/lrp/steps.py",
           "        relevance_in = self.adjoint(values, relevance)\n        # Booked",
           "        relevance_in = self.adjoint(values, relevance) * 0.5\n        # Booked"),
    Mutant("constants not booked", "xaibench/lrp/graph.py",
           "                    absorbed = absorbed.add(Absorbed(constant=r_total))",
           "                    pass"),
    Mutant("default z^B bounds batch-wide", "xaibench/lrp/engine.py",
           "            flat = x.reshape(x.shape[0], -1)\n            v = reduce(flat)",
           "            flat = x.reshape(1, -1).expand(x.shape[0], -1)\n            v = reduce(flat)"),
    # the engine paths that are not modules
    Mutant("F.interpolate nearest takes the Norm rule, not the copy rule", "xaibench/lrp/graph.py",
           '        _set_resampling_rule(step, bound["mode"], "traced" if dynamic else bound["size"], '
           'bound["scale_factor"])',
           "        step.monotone = True"),
    Mutant("permute undone with the permutation, not its inverse", "xaibench/lrp/steps.py",
           "            inverse[dim] = position", "            inverse[position] = dim"),
    # the modern blocks (docs/rules.md)
    Mutant("normalization transpose without the mean subtraction", "xaibench/lrp/operators.py",
           "        return diagonal + self._others_sum((s.reshape(rows) * q).reshape(s.shape), self.normalized_dims)",
           "        return diagonal"),
    Mutant("LayerNorm statistics without eps", "xaibench/lrp/operators.py",
           'scale = torch.rsqrt((x - mean).pow(2).mean(dims, keepdim=True) + arguments.get("eps", 1e-5))',
           "scale = torch.rsqrt((x - mean).pow(2).mean(dims, keepdim=True))"),
    Mutant("uniform product rule gives 0.6 to each factor", "xaibench/lrp/steps.py",
           "            half = relevance * 0.5", "            half = relevance * 0.6"),
    Mutant("gate held constant gets the relevance", "xaibench/lrp/steps.py",
           "gated = next(slot for slot in self.slots if slot != self.gate_slot)",
           "gated = next(slot for slot in self.slots if slot == self.gate_slot)"),
    Mutant("in-place activations stay in place", "xaibench/lrp/graph.py",
           "        clone.inplace = False", "        clone.inplace = True"),
    Mutant("broadcast factor's relevance not summed back", "xaibench/lrp/steps.py",
           "    return relevance.sum_to_size(shape)", "    return relevance.mean(-1, keepdim=True).sum_to_size(shape)"),
    Mutant("torch.cat halves the relevance of a tensor part", "xaibench/lrp/steps.py",
           "                relevance_in[part] = piece if relevance_in[part] is None",
           "                relevance_in[part] = 0.5 * piece if relevance_in[part] is None"),
    Mutant("matrix product gives each factor all of its terms (no uniform halving)", "xaibench/lrp/steps.py",
           "        share = 1.0 if held else 0.5", "        share = 1.0"),
    Mutant("AttnLRP softmax rule without its normalization term", "xaibench/lrp/steps.py",
           "        relevance_in = (x * (r - output * r_sum)).view(relevance.shape)",
           "        relevance_in = (x * r).view(relevance.shape)"),
    Mutant("masked attention entries keep their relevance", "xaibench/lrp/steps.py",
           "        kept = r.masked_fill(mask, 0)", "        kept = r"),
    Mutant("a roll's relevance is not rolled back (Swin's shifted windows)", "xaibench/lrp/graph.py",
           "        return SelectStep(node.name, path, kind, inputs, function)\n\n    def _linear_function",
           "        return PassStep(node.name, path, kind, inputs, lambda values: values[0])\n\n"
           "    def _linear_function"),
    Mutant("F.scaled_dot_product_attention written out without its causal mask", "xaibench/lrp/decompose.py",
           "    scores = _masked_sdpa(scores, attn_mask, is_causal)",
           "    scores = _masked_sdpa(scores, attn_mask, False)"),
    Mutant("nn.MultiheadAttention written out without its key padding mask", "xaibench/lrp/decompose.py",
           "    scores = _masked(scores, attn_mask, key_padding_mask, False, module_layout=True)",
           "    scores = _masked(scores, attn_mask, None, False, module_layout=True)"),
]


def _copy_tree(destination: Path):
    for folder in ("xaibench", "tests"):
        shutil.copytree(ROOT / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", destination / "pyproject.toml")


def _check_applies(mutant: Mutant, root: Path) -> str:
    """The text of the mutant's file under root; stops the check unless the search text occurs
    exactly once (a mutant whose code moved on must be updated, not skipped)."""
    text = (root / mutant.path).read_text()
    count = text.count(mutant.search)
    if count != 1:
        raise SystemExit(f"mutant '{mutant.name}': its search text occurs {count} times in {mutant.path} "
                         "(expected once); update the mutant to the code")
    return text


def _apply(mutant: Mutant, destination: Path):
    text = _check_applies(mutant, destination)
    (destination / mutant.path).write_text(text.replace(mutant.search, mutant.replace))


def _run_tests(copy: Path) -> tuple[bool, str, float]:
    """(tests failed, the first failing test, seconds) for the copy's package."""
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1", "HYPOTHESIS_PROFILE": "ci"}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header",
                             *TESTS], cwd=copy, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    first = next((line.split(" ")[1] for line in result.stdout.splitlines()
                  if line.startswith(("FAILED ", "ERROR "))), "")
    if result.returncode not in (0, 1):
        raise SystemExit(f"pytest could not run (exit {result.returncode}):\n{result.stdout[-3000:]}{result.stderr}")
    return result.returncode == 1, first, seconds


def _imported_package(copy: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run([sys.executable, "-c", "import xaibench; print(xaibench.__file__)"], cwd=copy, env=env,
                          capture_output=True, text=True, check=True).stdout.strip()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--out", default=str(ROOT / "results" / "mutation.md"))
    args = parser.parse_args(argv)
    if args.list:
        for mutant in MUTANTS:
            print(f"{mutant.name}  ({mutant.path})")
        return 0
    for mutant in MUTANTS:  # all of them before the first run, so a stale one fails in seconds
        _check_applies(mutant, ROOT)
    rows = []
    with tempfile.TemporaryDirectory(prefix="xaibench-mutation-") as scratch:
        baseline = Path(scratch) / "unmutated"
        _copy_tree(baseline)
        package = _imported_package(baseline)
        if not package.startswith(str(baseline)):  # the copy, not the editable install, must be tested
            raise SystemExit(f"the tests would import {package}, not the copy in {baseline}")
        print(f"the tests import {package}")
        failed, first, seconds = _run_tests(baseline)
        if failed:
            raise SystemExit(f"the unmutated suite fails ({first}): fix it before measuring mutants")
        print(f"unmutated: passes in {seconds:.0f} s")
        for index, mutant in enumerate(MUTANTS):
            copy = Path(scratch) / f"mutant{index}"
            _copy_tree(copy)
            _apply(mutant, copy)
            killed, first, seconds = _run_tests(copy)
            rows.append((mutant, killed, first, seconds))
            print(f"{'killed  ' if killed else 'SURVIVED'} {seconds:5.0f} s  {mutant.name}  {first}")
            shutil.rmtree(copy)
    lines = ["# Mutation check of xaibench/lrp", "",
             f"Tests: {', '.join(TESTS)} (pytest -x). Written by tools/mutation.py.", "",
             "| mutant | file | killed | first failing test | seconds |", "|---|---|---|---|---|"]
    for mutant, killed, first, seconds in rows:
        verdict = "yes" if killed else "NO"
        lines.append(f"| {mutant.name} | {mutant.path} | {verdict} | {first or '-'} | {seconds:.0f} |")
    survivors = [m.name for m, killed, _, _ in rows if not killed]
    lines += ["", f"{len(rows) - len(survivors)} of {len(rows)} mutants killed."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"{len(rows) - len(survivors)} of {len(rows)} killed; table in {out}")
    if survivors:
        print("survived: " + "; ".join(survivors))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
