#!/usr/bin/env bash
# Profile the plain Portcullis proxy path under wrk load with `perf record`.
#
#   bash bench/profile.sh [SECONDS] [FILTERS]   # default 10 s, 0 filters
#
# FILTERS > 0 installs that many copies of the add-header filter (built by run.sh into
# plugins/target), as in run.sh's portcullis-filter1/-filters rows.
#
# Same layout as run.sh: wrk on core 0; Portcullis (--workers 1) and bench_upstream on core 1.
# Needs the release binaries built by run.sh and `perf` (apt-get install -y linux-perf).
# Writes perf.data and the text reports into bench/results/profile-<date>/ (perf.data is not
# meant to be committed: it is ignored by bench/.gitignore).
set -Eeuo pipefail
SECS=${1:-10}
FILTERS=${2:-0}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT_BASE="${BENCH_PORT_BASE:-18180}"
OUT="$ROOT/bench/results/profile-$(date -u +%Y%m%d)"
if [ "$FILTERS" -gt 0 ]; then OUT="$OUT-filters$FILTERS"; fi
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf not found: apt-get install -y linux-perf" >&2; exit 1; }

# shellcheck source=single_proxy.sh
source "$ROOT/bench/single_proxy.sh"
single_proxy_start "$FILTERS"

taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$P/" >/dev/null # warm-up
taskset -c 0 wrk -t1 -c64 -d"$((SECS + 2))s" "http://127.0.0.1:$P/" >"$OUT/wrk.txt" &
WRK=$!
sleep 1
perf record -F 499 --call-graph dwarf,16384 -p "$PC" -o "$OUT/perf.data" -- sleep "$SECS" 2>"$OUT/perf-record.log" || true
wait "$WRK" || true
perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.7 -g none 2>/dev/null >"$OUT/self.txt" || true
perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none 2>/dev/null >"$OUT/children.txt" || true
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null >"$OUT/dso.txt" || true
echo "wrk under perf:"; grep -E 'Requests/sec' "$OUT/wrk.txt"
echo "reports in ${OUT#"$ROOT"/}: self.txt children.txt dso.txt"
