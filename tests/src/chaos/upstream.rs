//! Upstream faults: a misbehaving upstream ([`crate::faulty::Faulty`]) beside a good one.

use super::{call, case, Case, Ctx, Outcome};
use crate::faulty::Faulty;
use crate::Controlled;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) fn cases() -> Vec<Case> {
    vec![
        case!(
            "upstream reset before the head",
            "GET: 200 from the other endpoint (2 attempts); POST: 502 upstream-reset, not replayed",
            ci = true,
            reset_before_head
        ),
        case!(
            "upstream half-close before the head",
            "GET: 200 from the other endpoint; POST: 502, not replayed",
            ci = false,
            half_close_before_head
        ),
        case!(
            "garbage status line",
            "GET: 200 from the other endpoint; POST: 502, not replayed",
            ci = false,
            garbage_status
        ),
        case!(
            "reset after the head / mid-body / half-close after the head / short body",
            "200 head, body cut (an error at the client, never a clean short body), no retry; next request sound",
            ci = true,
            cut_after_head
        ),
        case!(
            "chunked encoding errors (bad size, missing CRLF, truncated)",
            "200 head, body cut, no retry; next request sound",
            ci = false,
            chunked_errors
        ),
        case!(
            "body longer than Content-Length",
            "exactly Content-Length bytes; the next requests are not poisoned",
            ci = false,
            long_body
        ),
        case!(
            "crawling body (1 byte / 300 ms, body idle 100 ms)",
            "head, then the body cut within 2 s",
            ci = false,
            crawling_body
        ),
        case!(
            "TLS handshake failure (untrusted certificate, plain bytes)",
            "502 upstream-tls-failed within 3 s, each",
            ci = false,
            tls_failures
        ),
        case!(
            "DNS: the cluster's name never resolved",
            "503 no-healthy-upstream within 1 s; served once the name resolves",
            ci = false,
            dns_failure
        ),
        case!(
            "endpoint killed under load, round_robin (16 clients)",
            "0 GETs lost",
            ci = true,
            killed_round_robin
        ),
        case!(
            "endpoint killed under load, p2c_peak_ewma (16 clients)",
            "0 GETs lost",
            ci = false,
            killed_p2c
        ),
    ]
}

/// One cluster `c` over `endpoints`, one route to it.
fn config(endpoints: &[String], cluster_extra: &str, route_extra: &str) -> String {
    let eps: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[[cluster]]\nname = \"c\"\nendpoints = [{}]\n{cluster_extra}\n[[route]]\nname = \"r\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"c\"\n{route_extra}\n",
        eps.join(", ")
    )
}

async fn before_head(c: &Ctx, fault: &str) -> Outcome {
    let faulty = Faulty::start("faulty").await;
    let good = Controlled::start("good").await;
    let eps = [faulty.addr.to_string(), good.addr.to_string()];
    // Round robin's first pick is the faulty endpoint; the POST gets a gateway of its own so
    // that it, too, goes there first.
    let mut gw = c.gateway(&config(&eps, "", "")).await;
    gw.baseline();
    let g = call(gw.addr, "GET", &format!("/{fault}/get"), b"").await;
    let get_ok = g.status == 200 && g.attempts == "2" && g.body.is_ok();
    let gw2 = c.gateway(&config(&eps, "", "")).await;
    let good_before = good.requests();
    let p = call(gw2.addr, "POST", &format!("/{fault}/post"), b"payload").await;
    let post_ok = p.status == 502 && good.requests() == good_before;
    gw2.outcome(String::new(), 0, true).await;
    let observed = format!(
        "GET {} after {} attempts; POST {} {}, good endpoint got {} POSTs",
        g.status,
        g.attempts,
        p.status,
        p.error_code,
        good.requests() - good_before
    );
    gw.outcome(observed, u64::from(!get_ok), get_ok && post_ok)
        .await
}

async fn reset_before_head(c: &Ctx) -> Outcome {
    before_head(c, "reset-before-head").await
}
async fn half_close_before_head(c: &Ctx) -> Outcome {
    before_head(c, "half-close-before-head").await
}
async fn garbage_status(c: &Ctx) -> Outcome {
    before_head(c, "garbage-status").await
}

