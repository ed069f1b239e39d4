//! HTTP/3 over QUIC: the same routes, filters, endpoints and answers as HTTP/1.1 and HTTP/2,
//! advertised by `Alt-Svc` on the TCP listener.

use bytes::Buf;
use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::*;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;

async fn h3_get(
    addr: SocketAddr,
    roots: &[rustls_pki_types::CertificateDer<'static>],
    path: &str,
) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
    let tls = tls_client(roots, &[b"h3"]);
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from((*tls).clone()).expect("quic tls");
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = ep
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3 handshake");
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let req = Request::get(format!("https://localhost{path}"))
        .body(())
        .expect("request");
    let mut stream = sender.send_request(req).await.expect("send");
    // The gateway may answer before it reads our end of stream, and then asks us to stop
    // sending (H3_NO_ERROR): the response is what counts.
    let _ = stream.finish().await;
    let resp = stream.recv_response().await.expect("response");
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.expect("data") {
        let n = chunk.remaining();
        body.extend_from_slice(&chunk.copy_to_bytes(n));
    }
    drop(sender);
    drive.abort();
    ep.close(0u32.into(), b"done");
    (resp.status(), resp.headers().clone(), body)
}

async fn tls_get(
    addr: SocketAddr,
    roots: &[rustls_pki_types::CertificateDer<'static>],
    alpn: &[u8],
    path: &str,
) -> (http::StatusCode, http::HeaderMap, Vec<u8>) {
    let connector = tokio_rustls::TlsConnector::from(tls_client(roots, &[alpn]));
    let tcp = TcpStream::connect(addr).await.expect("tcp");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("tls");
    let req = Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(body(""))
        .expect("request");
    let resp = if alpn == b"h2" {
        let (mut tx, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("h2");
        tokio::spawn(conn);
        tx.send_request(req).await.expect("response")
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1");
        tokio::spawn(conn);
        tx.send_request(req).await.expect("response")
    };
    let (parts, b) = resp.into_parts();
    let b = b.collect().await.expect("body").to_bytes().to_vec();
    (parts.status, parts.headers, b)
}

#[tokio::test]
async fn http3_serves_the_same_answers_as_h1_and_h2_and_is_advertised() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("h3");
    let der = write_cert(&dir, "site", &["localhost"]);
    install_plugin(
        &dir,
        "tag",
        "add-header",
        "kind = \"outbound\"\n[config]\nset = { \"x-tag\" = \"filtered\" }\n",
    );
    install_plugin(
        &dir,
        "fan",
        "fanout",
        "kind = \"endpoint\"\n[config]\nclusters = \"a\"\npath = \"/a/x\"\n",
    );
    let cfg = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\nhttp3 = true\ntls = {{ cert = \"site.crt\", key = \"site.key\" }}\n\
         [[cluster]]\nname = \"a\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"fan\"\nmatch = {{ path_prefix = \"/fan\" }}\nendpoint = \"fan\"\n\
         [[route]]\nname = \"a\"\nmatch = {{ path_prefix = \"/a\" }}\ncluster = \"a\"\n[plugins]\ndir = \".\"\n",
        a.addr
    );
    let gw = gateway(&cfg, &dir).await;
    let addr = gw.listener_addr("tls").expect("listener");
    let roots = [der];

    let (s1, h1h, b1) = tls_get(addr, &roots, b"http/1.1", "/a/x?q=1").await;
    let (s2, _, b2) = tls_get(addr, &roots, b"h2", "/a/x?q=1").await;
    let (s3, h3h, b3) = h3_get(addr, &roots, "/a/x?q=1").await;
    assert_eq!((s1.as_u16(), s2.as_u16(), s3.as_u16()), (200, 200, 200));
    let path = |b: &[u8]| {
        let v: serde_json::Value = serde_json::from_slice(b).expect("json");
        (
            v["upstream"].clone(),
            v["path"].clone(),
            v["method"].clone(),
        )
    };
    assert_eq!(path(&b1), path(&b3));
    assert_eq!(path(&b2), path(&b3));
    assert_eq!(h3h["x-tag"], "filtered", "outbound filters run on h3 too");
    assert_eq!(h3h["x-upstream"], "a");
    let alt = h1h
        .get("alt-svc")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert_eq!(alt, format!("h3=\":{}\"; ma=86400", addr.port()));

    // An endpoint route over h3 answers like over h1.
    let (s1, _, b1) = tls_get(addr, &roots, b"http/1.1", "/fan").await;
    let (s3, _, b3) = h3_get(addr, &roots, "/fan").await;
    assert_eq!((s1.as_u16(), s3.as_u16()), (200, 200));
    let v1: serde_json::Value = serde_json::from_slice(&b1).expect("json");
    let v3: serde_json::Value = serde_json::from_slice(&b3).expect("json");
    assert_eq!(v1["results"][0]["status"], 200);
    assert_eq!(v1["results"][0]["status"], v3["results"][0]["status"]);

    // The protocol is a label in the metrics.
    let m = metrics(gw.admin_addr()).await;
    assert!(
        sample(&m, "portcullis_requests_by_protocol_total{protocol=\"h3\"}") >= Some(2.0),
        "h3 label in metrics"
    );
}

/// A binary upgrade hands over the TLS listener's TCP socket and its HTTP/3 UDP socket: after
/// it, HTTP/1.1, HTTP/2 and HTTP/3 on the same port all reach the new gateway. (The upgrade
/// under load with the real binary is `host/tests/upgrade.rs`; here both gateways share one
/// process, which the hand-over does not care about.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_hands_over_the_quic_socket_too() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let dir = temp_dir("h3-upgrade");
    let der = write_cert(&dir, "site", &["localhost"]);
    let file = dir.join("gw.toml");
    let write = |up: SocketAddr| {
        let cfg = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nupgrade_socket = \"up.sock\"\n[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\nhttp3 = true\ntls = {{ cert = \"site.crt\", key = \"site.key\" }}\n\
             [[cluster]]\nname = \"u\"\nendpoints = [\"{up}\"]\n[[route]]\nname = \"all\"\ncluster = \"u\"\n[timeouts]\ndrain_ms = 500\n"
        );
        std::fs::write(&file, cfg).expect("write");
    };
    write(a.addr);
    let old = portcullis::Gateway::start_file(&file).await.expect("old");
    let addr = old.listener_addr("tls").expect("listener");
    let roots = [der];
    let upstream = |h: &http::HeaderMap| h["x-upstream"].to_str().unwrap_or("").to_string();
    let (s, h, _) = h3_get(addr, &roots, "/x").await;
    assert_eq!((s.as_u16(), upstream(&h).as_str()), (200, "a"));

    write(b.addr);
    let new = portcullis::Gateway::start_file_upgrading(&file)
        .await
        .expect("the upgrade starts");
    assert_eq!(new.listener_addr("tls"), Some(addr), "the same port");
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        old.run_until(std::future::pending()),
    )
    .await
    .expect("the old gateway drains once handed over");
    let (s, h, _) = h3_get(addr, &roots, "/after").await;
    assert_eq!((s.as_u16(), upstream(&h).as_str()), (200, "b"), "HTTP/3");
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let (s, h, _) = tls_get(addr, &roots, alpn, "/x").await;
        assert_eq!((s.as_u16(), upstream(&h).as_str()), (200, "b"));
    }
    new.shutdown().await;
}
