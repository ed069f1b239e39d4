#!/usr/bin/env bash
# CPU cost per request of Portcullis and of the upstream under wrk, from /proc accounting
# (no perf needed), plus context switches per request and the busy share of the server core.
#
#   bash bench/cpu_per_request.sh [FILTERS] [SECONDS]
#
# FILTERS > 0 installs that many add-header filters, as run.sh's filter rows do (FILTER=pass:
# pass-through CORS filters instead; UPSTREAM_CORE=0: the upstream off the proxy's core; see
# single_proxy.sh). Same layout
# as run.sh: wrk on core 0; Portcullis (--workers 1) and bench_upstream on core 1. Needs the
# release binaries and the add_header guest that `bash bench/run.sh` builds. Loopback only,
# bounded: one 2 s warm-up and one SECONDS-long wrk run, everything stopped on exit.
set -Eeuo pipefail
FILTERS=${1:-0}
SECS=${2:-5}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT_BASE="${BENCH_PORT_BASE:-18280}"
# shellcheck source=single_proxy.sh
source "$ROOT/bench/single_proxy.sh"
single_proxy_start "$FILTERS"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/ctxt_switches/ {s += $2} END {print s}'; }
core1() { awk '/^cpu1 / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat; }

timeout 20 taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$P/" >/dev/null
read -r busy0 idle0 < <(core1)
p0=$(ticks "$PC") u0=$(ticks "$UP") ps0=$(switches "$PC") us0=$(switches "$UP")
timeout $((SECS + 15)) taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:$P/" >"$TMP/wrk.txt"
read -r busy1 idle1 < <(core1)
p1=$(ticks "$PC") u1=$(ticks "$UP") ps1=$(switches "$PC") us1=$(switches "$UP")
N=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
# Proof that the filters ran: their call counters, summed (includes the warm-up and probes).
CALLS=0
if [ "$FILTERS" -gt 0 ]; then
    CALLS=$(curl -fsS --max-time 2 "http://127.0.0.1:$A/admin/plugins" | grep -o '"calls": *[0-9]*' |
        awk -F: '{s += $2} END {print s + 0}')
fi
[ -n "$N" ] && [ "$N" -gt 0 ] || { echo "wrk made no requests" >&2; cat "$TMP/wrk.txt" >&2; exit 1; }
HZ=$(getconf CLK_TCK)
awk -v n="$N" -v secs="$SECS" -v hz="$HZ" -v f="$FILTERS" \
    -v p=$((p1 - p0)) -v u=$((u1 - u0)) -v ps=$((ps1 - ps0)) -v us=$((us1 - us0)) \
    -v b=$((busy1 - busy0)) -v i=$((idle1 - idle0)) -v calls="$CALLS" -v kind="${FILTER:-add-header}" 'BEGIN {
    printf "filters=%d (%s) requests=%d req/s=%.0f filter calls so far=%d\n", f, kind, n, n / secs, calls
    printf "  portcullis: %.1f us CPU/request, %.2f context switches/request\n", p / hz * 1e6 / n, ps / n
    printf "  upstream:   %.1f us CPU/request, %.2f context switches/request\n", u / hz * 1e6 / n, us / n
    busy = (b + i > 0) ? b / (b + i) * 100 : 0
    printf "  core 1 busy: %.0f %%\n", busy
}'
