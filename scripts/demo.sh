#!/usr/bin/env bash
# The README's main command (`make demo`): a one-machine ClusterPlex cluster transcoding a generated
# HDR10 clip the way Plex would ask for it.
#   1. builds the binaries,
#   2. makes a short HDR10 sample (HEVC Main10, PQ, mastering metadata) with the ffmpeg CLI,
#   3. starts the PMS-contract endpoint (a Plex Media Server stand-in that records callbacks),
#   4. starts an orchestrator with two in-process workers,
#   5. submits a Plex-style DASH job with HDR->SDR tonemapping through the shim, in `remote` mode,
#   6. prints where the output is, how to play it, what Plex was told, and the orchestrator's metrics.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${DEMO_DIR:-$PWD/out/demo}
GRPC_PORT=${DEMO_GRPC_PORT:-35500}
METRICS_PORT=${DEMO_METRICS_PORT:-35502}
PROFILE_DIR=target/debug

say() { printf '\n\033[1;36m==> %s\033[0m\n' "$*"; }

say "building (first time: several minutes on 2 cores)"
cargo build --bins -p clusterplex-worker -p clusterplex-orchestrator -p clusterplex-shim \
  -p clusterplex-pms-contract
BIN=$PWD/$PROFILE_DIR

rm -rf "$OUT"
mkdir -p "$OUT/media" "$OUT/session" "$OUT/logs"
SAMPLE="$OUT/media/Demo Movie (2026) [HDR10].mkv"

say "making a 6 s HDR10 sample: $SAMPLE"
ffmpeg -hide_banner -loglevel error -y \
  -f lavfi -i "testsrc2=size=1280x720:rate=24:duration=6" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=6" \
  -vf "zscale=tin=bt709:min=bt709:pin=bt709:rin=tv:t=smpte2084:m=bt2020nc:p=bt2020:r=tv:npl=1000,format=yuv420p10le" \
  -c:v libx265 -preset ultrafast -crf 22 -x265-params \
  "log-level=error:hdr10=1:repeat-headers=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50):max-cll=1000,400" \
  -c:a aac -ac 6 "$SAMPLE"

PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

say "starting the PMS-contract endpoint (records what Plex would receive)"
"$BIN/clusterplex-pms-contract" --port 0 --session-dir "$OUT/session" \
  --dump "$OUT/pms-recording.json" >"$OUT/logs/pms.out" 2>"$OUT/logs/pms.log" &
PIDS+=($!)
PMS_URL=""
for _ in $(seq 1 100); do
  PMS_URL=$(sed -n 's/^PMS_CONTRACT_URL=//p' "$OUT/logs/pms.out" | head -1)
  [ -n "$PMS_URL" ] && break
  sleep 0.1
done
[ -n "$PMS_URL" ] || { echo "PMS-contract endpoint did not start; see $OUT/logs/pms.log" >&2; exit 1; }
echo "PMS stand-in at $PMS_URL"

say "starting the orchestrator with 2 in-process workers (gRPC :$GRPC_PORT, metrics :$METRICS_PORT)"
LISTENING_PORT=$GRPC_PORT METRICS_PORT=$METRICS_PORT LISTENING_ADDRESS=127.0.0.1 \
  MEDIA_ROOTS="$OUT/media" TRANSCODE_ROOTS="$OUT/session" CACHE_DIR="$OUT/cache" \
  "$BIN/clusterplex-orchestrator" --local-workers 2 >"$OUT/logs/orchestrator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" 2>/dev/null | grep -q '^workers_active 2'; then
    break
  fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$METRICS_PORT/health" >/dev/null \
  || { echo "orchestrator is not healthy; see $OUT/logs/orchestrator.log" >&2; exit 1; }
echo "orchestrator healthy, workers: $(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | sed -n 's/^workers_active //p')"

SESSION=demo-session-1
BASE="$PMS_URL/video/:/transcode/session/$SESSION/0a1b2c3d"
# The shape Plex Media Server uses for a DASH playback with HDR->SDR tonemapping (see
# clusterplex-core/tests/corpus/ for captured originals).
ARGS=(
  -codec:0 hevc -codec:1 aac
  -analyzeduration 20000000 -probesize 20000000
  -i "$SAMPLE"
  -filter_complex "[0:0]scale=w=960:h=540:force_divisible_by=4,format=p010,tonemap=mobius,format=pix_fmts=yuv420p|nv12[1]"
  -filter_complex "[0:1] aresample=async=1:ochl='stereo':rematrix_maxval=0.000000dB:osr=48000[2]"
  -map "[1]" -metadata:s:0 language=und -codec:0 libx264 -crf:0 23 -maxrate:0 4000k -bufsize:0 8000k
  -r:0 24 -preset:0 veryfast -x264opts:0 subme=2:me_range=4:rc_lookahead=10:me=hex
  -force_key_frames:0 "expr:gte(t,n_forced*2)"
  -map "[2]" -metadata:s:1 language=eng -codec:1 aac -b:1 192k
  -f dash -seg_duration 2 -dash_segment_type mp4
  -init_seg_name 'init-stream$RepresentationID$.m4s'
  -media_seg_name 'chunk-stream$RepresentationID$-$Number%05d$.m4s'
  -window_size 5 -delete_removed false -skip_to_segment 1 -time_delta 0.0625
  -manifest_name "$BASE/manifest"
  -avoid_negative_ts disabled -map_metadata -1 -map_chapters -1 dash
  -start_at_zero -copyts -vsync cfr -y -nostats -loglevel quiet -loglevel_plex error
  -progressurl "$BASE/progress"
)

