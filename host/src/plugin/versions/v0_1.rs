//! `portcullis:plugin@0.1.0` (`wit/v0.1`), frozen: served so that plugins built against it
//! keep loading and behaving as they did. Differences from the neutral types: a rejection
//! has no headers, and a malformed upstream call is reported as `limit-exceeded`, as 0.1.0
//! always did.

use super::super::api;
use super::super::engine::StoreData;
use crate::config::Priority;

pub(crate) const VERSION: &str = "0.1.0";

pub(crate) mod filter {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1",
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
        path: "../wit/v0.1",
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

// ---- guest → host ----

impl From<t::Priority> for Priority {
    fn from(p: t::Priority) -> Self {
        match p {
            t::Priority::Critical => Priority::Critical,
            t::Priority::Normal => Priority::Normal,
            t::Priority::Sheddable => Priority::Sheddable,
        }
    }
}

impl From<t::Response> for api::Response {
    fn from(r: t::Response) -> Self {
        api::Response {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<t::InboundAction> for api::InboundAction {
    fn from(a: t::InboundAction) -> Self {
        match a {
            t::InboundAction::Continue => api::InboundAction::Continue,
            t::InboundAction::Modify(ch) => api::InboundAction::Modify(api::RequestChanges {
                set_headers: ch.set_headers,
                remove_headers: ch.remove_headers,
                path: ch.path,
                cluster: ch.cluster,
                priority: ch.priority.map(Into::into),
                metadata: ch.metadata,
            }),
            t::InboundAction::Respond(r) => api::InboundAction::Respond(r.into()),
            t::InboundAction::Reject(rj) => api::InboundAction::Reject(api::Rejection {
                status: rj.status,
                reason: rj.reason,
                headers: Vec::new(),
            }),
        }
    }
}

impl From<t::OutboundAction> for api::OutboundAction {
    fn from(a: t::OutboundAction) -> Self {
        match a {
            t::OutboundAction::Continue => api::OutboundAction::Continue,
            t::OutboundAction::Modify(ch) => api::OutboundAction::Modify(api::ResponseChanges {
                status: ch.status,
                set_headers: ch.set_headers,
                remove_headers: ch.remove_headers,
            }),
        }
    }
}

impl From<wit_up::Call> for api::Call {
    fn from(c: wit_up::Call) -> Self {
        api::Call {
            cluster: c.cluster,
            method: c.method,
            path: c.path,
            headers: c.headers,
            body: c.body,
            timeout_ms: c.timeout_ms,
        }
    }
}

// ---- host → guest ----

impl From<api::Request> for t::Request {
    fn from(r: api::Request) -> Self {
        t::Request {
            method: r.method,
            path: r.path,
            authority: r.authority,
            headers: r.headers,
            client_addr: r.client_addr,
            body: r.body,
            metadata: r.metadata,
            route: r.route,
        }
    }
}

impl From<api::Reply> for wit_up::Reply {
    fn from(r: api::Reply) -> Self {
        wit_up::Reply {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

impl From<api::CallError> for wit_up::CallError {
    fn from(e: api::CallError) -> Self {
        match e {
            api::CallError::Timeout => wit_up::CallError::Timeout,
            api::CallError::ConnectFailed => wit_up::CallError::ConnectFailed,
            api::CallError::Overloaded => wit_up::CallError::Overloaded,
            api::CallError::UnknownCluster => wit_up::CallError::UnknownCluster,
            api::CallError::LimitExceeded(why) => wit_up::CallError::LimitExceeded(why),
            api::CallError::UpstreamReset => wit_up::CallError::UpstreamReset,
            // 0.1.0 has no `invalid-call`: what it always said, with the same reason.
            api::CallError::InvalidCall(why) => wit_up::CallError::LimitExceeded(why),
        }
    }
}
