//! HTTP/1.1, h2c with prior knowledge, and TLS with ALPN (h2 and http/1.1) and SNI.

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::*;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied() {
    let a = Upstream::start("a").await;
    let gw = gateway(
        &basic_config(&[("a", a.addr)], ""),
        std::path::Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").unwrap();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Several concurrent streams on one connection.
    let mut futs = Vec::new();
    for i in 0..10 {
        let req = Request::builder()
            .uri(format!("http://localhost/a/echo?i={i}"))
            .body(body(""))
            .unwrap();
        futs.push(tx.send_request(req));
    }
    for f in futs {
        let resp = f.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.headers()["x-upstream"], "a");
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v["headers"]["host"], "localhost",
            "h2 :authority becomes Host upstream"
        );
        assert_eq!(v["headers"]["via"], "2 portcullis");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn tls_alpn_h2_and_http11_with_sni_certificates() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("tls");
    let default_der = write_cert(&dir, "default", &["localhost"]);
    let api_der = write_cert(&dir, "api", &["api.test", "*.api.test"]);
    let extra = r#"
[[listener]]
name = "tls"
listen = "127.0.0.1:0"
tls = { cert = "default.crt", key = "default.key", sni = [ { names = ["api.test", "*.api.test"], cert = "api.crt", key = "api.key" } ] }
"#;
    let gw = gateway(&basic_config(&[("a", a.addr)], extra), &dir).await;
    let addr = gw.listener_addr("tls").unwrap();

    for (sni, expect_der, alpn) in [
        ("api.test", &api_der, &b"h2"[..]),
        ("v2.api.test", &api_der, &b"http/1.1"[..]),
        ("localhost", &default_der, &b"h2"[..]),
    ] {
        let cfg = tls_client(&[default_der.clone(), api_der.clone()], &[alpn]);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, tcp)
            .await
            .unwrap();
        let (_, session) = tls.get_ref();
        assert_eq!(session.alpn_protocol(), Some(alpn), "ALPN for {sni}");
        let peer = session.peer_certificates().unwrap()[0].clone();
        assert_eq!(&peer, expect_der, "certificate chosen by SNI {sni}");
        let req = Request::builder()
            .uri(format!("https://{sni}/a/echo"))
            .header("host", sni)
            .body(body(""))
            .unwrap();
        let resp = if alpn == b"h2" {
            let (mut tx, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            tx.send_request(req).await.unwrap()
        } else {
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(conn);
            tx.send_request(req).await.unwrap()
        };
        assert_eq!(resp.status(), 200);
        let b = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn rotated_certificate_is_served_to_new_connections_without_restart() {
    let a = Upstream::start("a").await;
    let dir = temp_dir("reload");
    let old_der = write_cert(&dir, "site", &["localhost"]);
    let extra = "[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\ntls = { cert = \"site.crt\", key = \"site.key\" }\n";
    let gw = gateway(&basic_config(&[("a", a.addr)], extra), &dir).await;
    let addr = gw.listener_addr("tls").unwrap();

    async fn handshake(
        addr: std::net::SocketAddr,
        roots: &[rustls_pki_types::CertificateDer<'static>],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let cfg = tls_client(roots, &[b"http/1.1"]);
        let tcp = TcpStream::connect(addr).await.unwrap();
        tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }
    let old_conn = handshake(addr, std::slice::from_ref(&old_der)).await;
    assert_eq!(
        old_conn.get_ref().1.peer_certificates().unwrap()[0],
        old_der
    );
    let (mut old_tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(old_conn))
        .await
        .unwrap();
    tokio::spawn(conn);

    // Rotate: write the new pair in place.
    let new_der = write_cert(&dir, "site", &["localhost"]);
    assert_ne!(new_der, old_der);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let cfg = tls_client(&[old_der.clone(), new_der.clone()], &[b"http/1.1"]);
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        if tls.get_ref().1.peer_certificates().unwrap()[0] == new_der {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "new certificate not picked up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The connection made before the rotation still works.
    let req = Request::builder()
        .uri("/a/echo")
        .header("host", "localhost")
        .body(body(""))
        .unwrap();
    assert_eq!(old_tx.send_request(req).await.unwrap().status(), 200);
    let m = metrics(gw.admin_addr()).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_tls_certificate_reloads_total{listener=\"tls\"}"
        ),
        Some(1.0)
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
