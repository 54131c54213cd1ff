# The two commands the README names: `make book` and `make test`.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Exact versions for our own machines only (they install from local disk there);
# pyproject.toml keeps ranges that also admit Colab's torch.
PINS := torch==2.14.1 torchvision==0.29.1
CHAPTER ?=
BUDGET ?= cpu

.PHONY: book test unit notebooks bookcheck outputs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-book: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PINS) -e ".[book]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PINS) -e ".[test]"
	touch $@ $(VENV)/.installed-book

## book: build the HTML book into _build/html from the notebooks' stored outputs
book: $(VENV)/.installed-book
	$(BIN)/jupyter-book build .

## test: unit tests, every chapter under nbval at the smoke budget, and a strict book build
test: unit notebooks bookcheck

unit: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests -q

notebooks: $(VENV)/.installed-test
	CNNLEARN_BUDGET=smoke $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=300 -p no:cacheprovider chapters

bookcheck: $(VENV)/.installed-test
	$(BIN)/jupyter-book build -W --keep-going .

## outputs: re-execute chapters at $(BUDGET) (default cpu) and store their outputs; CHAPTER=01 for one
outputs: $(VENV)/.installed-test
	$(BIN)/python tools/notebooks.py run --budget $(BUDGET) $(if $(CHAPTER),--chapter $(CHAPTER))

## bench: the benchmarks (ratios measured side by side in one run)
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf _build