async fn after_head(c: &Ctx, faults: &[&str]) -> Outcome {
    let faulty = Faulty::start("faulty").await;
    let good = Controlled::start("good").await;
    let mut gw = c
        .gateway(&config(
            &[faulty.addr.to_string(), good.addr.to_string()],
            "",
            "",
        ))
        .await;
    gw.baseline();
    let mut observed = Vec::new();
    let mut pass = true;
    for fault in faults {
        // Round robin: make sure this one goes to the faulty endpoint (even count so far).
        let before = faulty.total();
        let mut seen = call(gw.addr, "GET", &format!("/{fault}/x"), b"").await;
        if faulty.total() == before {
            seen = call(gw.addr, "GET", &format!("/{fault}/x"), b"").await;
        }
        let cut = seen.status == 200 && seen.attempts == "1" && seen.body.is_err();
        let next = call(gw.addr, "GET", "/after", b"").await;
        pass &= cut && next.status == 200 && next.body.is_ok();
        observed.push(format!(
            "{fault}: {} {}, next {}",
            seen.status,
            if seen.body.is_err() {
                "cut"
            } else {
                "complete"
            },
            next.status
        ));
    }
    gw.outcome(observed.join("; "), 0, pass).await
}

async fn cut_after_head(c: &Ctx) -> Outcome {
    after_head(
        c,
        &[
            "reset-after-head",
            "reset-mid-body",
            "half-close-after-head",
            "short-body",
        ],
    )
    .await
}

async fn chunked_errors(c: &Ctx) -> Outcome {
    after_head(
        c,
        &[
            "chunked-bad-size",
            "chunked-missing-crlf",
            "chunked-truncated",
        ],
    )
    .await
}

async fn long_body(c: &Ctx) -> Outcome {
    let faulty = Faulty::start("faulty").await;
    let mut gw = c.gateway(&config(&[faulty.addr.to_string()], "", "")).await;
    gw.baseline();
    let seen = call(gw.addr, "GET", "/long-body", b"").await;
    let exact = seen.body.as_deref().ok() == Some(&b"0123456789"[..]);
    let mut sound = 0;
    for i in 0..3 {
        let path = format!("/after/{i}");
        let next = call(gw.addr, "GET", &path, b"").await;
        if next.body.as_deref().ok() == Some(format!("faulty ok {path}\n").as_bytes()) {
            sound += 1;
        }
    }
    let observed = format!(
        "{} bytes delivered, {sound} of 3 next requests sound",
        seen.body.as_ref().map_or(0, |b| b.len())
    );
    gw.outcome(observed, 3 - sound, exact && sound == 3).await
}

async fn crawling_body(c: &Ctx) -> Outcome {
    let faulty = Faulty::start("faulty").await;
    let mut gw = c
        .gateway(&config(
            &[faulty.addr.to_string()],
            "timeouts.upstream_body_idle_ms = 100",
            "",
        ))
        .await;
    gw.baseline();
    let t = Instant::now();
    let seen = call(gw.addr, "GET", "/slow-body/300", b"").await;
    let took = t.elapsed();
    let pass = seen.status == 200 && seen.body.is_err() && took < Duration::from_secs(2);
    gw.outcome(
        format!(
            "{} head, body {} after {took:.2?}",
            seen.status,
            if seen.body.is_err() {
                "cut"
            } else {
                "complete"
            }
        ),
        0,
        pass,
    )
    .await
}

async fn tls_failures(c: &Ctx) -> Outcome {
    let dir = crate::temp_dir("chaos-tls");
    crate::write_cert(&dir, "server", &["localhost"]);
    crate::write_cert(&dir, "other", &["localhost"]);
    let tls_up = crate::Upstream::start_tls("tls", &dir, "server").await;
    let plain = Faulty::start("plain").await;
    let mut observed = Vec::new();
    let mut pass = true;
    let mut last = None;
    for (ep, case) in [
        (tls_up.addr.to_string(), "untrusted"),
        (plain.addr.to_string(), "plain"),
    ] {
        let tls = format!(
            "tls = {{ ca = \"{}\", sni = \"localhost\" }}",
            dir.join("other.crt").display()
        );
        let mut gw = c.gateway(&config(&[ep], &tls, "")).await;
        gw.baseline();
        let t = Instant::now();
        let seen = call(gw.addr, "GET", &format!("/tls/{case}"), b"").await;
        let took = t.elapsed();
        pass &= seen.status == 502
            && seen.error_code == "upstream-tls-failed"
            && took < Duration::from_secs(3);
        observed.push(format!(
            "{case}: {} {} in {took:.2?}",
            seen.status, seen.error_code
        ));
        if let Some(prev) = last.replace(gw) {
            prev.outcome(String::new(), 0, true).await;
        }
    }
    pass &= plain.total() == 0;
    let gw = last.expect("two gateways ran");
    gw.outcome(observed.join("; "), 0, pass).await
}

