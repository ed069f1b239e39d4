//! DNS discovery end to end: a gateway whose cluster is `endpoints = { dns = ... }` asks a
//! small authoritative DNS server on 127.0.0.1 (tests/src/dns.rs, `[dns] nameservers`) whose
//! records the tests change while requests flow. Upstreams listen on several loopback
//! addresses (127.0.0.2, 127.0.0.3, ...) with one port, as A records give one port. Every wait
//! is bounded.

use portcullis_tests::dns::{DnsServer, Mode};
use portcullis_tests::*;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const REFRESH_MS: u64 = 200;
/// How long after a DNS change the gateway must follow it: a refresh plus slack for a busy
/// machine.
const FOLLOW: Duration = Duration::from_millis(REFRESH_MS + 2_000);

fn config(dns: SocketAddr, endpoints: &str, cluster_extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[dns]
nameservers = ["{dns}"]
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "c"
endpoints = {endpoints}
{cluster_extra}
[[route]]
name = "r"
match = {{ path_prefix = "/" }}
cluster = "c"
"#
    )
}

fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Upstreams on 127.0.0.2, 127.0.0.3, ... sharing one port (a fresh port is tried again if
/// another process holds it on one of the addresses).
async fn upstreams_on_one_port(n: u8) -> (u16, Vec<Controlled>) {
    'again: for _ in 0..20 {
        let first = Controlled::start_on("u2", SocketAddr::new(lo(2), 0))
            .await
            .expect("bind 127.0.0.2");
        let port = first.addr.port();
        let mut ups = vec![first];
        for i in 3..2 + n {
            match Controlled::start_on(&format!("u{i}"), SocketAddr::new(lo(i), port)).await {
                Some(u) => ups.push(u),
                None => continue 'again,
            }
        }
        return (port, ups);
    }
    panic!("no port free on every loopback address");
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    sample(&metrics(admin).await, series).unwrap_or(f64::NAN)
}

fn ep_series(family: &str, ep: SocketAddr) -> String {
    format!("{family}{{cluster=\"c\",endpoint=\"{ep}\"}}")
}

