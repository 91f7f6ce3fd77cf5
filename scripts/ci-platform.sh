#!/usr/bin/env bash
# CI steps of the platform part (docs/deploy.md), each timed. Meant to run after `make test` in the
# same clone (the `engine` step reuses the test binaries that `make test` built).
#
#   deps     apt-get what the other steps need (build-ffmpeg.sh --install-deps, cross-aarch64.sh
#            setup: arm64 multiarch FFmpeg, cross gcc, qemu-user-static, the rustup target)
#   deploy   scripts/validate-deploy.sh (manifests, units, Dockerfiles, docker mod)
#   ffmpeg   patched FFmpeg for x86-64 (series + nvmpi compile-check stub), cached outside the
#            clone in ${CLUSTERPLEX_CACHE:-~/.cache/clusterplex}/ffmpeg-<hash>
#   nvmpi    the nvmpi/NVENC/cuvid codecs and scale_cuda are compiled in and the Jetson codecs fail
#            cleanly against the stub; libavfilter links libz (patch 0002)
#   link     a Rust executable links every patched library with rustc's default linker (rust-lld,
#            which rejects the unpatched libavfilter: undefined `inflate`)
#   engine   clusterplex-ffmpeg's tests (lib + integration) run against the patched libraries: the
#            headers are checked to be the system's (same FFmpeg 5.1.9, so the same ABI), the test
#            binaries of the normal build are loaded with the prefix's lib/ first (ldd-checked); the
#            ffmpeg/ffprobe CLI the tests call for fixtures stay on the system libraries
#   cross    one cargo build for aarch64: clusterplex-worker + the engine's test binaries, then
#            the tests in CROSS_TESTS run under qemu-aarch64-static (the engine's transcodes with
#            arm64 FFmpeg, and the NEON tonemap path compared with the reference)
#   engine-build  (not in the default set) cargo test -p clusterplex-ffmpeg compiled against the
#            prefix itself (CLUSTERPLEX_FFMPEG_PREFIX, <target dir>/patched); cold about 10 min of CPU
#
# Usage: scripts/ci-platform.sh [--install-deps] [STEP...]
#   default steps: deps deploy ffmpeg nvmpi link engine cross   ("all" adds engine-build)
#   --install-deps alone runs only the deps step.
# Env (defaults in brackets):
#   CLUSTERPLEX_CACHE [~/.cache/clusterplex]  FFmpeg prefixes and sources
#   CI_PLATFORM_TARGET_DIR [target]  cargo target dir of the engine (<dir>) and engine-build
#        (<dir>/patched) steps
#   CROSS_TARGET_DIR [$CLUSTERPLEX_CACHE/target-cross-aarch64]  target dir of the aarch64 build,
#        outside the clone so that it stays warm across fresh clones
#   CROSS_TESTS [engine tonemap tonemap_engine tonemap_ffmpeg]  clusterplex-ffmpeg test targets run
#        under qemu ("none": build only)
#   CROSS_FILTER []  libtest filter for those tests (e.g. fast_paths)
#   CROSS_SKIP [cancel_stops_quickly]  tests skipped under qemu: that one bounds the cancel latency
#        in wall time, which emulation does not keep (it runs natively in `make test`)
#   CI_PLATFORM_SKIP_SETUP [0]  1 = the cross step does not apt-install the toolchain
#   CI_PLATFORM_FFMPEG_PREFIX []  use this prefix instead of the series' cached build
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tdir=${CI_PLATFORM_TARGET_DIR:-target}
cache=${CLUSTERPLEX_CACHE:-$HOME/.cache/clusterplex}
# Outside the clone, like the FFmpeg prefix: a fresh clone then rebuilds only the workspace's own
# crates for aarch64, not the ~170 dependencies.
cross_tdir=${CROSS_TARGET_DIR:-$cache/target-cross-aarch64}
default_steps=(deps deploy ffmpeg nvmpi link engine cross)
steps=()
for a in "$@"; do
  case "$a" in
    --install-deps) steps+=(deps) ;;
    all) steps+=("${default_steps[@]}" engine-build) ;;
    -h|--help) sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) steps+=("$a") ;;
  esac
