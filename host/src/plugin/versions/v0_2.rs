//! `portcullis:plugin@0.2.0` (`wit/v0.2`), the current version. Adds to 0.1.0: rejection
//! headers and the `invalid-call` error, both of which the neutral types carry as they are.

use super::super::engine::StoreData;

pub(crate) const VERSION: &str = "0.2.0";

pub(crate) mod filter {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
        world: "portcullis:plugin/filter",
        exports: { default: async },
        with: {
            "portcullis:plugin/types.request-view": crate::plugin::view::RequestView,
            "portcullis:plugin/types.response-view": crate::plugin::view::ResponseView,
        },
    });
}

pub(crate) mod endpoint {
    wasmtime::component::bindgen!({
        path: "../wit/v0.2",
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

use endpoint::portcullis::plugin::upstream as wit_up;
use filter::portcullis::plugin as wit_if;
use wit_if::types as t;

super::worlds!();
super::common_imports!();

super::conversions_since_0_2!();
