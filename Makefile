# The two commands a new engineer needs are `make demo` and `make test`;
# both run the idempotent set-up first.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint typecheck bench lab-up lab-down clean

setup:
	sh scripts/setup.sh

# PREFIX=name picks the lab's namespace prefix; by default the first free of eh, eh2, ...
demo: setup
	$(VENV)/bin/energyhubd lab check --prefix $(or $(PREFIX),auto)

test: setup
	sh scripts/test.sh

lint: setup
	$(VENV)/bin/ruff check daemon lab tests bench
	$(VENV)/bin/ruff format --check daemon lab tests bench

typecheck: setup
	scripts/typecheck.sh

# Every benchmark on the newest libraries and on the OpenWrt feed versions; each prints its
# figures beside a floor measured in the same run. The installed size (bench/footprint.py)
# does not depend on the library versions: once.
BENCH_VENVS := .venv .venv-feed
BENCHES := run portal inventory leases allowlist config fdb

bench: setup
	@for venv in $(BENCH_VENVS); do \
	  for b in $(BENCHES); do \
	    echo "== $$venv: bench/$$b.py"; \
	    $$venv/bin/python bench/$$b.py || exit 1; \
	  done; \
	done
	$(PY) bench/footprint.py
	$(PY) bench/fleet.py
	$(PY) bench/fleet_cluster.py

lab-up: setup
	$(VENV)/bin/energyhubd lab up

lab-down: setup
	$(VENV)/bin/energyhubd lab down

clean:
	-$(VENV)/bin/energyhubd lab down
	rm -rf $(VENV) .venv-feed .pytest_cache .mypy_cache .ruff_cache
