#!/usr/bin/env bash
# CPU and wall time per instance of one or more segnode binaries on the ingest workload, run
# alternately (A/B), optionally with a perf profile of each run.
#
#   bench/ingest/cpu.sh BIN [BIN ...]          ROUNDS (default 4) alternating runs of each binary
#   PERF=1 bench/ingest/cpu.sh BIN [BIN ...]   also `perf record -F 4000 -g` of each measured
#                                              stream, kept as $WORK/perf-<binary>-<round>.data
#
# Per run: a fresh `segnode serve` (fresh data folder), a 500-instance warm-up association (the
# bench's input-500: its journal segments and buffers exist afterwards, as on a running node),
# then N (default 1500) other instances over one storescu association (`-pdu 131072`,
# TCP_NODELAY), measured: user and system CPU of the whole process (every thread, the journal's
# materializer included) from /proc/<pid>/stat, wall time of the storescu run, minor page faults.
# This is what `bench/ingest/run.sh` cannot show: segnode's own CPU, for comparisons of builds
# (build a second binary with `CARGO_PROFILE_RELEASE_STRIP=none` for symbols in perf). On a
# shared VM the system time of the same binary varies a lot between consecutive runs: compare
# binaries only within one invocation, and prefer the perf profile's shares to the totals.
#
# Environment: N (default 1500), ROUNDS (default 4), BENCH_WORK (default target/bench-ingest),
# PERF. Needs dcmtk (storescu, echoscu), the peers venv (scripts/install-test-deps.sh) and, with
# PERF=1, perf.
set -euo pipefail

[[ $# -ge 1 ]] || { sed -n '2,9p' "$0" >&2; exit 2; }
N="${N:-1500}"
ROUNDS="${ROUNDS:-4}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${BENCH_WORK:-$ROOT/target/bench-ingest}"
PY="$ROOT/.venv-peers/bin/python"
PORT=11123
for t in storescu echoscu; do
    command -v "$t" >/dev/null || { echo "dcmtk's $t is missing: apt-get install dcmtk" >&2; exit 1; }
done
[[ -x "$PY" ]] || { echo "$PY missing: run scripts/install-test-deps.sh" >&2; exit 1; }
[[ -z "${PERF:-}" ]] || command -v perf >/dev/null || { echo "PERF=1 needs perf: apt-get install linux-perf" >&2; exit 1; }
for b in "$@"; do [[ -x "$b" ]] || { echo "$b: not an executable" >&2; exit 1; }; done

mkdir -p "$WORK"
make_input() { # folder count seed
    if [[ "$(find "$1" -name '*.dcm' 2>/dev/null | wc -l)" -ne "$2" ]]; then
        rm -rf "$1"
        echo "generating $2 instances in $1 ..." >&2
        "$PY" "$ROOT/conformance/tools/make_series.py" "$1" --size 256 --slices "$2" --series 1 \
            --seed "$3" >/dev/null
    fi
}
make_input "$WORK/cpu-warm-500" 500 7
make_input "$WORK/cpu-measure-$N" "$N" 11

send() { # calling AE, folder
    TCP_NODELAY=1 storescu -aet "$1" -aec SEGNODE -pdu 131072 +sd +r 127.0.0.1 $PORT "$2" >/dev/null 2>&1
}

run_one() { # binary, label
    local bin=$1 label=$2 data="$WORK/cpu-data" sp pp=
    rm -rf "$data" && mkdir -p "$data"
    "$bin" serve --data-dir "$data" --bind 127.0.0.1 --port $PORT --http off --aet SEGNODE \
        --max-pdu 131072 --quiet-period 600 >"$WORK/cpu-segnode.log" 2>&1 &
    sp=$!
    for _ in $(seq 100); do
        TCP_NODELAY=1 echoscu -aec SEGNODE 127.0.0.1 $PORT >/dev/null 2>&1 && break
        sleep 0.1
    done
    send WARM "$WORK/cpu-warm-500"
    sleep 1
    if [[ -n "${PERF:-}" ]]; then
        perf record -q -F 4000 -g -p "$sp" -o "$WORK/perf-$label.data" >/dev/null 2>&1 &
        pp=$!
        sleep 0.5
    fi
    local u0 s0 f0 u1 s1 f1 t0 t1
    read -r u0 s0 f0 < <(awk '{print $14, $15, $10}' "/proc/$sp/stat")
    t0=$(date +%s.%N)
    send MEASURE "$WORK/cpu-measure-$N"
    t1=$(date +%s.%N)
    sleep 0.5 # the materializer's last batch
    read -r u1 s1 f1 < <(awk '{print $14, $15, $10}' "/proc/$sp/stat")
    if [[ -n "$pp" ]]; then kill -INT "$pp"; wait "$pp" || true; fi
    kill "$sp"; wait "$sp" || true
    local tick; tick=$(getconf CLK_TCK)
    awk -v l="$label" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v f=$((f1 - f0)) -v w="$(echo "$t1 - $t0" | bc -l)" \
        -v n="$N" -v hz="$tick" 'BEGIN { printf "%-28s user %.3f  sys %.3f  cpu %.3f  wall %.3f ms/instance  minflt %.1f/instance\n",
            l, u * 1000 / hz / n, s * 1000 / hz / n, (u + s) * 1000 / hz / n, w * 1000 / n, f / n }'
}

echo "segnode CPU per instance: $N x 132 KB over one association after a 500-instance warm-up; $ROUNDS rounds, binaries alternating"
for r in $(seq "$ROUNDS"); do
    for b in "$@"; do
        run_one "$b" "$(basename "$b")-$r"
    done
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