say "what the shim plans for this command line (clusterplex-shim plan)"
PMS_IP=127.0.0.1 "$BIN/clusterplex-shim" plan -- "${ARGS[@]}" >"$OUT/plan.json"
python3 - "$OUT/plan.json" <<'EOF'
import json, sys
plan = json.load(open(sys.argv[1]))
job = plan["job"]
print("placement:", json.dumps(plan["placement"]))
print("needs:", ", ".join(f"{k}={sorted(v) if isinstance(v, list) else v}" for k, v in plan["needs"].items() if v))
for i, o in enumerate(job["outputs"]):
    print(f"output {i}: {o['target']} format={o.get('format')}")
print("filters:", *job.get("complex_filters", []), sep="\n  ")
EOF

say "transcoding through shim -> orchestrator -> worker (TRANSCODE_OPERATING_MODE=remote)"
start=$(date +%s)
(
  cd "$OUT/session"
  ORCHESTRATOR_URL="http://127.0.0.1:$GRPC_PORT" PMS_IP=127.0.0.1 TRANSCODE_OPERATING_MODE=remote \
    X_PLEX_TOKEN=demo-token "$BIN/clusterplex-shim" run -- "${ARGS[@]}" 2>"$OUT/logs/shim.log"
) &
SHIM=$!
# Show progress as Plex would see it: the last progress PUT the PMS stand-in received.
while kill -0 "$SHIM" 2>/dev/null; do
  p=$(curl -fsS "$PMS_URL/_recording" 2>/dev/null | python3 -c '
import json, sys
rec = json.load(sys.stdin)
reqs = rec.get("requests", rec) if isinstance(rec, dict) else rec
last = [r for r in reqs if "progress=" in (r.get("query") or "")]
print(last[-1]["query"] if last else "waiting for the first progress report")
' 2>/dev/null || true)
  printf '\r  %-100s' "${p:-starting}"
  sleep 0.5
done
echo
rc=0; wait "$SHIM" || rc=$?
end=$(date +%s)
grep -E "remote|local|worker" "$OUT/logs/shim.log" | tail -3 || true
if [ "$rc" -ne 0 ]; then
  echo "the shim exited with $rc; logs are in $OUT/logs/" >&2
  exit "$rc"
fi
echo "done in $((end - start)) s, shim exit code $rc"

say "output"
ls -l "$OUT/session" | sed 's/^/  /'
curl -fsS "$PMS_URL/_recording" >"$OUT/pms-recording.json"
python3 - "$OUT/pms-recording.json" "$OUT/session" <<'EOF'
import json, sys, os
rec = json.load(open(sys.argv[1]))
reqs = rec.get("requests", rec) if isinstance(rec, dict) else rec
manifests = [r for r in reqs if r.get("path", "").endswith("/manifest")]
progress = [r for r in reqs if "/progress" in r.get("path", "")]
print(f"Plex would have received {len(reqs)} callbacks: {len(progress)} progress, {len(manifests)} manifest POSTs")
for r in reqs:
    if r.get("kind") in ("stream", "stream_detail"):
        print(f"  {r['method']} {r['path'].rsplit('/', 1)[-1]}?{r.get('query', '')}")
if manifests:
    body = manifests[-1].get("body") or ""
    if isinstance(body, list):
        body = bytes(body).decode()
    with open(os.path.join(sys.argv[2], "manifest.mpd"), "w") as f:
        f.write(body)
    print("last manifest saved as manifest.mpd")
EOF
ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height,pix_fmt,color_primaries,color_transfer,color_space \
  -of default=nw=1 -i "concat:$OUT/session/init-stream0.m4s|$(ls "$OUT"/session/chunk-stream0-*.m4s | head -1)" \
  | sed 's/^/  video: /'

say "how to play it"
echo "  ffplay '$OUT/session/manifest.mpd'      # DASH, as a Plex client would stream it"
echo "  cat '$OUT'/session/init-stream0.m4s '$OUT'/session/chunk-stream0-*.m4s > video.mp4   # one file"

say "orchestrator metrics (http://127.0.0.1:$METRICS_PORT/metrics)"
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" \
  | grep -E '^(jobs_|workers_active|job_posters_active|queue_depth|worker_load_)' | sed 's/^/  /'
