# Two commands do everything on a fresh machine:  make pipeline   and   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Parameter set for `make pipeline`: smoke (notebook defaults), cpu or paper (params/<set>/*.yaml)
PARAMS ?= smoke
NOTEBOOKS := 01_pretrain 02_teacher 03_pkdt
PYTEST_ARGS ?=

.PHONY: setup pipeline test test-browser bench notebooks clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[notebooks,dev]'
	touch $@

pipeline: setup
	@mkdir -p runs/$(PARAMS)
	@set -e; for nb in $(NOTEBOOKS); do \
	  if [ -f notebooks/$$nb.ipynb ]; then \
	    args=""; [ "$(PARAMS)" != smoke ] && args="-f params/$(PARAMS)/$$nb.yaml"; \
	    echo "== $$nb ($(PARAMS))"; \
	    $(VENV)/bin/papermill notebooks/$$nb.ipynb runs/$(PARAMS)/$$nb.ipynb $$args; \
	  fi; \
	done

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Real-browser test of the attack explorer (needs Debian's chromium; installed here if missing)
test-browser: setup
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(PY) -m pytest -m browser -p no:cacheprovider tests/test_browser.py

bench: setup
	$(PY) -m nic_core.bench attacks
	$(PY) -m nic_core.bench training

# Regenerate the notebooks from notebooks/build_notebooks.py
notebooks: setup
	$(PY) notebooks/build_notebooks.py

clean:
	rm -rf runs test-output .pytest_cache
