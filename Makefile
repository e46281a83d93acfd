# bitmoji-ml: `make train` and `make test` set everything up on a fresh clone.
VENV    ?= .venv
PY      := $(VENV)/bin/python
BITMOJI := $(VENV)/bin/bitmoji
STAMP   := $(VENV)/.install-stamp
# `bitmoji prepare`'s output; its presence means the lists exist (see `train` below).
MANIFEST := data/lists/manifest.json
# Extra flags for a command, e.g. `make train ARGS="--epochs 30"`.
ARGS    ?=
# The dataset folder, resolved the same way the CLI does (--data-dir > $BITMOJI_DATA > defaults).
DATA     = $(shell $(PY) -c "from bitmoji_ml.paths import resolve_data_dir; print(resolve_data_dir())")

.PHONY: install prepare train cv audit tune export predict test test-quick lint format ui clean

install: $(STAMP)

# Re-installs only when pyproject.toml changes. pip (not uv/poetry) sees this machine's
# local wheel cache for the pinned torch/torchvision pair.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,ray,spark]'
	touch $(STAMP)
	@echo "installed: the bitmoji command is $(BITMOJI); put it on PATH with: source $(VENV)/bin/activate"

# Re-prepares on purpose, e.g. `make prepare ARGS="--exclude judged_wrong.csv"`.
prepare: install
	$(BITMOJI) prepare $(ARGS)

# The lists are prepared only when they do not exist yet, so `make train` (cv, tune, export)
# never undoes a `bitmoji prepare --exclude/--seed/--split` run before it. Order-only on the
# install: a re-install does not re-prepare.
$(MANIFEST): | $(STAMP)
	$(BITMOJI) prepare

train: install $(MANIFEST)
	$(BITMOJI) train $(ARGS)

# Model selection on the prepared lists: cv -> audit -> tune.
cv: install $(MANIFEST)
	$(BITMOJI) cv $(ARGS)

audit: install
	$(BITMOJI) audit $(ARGS)

tune: install $(MANIFEST)
	$(BITMOJI) tune $(ARGS)

export: install $(MANIFEST)
	$(BITMOJI) export-onnx $(ARGS)

predict: install
	$(BITMOJI) predict $(DATA)/testimages --kaggle --output submission.csv $(ARGS)

# The whole suite (what CI runs). Tests needing the real dataset find it like the CLI
# (ARGS="--data-dir DIR" > $BITMOJI_DATA > defaults) and are skipped, with the reason, without
# it, except under CI=true, where they fail.
test: install
	$(PY) -m pytest -q $(ARGS)

# Development: everything but the tests marked slow (real training, torchrun, Spark, Ray, servers).
test-quick: install
	$(PY) -m pytest -q -m "not slow" $(ARGS)

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
