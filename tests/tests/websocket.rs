//! WebSocket through the gateway: a real client and server (tokio-tungstenite) on loopback,
//! over HTTP/1.1 `Upgrade` and HTTP/2 extended CONNECT (RFC 8441), with the route switch, the
//! auth filter on the upgrade, the idle timeout, the listener's tunnel cap and drain.

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{self, handshake::client::generate_key, Message};

/// An echo WebSocket server that records each upgrade's path and headers.
struct WsServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, http::HeaderMap)>>>,
}

async fn ws_server() -> WsServer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let seen = s2.clone();
            tokio::spawn(async move {
                // The callback's error type is tungstenite's, large by its design.
                #[allow(clippy::result_large_err)]
                let cb = |req: &tungstenite::handshake::server::Request,
                          resp: tungstenite::handshake::server::Response| {
                    seen.lock()
                        .unwrap()
                        .push((req.uri().path().to_string(), req.headers().clone()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, cb).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    WsServer { addr, seen }
}

fn config(up: SocketAddr, extra_route: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
slow_request_ms = 50
[[listener]]
name = "main"
listen = "127.0.0.1:0"
{extra}
[[cluster]]
name = "ws"
endpoints = ["{up}"]
[[route]]
name = "ws"
cluster = "ws"
{extra_route}
"#
    )
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut req = http::Request::builder()
        .uri(format!("ws://{addr}{path}"))
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", generate_key());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(req.body(()).unwrap(), tcp),
    )
    .await
    .expect("handshake in time")?;
    assert_eq!(resp.status(), 101);
    Ok(ws)
}

async fn echo<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, m: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(m.clone()).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("echo in time")
        .expect("stream open")
        .expect("message");
    assert_eq!(got, m);
}

/// Waits for the server side to close the client's WebSocket; returns when it did.
async fn closed_by_gateway<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    within: Duration,
) -> Instant
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    close_of(ws, within).await.0
}

/// Waits for the close; returns when, and the close frame's code if one came.
async fn close_of<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    within: Duration,
) -> (Instant, Option<u16>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let end = tokio::time::timeout(within, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => {
                    return (Instant::now(), f.map(|f| u16::from(f.code)))
                }
                None | Some(Err(_)) => return (Instant::now(), None),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    end.expect("the gateway closed the tunnel in time")
}

#[tokio::test]
async fn websocket_over_http1_is_proxied_with_one_identity_and_ends_in_metrics() {
    let up = ws_server().await;
    let gw = gateway(&config(up.addr, "", ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();

    // The upstream gets the admitted path, not the client's spelling of it.
    let mut ws = connect(addr, "/chat/./room//1", &[])
        .await
        .expect("upgrade");
    echo(&mut ws, Message::text("hello")).await;
    let big = vec![7u8; 200 * 1024];
    echo(&mut ws, Message::binary(big)).await;
    // Outlive `slow_request_ms` (50 ms) while in use: a long tunnel is not a slow request.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(150) {
        echo(&mut ws, Message::text("ping")).await;
    }
    ws.close(None).await.unwrap();
    {
        let seen = up.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, "/chat/room/1");
        assert!(seen[0].1.contains_key("x-forwarded-for"));
        assert!(seen[0].1.contains_key("sec-websocket-key"));
    }
    assert!(
        wait_for_metric(
            admin,
            "portcullis_tunnels_total{end=\"closed\"}",
            Duration::from_secs(5),
            |v| v == 1.0
        )
        .await,
        "{}",
        metrics(admin).await
    );
    let m = metrics(admin).await;
    assert_valid_exposition(&m);
    assert!(
        sample(&m, "portcullis_tunnel_bytes_total{direction=\"up\"}").unwrap() > 200.0 * 1024.0
    );
    assert!(
        sample(&m, "portcullis_tunnel_bytes_total{direction=\"down\"}").unwrap() > 200.0 * 1024.0
    );
    assert_eq!(
        sample(&m, "portcullis_tunnels_active{listener=\"main\"}"),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            "portcullis_requests_total{route=\"ws\",status_class=\"1xx\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "portcullis_tunnel_duration_seconds_count"),
        Some(1.0)
    );
    // The request ended at its 101: its duration is far below the tunnel's life, so the
    // slow-request ring stayed empty.
    let sum = sample(&m, "portcullis_request_duration_seconds_sum{route=\"ws\"}").unwrap();
    assert!(sum < 0.15, "request duration {sum}s counts the tunnel");
    let (_, b) = send(admin, get(admin, "/admin/passports")).await;
    let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(0), "ring: {v}");
    gw.shutdown().await;
}

