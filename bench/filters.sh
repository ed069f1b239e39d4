# Sourced by run.sh and single_proxy.sh: the benchmark's filter plugins, written one way.
#
#   write_filters DIR COUNT KIND GUEST_DIR
#
# KIND add-header: COUNT copies of add_header.wasm, each setting one request header
# (`x-bench-N: 1`). KIND pass: COUNT copies of the first-party cors.wasm; a request without
# `Origin` makes each read one header and continue (Envoy's "pass-through" case).
# KIND unmatched: COUNT add_header filters whose `[match]` never fits (`/never-N`): what a
# loaded filter costs a request it does not apply to. KIND js / py: COUNT copies of the
# trivial JavaScript / Python filter (pass_js.wasm / pass_py.wasm: read one header and
# continue), from $JSPY_DIR (plugins/target/js-py/out, built by examples/build.rs) when set.
# All inbound, orders 10, 20, 30 …,
# `fail_open`, matching every path (except `unmatched`). Returns 1, with the reason on stderr,
# when the guest is missing.
write_filters() {
    local dir=$1 count=$2 kind=$3 guests=$4 guest=add_header i conf prefix
    [ "$kind" = pass ] && guest=cors
    [ "$kind" = js ] && guest=pass_js && guests=${JSPY_DIR:-$guests}
    [ "$kind" = py ] && guest=pass_py && guests=${JSPY_DIR:-$guests}
    [ -f "$guests/$guest.wasm" ] || {
        echo "$guest.wasm missing in $guests" >&2
        return 1
    }
    mkdir -p "$dir"
    for i in $(seq 1 "$count"); do
        cp "$guests/$guest.wasm" "$dir/hdr$i.wasm"
        conf="set = { \"x-bench-$i\" = \"1\" }"
        [ "$kind" = pass ] && conf='origins = ["https://app.example"]'
        { [ "$kind" = js ] || [ "$kind" = py ]; } && conf=''
        prefix=/
        [ "$kind" = unmatched ] && prefix="/never-$i"
        printf 'kind = "inbound"\norder = %d\nfailure = "fail_open"\n[match]\npath_prefix = "%s"\n[config]\n%s\n' \
            "$((i * 10))" "$prefix" "$conf" >"$dir/hdr$i.toml"
    done
}
