//! The WIT versions the gateway serves, and which one a component gets.
//!
//! One module per served version (`v0_1`, `v0_2`, `v0_3`): its `bindgen!` output, the host imports
//! for it, and the conversion of its types into the version-neutral ones in `api`. The rest
//! of the plugin runtime sees only [`Pre`], [`Instance`] and `api`.
//!
//! Which version: at load, from the `portcullis:plugin/*@X.Y.Z` interfaces the component
//! imports ([`link`]); a filter always imports `types` (its exports borrow `request-view`),
//! an endpoint at least `upstream` once it calls anything. A component importing none is
//! type-checked against each served world, newest first.
//!
//! Adding a version (say 0.4.0): `wit/v0.4/`, a `v0_4.rs` written like `v0_3.rs` (its new
//! imports in a macro next to [`common_imports!`], as 0.3.0's are in
//! [`kv_and_rate_limit_imports!`]), one variant in [`Pre`] and
//! [`Instance`] with one arm in each `match` below, and its row in [`SERVED`]. Retiring one
//! is the reverse; its components are then refused at load with the versions still served.

use super::api;
use super::engine::StoreData;
use super::manifest::Kind;
use wasmtime::component::{Component, Linker};
use wasmtime::Store;

/// The served versions, oldest first (what error messages list).
pub(crate) const SERVED: [&str; 3] = [v0_1::VERSION, v0_2::VERSION, v0_3::VERSION];

/// A component type-checked and pre-linked against one served version's world.
#[derive(Clone)]
pub enum Pre {
    V01(v0_1::Pre),
    V02(v0_2::Pre),
    V03(v0_3::Pre),
}

/// A live instance, of the same version as its [`Pre`].
pub enum Instance {
    V01(v0_1::Instance),
    V02(v0_2::Instance),
    V03(v0_3::Instance),
}

/// Adds every served version's host imports (and WASI) to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    v0_1::add_to_linker(linker)?;
    v0_2::add_to_linker(linker)?;
    v0_3::add_to_linker(linker)
}

/// Picks the WIT version `component` targets and links it as a `kind` plugin. The error
/// says what is wrong and, when the version is the problem, which versions are served.
pub(crate) fn link(
    linker: &Linker<StoreData>,
    component: &Component,
    kind: Kind,
) -> Result<Pre, String> {
    let versions = imported_versions(linker, component)?;
    let ipre = || {
        linker
            .instantiate_pre(component)
            .map_err(|e| format!("imports something the gateway does not provide: {e:#}"))
    };
    let world = match kind {
        Kind::Endpoint => "endpoint",
        Kind::Inbound | Kind::Outbound => "filter",
    };
    let typed = |version: &str, r: wasmtime::Result<Pre>| {
        r.map_err(|e| {
            format!("does not implement the `{world}` world of portcullis:plugin@{version}: {e:#}")
        })
    };
    match versions.as_slice() {
        [v] if v == v0_1::VERSION => typed(v, v0_1::Pre::new(ipre()?, kind).map(Pre::V01)),
        [v] if v == v0_2::VERSION => typed(v, v0_2::Pre::new(ipre()?, kind).map(Pre::V02)),
        [v] if v == v0_3::VERSION => typed(v, v0_3::Pre::new(ipre()?, kind).map(Pre::V03)),
        [v] => Err(format!(
            "targets portcullis:plugin@{v}, which this gateway does not serve (it serves {})",
            SERVED.join(", ")
        )),
        [] => {
            // Nothing imported from the contract: whichever world the exports fit, newest
            // first.
            let ipre = ipre()?;
            v0_3::Pre::new(ipre.clone(), kind)
                .map(Pre::V03)
                .or_else(|_| v0_2::Pre::new(ipre.clone(), kind).map(Pre::V02))
                .or_else(|_| v0_1::Pre::new(ipre, kind).map(Pre::V01))
                .map_err(|e| {
                    format!(
                        "implements no served version of the `{world}` world (served: {}): {e:#}",
                        SERVED.join(", ")
                    )
                })
        }
        many => Err(format!(
            "imports portcullis:plugin versions {} at once; a component targets one (served: {})",
            many.join(" and "),
            SERVED.join(", ")
        )),
    }
}

