#!/usr/bin/env bash
# Portcullis benchmark suite: Portcullis side by side with nginx and HAProxy, one command.
#
#   bash bench/run.sh           # full run (≈ 5 min once built)
#   bash bench/run.sh --quick   # short run (≈ 2 min once built)
#   BENCH_BIN_DIR=dir bash bench/run.sh   # prebuilt portcullis/bench_upstream/hyper_floor (A/B)
#
# See bench/README.md for what each row means. Everything binds 127.0.0.1 only; everything
# started here is stopped on exit, failure or Ctrl-C.
set -Eeuo pipefail

MODE=full
for a in "$@"; do
    case "$a" in
        --quick) MODE=quick ;;
        -h | --help)
            sed -n '2,10p' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $a" >&2
            exit 2
            ;;
    esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"
# shellcheck source=filters.sh
source "$BENCH/filters.sh"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
JOBS="${BENCH_JOBS:-2}"
PORT_BASE="${BENCH_PORT_BASE:-18080}"
export PATH="$HOME/.cargo/bin:$PATH"

if [ "$MODE" = quick ]; then
    ROUNDS=2 TPUT_SECS=2 LAT_SECS=3 WARM_SECS=1
else
    ROUNDS=3 TPUT_SECS=5 LAT_SECS=10 WARM_SECS=2
fi
IDLE_N="${BENCH_IDLE_CONNS:-10000}"
WRK_CONNS=64
OHA_CONNS=32

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# ---------------------------------------------------------------------------------------------
# Peers and tools
# ---------------------------------------------------------------------------------------------
install_peers() {
    local missing=()
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
    command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v redis-server >/dev/null || missing+=(redis-server)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]} (apt-get)"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if ! command -v oha >/dev/null; then
        # With its http3 feature for the TLS HTTP/3 row; without it if that build fails
        # (the h3 row is then skipped with a reason).
        log "installing oha (cargo install oha --locked --features http3, into ~/.cargo/bin)"
        cargo install oha --locked --features http3 -j "$JOBS" >&2 ||
            cargo install oha --locked -j "$JOBS" >&2
    fi
    # nginx/haproxy packages may start system services on install; we never use those.
}

build_portcullis() {
    if [ -n "${BENCH_BIN_DIR:-}" ]; then
        # A/B runs: binaries built elsewhere (e.g. from an older commit), used as they are.
        log "using prebuilt binaries from $BENCH_BIN_DIR"
        PORTCULLIS="$BENCH_BIN_DIR/portcullis"
        UPSTREAM_BIN="$BENCH_BIN_DIR/bench_upstream"
        FLOOR_BIN="$BENCH_BIN_DIR/hyper_floor"
        [ -x "$PORTCULLIS" ] || die "missing $PORTCULLIS"
        return 0
    fi
    log "building portcullis, bench_upstream and hyper_floor (release, -j $JOBS, target dir $TARGET_DIR)"
    # One cargo invocation: features are unified once, so the library is built once.
    (cd "$ROOT" && cargo build --release -j "$JOBS" -p portcullis -p portcullis-examples \
        --bin portcullis --bin bench_upstream --bin hyper_floor >&2)
    PORTCULLIS="$TARGET_DIR/release/portcullis"
    UPSTREAM_BIN="$TARGET_DIR/release/bench_upstream"
    FLOOR_BIN="$TARGET_DIR/release/hyper_floor"
    [ -x "$PORTCULLIS" ] || die "missing $PORTCULLIS"
    [ -x "$UPSTREAM_BIN" ] || die "missing $UPSTREAM_BIN"
}

