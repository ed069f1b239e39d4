#!/usr/bin/env bash
# User-space instructions per proxied request, side by side in one run, under
# `valgrind --tool=callgrind`: nginx, the `hyper_floor`, Portcullis with no filter, with one
# trivial filter (add-header), with one pass-through filter (cors, no `Origin`), with
# UNMATCHED (default 24) filters whose match never fits, and the fan-out endpoint (three
# upstream calls per request).
#
#   bash bench/instructions.sh [REQUESTS]     # default 3000 per target
#   CONC=64 bash bench/instructions.sh        # oha connections (default 8)
#   BENCH_SUFFIX=-after bash bench/instructions.sh   # …-instructions-after.md: a second run
#                                             # the same day does not overwrite the first
#
# Why: on a shared 2-core machine req/s and even CPU µs per request move by 10% between
# runs; an instruction count is the same for the same binary and inputs whatever else the
# machine does (valgrind counts instructions, not time). It leaves out the kernel (the same
# syscalls for every proxy) and cache misses, so it complements run.sh's CPU per request:
# use it to A/B a change to the request path, and run.sh for the verdicts.
#
# Method per target: start it under callgrind with instrumentation off, warm up with 500
# requests (pools, caches, instances), switch instrumentation on, send REQUESTS requests with
# `oha -c 8` on keep-alive connections, switch it off and dump. Instructions per request =
# the dump's total / REQUESTS. The upstream (bench_upstream) runs natively. Loopback only;
# each target is bounded by a 300 s timeout.
#
# Needs: valgrind, oha, nginx, and the release binaries (`cargo build --release -p
# portcullis -p portcullis-examples`) and release guests (built by run.sh) — it says what is
# missing. Writes bench/results/<date>-instructions${BENCH_SUFFIX}.md (and the callgrind dumps in a temp
# dir, kept with KEEP=1 for callgrind_annotate).
set -Eeuo pipefail
N=${1:-3000}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REL="${CARGO_TARGET_DIR:-$ROOT/target}/release"
GUESTS="$ROOT/plugins/target/wasm32-wasip2/release"
BASE=${BENCH_PORT_BASE:-18260}
U=$((BASE + 1)) P=$((BASE + 2)) A=$((BASE + 3))
TMP=$(mktemp -d)
OUT="$ROOT/bench/results/$(date -u +%Y-%m-%d)-instructions${BENCH_SUFFIX:-}.md"
# shellcheck source=filters.sh
source "$ROOT/bench/filters.sh"

missing=()
for c in valgrind callgrind_control callgrind_annotate oha; do
    command -v "$c" >/dev/null || missing+=("$c")
done
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
for b in portcullis hyper_floor bench_upstream; do
    [ -x "$REL/$b" ] || missing+=("$REL/$b (cargo build --release -p portcullis -p portcullis-examples)")
done
for g in add_header cors fanout; do
    [ -f "$GUESTS/$g.wasm" ] || missing+=("$GUESTS/$g.wasm (bash bench/run.sh --quick builds it)")
