//! OpenTelemetry traces end to end: a real gateway exporting OTLP/HTTP protobuf to a real
//! receiver on loopback (`portcullis_tests::otlp`), real upstreams and plugins. Checks the
//! span tree (request → plugin calls, upstream attempts, fan-out calls), the W3C context the
//! upstream receives, parent-based sampling, retries, the shutdown flush, the `/metrics`
//! counters and the config checks.

use http::Request;
use portcullis_tests::otlp::{Span, KIND_CLIENT, KIND_INTERNAL, KIND_SERVER};
use portcullis_tests::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn tracing_section(rx: &OtlpReceiver, extra: &str) -> String {
    format!(
        "[tracing]\notlp_endpoint = \"{}\"\nexport_interval_ms = 20\nservice_name = \"gw-test\"\n{extra}\n",
        rx.endpoint()
    )
}

/// A random trace id, and a `traceparent` naming it with a random client span.
fn client_context(sampled: bool) -> (String, String, String) {
    let trace = format!("{:032x}", fastrand::u128(1..));
    let span = format!("{:016x}", fastrand::u64(1..));
    let tp = format!("00-{trace}-{span}-{}", if sampled { "01" } else { "00" });
    (trace, span, tp)
}

fn with_traceparent(mut req: Request<BoxBody>, tp: &str) -> Request<BoxBody> {
    req.headers_mut()
        .insert("traceparent", tp.parse().expect("header"));
    req
}

/// The `traceparent` the echoing upstream received, split into (trace, parent, flags).
fn upstream_traceparent(body: &[u8]) -> (String, String, String) {
    let v: Value = serde_json::from_slice(body).expect("echo json");
    assert!(
        !v["repeated"].to_string().contains("traceparent"),
        "one traceparent goes up, not the client's beside ours: {v}"
    );
    let tp = v["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("no traceparent upstream: {v}"))
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn one<'a>(spans: &'a [Span], what: &str, f: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|s| f(s)).collect();
    assert_eq!(found.len(), 1, "one {what} span in {spans:#?}");
    found[0]
}

fn within(child: &Span, parent: &Span) {
    assert!(
        child.start_ns >= parent.start_ns && child.end_ns <= parent.end_ns,
        "{} [{}, {}] not within {} [{}, {}]",
        child.name,
        child.start_ns,
        child.end_ns,
        parent.name,
        parent.start_ns,
        parent.end_ns
    );
}