/// The distinct versions of `portcullis:plugin` interfaces `component` imports, sorted.
fn imported_versions(
    linker: &Linker<StoreData>,
    component: &Component,
) -> Result<Vec<String>, String> {
    let ty = component.component_type();
    let mut out: Vec<String> = Vec::new();
    for (name, _) in ty.imports(linker.engine()) {
        let Some(iface) = name.strip_prefix("portcullis:plugin/") else {
            continue;
        };
        let Some((_, version)) = iface.split_once('@') else {
            return Err(format!(
                "imports `{name}` without a version (served: {})",
                SERVED.join(", ")
            ));
        };
        if !out.iter().any(|v| v == version) {
            out.push(version.to_string());
        }
    }
    out.sort();
    Ok(out)
}

impl Pre {
    /// The WIT version, e.g. `0.2.0`.
    pub fn version(&self) -> &'static str {
        match self {
            Pre::V01(_) => v0_1::VERSION,
            Pre::V02(_) => v0_2::VERSION,
            Pre::V03(_) => v0_3::VERSION,
        }
    }

    pub fn is_filter(&self) -> bool {
        match self {
            Pre::V01(p) => p.is_filter(),
            Pre::V02(p) => p.is_filter(),
            Pre::V03(p) => p.is_filter(),
        }
    }

    pub async fn instantiate(&self, store: &mut Store<StoreData>) -> wasmtime::Result<Instance> {
        Ok(match self {
            Pre::V01(p) => Instance::V01(p.instantiate(store).await?),
            Pre::V02(p) => Instance::V02(p.instantiate(store).await?),
            Pre::V03(p) => Instance::V03(p.instantiate(store).await?),
        })
    }
}

impl Instance {
    /// Calls `on-request` on the view the store holds.
    pub async fn on_request(
        &self,
        store: &mut Store<StoreData>,
    ) -> wasmtime::Result<api::InboundAction> {
        match self {
            Instance::V01(i) => i.on_request(store).await,
            Instance::V02(i) => i.on_request(store).await,
            Instance::V03(i) => i.on_request(store).await,
        }
    }

    /// Calls `on-response` on the views the store holds.
    pub async fn on_response(
        &self,
        store: &mut Store<StoreData>,
    ) -> wasmtime::Result<api::OutboundAction> {
        match self {
            Instance::V01(i) => i.on_response(store).await,
            Instance::V02(i) => i.on_response(store).await,
            Instance::V03(i) => i.on_response(store).await,
        }
    }

    /// Calls an endpoint's `handle`.
    pub async fn handle(
        &self,
        store: &mut Store<StoreData>,
        req: api::Request,
    ) -> wasmtime::Result<api::Response> {
        match self {
            Instance::V01(i) => i.handle(store, req).await,
            Instance::V02(i) => i.handle(store, req).await,
            Instance::V03(i) => i.handle(store, req).await,
        }
    }
}