done
if [ ${#missing[@]} -gt 0 ]; then
    printf 'missing: %s\n' "${missing[@]}" >&2
    exit 1
fi
PATH="$PATH:/usr/sbin"

UP_PID=
cleanup() {
    [ -n "$UP_PID" ] && kill "$UP_PID" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then echo "dumps kept in $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
"$REL/bench_upstream" "127.0.0.1:$U" >"$TMP/upstream.log" 2>&1 &
UP_PID=$!

# gateway_config FILE ROUTE_TARGET PLUGIN_DIR: the listener, admin, the clusters up1..up3 (all
# the one upstream), one catch-all route to ROUTE_TARGET, and [plugins] when PLUGIN_DIR is set.
gateway_config() {
    local c
    printf '[admin]\nlisten = "127.0.0.1:%s"\n[[listener]]\nname = "bench"\nlisten = "127.0.0.1:%s"\n[timeouts]\ndrain_ms = 200\n' \
        "$A" "$P" >"$1"
    for c in up1 up2 up3; do
        printf '[[cluster]]\nname = "%s"\nendpoints = ["127.0.0.1:%s"]\n' "$c" "$U" >>"$1"
    done
    printf '[[route]]\nname = "all"\nmatch = { path_prefix = "/" }\n%s\n' "$2" >>"$1"
    # valgrind cannot reserve the default pool's address space (instances × memory).
    [ -z "${3:-}" ] ||
        printf '[plugins]\ndir = "%s"\nmax_instances = 16\nmax_memory_mb = 32\n' "$3" >>"$1"
}

portcullis_config() { # FILE [FILTER_KIND [COUNT]]
    local dir=""
    if [ -n "${2:-}" ]; then
        dir="$TMP/plugins-$2"
        write_filters "$dir" "${3:-1}" "$2" "$GUESTS"
    fi
    gateway_config "$1" 'cluster = "up1"' "$dir"
}

fanout_config() { # FILE: the fan-out endpoint (fanout.wasm) calling three clusters per request
    local dir="$TMP/plugins-fanout"
    mkdir -p "$dir"
    cp "$GUESTS/fanout.wasm" "$dir/fanout.wasm"
    printf 'kind = "endpoint"\n[config]\nclusters = "up1,up2,up3"\n' >"$dir/fanout.toml"
    gateway_config "$1" 'endpoint = "fanout"' "$dir"
}

nginx_config() { # DIR
    mkdir -p "$1/logs" "$1/tmp"
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $1/tmp/body;
    proxy_temp_path $1/tmp/proxy;
    fastcgi_temp_path $1/tmp/fastcgi;
    uwsgi_temp_path $1/tmp/uwsgi;
    scgi_temp_path $1/tmp/scgi;
    keepalive_requests 1000000;
    upstream up {
        server 127.0.0.1:$U;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$P;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

# measure NAME CMD... : prints instructions per request.
measure() {
    local name=$1 vp i total
    shift
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$TMP/$name.out" \
        "$@" >"$TMP/$name.log" 2>&1 &
    vp=$!
    for i in $(seq 1 300); do
        curl -fsS -o /dev/null "http://127.0.0.1:$P/" 2>/dev/null && break
        kill -0 "$vp" 2>/dev/null || break
        sleep 0.2
    done
    if ! curl -fsS -o /dev/null "http://127.0.0.1:$P/" 2>/dev/null; then
        echo "$name did not start; its log:" >&2
        tail -n 5 "$TMP/$name.log" >&2
        kill "$vp" 2>/dev/null || true
        return 1
    fi
    timeout 300 oha -n 500 -c "${CONC:-8}" --no-tui "http://127.0.0.1:$P/" >/dev/null 2>&1
    callgrind_control -i on "$vp" >/dev/null 2>&1
    timeout 300 oha -n "$N" -c "${CONC:-8}" --no-tui "http://127.0.0.1:$P/" >"$TMP/$name.oha" 2>&1
    callgrind_control -i off "$vp" >/dev/null 2>&1
    callgrind_control -d "$vp" >/dev/null 2>&1
    sleep 0.5
    kill "$vp" 2>/dev/null || true
    wait "$vp" 2>/dev/null || true
    grep -q 'Success rate:.*100.00%' "$TMP/$name.oha" || {
        echo "$name: not every request succeeded:" >&2
        grep -E 'Success rate|Error' "$TMP/$name.oha" >&2
        return 1
    }
    total=$(callgrind_annotate "$TMP/$name.out.1" 2>/dev/null |
        awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
    echo $((total / N))
}

declare -A IR
nginx_config "$TMP/nginx"
portcullis_config "$TMP/pc.toml"
portcullis_config "$TMP/pc-filter.toml" add-header
portcullis_config "$TMP/pc-pass.toml" pass
# More than the index's scan threshold (16), so the lookup is what runs; run.sh loads 200.
portcullis_config "$TMP/pc-unmatched.toml" unmatched "${UNMATCHED:-24}"
fanout_config "$TMP/pc-fanout.toml"
IR[nginx]=$(measure nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf")
IR[floor]=$(measure floor "$REL/hyper_floor" "127.0.0.1:$P" "127.0.0.1:$U")
for t in pc pc-filter pc-pass pc-unmatched pc-fanout; do
    IR[$t]=$(RUST_LOG=warn measure "$t" "$REL/portcullis" run --config "$TMP/$t.toml" --workers 1)
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
{
    echo "# User-space instructions per proxied request — $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "Generated by \`bash bench/instructions.sh $N\` (callgrind; $N requests per target after 500 warm-up, \`oha -c 8\`, keep-alive, one worker each). Git: \`$(git -C "$ROOT" rev-parse --short HEAD)\`$(git -C "$ROOT" diff --quiet HEAD -- host examples Cargo.toml || echo ' with uncommitted changes')."
    echo
    echo "| target | instructions / request | vs nginx | vs hyper floor |"
    echo "|---|---|---|---|"
    for t in nginx floor pc pc-filter pc-pass pc-unmatched pc-fanout; do
        case $t in
            nginx) label="nginx (1 worker, upstream keepalive)" ;;
            floor) label="hyper floor (bare hyper 1 proxy)" ;;
            pc) label="Portcullis" ;;
            pc-filter) label="Portcullis + 1 trivial filter (add-header)" ;;
            pc-pass) label="Portcullis + 1 pass-through filter (cors)" ;;
            pc-unmatched) label="Portcullis + ${UNMATCHED:-24} filters whose match never fits" ;;
            pc-fanout) label="Portcullis fan-out endpoint, 3 upstream calls per request" ;;
        esac
        echo "| $label | ${IR[$t]} | $(ratio "${IR[$t]}" "${IR[nginx]}") | $(ratio "${IR[$t]}" "${IR[floor]}") |"
    done
    echo
    echo "Added by one trivial filter: $((IR[pc-filter] - IR[pc])) instructions; by one pass-through filter: $((IR[pc-pass] - IR[pc])); by ${UNMATCHED:-24} unmatched filters: $((IR[pc-unmatched] - IR[pc])). A fan-out request costs $(ratio "${IR[pc-fanout]}" "${IR[pc]}") a proxied one."
} | tee "$OUT"
echo "written: ${OUT#"$ROOT"/}"
