# The two commands the README names: `make book` and `make test`.
# Both create .venv when it is missing and install what they need into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Exact versions for our own machines only (they install from local disk there);
# pyproject.toml keeps ranges that also admit Colab's torch.
PINS := torch==2.14.1 torchvision==0.29.1
# Google Colab's versions, for `make test-colab`. Colab runs Python 3.13; we test with the
# machine's Python, which is as close as our machines get.
COLAB_VENV := .venv-colab
COLAB_PINS := torch==2.11.0 torchvision==0.26.0 ipywidgets==7.7.1
CHAPTER ?=
BUDGET ?= cpu

HOMEWORK ?= homework
SUBMISSIONS ?=

.PHONY: book test test-colab unit notebooks bookcheck outputs bench speedrun homework grade clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-book: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PINS) -e ".[book]"
	touch $@

# Our own test environment also gets the teachers' [homework] extra (tests/test_homework.py);
# the Colab one (test-colab) gets [test] only, as on Colab.
TEST_EXTRAS ?= test,homework

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(PINS) -e ".[$(TEST_EXTRAS)]"
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

## test-colab: the unit tests and every chapter at the smoke budget on Colab's versions,
## in a second virtual environment (.venv-colab) installed from pyproject.toml's [test] extra
# The same `unit` and `notebooks` recipes, pointed at the other environment: its
# .installed-test is then built by the rule above with Colab's pins instead of ours.
test-colab:
	$(MAKE) unit notebooks VENV=$(COLAB_VENV) PINS="$(COLAB_PINS)" TEST_EXTRAS=test

bookcheck: $(VENV)/.installed-test
	$(BIN)/jupyter-book build -W --keep-going .
	$(BIN)/python tools/check_math.py --html _build/html

## outputs: re-execute chapters at $(BUDGET) (default cpu) and store their outputs; CHAPTER=01 for one
outputs: $(VENV)/.installed-test
	$(BIN)/python tools/notebooks.py run --budget $(BUDGET) $(if $(CHAPTER),--chapter $(CHAPTER))

## bench: the benchmarks (ratios measured side by side in one run)
bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py

## speedrun: CIFAR-10 as fast as this machine can learn it: time to 85% and 90% (about 25 minutes on 2 CPU cores)
speedrun: $(VENV)/.installed-test
	$(BIN)/python benchmarks/speedrun.py $(SPEEDRUN_ARGS)

## homework: student notebooks (no solutions), otter tests and answer keys into $(HOMEWORK)/NN; CHAPTER=05 for one
homework: $(VENV)/.installed-test
	$(BIN)/python tools/homework.py build --out $(HOMEWORK) $(if $(CHAPTER),--chapter $(CHAPTER)) $(HOMEWORK_ARGS)

## grade: grade submitted notebooks: make grade CHAPTER=05 SUBMISSIONS=path/to/folder (writes gradebook-05.csv)
grade: $(VENV)/.installed-test
	@test -n "$(CHAPTER)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade CHAPTER=05 SUBMISSIONS=folder"; exit 2; }
	$(BIN)/python tools/homework.py grade --homework $(HOMEWORK)/$(CHAPTER) --out gradebook-$(CHAPTER).csv $(SUBMISSIONS)

clean:
	rm -rf _build
