//! gRPC over HTTP/2 through the gateway: a real tonic client and server on loopback (tonic
//! without codegen: hand-written prost messages, served over a hyper h2c connection), with
//! unary and server-streaming calls, an upstream error, deadlines, and the gateway's own errors
//! answered Trailers-Only.

use futures_util::stream;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_tests::*;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::codec::ProstCodec;
use tonic::{Code, Request, Response, Status};

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    count: u32,
}

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, Status>> + Send>>;
type MsgStream = Pin<Box<dyn futures_core::Stream<Item = Result<Msg, Status>> + Send>>;

/// The test service's handlers; `tower_service::Service` is what tonic's server helpers take.
#[derive(Clone)]
struct Handler(&'static str);

impl tower_service::Service<Request<Msg>> for Handler {
    type Response = Response<Msg>;
    type Error = Status;
    type Future = BoxFut<Response<Msg>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        let which = self.0;
        Box::pin(async move {
            let m = req.into_inner();
            match which {
                "Unary" => Ok(Response::new(Msg {
                    text: format!("echo: {}", m.text),
                    count: m.count + 1,
                })),
                "Fail" => {
                    let mut s = Status::not_found(format!("no such thing: {}", m.text));
                    s.metadata_mut()
                        .insert("x-detail", "from-upstream".parse().unwrap());
                    Err(s)
                }
                _ => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(Response::new(m))
                }
            }
        })
    }
}

#[derive(Clone)]
struct Streamer;

impl tower_service::Service<Request<Msg>> for Streamer {
    type Response = Response<MsgStream>;
    type Error = Status;
    type Future = BoxFut<Response<MsgStream>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let m = req.into_inner();
            let mut items: Vec<Result<Msg, Status>> = Vec::new();
            for i in 0..m.count {
                items.push(Ok(Msg {
                    text: format!("{}-{i}", m.text),
                    count: i,
                }));
            }
            if m.text == "break" {
                // An error after messages: it can only travel in the trailers.
                let mut s = Status::resource_exhausted("stream broke");
                s.metadata_mut()
                    .insert("x-detail", "in-trailers".parse().unwrap());
                items.push(Err(s));
            }
            Ok(Response::new(Box::pin(stream::iter(items)) as MsgStream))
        })
    }
}

/// What the upstream saw of each call: path, `te`, `grpc-timeout`.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

async fn grpc_server() -> (SocketAddr, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let seen = s2.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let h = |n: &str| {
                        req.headers()
                            .get(n)
                            .map(|v| v.to_str().unwrap().to_string())
                    };
                    seen.lock().unwrap().push((
                        req.uri().path().to_string(),
                        h("te"),
                        h("grpc-timeout"),
                    ));
                    async move {
                        let codec = ProstCodec::<Msg, Msg>::default();
                        let mut g = tonic::server::Grpc::new(codec);
                        let resp = match req.uri().path() {
                            "/test.Echo/Unary" => g.unary(Handler("Unary"), req).await,
                            "/test.Echo/Fail" => g.unary(Handler("Fail"), req).await,
                            "/test.Echo/Slow" => g.unary(Handler("Slow"), req).await,
                            "/test.Echo/Stream" => g.server_streaming(Streamer, req).await,
                            _ => Status::unimplemented("no such method").into_http(),
                        };
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    (addr, seen)
}

type Channel = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    tonic::body::BoxBody,
>;

/// A tonic client on an h2c (prior knowledge) connection to `addr`.
fn client(addr: SocketAddr) -> tonic::client::Grpc<Channel> {
    let ch = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    tonic::client::Grpc::with_origin(ch, format!("http://{addr}").parse().unwrap())
}

async fn unary(
    c: &mut tonic::client::Grpc<Channel>,
    method: &'static str,
    req: Request<Msg>,
) -> Result<Response<Msg>, Status> {
    c.ready().await.expect("channel ready");
    let path = PathAndQuery::from_static(method);
    tokio::time::timeout(
        Duration::from_secs(10),
        c.unary(req, path, ProstCodec::<Msg, Msg>::default()),
    )
    .await
    .expect("call ends in time")
}

fn msg(text: &str, count: u32) -> Request<Msg> {
    Request::new(Msg {
        text: text.into(),
        count,
    })
}

async fn config(up: SocketAddr, route_extra: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listener]]
name = "main"
listen = "127.0.0.1:0"
[[cluster]]
name = "grpc"
endpoints = ["{up}"]
protocol = "h2"
[[cluster]]
name = "gone"
endpoints = ["{gone}"]
protocol = "h2"
[[route]]
name = "gone"
match = {{ path_prefix = "/test.Gone" }}
cluster = "gone"
[[route]]
name = "grpc"
match = {{ path_prefix = "/test.Echo" }}
cluster = "grpc"
{route_extra}
"#,
        gone = dead_addr().await
    )
}

