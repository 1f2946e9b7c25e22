# Two commands do all set-up on a fresh machine:
#   make demo   install, then run the whole pipeline on the demo data
#   make test   install, then run every test (what CI runs)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install browser ui repro clean

# torch first, by its exact version: it matches the CPU wheel, where an open range pulls a multi-GB CUDA
# build. Then the locked versions of everything else, then this project itself.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# The demo starts from the dataset version committed in data/raw/demo.dvc: the export and the batch it became
# come from data/demo-store, so the run finds the export already ingested and leaves the records as committed.
# ARGS go to `nichetune run`, e.g. make demo ARGS="--set finetune.epochs=1"
DEMO_RECORDS := data/demo/messages.csv.dvc data/raw/demo.dvc

demo: install
	$(BIN)/dvc pull --quiet $(DEMO_RECORDS)
	$(BIN)/nichetune run $(ARGS)

test: install browser
	$(BIN)/pytest

# The UI test (tests/test_up.py) drives Debian's chromium headless; a fresh Debian machine gets it here.
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

ui: install
	$(BIN)/nichetune ui

# dvc repro trains on the stored batches; ingest the demo export first (a second time it is recognised)
repro: install
	$(BIN)/dvc pull --quiet $(DEMO_RECORDS)
	$(BIN)/nichetune ingest data/demo/messages.csv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

clean:
	rm -rf outputs
