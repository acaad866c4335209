#!/usr/bin/env bash
# Ingest benchmark: segnode serve (fsyncs every instance before answering) vs dcmtk storescp
# (no fsync), the same N MR instances sent by the same storescu command, alternating rounds.
#
#   bench/ingest/run.sh [N]          N instances (default 500), ROUNDS=3 rounds each receiver
#   ASSOCIATIONS=4 bench/ingest/run.sh   the same files over 4 storescu associations at once
#                                        (storescp then runs with --fork)
#   ORTHANC=1 bench/ingest/run.sh        Orthanc (1.10, its defaults: each storage file synced, the
#                                        SQLite index not synced per instance) as a fourth receiver in
#                                        every round, and the ratio segnode / Orthanc (issue 19's record
#                                        of the peers a user would pick instead; plain TCP only)
#   TLS=1 bench/ingest/run.sh            DICOM TLS on every side (issue 16): storescu +tls against
#                                        storescp +tls and against segnode --tls-cert/--tls-key
#                                        (plain TCP off), mutual TLS on both (a client certificate
#                                        required and checked against the same CA); the CA and
#                                        the certificates are made with openssl for the run
#
# Instances: make_series.py --size 256, 16-bit MR, explicit VR LE, ~130 KB each (128 KiB of
# pixels + header), 4 series of N/4 slices (1 series of N if N is not a multiple of 4).
# Environment: ROUNDS (default 3), BENCH_WORK (work folder; default target/bench-ingest, the
# same disk for both receivers), SEGNODE_BIN (default: release build, built if missing),
# STRACE=1 (one extra segnode round under `strace -c -f`, summary printed at the end),
# WRAP=eatmydata (segnode's fsyncs become no-ops: what its receive path costs without durability),
# WARM=1 (segnode keeps its journal across rounds, so from round 2 on its journal segments
# are recycled ones, as on a node that has been running; everything else of the data folder,
# the staged instances and the re-send registry included, is removed between rounds, so every
# round stores all N instances again).
#
# With one association each round also prints the receiver's CPU per instance (user + system of
# its process, every thread: segnode's journal materializer included), and at the end the medians'
# ratio segnode / storescp (issue 19's "CPU per instance"). On this VM both receivers' system time
# grows from round to round as the page cache fills (storescp 0.37 -> 0.99 ms over six runs in
# session 17): bench/ingest/cpu.sh empties the cache before every run and splits segnode's CPU
# between the acknowledgement path and the journal materializer; take its figure for the ratio.
#
# A third receiver, storescp --ignore (receives, stores nothing), gives the floor: storescu, the
# network and DIMSE alone. With the disk's fdatasync for one 132 KB append (probed before and after
# the rounds) it bounds what any receiver that syncs every instance can reach on this machine:
#   best ratio = storescp time / (floor time + fdatasync time), per instance.
# The journal's append is one O_DIRECT | O_DSYNC write where the file system allows it, which is
# faster than append + fdatasync on some disks, so the same bound is printed with that write too
# (and segnode's share of it: (floor + direct write) / segnode time).
#
# Both receivers and storescu run inside a private network namespace (`unshare -n`, loopback
# only) when the kernel allows it, because storescp 3.6.7 cannot be told to bind 127.0.0.1;
# otherwise they run in the host namespace (storescp then listens on 0.0.0.0 for the run).
set -euo pipefail

N="${1:-500}"
ROUNDS="${ROUNDS:-3}"
ASSOCIATIONS="${ASSOCIATIONS:-1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="${BENCH_WORK:-$ROOT/target/bench-ingest}"
PY="$ROOT/.venv-peers/bin/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/fdn}"
BIN="${SEGNODE_BIN:-$CARGO_TARGET_DIR/release/segnode}"
PDU=131072
source "$ROOT/bench/lib.sh"

