#!/usr/bin/env bash
# Validates ClusterPlex's deployment files without a container engine (docs/deploy.md):
#  1. deploy/tools/validate_deploy.py: YAML/JSON parse + structural checks (Swarm, Kubernetes,
#     Grafana, Dockerfiles, docker mod layout, systemd hardening);
#  2. Kubernetes manifests against the Kubernetes JSON schemas (kubernetes-validate from PyPI,
#     which ships the schemas, so it works offline once installed; --strict rejects unknown fields);
#  3. systemd units with systemd-analyze verify (any warning fails) and the offline security score;
#  4. the docker mod's install script, run for real against a fake Plex install.
# Prints "N passed, N failed" at the end and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${CLUSTERPLEX_CACHE:-$HOME/.cache/clusterplex}
K8S_VERSION=${K8S_VERSION:-1.30.0}
passed=0
failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
log() { printf '\033[1m[validate-deploy]\033[0m %s\n' "$*" >&2; }

# --- 1. structure -----------------------------------------------------------------------------
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml >&2
if out=$(python3 deploy/tools/validate_deploy.py); then
  ok "structural checks ($(grep -c '^ok' <<<"$out") checks)"
else
  grep '^FAIL' <<<"$out" || true
  bad "structural checks (deploy/tools/validate_deploy.py)"
fi

# --- 2. Kubernetes schemas --------------------------------------------------------------------
kv=$(command -v kubernetes-validate || true)
if [ -z "$kv" ]; then
  venv="$cache/venv-deploy"
  if [ ! -x "$venv/bin/kubernetes-validate" ]; then
    log "installing kubernetes-validate into $venv"
    python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q kubernetes-validate >&2 || true
  fi
  [ -x "$venv/bin/kubernetes-validate" ] && kv="$venv/bin/kubernetes-validate"
fi
manifests=()
for f in deploy/kubernetes/*.yaml; do [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f"); done
if [ -n "$kv" ]; then
  if out=$("$kv" --strict --quiet -k "$K8S_VERSION" "${manifests[@]}" 2>&1); then
    ok "kubernetes manifests match the Kubernetes $K8S_VERSION schemas (${#manifests[@]} files, strict)"
  else
    echo "$out"
    bad "kubernetes schema validation"
  fi
else
  bad "kubernetes-validate is unavailable (pip install kubernetes-validate)"
fi

# --- 3. systemd -------------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if command -v systemd-analyze >/dev/null 2>&1; then
  for unit in deploy/systemd/*.service; do
    name=$(basename "$unit")
    # verify wants ExecStart's binary and the env file to exist; check the unit, not this machine.
    sed -e 's|^ExecStart=[^ ]*|ExecStart=/bin/true|' -e 's|^EnvironmentFile=|EnvironmentFile=-|' \
      "$unit" >"$tmp/$name"
    out=$(systemd-analyze verify "$tmp/$name" 2>&1 || echo "exit status $?")
    if [ -z "$out" ]; then ok "systemd-analyze verify $name"; else echo "$out"; bad "systemd-analyze verify $name"; fi
    score=$(systemd-analyze security --offline=yes "$tmp/$name" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    if [ -n "$score" ] && awk -v s="$score" 'BEGIN { exit !(s < 3.0) }'; then
      ok "systemd-analyze security $name: exposure $score (< 3.0)"
    else
      bad "systemd-analyze security $name: exposure ${score:-unknown} (want < 3.0)"
    fi
  done
else
  log "systemd-analyze not found: unit verification skipped"
fi

# --- 4. docker mod install script, for real ---------------------------------------------------
install=docker/dockermod/root/opt/clusterplex/install-shim.sh
plex="$tmp/usr/lib/plexmediaserver"
mkdir -p "$plex"
printf '#!/bin/sh\necho real-transcoder-v1\n' >"$plex/Plex Transcoder"
printf '#!/bin/sh\necho clusterplex-shim\n' >"$tmp/shim"
chmod +x "$plex/Plex Transcoder" "$tmp/shim"
run_install() { TRANSCODER_PATH="$plex" CLUSTERPLEX_SHIM="$tmp/shim" "$install" >"$tmp/install.log" 2>&1; }
if run_install && [ "$("$plex/Plex Transcoder")" = clusterplex-shim ] &&
   [ "$("$plex/originalTranscoder")" = real-transcoder-v1 ]; then
  ok "dockermod: first start renames Plex Transcoder to originalTranscoder and installs the shim"
else
  cat "$tmp/install.log"; bad "dockermod: first start"
fi
if run_install && [ "$("$plex/originalTranscoder")" = real-transcoder-v1 ] && grep -q "already installed" "$tmp/install.log"; then
  ok "dockermod: second start is a no-op (original kept)"
else
  cat "$tmp/install.log"; bad "dockermod: second start"
fi
printf '#!/bin/sh\necho real-transcoder-v2\n' >"$plex/Plex Transcoder"  # Plex updated itself
if run_install && [ "$("$plex/Plex Transcoder")" = clusterplex-shim ] &&
   [ "$("$plex/originalTranscoder")" = real-transcoder-v2 ]; then
  ok "dockermod: after a Plex update the new transcoder becomes originalTranscoder"
else
  cat "$tmp/install.log"; bad "dockermod: after a Plex update"
fi
if TRANSCODER_PATH="$tmp/missing" CLUSTERPLEX_SHIM="$tmp/shim" "$install" >/dev/null 2>&1; then
  bad "dockermod: a missing Plex install must fail"
else
  ok "dockermod: a missing Plex install fails with an error"
fi

# --- 5. shell scripts parse -------------------------------------------------------------------
for s in scripts/build-ffmpeg.sh scripts/cross-aarch64.sh scripts/ci-platform.sh scripts/validate-deploy.sh \
         patches/ffmpeg/nvmpi-stub/build.sh "$install"; do
  [ -f "$s" ] || continue
  if bash -n "$s"; then ok "bash -n $s"; else bad "bash -n $s"; fi
done
if command -v shellcheck >/dev/null 2>&1; then
  if shellcheck -S warning scripts/build-ffmpeg.sh scripts/cross-aarch64.sh scripts/validate-deploy.sh "$install"; then
    ok "shellcheck"; else bad "shellcheck"; fi
fi

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
