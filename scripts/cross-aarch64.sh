#!/usr/bin/env bash
# Cross-builds and tests ClusterPlex for aarch64-unknown-linux-gnu (Jetson and other arm64 workers)
# against Debian's arm64 FFmpeg (multiarch), running the tests under qemu-user.
#
#   scripts/cross-aarch64.sh setup              # apt (arm64 multiarch, cross gcc, qemu) + rustup target
#   scripts/cross-aarch64.sh build [CARGO ARGS] # cargo build --target aarch64-unknown-linux-gnu ...
#   scripts/cross-aarch64.sh test  [CARGO ARGS] # cargo test  --target aarch64-unknown-linux-gnu ...
#   scripts/cross-aarch64.sh env                # print the environment (for your own cargo calls)
#
# Artifacts go to ${CARGO_TARGET_DIR:-target/cross}/aarch64-unknown-linux-gnu/, away from the x86-64
# target/ so the two builds never invalidate each other. With CLUSTERPLEX_FFMPEG_PREFIX set to an
# aarch64 build from scripts/build-ffmpeg.sh --arch aarch64, that FFmpeg is used instead.
# Setup installs ~265 MB (242 packages) and upgrades some amd64 packages to keep multiarch versions
# in step; it is only needed for this target, so scripts/bootstrap.sh does not do it.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=aarch64-unknown-linux-gnu
log() { printf '\033[1m[cross-aarch64]\033[0m %s\n' "$*" >&2; }

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo

PKGS=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
      libavcodec-dev:arm64 libavformat-dev:arm64 libavfilter-dev:arm64 libavutil-dev:arm64
      libswscale-dev:arm64 libswresample-dev:arm64 libavdevice-dev:arm64)

setup() {
  local missing=()
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
      $SUDO dpkg --add-architecture arm64
    fi
    $SUDO apt-get update -q >&2
    for _ in $(seq 1 60); do fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break; sleep 2; done
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
  if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2
  fi
}

cross_env() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cross}
  export PKG_CONFIG_ALLOW_CROSS=1
  # Target-suffixed variables: the host (build scripts, proc macros) keeps the amd64 libraries.
  local pc=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig
  if [ -n "${CLUSTERPLEX_FFMPEG_PREFIX:-}" ]; then
    pc="$CLUSTERPLEX_FFMPEG_PREFIX/lib/pkgconfig:$pc"
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=-Wl,-rpath,$CLUSTERPLEX_FFMPEG_PREFIX/lib"
  fi
  export PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu=$pc
  export PKG_CONFIG_PATH_aarch64_unknown_linux_gnu=$pc
  export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="-I/usr/include/aarch64-linux-gnu"
  export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
  export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
  export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
}

check_tools() {
  command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null &&
    [ -f /usr/lib/aarch64-linux-gnu/pkgconfig/libavcodec.pc ] ||
    { log "the aarch64 toolchain is missing: run scripts/cross-aarch64.sh setup"; exit 1; }
}

cmd=${1:-build}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  env)
    cross_env
    env | grep -E '^(CARGO_TARGET_DIR|PKG_CONFIG_ALLOW_CROSS|PKG_CONFIG_(LIBDIR|PATH)_aarch64|BINDGEN_EXTRA_CLANG_ARGS_aarch64|CC_aarch64|CXX_aarch64|AR_aarch64|CARGO_TARGET_AARCH64)' |
      sed 's/^/export /' ;;
  build|test|clippy|run)
    check_tools
    cross_env
    exec cargo "$cmd" --target "$TARGET" "$@" ;;
  *) log "usage: $0 setup|build|test|clippy|run|env [cargo args]"; exit 2 ;;
esac
