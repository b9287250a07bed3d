#!/bin/bash
# mypy over the router package and the development lab, each under its import name.
set -euo pipefail
cd "$(dirname "$0")/.."
MYPYPATH="daemon:lab" exec .venv/bin/mypy --config-file pyproject.toml -p energyhubd -p energyhub_lab
