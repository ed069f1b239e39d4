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
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PORT_BASE="${BENCH_PORT_BASE:-18180}"
U=$((PORT_BASE + 1)) P=$((PORT_BASE + 12)) A=$((PORT_BASE + 13))
OUT="$ROOT/bench/results/profile-$(date -u +%Y%m%d)"
if [ "$FILTERS" -gt 0 ]; then OUT="$OUT-filters$FILTERS"; fi
mkdir -p "$OUT"
command -v perf >/dev/null || { echo "perf not found: apt-get install -y linux-perf" >&2; exit 1; }

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
if [ "$FILTERS" -gt 0 ]; then
    WASM="$ROOT/plugins/target/wasm32-wasip2/release/add_header.wasm"
    [ -f "$WASM" ] || { echo "$WASM missing: run bench/run.sh once" >&2; exit 1; }
    mkdir -p "$TMP/plugins"
    for i in $(seq 1 "$FILTERS"); do
        cp "$WASM" "$TMP/plugins/hdr$i.wasm"
        printf 'kind = "inbound"\norder = %d\nfailure = "fail_open"\n[config]\nset = { "x-bench-%d" = "1" }\n' \
            "$((i * 10))" "$i" >"$TMP/plugins/hdr$i.toml"
    done
    printf '[plugins]\ndir = "%s"\n' "$TMP/plugins" >>"$TMP/pc.toml"
fi
taskset -c 1 "$TARGET_DIR/release/bench_upstream" "127.0.0.1:$U" >"$TMP/up.log" 2>&1 &
PIDS+=($!)
RUST_LOG=warn taskset -c 1 "$TARGET_DIR/release/portcullis" run --config "$TMP/pc.toml" --workers 1 >"$TMP/pc.log" 2>&1 &
PC=$!
PIDS+=($PC)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$P/" 2>/dev/null && break; sleep 0.1; done

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
