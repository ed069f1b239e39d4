//! `portcullis:plugin@0.3.0` (`wit/v0.3`), the current version. Adds to 0.2.0 the `kv` and
//! `rate-limit` imports (both worlds); every type 0.2.0 had is unchanged, so its conversions
//! are 0.2.0's ([`super::conversions_since_0_2!`]).

use super::super::engine::StoreData;

pub(crate) const VERSION: &str = "0.3.0";

pub(crate) mod filter {
    wasmtime::component::bindgen!({
        path: "../wit/v0.3",
        world: "portcullis:plugin/filter",
        // They may wait on Redis; the guest is suspended meanwhile.
        imports: {
            "portcullis:plugin/kv": async,
            "portcullis:plugin/rate-limit": async,
        },
        exports: { default: async },
        with: {
            "portcullis:plugin/types.request-view": crate::plugin::view::RequestView,
            "portcullis:plugin/types.response-view": crate::plugin::view::ResponseView,
        },
    });
}

pub(crate) mod endpoint {
    wasmtime::component::bindgen!({
        path: "../wit/v0.3",
        world: "portcullis:plugin/endpoint",
        imports: { "portcullis:plugin/upstream": async },
        exports: { default: async },
        with: {
            "portcullis:plugin/types": super::filter::portcullis::plugin::types,
            "portcullis:plugin/log": super::filter::portcullis::plugin::log,
            "portcullis:plugin/metrics": super::filter::portcullis::plugin::metrics,
            "portcullis:plugin/config": super::filter::portcullis::plugin::config,
            "portcullis:plugin/kv": super::filter::portcullis::plugin::kv,
            "portcullis:plugin/rate-limit": super::filter::portcullis::plugin::rate_limit,
        },
    });
}

use endpoint::portcullis::plugin::upstream as wit_up;
use filter::portcullis::plugin as wit_if;
use wit_if::types as t;

super::worlds!();
super::common_imports!();
super::kv_and_rate_limit_imports!();
super::conversions_since_0_2!();