# ---- set-up (host namespace: may build, may need the network) -------------------------
if [[ -z "${_INGEST_IN_NETNS:-}" ]]; then
    for t in storescu storescp echoscu; do
        # dcmtk's, not the peers venv's pynetdicom apps of the same name
        command -v "$t" >/dev/null || { echo "dcmtk's $t is missing: apt-get install dcmtk" >&2; exit 1; }
    done
    if [[ -n "${ORTHANC:-}" ]]; then
        command -v Orthanc >/dev/null || { echo "ORTHANC=1 needs Orthanc: apt-get install orthanc" >&2; exit 1; }
        [[ -z "${TLS:-}" ]] || { echo "ORTHANC=1 runs over plain TCP only: unset TLS" >&2; exit 1; }
    fi
    [[ -x "$PY" ]] || { echo "$PY missing: run scripts/install-test-deps.sh" >&2; exit 1; }
    if [[ -n "${TLS:-}" ]]; then
        command -v openssl >/dev/null || { echo "TLS=1 needs openssl: apt-get install openssl" >&2; exit 1; }
        # a throwaway PKI for this run, as the tls conformance tests make theirs: EC P-256, a CA,
        # the receiver's certificate for 127.0.0.1, one client certificate (never committed)
        T="$WORK/tls"
        rm -rf "$T" && mkdir -p "$T"
        (
            cd "$T"
            key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
            openssl req -x509 "${key[@]}" -keyout ca.key -out ca.pem -subj /CN=bench-ca -days 2 2>/dev/null
            echo "subjectAltName=IP:127.0.0.1" >server.ext
            echo "extendedKeyUsage=clientAuth" >client.ext
            for who in server client; do
                openssl req "${key[@]}" -keyout "$who.key" -out "$who.csr" -subj "/O=Bench/CN=$who" 2>/dev/null
                openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
                    -out "$who.pem" -days 2 -extfile "$who.ext" 2>/dev/null
            done
        ) || { echo "making the TLS certificates failed" >&2; exit 1; }
    fi
    if [[ ! -x "$BIN" ]]; then
        echo "building $BIN (release) ..." >&2
        (cd "$ROOT" && cargo build --release -p segnode)
    fi
    mkdir -p "$WORK"
    INPUT="$WORK/input-$N"
    if [[ "$(find "$INPUT" -name '*.dcm' 2>/dev/null | wc -l)" -ne "$N" ]]; then
        rm -rf "$INPUT"
        if (( N % 4 == 0 )); then series=4; slices=$((N / 4)); else series=1; slices=$N; fi
        echo "generating $N instances ($series series x $slices slices, 256x256 16-bit) ..." >&2
        "$PY" "$ROOT/conformance/tools/make_series.py" "$INPUT" --size 256 --slices "$slices" \
            --series "$series" --seed 7 >/dev/null
    fi
    export SEGNODE_BIN="$BIN"
    in_private_netns _INGEST_IN_NETNS "$@"
fi

# ---- measurement ------------------------------------------------------------------------
INPUT="$WORK/input-$N"
# TLS=1: the same options for every dcmtk client (echoscu, storescu) and every storescp
SCU_TLS=()
SCP_TLS=()
SEG_LISTEN=()
if [[ -n "${TLS:-}" ]]; then
    T="$WORK/tls"
    SCU_TLS=(+tls "$T/client.key" "$T/client.pem" +cf "$T/ca.pem")
    SCP_TLS=(+tls "$T/server.key" "$T/server.pem" +cf "$T/ca.pem")
fi
FILES=$(find "$INPUT" -name '*.dcm' | wc -l)
BYTES=$(find "$INPUT" -name '*.dcm' -printf '%s\n' | awk '{s+=$1} END {print s}')
[[ "$FILES" -eq "$N" ]] || { echo "expected $N input files, found $FILES" >&2; exit 1; }

PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # port aet
    for _ in $(seq 1 300); do
        if TCP_NODELAY=1 echoscu "${SCU_TLS[@]}" -aet BENCH -aec "$2" 127.0.0.1 "$1" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "nothing answered C-ECHO on port $1" >&2
    return 1
}

