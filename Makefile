# margay: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test deps build lint unit bench clean-sandbox

## demo: a 2-host sandbox in network namespaces with a local etcd; prints the
## connectivity matrix before and after a live policy change, then cleans up.
demo: deps
	$(CARGO) build --release -p margay-agent
	bash deploy/sandbox/sandbox.sh demo $(DEMO_ARGS)

## test: everything CI runs: lint, unit, integration and end-to-end tests.
test: deps lint unit

deps:
	bash scripts/install-deps.sh

build:
	$(CARGO) build --workspace --all-targets

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The end-to-end tests run the real `margay` binary from target/debug, so it
# is built before the test binaries start.
unit:
	$(CARGO) build -p margay-agent
	$(CARGO) test --workspace

bench:
	$(CARGO) bench -p margay-benches