async fn dns_failure(c: &Ctx) -> Outcome {
    let dns = crate::dns::DnsServer::start().await;
    let up = Faulty::start("up").await;
    let body = format!(
        "[[cluster]]\nname = \"c\"\nendpoints = {{ dns = \"svc.test:{}\", refresh_ms = 200 }}\n[[route]]\nname = \"r\"\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"c\"\n[dns]\nnameservers = [\"{}\"]\n",
        up.addr.port(),
        dns.addr
    );
    let mut gw = c.gateway(&body).await;
    gw.baseline();
    let t = Instant::now();
    let seen = call(gw.addr, "GET", "/never", b"").await;
    let took = t.elapsed();
    dns.set_ips("svc.test", &[up.addr.ip()]);
    let gauge = "portcullis_upstream_endpoints{cluster=\"c\"}";
    let found = crate::wait_for_metric(gw.admin, gauge, Duration::from_secs(4), |v| v == 1.0).await;
    let later = call(gw.addr, "GET", "/later", b"").await;
    let pass = seen.status == 503
        && seen.error_code == "no-healthy-upstream"
        && took < Duration::from_secs(1)
        && found
        && later.status == 200;
    gw.outcome(
        format!(
            "{} {} in {took:.2?}; after the name appeared: {}",
            seen.status, seen.error_code, later.status
        ),
        u64::from(later.status != 200),
        pass,
    )
    .await
}

/// 16 closed-loop keep-alive clients send GETs for 2.5 s; one of three endpoints (`b`) is
/// killed, listener and connections at once, after 0.8 s.
async fn killed_under_load(c: &Ctx, balancer: &str) -> Outcome {
    let a = Faulty::start("a").await;
    let b = Faulty::start("b").await;
    let d = Faulty::start("d").await;
    let eps = [a.addr, b.addr, d.addr].map(|x| x.to_string());
    let cluster = format!(
        "balancer = \"{balancer}\"\nretry_budget = {{ percent = 100, min_concurrency = 1000 }}"
    );
    let mut gw = c.gateway(&config(&eps, &cluster, "")).await;
    gw.baseline();
    let addr = gw.addr;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let end = Instant::now() + Duration::from_millis(2500);
    let mut tasks = Vec::new();
    for n in 0..16 {
        let (ok, failed) = (ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = None;
            let mut i = 0u64;
            while Instant::now() < end {
                if tx.is_none() {
                    let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
                        failed.lock().expect("failed").push("connect".into());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let Ok((t, conn)) =
                        hyper::client::conn::http1::handshake(TokioIo::new(s)).await
                    else {
                        continue;
                    };
                    tokio::spawn(conn);
                    tx = Some(t);
                }
                let Some(t) = tx.as_mut() else { continue };
                i += 1;
                let path = format!("/load/{n}/{i}");
                let req = Request::get(&path)
                    .header("host", "localhost")
                    .body(crate::body(Bytes::new()))
                    .expect("request");
                let res = tokio::time::timeout(Duration::from_secs(10), async {
                    let r = t.send_request(req).await?;
                    let status = r.status().as_u16();
                    let body = r.into_body().collect().await?.to_bytes();
                    Ok::<_, hyper::Error>((status, body))
                })
                .await;
                match res {
                    Ok(Ok((200, body))) if body.ends_with(format!("{path}\n").as_bytes()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Ok((status, _))) => {
                        failed
                            .lock()
                            .expect("failed")
                            .push(format!("{path}: {status}"));
                    }
                    Ok(Err(e)) => {
                        failed.lock().expect("failed").push(format!("{path}: {e}"));
                        tx = None;
                    }
                    Err(_) => {
                        failed
                            .lock()
                            .expect("failed")
                            .push(format!("{path}: timeout"));
                        tx = None;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    b.kill();
    for t in tasks {
        let _ = t.await;
    }
    let failed = std::mem::take(&mut *failed.lock().expect("failed"));
    let ok = ok.load(Ordering::Relaxed);
    let observed = format!(
        "{ok} ok, {} lost{}; the killed endpoint had served {}",
        failed.len(),
        failed
            .first()
            .map(|f| format!(" (first: {f})"))
            .unwrap_or_default(),
        b.total()
    );
    let lost = failed.len() as u64;
    gw.outcome(observed, lost, lost == 0 && ok > 200 && b.total() > 0)
        .await
}

async fn killed_round_robin(c: &Ctx) -> Outcome {
    killed_under_load(c, "round_robin").await
}
async fn killed_p2c(c: &Ctx) -> Outcome {
    killed_under_load(c, "p2c_peak_ewma").await
}