done
[ ${#steps[@]} -eq 0 ] && steps=("${default_steps[@]}")

log() { printf '\033[1m[ci-platform]\033[0m %s\n' "$*" >&2; }
summary=()
failed=0
passed=0
t_start=$(date +%s)

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
    summary+=("$(printf '%-12s ok     %4d s' "$name" "$dt")")
  else
    failed=$((failed + 1))
    summary+=("$(printf '%-12s FAILED %4d s (exit %d)' "$name" "$dt" "$rc")")
  fi
  log "step $name: exit $rc after ${dt} s"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix_file=$work/prefix
ffmpeg_prefix() {
  [ -n "${CI_PLATFORM_FFMPEG_PREFIX:-}" ] && { echo "$CI_PLATFORM_FFMPEG_PREFIX"; return; }
  [ -s "$prefix_file" ] || scripts/build-ffmpeg.sh --nvmpi stub --print-prefix >"$prefix_file"
  cat "$prefix_file"
}
need_prefix() {
  [ -f "$1/.clusterplex-ffmpeg" ] || { log "no patched FFmpeg at $1: run the ffmpeg step"; return 1; }
}

step_deps() {
  # Everything the platform steps need on a fresh Debian machine (apt-get update first when
  # something is missing; both scripts check what is installed, so this is quick when warm).
  scripts/build-ffmpeg.sh --install-deps --deps-only
  [ "${CI_PLATFORM_SKIP_SETUP:-0}" = 1 ] || scripts/cross-aarch64.sh setup
  command -v readelf >/dev/null && command -v python3 >/dev/null
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
  need_prefix "$p"
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
  for f in scale_cuda hwupload_cuda scale setsar; do
    grep -qw "$f" <<<"$filt" && echo "ok   filter $f" || { echo "FAIL filter $f missing"; ok=0; }
  done
  # The -lz fix (patch 0002 + --extra-libs=-lz): libavfilter must need libz itself.
  if readelf -d "$p/lib/libavfilter.so" | grep 'NEEDED.*libz\.so' >/dev/null; then
    echo "ok   libavfilter.so links libz (inflate for compressed PTX)"
  else
    echo "FAIL libavfilter.so does not link libz"; ok=0
  fi
  # Against the stub, opening a Jetson encoder must fail with a clear error, not crash or hang.
  tmp=$work/nvmpi
  mkdir -p "$tmp"
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
  [ $ok = 1 ]
}

# The FFmpeg libraries ffmpeg-sys-next links (ffmpeg-next's default features).
ff_libs=(avcodec avformat avfilter avutil avdevice swscale swresample)

step_link() {
  local p d=$work/link l
  p=$(ffmpeg_prefix)
  need_prefix "$p"
  mkdir -p "$d"
  # Takes the address of one function per library (safe Rust: nothing is called), so every
  # library is NEEDED and the linker checks each one's own undefined symbols.
  {
    echo 'extern "C" {'
    for l in "${ff_libs[@]}"; do echo "    fn ${l}_version() -> u32;"; done
    echo '}'
    echo 'fn main() {'
    echo "    let f: [unsafe extern \"C\" fn() -> u32; ${#ff_libs[@]}] = ["
    for l in "${ff_libs[@]}"; do echo "        ${l}_version,"; done
    echo '    ];'
    echo '    for p in f { println!("{:p}", p as *const ()); }'
    echo '}'
  } >"$d/main.rs"
  local args=(-L "native=$p/lib" -C "link-arg=-Wl,-rpath,$p/lib")
  for l in "${ff_libs[@]}"; do args+=(-l "dylib=$l"); done
  rustc --edition 2021 -o "$d/probe" "${args[@]}" "$d/main.rs"
  # (ldd into a variable: `ldd | grep -q` can fail with SIGPIPE under pipefail.)
  local deps
  deps=$(ldd "$d/probe")
  for l in "${ff_libs[@]}"; do
    grep -q "lib$l\.so.* => $p/lib/" <<<"$deps" || { echo "FAIL probe does not load $p/lib/lib$l.so"; return 1; }
  done
  "$d/probe" >/dev/null
  echo "ok   a Rust executable links and loads all ${#ff_libs[@]} patched libraries (rustc $(rustc -vV | sed -n 's/^release: //p'), its default linker)"
}

step_engine() {
  local p sysinc ok=1
  p=$(ffmpeg_prefix)
  need_prefix "$p"
  # Same ABI: the engine is compiled against the system FFmpeg's headers; they must be the prefix's
  # (only the version string in ffversion.h may differ). Otherwise use the engine-build step.
  sysinc=$(env -u PKG_CONFIG_LIBDIR -u PKG_CONFIG_PATH pkg-config --variable=includedir libavcodec)
  for l in "${ff_libs[@]}"; do
    if diff -r -x ffversion.h "$p/include/lib$l" "$sysinc/lib$l" >"$work/hdiff" 2>&1; then :; else
      head -20 "$work/hdiff"; echo "FAIL lib$l headers differ from $sysinc: run the engine-build step instead"; ok=0
    fi
  done
  [ $ok = 1 ] || return 1
  echo "ok   the prefix's headers equal the system's ($(grep -o '"[^"]*"' "$p/include/libavutil/ffversion.h"))"
  # The workspace's test targets, as `make test` builds them (nextest = cargo test --workspace
  # --no-run), so after it this compiles nothing. --keep-going: a crate that does not compile
  # elsewhere in the workspace (make test reports it) must not hide the engine's results.
  CARGO_TARGET_DIR=$tdir cargo build --workspace --tests --keep-going \
    --message-format=json-render-diagnostics >"$work/build.json" ||
    log "warning: part of the workspace did not build; checking the engine's test binaries"
  local bins want
  want=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
m = json.load(sys.stdin)
p = [p for p in m["packages"] if p["name"] == "clusterplex-ffmpeg"][0]
print(sum(1 for t in p["targets"] if set(t["kind"]) & {"lib", "test"}))')
  mapfile -t bins < <(python3 - "$work/build.json" "$root/clusterplex-ffmpeg/Cargo.toml" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("manifest_path") == sys.argv[2] \
            and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["executable"])
EOF
)
  [ ${#bins[@]} -eq "$want" ] ||
    { echo "FAIL ${#bins[@]} of $want clusterplex-ffmpeg test binaries built"; return 1; }
  [ ${#bins[@]} -gt 0 ] || { echo "FAIL no clusterplex-ffmpeg test binaries"; return 1; }
  # The fixtures' ffmpeg/ffprobe (found on PATH) run with the system libraries: the minimal
  # prefix has no lavfi sources, and its sonames are the system's, so LD_LIBRARY_PATH would
  # swap them in.
  local wrap=$work/bin t
  mkdir -p "$wrap"
  for t in ffmpeg ffprobe; do
    printf '#!/bin/sh\nunset LD_LIBRARY_PATH\nexec %s "$@"\n' "$(command -v "$t")" >"$wrap/$t"
    chmod +x "$wrap/$t"
  done
  local b rc=0 deps
  for b in "${bins[@]}"; do
    # Every FFmpeg library the binary needs (the linker drops unused ones) comes from the prefix.
    deps=$(LD_LIBRARY_PATH=$p/lib ldd "$b" | grep -E '^\s*lib(av|sw)[a-z]+\.so' || true)
    grep -q " => $p/lib/" <<<"$deps" ||
      { echo "FAIL $(basename "$b") would load no FFmpeg library from $p/lib"; return 1; }
    if grep -v " => $p/lib/" <<<"$deps" | grep . ; then
      echo "FAIL $(basename "$b") would load the FFmpeg libraries above from outside $p/lib"; return 1
    fi
    log "$(basename "$b") against $p/lib"
    (cd clusterplex-ffmpeg && CARGO_MANIFEST_DIR=$root/clusterplex-ffmpeg PATH=$wrap:$PATH \
      LD_LIBRARY_PATH=$p/lib "$b" -q) || rc=1
  done
  [ $rc = 0 ] && echo "ok   ${#bins[@]} clusterplex-ffmpeg test binaries passed against $p/lib"
  return $rc
}

step_engine_build() {
  local p
  p=$(ffmpeg_prefix)
  need_prefix "$p"
  # Build through a fixed symlink: the rpath is in RUSTFLAGS, and a RUSTFLAGS change (a new
  # series -> a new prefix) would rebuild every crate in <target>/patched, not just ffmpeg-sys.
  local link="$cache/ffmpeg-ci-current"
  ln -sfn "$p" "$link"
  p=$link
  # The Makefile's CLUSTERPLEX_FFMPEG_PREFIX block sets pkg-config, rpath and the target dir.
  CARGO_TARGET_DIR="$tdir/patched" CLUSTERPLEX_FFMPEG_PREFIX=$p make -s test-engine
  # Prove the tests really ran against the patched libraries, not the system ones.
  local bin
  # The newest test binary: older ones from other prefixes may still lie in deps/.
  bin=$(find "$tdir/patched/debug/deps" -maxdepth 1 -type f -executable -name 'clusterplex_ffmpeg-*' \
    -printf '%T@ %p\n' | sort -rn | head -1 | cut -d' ' -f2-)
  if [ -n "$bin" ] && grep -q "libavcodec.so.* => $p/lib/" <<<"$(ldd "$bin")"; then
    echo "ok   engine tests linked against $p/lib"
  else
    echo "FAIL engine tests did not load the patched libavcodec (${bin:-no test binary})"
    return 1
  fi
}

step_cross() {
  [ "${CI_PLATFORM_SKIP_SETUP:-0}" = 1 ] || scripts/cross-aarch64.sh setup
  export CARGO_TARGET_DIR=$cross_tdir
  local tests=() t
  local sel=${CROSS_TESTS:-engine tonemap tonemap_engine tonemap_ffmpeg}
  [ "$sel" = none ] && sel=""
  for t in $sel; do tests+=(--test "$t"); done
  # One cargo call, so the worker and the tests share one feature resolution (no crate twice).
  scripts/cross-aarch64.sh build --message-format=json-render-diagnostics \
    -p clusterplex-worker -p clusterplex-ffmpeg --bin clusterplex-worker "${tests[@]}" >"$work/cross.json"
  local bin=$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/debug/clusterplex-worker
  readelf -h "$bin" | grep 'Machine:.*AArch64' >/dev/null || { echo "FAIL $bin is not an aarch64 binary"; return 1; }
  echo "ok   $bin is aarch64"
  [ ${#tests[@]} -gt 0 ] || return 0
  local bins
  mapfile -t bins < <(python3 - "$work/cross.json" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") \
            and m.get("executable"):
        print(m["executable"])
EOF
)
  [ ${#bins[@]} -eq $((${#tests[@]} / 2)) ] ||
    { echo "FAIL expected $((${#tests[@]} / 2)) aarch64 test binaries, got ${#bins[@]}"; return 1; }
  local b rc=0 t0 skip=()
  for t in ${CROSS_SKIP-cancel_stops_quickly}; do skip+=(--skip "$t"); done
  for b in "${bins[@]}"; do
    readelf -h "$b" | grep 'Machine:.*AArch64' >/dev/null ||
      { echo "FAIL $b is not aarch64"; return 1; }
    t0=$(date +%s)
    log "qemu-aarch64-static $(basename "$b") ${CROSS_FILTER:-} ${skip[*]}"
    # shellcheck disable=SC2086
    (cd clusterplex-ffmpeg && CARGO_MANIFEST_DIR=$root/clusterplex-ffmpeg \
      qemu-aarch64-static "$b" -q ${CROSS_FILTER:-} "${skip[@]}") || rc=1
    echo "     $(basename "$b"): $(($(date +%s) - t0)) s under qemu"
  done
  [ $rc = 0 ] && echo "ok   ${#bins[@]} engine test binaries passed under qemu-aarch64 (NEON path vs reference)"
  return $rc
}

for s in "${steps[@]}"; do
  case "$s" in
    deps|deploy|ffmpeg|nvmpi|link|engine|cross) run_step "$s" "step_$s" ;;
    engine-build) run_step "$s" step_engine_build ;;
    *) log "unknown step $s (deps deploy ffmpeg nvmpi link engine cross engine-build all)"; exit 2 ;;
  esac
done

log "summary (root $root, total $(($(date +%s) - t_start)) s):"
printf '  %s\n' "${summary[@]}" >&2
echo "ci-platform: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
