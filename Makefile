# Two entry points on a fresh machine: `make demo` (a real benchmark suite under
# `pytest --llem`, CPU only) and `make test` (the project's tests). Both build .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pytest --llem examples/cpu_ngram

test: $(BIN)/.installed
	$(BIN)/pytest tests

clean:
	rm -rf $(VENV)