/// The part of a version module that is the same in every version so far: the typed
/// pre-linked component and instance of its two worlds, and the calls into them. Expects
/// the version's `filter` and `endpoint` bindgen modules, and `From` conversions between
/// their types and `api`'s, in scope.
macro_rules! worlds {
    () => {
        #[derive(Clone)]
        pub enum Pre {
            Filter(filter::FilterPre<StoreData>),
            Endpoint(endpoint::EndpointPre<StoreData>),
        }

        pub enum Instance {
            Filter(filter::Filter),
            Endpoint(endpoint::Endpoint),
        }

        impl Pre {
            /// Type-checks the component's exports against the world `kind` calls.
            pub(crate) fn new(
                ipre: wasmtime::component::InstancePre<StoreData>,
                kind: $crate::plugin::manifest::Kind,
            ) -> wasmtime::Result<Pre> {
                use $crate::plugin::manifest::Kind;
                Ok(match kind {
                    Kind::Inbound | Kind::Outbound => Pre::Filter(filter::FilterPre::new(ipre)?),
                    Kind::Endpoint => Pre::Endpoint(endpoint::EndpointPre::new(ipre)?),
                })
            }

            pub(crate) fn is_filter(&self) -> bool {
                matches!(self, Pre::Filter(_))
            }

            pub(crate) async fn instantiate(
                &self,
                store: &mut wasmtime::Store<StoreData>,
            ) -> wasmtime::Result<Instance> {
                Ok(match self {
                    Pre::Filter(p) => Instance::Filter(p.instantiate_async(store).await?),
                    Pre::Endpoint(p) => Instance::Endpoint(p.instantiate_async(store).await?),
                })
            }
        }

        impl Instance {
            pub(crate) async fn on_request(
                &self,
                store: &mut wasmtime::Store<StoreData>,
            ) -> wasmtime::Result<$crate::plugin::api::InboundAction> {
                let Instance::Filter(i) = self else {
                    return Err(wasmtime::Error::msg("not a filter"));
                };
                let rq = $crate::plugin::view::request_handle();
                Ok(i.call_on_request(store, rq).await?.into())
            }

            pub(crate) async fn on_response(
                &self,
                store: &mut wasmtime::Store<StoreData>,
            ) -> wasmtime::Result<$crate::plugin::api::OutboundAction> {
                let Instance::Filter(i) = self else {
                    return Err(wasmtime::Error::msg("not a filter"));
                };
                let rq = $crate::plugin::view::request_handle();
                let rs = $crate::plugin::view::response_handle();
                Ok(i.call_on_response(store, rq, rs).await?.into())
            }

            pub(crate) async fn handle(
                &self,
                store: &mut wasmtime::Store<StoreData>,
                req: $crate::plugin::api::Request,
            ) -> wasmtime::Result<$crate::plugin::api::Response> {
                let Instance::Endpoint(i) = self else {
                    return Err(wasmtime::Error::msg("not an endpoint"));
                };
                Ok(i.call_handle(store, &req.into()).await?.into())
            }
        }

        /// This version's host imports: the filter world's (types, log, metrics, config)
        /// and the endpoint world's `upstream`.
        pub(crate) fn add_to_linker(
            linker: &mut wasmtime::component::Linker<StoreData>,
        ) -> wasmtime::Result<()> {
            use wasmtime::component::HasSelf;
            filter::Filter::add_to_linker::<StoreData, HasSelf<StoreData>>(linker, |s| s)?;
            endpoint::portcullis::plugin::upstream::add_to_linker::<StoreData, HasSelf<StoreData>>(
                linker,
                |s| s,
            )
        }
    };
}

