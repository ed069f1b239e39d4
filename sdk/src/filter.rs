//! The `filter` world: Zuul-style inbound and outbound filters.

use crate::types::{InboundAction, OutboundAction, RequestView, ResponseView};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit/v0.3",
        world: "portcullis:plugin/filter",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "portcullis_sdk::filter::bindings",
        runtime_path: "portcullis_sdk::__private::wit_bindgen::rt",
        additional_derives: [Clone, PartialEq],
    });
}

/// A filter. The manifest's `kind` decides which method the gateway calls; the other keeps
/// its default and is never called.
///
/// An instance may serve many calls, one at a time (see `reuse_instance` in the manifest):
/// statics survive between calls, so cache only what is the same for every request (parsed
/// config), never request data. Use request `metadata` to pass facts from inbound to outbound
/// filters.
pub trait Filter {
    /// `kind = "inbound"`: runs before routing. The default continues unchanged.
    ///
    /// `req` is a view: each accessor (`req.header("x")`, `req.path()`) is one host call
    /// that copies just that field, so read what you need once and keep it in a local.
    ///
    /// Return [`InboundAction::Continue`], [`InboundAction::Modify`] (see
    /// [`crate::RequestEdit`]), [`InboundAction::Respond`] (see [`crate::respond`]) or
    /// [`InboundAction::Reject`] (see [`crate::reject`], [`crate::reject_with`]).
    fn on_request(req: &RequestView) -> InboundAction {
        let _ = req;
        InboundAction::Continue
    }

    /// `kind = "outbound"`: runs on the response head before it is sent. The default
    /// continues unchanged. Return [`OutboundAction::Continue`] or
    /// [`OutboundAction::Modify`] (see [`crate::ResponseEdit`]).
    fn on_response(req: &RequestView, resp: &ResponseView) -> OutboundAction {
        let _ = (req, resp);
        OutboundAction::Continue
    }
}

/// Registers a [`Filter`] implementation as the component's exports. Use once per plugin.
#[macro_export]
macro_rules! export_filter {
    ($t:ty) => {
        const _: () = {
            struct __PortcullisFilter;
            impl $crate::filter::bindings::Guest for __PortcullisFilter {
                fn on_request(req: &$crate::RequestView) -> $crate::InboundAction {
                    <$t as $crate::Filter>::on_request(req)
                }
                fn on_response(
                    req: &$crate::RequestView,
                    resp: &$crate::ResponseView,
                ) -> $crate::OutboundAction {
                    <$t as $crate::Filter>::on_response(req, resp)
                }
            }
            $crate::filter::bindings::__export_filter_world!(__PortcullisFilter);
        };
    };
}
