#!/bin/bash
# mypy over the package under its import name. The source directory is `daemon/` but the
# package is `energyhubd`; checking the directory would make every cross-module import an
# unresolved (Any) module and hide real type errors, so check through a name-mapping link.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
mkdir -p build/mypy-path
ln -sfn "$root/daemon" build/mypy-path/energyhubd
MYPYPATH="$root/build/mypy-path" exec .venv/bin/mypy --config-file pyproject.toml -p energyhubd
