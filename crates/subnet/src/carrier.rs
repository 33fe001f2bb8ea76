//! The libp2p carrier: one long-lived outbound stream per (remote peer, ensemble) fed from a
//! bounded batch queue, and the reader of an inbound stream that checks every packet and
//! writes it to the TUN device.
//!
//! Batching: the router appends frames to the peer's queue buffer; the writer swaps the
//! whole buffer out and sends everything that accumulated with one stream write and one
//! flush, so the write path never waits for a flush per packet. The two buffers are reused,
//! so steady state allocates nothing. It must not buffer without bound (the queue drops when
//! full) nor keep a stream whose peer sent one malformed frame.
//!
//! The stream is also the control channel of the datagram fast path ([`crate::datagram`]):
//! after admitting a stream the acceptor sends its datagram offer; the writer probes the
//! UDP path and switches the peer's queue to it only once the acceptor confirms the probe
//! arrived (a byte on the same stream). The acceptor repeats that byte every second in which
//! datagrams arrived; a writer whose datagrams go unacknowledged for 3 s gives the path up
//! and reopens the stream (fresh session, fresh probes). When the stream ends, the peer goes
//! back to it.

use std::{
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use ipnet::Ipv4Net;
use libp2p::{PeerId, Stream};
use tokio::sync::Notify;

use crate::{
    datagram::{CONFIRMED, Hub, LIVENESS_TICK, Liveness, OFFER_LEN, Offer, RxGuard, TxPath},
    router::{SharedTable, check_inbound, count_inbound_drop},
    stats::{Counters, add, bump},
    tun::{self, Tun},
    wire::{self, ADMISSION_LEN, FrameError, PROTOCOL},
};

/// Bytes a peer's send queue may hold before packets are dropped.
pub(crate) const QUEUE_LIMIT: usize = 1 << 20;
/// Size of an inbound stream's read buffer (holds several full frames).
const READ_CAP: usize = 256 * 1024;
/// How long opening a stream (including a dial) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The byte an acceptor writes once it has admitted a stream. A writer sends nothing before
/// it: a stream the remote refused (not a member yet, unknown ensemble) would otherwise look
/// open and silently swallow packets until the next write error.
pub(crate) const ACCEPTED: u8 = 1;
/// How long an inbound handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Datagram path probes: how many, and how far apart, before staying on the stream.
const PROBES: u32 = 10;
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// A peer's bounded send queue: framed packets waiting for the writer.
pub(crate) struct PeerQueue {
    buf: Mutex<Vec<u8>>,
    ready: Notify,
    limit: usize,
    /// The confirmed datagram path to the peer, used instead of the queue while set.
    path: RwLock<Option<Arc<TxPath>>>,
}

impl PeerQueue {
    /// An empty queue holding at most `limit` bytes (one frame is always accepted).
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Mutex::new(Vec::with_capacity(limit)),
            ready: Notify::new(),
            limit,
            path: RwLock::new(None),
        }
    }

    /// The confirmed datagram path, if any.
    pub fn path(&self) -> Option<Arc<TxPath>> {
        self.path.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_path(&self, path: Option<Arc<TxPath>>) {
        *self.path.write().unwrap_or_else(|e| e.into_inner()) = path;
    }

    /// Appends one frame; `false` (packet dropped) when the queue is full.
    pub fn push(&self, payload: &[u8]) -> bool {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = buf.is_empty();
        if !was_empty && buf.len() + wire::LEN_PREFIX + payload.len() > self.limit {
            return false;
        }
        if wire::encode_frame(payload, &mut buf).is_err() {
            return false;
        }
        drop(buf);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Swaps the queued bytes into `out` (which must be empty) and leaves `out`'s old
    /// allocation in the queue.
    pub fn take(&self, out: &mut Vec<u8>) {
        let mut buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *buf, out);
    }

    /// Drops whatever is queued.
    fn clear(&self) {
        self.buf.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// What a writer needs besides its peer and queue.
#[derive(Clone)]
pub(crate) struct Links {
    /// Opens streams.
    pub control: libp2p_stream::Control,
    /// Looks up the peer's connection address (for the datagram path).
    pub net: nunet_network::Network,
    /// The node's datagram socket, when the datagram path is on.
    pub hub: Option<Arc<Hub>>,
}

/// Clears the queue's datagram path when the writer's stream ends (or the writer is aborted).
struct PathReset<'a>(&'a PeerQueue);

impl Drop for PathReset<'_> {
    fn drop(&mut self) {
        self.0.set_path(None);
    }
}

