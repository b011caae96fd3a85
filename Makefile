# Two commands a fresh machine needs: `make reproduce` and `make test`.
# Each creates .venv and installs the project from its own files first.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
OUT     ?= results

.PHONY: reproduce reproduce-quick test lint test-slow bench explore docs install clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[llm,dev,explore,lmeval,docs]'
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/ovt reproduce --out $(OUT)

reproduce-quick: $(STAMP)
	$(BIN)/ovt reproduce --quick --out $(OUT)

test: $(STAMP) lint
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=20 -m "not slow" tests README.md --doctest-glob=README.md
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q --doctest-modules theory analysis
	HF_HUB_OFFLINE=1 JAX_ENABLE_X64=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow" tests/theory
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict -q

# Style and layers: ruff (lint + format) and the import-linter contracts in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow tests

bench: $(STAMP)
	$(BIN)/python benchmarks/theory_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/llm_perturb.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/jax_perturb.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/pretrain_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/finetune_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/series_cost.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/pythia_cpu.py
	$(BIN)/python benchmarks/explore_speed.py
	$(BIN)/python benchmarks/fit_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/quantize_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/mitigation_cost.py

# The explorer (notebooks/explore.py) in a browser tab.
explore: $(STAMP)
	$(BIN)/marimo run notebooks/explore.py

# The documentation site (mkdocs.yml) in $(OUT)/site; open $(OUT)/site/index.html.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(OUT)/site

clean:
	rm -rf $(VENV) results
