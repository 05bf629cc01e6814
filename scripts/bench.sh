#!/usr/bin/env bash
# Broker benchmarks on loopback: builds the release binary, starts a throw-away broker and runs
#   1. librdkafka producer throughput (1 KiB, acks=1, no compression, linger.ms=5, ~1 MB batches)
#   2. librdkafka produce latency at a fixed rate (1000 records/s, linger.ms=0, acks=1)
#   3. tern bench produce: fills a topic with 2 GB (10^9) of 1 KiB records
#   4. tern bench consume: reads that topic back (from page cache)
#   5. tern bench produce latency at 1000 records/s, linger.ms=0, acks=1 (Rust client)
#   6. tern bench rebalance: a 10-member group over 1,000 partitions, 20 rebalances
#   7. tern bench commits: standalone OffsetCommit throughput, 32 connections x 8 in flight
# all with --broker-pid, so each reports broker CPU-s/GB. Every step is bounded by a timeout.
# Results (BENCH_RESULT lines, broker log) go to $OUT (default: a new temp dir, printed).
#
#   scripts/bench.sh
#   SKIP_BUILD=1 TERN_BIN=/path/to/tern scripts/bench.sh
#   BYTES=500M TPUT_SECS=10 LAT_SECS=5 scripts/bench.sh      # quicker
#   PERF=1 scripts/bench.sh          # also `perf record -g` the broker during steps 1, 3 and 4
#
# Knobs: PORT (19092), BYTES (2G), TPUT_SECS (20: cap for step 1), LAT_SECS (15), RATE (1000),
# FILL_SECS (120: cap for step 3), CONSUME_SECS (60), QUIET_WAIT (300: seconds to wait for
# other compilers on the machine to finish before starting), STEP_QUIET_WAIT (60: the same
# before each step), OUT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PORT="${PORT:-19092}"
BYTES="${BYTES:-2G}"
TPUT_SECS="${TPUT_SECS:-20}"
LAT_SECS="${LAT_SECS:-15}"
RATE="${RATE:-1000}"
FILL_SECS="${FILL_SECS:-120}"
CONSUME_SECS="${CONSUME_SECS:-60}"
QUIET_WAIT="${QUIET_WAIT:-300}"
STEP_QUIET_WAIT="${STEP_QUIET_WAIT:-60}"
PERF="${PERF:-0}"
OUT="${OUT:-$(mktemp -d -t tern-bench-out.XXXXXX)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.txt"
: >"$RESULTS"

log() { printf '\n==> %s\n' "$*" >&2; }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release -p tern"
    cargo build --release -p tern
fi
TERN_BIN="${TERN_BIN:-$ROOT/target/release/tern}"
[ -x "$TERN_BIN" ] || { echo "no binary at $TERN_BIN" >&2; exit 1; }
python3 -c 'import confluent_kafka' 2>/dev/null || python3 -m pip install -q confluent-kafka

# Numbers are meaningless while something else runs on the machine (compilers, test suites):
# wait (bounded) until no compiler runs and the CPUs are >= 85% idle over 2 s.
cpu_busy_pct() {
    local a b
    read -r _ a1 a2 a3 a4 a5 a6 a7 a8 _ </proc/stat
    sleep 2
    read -r _ b1 b2 b3 b4 b5 b6 b7 b8 _ </proc/stat
    a=$((a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8)); b=$((b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8))
    echo $((100 - 100 * ((b4 + b5) - (a4 + a5)) / (b - a + 1)))
}
busy() {
    pgrep -x 'rustc|cc1|cc1plus|ld|ld.lld|mold' >/dev/null 2>&1 && return 0
    [ "$(cpu_busy_pct)" -gt 15 ]
}
waited=0
while busy && [ "$waited" -lt "$QUIET_WAIT" ]; do
    [ "$waited" = 0 ] && log "waiting up to ${QUIET_WAIT}s for other builds on this machine to finish"
    sleep 3
    waited=$((waited + 5))
done
if busy; then
    log "WARNING: other compilers still running; results will be disturbed"
    echo "# WARNING: other builds were running during this benchmark" >>"$RESULTS"
fi

