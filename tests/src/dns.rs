//! A tiny authoritative DNS server on 127.0.0.1 (UDP) whose records a test changes while it
//! runs: A, AAAA and SRV answers built with hickory-proto, the resolver's own message types.
//! It can also answer NXDOMAIN or SERVFAIL for everything, or go silent (drop queries).

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;

/// How the server answers every query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// From the records (an unknown name: NXDOMAIN).
    Records = 0,
    Nxdomain = 1,
    Servfail = 2,
    /// No answer at all: the resolver times out.
    Silent = 3,
}

type Zone = HashMap<(String, RecordType), Vec<RData>>;

pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    mode: Arc<AtomicU8>,
    /// Queries received (answered or not).
    pub queries: Arc<AtomicU64>,
    _task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start() -> DnsServer {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = sock.local_addr().expect("dns addr");
        let zone: Arc<Mutex<Zone>> = Arc::default();
        let mode = Arc::new(AtomicU8::new(Mode::Records as u8));
        let queries = Arc::new(AtomicU64::new(0));
        // TCP on the same port, as resolvers fall back to it (truncation, errors).
        let tcp = tokio::net::TcpListener::bind(addr).await.ok();
        let (z, m, q) = (zone.clone(), mode.clone(), queries.clone());
        if let Some(l) = tcp {
            tokio::spawn(serve_tcp(l, z.clone(), m.clone(), q.clone()));
        }
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                q.fetch_add(1, Ordering::Relaxed);
                let Some(reply) = answer(&buf[..n], &z, m.load(Ordering::Relaxed)) else {
                    continue;
                };
                let _ = sock.send_to(&reply, from).await;
            }
        });
        DnsServer {
            addr,
            zone,
            mode,
            queries,
            _task: task,
        }
    }

    pub fn set_mode(&self, m: Mode) {
        self.mode.store(m as u8, Ordering::Relaxed);
    }

    /// The A and AAAA records of `name` become `ips` (empty: the name has none).
    pub fn set_ips(&self, name: &str, ips: &[IpAddr]) {
        let mut z = self.zone.lock().expect("zone");
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for ip in ips {
            match *ip {
                IpAddr::V4(a) => v4.push(RData::A(A(a))),
                IpAddr::V6(a) => v6.push(RData::AAAA(AAAA(a))),
            }
        }
        z.insert((fqdn(name), RecordType::A), v4);
        z.insert((fqdn(name), RecordType::AAAA), v6);
    }

    /// The SRV records of `name`: (priority, weight, port, target).
    pub fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)]) {
        let rs = records
            .iter()
            .map(|(p, w, port, t)| {
                RData::SRV(SRV::new(
                    *p,
                    *w,
                    *port,
                    Name::from_ascii(fqdn(t)).expect("target"),
                ))
            })
            .collect();
        self.zone
            .lock()
            .expect("zone")
            .insert((fqdn(name), RecordType::SRV), rs);
    }
}

/// DNS over TCP: each message with a two-byte length prefix.
async fn serve_tcp(
    l: tokio::net::TcpListener,
    zone: Arc<Mutex<Zone>>,
    mode: Arc<AtomicU8>,
    queries: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while let Ok((mut s, _)) = l.accept().await {
        let (zone, mode, queries) = (zone.clone(), mode.clone(), queries.clone());
        tokio::spawn(async move {
            loop {
                let Ok(len) = s.read_u16().await else { return };
                let mut buf = vec![0u8; usize::from(len)];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                queries.fetch_add(1, Ordering::Relaxed);
                let Some(reply) = answer(&buf, &zone, mode.load(Ordering::Relaxed)) else {
                    // Silent: hold the connection, answer nothing.
                    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                    return;
                };
                let Ok(n) = u16::try_from(reply.len()) else {
                    return;
                };
                if s.write_u16(n).await.is_err() || s.write_all(&reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn fqdn(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

/// The reply to one query datagram, or `None` to stay silent.
fn answer(query: &[u8], zone: &Mutex<Zone>, mode: u8) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if mode == Mode::Silent as u8 {
        return None;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    let q = req.queries.first()?.clone();
    resp.add_query(q.clone());
    let name = fqdn(&q.name().to_ascii());
    let z = zone.lock().ok()?;
    let known = z.keys().any(|(n, _)| *n == name);
    resp.metadata.response_code = match mode {
        m if m == Mode::Nxdomain as u8 => ResponseCode::NXDomain,
        m if m == Mode::Servfail as u8 => ResponseCode::ServFail,
        _ if !known => ResponseCode::NXDomain,
        _ => ResponseCode::NoError,
    };
    if resp.metadata.response_code == ResponseCode::NoError {
        for rd in z.get(&(name, q.query_type())).into_iter().flatten() {
            resp.add_answer(Record::from_rdata(q.name().clone(), 1, rd.clone()));
        }
    }
    resp.to_vec().ok()
}
