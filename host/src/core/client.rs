//! The client's address, fixed once per request: the connection's peer (or the source a
//! PROXY protocol header declared, see `server::proxy_protocol`), unless that peer is a
//! trusted proxy (`[http] trusted_proxies`), in which case `X-Forwarded-For` says who the
//! client is.
//!
//! Read right to left, as nginx's `real_ip_recursive` does: each trusted hop appended the
//! address it received from, so the rightmost address that is *not* a trusted proxy is the
//! first one nobody trusted vouches for, the client. Anything left of it is the client's own
//! claim and is never believed. An entry that is not an IP address stops the walk (the last
//! trusted hop is the client then). Rate limits, filters, endpoints and the access log all
//! read the one value this produces.

use http::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// `[http] trusted_proxies`, parsed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrustedProxies(Vec<IpNet>);

/// At most this many `X-Forwarded-For` entries are looked at: a longer chain of trusted hops
/// is not a real deployment, and the walk stays bounded whatever a client sends.
const MAX_HOPS: usize = 32;

/// Parses one `trusted_proxies` entry: a CIDR (`10.0.0.0/8`) or a bare address (one host).
pub(crate) fn parse_entry(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

impl TrustedProxies {
    /// From the config's entries (validated: the unparsable ones were refused).
    pub(crate) fn new(entries: &[String]) -> Self {
        TrustedProxies(entries.iter().filter_map(|e| parse_entry(e)).collect())
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// The request's client: `peer`, or what `X-Forwarded-For` says when `peer` is trusted.
    /// The port stays the connection's (a forwarded address has none).
    pub(crate) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if self.0.is_empty() || !self.trusts(peer.ip()) {
            return peer;
        }
        let mut client = peer.ip();
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("").rsplit(','))
            .take(MAX_HOPS);
        for hop in hops {
            let Some(ip) = parse_hop(hop) else { break };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        SocketAddr::new(client, peer.port())
    }
}

/// One `X-Forwarded-For` entry: an address, possibly `[v6]` or with a port (some proxies
/// write `1.2.3.4:5678`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(vals: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in vals {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 4000)
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]);
        let h = xff(&["198.51.100.1"]);
        assert_eq!(t.client(peer("203.0.113.5"), &h), peer("203.0.113.5"));
        let none = TrustedProxies::default();
        assert_eq!(none.client(peer("10.0.0.1"), &h), peer("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into(), "192.0.2.7".into()]);
        // The client claims 1.1.1.1; 198.51.100.9 connected to the trusted 10.1.1.1.
        let h = xff(&["1.1.1.1, 198.51.100.9", "10.1.1.1"]);
        assert_eq!(
            t.client(peer("10.2.2.2"), &h).ip(),
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        // Every hop trusted: the leftmost is the client.
        let h = xff(&["192.0.2.7, 10.9.9.9"]);
        assert_eq!(
            t.client(peer("10.2.2.2"), &h).ip(),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        // No header: the trusted peer itself.
        assert_eq!(
            t.client(peer("10.2.2.2"), &HeaderMap::new()),
            peer("10.2.2.2")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]);
        let h = xff(&["198.51.100.9, nonsense, 10.3.3.3"]);
        assert_eq!(
            t.client(peer("10.2.2.2"), &h).ip(),
            "10.3.3.3".parse::<IpAddr>().unwrap()
        );
        let h = xff(&["[2001:db8::5], 10.3.3.3:999"]);
        assert_eq!(
            t.client(peer("10.2.2.2"), &h).ip(),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn entries_are_cidrs_or_addresses() {
        assert!(parse_entry("10.0.0.0/8").is_some());
        assert!(parse_entry(" 2001:db8::/32 ").is_some());
        assert!(parse_entry("127.0.0.1").is_some());
        assert!(parse_entry("10.0.0.0/33").is_none());
        assert!(parse_entry("localhost").is_none());
    }
}
