//! The PROXY protocol (HAProxy's v1 text and v2 binary headers) on listeners with
//! `proxy_protocol = true`: an L4 balancer in front of the gateway says who the client is,
//! before the first TLS or HTTP byte. The address it declares becomes the connection's
//! client ([`crate::request::ConnInfo::client`]) for everything after it: `X-Forwarded-For`,
//! rate limits, filters, the access log.
//!
//! The header is read with `peek` and then consumed to its exact length, so not one byte of
//! the TLS or HTTP stream behind it is taken from the socket. Bounds: the header must arrive
//! within `[timeouts] client_header_ms` and fit in [`MAX_HEADER`]; a connection without a
//! valid header is closed (the protocol has no way to answer it) and counted. The spec asks
//! senders to send the header in one segment; a header split across segments is waited for,
//! re-peeked every [`RETRY`], within the same timeout.

use ppp::v1;
use ppp::v2;
use ppp::{HeaderResult, PartialResult};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// v1 is at most 107 bytes; v2 is 16 bytes and its addresses (at most 216 for UNIX sockets)
/// plus TLVs. 1 KiB holds what balancers send (AWS NLB, HAProxy with a few TLVs).
pub(crate) const MAX_HEADER: usize = 1024;

/// How often a header that arrived in pieces is looked at again.
const RETRY: Duration = Duration::from_millis(5);

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyHeaderError {
    #[error("no PROXY protocol header within the header timeout")]
    Timeout,
    #[error("the connection closed before its PROXY protocol header ended")]
    Closed,
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads the header at the start of `stream`. `Ok(Some(addr))`: the client it declares;
/// `Ok(None)`: a `LOCAL` / `UNKNOWN` header (a health check from the balancer itself, or a
/// family with no address): the socket's peer stands.
pub(crate) async fn read(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    tokio::time::timeout(timeout, read_unbounded(stream))
        .await
        .map_err(|_| ProxyHeaderError::Timeout)?
}

async fn read_unbounded(stream: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut buf = [0u8; MAX_HEADER];
    let mut seen = 0;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Closed);
        }
        match parse(&buf[..n])? {
            Some((len, addr)) => {
                // Consume exactly the header: what follows is the client's TLS or HTTP.
                let mut header = [0u8; MAX_HEADER];
                stream.read_exact(&mut header[..len]).await?;
                return Ok(addr);
            }
            None if n == MAX_HEADER => return Err(ProxyHeaderError::TooLong),
            None if n == seen => tokio::time::sleep(RETRY).await,
            None => seen = n,
        }
    }
}

/// `Some((length, client))` for a complete header, `None` when more bytes are needed.
pub(crate) fn parse(bytes: &[u8]) -> Result<Option<(usize, Option<SocketAddr>)>, ProxyHeaderError> {
    let result = HeaderResult::parse(bytes);
    if result.is_incomplete() {
        return Ok(None);
    }
    match result {
        HeaderResult::V1(Ok(h)) => {
            let addr = match h.addresses {
                v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                v1::Addresses::Unknown => None,
            };
            Ok(Some((h.header.len(), addr)))
        }
        HeaderResult::V2(Ok(h)) => {
            let addr = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => None,
            };
            Ok(Some((h.len(), addr)))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyHeaderError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_headers_give_their_length_and_source() {
        let h = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n";
        let (len, addr) = parse(h).unwrap().unwrap();
        assert_eq!(
            &h[len..],
            b"GET / HTTP/1.1\r\n",
            "exactly the header is consumed"
        );
        assert_eq!(addr, Some("203.0.113.7:5555".parse().unwrap()));
        let h = b"PROXY TCP6 2001:db8::1 ::1 4000 443\r\n";
        assert_eq!(
            parse(h).unwrap().unwrap().1,
            Some("[2001:db8::1]:4000".parse().unwrap())
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\nx").unwrap().unwrap(), (15, None));
        assert!(
            parse(b"PROXY TCP4 203.0.113.7").unwrap().is_none(),
            "partial"
        );
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n").is_err(), "no header");
    }

    #[test]
    fn v2_headers_give_their_length_and_source() {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend([0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 address bytes
        h.extend([198, 51, 100, 9, 127, 0, 0, 1, 0x1f, 0x90, 0, 80]);
        h.extend(b"rest");
        let (len, addr) = parse(&h).unwrap().unwrap();
        assert_eq!(&h[len..], b"rest");
        assert_eq!(addr, Some("198.51.100.9:8080".parse().unwrap()));
        // LOCAL: the balancer's own connection, the socket peer stands.
        let mut l = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        l.extend([0x20, 0x00, 0, 0]);
        assert_eq!(parse(&l).unwrap().unwrap(), (16, None));
        assert!(parse(&h[..20]).unwrap().is_none(), "partial");
    }
}
