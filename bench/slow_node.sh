#!/usr/bin/env bash
# Runs the slow-node experiment (see bench/SLOW_NODE.md) and writes its tables to
# bench/results/slow_node-<date>.md. Loopback only; about 90 s plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."
out="bench/results/slow_node-$(date +%Y-%m-%d).md"
mkdir -p bench/results
{
  echo "# slow_node $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "Host: $(uname -sm), $(nproc) CPUs; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo
  cargo run --release -q ${CARGO_JOBS:+-j "$CARGO_JOBS"} -p portcullis-examples --bin slow_node
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out"
