# Two entry points on a fresh machine: `make demo` (a real benchmark suite under
# `pytest --llem`, CPU only) and `make test` (the project's tests). Both build .venv first.
PYTHON ?= python3
# torch is pinned to a CPU build here to keep the install small (a plain `pip install torch`
# pulls GBs of CUDA libraries on Linux); on a GPU machine, set TORCH to the build it needs.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pytest --llem examples/tiny_cpu

test: lint
	$(BIN)/pytest tests

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV)
