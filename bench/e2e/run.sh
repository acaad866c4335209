#!/usr/bin/env bash
# End-to-end benchmark: the bundled 4-series synthetic head study (synth-007-head-axial-rle, 4 x 40 RLE slices
# with skull) sent by dcmsend to `segnode serve`, the SEG delivered by C-STORE to a dcmtk storescp destination.
#
#   bench/e2e/run.sh [ROUNDS]       (default 3 rounds, a fresh node each round)
#
# Measured per round: last instance acknowledged (dcmsend returns) -> SEG file written by storescp,
# minus the quiet period (QUIET, default 2 s); the worker's per-stage breakdown from its log; the
# node's peak RSS (VmHWM of the `segnode serve` process: listener + worker + model). Target: < 20 s.
# Environment: SEGNODE_BIN (default: release build, built if missing), QUIET, STUDY.
set -euo pipefail

ROUNDS="${1:-3}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/fdn}"
BIN="${SEGNODE_BIN:-$CARGO_TARGET_DIR/release/segnode}"
QUIET="${QUIET:-2}"
STUDY="${STUDY:-$ROOT/testdata/studies/synth-007-head-axial-rle}"
WORK="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

for t in dcmsend storescp; do
    command -v "$t" >/dev/null || { echo "dcmtk's $t is missing: apt-get install dcmtk" >&2; exit 1; }
done
if [[ ! -x "$BIN" ]]; then
    echo "building $BIN (release) ..." >&2
    (cd "$ROOT" && cargo build --release -p segnode)
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 300); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
now() { date +%s.%N; }

printf '%-6s %9s %9s %8s %8s %8s %8s %8s %8s %8s %8s %9s %9s\n' round e2e_s pipeline fetch decode brain preproc infer post encode deliver rss_MiB brain_add
for r in $(seq "$ROUNDS"); do
    D="$WORK/r$r"; mkdir -p "$D/out"
    VP=$(free_port); NP=$(free_port)
    TCP_NODELAY=1 storescp -aet VIEWER -od "$D/out" +xa -pdu 131072 "$VP" 2>/dev/null & SCP=$!
    wait_port "$VP"
    RUST_LOG=info "$BIN" serve --data-dir "$D/node" --port "$NP" --bind 127.0.0.1 --http off \
        --quiet-period "$QUIET" --destination "VIEWER@127.0.0.1:$VP" 2> "$D/node.log" & NODE=$!
    wait_port "$NP"
    # The model is loaded before the listener opens; wait for the worker too.
    for _ in $(seq 300); do grep -q "worker started" "$D/node.log" && break; sleep 0.1; done
    TCP_NODELAY=1 dcmsend -aet MODALITY -aec SEGNODE +sd +r 127.0.0.1 "$NP" "$STUDY/dicom" 2>/dev/null
    T0=$(now)
    while ! grep -rlq "1.2.840.10008.5.1.4.1.1.66.4" "$D/out" 2>/dev/null; do sleep 0.02; done
    T1=$(now)
    RSS=$(awk '/VmHWM/ {print $2}' /proc/$NODE/status)
    for _ in $(seq 100); do grep -q "job done" "$D/node.log" && break; sleep 0.05; done
    kill "$NODE" "$SCP"; wait "$NODE" "$SCP" 2>/dev/null || true
    ms() { sed 's/\x1b\[[0-9;]*m//g' "$D/node.log" | grep -o "$1=[0-9]*" | head -1 | cut -d= -f2; }
    DELIVER=$(python3 - "$D/node.log" <<'PY'
import re, sys, datetime
t = {}
for line in open(sys.argv[1]):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    m = re.match(r"(\S+Z)", line)
    if not m: continue
    ts = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
    if " segmented" in line and "seg" not in t: t["seg"] = ts
    if "SEG delivered" in line and "del" not in t: t["del"] = ts
print(int((t["del"] - t["seg"]).total_seconds() * 1000) if len(t) == 2 else -1)
PY
)
    E2E=$(echo "$T1 - $T0" | bc -l)
    PIPE_MS=$(echo "($E2E - $QUIET) * 1000" | bc -l)
    BRAIN_MS=$(ms brain_extraction_ms); BRAIN_MS=${BRAIN_MS:-0}
    ADD=$(echo "100 * $BRAIN_MS / ($PIPE_MS - $BRAIN_MS)" | bc -l)
    printf '%-6s %9.2f %9.2f %8s %8s %8s %8s %8s %8s %8s %8s %9.0f %8.0f%%\n' "$r" "$E2E" "$(echo "$E2E - $QUIET" | bc -l)" \
        "$(ms fetch_ms)" "$(ms decode_ms)" "$(ms brain_extraction_ms)" "$(ms preprocess_ms)" "$(ms inference_ms)" "$(ms postprocess_ms)" \
        "$(ms encode_ms)" "$DELIVER" "$(echo "$RSS / 1024" | bc -l)" "$ADD"
done
echo "stage columns in ms (brain: the brain-extraction stage, 0 for a model without one; deliver: log time between 'segmented' and 'SEG delivered', includes storing the result)."
echo "pipeline = e2e - quiet period ($QUIET s); target < 20 s."
echo "brain_add = brain / (pipeline - brain): what the brain-extraction stage adds to the study's time (target <= 30 %)."

# Peer, same run: the same study through the project's Python reference pipeline (pydicom decode, numpy
# pre/postprocessing, onnxruntime; models/eval.py --study) against `segnode segment` (offline, same work plus
# the SEG). Whole-process wall time for both, best of ROUNDS. Needs .venv-train (models/README.md).
PEER_PY="$ROOT/.venv-train/bin/python"
if [[ -x "$PEER_PY" ]]; then
    best() { sort -n | head -1; }
    OURS=$(for r in $(seq "$ROUNDS"); do S=$(now); "$BIN" segment "$STUDY/dicom" -o "$WORK/seg.dcm" --inference-threads 1 >/dev/null 2>&1; E=$(now); echo "$E - $S" | bc -l; done | best)
    PEER=$(for r in $(seq "$ROUNDS"); do S=$(now); "$PEER_PY" "$ROOT/models/eval.py" --study "$STUDY" --threads 1 >/dev/null 2>&1; E=$(now); echo "$E - $S" | bc -l; done | best)
    printf 'offline, one study, whole process, 1 inference thread: segnode segment %.2f s, python+onnxruntime %.2f s, ratio segnode/peer %.2f\n' "$OURS" "$PEER" "$(echo "$OURS / $PEER" | bc -l)"
else
    echo "peer skipped: $PEER_PY missing (create .venv-train as models/README.md says to compare with the Python reference)"
fi
