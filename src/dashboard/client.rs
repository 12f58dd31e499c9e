//! Who is on the other end of a request: the client's address (for the sign-in lockout and the logs) and whether
//! the browser reached Vigil over HTTPS (for the `Secure` cookie flag).
//!
//! `X-Forwarded-For` and `X-Forwarded-Proto` are believed only when the TCP peer is one of
//! `dashboard.trusted_proxies`; from anyone else they are ignored, so a client cannot pick the address its failed
//! sign-ins are counted against, nor make Vigil think a plain-HTTP connection is secure. Through a chain of
//! trusted proxies the client is the right-most `X-Forwarded-For` address that is not itself a trusted proxy
//! (addresses further left were written by the client and prove nothing).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the TCP peer, or what a trusted proxy says.
    pub ip: IpAddr,
    /// Whether the browser's connection is HTTPS: Vigil's own TLS, or a trusted proxy's `X-Forwarded-Proto`.
    pub https: bool,
}

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    proxies.iter().any(|n| n.contains(&ip))
}

/// The client of a request that arrived from `peer` (`None` when there is no socket, as in handler tests) on a
/// listener with (`tls`) or without TLS.
pub fn client(peer: Option<SocketAddr>, headers: &HeaderMap, proxies: &[IpNet], tls: bool) -> Client {
    let peer_ip = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.ip().to_canonical());
    if peer.is_none() || !trusted(proxies, peer_ip) {
        return Client { ip: peer_ip, https: tls };
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut ip = peer_ip;
    for hop in forwarded.iter().rev() {
        let Ok(hop) = hop.parse::<IpAddr>() else { break };
        ip = hop.to_canonical();
        if !trusted(proxies, ip) {
            break;
        }
    }
    // The proxy next to Vigil writes the last value; earlier ones may come from the client.
    let proto = headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .map(str::trim);
    Client { ip, https: tls || proto.is_some_and(|p| p.eq_ignore_ascii_case("https")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies_and_only_their_own_hop() {
        let proxies = vec![crate::config::parse_peer_block("10.0.0.0/30").unwrap()];
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let stranger: SocketAddr = "10.9.9.9:5000".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 10.1.2.3"), ("x-forwarded-proto", "https")]);
        // From the trusted proxy: the address it saw (not the client-written one further left), and HTTPS.
        let c = client(Some(proxy), &h, &proxies, false);
        assert_eq!(c, Client { ip: "10.1.2.3".parse().unwrap(), https: true });
        // From anyone else: both headers ignored.
        let c = client(Some(stranger), &h, &proxies, false);
        assert_eq!(c, Client { ip: "10.9.9.9".parse().unwrap(), https: false });
        // A chain of trusted proxies is walked; garbage stops the walk at the last good hop.
        let h = headers(&[("x-forwarded-for", "10.1.2.4, 10.0.0.1")]);
        assert_eq!(client(Some(proxy), &h, &proxies, false).ip, "10.1.2.4".parse::<IpAddr>().unwrap());
        let h = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client(Some(proxy), &h, &proxies, true), Client { ip: "10.0.0.2".parse().unwrap(), https: true });
        // No socket (handler tests): nothing is believed.
        assert!(!client(None, &headers(&[("x-forwarded-proto", "https")]), &proxies, false).https);
    }
}