/// Keeps one outbound stream to `peer` open (reconnecting with backoff) and writes the
/// queue's batches to it; switches the peer to the datagram path once it is confirmed.
/// Runs until aborted.
pub(crate) async fn run_writer(
    links: Links,
    peer: PeerId,
    ensemble: String,
    queue: Arc<PeerQueue>,
    counters: Arc<Counters>,
) {
    let mut control = links.control.clone();
    let mut hello = Vec::new();
    if wire::encode_handshake(&ensemble, &mut hello).is_err() {
        tracing::warn!(%ensemble, "ensemble name cannot be sent; writer stops");
        return;
    }
    let mut batch = Vec::with_capacity(QUEUE_LIMIT);
    let mut backoff = BACKOFF_MIN;
    loop {
        let mut stream =
            match tokio::time::timeout(OPEN_TIMEOUT, control.open_stream(peer, PROTOCOL)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "subnet stream open failed");
                    queue.clear();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
                Err(_) => {
                    queue.clear();
                    continue;
                }
            };
        bump(&counters.streams_opened);
        if stream.write_all(&hello).await.is_err() || stream.flush().await.is_err() {
            continue;
        }
        let mut ack = [0u8; ADMISSION_LEN];
        let admitted =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut ack)).await {
                Ok(Ok(())) => decode_admission(&ack),
                _ => None,
            };
        let Some(offer) = admitted else {
            tracing::debug!(%peer, %ensemble, "subnet stream not admitted (yet); retrying");
            queue.clear();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            continue;
        };
        backoff = BACKOFF_MIN;
        let mut pending = match offer {
            Some(o) => open_path(&links, peer, &o).await,
            None => None,
        };
        let mut probes_left = if pending.is_some() { PROBES } else { 0 };
        let mut next_probe = tokio::time::Instant::now();
        let _reset = PathReset(&queue);
        // After the ack the acceptor writes only CONFIRMED bytes (datagram path confirmed /
        // still alive): any other read result means the stream is gone, so the writer
        // reopens it instead of writing into a dead stream.
        let (mut rd, mut wr) = stream.split();
        let mut probe = [0u8; 1];
        let mut live = Liveness::default();
        let mut tick = tokio::time::interval(LIVENESS_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let probe_due = async {
                if probes_left > 0 {
                    tokio::time::sleep_until(next_probe).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = queue.ready.notified() => {}
                r = rd.read(&mut probe) => {
                    if !matches!(r, Ok(1) if probe[0] == CONFIRMED) {
                        tracing::debug!(%peer, "subnet stream closed by the remote; reopening");
                        break;
                    }
                    if let Some(path) = pending.take() {
                        tracing::debug!(%peer, %ensemble, ?path, "datagram path confirmed");
                        live.acked(&path);
                        queue.set_path(Some(path));
                        bump(&counters.datagram_paths);
                        probes_left = 0;
                    } else if let Some(path) = queue.path() {
                        live.acked(&path);
                    }
                    continue;
                }
                _ = tick.tick() => {
                    if let Some(path) = queue.path()
                        && live.dead(&path, std::time::Instant::now())
                    {
                        tracing::warn!(%peer, %ensemble, "datagram path went silent; back to the libp2p stream (reopening it)");
                        bump(&counters.datagram_paths_lost);
                        break;
                    }
                    continue;
                }
                _ = probe_due => {
                    if let Some(path) = &pending
                        && let Err(e) = path.send_probe() {
                        tracing::debug!(%peer, error = %e, "datagram probe not sent");
                    }
                    probes_left -= 1;
                    next_probe = tokio::time::Instant::now() + PROBE_EVERY;
                    if probes_left == 0 && pending.take().is_some() {
                        tracing::info!(%peer, %ensemble, "datagram path not confirmed; packets stay on the libp2p stream");
                    }
                    continue;
                }
            }
            queue.take(&mut batch);
            if batch.is_empty() {
                continue;
            }
            let sent = wr.write_all(&batch).await.is_ok() && wr.flush().await.is_ok();
            batch.clear();
            if !sent {
                tracing::debug!(%peer, "subnet stream broke; reopening");
                break;
            }
        }
    }
}

