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

bench: setup
	$(PY) bench/run.py
	$(PY) bench/portal.py
	$(PY) bench/inventory.py
	$(PY) bench/config.py
	$(PY) bench/footprint.py

lab-up: setup
	$(VENV)/bin/energyhubd lab up

lab-down: setup
	$(VENV)/bin/energyhubd lab down

clean:
	-$(VENV)/bin/energyhubd lab down
	rm -rf $(VENV) .venv-feed .pytest_cache .mypy_cache .ruff_cache