#[tokio::test]
async fn a_filtered_proxied_request_is_one_trace_the_upstream_continues() {
    let rx = OtlpReceiver::start().await;
    let up = Upstream::start("up").await;
    let dir = temp_dir("tracing-filter");
    install_plugin(
        &dir,
        "tag",
        "testbed",
        "kind = \"inbound\"\n[match]\npath_prefix = \"/up\"\n[config]\nmode = \"ok\"\n",
    );
    let config = basic_config(
        &[("up", up.addr)],
        &format!(
            "[plugins]\ndir = \"{}\"\n{}",
            dir.display(),
            tracing_section(&rx, "sample_ratio = 0.0")
        ),
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (trace, client_span, tp) = client_context(true);
    let mut req = with_traceparent(get(addr, "/up//traced?q=1"), &tp);
    req.headers_mut()
        .insert("x-request-id", "tr-1".parse().expect("header"));
    let (p, body) = send(addr, req).await;
    assert_eq!(p.status, 200);

    let spans = rx.wait_trace(&trace, 3, WAIT).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    assert!(spans.iter().all(|s| s.service == "gw-test"), "{spans:#?}");
    let request = one(&spans, "request", |s| s.kind == KIND_SERVER);
    assert_eq!(
        request.parent_span_id, client_span,
        "the client's span is the parent"
    );
    assert_eq!(request.name, "GET up");
    assert_eq!(request.attr("http.request.method"), Some("GET"));
    assert_eq!(
        request.attr("url.path"),
        Some("/up/traced"),
        "normalized, no query"
    );
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    assert_eq!(request.attr("portcullis.route"), Some("up"));
    assert_eq!(request.attr("portcullis.cluster"), Some("up"));
    assert_eq!(request.attr("portcullis.request_id"), Some("tr-1"));
    assert_eq!(request.attr("error.type"), None);
    assert_eq!(request.status, 0);

    let plugin = one(&spans, "plugin", |s| s.kind == KIND_INTERNAL);
    assert_eq!(plugin.parent_span_id, request.span_id);
    assert_eq!(plugin.name, "plugin tag");
    assert_eq!(plugin.attr("portcullis.plugin.name"), Some("tag"));
    assert_eq!(plugin.attr("portcullis.plugin.phase"), Some("inbound"));
    // testbed `ok` adds a header.
    assert_eq!(plugin.attr("portcullis.plugin.outcome"), Some("modify"));
    assert_eq!(
        plugin.attr("portcullis.plugin.version").map(str::len),
        Some(16),
        "{plugin:?}"
    );
    let cpu: u64 = plugin
        .attr("portcullis.plugin.cpu_us")
        .and_then(|c| c.parse().ok())
        .expect("cpu_us");
    assert!(
        cpu <= (plugin.end_ns - plugin.start_ns) / 1000 + 1,
        "{plugin:?}"
    );
    within(plugin, request);

    let attempt = one(&spans, "attempt", |s| s.kind == KIND_CLIENT);
    assert_eq!(attempt.parent_span_id, request.span_id);
    assert_eq!(attempt.name, "upstream up");
    assert_eq!(attempt.attr("portcullis.cluster"), Some("up"));
    assert_eq!(
        attempt.attr("server.address"),
        Some(up.addr.to_string().as_str())
    );
    assert_eq!(attempt.attr("portcullis.upstream.attempt"), Some("1"));
    assert_eq!(attempt.attr("http.response.status_code"), Some("200"));
    within(attempt, request);
    assert!(
        plugin.end_ns <= attempt.start_ns,
        "filters run before the attempt"
    );

    // The upstream continues the same trace, with the attempt's span as its parent.
    let (up_trace, up_parent, flags) = upstream_traceparent(&body);
    assert_eq!(up_trace, trace);
    assert_eq!(up_parent, attempt.span_id);
    assert_eq!(flags, "01");

    let m = metrics(gw.admin_addr()).await;
    assert_valid_exposition(&m);
    assert_eq!(
        sample(&m, "portcullis_tracing_requests_sampled_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "portcullis_tracing_spans_exported_total"),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, "portcullis_tracing_spans_dropped_total"),
        Some(0.0)
    );
    assert_eq!(
        sample(&m, "portcullis_tracing_spans_failed_total"),
        Some(0.0)
    );
}

#[tokio::test]
async fn endpoint_fanout_calls_are_spans_under_the_endpoint_call() {
    let rx = OtlpReceiver::start().await;
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let dir = temp_dir("tracing-fanout");
    install_plugin(
        &dir,
        "fan",
        "fanout",
        "kind = \"endpoint\"\n[config]\nclusters = \"a,b\"\npath = \"/x\"\n",
    );
    let mut config = basic_config(&[("a", a.addr), ("b", b.addr)], "");
    config.push_str(&format!(
        "[[route]]\nname = \"fan\"\nmatch = {{ path_prefix = \"/fan\" }}\nendpoint = \"fan\"\n[plugins]\ndir = \"{}\"\n{}",
        dir.display(),
        tracing_section(&rx, "sample_ratio = 1.0")
    ));
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    let (trace, _, tp) = client_context(true);
    let (p, _) = send(addr, with_traceparent(get(addr, "/fan"), &tp)).await;
    assert_eq!(p.status, 200);
    let spans = rx.wait_trace(&trace, 4, WAIT).await;
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let request = one(&spans, "request", |s| s.kind == KIND_SERVER);
    assert_eq!(request.attr("portcullis.route"), Some("fan"));
    let endpoint = one(&spans, "endpoint call", |s| s.kind == KIND_INTERNAL);
    assert_eq!(endpoint.parent_span_id, request.span_id);
    assert_eq!(endpoint.attr("portcullis.plugin.phase"), Some("endpoint"));
    assert_eq!(endpoint.attr("portcullis.plugin.outcome"), Some("respond"));
    let calls: Vec<&Span> = spans.iter().filter(|s| s.kind == KIND_CLIENT).collect();
    assert_eq!(calls.len(), 2, "{spans:#?}");
    let mut clusters: Vec<&str> = calls
        .iter()
        .map(|c| c.attr("portcullis.cluster").expect("cluster"))
        .collect();
    clusters.sort_unstable();
    assert_eq!(clusters, ["a", "b"]);
    for c in &calls {
        assert_eq!(c.parent_span_id, endpoint.span_id, "{c:?}");
        assert_eq!(
            c.name,
            format!("fanout {}", c.attr("portcullis.cluster").unwrap_or(""))
        );
        assert_eq!(c.attr("url.path"), Some("/x"));
        assert_eq!(c.attr("portcullis.fanout.outcome"), Some("200"));
        assert_eq!(c.attr("http.response.status_code"), Some("200"));
        within(c, endpoint);
    }
    // The fan-out's wait is not the plugin's CPU.
    let cpu: u64 = endpoint
        .attr("portcullis.plugin.cpu_us")
        .and_then(|c| c.parse().ok())
        .expect("cpu_us");
    assert!(
        cpu <= (endpoint.end_ns - endpoint.start_ns) / 1000,
        "{endpoint:?}"
    );
}

#[tokio::test]
async fn sampling_follows_the_parent_then_the_ratio() {
    let rx = OtlpReceiver::start().await;
    let up = Upstream::start("up").await;
    let config = basic_config(
        &[("up", up.addr)],
        &tracing_section(&rx, "sample_ratio = 0.0"),
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");

    // Ratio 0, no parent: not traced; the upstream still gets a valid, unsampled context.
    let (_, body) = send(addr, get(addr, "/up/a")).await;
    let (_, _, flags) = upstream_traceparent(&body);
    assert_eq!(flags, "00");
    // An unsampled parent: never traced, its trace goes on unsampled.
    let (unsampled, parent, tp) = client_context(false);
    let (_, body) = send(addr, with_traceparent(get(addr, "/up/b"), &tp)).await;
    let (t, p, flags) = upstream_traceparent(&body);
    assert_eq!((t.as_str(), flags.as_str()), (unsampled.as_str(), "00"));
    assert_ne!(p, parent, "the gateway is the upstream's parent");
    // A sampled parent: traced even at ratio 0.
    let (sampled, _, tp) = client_context(true);
    let (_, _) = send(addr, with_traceparent(get(addr, "/up/c"), &tp)).await;
    let spans = rx.wait_trace(&sampled, 2, WAIT).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    // Spans leave in order: the earlier requests would have arrived first.
    assert_eq!(
        rx.spans().len(),
        2,
        "only the sampled parent's trace: {:#?}",
        rx.spans()
    );
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(&m, "portcullis_tracing_requests_sampled_total"),
        Some(1.0)
    );
    drop(gw);

    // Ratio 1, no parent: a new trace, sampled, that the upstream continues.
    let rx = OtlpReceiver::start().await;
    let config = basic_config(
        &[("up", up.addr)],
        &tracing_section(&rx, "sample_ratio = 1.0"),
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let (_, body) = send(addr, get(addr, "/up/new")).await;
    let (trace, parent, flags) = upstream_traceparent(&body);
    assert_eq!(flags, "01");
    let spans = rx.wait_trace(&trace, 2, WAIT).await;
    let request = one(&spans, "request", |s| s.kind == KIND_SERVER);
    assert_eq!(request.parent_span_id, "", "a new trace has no parent");
    let attempt = one(&spans, "attempt", |s| s.kind == KIND_CLIENT);
    assert_eq!(attempt.span_id, parent);
    // An unsampled parent still wins over the ratio.
    let (unsampled, _, tp) = client_context(false);
    let (_, body) = send(addr, with_traceparent(get(addr, "/up/b"), &tp)).await;
    assert_eq!(upstream_traceparent(&body).2, "00");
    let (sampled, _, tp) = client_context(true);
    send(addr, with_traceparent(get(addr, "/up/c"), &tp)).await;
    rx.wait_trace(&sampled, 2, WAIT).await;
    assert!(
        rx.spans().iter().all(|s| s.trace_id != unsampled),
        "{:#?}",
        rx.spans()
    );
}

#[tokio::test]
async fn a_retried_request_has_an_attempt_span_per_attempt() {
    let rx = OtlpReceiver::start().await;
    let bad = Upstream::start_fixed("bad", 503, 0).await;
    let good = Upstream::start("good").await;
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"main\"\nlisten = \"127.0.0.1:0\"\n[[cluster]]\nname = \"c\"\nendpoints = [\"{}\", \"{}\"]\n[[route]]\nname = \"r\"\ncluster = \"c\"\n{}",
        bad.addr,
        good.addr,
        tracing_section(&rx, "sample_ratio = 0.0")
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    // Round robin sends one of the first two requests to the 503 endpoint first.
    let mut retried = None;
    for _ in 0..10 {
        let (trace, _, tp) = client_context(true);
        let (p, body) = send(addr, with_traceparent(get(addr, "/r"), &tp)).await;
        assert_eq!(p.status, 200);
        if p.headers["x-portcullis-attempts"] == "2" {
            retried = Some((trace, body));
            break;
        }
    }
    let (trace, body) = retried.expect("a request was retried");
    let spans = rx.wait_trace(&trace, 3, WAIT).await;
    assert_eq!(spans.len(), 3, "{spans:#?}");
    let request = one(&spans, "request", |s| s.kind == KIND_SERVER);
    let first = one(&spans, "first attempt", |s| {
        s.attr("portcullis.upstream.attempt") == Some("1")
    });
    let second = one(&spans, "second attempt", |s| {
        s.attr("portcullis.upstream.attempt") == Some("2")
    });
    for (a, ep, status) in [(first, bad.addr, "503"), (second, good.addr, "200")] {
        assert_eq!(a.kind, KIND_CLIENT);
        assert_eq!(a.parent_span_id, request.span_id);
        assert_eq!(a.attr("server.address"), Some(ep.to_string().as_str()));
        assert_eq!(a.attr("http.response.status_code"), Some(status));
        within(a, request);
    }
    assert_eq!(first.status, 2, "a 503 attempt is an error span");
    assert!(first.end_ns <= second.start_ns);
    // The answering upstream saw the second attempt as its parent.
    let (t, parent, _) = upstream_traceparent(&body);
    assert_eq!(
        (t.as_str(), parent.as_str()),
        (trace.as_str(), second.span_id.as_str())
    );
}

#[tokio::test]
async fn failures_are_error_spans_and_shutdown_flushes_the_queue() {
    let rx = OtlpReceiver::start().await;
    let up = Upstream::start("up").await;
    // Nothing is exported on a timer within the test: only the shutdown flush sends spans.
    let config = basic_config(&[("up", up.addr)], "")
        + &format!(
            "[tracing]\notlp_endpoint = \"{}/\"\nsample_ratio = 1.0\nexport_interval_ms = 60000\nbatch_size = 1000\n",
            rx.endpoint()
        );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    let (trace, _, tp) = client_context(true);
    let (p, _) = send(addr, with_traceparent(get(addr, "/nowhere"), &tp)).await;
    assert_eq!(p.status, 404);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.requests(), 0, "nothing exported before the interval");
    gw.shutdown().await;
    let spans = rx.wait_trace(&trace, 1, Duration::from_secs(1)).await;
    let request = one(&spans, "request", |s| s.kind == KIND_SERVER);
    assert_eq!(request.name, "GET");
    assert_eq!(request.attr("error.type"), Some("no-route"));
    assert_eq!(request.attr("http.response.status_code"), Some("404"));
    assert_eq!(request.status, 2);
    assert_eq!(request.service, "portcullis", "the default service name");
}

#[tokio::test]
async fn an_unreachable_receiver_costs_requests_nothing_and_is_counted() {
    let dead = dead_addr().await;
    let up = Upstream::start("up").await;
    let config = basic_config(
        &[("up", up.addr)],
        &format!(
            "[tracing]\notlp_endpoint = \"http://{dead}\"\nsample_ratio = 1.0\nexport_interval_ms = 10\nexport_timeout_ms = 500\n"
        ),
    );
    let gw = gateway(&config, Path::new(".")).await;
    let addr = gw.listener_addr("main").expect("listener");
    for _ in 0..5 {
        let (p, _) = send(addr, get(addr, "/up/x")).await;
        assert_eq!(p.status, 200);
    }
    // Five requests, two spans each, all in failed exports.
    assert!(
        wait_for_metric(
            gw.admin_addr(),
            "portcullis_tracing_spans_failed_total",
            WAIT,
            |v| v == 10.0,
        )
        .await,
        "{}",
        metrics(gw.admin_addr()).await
    );
}

#[test]
fn config_errors_name_the_key() {
    let base =
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"m\"\nlisten = \"127.0.0.1:0\"\n";
    let bad = format!(
        "{base}[tracing]\notlp_endpoint = \"ftp://x\"\nsample_ratio = 1.5\nservice_name = \"\"\nqueue = 0\nbatch_size = 0\nexport_interval_ms = 0\nexport_timeout_ms = 0\nheaders = {{ \"bad name\" = \"v\" }}\n"
    );
    let problems = portcullis::Config::parse(&bad, Path::new(".")).expect_err("invalid");
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tracing.otlp_endpoint",
            "tracing.sample_ratio",
            "tracing.service_name",
            "tracing.queue",
            "tracing.batch_size",
            "tracing.export_interval_ms",
            "tracing.export_timeout_ms",
            "tracing.headers.bad name",
        ],
        "{problems:?}"
    );
    let unknown = format!("{base}[tracing]\nsample_rate = 0.5\n");
    let problems = portcullis::Config::parse(&unknown, Path::new(".")).expect_err("typo");
    assert!(problems[0].reason.contains("sample_rate"), "{problems:?}");
    // Defaults, and `[tracing]` cannot change on reload.
    let on = portcullis::Config::parse(&format!("{base}[tracing]\n"), Path::new(".")).expect("ok");
    let t = on.tracing.as_ref().expect("tracing");
    assert_eq!(t.otlp_endpoint, "http://127.0.0.1:4318");
    assert_eq!(t.sample_ratio, 0.01);
    let off = portcullis::Config::parse(base, Path::new(".")).expect("ok");
    assert_eq!(portcullis::reload::fixed_changes(&off, &on), ["tracing"]);
}
