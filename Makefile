# The README's two commands: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# llama.cpp is compiled from source for any x86-64 with AVX2 (GGML_NATIVE=OFF), not for this CPU: a native build on
# a CPU with AMX (Sapphire Rapids and later) puts the model in llama.cpp's AMX buffer, whose decode segfaults in
# llama-cpp-python 0.3.36. pip's own wheel cache ignores CMAKE_ARGS, so the portable wheel is built once into a
# folder named after the version and flags, and installed from there over any build an older .venv holds.
LLAMA_VERSION := 0.3.36
LLAMA_CMAKE := -DGGML_NATIVE=OFF
WHEELS := $(HOME)/.cache/tandem-wheels/llama-cpp-python-$(LLAMA_VERSION)-portable

.PHONY: demo test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || CMAKE_ARGS="$(LLAMA_CMAKE)" \
		$(BIN)/python -m pip wheel --quiet --no-cache-dir --no-deps -w $(WHEELS) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/python -m pip install --quiet --no-deps --force-reinstall $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl
	$(BIN)/python -m pip install --quiet --find-links $(WHEELS) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/tandem demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow and not server"

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m evals.bench_index

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
