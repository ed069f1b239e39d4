#!/usr/bin/env bash
# A/B of the HTTP/1.1 server side in one binary: `[http] http1_server = "portcullis"` (our
# codec, host/src/h1) against `"hyper"`, plus the bare hyper proxy (`hyper_floor`) for scale.
# Loopback only, bounded: per target R rounds of `wrk -t1 -c50 -d D`, interleaved, then
# N idle keep-alive connections (one request each) and the serving process' RSS growth.
#
#   bash bench/h1_ab.sh [ROUNDS=3] [SECS=8] [IDLE=5000]
#
# Needs a release build (`cargo build --release -p portcullis -p portcullis-examples --bin
# portcullis --bin bench_upstream --bin hyper_floor`), wrk and python3. CPU per request is the
# serving process' utime+stime delta (/proc/PID/stat) over the requests wrk completed.
set -euo pipefail
ROUNDS=${1:-3} SECS=${2:-8} IDLE=${3:-5000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BENCH_BIN_DIR:-$ROOT/target/release}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
CLK=$(getconf CLK_TCK)

U=19301 FLOOR=19302
"$BIN/bench_upstream" "127.0.0.1:$U" "127.0.0.1:19303" "127.0.0.1:19304" >/dev/null 2>&1 &
PIDS+=($!)
"$BIN/hyper_floor" "127.0.0.1:$FLOOR" "127.0.0.1:$U" spawn >/dev/null 2>&1 &
PIDS+=($!)
FLOOR_PID=$!

openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=localhost -days 1 \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" >/dev/null 2>&1
declare -A PORT PID
start_gw() { # NAME PORT ADMIN SERVER (TLS listener on PORT+5)
    cat >"$TMP/$1.toml" <<TOML
[admin]
listen = "127.0.0.1:$3"
[[listener]]
name = "bench"
listen = "127.0.0.1:$2"
max_connections = 30000
[[listener]]
name = "tls"
listen = "127.0.0.1:$(($2 + 5))"
max_connections = 30000
tls = { cert = "$TMP/cert.pem", key = "$TMP/key.pem" }
[limits]
max_in_flight = 30000
[http]
http1_server = "$4"
[[cluster]]
name = "up"
endpoints = ["127.0.0.1:$U"]
[[route]]
name = "all"
match = { path_prefix = "/" }
cluster = "up"
TOML
    "$BIN/portcullis" run --config "$TMP/$1.toml" --workers 1 >"$TMP/$1.log" 2>&1 &
    PIDS+=($!)
    PID[$1]=$!
    PORT[$1]=$2
}
# Fresh gateways for each measurement: an allocator keeps what a previous load freed, which
# would hide (or fake) what idle connections cost.
restart_gws() {
    for t in own hyper; do
        if [ -n "${PID[$t]:-}" ]; then kill "${PID[$t]}" 2>/dev/null || true; wait "${PID[$t]}" 2>/dev/null || true; fi
    done
    start_gw own 19311 19312 portcullis
    start_gw hyper 19321 19322 hyper
    for t in own hyper floor; do
        for _ in $(seq 100); do curl -fs -o /dev/null "http://127.0.0.1:${PORT[$t]}/" && break; sleep 0.1; done
    done
    sleep 1
}
PID[floor]=$FLOOR_PID
PORT[floor]=$FLOOR

idle_kib() { # TARGET [--tls] -> KiB per idle connection
    local pid=${PID[$1]} before after port=${PORT[$1]}
    [ "${2:-}" = --tls ] && port=$((port + 5))
    before=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    python3 "$ROOT/bench/idle_conns.py" 127.0.0.1 "$port" "$IDLE" --hold 60 ${2:-} >"$TMP/idle-$1.out" 2>&1 &
    local ic=$!
    for _ in $(seq 300); do grep -q '^READY' "$TMP/idle-$1.out" 2>/dev/null && break; sleep 0.2; done
    sleep 1
    after=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    kill "$ic" 2>/dev/null || true
    wait "$ic" 2>/dev/null || true
    echo "scale=2; ($after - $before) / $IDLE" | bc
}

declare -A PLAIN TLS
restart_gws
for t in own hyper floor; do PLAIN[$t]=$(idle_kib "$t"); done
restart_gws
for t in own hyper; do TLS[$t]=$(idle_kib "$t" --tls); done
TLS[floor]="-"
restart_gws
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
declare -A REQS CPU
for t in own hyper floor; do REQS[$t]=0; CPU[$t]=0; done
for r in $(seq "$ROUNDS"); do
    for t in own hyper floor; do
        before=$(ticks "${PID[$t]}")
        n=$(wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:${PORT[$t]}/" | awk '/requests in/ {print $1}')
        after=$(ticks "${PID[$t]}")
        REQS[$t]=$((REQS[$t] + n))
        CPU[$t]=$((CPU[$t] + after - before))
        echo "round $r $t: $n requests, $((after - before)) ticks" >&2
    done
done


printf '| target | req/s | CPU µs/req | idle KiB/conn, plain (%s conns) | idle KiB/conn, TLS |\n|---|---|---|---|---|\n' "$IDLE"
for t in own hyper floor; do
    rps=$((REQS[$t] / (ROUNDS * SECS)))
    us=$(echo "scale=1; ${CPU[$t]} * 1000000 / $CLK / ${REQS[$t]}" | bc)
    printf '| %s | %s | %s | %s | %s |\n' "$t" "$rps" "$us" "${PLAIN[$t]}" "${TLS[$t]}"
done
