use super::*;
use std::path::Path;

fn limits(extra: &str) -> (RateLimits, Arc<crate::telemetry::Metrics>) {
    let text = format!(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n[[cluster]]\nname = \"c\"\nendpoints = [\"127.0.0.1:1\"]\n[[route]]\nname = \"r\"\ncluster = \"c\"\n{extra}"
    );
    let cfg = config::Config::parse(&text, Path::new(".")).expect("config");
    let m = Arc::new(crate::telemetry::Metrics::new(
        &[],
        8,
        Duration::from_secs(1),
    ));
    let mm = m.clone();
    (
        RateLimits::build(&cfg, |n| mm.rate_limit(n)).expect("limits"),
        m,
    )
}

fn head(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().uri("/api/x");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("request").into_parts().0
}

async fn check(l: &RateLimits, parts: &http::request::Parts) -> Verdict {
    l.check(&Subject {
        parts,
        host: None,
        client_ip: "127.0.0.1",
        route: Some("r"),
        metadata: &[],
    })
    .await
}

#[tokio::test]
async fn a_local_limit_allows_exactly_its_burst_per_key() {
    let (l, _) = limits(
        "[[rate_limit]]\nname = \"per-user\"\nkey = \"header:x-user\"\nlimit = 3\nwindow_ms = 60000\n",
    );
    let a = head(&[("x-user", "a")]);
    let b = head(&[("x-user", "b")]);
    for _ in 0..3 {
        assert!(check(&l, &a).await.denied.is_none());
    }
    let v = check(&l, &a).await;
    let d = v.denied.expect("the 4th is denied");
    assert_eq!(&*d.limit, "per-user");
    let h = d.headers;
    let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    // The next slot opens one interval (20 s) after the first request.
    assert_eq!(get("retry-after").expect("retry-after"), "20");
    assert_eq!(
        get("ratelimit-policy").expect("policy"),
        "\"per-user\";q=3;w=60"
    );
    assert_eq!(get("ratelimit").expect("state"), "\"per-user\";r=0;t=60");
    assert!(
        check(&l, &b).await.denied.is_none(),
        "another key has its own budget"
    );
    // A request without the header is not counted by this limit.
    assert!(check(&l, &head(&[])).await.denied.is_none());
}

#[tokio::test]
async fn the_strictest_denial_answers() {
    let (l, _) = limits(
        "[[rate_limit]]\nname = \"loose\"\nkey = \"route\"\nlimit = 1\nwindow_ms = 2000\n\
         [[rate_limit]]\nname = \"strict\"\nkey = \"route\"\nlimit = 1\nwindow_ms = 60000\n",
    );
    let a = head(&[]);
    assert!(check(&l, &a).await.denied.is_none());
    let d = check(&l, &a).await.denied.expect("denied");
    assert_eq!(&*d.limit, "strict");
}

#[test]
fn the_local_map_stays_bounded_under_key_spraying() {
    let local = local::Local::new(1_000);
    let g = Gcra::new(10, Duration::from_secs(60));
    let now = Instant::now();
    for i in 0..50_000 {
        local.check(&format!("k{i}"), g, now);
    }
    assert!(local.tracked() <= 1_000 + 16, "tracked {}", local.tracked());
}

#[test]
fn gcra_refills_one_request_per_interval() {
    let g = Gcra::new(2, Duration::from_secs(2));
    let (o, t) = g.step(0, 0);
    assert!(o.allowed && o.remaining == 1);
    let (o, t) = g.step(t.expect("tat"), 0);
    assert!(o.allowed && o.remaining == 0);
    let tat = t.expect("tat");
    let (o, _) = g.step(tat, 0);
    assert!(!o.allowed);
    assert_eq!(o.retry_after, Duration::from_secs(1));
    let (o, _) = g.step(tat, 1_000_000);
    assert!(o.allowed, "one interval later one request fits again");
}

#[test]
fn bad_keys_are_refused_by_config() {
    let text = "[[rate_limit]]\nname = \"x\"\nkey = \"cookie:a\"\nlimit = 0\nwindow_ms = 1000\nscope = \"global\"\n";
    let problems = config::Config::parse(text, Path::new(".")).expect_err("invalid");
    let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
    assert!(keys.contains(&"rate_limit[0].key"), "{keys:?}");
    assert!(keys.contains(&"rate_limit[0].limit"), "{keys:?}");
    assert!(keys.contains(&"rate_limit[0].scope"), "{keys:?}");
}
