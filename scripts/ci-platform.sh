#!/usr/bin/env bash
# CI steps of the platform part (docs/deploy.md), each timed:
#   deploy      scripts/validate-deploy.sh (manifests, units, Dockerfiles, docker mod)
#   ffmpeg      patched FFmpeg for x86-64 (series + nvmpi compile-check stub), cached outside the
#               clone in ${CLUSTERPLEX_CACHE:-~/.cache/clusterplex}/ffmpeg-<hash>
#   nvmpi       the nvmpi codecs are compiled in and fail cleanly against the stub; the -lz fix holds
#   engine      cargo test -p clusterplex-ffmpeg against the patched FFmpeg (target/patched)
#   cross       clusterplex-worker for aarch64 + the engine's tonemap tests under qemu-aarch64
#               (the NEON path compared with the reference), in target/cross
# Usage: scripts/ci-platform.sh [STEP...]   (default: all steps, in that order)
# Env: CLUSTERPLEX_CACHE, CROSS_TESTS (test targets run under qemu; default: tonemap*),
#      CI_PLATFORM_SKIP_SETUP=1 (do not apt-install the cross toolchain),
#      CI_PLATFORM_FFMPEG_PREFIX (nvmpi/engine steps: use this prefix instead of the series' cache),
#      CI_PLATFORM_TARGET_DIR (default: target; the engine step builds in <it>/patched and the cross
#      step in <it>/cross -- point it outside the clone, e.g. $CLUSTERPLEX_CACHE, to keep them warm).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tdir=${CI_PLATFORM_TARGET_DIR:-target}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(deploy ffmpeg nvmpi engine cross)

log() { printf '\033[1m[ci-platform]\033[0m %s\n' "$*" >&2; }
summary=()
failed=0
passed=0

run_step() {
  local name=$1
  shift
  local t0 rc
  t0=$(date +%s)
  log "step $name: start"
  set +e
  # errexit inside the subshell: a failing command ends its step.
  (set -e; "$@")
  rc=$?
  set -e
  local dt=$(($(date +%s) - t0))
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    summary+=("$(printf '%-8s ok     %4d s' "$name" "$dt")")
  else
    failed=$((failed + 1))
    summary+=("$(printf '%-8s FAILED %4d s (exit %d)' "$name" "$dt" "$rc")")
  fi
  log "step $name: exit $rc after ${dt} s"
}

prefix_file=$(mktemp)
trap 'rm -f "$prefix_file"' EXIT
ffmpeg_prefix() {
  [ -n "${CI_PLATFORM_FFMPEG_PREFIX:-}" ] && { echo "$CI_PLATFORM_FFMPEG_PREFIX"; return; }
  [ -s "$prefix_file" ] || scripts/build-ffmpeg.sh --nvmpi stub --print-prefix >"$prefix_file"
  cat "$prefix_file"
}

step_deploy() { scripts/validate-deploy.sh; }

step_ffmpeg() {
  local p
  p=$(scripts/build-ffmpeg.sh --install-deps --nvmpi stub | tail -1)
  echo "$p" >"$prefix_file"
  cat "$p/.clusterplex-ffmpeg"
}

