#!/usr/bin/env bash
# The chaos report: every upstream fault and client abuse case (tests/src/chaos) run once
# against the release gateway, each in a fresh gateway process. Writes the table (case,
# expected, observed, requests lost, the gateway's RSS before / peak / after) to
# bench/results/chaos-<date>.md and exits 1 if a case failed. Loopback only; about 1 minute
# once built. CI runs the subset marked `ci` in-process (tests/tests/chaos.rs).
#
#   bash bench/chaos.sh                  # every case
#   bash bench/chaos.sh --only HTTP/2    # cases whose name contains the text
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release -q ${CARGO_JOBS:+-j "$CARGO_JOBS"} -p portcullis --bin portcullis
# The driver (fault upstreams, clients) needs no optimisation: it is the gateway under test
# that is measured.
cargo build -q ${CARGO_JOBS:+-j "$CARGO_JOBS"} -p portcullis-tests --bin chaos
out="bench/results/chaos-$(date +%Y-%m-%d).md"
mkdir -p bench/results
status=0
{
    echo "# Chaos report $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "Host: $(uname -sm), $(nproc) CPUs; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo
    "$TARGET_DIR/debug/chaos" --gateway "$TARGET_DIR/release/portcullis" "$@" || status=$?
} >"$out.tmp"
mv "$out.tmp" "$out"
cat "$out"
echo "wrote $out" >&2
exit "$status"
