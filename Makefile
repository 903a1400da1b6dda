# Two commands a user needs: `make demo` and `make test`. Everything else they run installs itself.
SHELL := /bin/bash
export SAM_CLI_TELEMETRY := 0
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
RUN := $(UV) run --frozen --no-sync

.PHONY: install demo test lint typecheck template-check build bench clean layer-requirements

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --all-extras --quiet
	@touch $@

install: $(VENV)/.synced

demo: install
	$(RUN) experiture-ingest demo

test: install
	$(RUN) pytest

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: install
	$(RUN) mypy --strict -p experiture_ingest
	$(RUN) mypy sandbox cli functions

template-check: install
	$(RUN) sam validate --lint --template template.yaml --region us-east-1
	$(RUN) cfn-lint template.yaml

build: install
	$(RUN) sam build --template template.yaml

bench: install
	$(RUN) python -m bench

clean:
	rm -rf $(VENV) $(TOOLS) .aws-sam .pytest_cache .mypy_cache .ruff_cache

# The layer's pins, exported from uv.lock (tests/unit/test_packaging.py checks they agree).
layer-requirements: $(UV)
	$(UV) export --frozen --no-default-groups --no-hashes --no-emit-project --no-annotate --no-header \
		--format requirements-txt --output-file layers/common/requirements.txt --quiet
