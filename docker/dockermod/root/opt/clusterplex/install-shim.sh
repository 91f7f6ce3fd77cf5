#!/usr/bin/env bash
# Puts clusterplex-shim in place of Plex's transcoder (ClusterPlex dockermod behaviour).
# Plex's own binary is kept as "originalTranscoder" so TRANSCODE_OPERATING_MODE=local|both can
# still run it. Idempotent: safe on every container start and after a Plex update (which brings
# back a real "Plex Transcoder": it is moved aside again).
set -euo pipefail

TRANSCODER_PATH=${TRANSCODER_PATH:-/usr/lib/plexmediaserver}
TRANSCODER_NAME=${TRANSCODER_NAME:-Plex Transcoder}
SHIM=${CLUSTERPLEX_SHIM:-/opt/clusterplex/clusterplex-shim}

log() { echo "[mod-clusterplex] $*"; }

target="$TRANSCODER_PATH/$TRANSCODER_NAME"
original="$TRANSCODER_PATH/originalTranscoder"

if [ ! -x "$SHIM" ]; then
  log "error: shim binary $SHIM is missing or not executable" >&2
  exit 1
fi
if [ ! -d "$TRANSCODER_PATH" ]; then
  log "error: TRANSCODER_PATH $TRANSCODER_PATH does not exist (is this a Plex container?)" >&2
  exit 1
fi

if [ -e "$target" ] && cmp -s "$target" "$SHIM"; then
  log "shim already installed at $target"
  exit 0
fi

if [ -e "$target" ]; then
  # A real transcoder is in place (first start, or Plex updated itself): keep it as the original.
  log "moving '$target' to '$original'"
  mv -f "$target" "$original"
elif [ ! -e "$original" ]; then
  log "error: neither '$target' nor '$original' exists" >&2
  exit 1
fi

install -m 0755 "$SHIM" "$target"
log "installed clusterplex-shim as '$target'"