/// Host imports whose WIT is the same in every version so far (the `types` views, `log`,
/// `metrics`, `config`, `upstream`), implemented for the version whose generated interfaces
/// the invoking module names `wit_if` (`filter::portcullis::plugin`) and `wit_up` (its
/// `upstream`). Each delegates to the one version-neutral implementation (`view`, `stats`,
/// `upstream`).
macro_rules! common_imports {
    () => {
        use wasmtime::component::Resource;
        use $crate::plugin::view::{RequestView, ResponseView};

        impl wit_if::types::Host for StoreData {}

        impl wit_if::types::HostRequestView for StoreData {
            fn method(&mut self, _: Resource<RequestView>) -> String {
                self.view.req.method()
            }
            fn path(&mut self, _: Resource<RequestView>) -> String {
                self.view.req.path()
            }
            fn authority(&mut self, _: Resource<RequestView>) -> String {
                self.view.req.authority()
            }
            fn header(&mut self, _: Resource<RequestView>, name: String) -> Option<String> {
                self.view.req.header(&name)
            }
            fn header_all(&mut self, _: Resource<RequestView>, name: String) -> Vec<String> {
                self.view.req.header_all(&name)
            }
            fn headers(&mut self, _: Resource<RequestView>) -> Vec<(String, String)> {
                $crate::plugin::view::all(&self.view.req.parts.headers)
            }
            fn client_addr(&mut self, _: Resource<RequestView>) -> String {
                self.view.req.client.to_string()
            }
            fn body(&mut self, _: Resource<RequestView>) -> Option<Vec<u8>> {
                self.view.req.body.as_ref().map(|b| b.to_vec())
            }
            fn metadata(&mut self, _: Resource<RequestView>, key: String) -> Option<String> {
                self.view.req.meta(&key)
            }
            fn all_metadata(&mut self, _: Resource<RequestView>) -> Vec<(String, String)> {
                self.view.req.metadata.clone()
            }
            fn route(&mut self, _: Resource<RequestView>) -> String {
                self.view.req.route.clone()
            }
            /// Views are only ever lent to the guest (`borrow<request-view>`), never owned
            /// by it, so there is nothing to free.
            fn drop(&mut self, _: Resource<RequestView>) -> wasmtime::Result<()> {
                Ok(())
            }
        }

        impl wit_if::types::HostResponseView for StoreData {
            fn status(&mut self, _: Resource<ResponseView>) -> u16 {
                self.view.resp.status.as_u16()
            }
            fn header(&mut self, _: Resource<ResponseView>, name: String) -> Option<String> {
                $crate::plugin::view::first(&self.view.resp.headers, &name)
            }
            fn headers(&mut self, _: Resource<ResponseView>) -> Vec<(String, String)> {
                $crate::plugin::view::all(&self.view.resp.headers)
            }
            fn drop(&mut self, _: Resource<ResponseView>) -> wasmtime::Result<()> {
                Ok(())
            }
        }

        impl wit_if::log::Host for StoreData {
            fn log(&mut self, level: wit_if::log::Level, message: String) {
                use $crate::plugin::api::LogLevel;
                let level = match level {
                    wit_if::log::Level::Trace => LogLevel::Trace,
                    wit_if::log::Level::Debug => LogLevel::Debug,
                    wit_if::log::Level::Info => LogLevel::Info,
                    wit_if::log::Level::Warn => LogLevel::Warn,
                    wit_if::log::Level::Error => LogLevel::Error,
                };
                self.stats.guest_log(level, &message);
            }
        }

        impl wit_if::metrics::Host for StoreData {
            fn counter_add(&mut self, name: String, value: u64) {
                self.stats.guest_counter(&name, value);
            }
            fn histogram_observe(&mut self, name: String, value: f64) {
                self.stats.guest_histogram(&name, value);
            }
        }

        impl wit_if::config::Host for StoreData {
            fn get(&mut self, key: String) -> Option<String> {
                self.manifest.config_value(&key)
            }
            fn all(&mut self) -> String {
                serde_json::Value::Object(self.manifest.config.clone()).to_string()
            }
        }

        impl wit_up::Host for StoreData {
            async fn fetch(
                &mut self,
                call: wit_up::Call,
            ) -> Result<wit_up::Reply, wit_up::CallError> {
                match self.upstream_fetch(call.into()).await {
                    Ok(r) => Ok(r.into()),
                    Err(e) => Err(e.into()),
                }
            }

            async fn fetch_all(
                &mut self,
                calls: Vec<wit_up::Call>,
            ) -> Vec<Result<wit_up::Reply, wit_up::CallError>> {
                // Same-layout records: `collect` reuses the guest's vector in place.
                let calls = calls.into_iter().map(Into::into).collect();
                self.upstream_fetch_all(calls)
                    .await
                    .into_iter()
                    .map(|r| r.map(Into::into).map_err(Into::into))
                    .collect()
            }
        }
    };
}

