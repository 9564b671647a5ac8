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

# The shipped recipe (model v5): a validated run (reports/official-v5-validated), then the
# same recipe refit on all of TRAIN with its calibration (reports/official). Measured: 15.4
# min, then 16.8 min. 20 epochs cross-validate better (reports/crossval-epochs20) but their
# refit failed a shipped-model test (reports/official-v6-refit), so 14 stay.
RECIPE := --protocol official --data ../shared/data/kaggle-blood-cells \
	--epochs 14 --scale-jitter 0.15 --stain-jitter 2
train: $(STAMP)
	$(BIN)/python -m model_training train $(RECIPE) --out .cache/validated/wbc-classifier \
		--report .cache/validated/report
	$(BIN)/python -m model_training train $(RECIPE) --out models/wbc-classifier \
		--refit .cache/validated/wbc-classifier/1

localise: $(STAMP)
	$(BIN)/python -m model_training.localise_eval --bccd ../shared/data/bccd \
		--out reports/localisation

bench: $(STAMP)
	$(BIN)/pip install --quiet -e ".[bench]"
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
