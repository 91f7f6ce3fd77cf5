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

# --- Platform (docs/deploy.md) ----------------------------------------------------------------
# Build the engine against a patched FFmpeg prefix (scripts/build-ffmpeg.sh) instead of the system
# FFmpeg: `CLUSTERPLEX_FFMPEG_PREFIX=/opt/clusterplex-ffmpeg make build`. The prefix's .pc files come
# first, binaries get an rpath to its lib/, and artifacts go to target/patched so switching back and
# forth does not rebuild everything. Does nothing when unset. (No LD_LIBRARY_PATH: the rpath suffices,
# and LD_LIBRARY_PATH would make the system ffmpeg/ffprobe that tests call load the patched libraries.)
ifneq ($(strip $(CLUSTERPLEX_FFMPEG_PREFIX)),)
export PKG_CONFIG_PATH := $(CLUSTERPLEX_FFMPEG_PREFIX)/lib/pkgconfig
export PKG_CONFIG_LIBDIR := $(CLUSTERPLEX_FFMPEG_PREFIX)/lib/pkgconfig:/usr/local/lib/pkgconfig:/usr/lib/$(shell uname -m)-linux-gnu/pkgconfig:/usr/lib/pkgconfig:/usr/share/pkgconfig
export RUSTFLAGS := $(strip $(RUSTFLAGS) -C link-arg=-Wl,-rpath,$(CLUSTERPLEX_FFMPEG_PREFIX)/lib)
export CARGO_TARGET_DIR ?= target/patched
endif

.PHONY: ffmpeg-patched cross-aarch64 validate-deploy ci-platform test-engine

# Patched FFmpeg into the cache (prints the prefix); see scripts/build-ffmpeg.sh --help.
ffmpeg-patched:
	scripts/build-ffmpeg.sh --install-deps

# clusterplex-worker for aarch64 (Jetson etc.): target/cross/aarch64-unknown-linux-gnu/release/.
cross-aarch64: bootstrap
	scripts/cross-aarch64.sh setup
	scripts/cross-aarch64.sh build --release -p clusterplex-worker --bin clusterplex-worker

validate-deploy:
	scripts/validate-deploy.sh

ci-platform: bootstrap
	scripts/ci-platform.sh

# The engine's tests alone (CI also runs them against the patched FFmpeg through the block above).
test-engine:
	$(CARGO) test -p clusterplex-ffmpeg