stop() { # pid (under strace: the tracer, whose child is segnode)
    local c
    for c in $(ps -o pid= --ppid "$1"); do kill "$c" 2>/dev/null || true; done
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local keep=()
    for p in "${PIDS[@]}"; do [[ "$p" != "$1" ]] && keep+=("$p"); done
    PIDS=("${keep[@]}")
}

send() { # port aet -> prints seconds
    local t0 t1 k pids=() failed=0
    t0=$(date +%s.%N)
    if (( ASSOCIATIONS == 1 )); then
        TCP_NODELAY=1 storescu "${SCU_TLS[@]}" -aet BENCH -aec "$2" -pdu $PDU +sd +r 127.0.0.1 "$1" "$INPUT" \
            >"$WORK/storescu.log" 2>&1 || { echo "storescu failed:" >&2; tail -5 "$WORK/storescu.log" >&2; return 1; }
    else
        # the same files split round-robin over ASSOCIATIONS storescu processes at once
        for k in $(seq 0 $((ASSOCIATIONS - 1))); do
            find "$INPUT" -name '*.dcm' | sort | awk -v k="$k" -v n="$ASSOCIATIONS" 'NR % n == k' \
                | TCP_NODELAY=1 xargs storescu "${SCU_TLS[@]}" -aet BENCH -aec "$2" -pdu $PDU 127.0.0.1 "$1" \
                >"$WORK/storescu-$k.log" 2>&1 &
            pids+=($!)
        done
        for p in "${pids[@]}"; do wait "$p" || failed=1; done
        (( failed == 0 )) || { echo "a storescu failed:" >&2; tail -3 "$WORK"/storescu-*.log >&2; return 1; }
    fi
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

# one timed run against a receiver started as `pid` on `port`: wait for its C-ECHO, time the
# storescu command(s) into SECS, stop it (not run in a subshell, so the EXIT trap sees PIDS)
# With one association (and no WRAP) it also sets CPUMS: the receiver's CPU (user + system, every
# thread) per instance from the start of the send to 0.5 s after its end (segnode's journal
# materializer writes its last batch when the stream pauses); "-" otherwise.
measure() { # pid port aet
    PIDS+=("$1")
    wait_ready "$2" "$3" || return 1
    local c0
    c0=$(cpu_ticks "/proc/$1")
    SECS=$(send "$2" "$3") || return 1
    CPUMS=-
    if (( ASSOCIATIONS == 1 )) && [[ -z "${WRAP:-}" ]]; then
        sleep 0.5
        CPUMS=$(ms_per_instance $(($(cpu_ticks "/proc/$1") - c0)) "$N" | xargs printf '%.3f')
    fi
    stop "$1"
}

arrived() { # receiver count
    [[ "$2" -eq "$N" ]] || { echo "$1: $2 of $N instances arrived" >&2; return 1; }
}

# one round against one receiver; sets SECS
round_segnode() {
    local port dir pid got
    port=$(free_port)
    dir="$WORK/segnode-data"
    # WARM=1: keep the data folder from round to round, as a running node would: the ingest
    # journal then overwrites the segments it recycled instead of appending to new files
    [[ -n "${WARM:-}" ]] || rm -rf "$dir"
    if [[ -n "${TLS:-}" ]]; then
        SEG_LISTEN=(--port 0 --tls-port "$port" --tls-cert "$T/server.pem" --tls-key "$T/server.key"
            --tls-client-ca "$T/ca.pem")
    else
        SEG_LISTEN=(--port "$port")
    fi
    ${WRAP:-} "$SEGNODE_BIN" serve --data-dir "$dir" --bind 127.0.0.1 "${SEG_LISTEN[@]}" --http off \
        --aet SEGNODE --max-pdu $PDU --quiet-period 600 >"$WORK/segnode.log" 2>&1 &
    pid=$!
    measure "$pid" "$port" SEGNODE || return 1
    # counted after a graceful stop: acknowledged instances sit in the ingest journal until
    # the stream pauses, and the stop moves them into their study folders, and since the drain
    # on SIGTERM (issue 13) stages them into the store: count distinct instances in both
    got=$(find "$dir/spool" "$dir/store/incoming" -name '*.dcm' -not -path '*/.incoming/*' \
        -not -path '*/jobs/*' -printf '%f\n' 2>/dev/null | sort -u | wc -l)
    if [[ -n "${WARM:-}" ]]; then
        # keep only the journal's segments: the next round's instances must be stored again,
        # not answered as identical re-sends of staged ones (the re-send policy, issue 16)
        find "$dir" -mindepth 1 -maxdepth 1 -not -name spool -exec rm -rf {} +
        find "$dir/spool" -mindepth 1 -maxdepth 1 -not -name .journal -exec rm -rf {} +
    else
        rm -rf "$dir"
    fi
    arrived segnode "$got"
}

round_storescp() {
    local port dir pid got
    port=$(free_port)
    dir="$WORK/storescp-out"
    rm -rf "$dir"
    mkdir -p "$dir"
    local fork=()
    (( ASSOCIATIONS > 1 )) && fork=(--fork) # one process per association, so they run at once
    TCP_NODELAY=1 storescp "${fork[@]}" "${SCP_TLS[@]}" -aet BENCHSCP -pdu $PDU -od "$dir" "$port" >"$WORK/storescp.log" 2>&1 &
    pid=$!
    measure "$pid" "$port" BENCHSCP || return 1
    got=$(find "$dir" -type f | wc -l)
    rm -rf "$dir"
    arrived storescp "$got"
}

# Orthanc with its default durability (StorageCompression off, SyncStorageArea on) and the same
# maximum PDU; no HTTP server, no plugins. TCP_NODELAY=1 reaches the DCMTK inside Orthanc as it
# does storescp: without it each C-STORE response waited for the peer's delayed ACK (~40 ms,
# 21 instances/s in a first run)
round_orthanc() {
    local port dir pid got
    port=$(free_port)
    dir="$WORK/orthanc-data"
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/orthanc.json" <<JSON
{ "Name": "BENCH", "StorageDirectory": "$dir/storage", "IndexDirectory": "$dir/index",
  "DicomAet": "ORTHANC", "DicomPort": $port, "DicomCheckCalledAet": false,
  "DicomAlwaysAllowEcho": true, "DicomAlwaysAllowStore": true, "MaximumPduLength": $PDU,
  "HttpServerEnabled": false, "RemoteAccessAllowed": false, "StorageCompression": false,
  "SyncStorageArea": true, "Plugins": [] }
JSON
    TCP_NODELAY=1 Orthanc "$dir/orthanc.json" >"$WORK/orthanc.log" 2>&1 &
    pid=$!
    measure "$pid" "$port" ORTHANC || return 1
    got=$(find "$dir/storage" -type f | wc -l)
    rm -rf "$dir"
    arrived Orthanc "$got"
}

# storescu against a receiver that stores nothing: the floor for every receiver
round_floor() {
    local port pid
    port=$(free_port)
    local fork=()
    (( ASSOCIATIONS > 1 )) && fork=(--fork)
    TCP_NODELAY=1 storescp "${fork[@]}" "${SCP_TLS[@]}" --ignore -aet BENCHSCP -pdu $PDU "$port" >"$WORK/floor.log" 2>&1 &
    pid=$!
    measure "$pid" "$port" BENCHSCP || return 1
}

echo "ingest: $N instances, $(echo "$BYTES / 1000000" | bc -l | xargs printf '%.1f') MB" \
    "($(echo "$BYTES / $N / 1000" | bc -l | xargs printf '%.0f') KB each), $ROUNDS rounds," \
    "storescu -pdu $PDU, TCP_NODELAY=1, $ASSOCIATIONS association(s) at once"
if [[ -n "${TLS:-}" ]]; then
    echo "DICOM TLS on every side (mutual TLS, EC P-256 certificates made for this run);" \
        "protocol and cipher as negotiated by storescu (dcmtk BCP 195 profile) with each receiver"
fi
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "segnode: $SEGNODE_BIN (fsync per instance); storescp: $(command -v storescp) (no fsync)"
echo "work dir: $WORK ($(df -P "$WORK" | awk 'NR==2 {print $1}'))"
# What the disk allows right now: the durable path per instance (write, fsync, rename,
# fsync of the folder) against a plain write, 132 KB x 200, in the same work dir. fsync latency
# on a shared disk moves with other writers, so read the ratio next to this probe (taken before
# and after the rounds).
disk_probe() { # label
"$PY" - "$WORK/fsync-probe" "$1" "$WORK/fdatasync-ms" "$WORK/direct-ms" <<'PYEOF'
import mmap, os, shutil, sys, time
d = sys.argv[1]; data = os.urandom(132000); n = 200
def probe(durable):
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    t = time.time()
    for i in range(n):
        p = f"{d}/{i}.part"
        with open(p, "wb") as f:
            f.write(data)
            if durable: os.fsync(f.fileno())
        os.rename(p, f"{d}/{i}.dcm")
        if durable:
            fd = os.open(d, os.O_RDONLY); os.fsync(fd); os.close(fd)
    return (time.time() - t) / n * 1000
def append_probe():
    # what the ingest journal does per instance: append one record, fdatasync
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    fd = os.open(f"{d}/segment", os.O_WRONLY | os.O_CREAT, 0o644)
    t = time.time()
    for i in range(n):
        os.pwrite(fd, data, i * len(data))
        os.fdatasync(fd)
    os.close(fd)
    return (time.time() - t) / n * 1000
def direct_probe():
    # what the journal does since session 14: one O_DIRECT | O_DSYNC write of the record padded
    # to 4 KiB, from an aligned buffer (an anonymous mmap is page-aligned)
    shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    span = -(-len(data) // 4096) * 4096
    buf = mmap.mmap(-1, span); buf[:len(data)] = data
    try:
        fd = os.open(f"{d}/segment", os.O_WRONLY | os.O_CREAT | os.O_DIRECT | os.O_DSYNC, 0o644)
    except OSError:
        return float("nan")  # no direct I/O here: the journal falls back to append+fdatasync
    t = time.time()
    for i in range(n):
        os.pwrite(fd, buf, i * span)
    os.close(fd)
    return (time.time() - t) / n * 1000
a, b, c, e = probe(True), probe(False), append_probe(), direct_probe()
shutil.rmtree(d)
print(f"disk probe ({sys.argv[2]}, python): write+fsync+rename+fsync(dir) {a:.2f} ms/instance; "
      f"write+rename without sync {b:.2f} ms; append+fdatasync {c:.2f} ms; direct O_DSYNC write {e:.2f} ms")
with open(sys.argv[3], "a") as f:
    print(c, file=f)
with open(sys.argv[4], "a") as f:
    print(c if e != e else e, file=f)
PYEOF
}

rm -f "$WORK/fdatasync-ms" "$WORK/direct-ms"
disk_probe "before the rounds"
printf '%-6s %-9s %9s %11s %9s %13s\n' round receiver seconds inst/s MB/s "cpu ms/inst"
SEG=()
SCP=()
SEGC=()
SCPC=()
FLOOR=()
ORT=()
rate() { echo "$N / $1" | bc -l | xargs printf '%.1f'; }
mbs() { echo "$BYTES / 1000000 / $1" | bc -l | xargs printf '%.1f'; }
for r in $(seq 1 "$ROUNDS"); do
    # rotate which receiver goes first, so none always gets the warmer cache
    receivers=(segnode storescp floor)
    [[ -z "${ORTHANC:-}" ]] || receivers+=(orthanc)
    order=""
    for i in $(seq 0 $((${#receivers[@]} - 1))); do
        order="$order ${receivers[$(((r - 1 + i) % ${#receivers[@]}))]}"
    done
    for who in $order; do
        # start every round with no dirty pages left by the previous one: storescp does not
        # sync, so writeback of its files could otherwise fall into the next receiver's round
        sync
        "round_$who" || exit 1
        s=$SECS
        printf '%-6s %-9s %9.3f %11s %9s %13s\n' "$r" "$who" "$s" "$(rate "$s")" "$(mbs "$s")" "$CPUMS"
        case $who in
            segnode) SEG+=("$s"); SEGC+=("$CPUMS") ;;
            storescp) SCP+=("$s"); SCPC+=("$CPUMS") ;;
            floor) FLOOR+=("$s") ;;
            orthanc) ORT+=("$s") ;;
        esac
    done
done

seg_med=$(median "${SEG[@]}")
scp_med=$(median "${SCP[@]}")
echo "median  segnode   $(printf '%9.3f' "$seg_med") $(printf '%11s' "$(rate "$seg_med")") $(printf '%9s' "$(mbs "$seg_med")")"
echo "median  storescp  $(printf '%9.3f' "$scp_med") $(printf '%11s' "$(rate "$scp_med")") $(printf '%9s' "$(mbs "$scp_med")")"
echo "ratio segnode / storescp (median instances/s): $(echo "$scp_med / $seg_med" | bc -l | xargs printf '%.2f')"
if [[ "${SEGC[0]}" != - ]]; then
    segc_med=$(median "${SEGC[@]}")
    scpc_med=$(median "${SCPC[@]}")
    echo "CPU per instance (median): segnode $(printf '%.3f' "$segc_med") ms, storescp $(printf '%.3f' "$scpc_med") ms:" \
        "segnode / storescp $(echo "$segc_med / $scpc_med" | bc -l | xargs printf '%.2f')"
fi
if [[ -n "${ORTHANC:-}" ]]; then
    ort_med=$(median "${ORT[@]}")
    echo "median  orthanc   $(printf '%9.3f' "$ort_med") $(printf '%11s' "$(rate "$ort_med")") $(printf '%9s' "$(mbs "$ort_med")")"
    echo "ratio segnode / Orthanc (median instances/s): $(echo "$ort_med / $seg_med" | bc -l | xargs printf '%.2f')"
fi

disk_probe "after the rounds"
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
floor_med=$(median "${FLOOR[@]}")
echo "median  floor     $(printf '%9.3f' "$floor_med") $(printf '%11s' "$(rate "$floor_med")")   (storescp --ignore: receives, stores nothing)"
sync_ms=$(median $(cat "$WORK/fdatasync-ms"))
ms() { echo "$1 * 1000 / $N" | bc -l | xargs printf '%.3f'; }
echo "per instance: storescp $(ms "$scp_med") ms, floor $(ms "$floor_med") ms, append+fdatasync $(printf '%.3f' "$sync_ms") ms," \
    "segnode $(ms "$seg_med") ms"
echo "best ratio for a receiver that syncs every instance here: storescp / (floor + fdatasync) =" \
    "$(echo "$scp_med * 1000 / $N / ($floor_med * 1000 / $N + $sync_ms)" | bc -l | xargs printf '%.2f')"
# the same bound with the faster durable append the journal uses where the file system allows
direct_ms=$(median $(cat "$WORK/direct-ms"))
echo "  with a direct O_DSYNC write ($(printf '%.3f' "$direct_ms") ms) instead: storescp / (floor + direct write) =" \
    "$(echo "$scp_med * 1000 / $N / ($floor_med * 1000 / $N + $direct_ms)" | bc -l | xargs printf '%.2f');" \
    "segnode's share of that bound: $(echo "($floor_med * 1000 / $N + $direct_ms) / ($seg_med * 1000 / $N) * 100" | bc -l | xargs printf '%.0f') %"
if [[ -n "${STRACE:-}" ]]; then
    command -v strace >/dev/null || { echo "STRACE=1 needs strace" >&2; exit 1; }
    WRAP="strace -c -f -o $WORK/strace-segnode.txt"
    round_segnode || exit 1
    s=$SECS
    echo "under strace -c -f (not comparable): $(rate "$s") inst/s; summary:"
    head -25 "$WORK/strace-segnode.txt"
fi
