# The two commands of the quick start are `make demo` and `make test`; both bootstrap first.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: bootstrap build release demo test lint fmt bench

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap
	$(CARGO) build --workspace --all-targets

release: bootstrap
	$(CARGO) build --release --workspace --bins

demo: bootstrap
	scripts/demo.sh

lint: bootstrap
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The whole test suite: lint, then every test of every crate (real media made at test time).
test: lint
	scripts/test.sh

fmt:
	$(CARGO) fmt --all

bench: bootstrap
	$(CARGO) bench --workspace
