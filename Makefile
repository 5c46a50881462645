# Two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
TORCH   := torch==2.13.0
STAMP   := $(VENV)/.installed

.PHONY: test lint demo clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first and pinned: an unpinned resolution pulls the CUDA build (gigabytes).
# TORCH_INDEX=https://download.pytorch.org/whl/cpu: the CPU-only build from PyTorch's own index.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	IRFORMERS_DATA=$${IRFORMERS_DATA:-$(abspath ../shared/datasets)} $(BIN)/python -m pytest -q

# restores the bundled sample (a Kodak crop) with the shipped models; images in ./demo
demo: $(STAMP)
	$(BIN)/irformers demo --out demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