#[tokio::test]
async fn websocket_upgrades_are_refused_where_the_route_forbids_them() {
    let up = ws_server().await;
    let gw = gateway(&config(up.addr, "websocket = false", ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    match connect(addr, "/chat", &[]).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
            assert_eq!(resp.headers()["portcullis-error"], "websocket-refused");
        }
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    assert!(up.seen.lock().unwrap().is_empty());
    // Plain requests on the route are unaffected (the upstream answers them as it can).
    let (p, _) = send(addr, get(addr, "/chat")).await;
    assert_ne!(p.status, 403);
    gw.shutdown().await;
}

#[tokio::test]
async fn inbound_filters_run_on_the_upgrade_request() {
    let up = ws_server().await;
    let dir = temp_dir("ws-auth");
    install_plugin(
        &dir,
        "auth",
        "auth",
        "kind = \"inbound\"\n[config]\nmode = \"api_key\"\nkeys = { team-a = \"k-aaa\" }\n",
    );
    let plugins = format!("[plugins]\ndir = \"{}\"\n", dir.display());
    let gw = gateway(
        &format!("{}{plugins}", config(up.addr, "", "")),
        Path::new("."),
    )
    .await;
    let addr = gw.listener_addr("main").unwrap();
    match connect(addr, "/chat", &[]).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "no upgrade reached the upstream"
    );
    let mut ws = connect(addr, "/chat", &[("x-api-key", "k-aaa")])
        .await
        .expect("upgrade");
    echo(&mut ws, Message::text("authenticated")).await;
    assert_eq!(
        up.seen.lock().unwrap()[0].1["x-portcullis-principal"],
        "team-a"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn idle_tunnels_are_closed_after_tunnel_idle_ms() {
    let up = ws_server().await;
    let cfg = config(up.addr, "timeouts = { tunnel_idle_ms = 300 }", "");
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();
    let mut ws = connect(addr, "/chat", &[]).await.expect("upgrade");
    // Traffic keeps the tunnel open past the idle timeout…
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(500) {
        echo(&mut ws, Message::text("still here")).await;
    }
    // …silence closes it.
    let quiet = Instant::now();
    let closed = closed_by_gateway(&mut ws, Duration::from_secs(5)).await;
    let after = closed.duration_since(quiet);
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}"
    );
    assert!(
        wait_for_metric(
            admin,
            "portcullis_tunnels_total{end=\"idle_timeout\"}",
            Duration::from_secs(5),
            |v| v == 1.0
        )
        .await
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_listener_caps_its_tunnels() {
    let up = ws_server().await;
    let gw = gateway(&config(up.addr, "", "max_tunnels = 1"), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let admin = gw.admin_addr();
    let mut first = connect(addr, "/chat", &[]).await.expect("first tunnel");
    match connect(addr, "/chat", &[]).await {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert_eq!(resp.headers()["portcullis-error"], "tunnel-limit");
        }
        other => panic!("expected a 503, got {:?}", other.map(|_| ())),
    }
    echo(&mut first, Message::text("unaffected")).await;
    first.close(None).await.unwrap();
    assert!(
        wait_for_metric(
            admin,
            "portcullis_tunnels_active{listener=\"main\"}",
            Duration::from_secs(5),
            |v| v == 0.0
        )
        .await
    );
    let mut again = connect(addr, "/chat", &[])
        .await
        .expect("a freed slot is reused");
    echo(&mut again, Message::text("again")).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn drain_closes_open_tunnels_at_drain_ms() {
    let up = ws_server().await;
    let cfg = format!("{}[timeouts]\ndrain_ms = 300\n", config(up.addr, "", ""));
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let mut ws = connect(addr, "/chat", &[]).await.expect("upgrade");
    echo(&mut ws, Message::text("before drain")).await;
    let started = Instant::now();
    let shutdown = tokio::spawn(gw.shutdown());
    let (closed, code) = close_of(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1001), "a WebSocket close, going away");
    let after = closed.duration_since(started);
    assert!(
        after >= Duration::from_millis(250),
        "closed after {after:?}, before drain_ms"
    );
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown ends once the tunnels closed")
        .unwrap();
}

#[tokio::test]
async fn websocket_over_http2_extended_connect() {
    let up = ws_server().await;
    let gw = gateway(&config(up.addr, "", ""), Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method("CONNECT")
        .uri(format!("http://{addr}/chat/h2"))
        .header("sec-websocket-version", "13")
        .body(body(""))
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    // The client may only send extended CONNECT once the server's SETTINGS allowed it.
    tx.ready().await.unwrap();
    let mut resp = tokio::time::timeout(Duration::from_secs(10), tx.send_request(req))
        .await
        .expect("response in time")
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.headers());
    assert!(!resp.headers().contains_key("sec-websocket-accept"));
    let io = hyper::upgrade::on(&mut resp).await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(io),
        tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    echo(&mut ws, Message::text("over h2")).await;
    echo(&mut ws, Message::binary(vec![1u8; 64 * 1024])).await;
    {
        let seen = up.seen.lock().unwrap();
        assert_eq!(seen[0].0, "/chat/h2");
        assert_eq!(seen[0].1["upgrade"], "websocket");
    }
    ws.close(None).await.unwrap();
    gw.shutdown().await;
}

/// A tunnel's access log line is written when the tunnel ends, with its duration and bytes.
#[tokio::test]
async fn a_tunnel_logs_one_line_at_its_end_with_duration_and_bytes() {
    let up = ws_server().await;
    let dir = temp_dir("ws-access-log");
    let log = dir.join("access.log");
    let cfg = format!(
        "{}\n[access_log]\npath = \"{}\"\n",
        config(up.addr, "", ""),
        log.display()
    );
    let gw = gateway(&cfg, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    let mut ws = connect(addr, "/chat", &[("x-request-id", "ws-1")])
        .await
        .expect("upgrade");
    echo(&mut ws, Message::text("hello")).await;
    echo(&mut ws, Message::binary(vec![1u8; 1000])).await;
    // Nothing is logged while the tunnel is open.
    assert!(
        gw.access_log()
            .expect("configured")
            .flush(Duration::from_secs(5))
            .await
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "");
    ws.close(None).await.unwrap();
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect()
    };
    assert!(eventually(Duration::from_secs(10), || read().len() == 1).await);
    let line = &read()[0];
    assert_eq!(line["request_id"], "ws-1");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/chat");
    assert_eq!(line["status"], 101);
    assert_eq!(line["route"], "ws");
    assert_eq!(line["cluster"], "ws");
    assert_eq!(line["endpoint"], up.addr.to_string());
    assert_eq!(line["attempts"], 1);
    assert_eq!(line["error"], serde_json::Value::Null);
    assert_eq!(line["tunnel_end"], "closed");
    // Frames carry a header (and the client's a mask): more than the payloads.
    let (tin, tout) = (
        line["tunnel_bytes_in"].as_u64().unwrap(),
        line["tunnel_bytes_out"].as_u64().unwrap(),
    );
    assert!((1005..1100).contains(&tin), "in {tin}: {line}");
    assert!((1005..1100).contains(&tout), "out {tout}: {line}");
    let (total, tunnel) = (
        line["total_us"].as_u64().unwrap(),
        line["tunnel_us"].as_u64().unwrap(),
    );
    assert!(tunnel > 0 && total < 10_000_000, "{line}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_routes_closes_old_tunnels_at_drain_ms_and_others_keep_theirs() {
    let up = ws_server().await;
    let dir = temp_dir("ws-reload");
    let file = dir.join("gw.toml");
    let write = |extra: &str| {
        let cfg = format!(
            "{}[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"t\"\n[timeouts]\ndrain_ms = 300\n{extra}",
            config(up.addr, "", "").replace("[admin]\nlisten = \"127.0.0.1:0\"\nslow_request_ms = 50\n", "")
        );
        std::fs::write(&file, cfg).unwrap();
    };
    write("");
    let gw = portcullis::Gateway::start_file(&file).await.unwrap();
    let (addr, admin) = (gw.listener_addr("main").unwrap(), gw.admin_addr());
    let reload = || async {
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{admin}/admin/config/reload"))
            .header("host", "localhost")
            .header("authorization", "Bearer t")
            .body(body(bytes::Bytes::new()))
            .unwrap();
        let (p, b) = send(admin, req).await;
        assert_eq!(p.status, 200, "{b:?}");
    };
    let mut ws = connect(addr, "/chat", &[]).await.expect("upgrade");
    echo(&mut ws, Message::text("one")).await;

    // Only the request-shedding limit changes: the tunnel lives on.
    write("[limits]\nmax_in_flight = 5000\n");
    reload().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    echo(&mut ws, Message::text("still open")).await;

    // A route changes: the tunnel gets drain_ms, then a close 1001; new upgrades work.
    write("[[route]]\nname = \"other\"\nmatch = { path_prefix = \"/other\" }\ncluster = \"ws\"\n");
    let started = Instant::now();
    reload().await;
    echo(&mut ws, Message::text("within the drain")).await;
    let (closed, code) = close_of(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(code, Some(1001));
    assert!(closed.duration_since(started) >= Duration::from_millis(250));
    let mut again = connect(addr, "/chat", &[]).await.expect("a new upgrade");
    echo(&mut again, Message::text("new config")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo(
        &mut again,
        Message::text("not closed by the earlier reload"),
    )
    .await;
    gw.shutdown().await;
}
