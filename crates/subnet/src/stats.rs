//! Per-ensemble counters of the data path, updated with relaxed atomics on the hot path.
//!
//! Counts only; it must not keep packet contents or addresses.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of one ensemble's data-path counters. A GSO super-packet counts as one packet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SubnetStats {
    /// Packets read from the TUN device and queued for a peer.
    pub packets_out: u64,
    /// Bytes (IP packets) queued for peers.
    pub bytes_out: u64,
    /// Packets received from peers and written to the TUN device.
    pub packets_in: u64,
    /// Bytes (IP packets) written to the TUN device.
    pub bytes_in: u64,
    /// Outbound: destination not in the route table.
    pub dropped_no_route: u64,
    /// Outbound: destination hosted by this node (the kernel should have used a veth).
    pub dropped_local: u64,
    /// Outbound: not an IPv4 packet (e.g. IPv6 neighbour discovery).
    pub dropped_not_ipv4_out: u64,
    /// Outbound: the peer's send queue was full (peer slow or unreachable).
    pub dropped_queue_full: u64,
    /// Inbound: source address not assigned to the sending peer.
    pub dropped_spoofed: u64,
    /// Inbound: destination outside the ensemble network.
    pub dropped_bad_destination: u64,
    /// Inbound: not an IPv4 packet or a malformed header.
    pub dropped_not_ipv4_in: u64,
    /// Inbound: a virtio-net header this node does not accept.
    pub dropped_bad_offload: u64,
    /// Inbound: the kernel refused the write to the TUN device.
    pub dropped_tun_write: u64,
    /// Inbound streams closed for a garbage, oversized or truncated frame.
    pub bad_frames: u64,
    /// Outbound streams opened (one per peer, more after reconnects).
    pub streams_opened: u64,
    /// Packets sent as datagrams (included in `packets_out`).
    pub datagrams_out: u64,
    /// Packets received as datagrams (included in `packets_in`).
    pub datagrams_in: u64,
    /// Datagram paths confirmed by a peer (one per peer, more after reconnects).
    pub datagram_paths: u64,
    /// Confirmed datagram paths given up because the peer stopped acknowledging them.
    pub datagram_paths_lost: u64,
    /// Inbound datagrams of a known session that failed authentication or replay checks,
    /// or whose peer is no longer a member.
    pub dropped_bad_datagram: u64,
    /// Outbound datagrams the socket refused.
    pub dropped_datagram_send: u64,
    /// Outbound packets read by the datagram receiver right after it delivered an inbound
    /// one (answers already queued; included in `packets_out`).
    pub answers_in_line: u64,
}

impl std::ops::AddAssign for SubnetStats {
    /// Adds another snapshot, field by field (totals over ensembles).
    fn add_assign(&mut self, o: SubnetStats) {
        self.packets_out += o.packets_out;
        self.bytes_out += o.bytes_out;
        self.packets_in += o.packets_in;
        self.bytes_in += o.bytes_in;
        self.dropped_no_route += o.dropped_no_route;
        self.dropped_local += o.dropped_local;
        self.dropped_not_ipv4_out += o.dropped_not_ipv4_out;
        self.dropped_queue_full += o.dropped_queue_full;
        self.dropped_spoofed += o.dropped_spoofed;
        self.dropped_bad_destination += o.dropped_bad_destination;
        self.dropped_not_ipv4_in += o.dropped_not_ipv4_in;
        self.dropped_bad_offload += o.dropped_bad_offload;
        self.dropped_tun_write += o.dropped_tun_write;
        self.bad_frames += o.bad_frames;
        self.streams_opened += o.streams_opened;
        self.datagrams_out += o.datagrams_out;
        self.datagrams_in += o.datagrams_in;
        self.datagram_paths += o.datagram_paths;
        self.datagram_paths_lost += o.datagram_paths_lost;
        self.dropped_bad_datagram += o.dropped_bad_datagram;
        self.dropped_datagram_send += o.dropped_datagram_send;
        self.answers_in_line += o.answers_in_line;
    }
}

/// The live counters behind [`SubnetStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub dropped_no_route: AtomicU64,
    pub dropped_local: AtomicU64,
    pub dropped_not_ipv4_out: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_spoofed: AtomicU64,
    pub dropped_bad_destination: AtomicU64,
    pub dropped_not_ipv4_in: AtomicU64,
    pub dropped_bad_offload: AtomicU64,
    pub dropped_tun_write: AtomicU64,
    pub bad_frames: AtomicU64,
    pub streams_opened: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub datagram_paths: AtomicU64,
    pub datagram_paths_lost: AtomicU64,
    pub dropped_bad_datagram: AtomicU64,
    pub dropped_datagram_send: AtomicU64,
    pub answers_in_line: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// Adds `n` to a counter.
pub(crate) fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Relaxed);
}

impl Counters {
    /// Reads every counter.
    pub fn snapshot(&self) -> SubnetStats {
        SubnetStats {
            packets_out: self.packets_out.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            packets_in: self.packets_in.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            dropped_no_route: self.dropped_no_route.load(Relaxed),
            dropped_local: self.dropped_local.load(Relaxed),
            dropped_not_ipv4_out: self.dropped_not_ipv4_out.load(Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Relaxed),
            dropped_spoofed: self.dropped_spoofed.load(Relaxed),
            dropped_bad_destination: self.dropped_bad_destination.load(Relaxed),
            dropped_not_ipv4_in: self.dropped_not_ipv4_in.load(Relaxed),
            dropped_bad_offload: self.dropped_bad_offload.load(Relaxed),
            dropped_tun_write: self.dropped_tun_write.load(Relaxed),
            bad_frames: self.bad_frames.load(Relaxed),
            streams_opened: self.streams_opened.load(Relaxed),
            datagrams_out: self.datagrams_out.load(Relaxed),
            datagrams_in: self.datagrams_in.load(Relaxed),
            datagram_paths: self.datagram_paths.load(Relaxed),
            datagram_paths_lost: self.datagram_paths_lost.load(Relaxed),
            dropped_bad_datagram: self.dropped_bad_datagram.load(Relaxed),
            dropped_datagram_send: self.dropped_datagram_send.load(Relaxed),
            answers_in_line: self.answers_in_line.load(Relaxed),
        }
    }
}
