#!/usr/bin/env bash
# User and system CPU per request, minor faults and context switches per request, of Portcullis
# or the hyper floor under wrk, from /proc/<pid>/stat and /proc/<pid>/task/*/status. Use it to
# tell user-space work from kernel work (syscalls, preemption by the upstream on the shared
# core) when a change moves instructions but not CPU (bench/PROFILE.md, round 8).
#
#   bash bench/user_sys.sh floor|portcullis [SECONDS]    # default 4
#   STRACE=1 bash bench/user_sys.sh portcullis 3         # also `strace -c -f` during the run
#
# Layout as run.sh: wrk (-t1 -c64) on core 0, the proxy and bench_upstream on core 1. Run the
# two interleaved a few times: this VM's speed moves between minutes, so compare pairs.
# Needs wrk and the release binaries (`cargo build --release -p portcullis -p
# portcullis-examples`). Loopback only; bounded: a 2 s warm-up, one SECONDS-long run, every
# process stopped on exit.
set -Eeuo pipefail
WHO=${1:?floor or portcullis}
SECS=${2:-4}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT_BASE="${BENCH_PORT_BASE:-18300}"
command -v wrk >/dev/null || { echo "wrk missing (apt-get install wrk)" >&2; exit 1; }
# One Portcullis (--workers 1) and bench_upstream on core 1, as cpu_per_request.sh runs them;
# sets U, P, TMP, PIDS, UP and PC, and stops everything on exit.
# shellcheck source=single_proxy.sh
source "$ROOT/bench/single_proxy.sh"
case $WHO in
    portcullis)
        single_proxy_start 0
        S=$PC
        ;;
    floor)
        [ -x "$REL/hyper_floor" ] || { echo "$REL/hyper_floor missing: cargo build --release -p portcullis-examples" >&2; exit 1; }
        taskset -c 1 "$REL/bench_upstream" "127.0.0.1:$U" >"$TMP/up.log" 2>&1 &
        UP=$!
        PIDS+=("$UP")
        taskset -c 1 "$REL/hyper_floor" "127.0.0.1:$P" "127.0.0.1:$U" spawn >"$TMP/s.log" 2>&1 &
        S=$!
        PIDS+=("$S")
        for _ in $(seq 1 100); do
            curl -fsS -o /dev/null "http://127.0.0.1:$P/" 2>/dev/null && break
            sleep 0.1
        done
        curl -fsS -o /dev/null "http://127.0.0.1:$P/" || { echo "hyper_floor did not answer" >&2; exit 1; }
        ;;
    *) echo "floor or portcullis, not $WHO" >&2; exit 2 ;;
esac
timeout 20 taskset -c 0 wrk -t1 -c64 -d2s "http://127.0.0.1:$P/" >/dev/null

# minflt, utime, stime (fields 10, 14, 15) and voluntary / involuntary switches of all threads.
stat() { awk '{print $10, $14, $15}' "/proc/$1/stat"; }
switches() { cat /proc/"$1"/task/*/status | awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}'; }
read -r f0 u0 s0 < <(stat "$S")
read -r v0 n0 < <(switches "$S")
read -r _ uu0 us0 < <(stat "$UP")
if [ -n "${STRACE:-}" ]; then
    (timeout "$SECS" strace -c -f -p "$S" -o "$TMP/strace.txt" 2>/dev/null || true) &
fi
timeout $((SECS + 15)) taskset -c 0 wrk -t1 -c64 -d"${SECS}s" "http://127.0.0.1:$P/" >"$TMP/wrk.txt"
read -r f1 u1 s1 < <(stat "$S")
read -r v1 n1 < <(switches "$S")
read -r _ uu1 us1 < <(stat "$UP")
N=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
[ -n "$N" ] && [ "$N" -gt 0 ] || { echo "wrk made no requests" >&2; cat "$TMP/wrk.txt" >&2; exit 1; }
awk -v n="$N" -v hz="$(getconf CLK_TCK)" -v who="$WHO" -v secs="$SECS" \
    -v f=$((f1 - f0)) -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v v=$((v1 - v0)) -v nv=$((n1 - n0)) \
    -v uu=$((uu1 - uu0)) -v us=$((us1 - us0)) 'BEGIN {
    printf "%s: %d requests (%.0f/s): user %.1f + system %.1f us/request; %.3f minor faults, %.3f voluntary and %.3f involuntary context switches per request; upstream user %.1f + system %.1f us/request\n",
        who, n, n / secs, u / hz * 1e6 / n, s / hz * 1e6 / n, f / n, v / n, nv / n, uu / hz * 1e6 / n, us / hz * 1e6 / n
}'
if [ -n "${STRACE:-}" ]; then
    sleep 1
    head -n 20 "$TMP/strace.txt"
fi
