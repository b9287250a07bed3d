#!/bin/sh
# The whole test suite: lint, type check, every test on the newest libraries,
# then the tests marked `feed` again on the OpenWrt feed versions.
set -eu
cd "$(dirname "$0")/.."
.venv/bin/ruff check daemon lab tests bench
.venv/bin/ruff format --check daemon lab tests bench
scripts/typecheck.sh
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
.venv-feed/bin/python -m pytest -q -p no:cacheprovider -m feed "$@"
