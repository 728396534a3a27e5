//! Who the client is behind a reverse proxy: `server.trusted_proxies`.
//!
//! Behind nginx or a load balancer every connection comes from the proxy's address, so the
//! per-address limits would count all clients as one, and a proxy on the same host would make
//! every request look like loopback (which the API without keys trusts). When the peer is a
//! trusted proxy, the client is the right-most address in `X-Forwarded-For` that is not itself a
//! trusted proxy; the header is ignored from anyone else, so a client cannot claim an address by
//! sending it.

use std::net::IpAddr;

use axum::http::HeaderMap;

/// An address range: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, Some(b.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net: addr, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(u128::from(u32::from(n)) << 96, u128::from(u32::from(a)) << 96, self.bits)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(u128::from(n), u128::from(a), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8) -> bool {
    bits == 0 || (a ^ b) >> (128 - u32::from(bits)) == 0
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The parsed `server.trusted_proxies`.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses addresses (`10.0.0.7`) and ranges (`10.0.0.0/8`, `fd00::/8`).
    pub fn parse(list: &[String]) -> Result<TrustedProxies, String> {
        list.iter()
            .map(|s| {
                Cidr::parse(s.trim()).ok_or_else(|| {
                    format!("server.trusted_proxies: {s:?} is not an IP address or range (write e.g. \"10.0.0.0/8\")")
                })
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address for a request that came from `peer`. When a trusted proxy forwarded
    /// an `X-Forwarded-For` the hub cannot read up to the client (a hop that is not an address,
    /// or not even text), the client is unknown: [`UNKNOWN_CLIENT`], which is not loopback and
    /// shares one per-address budget with every other unknown client.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = std::str::from_utf8(hop).ok().and_then(parse_hop) else {
                return UNKNOWN_CLIENT;
            };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The address given to a client behind a trusted proxy whose forwarding chain is unreadable.
pub const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// An `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_match_what_they_should() {
        let p = proxies(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"]);
        for yes in ["10.1.2.3", "192.168.1.7", "fd12::1", "::ffff:10.0.0.1"] {
            assert!(p.trusts(canonical(ip(yes))), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "fe80::1", "127.0.0.1"] {
            assert!(!p.trusts(canonical(ip(no))), "{no}");
        }
        assert!(proxies(&["0.0.0.0/0"]).trusts(ip("8.8.8.8")));
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::/129"] {
            assert!(TrustedProxies::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop() {
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        // Through two of our proxies: the address before them is the client.
        assert_eq!(p.client_ip(ip("127.0.0.1"), &xff("203.0.113.9, 10.0.0.5")), ip("203.0.113.9"));
        // A client that prepends a fake address does not get it: the walk stops at the first
        // untrusted hop from the right.
        assert_eq!(p.client_ip(ip("127.0.0.1"), &xff("1.1.1.1, 198.51.100.4")), ip("198.51.100.4"));
        // From an untrusted peer the header is ignored.
        assert_eq!(p.client_ip(ip("198.51.100.4"), &xff("1.1.1.1")), ip("198.51.100.4"));
        // No header: a request the proxy made itself.
        assert_eq!(p.client_ip(ip("127.0.0.1"), &HeaderMap::new()), ip("127.0.0.1"));
        // An unreadable hop where the client should be: unknown, never the (loopback) proxy.
        assert_eq!(p.client_ip(ip("127.0.0.1"), &xff("unknown")), UNKNOWN_CLIENT);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"\xff, 203.0.113.9").unwrap());
        assert_eq!(p.client_ip(ip("127.0.0.1"), &h), ip("203.0.113.9"), "a bad byte to the left is not read");
        h.insert("x-forwarded-for", axum::http::HeaderValue::from_bytes(b"203.0.113.9\xff, 10.0.0.5").unwrap());
        assert_eq!(p.client_ip(ip("127.0.0.1"), &h), UNKNOWN_CLIENT);
        assert!(!UNKNOWN_CLIENT.is_loopback());
        assert_eq!(p.client_ip(ip("127.0.0.1"), &xff("[2001:db8::1]:443")), ip("2001:db8::1"));
        // Nothing trusted: the peer, always.
        assert_eq!(TrustedProxies::default().client_ip(ip("127.0.0.1"), &xff("1.1.1.1")), ip("127.0.0.1"));
    }
}