/// A datagram path to `peer` per its offer, when this node has a socket and the peer is
/// connected directly (not through a relay).
async fn open_path(links: &Links, peer: PeerId, offer: &Offer) -> Option<Arc<TxPath>> {
    let hub = links.hub.as_ref()?;
    let info = links
        .net
        .peers()
        .await
        .into_iter()
        .find(|p| p.peer_id == peer)?;
    let Some(ip) = info.direct_ipv4() else {
        tracing::debug!(%peer, "no direct connection; no datagram path");
        return None;
    };
    hub.open_tx(ip, offer).map(Arc::new)
}

/// The acceptor's answer to an admitted handshake: [`ACCEPTED`] and its datagram offer.
pub(crate) fn encode_admission(offer: Option<&Offer>) -> [u8; ADMISSION_LEN] {
    let mut answer = [0u8; ADMISSION_LEN];
    answer[0] = ACCEPTED;
    answer[1..].copy_from_slice(&Offer::encode(offer));
    answer
}

/// Reads the acceptor's answer to a handshake: `Some(offer)` when the stream was admitted
/// (with the acceptor's datagram offer, if it made one), `None` when it was refused or the
/// answer is malformed.
pub(crate) fn decode_admission(ack: &[u8; ADMISSION_LEN]) -> Option<Option<Offer>> {
    let (&admission, offer) = ack.split_first()?;
    let offer = <&[u8; OFFER_LEN]>::try_from(offer).ok()?;
    if admission != ACCEPTED {
        return None;
    }
    Offer::decode(offer).ok()
}

/// Reads the handshake of an inbound stream and returns the ensemble name it asks for.
pub(crate) async fn read_handshake<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<String, FrameError> {
    let mut prefix = [0u8; 6];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(|_| FrameError::BadHandshake)?;
    let len = wire::decode_handshake_prefix(&prefix)?;
    let mut name = [0u8; 255];
    let name = name.get_mut(..len).ok_or(FrameError::BadHandshake)?;
    stream
        .read_exact(name)
        .await
        .map_err(|_| FrameError::BadHandshake)?;
    String::from_utf8(name.to_vec()).map_err(|_| FrameError::BadHandshake)
}

/// What an inbound reader needs from its ensemble.
#[derive(Clone)]
pub(crate) struct Inbound {
    /// The ensemble's TUN device.
    pub dev: Tun,
    /// Who reads the TUN device (the datagram receiver sends queued answers through it).
    pub reader: Arc<crate::router::TunReader>,
    /// The ensemble's route table.
    pub table: Arc<SharedTable>,
    /// The ensemble's network.
    pub network: Ipv4Net,
    /// The ensemble's counters.
    pub counters: Arc<Counters>,
}

