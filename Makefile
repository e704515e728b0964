# The two commands:  make dev   (the whole local stack)   make test   (every test)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
TOOLS := $(VENV)/.installed
# The test stack has its own ports, so it runs beside `make dev`.
TEST_PORT ?= 9100
TEST_EMULATOR_PORT ?= 4666

.PHONY: help dev test unit e2e lint tools build bench clean

help:
	@echo "make dev    start the local stack (moto + cargo lambda watch) on 127.0.0.1:\$${SUBKV_PORT:-9000}"
	@echo "make test   lint, unit tests, then end-to-end tests against a fresh local stack"
	@echo "make bench  benchmarks (see docs/operations.md)"

# Project-local tools: Python-distributed ones into .venv, nothing global.
$(TOOLS): infra/local/requirements.txt
	@# Debian ships venv separately; as root, install it rather than fail.
	python3 -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq python3-venv && rm -rf $(VENV) \
	  && python3 -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/local/requirements.txt
	touch $@

tools: $(TOOLS)

# Exactly what `cargo lambda watch` runs (`cargo run --bin <function>`): every function
# and the bootstrap share one dependency feature set, so building them together here
# leaves nothing to compile on a function's first request. (`--workspace --all-targets`
# would unify in dev-dependency features and build a different variant.)
FUNCTIONS := $(notdir $(wildcard functions/*))
build:
	cargo build --bin subkv-local $(addprefix --bin ,$(FUNCTIONS))

dev: tools build
	@exec infra/local/stack.sh dev

lint: tools
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/cfn-lint infra/template.yaml

unit:
	cargo test --workspace --exclude subkv-e2e

e2e: tools build
	SUBKV_PORT=$(TEST_PORT) SUBKV_EMULATOR_PORT=$(TEST_EMULATOR_PORT) \
	DENO=$(CURDIR)/$(VENV)/bin/deno DENO_DIR=$(CURDIR)/target/deno \
	infra/local/stack.sh run -- cargo test -p subkv-e2e -- --test-threads 4

test: lint unit e2e

# The release binaries of every function first: cold_start runs target/release/get-database.
bench:
	cargo build --release --workspace --bins --exclude subkv-local --exclude subkv-e2e
	cargo bench -p subkv-shared

clean:
	rm -rf $(VENV) target
