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
	@# setuptools prints a banner about editable installs that a newcomer cannot act on.
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## Run the whole pipeline on the embedded local stack
	$(BIN)/python -m s2v_local.demo

lint: lint-code  ## ruff + mypy + cfn-lint + checkov
	$(BIN)/cfn-lint template.yaml

# What `make test` lints first; cfn-lint runs among the tests there (test_cfn_lint_reports_nothing).
.PHONY: lint-code
lint-code: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy layers/common/s2v local/s2v_local cli/s2v_cli
	@# Each handler is module functions.<name>.app, so one run checks them all (they are all app.py).
	$(BIN)/mypy --no-error-summary --explicit-package-bases functions/*/app.py
	@# checkov pins boto3==1.35.49, packaging<24 and networkx<2.7, so it gets a venv of its own.
	@test -f $(VENV)/checkov/installed-3.3.30 || { $(BIN)/python -m venv --clear $(VENV)/checkov && \
	  $(VENV)/checkov/bin/python -m pip install --quiet checkov==3.3.30 && touch $(VENV)/checkov/installed-3.3.30; }
	@# Offline (no policy-metadata download, no update check); fails on any finding the template does not skip.
	BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE $(VENV)/checkov/bin/checkov -f template.yaml \
	  --framework cloudformation --skip-download --quiet --compact

test: lint-code browser  ## lint, then unit + integration + infrastructure + e2e tests
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder tests

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

e2e: $(STAMP) browser
	$(BIN)/python -m pytest tests/e2e

# The dashboard's browser tests drive Debian's Chromium (a downloaded browser build does not work here).
# Installed when missing and the machine allows it; otherwise those tests fail naming this target.
.PHONY: browser
browser:  ## Chromium + chromedriver from Debian for the dashboard's browser tests
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif ! command -v apt-get >/dev/null 2>&1; then echo "make browser: no apt-get here; install chromium and chromedriver yourself" >&2; \
	else SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n" ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver \
	  || echo "make browser: could not install chromium + chromium-driver; run: sudo apt-get install -y chromium chromium-driver" >&2; fi

bench: $(STAMP)  ## Benchmarks that print ratios measured side by side
	$(BIN)/python -m bench

.PHONY: live-check
live-check: $(STAMP)  ## Opt-in, billed (~$0.09): one real 3 s render via the local stack, compared with the emulator
	$(BIN)/python -m s2v_local.live_check

deploy:  ## Build and deploy with AWS SAM (needs the sam CLI and AWS credentials)
	sam build && sam deploy --guided

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .ruff_cache
