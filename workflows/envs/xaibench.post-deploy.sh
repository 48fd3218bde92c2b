#!/usr/bin/env bash
# Runs once inside the new conda environment, from the workflow root (the repository).
# torch/torchvision first in a pip call of their own (as `make setup`), then the pins, then
# the project. Note: snakemake re-creates the environment only when this file or
# xaibench.yaml changes, not when env/requirements-main.txt does.
set -euo pipefail
pip install $(grep -E '^(torch|torchvision)==' env/requirements-main.txt)
pip install -r env/requirements-main.txt
pip install --no-deps --no-build-isolation -e .
