//! Upstream resilience end to end: load-aware balancing, outlier ejection with backoff, active
//! health checks, priority shedding and the retry budget. Real upstreams, gateway and client
//! on 127.0.0.1; every wait is bounded.

use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// One listener, one cluster `c` over `endpoints` with `cluster_extra` keys, one route `r` to
/// it with `route_extra` keys, then `tail` (more tables).
fn config(endpoints: &[SocketAddr], cluster_extra: &str, route_extra: &str, tail: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "c"
endpoints = [{}]
{cluster_extra}
[[route]]
name = "r"
match = {{ path_prefix = "/" }}
cluster = "c"
{route_extra}
{tail}
"#,
        eps.join(", ")
    )
}

fn ep_series(name: &str, ep: SocketAddr) -> String {
    format!("{name}{{cluster=\"c\",endpoint=\"{ep}\"}}")
}

async fn metric(admin: SocketAddr, series: &str) -> f64 {
    sample(&metrics(admin).await, series).unwrap_or(f64::NAN)
}

/// Polls the admin metrics until `series` satisfies `ok`, for at most `within`.
async fn wait_metric(
    admin: SocketAddr,
    series: &str,
    within: Duration,
    ok: impl Fn(f64) -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + within;
    loop {
        if ok(metric(admin, series).await) {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn least_in_flight_routes_around_a_slow_endpoint() {
    let slow = Controlled::start("slow").await;
    slow.set_delay_ms(400);
    let fast = Controlled::start("fast").await;
    let gw = gateway(
        &config(
            &[slow.addr, fast.addr],
            "balancer = \"least_in_flight\"",
            "",
            "",
        ),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").unwrap();
    // 30 requests, one every 10 ms, each on its own connection and task: open loop.
    let mut tasks = Vec::new();
    for _ in 0..30 {
        tasks.push(tokio::spawn(
            async move { send(addr, get(addr, "/x")).await },
        ));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        let (p, _) = t.await.unwrap();
        assert_eq!(p.status, 200);
    }
    assert!(
        slow.requests() <= 4,
        "the slow endpoint holds a request for 400 ms, so it is avoided meanwhile: slow {} fast {}",
        slow.requests(),
        fast.requests()
    );
    assert_eq!(slow.requests() + fast.requests(), 30);
    gw.shutdown().await;
}

#[tokio::test]
async fn consecutive_connect_failures_eject_with_doubling_backoff() {
    let dead = dead_addr().await;
    let good = Controlled::start("good").await;
    let gw = gateway(
        &config(
            &[dead, good.addr],
            "outlier = { consecutive_failures = 2, base_ejection_ms = 500, max_ejection_ms = 5000, max_ejected_percent = 50 }",
            "",
            "",
        ),
        Path::new("."),
    )
    .await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    let ejected = ep_series("portcullis_upstream_ejected", dead);
    let ejections = ep_series("portcullis_upstream_ejections_total", dead);
    // Round robin sends every other request to the dead endpoint; each is retried on the
    // good one, so clients never notice.
    for _ in 0..4 {
        let (p, _) = send(addr, get(addr, "/x")).await;
        assert_eq!(p.status, 200);
    }
    assert_eq!(
        metric(admin, &ejected).await,
        1.0,
        "ejected after 2 failures"
    );
    assert_eq!(metric(admin, &ejections).await, 1.0);
    // While ejected, nothing goes there: no request needs a retry.
    for _ in 0..6 {
        let (p, _) = send(addr, get(addr, "/x")).await;
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x-portcullis-attempts"], "1");
    }
    // After the backoff it is available again; still dead, so the first failure re-ejects
    // it at once (probation) for twice as long.
    assert!(
        wait_metric(admin, &ejected, Duration::from_secs(5), |v| v == 0.0).await,
        "back after base_ejection_ms"
    );
    // The second ejection starts after this instant, so it ends no sooner than 2 x 500 ms
    // from here (a backoff that did not double would be back after ~500 ms).
    let before_second = std::time::Instant::now();
    let mut retried = false;
    for _ in 0..4 {
        let (p, _) = send(addr, get(addr, "/x")).await;
        assert_eq!(p.status, 200);
        retried |= p.headers["x-portcullis-attempts"] == "2";
    }
    assert!(retried, "a request was tried on the returned endpoint");
    assert_eq!(metric(admin, &ejections).await, 2.0);
    assert_eq!(metric(admin, &ejected).await, 1.0);
    assert!(
        wait_metric(admin, &ejected, Duration::from_secs(6), |v| v == 0.0).await,
        "back after the doubled backoff"
    );
    let second = before_second.elapsed();
    assert!(
        second >= Duration::from_millis(1000),
        "the second ejection lasted 2 x base_ejection_ms: {second:?}"
    );
    let m = metrics(admin).await;
    assert!(
        sample(
            &m,
            "portcullis_retries_total{cluster=\"c\",reason=\"connect_failed\"}"
        )
        .unwrap_or(0.0)
            >= 2.0,
        "retries are counted by reason"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn resets_eject_and_a_recovered_endpoint_gets_traffic_after_backoff() {
    let flaky = Controlled::start("flaky").await;
    let good = Controlled::start("good").await;
    flaky.set_reset(true);
    let gw = gateway(
        &config(
            &[flaky.addr, good.addr],
            "outlier = { consecutive_failures = 2, base_ejection_ms = 250, max_ejected_percent = 50 }",
            "",
            "",
        ),
        Path::new("."),
    )
    .await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    let ejected = ep_series("portcullis_upstream_ejected", flaky.addr);
    for _ in 0..4 {
        let (p, _) = send(addr, get(addr, "/x")).await;
        assert_eq!(p.status, 200, "resets on GET are retried elsewhere");
    }
    assert_eq!(metric(admin, &ejected).await, 1.0);
    let m = metrics(admin).await;
    assert!(
        sample(
            &m,
            "portcullis_retries_total{cluster=\"c\",reason=\"reset\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    flaky.set_reset(false);
    let before = flaky.requests();
    assert!(wait_metric(admin, &ejected, Duration::from_secs(2), |v| v == 0.0).await);
    for _ in 0..6 {
        let (p, _) = send(addr, get(addr, "/x")).await;
        assert_eq!(p.status, 200);
    }
    assert!(
        flaky.requests() >= before + 2,
        "the recovered endpoint is back in rotation"
    );
    assert_eq!(metric(admin, &ejected).await, 0.0, "and stays in");
    gw.shutdown().await;
}

#[tokio::test]
async fn at_most_max_ejected_percent_is_ejected() {
    let dead = [dead_addr().await, dead_addr().await, dead_addr().await];
    let good = Controlled::start("good").await;
    let gw = gateway(
        &config(
            &[dead[0], dead[1], dead[2], good.addr],
            "outlier = { consecutive_failures = 1, base_ejection_ms = 10000, max_ejected_percent = 50 }",
            "retry = { attempts = 1 }",
            "",
        ),
        Path::new("."),
    )
    .await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    for _ in 0..20 {
        let _ = send(addr, get(addr, "/x")).await;
    }
    let m = metrics(admin).await;
    let out: f64 = dead
        .iter()
        .map(|d| sample(&m, &ep_series("portcullis_upstream_ejected", *d)).unwrap_or(0.0))
        .sum();
    assert_eq!(out, 2.0, "50 % of 4 endpoints, though 3 are dead");
    assert_eq!(
        sample(&m, &ep_series("portcullis_upstream_ejected", good.addr)),
        Some(0.0)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn health_checks_mark_an_endpoint_down_and_up() {
    let a = Controlled::start("a").await;
    let b = Controlled::start("b").await;
    let gw = gateway(
        &config(
            &[a.addr, b.addr],
            "health_check = { path = \"/healthz\", interval_ms = 30, timeout_ms = 500, healthy_threshold = 2, unhealthy_threshold = 2 }",
            "",
            "",
        ),
        Path::new("."),
    )
    .await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    let healthy_a = ep_series("portcullis_upstream_healthy", a.addr);
    assert!(
        wait_metric(admin, &healthy_a, Duration::from_secs(2), |v| v == 1.0).await,
        "endpoints start healthy"
    );
    a.set_health_status(503);
    assert!(
        wait_metric(admin, &healthy_a, Duration::from_secs(3), |v| v == 0.0).await,
        "two failed checks mark it down"
    );
    let before = a.requests();
    for _ in 0..6 {
        let (p, _) = send(addr, get(addr, "/x")).await;
        assert_eq!(p.status, 200);
        assert_eq!(p.headers["x-upstream"], "b");
    }
    assert_eq!(a.requests(), before, "no traffic to a down endpoint");
    a.set_health_status(200);
    assert!(
        wait_metric(admin, &healthy_a, Duration::from_secs(3), |v| v == 1.0).await,
        "two good checks mark it up"
    );
    for _ in 0..6 {
        let _ = send(addr, get(addr, "/x")).await;
    }
    assert!(a.requests() > before, "traffic returns");
    assert!(a.health_checks.load(std::sync::atomic::Ordering::Relaxed) >= 4);
    gw.shutdown().await;
}

/// Holds `n` more requests open on `path` (the upstream behind it is slow) and waits until
/// the gateway counts `total` in `series`.
async fn hold(
    addr: SocketAddr,
    admin: SocketAddr,
    path: &'static str,
    n: usize,
    total: usize,
    series: &str,
) -> Vec<tokio::task::JoinHandle<u16>> {
    let held: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(async move {
                let (p, _) = send(addr, get(addr, path)).await;
                p.status.as_u16()
            })
        })
        .collect();
    assert!(
        wait_metric(admin, series, Duration::from_secs(3), |v| v == total as f64).await,
        "{total} requests in flight"
    );
    held
}

fn assert_overloaded(p: &http::response::Parts) {
    assert_eq!(p.status, 503);
    assert_eq!(p.headers["portcullis-error"], "overloaded");
    assert!(p.headers.contains_key("retry-after"), "{:?}", p.headers);
}

#[tokio::test]
async fn global_shedding_turns_away_sheddable_before_critical() {
    let slow = Controlled::start("slow").await;
    slow.set_delay_ms(2500);
    let fast = Controlled::start("fast").await;
    let cfg = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[limits]
max_in_flight = 10
[[cluster]]
name = "slow"
endpoints = ["{}"]
[[cluster]]
name = "fast"
endpoints = ["{}"]
[[route]]
name = "slow"
match = {{ path_prefix = "/slow" }}
cluster = "slow"
[[route]]
name = "sheddable"
match = {{ path_prefix = "/fast/sheddable" }}
cluster = "fast"
priority = "sheddable"
[[route]]
name = "normal"
match = {{ path_prefix = "/fast/normal" }}
cluster = "fast"
[[route]]
name = "critical"
match = {{ path_prefix = "/fast/critical" }}
cluster = "fast"
priority = "critical"
"#,
        slow.addr, fast.addr
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());

    // 8 of 10 in flight: sheddable's threshold (80 %) is reached, normal's (95 % → 9) not.
    let held = hold(
        addr,
        admin,
        "/slow",
        8,
        8,
        "portcullis_in_flight{scope=\"global\"}",
    )
    .await;
    let (p, _) = send(addr, get(addr, "/fast/sheddable")).await;
    assert_overloaded(&p);
    let (p, _) = send(addr, get(addr, "/fast/normal")).await;
    assert_eq!(p.status, 200, "normal still admitted at 80 %");
    let (p, _) = send(addr, get(addr, "/fast/critical")).await;
    assert_eq!(p.status, 200, "critical admitted");

    // 9 of 10: normal is shed too, critical still gets the last slot.
    let more = hold(
        addr,
        admin,
        "/slow",
        1,
        9,
        "portcullis_in_flight{scope=\"global\"}",
    )
    .await;
    let (p, _) = send(addr, get(addr, "/fast/normal")).await;
    assert_overloaded(&p);
    let (p, _) = send(addr, get(addr, "/fast/critical")).await;
    assert_eq!(p.status, 200);

    let m = metrics(admin).await;
    let shed = |p: &str| {
        sample(
            &m,
            &format!("portcullis_shed_total{{scope=\"global\",priority=\"{p}\"}}"),
        )
    };
    assert_eq!(shed("sheddable"), Some(1.0));
    assert_eq!(shed("normal"), Some(1.0));
    assert_eq!(shed("critical"), Some(0.0));
    for h in held.into_iter().chain(more) {
        assert_eq!(h.await.unwrap(), 200, "held requests finish normally");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn cluster_limit_sheds_by_priority_too() {
    let slow = Controlled::start("slow").await;
    slow.set_delay_ms(1000);
    let cfg = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "c"
endpoints = ["{}"]
max_concurrency = 5
[[route]]
name = "bulk"
match = {{ path_prefix = "/bulk" }}
cluster = "c"
priority = "sheddable"
[[route]]
name = "vip"
match = {{ path_prefix = "/vip" }}
cluster = "c"
priority = "critical"
"#,
        slow.addr
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    // 4 of 5 = 80 %: sheddable stops here.
    let held = hold(
        addr,
        admin,
        "/vip",
        4,
        4,
        "portcullis_in_flight{scope=\"c\"}",
    )
    .await;
    let (p, _) = send(addr, get(addr, "/bulk")).await;
    assert_overloaded(&p);
    let (p, _) = send(addr, get(addr, "/vip")).await;
    assert_eq!(p.status, 200, "critical takes the fifth slot");
    let m = metrics(admin).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_shed_total{scope=\"c\",priority=\"sheddable\"}"
        ),
        Some(1.0)
    );
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn retry_budget_caps_concurrent_retries() {
    let failing = Controlled::start("failing").await;
    failing.set_status(503);
    let slow = Controlled::start("slow").await;
    slow.set_delay_ms(600);
    let gw = gateway(
        &config(
            &[failing.addr, slow.addr],
            "retry_budget = { percent = 0, min_concurrency = 1 }",
            "",
            "",
        ),
        Path::new("."),
    )
    .await;
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    // Round robin: half the requests land on the 503 endpoint first and want a retry on the
    // slow one, which holds each retry (and its budget permit) for 600 ms.
    let tasks: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { send(addr, get(addr, "/x")).await }))
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        let (p, _) = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("bounded")
            .unwrap();
        statuses.push(p.status.as_u16());
    }
    let unretried = statuses.iter().filter(|&&s| s == 503).count();
    assert!(
        unretried >= 1,
        "with one retry allowed in flight, some 503s pass through unretried: {statuses:?}"
    );
    let m = metrics(admin).await;
    let exhausted = sample(&m, "portcullis_retry_budget_exhausted_total{cluster=\"c\"}");
    assert_eq!(exhausted, Some(unretried as f64));
    assert!(
        sample(
            &m,
            "portcullis_retries_total{cluster=\"c\",reason=\"status\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    gw.shutdown().await;
}
