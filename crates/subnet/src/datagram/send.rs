//! The sending side of a datagram path: sealing and sending (probes included), the
//! sender's view of whether the receiver still acknowledges the path, and which peer
//! address a path may use. It must not send before a path is confirmed (the caller's
//! rule) nor ever reuse a counter under one key.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};

use super::{
    DEAD_AFTER, HDR, Hub, KIND_DATA, KIND_PROBE, MAX_DATAGRAM, Offer, PROBE_LEN, TAG, seal,
};

/// A sender's view of its confirmed path: alive while the receiver keeps acknowledging the
/// datagrams sent on it. A path that swallows them (a firewall appeared, the peer moved)
/// is given up after [`DEAD_AFTER`] instead of black-holing the peer's traffic.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    acked: u64,
    unacked_since: Option<std::time::Instant>,
}

impl Liveness {
    /// The receiver said datagrams arrive.
    pub fn acked(&mut self, path: &TxPath) {
        self.acked = path.sent();
        self.unacked_since = None;
    }

    /// Whether datagrams have gone unacknowledged for longer than [`DEAD_AFTER`].
    pub fn dead(&mut self, path: &TxPath, now: std::time::Instant) -> bool {
        if path.sent() == self.acked {
            self.unacked_since = None;
            return false;
        }
        let since = *self.unacked_since.get_or_insert(now);
        now.duration_since(since) > DEAD_AFTER
    }
}

/// The sending half of a datagram path to one peer.
pub(crate) struct TxPath {
    hub: Arc<Hub>,
    to: SocketAddr,
    session: u32,
    key: LessSafeKey,
    counter: AtomicU64,
}

impl std::fmt::Debug for TxPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxPath").field("to", &self.to).finish()
    }
}

impl TxPath {
    /// A path to `to` keyed by the receiver's `offer`.
    pub fn new(hub: Arc<Hub>, to: SocketAddr, offer: &Offer) -> Option<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, &offer.key).ok()?;
        Some(Self {
            hub,
            to,
            session: offer.session,
            key: LessSafeKey::new(unbound),
            counter: AtomicU64::new(1),
        })
    }

    /// The socket this path sends from.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Datagrams (probes included) sent on this path.
    pub fn sent(&self) -> u64 {
        self.counter.load(Ordering::Relaxed) - 1
    }

    /// Whether a payload of `len` bytes fits in one datagram.
    pub fn fits(len: usize) -> bool {
        HDR + len + TAG <= MAX_DATAGRAM
    }

    /// Encrypts `buf[HDR..HDR + len]` in place and sends it; `buf` must hold at least
    /// `HDR + len + TAG` bytes.
    pub fn send_data(&self, buf: &mut [u8], len: usize) -> io::Result<()> {
        self.seal_and_send(KIND_DATA, buf, len)
    }

    /// Sends one path probe.
    pub fn send_probe(&self) -> io::Result<()> {
        let mut buf = vec![0u8; HDR + PROBE_LEN + TAG];
        self.seal_and_send(KIND_PROBE, &mut buf, PROBE_LEN)
    }

    fn seal_and_send(&self, kind: u8, buf: &mut [u8], len: usize) -> io::Result<()> {
        if HDR + len + TAG > buf.len() || HDR + len + TAG > MAX_DATAGRAM {
            return Err(io::Error::other("payload too large for a datagram"));
        }
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let total = seal(&self.key, kind, self.session, counter, buf, len)?;
        self.hub.socket.send_to(&buf[..total], self.to)?;
        Ok(())
    }
}
