# Two entry points on a fresh machine: `make demo` (a real benchmark suite under
# `pytest --llem`, CPU only) and `make test` (the project's tests, the docs site built
# strictly among them). Both build .venv first. `make docs` builds the site alone, into site/.
PYTHON ?= python3
# torch is pinned to 2.13.0; which build of it pip installs is the package index's choice.
# PyPI's Linux x86_64 wheel is the CUDA build (a 502 MiB wheel that pulls in the NVIDIA
# libraries; it runs on the CPU too). TORCH_INDEX adds an index to look in: PyTorch's CPU
# index gives the CPU-only build, whose local version (2.13.0+cpu) pip prefers:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Empty (the default) uses pip's own configuration. TORCH picks another version or build.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url '$(TORCH_INDEX)') '$(TORCH)'
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	$(BIN)/python -c "import torch; print('installed torch', torch.__version__, '(CUDA', (torch.version.cuda or 'none') + ')')"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pytest --llem examples/tiny_cpu

# The tests run in TEST_WORKERS processes (pytest-xdist, from the dev extra), more than a
# small machine's cores: most tests wait on child processes. --dist loadgroup keeps the
# groups tests/conftest.py gives (a file's module-scoped fixture, the Slurm cluster) on one
# worker each; docs/development.md says how a test that must run alone is marked.
# Python's bytecode caches stay on (a machine's environment may turn them off with
# PYTHONDONTWRITEBYTECODE): without them every process the tests start
# compiles pytest-llem's modules from source, and pytest rewrites them again.
TEST_WORKERS ?= 4
test: lint docs
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest tests -n $(TEST_WORKERS) --dist loadgroup

# Strict: a broken link or anchor, a page left out of the navigation or a missing snippet fails.
# NO_MKDOCS_2_WARNING: Material's notice about MkDocs 2 otherwise opens every build's output.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks examples docs/hooks
	$(BIN)/ruff format --check src tests benchmarks examples docs/hooks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) site