/// The conversions between `api` and the types of 0.2.0, unchanged in every version since
/// (0.3.0 only added interfaces): one copy for all of them. Expects the version's `t`
/// (`types`) and `wit_up` (`upstream`) modules in scope.
macro_rules! conversions_since_0_2 {
    () => {
        use $crate::plugin::api;

        // ---- guest → host ----

        impl From<t::Priority> for $crate::config::Priority {
            fn from(p: t::Priority) -> Self {
                use $crate::config::Priority;
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
                    t::InboundAction::Modify(ch) => {
                        api::InboundAction::Modify(api::RequestChanges {
                            set_headers: ch.set_headers,
                            remove_headers: ch.remove_headers,
                            path: ch.path,
                            cluster: ch.cluster,
                            priority: ch.priority.map(Into::into),
                            metadata: ch.metadata,
                        })
                    }
                    t::InboundAction::Respond(r) => api::InboundAction::Respond(r.into()),
                    t::InboundAction::Reject(rj) => api::InboundAction::Reject(api::Rejection {
                        status: rj.status,
                        reason: rj.reason,
                        headers: rj.headers,
                    }),
                }
            }
        }

        impl From<t::OutboundAction> for api::OutboundAction {
            fn from(a: t::OutboundAction) -> Self {
                match a {
                    t::OutboundAction::Continue => api::OutboundAction::Continue,
                    t::OutboundAction::Modify(ch) => {
                        api::OutboundAction::Modify(api::ResponseChanges {
                            status: ch.status,
                            set_headers: ch.set_headers,
                            remove_headers: ch.remove_headers,
                        })
                    }
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
                    api::CallError::InvalidCall(why) => wit_up::CallError::InvalidCall(why),
                }
            }
        }
    };
}

/// The imports new in 0.3.0 (`kv`, `rate-limit`), for the version whose generated interfaces
/// the invoking module names `wit_if` (as for [`common_imports!`]). Each delegates to the
/// version-neutral implementation in `imports`.
macro_rules! kv_and_rate_limit_imports {
    () => {
        use $crate::plugin::api::{CheckError, KvError};

        impl wit_if::kv::Host for StoreData {
            async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, wit_if::kv::KvError> {
                self.kv_get(&key).await.map_err(Into::into)
            }
            async fn set(
                &mut self,
                key: String,
                value: Vec<u8>,
                ttl_ms: u64,
            ) -> Result<(), wit_if::kv::KvError> {
                self.kv_set(&key, value, ttl_ms).await.map_err(Into::into)
            }
            async fn delete(&mut self, key: String) -> Result<bool, wit_if::kv::KvError> {
                self.kv_delete(&key).await.map_err(Into::into)
            }
            async fn increment(
                &mut self,
                key: String,
                delta: i64,
                ttl_ms: u64,
            ) -> Result<i64, wit_if::kv::KvError> {
                self.kv_increment(&key, delta, ttl_ms)
                    .await
                    .map_err(Into::into)
            }
        }

        impl wit_if::rate_limit::Host for StoreData {
            async fn check(
                &mut self,
                name: String,
                key: String,
            ) -> Result<wit_if::rate_limit::Decision, wit_if::rate_limit::CheckError> {
                use wit_if::rate_limit as rl;
                match self.rate_check(&name, &key).await {
                    Ok(d) => Ok(rl::Decision {
                        allowed: d.allowed,
                        remaining: d.remaining,
                        retry_after_ms: d.retry_after_ms,
                        reset_ms: d.reset_ms,
                        limit: d.limit,
                        window_ms: d.window_ms,
                        fallback: d.fallback,
                    }),
                    Err(CheckError::UnknownLimit(n)) => Err(rl::CheckError::UnknownLimit(n)),
                    Err(CheckError::InvalidKey) => Err(rl::CheckError::InvalidKey),
                }
            }
        }

        impl From<KvError> for wit_if::kv::KvError {
            fn from(e: KvError) -> Self {
                use wit_if::kv::KvError as W;
                match e {
                    KvError::TooLarge(why) => W::TooLarge(why),
                    KvError::LimitExceeded(why) => W::LimitExceeded(why),
                    KvError::Unavailable(why) => W::Unavailable(why),
                    KvError::NotANumber => W::NotANumber,
                }
            }
        }
    };
}

pub(crate) use common_imports;
pub(crate) use conversions_since_0_2;
pub(crate) use kv_and_rate_limit_imports;
pub(crate) use worlds;

// After the macros they use.
pub(crate) mod v0_1;
pub(crate) mod v0_2;
pub(crate) mod v0_3;
