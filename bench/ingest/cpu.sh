#!/usr/bin/env bash
# CPU and wall time per instance of one or more segnode binaries on the ingest workload, run
# alternately (A/B) with dcmtk's storescp as the same run's reference, optionally with a perf
# profile of each run.
#
#   bench/ingest/cpu.sh BIN [BIN ...]          ROUNDS (default 4) alternating runs of each binary
#                                              and of storescp; medians and ratios at the end
#   PERF=1 bench/ingest/cpu.sh BIN [BIN ...]   also `perf record -F 4000 -g` of each measured
#                                              stream, kept as $WORK/perf-<binary>-<round>.data
#
# Per run (the order rotating; before each, `sync` and, as root, the page cache emptied): a fresh
# receiver (fresh data folder), a 500-instance warm-up association (the bench's
# input-500: segnode's journal segments and buffers exist afterwards, as on a running node), then
# N (default 1500) other instances over one storescu association (`-pdu 131072`, TCP_NODELAY),
# measured: user and system CPU of the whole process (every thread) from /proc/<pid>/stat, and of
# segnode's journal materializer thread alone (the study-folder files, their syncfs, the SHA-256
# provenance digest: work storescp does not do), wall time of the storescu run, minor page faults.
# storescp (`-od`, one file per instance, no fsync) is issue 19's reference for "CPU per
# instance". `bench/ingest/run.sh` prints the receivers' CPU too, but with the page cache as the
# rounds leave it and without the split. This script is also for comparisons of builds (build a
# second binary with `CARGO_PROFILE_RELEASE_STRIP=none` for symbols in perf; give the binaries
# different file names: the label is the name). On a shared VM the
# system time of the same binary varies a lot between consecutive runs: compare receivers only
# within one invocation, and prefer the perf profile's shares to the totals.
#
# Environment: N (default 1500), ROUNDS (default 4), BENCH_WORK (default target/bench-ingest),
# PERF. Needs dcmtk (storescu, storescp, echoscu), the peers venv (scripts/install-test-deps.sh),
# unshare and ip (util-linux, iproute2) for the private network namespace and, with PERF=1, perf.
set -euo pipefail

[[ $# -ge 1 ]] || { sed -n '2,10p' "$0" >&2; exit 2; }
N="${N:-1500}"
ROUNDS="${ROUNDS:-4}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${BENCH_WORK:-$ROOT/target/bench-ingest}"
PY="$ROOT/.venv-peers/bin/python"
PORT=11123
for t in storescu storescp echoscu; do
    command -v "$t" >/dev/null || { echo "dcmtk's $t is missing: apt-get install dcmtk" >&2; exit 1; }
done
[[ -x "$PY" ]] || { echo "$PY missing: run scripts/install-test-deps.sh" >&2; exit 1; }
[[ -z "${PERF:-}" ]] || command -v perf >/dev/null || { echo "PERF=1 needs perf: apt-get install linux-perf" >&2; exit 1; }
for b in "$@"; do [[ -x "$b" ]] || { echo "$b: not an executable" >&2; exit 1; }; done
source "$ROOT/bench/lib.sh"
in_private_netns _CPU_IN_NETNS "$@"

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

# CPU ticks (user + system) of one thread of $1 whose name starts with $2; 0 if there is none.
thread_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        if [[ "$(cat "$t/comm" 2>/dev/null)" == "$2"* ]]; then
            cpu_ticks "$t"
            return
        fi
    done
    echo 0
}

run_one() { # binary or "storescp", label
    local bin=$1 label=$2 data="$WORK/cpu-data" sp pp=
    rm -rf "$data" && mkdir -p "$data"
    if [[ "$bin" == storescp ]]; then
        # dcmtk's receiver as the same run's reference: one file per instance, no fsync
        TCP_NODELAY=1 storescp -aet SEGNODE -pdu 131072 -od "$data" $PORT >"$WORK/cpu-storescp.log" 2>&1 &
    else
        "$bin" serve --data-dir "$data" --bind 127.0.0.1 --port $PORT --http off --aet SEGNODE \
            --max-pdu 131072 --quiet-period 600 >"$WORK/cpu-segnode.log" 2>&1 &
    fi
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
    local u0 s0 f0 u1 s1 f1 t0 t1 m0 m1
    read -r u0 s0 f0 < <(awk '{print $14, $15, $10}' "/proc/$sp/stat")
    m0=$(thread_ticks "$sp" journal-materia)
    t0=$(date +%s.%N)
    send MEASURE "$WORK/cpu-measure-$N"
    t1=$(date +%s.%N)
    sleep 0.5 # the materializer's last batch
    read -r u1 s1 f1 < <(awk '{print $14, $15, $10}' "/proc/$sp/stat")
    m1=$(thread_ticks "$sp" journal-materia)
    if [[ -n "$pp" ]]; then kill -INT "$pp"; wait "$pp" || true; fi
    kill "$sp"; wait "$sp" || true
    # the CPU per instance of this run, for the medians (RUN_REST: without the materializer)
    RUN_CPU=$(per_instance $((u1 - u0 + s1 - s0)))
    RUN_REST=$(per_instance $((u1 - u0 + s1 - s0 - m1 + m0)))
    printf '%-28s user %.3f  sys %.3f  cpu %.3f  (materializer %.3f, the rest %.3f)  wall %.3f ms/instance  minflt %.1f/instance\n' \
        "$label" "$(per_instance $((u1 - u0)))" "$(per_instance $((s1 - s0)))" "$RUN_CPU" \
        "$(per_instance $((m1 - m0)))" "$RUN_REST" "$(echo "($t1 - $t0) * 1000 / $N" | bc -l)" \
        "$(echo "($f1 - $f0) / $N" | bc -l)"
}

per_instance() { ms_per_instance "$1" "$N"; } # CPU ticks of the measured stream -> ms per instance

echo "CPU per instance: $N x 132 KB over one association after a 500-instance warm-up; $ROUNDS rounds, receivers alternating (storescp: the same run's reference)"
receivers=("$@" storescp)
declare -A CPU REST # receiver's label -> its runs' CPU per instance
for r in $(seq "$ROUNDS"); do
    # the order rotates from round to round, and every run starts with no dirty pages left by
    # the one before (storescp does not sync: its writeback would fall into the next run)
    for i in $(seq 0 $((${#receivers[@]} - 1))); do
        b=${receivers[$(((r - 1 + i) % ${#receivers[@]}))]}
        rm -rf "$WORK/cpu-data"
        sync
        # and, where allowed (root), with the page cache emptied: on this VM both receivers' system
        # time per instance otherwise grows from run to run as the cache fills (2x over 6 rounds)
        [[ ! -w /proc/sys/vm/drop_caches ]] || echo 3 >/proc/sys/vm/drop_caches
        k=$(basename "$b")
        run_one "$b" "$k-$r"
        CPU[$k]+=" $RUN_CPU"
        REST[$k]+=" $RUN_REST"
    done
done
# The ratio issue 19 names: each binary's median CPU per instance against storescp's, same run.
# shellcheck disable=SC2086 # the lists are split into their numbers on purpose
ref=$(median ${CPU[storescp]})
printf 'median CPU per instance: storescp %.3f ms\n' "$ref"
for b in "$@"; do
    k=$(basename "$b")
    # shellcheck disable=SC2086
    c=$(median ${CPU[$k]}) rest=$(median ${REST[$k]})
    printf '  %-26s %.3f ms = %.2fx storescp (without the materializer: %.3f ms = %.2fx)\n' \
        "$k" "$c" "$(echo "$c / $ref" | bc -l)" "$rest" "$(echo "$rest / $ref" | bc -l)"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