async fn env(route_extra: &str) -> (portcullis::Gateway, SocketAddr, Seen) {
    let (up, seen) = grpc_server().await;
    let gw = gateway(&config(up, route_extra).await, Path::new(".")).await;
    let addr = gw.listener_addr("main").unwrap();
    (gw, addr, seen)
}

#[tokio::test]
async fn unary_calls_pass_through_with_te_trailers_kept() {
    let (gw, addr, seen) = env("").await;
    let mut c = client(addr);
    let r = unary(&mut c, "/test.Echo/Unary", msg("hi", 41))
        .await
        .expect("unary call");
    assert_eq!(
        r.get_ref(),
        &Msg {
            text: "echo: hi".into(),
            count: 42
        }
    );
    let (path, te, _) = seen.lock().unwrap()[0].clone();
    assert_eq!(path, "/test.Echo/Unary");
    // gRPC servers (grpcio/C-core among them) reset a call without it.
    assert_eq!(te.as_deref(), Some("trailers"));
    gw.shutdown().await;
}

#[tokio::test]
async fn server_streaming_calls_keep_their_trailers() {
    let (gw, addr, _) = env("").await;
    let mut c = client(addr);
    c.ready().await.unwrap();
    let resp = c
        .server_streaming(
            msg("item", 5),
            PathAndQuery::from_static("/test.Echo/Stream"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .expect("stream starts");
    let mut s = resp.into_inner();
    let mut got = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("message in time")
        .expect("no stream error")
    {
        got.push(m.text);
    }
    assert_eq!(got, ["item-0", "item-1", "item-2", "item-3", "item-4"]);
    // The stream ended with the upstream's trailers (`grpc-status: 0`), not a reset.
    assert!(s.trailers().await.expect("trailers").is_some());

    // An error after messages arrives in the trailers, with its metadata.
    c.ready().await.unwrap();
    let resp = c
        .server_streaming(
            msg("break", 2),
            PathAndQuery::from_static("/test.Echo/Stream"),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .expect("stream starts");
    let mut s = resp.into_inner();
    let mut n = 0;
    let err = loop {
        match s.message().await {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("stream ended without the error"),
            Err(e) => break e,
        }
    };
    assert_eq!(n, 2);
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(err.message(), "stream broke");
    assert_eq!(err.metadata().get("x-detail").unwrap(), "in-trailers");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_reach_the_client_intact() {
    let (gw, addr, _) = env("").await;
    let mut c = client(addr);
    let err = unary(&mut c, "/test.Echo/Fail", msg("widget", 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "no such thing: widget");
    assert_eq!(err.metadata().get("x-detail").unwrap(), "from-upstream");
    let err = unary(&mut c, "/test.Echo/Nope", msg("", 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_calls_deadline_is_honoured_and_passed_up() {
    let (gw, addr, seen) = env("timeouts = { request_deadline_ms = 10000 }").await;
    let mut c = client(addr);
    let mut req = msg("slow", 0);
    req.set_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let err = unary(&mut c, "/test.Echo/Slow", req).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(3),
        "{took:?}"
    );
    // The upstream was told what was left of the call's 300 ms, not the route's 10 s.
    let timeout = seen.lock().unwrap()[0]
        .2
        .clone()
        .expect("grpc-timeout sent up");
    let ms: u64 = timeout.trim_end_matches('m').parse().expect("milliseconds");
    assert!(ms <= 300 && ms > 100, "grpc-timeout {timeout}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_routes_deadline_wins_when_it_is_smaller() {
    let (gw, addr, seen) = env("timeouts = { request_deadline_ms = 400 }").await;
    let mut c = client(addr);
    let mut req = msg("slow", 0);
    req.set_timeout(Duration::from_secs(30));
    let start = Instant::now();
    let err = unary(&mut c, "/test.Echo/Slow", req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    let timeout = seen.lock().unwrap()[0]
        .2
        .clone()
        .expect("grpc-timeout sent up");
    let ms: u64 = timeout.trim_end_matches('m').parse().expect("milliseconds");
    assert!(ms <= 400, "grpc-timeout {timeout}");
    gw.shutdown().await;
}

#[tokio::test]
async fn gateway_errors_are_trailers_only_with_a_grpc_status() {
    let (gw, addr, _) = env("").await;
    let mut c = client(addr);
    // No route: UNIMPLEMENTED, with the gateway's reason.
    let err = unary(&mut c, "/other.Service/Call", msg("", 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    assert_eq!(err.message(), "no route matches this request");
    assert_eq!(err.metadata().get("portcullis-error").unwrap(), "no-route");
    // An upstream that cannot be reached: UNAVAILABLE (clients may retry it).
    let err = unary(&mut c, "/test.Gone/Call", msg("", 0))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        err.metadata().get("portcullis-error").unwrap(),
        "connect-failed"
    );

    // On the wire: HTTP 200, grpc-status in the head, and the stream ends with it.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}/other.Service/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body(""))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    assert_eq!(resp.headers()["grpc-status"], "12");
    assert!(
        http_body::Body::is_end_stream(resp.body()),
        "Trailers-Only ends with its head"
    );
    gw.shutdown().await;
}
