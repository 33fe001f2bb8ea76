//! The process's resource limits: how many file descriptors and how much memory the libp2p
//! host may use (`p2p.fd`, `p2p.memory`), and the open-files limit that makes room for them.

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nunet_config::Config;
use nunet_network::NetLimits;

use crate::api;

/// File descriptors kept for everything but libp2p connections and REST connections:
/// SQLite, executors (Docker API connections, microVM processes and their sockets), the
/// subnet's TUN devices and UDP sockets, listeners, log files.
pub const FD_RESERVE: u64 = 448;
/// Highest open-files limit asked for (Linux's default `fs.nr_open`); a hard limit of
/// "unlimited" cannot be the soft one.
const NOFILE_CEILING: u64 = 1 << 20;

/// What [`apply`] settled on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The libp2p host's limits.
    pub net: NetLimits,
    /// Open-files soft limit in effect (`None`: unknown).
    pub nofile: Option<u64>,
    /// Open-files hard limit (`None`: unknown).
    pub nofile_hard: Option<u64>,
}

/// File descriptors the node needs with `p2p_fd` for libp2p.
pub fn fds_needed(p2p_fd: u64) -> u64 {
    p2p_fd
        .saturating_add(api::MAX_CONNECTIONS as u64)
        .saturating_add(FD_RESERVE)
}

/// The libp2p file-descriptor budget that fits in an open-files limit of `nofile`: `p2p_fd`
/// when there is room for it next to the REST API and the reserve, else what is left (at
/// least a quarter of the limit).
pub fn p2p_budget(p2p_fd: u64, nofile: Option<u64>) -> u64 {
    match nofile {
        Some(n) if n < fds_needed(p2p_fd) => p2p_fd.min(n.saturating_sub(fds_needed(0))).max(n / 4),
        _ => p2p_fd,
    }
}

/// Raises the open-files soft limit to the hard one when it is below what `cfg` needs, then
/// derives the libp2p limits from `p2p.fd` (shrunk to fit when the hard limit is too low)
/// and `p2p.memory` (MiB, 0: no memory limit), and logs the outcome.
pub fn apply(cfg: &Config) -> Plan {
    let needed = fds_needed(cfg.p2p.fd);
    let (nofile, nofile_hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < needed && hard > soft => {
            let target = hard.min(NOFILE_CEILING).max(soft);
            match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
                Ok(()) => (Some(target), Some(hard)),
                Err(e) => {
                    tracing::warn!(soft, hard, error = %e, "cannot raise the open-files limit");
                    (Some(soft), Some(hard))
                }
            }
        }
        Ok((soft, hard)) => (Some(soft), Some(hard)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            (None, None)
        }
    };
    let p2p_fd = p2p_budget(cfg.p2p.fd, nofile);
    if p2p_fd < cfg.p2p.fd {
        tracing::warn!(
            p2p_fd = cfg.p2p.fd,
            open_files = nofile,
            needed,
            used = p2p_fd,
            "the open-files limit is below p2p.fd plus the REST API and the reserve; \
             libp2p gets fewer connections (raise `ulimit -Hn`)"
        );
    }
    let memory = (cfg.p2p.memory > 0).then(|| cfg.p2p.memory.saturating_mul(1024 * 1024));
    let net = NetLimits::from_budget(p2p_fd, memory);
    tracing::info!(
        open_files = nofile,
        open_files_hard = nofile_hard,
        p2p_fd,
        pending_in = net.max_pending_incoming,
        pending_out = net.max_pending_outgoing,
        established_in = net.max_established_incoming,
        established_out = net.max_established_outgoing,
        per_peer = net.max_established_per_peer,
        streams_per_connection = net.max_streams_per_connection,
        requests_per_connection = net.max_concurrent_requests,
        refuse_inbound_above_mib = cfg.p2p.memory,
        rest_connections = api::MAX_CONNECTIONS,
        rest_header_timeout = ?api::HEADER_READ_TIMEOUT,
        rest_body_timeout = ?api::BODY_READ_TIMEOUT,
        "resource limits"
    );
    Plan {
        net,
        nofile,
        nofile_hard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p2p_budget_fits_the_open_files_limit() {
        // Room enough, or unknown: p2p.fd as configured.
        assert_eq!(p2p_budget(512, Some(1 << 20)), 512);
        assert_eq!(p2p_budget(512, Some(fds_needed(512))), 512);
        assert_eq!(p2p_budget(512, None), 512);
        // Too little: what the REST API and the reserve leave.
        assert_eq!(p2p_budget(512, Some(1024)), 1024 - fds_needed(0));
        // Far too little: a quarter of the limit.
        assert_eq!(p2p_budget(512, Some(256)), 64);
        assert_eq!(p2p_budget(512, Some(0)), 0);
    }

    #[test]
    fn the_open_files_limit_covers_the_budget_after_apply() {
        let cfg = Config::defaults(std::path::Path::new("/nonexistent"));
        let plan = apply(&cfg);
        let (Some(nofile), Some(hard)) = (plan.nofile, plan.nofile_hard) else {
            return;
        };
        if hard >= fds_needed(cfg.p2p.fd) {
            assert!(nofile >= fds_needed(cfg.p2p.fd), "{plan:?}");
            assert_eq!(plan.net, NetLimits::from_budget(512, Some(1 << 30)));
        } else {
            assert!(plan.net.fd_budget() <= nofile.max(64), "{plan:?}");
        }
    }
}
