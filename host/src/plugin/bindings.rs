//! Host-side bindings generated from `wit/`. Both worlds share one set of types, so a value
//! built for a filter is the same Rust type an endpoint sees.

pub(super) mod filter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "portcullis:plugin/filter",
        exports: { default: async },
        with: {
            "portcullis:plugin/types.request-view": crate::plugin::view::RequestView,
            "portcullis:plugin/types.response-view": crate::plugin::view::ResponseView,
        },
    });
}

pub(super) mod endpoint {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "portcullis:plugin/endpoint",
        imports: { "portcullis:plugin/upstream": async },
        exports: { default: async },
        with: {
            "portcullis:plugin/types": super::filter::portcullis::plugin::types,
            "portcullis:plugin/log": super::filter::portcullis::plugin::log,
            "portcullis:plugin/metrics": super::filter::portcullis::plugin::metrics,
            "portcullis:plugin/config": super::filter::portcullis::plugin::config,
        },
    });
}

pub(super) use endpoint::portcullis::plugin::upstream;
pub(super) use filter::portcullis::plugin::types;
