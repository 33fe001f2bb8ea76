//! Reaching the local REST API: which address a client on this machine connects to for a
//! given `rest.addr`, and which peers count as local.
//!
//! The daemon should refuse non-local peers with [`is_loopback`] rather than
//! [`IpAddr::is_loopback`]: a `::` listener is dual-stack, and sees an IPv4 client on
//! `127.0.0.1` as `::ffff:127.0.0.1`, which the standard check does not call loopback.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::model::Rest;

/// The address a client on this machine connects to for a server listening on `listen`:
/// `listen` itself, except that a wildcard (`0.0.0.0`, `::`) is reached on the loopback
/// address of its family, and an IPv4-mapped address (`::ffff:127.0.0.1`) as the IPv4
/// address it stands for.
pub fn client_ip(listen: IpAddr) -> IpAddr {
    match listen.to_canonical() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

/// Whether `peer` is this machine's loopback, IPv4-mapped IPv6 loopback
/// (`::ffff:127.0.0.1`) included.
pub fn is_loopback(peer: IpAddr) -> bool {
    peer.to_canonical().is_loopback()
}

impl Rest {
    /// Where a client on this machine reaches the API (see [`client_ip`]); `None` when
    /// `addr` is not an IP address (the configuration check refuses that).
    pub fn client_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.addr.parse().ok()?;
        Some(SocketAddr::new(client_ip(ip), self.port))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn wildcards_are_reached_on_loopback() {
        assert_eq!(client_ip(ip("0.0.0.0")), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("::")), ip("::1"));
        assert_eq!(client_ip(ip("::ffff:0.0.0.0")), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(client_ip(ip("::1")), ip("::1"));
        assert_eq!(client_ip(ip("10.1.2.3")), ip("10.1.2.3"));
    }

    #[test]
    fn mapped_loopback_is_loopback() {
        assert!(is_loopback(ip("127.0.0.1")));
        assert!(is_loopback(ip("127.3.2.1")));
        assert!(is_loopback(ip("::1")));
        assert!(is_loopback(ip("::ffff:127.0.0.1")));
        assert!(!is_loopback(ip("::ffff:10.0.0.1")));
        assert!(!is_loopback(ip("10.0.0.1")));
        assert!(!is_loopback(ip("::")));
    }

    #[test]
    fn the_client_address_of_a_rest_section() {
        let rest = |addr: &str| Rest {
            addr: addr.to_string(),
            port: 9999,
        };
        assert_eq!(rest("::").client_addr().unwrap().to_string(), "[::1]:9999");
        assert_eq!(
            rest("0.0.0.0").client_addr().unwrap().to_string(),
            "127.0.0.1:9999"
        );
        assert_eq!(rest("localhost").client_addr(), None);
    }
}