# ---------------------------------------------------------------------------------------------
# Process bookkeeping: every process we start is recorded and stopped on exit.
# ---------------------------------------------------------------------------------------------
declare -A PID=()
ALL_PIDS=()
TMP=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ "${#ALL_PIDS[@]}" -gt 0 ]; then
        for p in "${ALL_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for _ in $(seq 1 30); do
            local alive=0
            for p in "${ALL_PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
            [ "$alive" = 0 ] && break
            sleep 0.1
        done
        for p in "${ALL_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
        wait 2>/dev/null || true
    fi
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        if [ "$rc" -ne 0 ]; then
            local keep="$BENCH/results/failed-$(date -u +%Y%m%dT%H%M%S)-logs"
            mkdir -p "$keep" && cp -r "$TMP"/*.log "$TMP"/data "$keep"/ 2>/dev/null || true
            log "run failed (exit $rc); logs kept in $keep"
        fi
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CPUS CMD...: start CMD pinned to CPUS, output to $TMP/NAME.log, record its PID.
start() {
    local name=$1 cpus=$2
    shift 2
    taskset -c "$cpus" "$@" >"$TMP/$name.log" 2>&1 &
    PID[$name]=$!
    ALL_PIDS+=("$!")
}

# run_fg CMD...: run CMD in the background and wait for it, so that Ctrl-C/SIGTERM reach our
# trap at once (bash defers traps while a foreground child runs, and `timeout` moves its child
# out of our process group, so a foreground wrk/oha would delay or swallow the interrupt).
run_fg() {
    "$@" &
    local p=$!
    ALL_PIDS+=("$p")
    wait "$p"
}

stop() {
    local name=$1 p=${PID[$1]:-}
    [ -n "$p" ] || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
    unset "PID[$name]"
}

port_free() { ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# wait_http URL [SECONDS] [NAME]: wait until URL answers 2xx.
wait_http() {
    local url=$1 secs=${2:-10} name=${3:-}
    local deadline=$((SECONDS + secs))
    while [ $SECONDS -lt $deadline ]; do
        if [ -n "$name" ] && ! kill -0 "${PID[$name]}" 2>/dev/null; then
            return 1
        fi
        curl -fsS -o /dev/null --max-time 1 "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

note() {
    log "note: $*"
    echo "$*" >>"$DATA/notes.txt"
}

skip() {
    log "SKIPPED $1: $2"
    echo "$2" >"$DATA/skip/$1"
}

# ---------------------------------------------------------------------------------------------
# Layout: load generator on core 0, proxy + upstream on core 1 (same for every peer).
# ---------------------------------------------------------------------------------------------
pinning() {
    NCPU=$(nproc)
    if [ "$NCPU" -ge 2 ]; then
        CPU_LG=0 CPU_SRV=1
        PIN_NOTE="$NCPU cores online: core 0 = load generator, core 1 = proxy + upstream; any other cores are left unused so every peer gets exactly one core."
    else
        CPU_LG=0 CPU_SRV=0
        PIN_NOTE="Only 1 core online: load generator, proxy and upstream all share core 0; numbers are not comparable with 2-core runs."
    fi
}

U1=$((PORT_BASE + 1)) U2=$((PORT_BASE + 2)) U3=$((PORT_BASE + 3))
P_NGINX=$((PORT_BASE + 10)) P_HAPROXY=$((PORT_BASE + 11))
P_PC=$((PORT_BASE + 12)) A_PC=$((PORT_BASE + 13))
P_PCF=$((PORT_BASE + 14)) A_PCF=$((PORT_BASE + 15))
P_PCE=$((PORT_BASE + 16)) A_PCE=$((PORT_BASE + 17))
P_PC1=$((PORT_BASE + 18)) A_PC1=$((PORT_BASE + 19))
P_PCT=$((PORT_BASE + 22)) A_PCT=$((PORT_BASE + 23))
P_NGINX_H2=$((PORT_BASE + 20)) P_HAPROXY_H2=$((PORT_BASE + 21))
P_FLOOR=$((PORT_BASE + 24))
P_PCP=$((PORT_BASE + 25)) A_PCP=$((PORT_BASE + 26))
P_PCR=$((PORT_BASE + 27)) A_PCR=$((PORT_BASE + 28))
P_PCU=$((PORT_BASE + 29)) A_PCU=$((PORT_BASE + 30))
P_PCA=$((PORT_BASE + 31)) A_PCA=$((PORT_BASE + 32))
P_PCO1=$((PORT_BASE + 33)) A_PCO1=$((PORT_BASE + 34))
P_PCO100=$((PORT_BASE + 35)) A_PCO100=$((PORT_BASE + 36))
P_OTLP=$((PORT_BASE + 37))
P_PCJ=$((PORT_BASE + 38)) A_PCJ=$((PORT_BASE + 39))
P_PCY=$((PORT_BASE + 40)) A_PCY=$((PORT_BASE + 41))
# The rate-limit rows (issue 20): a local and a global limit that never denies, and the
# Redis the global one asks.
P_PCL=$((PORT_BASE + 42)) A_PCL=$((PORT_BASE + 43))
P_PCG=$((PORT_BASE + 44)) A_PCG=$((PORT_BASE + 45))
P_REDIS=$((PORT_BASE + 46))
# The trivial JavaScript and Python filters (issue 18, goal 6), built by examples/build.rs
# (plugins/build_js_py.rs) along with the release binaries.
JSPY_DIR="$ROOT/plugins/target/js-py/out"
export JSPY_DIR
# Config-size rows: cost must not grow with the config (issue 17, goal 6).
ROUTES_N="${BENCH_ROUTES:-10000}"
UNMATCHED_N="${BENCH_UNMATCHED:-200}"

declare -A URL=() PROC=()

start_upstream() {
    start upstream "$CPU_SRV" "$UPSTREAM_BIN" "127.0.0.1:$U1" "127.0.0.1:$U2" "127.0.0.1:$U3"
    wait_http "http://127.0.0.1:$U1/" 10 upstream || die "upstream did not start (see $TMP/upstream.log)"
    URL[direct]="http://127.0.0.1:$U1/"
}

start_nginx() {
    local d="$TMP/nginx"
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $FDS;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events {
    worker_connections $((FDS - 64));
}
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream up {
        server 127.0.0.1:$U1;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P_NGINX backlog=4096;
        listen 127.0.0.1:$P_NGINX_H2 http2;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # The tracing rows' OTLP sink: every export answered 204, the body read and dropped.
    server {
        listen 127.0.0.1:$P_OTLP;
        client_max_body_size 64m;
        location / {
            return 204;
        }
    }
}
EOF
    start nginx "$CPU_SRV" nginx -p "$d" -e "$d/logs/error.log" -c "$d/nginx.conf"
    if wait_http "http://127.0.0.1:$P_NGINX/" 10 nginx; then
        URL[nginx]="http://127.0.0.1:$P_NGINX/"
        PROC[nginx]=${PID[nginx]}
    else
        skip nginx "nginx did not start: $(tail -n 3 "$TMP/nginx.log" "$d/logs/error.log" 2>/dev/null | tr '\n' ' ' | cut -c1-200)"
    fi
}

start_haproxy() {
    local d="$TMP/haproxy"
    mkdir -p "$d"
    cat >"$d/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $((IDLE_N + 2000))
    # maxconn needs 2 fds per connection in HAProxy's estimate; idle clients need only one,
    # so do not refuse to start when the hard fd limit is below that estimate.
    no strict-limits
defaults
    mode http
    maxconn $((IDLE_N + 2000))
    timeout connect 1s
    timeout client 120s
    timeout server 30s
    timeout http-keep-alive 120s
    http-reuse always
frontend fe
    bind 127.0.0.1:$P_HAPROXY
    bind 127.0.0.1:$P_HAPROXY_H2 proto h2
    default_backend be
backend be
    server s1 127.0.0.1:$U1
EOF
    start haproxy "$CPU_SRV" haproxy -db -f "$d/haproxy.cfg"
    if wait_http "http://127.0.0.1:$P_HAPROXY/" 10 haproxy; then
        URL[haproxy]="http://127.0.0.1:$P_HAPROXY/"
        PROC[haproxy]=${PID[haproxy]}
    else
        skip haproxy "haproxy did not start: $(tail -n 3 "$TMP/haproxy.log" | tr '\n' ' ' | cut -c1-200)"
    fi
}

# portcullis_config NAME LISTEN_PORT ADMIN_PORT EXTRA_TOML ROUTES_TOML
portcullis_config() {
    local f="$TMP/$1.toml"
    cat >"$f" <<EOF
[admin]
listen = "127.0.0.1:$3"

[[listener]]
name = "bench"
listen = "127.0.0.1:$2"
max_connections = 30000

[timeouts]
drain_ms = 1000

[limits]
max_in_flight = 30000

$4

[[cluster]]
name = "up1"
endpoints = ["127.0.0.1:$U1"]

[[cluster]]
name = "up2"
endpoints = ["127.0.0.1:$U2"]

[[cluster]]
name = "up3"
endpoints = ["127.0.0.1:$U3"]

$5
EOF
    echo "$f"
}

# start_portcullis NAME CONFIG LISTEN_PORT ADMIN_PORT PATH [READY_SECS]
start_portcullis() {
    local name=$1 cfg=$2 port=$3 admin=$4 path=$5 secs=${6:-15}
    local out
    if ! out=$("$PORTCULLIS" check --config "$cfg" 2>&1); then
        skip "$name" "config rejected: $(echo "$out" | head -n 3 | tr '\n' ' ' | cut -c1-200)"
        return 1
    fi
    RUST_LOG=warn start "$name" "$CPU_SRV" "$PORTCULLIS" run --config "$cfg" --workers 1
    if wait_http "http://127.0.0.1:$port$path" "$secs" "$name" && wait_http "http://127.0.0.1:$admin/metrics" 5 "$name"; then
        URL[$name]="http://127.0.0.1:$port$path"
        PROC[$name]=${PID[$name]}
        ADMIN[$name]="http://127.0.0.1:$admin"
        return 0
    fi
    skip "$name" "did not answer 2xx on $path: $(tail -n 3 "$TMP/$name.log" | tr '\n' ' ' | cut -c1-200)"
    stop "$name"
    return 1
}
declare -A ADMIN=()

# The stack's floor: a bare hyper 1 proxy (examples/src/bin/hyper_floor.rs), same runtime,
# allocator and pinning as Portcullis, none of its work. Shows how much of the gap to
# nginx/HAProxy is the stack and how much is Portcullis' own per-request work.
start_floor() {
    start hyper-floor "$CPU_SRV" "$FLOOR_BIN" "127.0.0.1:$P_FLOOR" "127.0.0.1:$U1" spawn
    if wait_http "http://127.0.0.1:$P_FLOOR/" 10 hyper-floor; then
        URL[hyper-floor]="http://127.0.0.1:$P_FLOOR/"
        PROC[hyper-floor]=${PID[hyper-floor]}
    else
        skip hyper-floor "hyper_floor did not start: $(tail -n 3 "$TMP/hyper-floor.log" | tr '\n' ' ' | cut -c1-200)"
    fi
}

start_portcullis_plain() {
    local cfg
    cfg=$(portcullis_config portcullis "$P_PC" "$A_PC" "" '
[[route]]
name = "all"
match = { path_prefix = "/" }
cluster = "up1"')
    start_portcullis portcullis "$cfg" "$P_PC" "$A_PC" / || true
}

# ROUTES_N prefix routes; the request matches the last one, the worst case for a linear scan.
start_portcullis_routes() {
    local name=portcullis-routes routes i cfg
    routes=$(for i in $(seq 1 "$ROUTES_N"); do
        printf '[[route]]\nname = "r%d"\nmatch = { path_prefix = "/svc%d" }\ncluster = "up1"\n' "$i" "$i"
    done)
    cfg=$(portcullis_config "$name" "$P_PCR" "$A_PCR" "" "$routes")
    start_portcullis "$name" "$cfg" "$P_PCR" "$A_PCR" "/svc$ROUTES_N/item" 30 || true
}

# ---------------------------------------------------------------------------------------------
# Plugin scenarios (the plugin runtime is written concurrently; skip cleanly when absent)
# ---------------------------------------------------------------------------------------------
PLUGIN_TARGET="$ROOT/plugins/target/wasm32-wasip2/release"
PLUGINS_BUILT=""
PLUGINS_SKIP=""

build_plugins() {
    [ -n "$PLUGINS_BUILT$PLUGINS_SKIP" ] && return 0
    if [ ! -f "$ROOT/plugins/Cargo.toml" ]; then
        PLUGINS_SKIP="plugins/Cargo.toml not found: no plugins in this checkout"
        return 0
    fi
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
        rustup target add wasm32-wasip2 >&2 || true
    fi
    log "building plugins (wasm32-wasip2, release)"
    if ! (cd "$ROOT" && CARGO_TARGET_DIR="$ROOT/plugins/target" cargo build --release -j "$JOBS" \
        --target wasm32-wasip2 --manifest-path plugins/Cargo.toml) >"$TMP/plugins-build.log" 2>&1; then
        PLUGINS_SKIP="plugin build failed: $(grep -m1 -E '^error' "$TMP/plugins-build.log" | cut -c1-150)"
        return 0
    fi
    PLUGINS_BUILT=1
}

start_portcullis_filters() {
    # $1 = number of filters, $2 = target name, $3/$4 = proxy/admin ports,
    # $5 = add-header (default: each sets one request header) or pass (the CORS filter on a
    # request without Origin: reads one header and continues, Envoy's "pass-through" case)
    local count=$1 name=$2 port=$3 admin=$4 kind=${5:-add-header} secs=15
    [ "$kind" = unmatched ] && secs=180
    # A 12–19 MiB JavaScript/Python component takes Cranelift 10–30 s on a busy 2-core box.
    { [ "$kind" = js ] || [ "$kind" = py ]; } && secs=180
    build_plugins
    if [ -n "$PLUGINS_SKIP" ]; then
        skip "$name" "$PLUGINS_SKIP"
        return 0
    fi
    local dir="$TMP/plugins-$name" why
    if ! why=$(write_filters "$dir" "$count" "$kind" "$PLUGIN_TARGET" 2>&1); then
        skip "$name" "$why after the plugin build"
        return 0
    fi
    local cfg
    cfg=$(portcullis_config "$name" "$port" "$admin" "[plugins]
dir = \"$dir\"" '
[[route]]
name = "all"
match = { path_prefix = "/" }
cluster = "up1"')
    # A JS/Python component compiles before the listener opens: give it the same time.
    start_portcullis "$name" "$cfg" "$port" "$admin" / $((secs > 30 ? secs : 30)) || return 0
    # The filters run on requests to the upstream; confirm they are all loaded.
    local deadline=$((SECONDS + secs)) listing=""
    while [ $SECONDS -lt $deadline ]; do
        listing=$(curl -fsS --max-time 1 "${ADMIN[$name]}/admin/plugins" 2>/dev/null || true)
        if [ "$(grep -o '"name": "hdr[0-9]*"' <<<"$listing" | wc -l)" -eq "$count" ]; then
            return 0
        fi
        sleep 0.2
    done
    skip "$name" "the $count filter(s) were not listed as loaded by /admin/plugins"
    stop "$name"
    unset "URL[$name]" "PROC[$name]"
}

start_portcullis_fanout() {
    local name=portcullis-fanout
    build_plugins
    if [ -n "$PLUGINS_SKIP" ]; then
        skip "$name" "$PLUGINS_SKIP"
        return 0
    fi
    local wasm="$PLUGIN_TARGET/fanout.wasm"
    [ -f "$wasm" ] || {
        skip "$name" "fanout.wasm missing after plugin build"
        return 0
    }
    local dir="$TMP/plugins-fanout"
    mkdir -p "$dir"
    cp "$wasm" "$dir/fanout.wasm"
    cat >"$dir/fanout.toml" <<EOF
kind = "endpoint"
[config]
clusters = "up1,up2,up3"
EOF
    local cfg
    cfg=$(portcullis_config "$name" "$P_PCE" "$A_PCE" "[plugins]
dir = \"$dir\"" '
[[route]]
name = "fan"
match = { path_prefix = "/fan" }
endpoint = "fanout"')
    start_portcullis "$name" "$cfg" "$P_PCE" "$A_PCE" /fan 30 || return 0
}

# Rate-limit rows: the plain proxy's route under one `[[rate_limit]]` keyed by client IP whose
# limit is never reached, so every request pays the check and none is denied: in process
# (`portcullis-rl-local`), and in Redis (`portcullis-rl-global`: at most one round trip per
# request, concurrent checks batched into one EVALSHA, to a redis-server on loopback, pinned
# with the upstream). The CPU difference from
# `portcullis` is the check's cost; the global row's req/s ratio is its throughput cost.
start_ratelimits() {
    local scope name port admin redis=""
    if command -v redis-server >/dev/null; then
        start redis "$CPU_SRV" redis-server --bind 127.0.0.1 --port "$P_REDIS" --save "" --appendonly no
    fi
    for scope in local global; do
        if [ "$scope" = local ]; then
            name=portcullis-rl-local port=$P_PCL admin=$A_PCL redis=""
        else
            name=portcullis-rl-global port=$P_PCG admin=$A_PCG
            redis="[redis]
url = \"redis://127.0.0.1:$P_REDIS\""
        fi
        start_portcullis_observed "$name" "$port" "$admin" "$redis
[[rate_limit]]
name = \"per-client\"
match = { path_prefix = \"/\" }
key = \"client_ip\"
limit = 1000000000
window_ms = 1000
scope = \"$scope\"
on_backend_error = \"allow\""
    done
}

# Observability rows: the plain proxy with the access log on (every request, to a file in the
# run's temp dir), and with OpenTelemetry traces at two sample ratios, exported to the nginx
# sink above ($P_OTLP answers 204). Same route as `portcullis`: the CPU difference is the cost.
start_portcullis_observed() { # NAME PORT ADMIN EXTRA_TOML
    local cfg
    cfg=$(portcullis_config "$1" "$2" "$3" "$4" '
[[route]]
name = "all"
match = { path_prefix = "/" }
cluster = "up1"')
    start_portcullis "$1" "$cfg" "$2" "$3" / || true
}

start_observability() {
    start_portcullis_observed portcullis-accesslog "$P_PCA" "$A_PCA" "[access_log]
path = \"$TMP/access.log\""
    local r name port admin
    for r in 0.01 1.0; do
        if [ "$r" = 0.01 ]; then
            name=portcullis-trace1pct port=$P_PCO1 admin=$A_PCO1
        else
            name=portcullis-trace100 port=$P_PCO100 admin=$A_PCO100
        fi
        start_portcullis_observed "$name" "$port" "$admin" "[tracing]
otlp_endpoint = \"http://127.0.0.1:$P_OTLP\"
sample_ratio = $r"
    done
}

# The observability rows' proof of work: access log lines written, spans exported, dropped,
# failed (a sink that refused the exports would make the tracing rows look cheap).
observed_counts() {
    local t m
    for t in portcullis-accesslog portcullis-trace1pct portcullis-trace100; do
        [ -n "${ADMIN[$t]:-}" ] || continue
        m=$(curl -fsS --max-time 2 "${ADMIN[$t]}/metrics" 2>/dev/null || true)
        note "$t: $(echo "$m" | awk '/^portcullis_(access_log_lines|access_log_dropped|tracing_requests_sampled|tracing_spans_exported|tracing_spans_dropped|tracing_spans_failed)_total / {sub(/^portcullis_/, "", $1); printf "%s %s, ", $1, $2}' | sed 's/, $//')"
    done
}

# The filter rows' proof that their filters ran: the calls counted by /admin/plugins, next to
# the requests those targets served (pass-through filters leave no other trace).
filter_calls() {
    local t calls
    for t in "$@"; do
        [ -n "${ADMIN[$t]:-}" ] || continue
        calls=$(curl -fsS --max-time 2 "${ADMIN[$t]}/admin/plugins" 2>/dev/null |
            grep -o '"calls": *[0-9]*' | awk -F: '{s += $2} END {print s + 0}')
        note "$t: its filters counted $calls calls in all (warm-up, throughput and latency runs)"
    done
}

# Each filter row's plugin CPU per call, as the gateway itself counts it (/admin/plugins:
# `cpu_seconds` / `calls`, summed over the row's filters, so per request). The JavaScript and
# Python rows' goal is ≤ 20 µs (issue 18).
guest_cpu_per_call() {
    local t line
    for t in "$@"; do
        [ -n "${ADMIN[$t]:-}" ] || continue
        line=$(curl -fsS --max-time 2 "${ADMIN[$t]}/admin/plugins" 2>/dev/null | python3 -c '
import json, sys
ps = json.load(sys.stdin)
cpu = sum(p["stats"]["cpu_seconds"] for p in ps)
calls = max((p["stats"]["calls"] for p in ps), default=0)
print(f"{cpu / calls * 1e6:.1f} µs of plugin CPU per request over {calls} requests" if calls else "no calls")
' 2>/dev/null || echo "unreadable /admin/plugins")
        note "$t: $line (the gateway's own per-plugin figure)"
    done
}

# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------
active_targets() {
    for t in direct nginx haproxy hyper-floor portcullis portcullis-routes portcullis-filter1 portcullis-filters portcullis-pass3 portcullis-js-filter portcullis-py-filter portcullis-unmatched portcullis-fanout portcullis-accesslog portcullis-trace1pct portcullis-trace100 portcullis-rl-local portcullis-rl-global; do
        [ -n "${URL[$t]:-}" ] && echo "$t"
    done
    return 0
}

run_wrk() { # TARGET SECS OUTFILE
    run_fg timeout $(($2 + 15)) taskset -c "$CPU_LG" wrk -t1 -c"$WRK_CONNS" -d"$2s" --timeout 2s "${URL[$1]}" >"$3" 2>&1 || true
}

# CPU time (ns) the process and its children have run, from the scheduler's per-thread
# accounting (/proc/*/task/*/schedstat): ns resolution, where /proc/*/stat has 10 ms ticks.
# `%.0f`, not `%d`: Debian's awk (mawk) clamps `%d` at 2^31, i.e. at 2.1 s of CPU.
cpu_ns() {
    local p kids=()
    mapfile -t kids < <(pgrep -P "$1" 2>/dev/null || true)
    for p in "$1" "${kids[@]}"; do
        cat /proc/"$p"/task/*/schedstat 2>/dev/null || true
    done | awk '{s += $1} END {printf "%.0f\n", s}'
}

# The serving process of a target: the proxy, or the upstream for `direct`.
serving_pid() {
    if [ "$1" = direct ]; then echo "${PID[upstream]}"; else echo "${PROC[$1]:-}"; fi
}

throughput() {
    local targets=("$@") c0 pid
    log "warm-up: ${WARM_SECS}s per target"
    for t in "${targets[@]}"; do run_wrk "$t" "$WARM_SECS" /dev/null; done
    for r in $(seq 1 "$ROUNDS"); do
        for t in "${targets[@]}"; do
            pid=$(serving_pid "$t")
            c0=$(cpu_ns "$pid")
            run_wrk "$t" "$TPUT_SECS" "$DATA/tput/$t.$r.txt"
            echo $(($(cpu_ns "$pid") - c0)) >"$DATA/cpu/$t.$r.txt"
            log "throughput round $r/$ROUNDS $t: $(awk '/Requests\/sec/ {print $2}' "$DATA/tput/$t.$r.txt") req/s"
        done
    done
}

median_rps() {
    cat "$DATA"/tput/"$1".*.txt 2>/dev/null | awk '/Requests\/sec/ {print $2}' | sort -g |
        awk '{a[NR]=$1} END { if (NR==0) print 0; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}

OHA_FMT=()
oha_flags() {
    if oha --help 2>&1 | grep -q -- '--output-format'; then
        OHA_FMT=(--output-format json)
    else
        OHA_FMT=(-j)
    fi
}

run_oha() { # URL RATE OUTFILE
    run_fg timeout $((LAT_SECS + 20)) taskset -c "$CPU_LG" oha -z "${LAT_SECS}s" -q "$2" -c "$OHA_CONNS" \
        --latency-correction --no-tui "${OHA_FMT[@]}" "$1" >"$3" 2>"$3.err" || true
}

scrape() { curl -fsS --max-time 2 "${ADMIN[$1]}/metrics" >"$2" 2>/dev/null || true; }

latency() {
    local targets=("$@")
    declare -gA RATE=()
    for t in "${targets[@]}"; do
        local m
        m=$(median_rps "$t")
        RATE[$t]=$(awk -v m="$m" 'BEGIN { r = int(m / 2); if (r < 100) r = 100; print r }')
    done
    for t in "${targets[@]}"; do
        log "latency $t at ${RATE[$t]} req/s for ${LAT_SECS}s"
        if [ -n "${ADMIN[$t]:-}" ]; then scrape "$t" "$DATA/metrics/$t.before"; fi
        run_oha "${URL[$t]}" "${RATE[$t]}" "$DATA/lat/$t.json"
        if [ -n "${ADMIN[$t]:-}" ]; then scrape "$t" "$DATA/metrics/$t.after"; fi
        if [ "$t" != direct ]; then
            log "latency direct at ${RATE[$t]} req/s (baseline for $t)"
            run_oha "${URL[direct]}" "${RATE[$t]}" "$DATA/lat/direct@$t.json"
        fi
    done
}

idle_test() { # TARGET
    local t=$1 p=${PROC[$1]:-}
    [ -n "$p" ] || return 0
    kb "$p" VmHWM >"$DATA/rss/$t.hwm"
    kb "$p" VmRSS >"$DATA/rss/$t.base"
    local hostport=${URL[$t]#http://} port path
    port=${hostport#127.0.0.1:}
    port=${port%%/*}
    path="/${hostport#*/}"
    log "idle: opening $IDLE_N keep-alive connections to $t"
    start "idle-$t" "$CPU_LG" python3 "$BENCH/idle_conns.py" 127.0.0.1 "$port" "$IDLE_N" --path "$path" --hold 120
    local deadline=$((SECONDS + 90)) line=""
    while [ $SECONDS -lt $deadline ]; do
        line=$(grep -m1 '^READY' "$TMP/idle-$t.log" 2>/dev/null || true)
        [ -n "$line" ] && break
        kill -0 "${PID[idle-$t]}" 2>/dev/null || break
        sleep 0.2
    done
    if [ -z "$line" ]; then
        note "idle test on $t did not finish opening connections: $(tail -n 2 "$TMP/idle-$t.log" | tr '\n' ' ' | cut -c1-200)"
        stop "idle-$t"
        return 0
    fi
    sleep 1
    local rss
    rss=$(kb "$p" VmRSS)
    set -- $line
    echo "$rss $2 $3" >"$DATA/rss/$t.idle"
    log "idle: $t holds $2 connections ($3 failed), VmRSS ${rss} kB"
    stop "idle-$t"
    sleep 1
}

