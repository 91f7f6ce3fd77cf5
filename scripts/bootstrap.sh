#!/usr/bin/env bash
# Idempotent machine setup for building, testing and running ClusterPlex on Debian/Ubuntu.
# Installs only what is missing; uses sudo when not root. Safe to run repeatedly.
set -euo pipefail

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    log "not root and no sudo: install the packages below by hand"; fi
fi

# Build and test dependencies. clang-19 is optional (PTX for sm_90); the rest are required.
PKGS=(
  build-essential pkg-config clang libclang-dev make
  libavcodec-dev libavformat-dev libavfilter-dev libavutil-dev libswscale-dev
  libswresample-dev libavdevice-dev ffmpeg protobuf-compiler curl ca-certificates
  python3 python3-yaml python3-venv systemd
)
OPTIONAL_PKGS=(clang-19)
PKGS+=(${EXTRA_PKGS:-})

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
opt_missing=()
for p in "${OPTIONAL_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || opt_missing+=("$p")
done

apt_install() {
  # Another apt may hold the lock right after machine start: wait for it.
  for _ in $(seq 1 60); do
    if ! fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1; then break; fi
    sleep 2
  done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@"
}

if [ ${#missing[@]} -gt 0 ] || [ ${#opt_missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]} ${opt_missing[*]}"
  $SUDO apt-get update -q
  if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi
  if [ ${#opt_missing[@]} -gt 0 ]; then
    apt_install "${opt_missing[@]}" || log "optional packages unavailable: ${opt_missing[*]} (CUDA PTX for sm_90 will be skipped)"
  fi
fi

# Rust toolchain: use the one on PATH when it is new enough, else install rustup's stable.
need_rust() {
  command -v cargo >/dev/null 2>&1 || return 0
  local v; v=$(rustc --version | awk '{print $2}')
  [ "$(printf '%s\n1.88.0\n' "$v" | sort -V | head -1)" != "1.88.0" ]
}
if need_rust; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
  if need_rust; then
    log "installing the Rust toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1; then
    rustup component add "$comp"
  fi
done
if ! command -v cargo-nextest >/dev/null 2>&1 && [ -n "${WITH_NEXTEST:-}" ]; then
  cargo install --locked cargo-nextest
fi
log "ready: $(rustc --version), $(ffmpeg -hide_banner -version 2>/dev/null | head -1)"
