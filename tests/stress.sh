#!/usr/bin/env bash
# Runs the whole test suite N times in a row (default 5) while a CPU hog keeps both cores busy,
# to catch tests whose timing only holds on an idle machine.
#
#   bash tests/stress.sh [ROUNDS] [-- extra cargo test args]
#
# The hog is `stress-ng --cpu <cores>` (Debian package `stress-ng`, installed with apt-get if
# missing), bounded in time (STRESS_TIMEOUT_S, default 2 h) and killed when this script exits.
# Everything listens on 127.0.0.1 only. Stops at the first failing round; exit status is that
# round's. The build happens once, before the hog starts.
set -euo pipefail

ROUNDS="${1:-5}"
shift || true
[[ "${1:-}" == "--" ]] && shift
CORES="${STRESS_CPUS:-$(nproc)}"
TIMEOUT_S="${STRESS_TIMEOUT_S:-7200}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

if ! command -v stress-ng >/dev/null 2>&1; then
    echo "stress.sh: installing stress-ng" >&2
    if [[ "$(id -u)" -eq 0 ]]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq stress-ng
fi

echo "stress.sh: building the tests first (no hog yet)" >&2
cargo test --workspace --no-run "$@"

HOG_PID=""
cleanup() {
    if [[ -n "$HOG_PID" ]] && kill -0 "$HOG_PID" 2>/dev/null; then
        kill "$HOG_PID" 2>/dev/null || true
        wait "$HOG_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT INT TERM

stress-ng --cpu "$CORES" --timeout "${TIMEOUT_S}s" --quiet &
HOG_PID=$!
echo "stress.sh: stress-ng --cpu $CORES running as pid $HOG_PID (at most ${TIMEOUT_S}s)" >&2

for round in $(seq 1 "$ROUNDS"); do
    echo "stress.sh: round $round/$ROUNDS" >&2
    start=$(date +%s)
    if ! cargo test --workspace "$@"; then
        echo "stress.sh: round $round FAILED after $(( $(date +%s) - start )) s" >&2
        exit 1
    fi
    echo "stress.sh: round $round passed in $(( $(date +%s) - start )) s" >&2
done
echo "stress.sh: all $ROUNDS rounds passed under load" >&2