h2_rows() {
    command -v h2load >/dev/null || return 0
    local out="$DATA/h2.md"
    {
        echo "\`h2load -t1 -c16 -m10 -D ${TPUT_SECS}\` (one round; h2c prior knowledge to the proxy; proxies speak HTTP/1.1 to the upstream)."
        echo
        echo "| target | req/s | succeeded | failed |"
        echo "|---|---|---|---|"
    } >"$out"
    local t url
    for t in nginx haproxy portcullis; do
        case $t in
            nginx) url="http://127.0.0.1:$P_NGINX_H2/" ;;
            haproxy) url="http://127.0.0.1:$P_HAPROXY_H2/" ;;
            portcullis) url="http://127.0.0.1:$P_PC/" ;;
        esac
        [ -n "${URL[$t]:-}" ] || continue
        local o="$TMP/h2-$t.txt"
        run_fg timeout $((TPUT_SECS + 15)) taskset -c "$CPU_LG" h2load -t1 -c16 -m10 -D "$TPUT_SECS" "$url" >"$o" 2>&1 || true
        local rps ok fail
        rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' "$o")
        ok=$(awk '/^requests:/ { print $8 }' "$o")
        fail=$(awk '/^requests:/ { print $10 }' "$o")
        log "h2 $t: ${rps:-?} req/s"
        echo "| $t | ${rps:-–} | ${ok:-–} | ${fail:-–} |" >>"$out"
    done
}

