#!/usr/bin/env bash
# Builds ClusterPlex's patched FFmpeg (patches/ffmpeg/series applied to FFmpeg 5.1) into a prefix.
#
#   scripts/build-ffmpeg.sh [--source DIR|TARBALL|DSC] [--prefix DIR] [--arch x86_64|aarch64]
#                           [--profile minimal|full] [--nvmpi auto|stub|system|off]
#                           [--jobs N] [--install-deps] [--deps-only] [--force] [--print-prefix]
#
# Prints the install prefix as the last line of stdout (logs go to stderr), so callers can do
#   CLUSTERPLEX_FFMPEG_PREFIX=$(scripts/build-ffmpeg.sh --nvmpi stub | tail -1) make build
#
# Defaults: the source is Debian's source package for the installed libavcodec-dev (apt-get
# source, with a deb-src entry added when missing); the prefix is a cache directory outside the
# clone keyed by the hash of the series, the patches, the nvmpi stub, this script, the source and
# the configure line, so an unchanged series is built once:
# ${CLUSTERPLEX_CACHE:-~/.cache/clusterplex}/ffmpeg-<key>[-aarch64][-nvmpistub][-full].
# --install-deps apt-gets the build packages first (apt-get update when something is missing);
# --deps-only stops after that.
#
# Profiles: "minimal" (CI) is --disable-everything plus what the engine and its tests use and the
# GPU/Jetson parts (a few minutes on 2 cores, docs/deploy.md); "full" keeps all of FFmpeg's
# native codecs/formats/filters for images and real workers.
#
# nvmpi (Jetson codecs, patch 0001): "system" needs a real libnvmpi (nvmpi.pc on PKG_CONFIG_PATH);
# "stub" builds patches/ffmpeg/nvmpi-stub (functions that only return errors) and links against
# it, for compile/link checks only -- never ship a stub build; "auto" = system if nvmpi.pc is
# found, else off.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
patch_dir="$here/patches/ffmpeg"
cache=${CLUSTERPLEX_CACHE:-$HOME/.cache/clusterplex}

source_arg=""
prefix=""
arch=$(uname -m)
profile=minimal
nvmpi=auto
jobs=${JOBS:-2}
install_deps=0
deps_only=0
force=0
print_prefix=0

log() { printf '\033[1m[build-ffmpeg]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_arg=${2:?}; shift 2 ;;
    --prefix) prefix=${2:?}; shift 2 ;;
    --arch) arch=${2:?}; shift 2 ;;
    --profile) profile=${2:?}; shift 2 ;;
    --nvmpi) nvmpi=${2:?}; shift 2 ;;
    --jobs|-j) jobs=${2:?}; shift 2 ;;
    --install-deps) install_deps=1; shift ;;
    --deps-only) install_deps=1; deps_only=1; shift ;;
    --force) force=1; shift ;;
    --print-prefix) print_prefix=1; shift ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

case "$arch" in x86_64|amd64) arch=x86_64 ;; aarch64|arm64) arch=aarch64 ;;
  *) die "unsupported --arch $arch (x86_64 or aarch64)" ;; esac
case "$profile" in minimal|full) ;; *) die "unknown --profile $profile (minimal or full)" ;; esac
case "$nvmpi" in auto|stub|system|off) ;; *) die "unknown --nvmpi $nvmpi (auto, stub, system, off)" ;; esac
cross=0
[ "$arch" != "$(uname -m | sed 's/arm64/aarch64/')" ] && cross=1

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo

apt_install() {
  for _ in $(seq 1 60); do fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break; sleep 2; done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@" >&2
}

# nvmpi "auto" resolves before hashing so the cache key says what was built.
target_pc_libdir=""
if [ "$cross" = 1 ]; then
  target_pc_libdir="/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig"
fi
if [ "$nvmpi" = auto ]; then
  if if [ -n "$target_pc_libdir" ]; then PKG_CONFIG_LIBDIR=$target_pc_libdir pkg-config --exists nvmpi
     else pkg-config --exists nvmpi; fi 2>/dev/null; then
    nvmpi=system
  else
    nvmpi=off
  fi
fi

if [ "$install_deps" = 1 ]; then
  # libavcodec-dev: its version names the Debian source package to patch.
  pkgs=(build-essential pkg-config nasm clang dpkg-dev patch xz-utils libffmpeg-nvenc-dev libavcodec-dev)
  if [ "$cross" = 1 ]; then
    pkgs+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross zlib1g-dev:arm64 libx264-dev:arm64
           libx265-dev:arm64 libass-dev:arm64 libzimg-dev:arm64)
  else
    pkgs+=(zlib1g-dev libx264-dev libx265-dev libass-dev libzimg-dev)
  fi
  missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    [ "$cross" = 1 ] && ! dpkg --print-foreign-architectures | grep -qx arm64 &&
      $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -q >&2
    apt_install "${missing[@]}"
  fi
fi
[ "$deps_only" = 1 ] && { log "build dependencies installed"; exit 0; }