async fn get_ok(addr: SocketAddr, path: &str) -> String {
    let (p, b) = send(addr, get(addr, path)).await;
    assert_eq!(p.status, 200, "{path}: {}", header(&p, "portcullis-error"));
    String::from_utf8_lossy(&b).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_are_balanced_and_a_changed_answer_keeps_stats_and_drains_the_removed() {
    let dns = DnsServer::start().await;
    let (port, ups) = upstreams_on_one_port(3).await;
    let (a, b, c) = (&ups[0], &ups[1], &ups[2]);
    dns.set_ips("svc.test", &[lo(2), lo(3)]);
    let eps = format!("{{ dns = \"svc.test:{port}\", refresh_ms = {REFRESH_MS} }}");
    let gw = gateway(&config(dns.addr, &eps, ""), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    let gauge = "portcullis_upstream_endpoints{cluster=\"c\"}";
    assert!(
        wait_for_metric(admin, gauge, FOLLOW, |v| v == 2.0).await,
        "both A records become endpoints"
    );

    // Round robin over the two A records: an even split.
    for i in 0..40 {
        get_ok(addr, &format!("/x{i}")).await;
    }
    assert_eq!((a.requests(), b.requests()), (20, 20));

    // A slow request in flight on b when b leaves the answer.
    b.set_delay_ms(1_500);
    let slow = tokio::spawn(async move {
        let mut seen = Vec::new();
        // Round robin alternates: two requests, one of them lands on b.
        let (r1, r2) = tokio::join!(
            send(addr, get(addr, "/slow1")),
            send(addr, get(addr, "/slow2"))
        );
        seen.push(r1.0.status.as_u16());
        seen.push(r2.0.status.as_u16());
        seen
    });
    let in_flight_b = ep_series("portcullis_upstream_in_flight", b.addr);
    assert!(
        wait_for_metric(admin, &in_flight_b, Duration::from_secs(3), |v| v == 1.0).await,
        "one request in flight on b"
    );

    // Remove b, add c.
    let changed = Instant::now();
    dns.set_ips("svc.test", &[lo(2), lo(4)]);
    let c_requests = ep_series("portcullis_upstream_requests_total", c.addr);
    assert!(
        wait_for_metric(admin, &c_requests, FOLLOW, |v| v == 0.0).await,
        "c joins within refresh_ms + slack"
    );
    let took = changed.elapsed();
    let text = metrics(admin).await;
    assert!(
        !text.contains(&format!("endpoint=\"{}\"", b.addr)),
        "b left the set:\n{text}"
    );
    let a_requests = sample(
        &text,
        &ep_series("portcullis_upstream_requests_total", a.addr),
    );
    assert!(
        a_requests.is_some_and(|v| v >= 20.0),
        "a's stats are kept: {a_requests:?}"
    );
    assert_eq!(sample(&text, gauge), Some(2.0));

    // The drained request still completes; b gets nothing new and its connections close.
    let statuses = tokio::time::timeout(Duration::from_secs(10), slow)
        .await
        .expect("slow requests end")
        .expect("join");
    assert_eq!(statuses, vec![200, 200]);
    let b_before = b.requests();
    for i in 0..20 {
        get_ok(addr, &format!("/y{i}")).await;
    }
    assert_eq!(
        b.requests(),
        b_before,
        "no new request to a removed endpoint"
    );
    assert_eq!(c.requests(), 10, "c gets its share");
    assert!(
        eventually(Duration::from_secs(3), || b.open.load(Ordering::SeqCst)
            == 0)
        .await,
        "the removed endpoint's pooled connections are closed: {} open",
        b.open.load(Ordering::SeqCst)
    );
    eprintln!("followed a DNS change in {took:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_failing_dns_keeps_the_last_good_set_and_counts_each_failure() {
    let dns = DnsServer::start().await;
    let up = Controlled::start("u").await;
    dns.set_ips("svc.test", &[up.addr.ip()]);
    let eps = format!(
        "{{ dns = \"svc.test:{}\", refresh_ms = {REFRESH_MS}, timeout_ms = 300 }}",
        up.addr.port()
    );
    let gw = gateway(&config(dns.addr, &eps, ""), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    let gauge = "portcullis_upstream_endpoints{cluster=\"c\"}";
    assert!(wait_for_metric(admin, gauge, FOLLOW, |v| v == 1.0).await);
    for (mode, result) in [
        (Mode::Nxdomain, "nxdomain"),
        (Mode::Servfail, "servfail"),
        (Mode::Silent, "timeout"),
    ] {
        dns.set_mode(mode);
        let series = format!("portcullis_dns_lookups_total{{cluster=\"c\",result=\"{result}\"}}");
        let before = metric(admin, &series).await;
        assert!(
            wait_for_metric(admin, &series, FOLLOW, |v| v >= before + 2.0).await,
            "{result}: counted"
        );
        assert_eq!(metric(admin, gauge).await, 1.0, "{result}: set kept");
        get_ok(addr, &format!("/{result}")).await;
    }
    // Answers again: back to ok lookups, same endpoint.
    dns.set_mode(Mode::Records);
    let ok = "portcullis_dns_lookups_total{cluster=\"c\",result=\"ok\"}";
    let before = metric(admin, ok).await;
    assert!(wait_for_metric(admin, ok, FOLLOW, |v| v > before).await);
    assert_eq!(metric(admin, gauge).await, 1.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn srv_records_give_targets_with_their_ports_and_weights_at_the_lowest_priority() {
    let dns = DnsServer::start().await;
    let (heavy, light, backup) = (
        Controlled::start("heavy").await,
        Controlled::start("light").await,
        Controlled::start("backup").await,
    );
    dns.set_srv(
        "_http._tcp.svc.test",
        &[
            (10, 3, heavy.addr.port(), "heavy.test"),
            (10, 1, light.addr.port(), "light.test"),
            (20, 1, backup.addr.port(), "backup.test"),
        ],
    );
    for t in ["heavy.test", "light.test", "backup.test"] {
        dns.set_ips(t, &[lo(1)]);
    }
    let eps = format!("{{ dns = \"_http._tcp.svc.test\", refresh_ms = {REFRESH_MS} }}");
    let gw = gateway(&config(dns.addr, &eps, ""), Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    let gauge = "portcullis_upstream_endpoints{cluster=\"c\"}";
    assert!(wait_for_metric(admin, gauge, FOLLOW, |v| v == 2.0).await);
    for i in 0..40 {
        get_ok(addr, &format!("/s{i}")).await;
    }
    assert_eq!(
        (heavy.requests(), light.requests(), backup.requests()),
        (30, 10, 0),
        "weights 3:1 at priority 10; priority 20 unused"
    );
    gw.shutdown().await;
}

#[test]
fn bad_dns_endpoints_are_refused_naming_the_key_and_the_reason() {
    let ns = "127.0.0.1:53".parse().unwrap();
    let cases = [
        (
            "{ dns = \"svc.test\" }",
            "",
            "cluster[0].endpoints.dns",
            "needs a port",
        ),
        (
            "{ dns = \"_http._tcp.svc.test:80\" }",
            "",
            "cluster[0].endpoints.dns",
            "SRV name carries no port",
        ),
        (
            "{ dns = \"bad name!:80\" }",
            "",
            "cluster[0].endpoints.dns",
            "not a DNS name",
        ),
        (
            "{ dns = \"svc.test:80\", refresh_ms = 0 }",
            "",
            "cluster[0].endpoints.refresh_ms",
            "between 100 and 86400000",
        ),
        (
            "{ dns = \"svc.test:80\", refresh_ms = 999999999999 }",
            "",
            "cluster[0].endpoints.refresh_ms",
            "between 100 and 86400000",
        ),
        (
            "{ dns = \"svc.test:80\", max_endpoints = 0 }",
            "",
            "cluster[0].endpoints.max_endpoints",
            "between 1 and 4096",
        ),
    ];
    for (eps, extra, key, why) in cases {
        let problems = match portcullis::Config::parse(&config(ns, eps, extra), Path::new(".")) {
            Ok(_) => panic!("{eps}: accepted"),
            Err(p) => p,
        };
        assert!(
            problems
                .iter()
                .any(|p| p.key == key && p.reason.contains(why)),
            "{eps}: {problems:?}"
        );
    }
    let bad_ns = config(ns, "{ dns = \"svc.test:80\" }", "").replace("127.0.0.1:53", "dns");
    let problems = portcullis::Config::parse(&bad_ns, Path::new(".")).unwrap_err();
    assert!(
        problems.iter().any(|p| p.key == "dns.nameservers[0]"),
        "{problems:?}"
    );
    let typo = config(ns, "{ dns = \"svc.test:80\", refresh = 5 }", "");
    let problems = portcullis::Config::parse(&typo, Path::new(".")).unwrap_err();
    assert!(
        problems.iter().any(|p| p.reason.contains("refresh_ms")),
        "an unknown key names what is expected: {problems:?}"
    );
}