DATA="$(mktemp -d -t tern-bench-data.XXXXXX)"
BROKER_PID=""
PERF_PID=""
cleanup() {
    [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null || true
    if [ -n "$BROKER_PID" ]; then
        kill "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
    fi
    rm -rf "$DATA"
}
trap cleanup EXIT INT TERM

log "starting broker on 127.0.0.1:$PORT (data in $DATA)"
# The rebalance benchmark measures the protocol, not Kafka's 3000 ms wait for a new group's
# first members (group.initial.rebalance.delay.ms), which every round would otherwise include.
RUST_LOG="${RUST_LOG:-warn}" "$TERN_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" \
    --set group.initial.rebalance.delay.ms=0 >"$OUT/broker.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
    kill -0 "$BROKER_PID" 2>/dev/null || { cat "$OUT/broker.log" >&2; exit 1; }
    sleep 0.1
done
BS="127.0.0.1:$PORT"

{
    echo "# $(date -u +%FT%TZ) $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') $(uname -srm)"
    echo "# cpus=$(nproc) $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') mem=$(free -g | awk '/Mem:/{print $2}')G"
    echo "# loadavg before: $(cut -d' ' -f1-3 /proc/loadavg)"
} >>"$RESULTS"

perf_start() {
    if [ "$PERF" = 1 ] && command -v perf >/dev/null; then
        perf record -F 499 -g -p "$BROKER_PID" -o "$OUT/perf-$1.data" >/dev/null 2>&1 &
        PERF_PID=$!
        sleep 0.5
    fi
}
perf_stop() {
    if [ -n "$PERF_PID" ]; then
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait "$PERF_PID" 2>/dev/null || true
        PERF_PID=""
    fi
}

# step NAME TIMEOUT CMD...: runs CMD bounded, tees output, keeps its BENCH_RESULT line.
step() {
    local name="$1" limit="$2" w=0 pct
    shift 2
    # Other load on the machine (outside this script) before the step, waited out up to
    # STEP_QUIET_WAIT seconds and recorded next to the result.
    pct=$(cpu_busy_pct)
    while [ "$pct" -gt 15 ] && [ "$w" -lt "$STEP_QUIET_WAIT" ]; do
        w=$((w + 2)); pct=$(cpu_busy_pct)
    done
    echo "# $name: machine CPU busy before start: ${pct}% (waited ${w}s)" >>"$RESULTS"
    log "$name: $*"
    local rc=0
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || rc=$?
    grep '^BENCH_RESULT' "$OUT/$name.log" | sed "s/^BENCH_RESULT/BENCH_RESULT step=$name/" >>"$RESULTS" || true
    [ "$rc" = 0 ] || echo "# $name exited with $rc" | tee -a "$RESULTS" >&2
}

perf_start rdkafka-throughput
step rdkafka-throughput $((TPUT_SECS + 150)) \
    python3 scripts/bench_librdkafka.py throughput -b "$BS" --bytes "$BYTES" --duration "$TPUT_SECS" \
    --broker-pid "$BROKER_PID"
perf_stop

step rdkafka-latency $((LAT_SECS + 60)) \
    python3 scripts/bench_librdkafka.py latency -b "$BS" --rate "$RATE" --duration "$LAT_SECS" \
    --broker-pid "$BROKER_PID"

perf_start tern-produce
step tern-produce $((FILL_SECS + 60)) \
    "$TERN_BIN" bench produce -b "$BS" --topic tern-bench-fill --bytes "$BYTES" --record-size 1024 \
    --acks 1 --linger-ms 5 --batch-size 1048576 --duration-secs "$FILL_SECS" --broker-pid "$BROKER_PID"
perf_stop

perf_start tern-consume
step tern-consume $((CONSUME_SECS + 60)) \
    "$TERN_BIN" bench consume -b "$BS" --topic tern-bench-fill --duration-secs "$CONSUME_SECS" \
    --broker-pid "$BROKER_PID"
perf_stop

step tern-latency $((LAT_SECS + 60)) \
    "$TERN_BIN" bench produce -b "$BS" --topic tern-bench-latency --rate "$RATE" \
    --records $((RATE * LAT_SECS)) --linger-ms 0 --acks 1 --broker-pid "$BROKER_PID"

step group-rebalance 120 \
    "$TERN_BIN" bench rebalance -b "$BS" --members 10 --topics 10 --partitions 100 --rounds 20

step group-commits 60 \
    "$TERN_BIN" bench commits -b "$BS" --connections 32 --inflight 8 --duration-secs 10

echo "# loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RESULTS"
log "results ($RESULTS):"
cat "$RESULTS"