# --- configure --------------------------------------------------------------------------------
export PKG_CONFIG_PATH=${PKG_CONFIG_PATH:-}
# --disable-autodetect keeps the result independent of what else the machine has installed
# (otherwise libavutil picks up X11, VAAPI, ... and the runtime image needs them too).
cfg=(--disable-static --enable-shared --disable-doc --disable-debug --disable-autodetect
     --disable-postproc
     --enable-gpl --enable-zlib --extra-libs=-lz
     --enable-libx264 --enable-libx265 --enable-libass
     --enable-cuda-llvm --enable-ffnvcodec --enable-nvdec --enable-nvenc --enable-cuvid)
cc=cc
if [ "$cross" = 1 ]; then
  cc=aarch64-linux-gnu-gcc
  export PKG_CONFIG_LIBDIR=$target_pc_libdir
  cfg+=(--enable-cross-compile --arch=aarch64 --target-os=linux --cross-prefix=aarch64-linux-gnu-
        --pkg-config=pkg-config)
fi
pkg-config --exists zimg 2>/dev/null && cfg+=(--enable-libzimg)

nvmpi_codecs=""
[ "$nvmpi" != off ] && { cfg+=(--enable-nvmpi); nvmpi_codecs=1; }
if [ "$profile" = minimal ]; then
  dec=h264,hevc,vp9,aac,ac3,mp3,opus,flac,pcm_s16le,rawvideo,ass,ssa,subrip,srt,text,movtext,webvtt
  dec+=,h264_cuvid,hevc_cuvid,vp9_cuvid
  enc=libx264,libx265,aac,ac3,flac,pcm_s16le,rawvideo,wrapped_avframe,ass,ssa,subrip,srt,text,movtext,webvtt
  enc+=,h264_nvenc,hevc_nvenc
  if [ -n "$nvmpi_codecs" ]; then
    dec+=,h264_nvmpi,hevc_nvmpi,vp9_nvmpi
    enc+=,h264_nvmpi,hevc_nvmpi
  fi
  filters=scale,format,aresample,aformat,null,anull,buffer,buffersink,abuffer,abuffersink
  filters+=,setparams,setpts,asetpts,fps,copy,split,asplit,pad,crop,trim,atrim,volume
  filters+=,hwupload,hwupload_cuda,hwdownload,hwmap,scale_cuda,yadif_cuda,overlay_cuda,subtitles,ass
  # What Plex/Jellyfin command lines put in their filter graphs.
  filters+=,setsar,setdar,setfield,fieldorder,yadif,bwdif,overlay,colorspace,tonemap,transpose,hflip,vflip
  filters+=,select,aselect,fifo,afifo,concat,pan,amix,amerge,atempo,adelay,apad,channelmap,channelsplit
  filters+=,ebur128,loudnorm,dynaudnorm
  pkg-config --exists zimg 2>/dev/null && filters+=,zscale
  cfg+=(--disable-everything --disable-programs --enable-ffmpeg --enable-ffprobe
        --enable-swscale --enable-swresample --enable-avfilter --enable-avformat --enable-avcodec
        --enable-decoder="$dec" --enable-encoder="$enc"
        --enable-parser=h264,hevc,vp9,aac,ac3,mpegaudio,opus,flac
        --enable-demuxer=mov,matroska,mpegts,hls,ass,h264,hevc,aac,ac3,mp3,flac,wav,rawvideo,concat,srt,webvtt
        --enable-muxer=mov,mp4,ipod,matroska,webm,mpegts,hls,dash,segment,ass,null,webvtt,srt,h264,hevc,adts,wav,rawvideo,framemd5,md5
        --enable-protocol=file,pipe,http,tcp,crypto
        --enable-bsf=h264_mp4toannexb,hevc_mp4toannexb,extract_extradata,aac_adtstoasc,vp9_superframe_split,null
        --enable-hwaccel=h264_nvdec,hevc_nvdec,vp9_nvdec
        --enable-filter="$filters")
fi

# Cache key: everything that changes the result (the configure line includes what pkg-config
# found, e.g. zimg, so it comes after the dependencies are installed).
src_id=${source_arg:+$(basename "$source_arg")}
[ -n "$src_id" ] || src_id="debian-$(dpkg-query -W -f='${source:Version}\n' "libavcodec-dev:$(dpkg --print-architecture)" 2>/dev/null | head -1)"
key=$( {
  cat "$patch_dir/series"
  while read -r p; do case "$p" in ''|'#'*) continue ;; esac; cat "$patch_dir/$p"; done <"$patch_dir/series"
  cat "$patch_dir"/nvmpi-stub/nvmpi.h "$patch_dir"/nvmpi-stub/nvmpi_stub.c "$patch_dir"/nvmpi-stub/nvmpi.pc.in
  cat "$0"
  echo "arch=$arch profile=$profile nvmpi=$nvmpi source=$src_id"
  printf '%s\n' "${cfg[@]}"
} | sha256sum | cut -c1-12)
suffix=""
[ "$arch" = aarch64 ] && suffix="$suffix-aarch64"
[ "$nvmpi" = stub ] && suffix="$suffix-nvmpistub"
[ "$profile" = full ] && suffix="$suffix-full"
prefix=${prefix:-$cache/ffmpeg-$key$suffix}

