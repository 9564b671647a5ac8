# Two commands matter: `make serve` and `make test`. Both install into .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.serve-installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: help install serve test lint format bench train cross-site localise settings-doc clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 16

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,test]"
	touch $(STAMP) $(SERVE_STAMP)

# The serving set alone (no TensorFlow), unless the full set is already there.
$(SERVE_STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(SERVE_STAMP)

install: $(STAMP)  ## create .venv and install the service, training and test dependencies

serve: $(SERVE_STAMP)  ## serve models/wbc-classifier on :8000 (HOST=, PORT=); lean set, no TensorFlow
	WBC_HOST=$(HOST) WBC_PORT=$(PORT) $(BIN)/python -m app

lint: $(STAMP)  ## ruff check and ruff format --check (what pre-commit runs)
	$(BIN)/ruff check app model_training wbc_core tests bench
	$(BIN)/ruff format --check app model_training wbc_core tests bench

format: $(STAMP)  ## ruff format and ruff check --fix
	$(BIN)/ruff format app model_training wbc_core tests bench
	$(BIN)/ruff check --fix app model_training wbc_core tests bench

test: lint  ## lint, then the whole pytest suite
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -q

# The shipped model in two steps: the base recipe (one network on both sites, 30 epochs of
# 400 site-balanced batches; version 5, kept out of models/), then 8 epochs more from its
# weights with half the crops' hues turned, its guards fitted on crops the cell fills too
# (version 8, what ships: version 6's network with those guards). Reports per site.
DATA := ../shared/data
SITES := --data kaggle=$(DATA)/kaggle-blood-cells --data pbc=$(DATA)/pbc
RECIPE := --epochs 30 --steps-per-epoch 400 --randconv 0.5
BASE := .cache/base-model
train: $(STAMP)  ## retrain the shipped model on both sites (about 40-90 min on 2 cores, by CPU)
	$(BIN)/python -m model_training train-sites $(SITES) $(RECIPE) --version 5 \
		--out $(BASE)/wbc-classifier --report $(BASE)/report
	$(BIN)/python -m model_training train-sites $(SITES) --init $(BASE)/wbc-classifier/5 \
		--learning-rate 5e-4 --epochs 8 --steps-per-epoch 400 --randconv 0.5 --hue-turn 0.5 \
		--version 8 --out models/wbc-classifier --report reports/model

cross-site: $(STAMP)  ## leave one lab out, both directions (reports/cross-site)
	$(BIN)/python -m model_training cross-site $(SITES) --epochs 20 --steps-per-epoch 400 --randconv 0.5 \
		--out reports/cross-site

localise: $(STAMP)  ## measure the cell localiser on BCCD (reports/localisation)
	$(BIN)/python -m model_training.localise_eval --bccd ../shared/data/bccd \
		--out reports/localisation

bench: $(STAMP)  ## latency, throughput and memory of a real server (reports/performance.md)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench.run

settings-doc: $(STAMP)  ## regenerate the settings table of docs/operations.md
	$(BIN)/python -m app.settings_doc --write docs/operations.md

clean:  ## remove .venv and caches
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
