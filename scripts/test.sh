#!/usr/bin/env bash
# The project's test command: installs what the tests need (idempotently), builds the
# broker, runs the Rust test suite, the Python client-compatibility suite (tests/compat), the
# fault-injection suite (tests/faults) and the replicated-cluster suite (tests/cluster).
#
#   scripts/test.sh                 # everything
#   PYTEST_ARGS="-k kcat" scripts/test.sh   # extra pytest arguments
#   SKIP_RUST_TESTS=1 scripts/test.sh        # only build + the Python suites
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '\n==> %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
fi

# ---------------------------------------------------------------- dependencies
APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

if ! command -v kcat >/dev/null 2>&1 && ! command -v kafkacat >/dev/null 2>&1; then
    log "installing kcat"
    apt_install kcat
fi

# The fault suite: strace (directory fsyncs), prlimit (open-file limits), gcc (an fsync-failure
# shim), mount (a small tmpfs for the full-disk scenarios; needs root, as CI runs); the cluster
# fault suite: ip (network namespaces and veth pairs for partitions; needs CAP_NET_ADMIN).
need_apt=()
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
command -v prlimit >/dev/null 2>&1 || need_apt+=(util-linux)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
if [ "${#need_apt[@]}" -gt 0 ]; then
    log "installing ${need_apt[*]}"
    apt_install "${need_apt[@]}"
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
    log "installing pip"
    apt_install python3-pip
fi

# python module -> pip package
PY_DEPS=(
    "confluent_kafka:confluent-kafka"
    "kafka.protocol.old:kafka-python>=3"
    "pytest:pytest"
    "pytest_timeout:pytest-timeout"
    "snappy:python-snappy"
    "lz4:lz4"
    "zstandard:zstandard"
)
missing=()
for dep in "${PY_DEPS[@]}"; do
    mod="${dep%%:*}"
    pkg="${dep#*:}"
    if ! python3 -c "import ${mod}" >/dev/null 2>&1; then
        missing+=("$pkg")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "pip installing: ${missing[*]}"
    if ! python3 -m pip install -q "${missing[@]}"; then
        # Debian's system Python is "externally managed" (PEP 668).
        python3 -m pip install -q --break-system-packages "${missing[@]}"
    fi
fi

# ---------------------------------------------------------------- build
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in
    /*) ;;
    *) TARGET_DIR="$ROOT/$TARGET_DIR" ;;
esac
export TERN_BIN="${TERN_BIN:-$TARGET_DIR/release/tern}"

log "cargo build --release -p tern"
cargo build --release -p tern

# ---------------------------------------------------------------- rust tests
if [ "${SKIP_RUST_TESTS:-0}" != "1" ]; then
    if cargo nextest --version >/dev/null 2>&1; then
        log "cargo nextest run --workspace --cargo-profile release"
        cargo nextest run --workspace --cargo-profile release --no-tests=warn
    else
        log "cargo test --workspace --release"
        cargo test --workspace --release
    fi
fi

# ---------------------------------------------------------------- client compatibility
log "python3 -m pytest -q tests/compat tests/faults  (TERN_BIN=$TERN_BIN)"
# Every test is bounded (client calls carry their own timeouts); pytest-timeout (per test) and
# timeout(1) (whole suite) are backstops.
# shellcheck disable=SC2086
timeout --kill-after=60 1200 python3 -m pytest -q --timeout=300 -rfE tests/compat tests/faults ${PYTEST_ARGS:-}

# ---------------------------------------------------------------- replicated cluster
# A separate session: tests/cluster has its own conftest (3-node clusters via `tern cluster up`).
log "python3 -m pytest -q tests/cluster  (TERN_BIN=$TERN_BIN)"
# (PYTEST_ARGS select within tests/compat and tests/faults only.)
timeout --kill-after=60 900 python3 -m pytest -q --timeout=420 -rfE tests/cluster
