# ddb-audit — developer entry points. Needs only Rust (cargo) and Python 3.
#
#   make demo    emulator + sample tables + daemon through realistic changes, then
#                query, show, diff, revert, verify and the web page; KEEP=1 leaves
#                them running to explore (make demo-stop stops them)
#   make test    fmt check, clippy, unit + simulator + end-to-end + browser tests
#   make venv    the emulator (moto's server, pinned) in ./.venv
#   make image   the container image (infra/Dockerfile; docker, else buildah)
#   make build | bench | lint | fmt | clean
#
# Set AWS_ENDPOINT_URL (e.g. LocalStack, see docs/deployment.md) to run the end-to-end
# tests against that endpoint instead of a moto server started per test.

SHELL   := bash
PYTHON  ?= python3
CARGO   ?= cargo
VENV    := .venv
STAMP   := $(VENV)/.requirements.stamp
REQS    := scripts/requirements.txt
# The infra linters (checkov, cfn-lint, hadolint) pin an older boto3 than the
# emulator: their own virtualenv.
IAC_VENV  := .venv-iac
IAC_STAMP := $(IAC_VENV)/.requirements.stamp
IAC_REQS  := scripts/requirements-iac.txt
IMAGE   ?= ddb-audit:latest
CFN     := infra/cloudformation/ddb-audit.yaml
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN     := $(TARGET_DIR)/debug/ddb-audit

# Compile the dependency graph as few times as possible:
# - `build` selects the test targets too, so dev-dependency features (tokio's
#   test-util/process) are unified exactly as under `cargo test` and the two
#   share every compiled dependency;
# - warnings are denied through clippy's own arguments, never RUSTFLAGS (which
#   would fingerprint, and so rebuild, every dependency);
# - clippy checks (metadata only) and `cargo test` builds: two passes in all.
CARGO_BUILD_FLAGS := --locked --bins --tests

.PHONY: all venv venv-iac browser promtool build test lint lint-infra fmt demo demo-stop bench image clean

all: build

venv: $(STAMP)

# Rebuilt when missing or when the pins change.
$(STAMP): $(REQS)
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --no-compile --disable-pip-version-check -r $(REQS)
	@touch $@

venv-iac: $(IAC_STAMP)

$(IAC_STAMP): $(IAC_REQS)
	@test -x $(IAC_VENV)/bin/python || $(PYTHON) -m venv $(IAC_VENV)
	$(IAC_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(IAC_REQS)
	@touch $@

build:
	$(CARGO) build $(CARGO_BUILD_FLAGS)

# The browser tests of `serve` (tests/serve_e2e.rs runs tests/browser/) drive
# Debian's Chromium through Playwright (pinned, installed into .venv by
# `venv`; never `playwright install`, which downloads browsers). Chromium is
# installed here when it is missing and we are root; otherwise this stops
# with the command to run. The tests are never skipped.
CHROMIUM := /usr/bin/chromium
browser: venv
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Chromium for the browser tests (apt-get install -y chromium)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else \
	    echo "error: the browser tests need Chromium at $(CHROMIUM); run:  sudo apt-get install -y chromium" >&2; \
	    exit 1; \
	  fi; \
	fi

# The shipped library and binary are built without the `test-util` feature
# (simulator, fault decorators, memory store): check that they compile so,
# and that `rand` stays out of their dependency graph.
lint: lint-infra
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) check --locked --lib --bins
	@if $(CARGO) tree --locked -e normal,build --prefix none | grep -E '^rand v'; then \
	  echo "error: rand is a production dependency again (cargo tree -e normal -i rand)" >&2; exit 1; fi

# The Prometheus alert rules (infra/prometheus/) are checked and unit-tested
# with promtool, from Debian's `prometheus` package: installed here when it is
# missing and we are root; otherwise this stops with the command to run.
PROMTOOL := /usr/bin/promtool
promtool:
	@if [ ! -x $(PROMTOOL) ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing promtool for the alert rule tests (apt-get install -y prometheus)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
	  else \
	    echo "error: the alert rule tests need promtool at $(PROMTOOL); run:  sudo apt-get install -y prometheus" >&2; \
	    exit 1; \
	  fi; \
	fi

# The Dockerfile (hadolint), the CloudFormation template (cfn-lint, checkov;
# each exception is justified inline in the template), and the IAM JSON files
# in infra/ against the template (they are generated from it).
lint-infra: venv-iac promtool
	$(PROMTOOL) check rules infra/prometheus/ddb-audit.rules.yml
	$(PROMTOOL) test rules infra/prometheus/ddb-audit.rules.test.yml
	$(IAC_VENV)/bin/hadolint infra/Dockerfile
	$(IAC_VENV)/bin/cfn-lint $(CFN)
	$(IAC_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation dockerfile \
		-f $(CFN) -f infra/Dockerfile
	$(IAC_VENV)/bin/python infra/cloudformation/policies.py --check

# docker where an engine runs, else buildah (rootless, no daemon). buildah
# builds in docker's format: an OCI image has no HEALTHCHECK (buildah warns
# and drops it).
image:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		docker build -f infra/Dockerfile -t $(IMAGE) . ; \
	elif command -v buildah >/dev/null 2>&1; then \
		buildah bud --format docker --layers -f infra/Dockerfile -t $(IMAGE) . ; \
	else \
		echo "make image needs docker (with a running engine) or buildah" >&2; exit 1; \
	fi

fmt:
	$(CARGO) fmt --all

test: venv browser lint
	$(CARGO) test --locked

# KEEP=1: the emulator, the daemon and serve stay up; the demo prints the
# environment to explore them with (also in .demo/env.sh) and their PIDs.
DEMO_STATE := .demo
demo: venv build
	$(VENV)/bin/python scripts/demo.py --bin $(BIN) --state-dir $(DEMO_STATE) $(if $(filter 1 yes true,$(KEEP)),--keep)

# Stops what `make demo KEEP=1` left running (SIGTERM to serve and the
# daemon, then the emulator) and removes .demo/.
demo-stop:
	@if [ -x $(VENV)/bin/python ]; then $(VENV)/bin/python scripts/demo.py --stop --state-dir $(DEMO_STATE); \
	else $(PYTHON) scripts/demo.py --stop --state-dir $(DEMO_STATE); fi

# The benchmark suite behind BENCHMARKS.md (release build; criterion diff
# bench; in-memory pipeline + RSS; end to end against moto, ddb-audit vs a
# naive poller; serve's API; the proof side: chain cost, digests per hour,
# verify over 100,000 entries). Results in $(TARGET_DIR)/bench-results/.
# BENCH_QUICK=1: smoke.
# run.sh installs the virtualenv while the release build runs.
bench:
	CARGO="$(CARGO)" PY=$(VENV)/bin/python VENV_CMD="$(MAKE) --no-print-directory venv" benches/run.sh

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(IAC_VENV)