if [ "$print_prefix" = 1 ]; then echo "$prefix"; exit 0; fi

stamp="$prefix/.clusterplex-ffmpeg"
if [ "$force" = 0 ] && [ -f "$stamp" ] && grep -qx "key=$key" "$stamp"; then
  log "cached: $prefix (key $key)"
  echo "$prefix"
  exit 0
fi
cfg+=(--prefix="$prefix" --extra-ldflags="-Wl,-rpath,$prefix/lib")

# --- source -----------------------------------------------------------------------------------
build_root="$cache/build-$key$suffix"
rm -rf "$build_root"
mkdir -p "$build_root" "$cache/src"
src="$build_root/ffmpeg"

ensure_deb_src() {
  if ! grep -rqs '^Types:.*deb-src\|^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding a deb-src entry for Debian's FFmpeg source"
    [ -n "$SUDO" ] || [ "$(id -u)" -eq 0 ] || die "need root to add a deb-src entry; pass --source instead"
    # shellcheck disable=SC1091
    . /etc/os-release
    $SUDO tee /etc/apt/sources.list.d/clusterplex-deb-src.sources >/dev/null <<EOF
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: ${VERSION_CODENAME} ${VERSION_CODENAME}-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: ${VERSION_CODENAME}-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    $SUDO apt-get update -q >&2
  fi
}

if [ -z "$source_arg" ]; then
  ver=$(dpkg-query -W -f='${source:Version}\n' "libavcodec-dev:$(dpkg --print-architecture)" 2>/dev/null | head -1 || true)
  [ -n "$ver" ] || die "libavcodec-dev is not installed; install it or pass --source"
  dsc="$cache/src/ffmpeg_${ver#*:}.dsc"
  if [ ! -f "$dsc" ]; then
    ensure_deb_src
    log "downloading Debian's FFmpeg source $ver"
    (cd "$cache/src" && apt-get source --download-only -q "ffmpeg=$ver" >&2 2>/dev/null) ||
      (cd "$cache/src" && { apt-get update -q >&2; apt-get source --download-only -q "ffmpeg=$ver" >&2; })
  fi
  source_arg=$dsc
fi

case "$source_arg" in
  *.dsc)
    log "unpacking $(basename "$source_arg")"
    dpkg-source --no-check -x "$source_arg" "$src" >&2 ;;
  *.tar|*.tar.*|*.tgz)
    log "unpacking $(basename "$source_arg")"
    mkdir -p "$src" && tar -xf "$source_arg" -C "$src" --strip-components=1 ;;
  *)
    [ -x "$source_arg/configure" ] || die "$source_arg is not an FFmpeg source tree, tarball or .dsc"
    log "copying $source_arg"
    mkdir -p "$src" && cp -a "$source_arg/." "$src/" ;;
esac
grep -q '^5\.1' "$src/RELEASE" 2>/dev/null ||
  log "warning: the series targets FFmpeg 5.1; this tree is $(cat "$src/RELEASE" 2>/dev/null || echo unknown)"

# --- patches ----------------------------------------------------------------------------------
while read -r p; do
  case "$p" in ''|'#'*) continue ;; esac
  log "applying $p"
  patch -d "$src" -p1 --forward --batch --quiet <"$patch_dir/$p" >&2 || die "$p does not apply"
done <"$patch_dir/series"

if [ "$nvmpi" = stub ]; then
  log "building the nvmpi COMPILE-CHECK STUB into $prefix (not a working Jetson library)"
  "$patch_dir/nvmpi-stub/build.sh" "$prefix" "$cc" >&2
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  [ "$cross" = 1 ] && export PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig:$PKG_CONFIG_LIBDIR"
fi

cd "$src"
log "configure ($arch, $profile, nvmpi=$nvmpi) -> $prefix"
t0=$(date +%s)
./configure "${cfg[@]}" >"$build_root/configure.log" 2>&1 ||
  { tail -30 "$src/ffbuild/config.log" >&2; die "configure failed (log: $build_root/configure.log)"; }
log "make -j$jobs (nice)"
nice -n 19 make -j"$jobs" >"$build_root/make.log" 2>&1 ||
  { tail -40 "$build_root/make.log" >&2; die "make failed (log: $build_root/make.log)"; }
make install >"$build_root/install.log" 2>&1 || { tail -20 "$build_root/install.log" >&2; die "make install failed"; }

# Say what this prefix is, so nobody mistakes a stub-linked build for a Jetson build.
{
  echo "key=$key"
  echo "arch=$arch"
  echo "profile=$profile"
  echo "nvmpi=$nvmpi"
  echo "source=$(basename "$source_arg")"
  echo "series=$(grep -v '^#' "$patch_dir/series" | tr '\n' ' ')"
  echo "configure=${cfg[*]}"
  [ "$nvmpi" = stub ] && echo "WARNING=linked against the nvmpi compile-check stub; the *_nvmpi codecs cannot work"
} >"$stamp"
rm -rf "$build_root"
log "built in $(( $(date +%s) - t0 )) s: $prefix"
echo "$prefix"
