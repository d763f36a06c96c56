# Gatehouse developer entry points. Everything installs itself on Debian 12 (scripts/setup.sh).
#
#   make run      control plane + console on http://127.0.0.1:8080, gateway worker on
#                 127.0.0.1:8090, SQLite under ./data
#   make test     every check and test (scripts/test.sh; CI runs this through .ci/run)
#   make setup    install what `make test` needs
#   make console  build the console's browser half into target/site/pkg
#   make fmt      format the code
#   make lint     rustfmt --check and clippy (native and the console's wasm side), warnings denied

SHELL := /bin/bash

.PHONY: run test setup console console-release fmt fmt-check lint clippy

run:
	scripts/setup.sh run
	scripts/build-console.sh
	cargo run -p gatehouse -- serve

test:
	scripts/test.sh

setup:
	scripts/setup.sh test

console:
	scripts/build-console.sh debug

console-release:
	scripts/build-console.sh release

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p gatehouse-console --lib --target wasm32-unknown-unknown --features hydrate -- -D warnings

lint: fmt-check clippy

# make bench    the performance harness of issue 3 (not a test): release builds, then direct vs gateway
#               figures printed with their ratios (docs/performance.md). Extra flags: make bench BENCH_ARGS='--split'
.PHONY: bench
bench:
	cargo build --release -p gatehouse -p gatehouse-bench
	target/release/gatehouse-bench --gatehouse target/release/gatehouse $(BENCH_ARGS)
