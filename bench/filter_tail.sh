#!/usr/bin/env bash
# Tail latency with filters below saturation: Portcullis' own overhead histogram
# (`portcullis_overhead_seconds`, delta of /metrics) and oha's client-side percentiles, for
# FILTERS add-header filters (FILTER=pass: pass-through) at a fixed rate.
#
#   bash bench/filter_tail.sh [FILTERS] [EPOCH_TICK_MS] [RATE] [SECONDS]   # default 3 2 8000 10
#
# For A/B runs of a setting (e.g. the epoch tick: run 1 and 2 interleaved, several rounds;
# this VM's tails vary by 2x between runs). Same layout as run.sh (see single_proxy.sh).
# Loopback only, bounded: one 2 s wrk warm-up and one oha run, everything stopped on exit.
set -Eeuo pipefail
FILTERS=${1:-3}
TICK=${2:-2}
RATE=${3:-8000}
SECS=${4:-10}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT_BASE="${BENCH_PORT_BASE:-18480}"
command -v oha >/dev/null || { echo "oha not found: cargo install oha" >&2; exit 1; }
# shellcheck source=single_proxy.sh
source "$ROOT/bench/single_proxy.sh"
EPOCH_TICK_MS=$TICK single_proxy_start "$FILTERS"

timeout 20 taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$P/" >/dev/null
curl -fsS --max-time 2 "http://127.0.0.1:$A/metrics" >"$TMP/before"
timeout $((SECS + 20)) taskset -c 0 oha -z "${SECS}s" -q "$RATE" -c 32 --latency-correction \
    --no-tui --output-format json "http://127.0.0.1:$P/" >"$TMP/oha.json" 2>/dev/null || true
curl -fsS --max-time 2 "http://127.0.0.1:$A/metrics" >"$TMP/after"

python3 - "$TMP" "$FILTERS" "$TICK" "$RATE" "$ROOT/bench" <<'PY'
import json, sys
d, filters, tick, rate, here = sys.argv[1:6]
sys.path.insert(0, here)
from histogram import buckets, quantile

b, a = buckets(open(f"{d}/before").read()), buckets(open(f"{d}/after").read())
n = a.get(float("inf"), 0) - b.get(float("inf"), 0)
try:
    lp = json.load(open(f"{d}/oha.json")).get("latencyPercentiles", {})
except ValueError:
    lp = {}
us = lambda s: "–" if s is None else f"{s * 1e6:.0f} µs"
print(f"filters={filters} epoch_tick_ms={tick} rate={rate} requests={n:.0f}")
own = [quantile(b, a, q)[0] for q in (0.5, 0.99, 0.999)]
print(f"  overhead p50 {us(own[0])}, p99 {us(own[1])}, p99.9 {us(own[2])}")
print(f"  client   p50 {us(lp.get('p50'))}, p99 {us(lp.get('p99'))}, p99.9 {us(lp.get('p99.9'))}")
PY
