# The few verbs a newcomer needs. Every target bootstraps the venv it uses.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint unit integration e2e bench deploy clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## Run the whole pipeline on the embedded local stack
	$(BIN)/python -m s2v_local.demo

lint: $(STAMP)  ## ruff + mypy + cfn-lint
	$(BIN)/ruff check .
	$(BIN)/mypy layers/common/s2v local/s2v_local cli/s2v_cli
	@for handler in functions/*/app.py; do $(BIN)/mypy --no-error-summary $$handler || exit 1; done
	$(BIN)/cfn-lint template.yaml

test: lint  ## lint, then unit + integration + infrastructure + e2e tests
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

e2e: $(STAMP)
	$(BIN)/python -m pytest tests/e2e

bench: $(STAMP)  ## Benchmarks that print ratios measured side by side
	$(BIN)/python -m bench

deploy:  ## Build and deploy with AWS SAM (needs the sam CLI and AWS credentials)
	sam build && sam deploy --guided

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .ruff_cache
