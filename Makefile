# gft-companion: `make figures` regenerates every figure and number, `make test` runs the tests.
# Both create the virtual environment .venv on first use (pip only; nothing outside the repo).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
PROFILE     ?= quick
DEVICE      ?= auto
BUILD       ?= build
TEST_WORKERS ?= 2
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed
# pip byte-compiles at install (no --no-compile): where PYTHONDONTWRITEBYTECODE=1 is set, as in many
# container images, Python never writes the .pyc files itself, and each process would compile torch anew.
PIP_FLAGS   ?= --quiet

NOTEBOOKS   := $(sort $(wildcard notebooks/*.ipynb))
# make figures runs FIGURE_JOBS notebooks at once (one kernel, one thread each), the longest first;
# e3 comes after e1, whose cached runs it reuses. Results do not depend on the number of jobs.
FIGURE_JOBS ?= 2
LONGEST     := notebooks/e2_image_shift.ipynb notebooks/e1_domain_shift_2d.ipynb
FIGURE_ORDER := $(filter $(LONGEST),$(NOTEBOOKS)) $(filter-out $(LONGEST),$(NOTEBOOKS))
STEMS       := $(notdir $(basename $(NOTEBOOKS)))
RESULTS     := $(patsubst %,results/%.json,$(STEMS))
LIB_SOURCES := $(shell find gftlib -name '*.py' 2>/dev/null)
# Percent-format twins of the notebooks (git-ignored); the folder is fixed by jupytext.toml's pairing.
NBSRC       := build/nbsrc
# `make site`: executed notebooks (left by `make figures`), the figures, and the API reference.
SITE        ?= $(BUILD)/site
SITE_NOTEBOOKS ?= $(BUILD)/notebooks
SITE_FIGURES ?= figures
# Every gftlib module by name: pdoc follows a package's __all__, which lists the front door's names only.
API_MODULES := $(sort $(subst /,.,$(patsubst %/__init__,%,$(basename $(LIB_SOURCES)))))

# One intra-op thread: the committed figures were made so (small models run faster single-threaded on
# 2 cores, and results are bitwise reproducible only at a fixed thread count). Override on big machines.
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: help setup figures test test-fast stress smoke bench lab nb2py py2nb sync docs site clean distclean

help: ## List the targets
	@echo "gft-companion targets (PROFILE=$(PROFILE), DEVICE=$(DEVICE), TORCH_SPEC=$(TORCH_SPEC)):"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_FLAGS) --upgrade pip
	$(PY) -m pip install $(PIP_FLAGS) -r requirements.lock "$(TORCH_SPEC)"
	$(PY) -m pip install $(PIP_FLAGS) --no-deps torchcfm==1.0.7 -e .
	@touch $@

setup: $(STAMP) ## Create .venv and install the pinned dependencies and gftlib (editable)

figures: $(STAMP) ## Run every notebook (papermill, PROFILE=quick on the CPU) and write figures/, results/
	$(PY) -m gftlib.experiments.run_notebooks --profile $(PROFILE) --device $(DEVICE) --build $(BUILD) \
	    --jobs $(FIGURE_JOBS) $(FIGURE_ORDER)
	$(PY) -m gftlib.experiments.summary --results results --out results/summary.md --readme README.md

results/%.json: notebooks/%.ipynb $(LIB_SOURCES) | $(STAMP)
	$(PY) -m gftlib.experiments.run_notebooks --profile $(PROFILE) --device $(DEVICE) --build $(BUILD) $<

test: $(STAMP) ## Run the whole test suite (unit tests + smoke runs of every notebook), TEST_WORKERS processes
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

test-fast: $(STAMP) ## Unit tests only (skips the notebook smoke runs and subprocess tests)
	$(PY) -m pytest -q -m "not slow"

STRESS_RUNS ?= 30
STRESS_LOADED_RUNS ?= 10
stress: $(STAMP) ## Not in CI: run each subprocess/signal/thread test STRESS_RUNS times, then STRESS_LOADED_RUNS times under full CPU load
	$(PY) scripts/stress.py --runs $(STRESS_RUNS) --loaded-runs $(STRESS_LOADED_RUNS) --out $(BUILD)/stress.json \
	    --log-dir $(BUILD)/stress-logs

smoke: $(STAMP) ## Run every notebook on the tiny smoke profile into $(BUILD)/smoke
	$(PY) -m gftlib.experiments.run_notebooks --profile smoke --device cpu --build $(BUILD)/smoke \
	    --figures $(BUILD)/smoke/figures --results $(BUILD)/smoke/results $(NOTEBOOKS)

bench: $(STAMP) ## Benchmarks against torchcfm; writes benchmarks/results-<machine>.json and .md
	$(PY) -m benchmarks.run --device $(DEVICE)

# JupyterLab refuses to start as root (containers) unless told --allow-root; add it only there.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

LAB_STAMP := $(VENV)/.lab-installed
$(LAB_STAMP): $(STAMP) requirements-lab.lock
	$(PY) -m pip install $(PIP_FLAGS) -r requirements-lab.lock
	@touch $@

lab: $(LAB_STAMP) ## Install JupyterLab on first use and open it at the repo root (saving a notebook also writes its build/nbsrc/ twin)
	$(VENV)/bin/jupyter lab $(LAB_ROOT_FLAG) --ServerApp.root_dir=$(CURDIR) --LabApp.default_url=/lab/tree/notebooks

nb2py: $(STAMP) ## Write every notebook as a percent script build/nbsrc/<stem>.py (jupytext; overwrites)
	@mkdir -p $(NBSRC); for nb in $(NOTEBOOKS); do \
	    $(VENV)/bin/jupytext --quiet --to py:percent --output $(NBSRC)/$$(basename $$nb .ipynb).py $$nb || exit 1; \
	done
	@echo "wrote $(NBSRC)/*.py: edit them, then 'make py2nb' (or 'make sync')"

py2nb: $(STAMP) ## Write every build/nbsrc/<stem>.py back to notebooks/<stem>.ipynb (new ones too; no outputs)
	@for py in $(wildcard $(NBSRC)/*.py); do \
	    nb=notebooks/$$(basename $$py .py).ipynb; \
	    if [ -f $$nb ]; then $(VENV)/bin/jupytext --to ipynb --update --output $$nb $$py || exit 1; \
	    else $(VENV)/bin/jupytext --to ipynb --set-kernel python3 --output $$nb $$py || exit 1; fi; \
	done

sync: $(STAMP) ## jupytext --sync every notebook with its build/nbsrc/ script (the newer side wins)
	$(VENV)/bin/jupytext --sync $(NOTEBOOKS) $(wildcard $(NBSRC)/*.py)

docs: $(STAMP) ## API reference from the docstrings (pdoc) into $(SITE)/api
	rm -rf $(SITE)/api
	@# pdoc warns once per module that both its package walk and the explicit list name (harmless)
	set -o pipefail; $(VENV)/bin/pdoc --docformat restructuredtext --output-directory $(SITE)/api $(API_MODULES) 2>&1 \
	    | { grep -v 'has already been added' || true; }

site: docs ## Static site: executed notebooks in $(SITE_NOTEBOOKS) as HTML + figures + API reference, links checked
	$(PY) scripts/build_site.py --notebooks $(SITE_NOTEBOOKS) --figures $(SITE_FIGURES) --site $(SITE)

clean: ## Remove generated outputs (build dir, caches); keeps sources, committed figures/results
	rm -rf $(BUILD) .pytest_cache
	find . -name '__pycache__' -type d -prune -exec rm -rf {} +

distclean: clean ## clean, and also remove .venv
	rm -rf $(VENV)
