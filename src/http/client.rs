//! The client's address: the peer's, or — only when the peer is a trusted proxy
//! (`CHANGEGUARD_TRUSTED_PROXIES`) — the nearest untrusted address of `X-Forwarded-For`. Behind
//! the TLS proxy the README recommends, the login delay is then kept per real client, so one
//! person's wrong passwords do not slow everybody down.

use std::net::IpAddr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The address a request comes from, as far as it can be trusted.
pub fn client_ip(trusted: &[IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Right to left: each trusted proxy appended the address it got the request from; the
    // first one that is not a trusted proxy is the client. A garbled entry stops the walk.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let h = headers("198.51.100.1, 203.0.113.7, 10.0.0.4");
        // From the proxy: the nearest address that is not a trusted proxy.
        assert_eq!(client_ip(&trusted, proxy, &h).to_string(), "203.0.113.7");
        // From anybody else the header is ignored (it could say anything).
        let other: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(client_ip(&trusted, other, &h), other);
        assert_eq!(client_ip(&[], proxy, &h), proxy);
        // No header, or garbage: the proxy itself.
        assert_eq!(client_ip(&trusted, proxy, &HeaderMap::new()), proxy);
        assert_eq!(client_ip(&trusted, proxy, &headers("nonsense")), proxy);
    }
}
