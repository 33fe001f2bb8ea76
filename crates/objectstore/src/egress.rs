//! Where a provider's daemon may connect when a deployer names the address: the public
//! internet, plus the non-public endpoints its operator lists. Checked at connect time on the
//! resolved addresses (for every request and redirect), so a name cannot be re-pointed at
//! this host or its network between a check and the connection.

use std::net::IpAddr;
use std::time::Duration;

/// Whether `ip` is an address on the public internet (not this host, a private or shared
/// network, link-local, multicast, documentation or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_multicast()
                || v.is_broadcast()
                || v.is_unspecified()
                || v.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || o[0] >= 240)
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0xdb8
                // NAT64 and 6to4 carry IPv4 addresses that may be private.
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0])
                || s[0] == 0x2002)
        }
    }
}

/// Resolves like ureq does, then keeps only public addresses.
#[derive(Debug)]
struct PublicOnly {
    inner: ureq::unversioned::resolver::DefaultResolver,
    /// Says why in the error (`modules are fetched from the internet only`, …).
    why: String,
}

impl ureq::unversioned::resolver::Resolver for PublicOnly {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let all = self.inner.resolve(uri, config, timeout)?;
        let mut out = self.empty();
        for a in all.iter().filter(|a| is_public(a.ip())) {
            out.push(*a);
        }
        if out.is_empty() {
            return Err(ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} resolves only to addresses that are not public; {}",
                    uri.host().unwrap_or("the host"),
                    self.why
                ),
            )));
        }
        Ok(out)
    }
}

/// How long a request may take.
#[derive(Debug, Clone, Copy)]
pub enum Deadline {
    /// The whole request, body included (small downloads).
    Whole(Duration),
    /// Until the response's headers arrive; a body (a large object) may then take as long
    /// as it keeps flowing.
    Response(Duration),
}

/// An HTTP agent with `deadline`, that keeps response status codes as responses (an S3
/// error body says why), and that connects only to public addresses when `public_only`
/// (the error then ends with `why`). Without that filter it follows no redirect: an
/// allowed endpoint must not send the daemon on to another address.
pub fn agent(deadline: Deadline, public_only: bool, why: &str) -> ureq::Agent {
    let t = match deadline {
        Deadline::Whole(t) | Deadline::Response(t) => t,
    };
    let mut config = ureq::Agent::config_builder()
        .timeout_connect(Some(t.min(Duration::from_secs(10))))
        .http_status_as_error(false);
    config = match deadline {
        Deadline::Whole(t) => config.timeout_global(Some(t)),
        // A body is cut off only when it has taken 60 times as long.
        Deadline::Response(t) => config
            .timeout_send_request(Some(t))
            .timeout_recv_response(Some(t))
            .timeout_send_body(Some(t * 60))
            .timeout_recv_body(Some(t * 60)),
    };
    if !public_only {
        config = config.max_redirects(0);
    }
    let config = config.build();
    if public_only {
        ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            PublicOnly {
                inner: Default::default(),
                why: why.to_string(),
            },
        )
    } else {
        config.into()
    }
}

/// Whether the operator's list `allowed` (entries `host`, `host:port` or `*`) admits the
/// endpoint `http(s)://host[:port]` at addresses that are not public.
pub fn private_allowed(endpoint: &str, allowed: &[String]) -> bool {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, r)| r)
        .trim_end_matches('/');
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !h.is_empty() => h,
        _ => authority,
    };
    allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(authority) || a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "198.18.0.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn operator_lists() {
        let list = vec!["127.0.0.1:3900".to_string(), "minio.lan".to_string()];
        assert!(private_allowed("http://127.0.0.1:3900", &list));
        assert!(!private_allowed("http://127.0.0.1:22", &list));
        assert!(private_allowed("https://minio.lan:9000/", &list));
        assert!(!private_allowed("http://10.0.0.1", &list));
        assert!(private_allowed("http://10.0.0.1", &["*".to_string()]));
        assert!(!private_allowed("http://10.0.0.1", &[]));
    }
}