# Portcullis over TLS: HTTP/1.1, HTTP/2 (ALPN) and HTTP/3 (QUIC) on one listener, closed loop
# with oha (16 connections), one round each. Only Portcullis: Debian's nginx and HAProxy have
# no HTTP/3.
tls_rows() {
    command -v openssl >/dev/null || return 0
    local name=portcullis-tls
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
        -keyout "$TMP/tls.key" -out "$TMP/tls.crt" >/dev/null 2>&1 || return 0
    local f="$TMP/$name.toml"
    printf '%s\n' \
        "[admin]" "listen = \"127.0.0.1:$A_PCT\"" \
        "[[listener]]" "name = \"tls\"" "listen = \"127.0.0.1:$P_PCT\"" \
        "tls = { cert = \"$TMP/tls.crt\", key = \"$TMP/tls.key\" }" "http3 = true" \
        "[[cluster]]" "name = \"up1\"" "endpoints = [\"127.0.0.1:$U1\"]" \
        "[[route]]" "name = \"all\"" "match = { path_prefix = \"/\" }" "cluster = \"up1\"" >"$f"
    RUST_LOG=warn start "$name" "$CPU_SRV" "$PORTCULLIS" run --config "$f" --workers 1
    wait_http "http://127.0.0.1:$A_PCT/metrics" 10 "$name" || {
        stop "$name"
        return 0
    }
    local out="$DATA/tls.md"
    {
        echo "Portcullis over TLS, \`oha -c 16 -z ${TPUT_SECS}s --insecure\` closed loop, one round per protocol (HTTP/1.1 to the upstream)."
        echo
        echo "| protocol | req/s | p50 ms | p99 ms | errors |"
        echo "|---|---|---|---|---|"
    } >"$out"
    local v o
    for v in 1.1 2 3; do
        o="$TMP/tls-$v.json"
        run_fg timeout $((TPUT_SECS + 20)) taskset -c "$CPU_LG" oha -z "${TPUT_SECS}s" -c 16 --insecure \
            --http-version "$v" --no-tui "${OHA_FMT[@]}" "https://127.0.0.1:$P_PCT/" >"$o" 2>"$o.err" || true
        python3 "$BENCH/oha_row.py" "$o" "HTTP/$v" >>"$out" 2>/dev/null ||
            echo "| HTTP/$v | – | – | – | oha failed: $(head -c 120 "$o.err" | tr '\n' ' ') |" >>"$out"
        log "tls HTTP/$v done"
    done
    stop "$name"
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
main() {
    local t0=$SECONDS
    install_peers
    build_portcullis
    oha_flags
    pinning

    TMP=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-bench.XXXXXX")
    DATA="$TMP/data"
    mkdir -p "$DATA"/{tput,cpu,lat,metrics,rss,skip}
    : >"$DATA/notes.txt"

    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    FDS=$(ulimit -n)
    if [ "$FDS" = unlimited ]; then FDS=65536; fi
    if [ "$FDS" -lt $((IDLE_N + 1000)) ]; then
        note "ulimit -n is only $FDS here (hard limit): idle-connection test reduced from $IDLE_N to $((FDS - 1000)) connections"
        IDLE_N=$((FDS - 1000))
    fi

    for p in $U1 $U2 $U3 $P_NGINX $P_HAPROXY $P_PC $A_PC $P_PCF $A_PCF $P_PC1 $A_PC1 $P_PCE $A_PCE $P_PCT $A_PCT $P_NGINX_H2 $P_HAPROXY_H2 $P_FLOOR $P_PCP $A_PCP $P_PCR $A_PCR $P_PCU $A_PCU $P_PCA $A_PCA $P_PCO1 $A_PCO1 $P_PCO100 $A_PCO100 $P_OTLP $P_PCJ $A_PCJ $P_PCY $A_PCY $P_PCL $A_PCL $P_PCG $A_PCG $P_REDIS; do
        port_free "$p" || die "port $p on 127.0.0.1 is in use; set BENCH_PORT_BASE to another base"
    done

    local load1
    load1=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$load1" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
        note "load average $load1 at start on $(nproc) cores: other processes compete for the CPUs, so absolute numbers and latency tails (p99, p99.9) are inflated and noisy; compare ratios from this run only, and rerun on a quiet machine before concluding"
    fi

    start_upstream
    start_nginx
    start_haproxy
    start_floor
    start_portcullis_plain
    start_portcullis_routes
    start_portcullis_filters 1 portcullis-filter1 "$P_PC1" "$A_PC1"
    start_portcullis_filters 3 portcullis-filters "$P_PCF" "$A_PCF"
    start_portcullis_filters 3 portcullis-pass3 "$P_PCP" "$A_PCP" pass
    start_portcullis_filters 1 portcullis-js-filter "$P_PCJ" "$A_PCJ" js
    start_portcullis_filters 1 portcullis-py-filter "$P_PCY" "$A_PCY" py
    start_portcullis_filters "$UNMATCHED_N" portcullis-unmatched "$P_PCU" "$A_PCU" unmatched
    start_portcullis_fanout
    start_observability
    start_ratelimits

    mapfile -t TARGETS < <(active_targets)
    log "targets: ${TARGETS[*]}"
    [ -n "${URL[direct]:-}" ] || die "no upstream"

    throughput "${TARGETS[@]}"
    latency "${TARGETS[@]}"
    for t in nginx haproxy portcullis; do idle_test "$t"; done
    for t in portcullis-filter1 portcullis-filters portcullis-pass3 portcullis-fanout; do
        if [ -n "${PROC[$t]:-}" ]; then kb "${PROC[$t]}" VmHWM >"$DATA/rss/$t.hwm"; fi
    done
    filter_calls portcullis-filter1 portcullis-filters portcullis-pass3 portcullis-js-filter portcullis-py-filter
    guest_cpu_per_call portcullis-filter1 portcullis-pass3 portcullis-js-filter portcullis-py-filter
    observed_counts
    h2_rows
    tls_rows

    local date host
    date=$(date -u +%Y-%m-%d)
    host=$(hostname -s 2>/dev/null || hostname)
    local rates_json="{"
    for t in "${TARGETS[@]}"; do rates_json+="\"$t\": ${RATE[$t]:-0},"; done
    rates_json="${rates_json%,}}"
    python3 - "$DATA/meta.json" <<EOF
import json, sys
meta = {
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "host": "$host",
  "mode": "$MODE",
  "rounds": $ROUNDS, "tput_secs": $TPUT_SECS, "lat_secs": $LAT_SECS,
  "idle_n": $IDLE_N, "wrk_conns": $WRK_CONNS, "oha_conns": $OHA_CONNS,
  "cores": $NCPU,
  "cpu_model": """$(lscpu 2>/dev/null | awk -F: '/Model name/ {gsub(/^ +/, "", $2); print $2; exit}')""",
  "kernel": "$(uname -srm)",
  "mem": "$(free -h 2>/dev/null | awk '/^Mem:/ {print $2 " total"}')",
  "loadavg": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "git": "${BENCH_GIT:-$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '-dirty')}",
  "branch": "$(git -C "$ROOT" rev-parse --abbrev-ref HEAD 2>/dev/null)",
  "versions": """$(nginx -v 2>&1 | head -1); $(haproxy -v 2>&1 | head -1 | cut -d' ' -f1-3); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(oha --version 2>&1 | head -1); $(rustc --version)""",
  "cpu_loadgen": "$CPU_LG", "cpu_server": "$CPU_SRV",
  "pin_note": """$PIN_NOTE""",
  "upstream_desc": "\`examples/src/bin/bench_upstream.rs\`: hyper 1 HTTP/1.1 server, single-threaded tokio runtime, keep-alive, fixed 13-byte text/plain body, TCP_NODELAY; one process listening on 127.0.0.1:$U1/$U2/$U3 (the three clusters up1..up3 of the fan-out scenario).",
  "targets": "direct nginx haproxy hyper-floor portcullis portcullis-routes portcullis-filter1 portcullis-filters portcullis-pass3 portcullis-js-filter portcullis-py-filter portcullis-unmatched portcullis-fanout portcullis-accesslog portcullis-trace1pct portcullis-trace100 portcullis-rl-local portcullis-rl-global".split(),
  "routes_n": $ROUTES_N, "unmatched_n": $UNMATCHED_N,
  "rates": $rates_json,
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
    mkdir -p "$BENCH/results"
    local report="$BENCH/results/$date-$host${BENCH_SUFFIX:-}.md"
    if [ "$MODE" = quick ]; then report="$BENCH/results/$date-$host-quick${BENCH_SUFFIX:-}.md"; fi
    python3 "$BENCH/report.py" "$DATA" >"$report"
    echo >>"$report"
    echo "_Run took $((SECONDS - t0)) s of wall time (including build checks)._" >>"$report"
    cat "$report"
    log "report saved to ${report#"$ROOT"/}"
}

main
