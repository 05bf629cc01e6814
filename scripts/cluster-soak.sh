#!/usr/bin/env bash
# The long run of the cluster fault suite (tests/cluster/test_faults.py): the short schedule
# that CI runs, then faults picked at random from a seed (leader kill -9 and restart, SIGSTOP
# of a leader for 5-15 s, a network partition of a leader for 5-15 s, every node kill -9) under
# the recorded workload until DURATION seconds have passed; then the history is checked.
#
#   scripts/cluster-soak.sh [DURATION_SECONDS [SEED]]     # default 1800 s, a random seed
#
# The history (every send, ack, read, commit and fault) is kept as
# $TERN_HISTORY_DIR/history-SEED.jsonl (default target/soak/); `python3 tests/cluster/history.py
# FILE` checks a saved one again, and the same SEED replays the same fault schedule. Needs root
# (network namespaces), like CI; installs nothing: run scripts/test.sh once first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

DURATION="${1:-1800}"
SEED="${2:-$(python3 -c 'import random; print(random.randrange(1 << 32))')}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR="$ROOT/$TARGET_DIR" ;;
esac
export TERN_BIN="${TERN_BIN:-$TARGET_DIR/release/tern}"
export TERN_HISTORY_DIR="${TERN_HISTORY_DIR:-$TARGET_DIR/soak}"
export TERN_SOAK_SECONDS="$DURATION" TERN_FAULT_SEED="$SEED"

cargo build --release -p tern
echo "soak: ${DURATION} s, seed ${SEED}, history in ${TERN_HISTORY_DIR}" >&2
started=$(date +%s)
status=0
timeout --kill-after=60 $((DURATION * 2 + 1200)) python3 -m pytest -q -rfE -s -p no:cacheprovider \
    --timeout=$((DURATION * 2 + 900)) "tests/cluster/test_faults.py::test_faults_under_a_recorded_workload" \
    || status=$?
echo "soak: exit ${status} after $(( $(date +%s) - started )) s; seed ${SEED}; history ${TERN_HISTORY_DIR}/history-${SEED}.jsonl" >&2
exit "$status"
