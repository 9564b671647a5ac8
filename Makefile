# Two commands matter: `make serve` and `make test`. Both install into .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install serve test lint bench train localise container-smoke clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,test]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	WBC_HOST=$(HOST) WBC_PORT=$(PORT) $(BIN)/python -m app

lint: $(STAMP)
	$(BIN)/ruff check app model_training tests bench

test: lint
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -q

# Retrains the shipped model by its own recipe, read from its metadata.json (`python -m
# model_training recipe`): cross-validated over TRAIN's source cells (the out-of-fold answers
# calibrate the model; 61.7 min for v7's three networks on 2026-12-01's CPU,
# reports/crossval-ensemble3), then refit on all of TRAIN (the model that ships).
SHIPPED := models/wbc-classifier/1
DATA := ../shared/data/kaggle-blood-cells
train: $(STAMP)
	recipe="$$($(BIN)/python -m model_training recipe --model $(SHIPPED))" && \
	$(BIN)/python -m model_training cv --folds 4 --data $(DATA) $$recipe --out .cache/crossval && \
	$(BIN)/python -m model_training train --protocol official --data $(DATA) $$recipe \
		--out models/wbc-classifier --refit .cache/crossval

localise: $(STAMP)
	$(BIN)/python -m model_training.localise_eval --bccd ../shared/data/bccd \
		--out reports/localisation

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