/// Reads frames from an inbound stream of `peer` (handshake already done) until it ends or
/// sends a malformed frame; every packet is checked and written to the TUN device. While it
/// runs, the peer's datagram session (if any) lives; the reader tells the peer once its
/// probe arrived.
pub(crate) async fn run_reader(
    stream: Stream,
    peer: PeerId,
    ctx: Inbound,
    session: Option<RxGuard>,
) {
    let (mut stream, mut wr) = stream.split();
    let mut buf = vec![0u8; READ_CAP];
    let mut filled = 0usize;
    let mut cached = ctx.table.snapshot();
    let mut awaiting_probe = session.is_some();
    let mut tick = tokio::time::interval(LIVENESS_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = 0u64;
    loop {
        let probed = async {
            match &session {
                Some(s) if awaiting_probe => s.confirmed().await,
                _ => std::future::pending::<()>().await,
            }
        };
        let read = tokio::select! {
            r = stream.read(&mut buf[filled..]) => r,
            _ = probed => {
                awaiting_probe = false;
                if wr.write_all(&[CONFIRMED]).await.is_err() || wr.flush().await.is_err() {
                    return;
                }
                continue;
            }
            _ = tick.tick() => {
                // Datagrams still arrive: say so, or the sender gives the path up.
                let received = session.as_ref().map_or(0, RxGuard::received);
                if !awaiting_probe && received != reported {
                    reported = received;
                    if wr.write_all(&[CONFIRMED]).await.is_err() || wr.flush().await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) => {
                if filled > 0 {
                    bump(&ctx.counters.bad_frames); // ended inside a frame
                }
                return;
            }
            Ok(n) => n,
            Err(_) => return,
        };
        filled += n;
        ctx.table.refresh(&mut cached);
        if !cached.1.members.contains(&peer) {
            return; // removed from the ensemble
        }
        let decoded = wire::decode_frames(&buf[..filled], |payload| {
            match check_inbound(payload, &peer, &cached.1, &ctx.network) {
                Ok(()) => match tun::write(&ctx.dev, payload) {
                    Ok(_) => {
                        bump(&ctx.counters.packets_in);
                        add(&ctx.counters.bytes_in, payload.len() - wire::VNET_HDR_LEN);
                    }
                    Err(_) => bump(&ctx.counters.dropped_tun_write),
                },
                Err(reason) => count_inbound_drop(reason, &ctx.counters),
            }
        });
        let start = match decoded {
            Ok(used) => used,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "closing subnet stream");
                bump(&ctx.counters.bad_frames);
                let _ = wr.close().await;
                return;
            }
        };
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn queue_is_bounded_and_reuses_buffers() {
        let q = PeerQueue::new(200);
        let p = [0u8; 60];
        assert!(q.push(&p));
        assert!(q.push(&p));
        assert!(q.push(&p));
        assert!(!q.push(&p), "fourth frame exceeds 200 bytes");
        let mut out = Vec::with_capacity(500);
        q.take(&mut out);
        assert_eq!(out.len(), 3 * 64);
        out.clear();
        // the queue now holds the 500-byte allocation handed in
        q.take(&mut out);
        assert!(out.is_empty());
        // one frame is always accepted, even when larger than the limit
        let big = [0u8; 300];
        assert!(q.push(&big));
    }

    #[test]
    fn admissions_round_trip_and_refusals_are_none() {
        let offer = Offer {
            port: 4242,
            session: 9,
            key: [3; 32],
        };
        assert_eq!(
            decode_admission(&encode_admission(Some(&offer))),
            Some(Some(offer))
        );
        assert_eq!(decode_admission(&encode_admission(None)), Some(None));
        let mut refused = encode_admission(None);
        refused[0] = 0;
        assert_eq!(decode_admission(&refused), None);
        let mut bad_offer = encode_admission(None);
        bad_offer[1] = 9;
        assert_eq!(decode_admission(&bad_offer), None);
    }

    #[test]
    fn handshakes_are_read_from_any_stream() {
        let read = |bytes: &[u8]| {
            futures::executor::block_on(read_handshake(&mut futures::io::Cursor::new(bytes)))
        };
        let mut hello = Vec::new();
        wire::encode_handshake("ens-1", &mut hello).unwrap();
        assert_eq!(read(&hello).unwrap(), "ens-1");
        assert_eq!(
            read(&hello[..8]),
            Err(FrameError::BadHandshake),
            "cut short"
        );
        hello[6] = 0xff;
        assert_eq!(read(&hello), Err(FrameError::BadHandshake), "not UTF-8");
    }
}
