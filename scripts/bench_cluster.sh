#!/usr/bin/env bash
# Replication cost on this machine: the same `tern bench produce` against a single node with
# acks=1 and against a local 3-node cluster (`tern cluster up`) with RF 3, min.insync.replicas=2
# and acks=all; then acks=all latency at a fixed 20 MB/s; then leader kill to producer
# resuming (scripts/bench_failover.py). Everything runs on 127.0.0.1 and is stopped at the end.
#
#   scripts/bench_cluster.sh            # results on stdout, logs under target/bench-cluster/
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
export TERN_BIN="${TERN_BIN:-$TARGET_DIR/release/tern}"
T="$TERN_BIN"
WORK="$TARGET_DIR/bench-cluster"
rm -rf "$WORK" && mkdir -p "$WORK"
cargo build --release -p tern >&2

BYTES="${BYTES:-1G}"
DURATION="${DURATION:-20}"
bench() { "$T" bench produce --record-size 1024 --linger-ms 5 --batch-size 1048576 --duration-secs "$DURATION" "$@"; }

echo "== single node, acks=1, 3 partitions"
"$T" serve --listen 127.0.0.1:19192 --data-dir "$WORK/single" > "$WORK/single.log" 2>&1 &
SINGLE=$!
trap 'kill $SINGLE 2>/dev/null || true; "$T" cluster down --dir "$WORK/cluster" >/dev/null 2>&1 || true' EXIT
sleep 1
bench -b 127.0.0.1:19192 --topic single --partitions 3 --bytes "$BYTES" --acks 1 --broker-pid "$SINGLE"
kill "$SINGLE"; wait "$SINGLE" 2>/dev/null || true

echo "== 3-node cluster, RF 3, min.insync.replicas=2, acks=all, 3 partitions"
BOOT=$("$T" cluster up --nodes 3 --dir "$WORK/cluster")
"$T" topic create -b "$BOOT" rf3 -p 3 -r 3 --config min.insync.replicas=2 >&2
bench -b "$BOOT" --topic rf3 --bytes "$BYTES" --acks -1

echo "== 3-node cluster, acks=all at a fixed 20 MB/s (20480 records/s of 1 KiB)"
"$T" topic create -b "$BOOT" rf3-rate -p 3 -r 3 --config min.insync.replicas=2 >&2
bench -b "$BOOT" --topic rf3-rate --records $((20480 * DURATION)) --rate 20480 --acks -1
"$T" cluster down --dir "$WORK/cluster" >&2

echo "== leader kill to producer resuming"
python3 scripts/bench_failover.py --trials "${TRIALS:-5}"