step_nvmpi() {
  local p tmp ok=1
  p=$(ffmpeg_prefix)
  [ -f "$p/.clusterplex-ffmpeg" ] || { log "no patched FFmpeg at $p: run the ffmpeg step"; return 1; }
  # The patched binaries find their libraries through their rpath; the host ffmpeg must not.
  local enc dec filt
  enc=$("$p/bin/ffmpeg" -hide_banner -encoders)
  dec=$("$p/bin/ffmpeg" -hide_banner -decoders)
  filt=$("$p/bin/ffmpeg" -hide_banner -filters)
  for c in h264_nvmpi hevc_nvmpi h264_nvenc hevc_nvenc libx264 libx265; do
    grep -qw "$c" <<<"$enc" && echo "ok   encoder $c" || { echo "FAIL encoder $c missing"; ok=0; }
  done
  for c in h264_nvmpi hevc_nvmpi vp9_nvmpi h264_cuvid hevc_cuvid; do
    grep -qw "$c" <<<"$dec" && echo "ok   decoder $c" || { echo "FAIL decoder $c missing"; ok=0; }
  done
  for f in scale_cuda hwupload_cuda scale; do
    grep -qw "$f" <<<"$filt" && echo "ok   filter $f" || { echo "FAIL filter $f missing"; ok=0; }
  done
  # The -lz fix (patch 0002 + --extra-libs=-lz): libavfilter must need libz itself.
  if readelf -d "$p/lib/libavfilter.so" | grep -q 'NEEDED.*libz\.so'; then
    echo "ok   libavfilter.so links libz (inflate for compressed PTX)"
  else
    echo "FAIL libavfilter.so does not link libz"; ok=0
  fi
  # Against the stub, opening a Jetson encoder must fail with a clear error, not crash or hang.
  tmp=$(mktemp -d)
  head -c $((64 * 64 * 3 / 2 * 2)) /dev/zero >"$tmp/in.yuv"
  if timeout 60 "$p/bin/ffmpeg" -hide_banner -nostdin -f rawvideo -pix_fmt yuv420p -s 64x64 -r 25 \
      -i "$tmp/in.yuv" -c:v h264_nvmpi -f null - >"$tmp/log" 2>&1; then
    echo "FAIL h264_nvmpi encoded against the stub"; ok=0
  elif grep -q "cannot open the Jetson h264 encoder" "$tmp/log"; then
    echo "ok   h264_nvmpi fails cleanly without a Jetson: $(grep -m1 'cannot open' "$tmp/log")"
  else
    cat "$tmp/log"; echo "FAIL h264_nvmpi failed without the expected error"; ok=0
  fi
  # Same for a Jetson decoder, on a real h264 stream made by the host's ffmpeg.
  if ffmpeg -hide_banner -nostdin -loglevel error -f lavfi -i testsrc2=size=64x64:rate=25 -t 0.4 \
      -c:v libx264 -pix_fmt yuv420p "$tmp/in.mp4"; then
    if timeout 60 "$p/bin/ffmpeg" -hide_banner -nostdin -c:v h264_nvmpi -i "$tmp/in.mp4" -c:v rawvideo -f null - >"$tmp/log" 2>&1; then
      echo "FAIL h264_nvmpi decoded against the stub"; ok=0
    elif grep -q "cannot open the Jetson h264 decoder" "$tmp/log"; then
      echo "ok   h264_nvmpi decoder fails cleanly without a Jetson"
    else
      cat "$tmp/log"; echo "FAIL h264_nvmpi decoder failed without the expected error"; ok=0
    fi
  else
    echo "FAIL cannot make the h264 fixture with the host ffmpeg"; ok=0
  fi
  rm -rf "$tmp"
  [ $ok = 1 ]
}

step_engine() {
  local p
  p=$(ffmpeg_prefix)
  [ -f "$p/.clusterplex-ffmpeg" ] || { log "no patched FFmpeg at $p: run the ffmpeg step"; return 1; }
  # Build through a fixed symlink: the rpath is in RUSTFLAGS, and a RUSTFLAGS change (a new
  # series -> a new prefix) would rebuild every crate in target/patched, not just ffmpeg-sys.
  local link="${CLUSTERPLEX_CACHE:-$HOME/.cache/clusterplex}/ffmpeg-ci-current"
  ln -sfn "$p" "$link"
  p=$link
  # The Makefile's CLUSTERPLEX_FFMPEG_PREFIX block sets pkg-config, rpath and target/patched.
  CARGO_TARGET_DIR="$tdir/patched" CLUSTERPLEX_FFMPEG_PREFIX=$p make -s test-engine
  # Prove the tests really ran against the patched libraries, not the system ones.
  local bin
  # The newest test binary: older ones from other prefixes may still lie in deps/.
  bin=$(find "$tdir/patched/debug/deps" -maxdepth 1 -type f -executable -name 'clusterplex_ffmpeg-*' \
    -printf '%T@ %p\n' | sort -rn | head -1 | cut -d' ' -f2-)
  if [ -n "$bin" ] && ldd "$bin" | grep -q "libavcodec.so.* => $p/lib/"; then
    echo "ok   engine tests linked against $p/lib"
  else
    echo "FAIL engine tests did not load the patched libavcodec (${bin:-no test binary})"
    return 1
  fi
}

step_cross() {
  [ "${CI_PLATFORM_SKIP_SETUP:-0}" = 1 ] || scripts/cross-aarch64.sh setup
  export CARGO_TARGET_DIR="$tdir/cross"
  scripts/cross-aarch64.sh build -p clusterplex-worker --bin clusterplex-worker
  local bin=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/debug/clusterplex-worker
  readelf -h "$bin" | grep -q 'Machine:.*AArch64' || { echo "FAIL $bin is not an aarch64 binary"; return 1; }
  echo "ok   $bin is aarch64"
  local tests=() t
  for t in ${CROSS_TESTS:-$(cd clusterplex-ffmpeg/tests 2>/dev/null && ls tonemap*.rs 2>/dev/null | sed 's/\.rs$//')}; do
    tests+=(--test "$t")
  done
  if [ ${#tests[@]} -eq 0 ]; then
    echo "FAIL no tonemap tests found in clusterplex-ffmpeg/tests"
    return 1
  fi
  scripts/cross-aarch64.sh test -p clusterplex-ffmpeg "${tests[@]}"
}

for s in "${steps[@]}"; do
  case "$s" in
    deploy|ffmpeg|nvmpi|engine|cross) run_step "$s" "step_$s" ;;
    *) log "unknown step $s (deploy ffmpeg nvmpi engine cross)"; exit 2 ;;
  esac
done

log "summary (root $root):"
printf '  %s\n' "${summary[@]}" >&2
echo "ci-platform: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
