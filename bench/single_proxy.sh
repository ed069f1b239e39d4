# Sourced by profile.sh and cpu_per_request.sh: one Portcullis (--workers 1) and one
# bench_upstream on core 1, one route `/`, optionally FILTERS add-header filters as run.sh's
# filter rows have. Everything started is stopped on exit. Loopback only.
#
# FILTER=pass installs the first-party CORS filter instead (a request without `Origin`: it
# reads one header and continues), the cheapest useful filter.
#
# EPOCH_TICK_MS sets `[plugins] epoch_tick_ms` (default 2, the gateway's default).
#
# UPSTREAM_CORE (default 1, run.sh's layout) moves the upstream elsewhere, e.g. to core 0
# with the load generator, to see Portcullis' cost without a co-located upstream (information
# only: run.sh's rows and ratios always use the shared core).
#
# Needs ROOT and PORT_BASE set by the caller. Sets TMP, PIDS, U, P, A, UP (upstream pid),
# PC (Portcullis pid) once `single_proxy_start FILTERS` returns.

# shellcheck source=filters.sh
source "$ROOT/bench/filters.sh"
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
U=$((PORT_BASE + 1)) P=$((PORT_BASE + 12)) A=$((PORT_BASE + 13))
TMP=$(mktemp -d)
PIDS=()

single_proxy_cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap single_proxy_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

single_proxy_start() {
    local filters=$1 b
    for b in portcullis bench_upstream; do
        [ -x "$REL/$b" ] || { echo "$REL/$b missing: run bench/run.sh once" >&2; exit 1; }
    done
    cat >"$TMP/pc.toml" <<EOF
[admin]
listen = "127.0.0.1:$A"
[[listener]]
name = "bench"
listen = "127.0.0.1:$P"
[timeouts]
drain_ms = 1000
[[cluster]]
name = "up1"
endpoints = ["127.0.0.1:$U"]
[[route]]
name = "all"
match = { path_prefix = "/" }
cluster = "up1"
EOF
    if [ "$filters" -gt 0 ]; then
        write_filters "$TMP/plugins" "$filters" "${FILTER:-add-header}" \
            "$ROOT/plugins/target/wasm32-wasip2/release" || {
            echo "run bench/run.sh once to build the guests" >&2
            exit 1
        }
        printf '[plugins]\ndir = "%s"\nepoch_tick_ms = %d\n' "$TMP/plugins" "${EPOCH_TICK_MS:-2}" >>"$TMP/pc.toml"
    fi
    taskset -c "${UPSTREAM_CORE:-1}" "$REL/bench_upstream" "127.0.0.1:$U" >"$TMP/up.log" 2>&1 &
    UP=$!
    PIDS+=("$UP")
    RUST_LOG=warn taskset -c 1 "$REL/portcullis" run --config "$TMP/pc.toml" --workers 1 >"$TMP/pc.log" 2>&1 &
    PC=$!
    PIDS+=("$PC")
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$P/" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "portcullis did not answer on 127.0.0.1:$P; log:" >&2
    tail -n 20 "$TMP/pc.log" >&2
    exit 1
}
