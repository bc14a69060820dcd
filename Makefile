# Two commands do everything on a fresh machine:  make pipeline   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Parameter set for `make pipeline`: smoke (= the notebooks' defaults), cpu or paper
# (params/<set>/<notebook>.yaml; a notebook without a file there runs with its defaults)
PARAMS ?= smoke
NOTEBOOKS := 01_pretrain 02_teacher 03_pkdt 04_ablations 06_attack_explorer
PYTEST_ARGS ?=

.PHONY: setup pipeline test test-browser bench figures reproduce-cpu reproduce-paper clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[notebooks,dev]'
	touch $@

pipeline: setup
	@mkdir -p runs/$(PARAMS)
	@set -e; for nb in $(NOTEBOOKS); do \
	  if [ -f notebooks/$$nb.ipynb ]; then \
	    args=""; [ -f params/$(PARAMS)/$$nb.yaml ] && args="-f params/$(PARAMS)/$$nb.yaml"; \
	    echo "== $$nb ($(PARAMS))"; \
	    $(VENV)/bin/papermill notebooks/$$nb.ipynb runs/$(PARAMS)/$$nb.ipynb $$args; \
	  fi; \
	done

# (tests/conftest.py pins torch's CPU kernels to AVX2, where the thresholds were measured)
test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Real-browser test of the attack explorer: JupyterLab + Debian's chromium driven by Playwright
# (installed here if missing; Playwright's own browser download cannot work offline).
# Screenshots and logs: test-output/browser/
test-browser: setup
	@command -v chromium >/dev/null || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
	OMP_NUM_THREADS=1 NIC_REQUIRE_BROWSER=1 $(PY) -m pytest -m browser -p no:cacheprovider -rs tests/test_browser.py

bench: setup
	$(PY) -m nic_core.bench attacks
	$(PY) -m nic_core.bench training

# Every README figure and table from the committed results (notebooks/05_figures.ipynb, headless;
# a minute): figures/*.png|pdf and results/cpu/tables/*, pasted into the include blocks of README.md and docs/.
# Missing results are named with their command.
figures: setup
	@mkdir -p runs
	$(VENV)/bin/papermill notebooks/05_figures.ipynb runs/05_figures.ipynb --cwd . -k python3
	$(PY) -m nic_core.figures --readme-only

# The whole CPU reproduction (issue 9), resumable step by step: scripts/reproduce_cpu.sh
# (about 70 core-hours on the 2-core machine; run `scripts/reproduce_cpu.sh STEP` to do a part)
reproduce-cpu: setup
	scripts/reproduce_cpu.sh

# The paper's configuration on a GPU (params/paper/; see docs/reproduction.md for its cost)
reproduce-paper: setup
	$(MAKE) pipeline PARAMS=paper

clean:
	rm -rf runs test-output .pytest_cache
