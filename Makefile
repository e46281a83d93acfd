# bitmoji-ml: `make train` and `make test` set everything up on a fresh clone.
VENV    ?= .venv
PY      := $(VENV)/bin/python
BITMOJI := $(VENV)/bin/bitmoji
STAMP   := $(VENV)/.install-stamp
# Extra flags for a command, e.g. `make train ARGS="--epochs 30"`.
ARGS    ?=
# The dataset folder, resolved the same way the CLI does (--data-dir > $BITMOJI_DATA > defaults).
DATA     = $(shell $(PY) -c "from bitmoji_ml.paths import resolve_data_dir; print(resolve_data_dir())")

.PHONY: install prepare train cv audit tune export predict test lint format ui clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes. pip (not uv/poetry) sees this machine's
# local wheel cache for the pinned torch/torchvision pair.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ray,spark]'
	touch $(STAMP)

prepare: install
	$(BITMOJI) prepare $(ARGS)

train: install
	$(BITMOJI) prepare
	$(BITMOJI) train $(ARGS)

# Model selection on the prepared lists (run `make prepare` first): cv -> audit -> tune.
cv: install
	$(BITMOJI) cv $(ARGS)

audit: install
	$(BITMOJI) audit $(ARGS)

tune: install
	$(BITMOJI) tune $(ARGS)

export: install
	$(BITMOJI) export-onnx $(ARGS)

predict: install
	$(BITMOJI) predict $(DATA)/testimages --kaggle --output submission.csv $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

ui: install
	$(BITMOJI) ui $(ARGS)

# Removes generated lists, caches and exported files; keeps the MLflow store (mlruns/) and .venv.
clean:
	rm -rf data/lists data/cache models predictions.csv submission.csv .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -prune -exec rm -rf {} +
