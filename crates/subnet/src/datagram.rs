//! The datagram fast path: ensemble packets as encrypted UDP datagrams straight between two
//! members, keyed through their libp2p stream.
//!
//! The libp2p stream of a (sender, ensemble) pair stays the control channel and the
//! fallback. When the receiver admits a stream it registers a session (random id, random
//! AES-256-GCM key) and sends it, with its UDP port, over that stream — which libp2p has
//! already authenticated to the member's PeerId and encrypted — so only that member can
//! produce datagrams the session accepts. The sender probes the path with a datagram larger
//! than the link MTU (so a path that drops IP fragments is caught too); when the receiver
//! got it, it says so on the stream, and only then does the sender switch that peer to
//! datagrams. A path that never confirms stays on the stream, and a confirmed path whose
//! datagrams stop being acknowledged (the receiver repeats its confirmation every second in
//! which datagrams arrived) is given up after 3 s: no silent black hole.
//!
//! Datagram: `kind u8 | 0 0 0 | session u32 BE | counter u64 BE | AES-GCM(payload) | tag`,
//! the 16-byte header is the associated data, the nonce is the counter. The payload is the
//! virtio-net header and one packet, up to a whole GSO super-packet (the kernel fragments
//! it at the IP layer). The receiver checks the replay window, authenticates, then applies
//! the same membership / source / destination checks as the stream path.
//!
//! One UDP socket and one receive thread per node; the sending side is the ensemble's
//! outbound thread. Having delivered a packet, the receive thread also sends whatever the
//! kernel already queued on that TUN device in answer (echo reply, TCP ACK), and an outbound
//! thread that just sent busy-polls the socket for a moment ([`DatagramConfig::busy_poll`]):
//! both save a thread wake-up per round trip, which is what latency costs here. It must not accept a datagram before authenticating it, nor let a
//! forged datagram move the replay window; nothing here allocates per packet.

#[cfg(test)]
mod receive_tests;
pub(crate) mod replay;
mod send;
#[cfg(test)]
mod tests;

pub(crate) use send::{Liveness, TxPath};

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use libp2p::PeerId;
use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use tokio::sync::Notify;

use crate::{
    carrier::Inbound,
    router::{check_inbound, count_inbound_drop},
    stats::{add, bump},
    tun,
    wire::{MAX_FRAME, VNET_HDR_LEN},
};
use replay::ReplayWindow;

/// Length of the datagram header.
pub(crate) const HDR: usize = 16;
/// Length of the AES-GCM tag.
pub(crate) const TAG: usize = 16;
/// Largest UDP payload over IPv4.
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Plaintext length of a path probe: above any link MTU, so the probe is IP-fragmented.
pub(crate) const PROBE_LEN: usize = 16 * 1024;
/// Length of the offer a receiver sends after admitting a stream.
pub(crate) const OFFER_LEN: usize = crate::wire::ADMISSION_LEN - 1;
/// The byte a receiver writes on the stream once a probe arrived, and again every
/// [`LIVENESS_TICK`] in which datagrams of the session arrived.
pub(crate) const CONFIRMED: u8 = 2;
/// How often a receiver tells the sender that datagrams still arrive.
pub(crate) const LIVENESS_TICK: Duration = Duration::from_secs(1);
/// How long a sender's datagrams may go unacknowledged before it gives the path up.
const DEAD_AFTER: Duration = Duration::from_secs(3);

const KIND_DATA: u8 = 1;
const KIND_PROBE: u8 = 2;
/// How often the receive thread looks at the stop flag.
const RECV_TICK: Duration = Duration::from_millis(250);
/// How many queued answers the receive thread sends after delivering a packet.
const ANSWERS: usize = 8;
/// Socket buffer sizes asked for (super-packets are up to 64 KiB each).
const SOCKET_BUF: usize = 8 << 20;

/// Whether and where a node offers the datagram path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramConfig {
    /// Offer and use the UDP path (the libp2p stream is used where it is off or fails).
    pub enabled: bool,
    /// UDP port to receive on (0: any free port).
    pub port: u16,
    /// How long an outbound thread that just sent datagrams keeps polling for the answer
    /// before it sleeps (zero: never). Trades that much CPU per burst for one thread
    /// wake-up less per round trip.
    pub busy_poll: Duration,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            port: 0,
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }
}

/// Default [`DatagramConfig::busy_poll`].
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(500);

/// What a receiver tells a sender: where to send and with which session and key.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    pub port: u16,
    pub session: u32,
    pub key: [u8; 32],
}

impl std::fmt::Debug for Offer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offer")
            .field("port", &self.port)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl Offer {
    /// `1 | port | session | key`, or all zero for "no datagrams".
    pub fn encode(offer: Option<&Offer>) -> [u8; OFFER_LEN] {
        let mut out = [0u8; OFFER_LEN];
        if let Some(o) = offer {
            out[0] = 1;
            out[1..3].copy_from_slice(&o.port.to_be_bytes());
            out[3..7].copy_from_slice(&o.session.to_be_bytes());
            out[7..].copy_from_slice(&o.key);
        }
        out
    }

    /// Parses an offer block; `Err` for anything but a well-formed offer or "none".
    pub fn decode(b: &[u8; OFFER_LEN]) -> Result<Option<Offer>, ()> {
        match b[0] {
            0 => Ok(None),
            1 => {
                let port = u16::from_be_bytes([b[1], b[2]]);
                if port == 0 {
                    return Err(());
                }
                let mut key = [0u8; 32];
                key.copy_from_slice(&b[7..]);
                Ok(Some(Offer {
                    port,
                    session: u32::from_be_bytes([b[3], b[4], b[5], b[6]]),
                    key,
                }))
            }
            _ => Err(()),
        }
    }
}

/// One inbound session: datagrams from `peer` for one ensemble.
struct RxSession {
    peer: PeerId,
    key: LessSafeKey,
    window: Mutex<ReplayWindow>,
    ctx: Inbound,
    confirmed: AtomicBool,
    confirm: Notify,
    /// Authenticated datagrams received.
    received: AtomicU64,
}

/// The node's datagram socket and its inbound sessions.
pub(crate) struct Hub {
    socket: UdpSocket,
    port: u16,
    busy_poll: Duration,
    sessions: RwLock<HashMap<u32, Arc<RxSession>>>,
    stop: AtomicBool,
    rng: SystemRandom,
    /// Datagrams no session claims, or too short for a header.
    unclaimed: AtomicU64,
}

impl Hub {
    /// Binds the UDP socket (all IPv4 addresses) and starts the receive thread, which runs
    /// until [`Hub::stop`].
    pub fn start(cfg: &DatagramConfig) -> io::Result<Arc<Hub>> {
        let socket = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], cfg.port)))?;
        socket.set_read_timeout(Some(RECV_TICK))?;
        grow_buffers(&socket);
        let port = socket.local_addr()?.port();
        let hub = Arc::new(Hub {
            socket,
            port,
            busy_poll: cfg.busy_poll,
            sessions: RwLock::new(HashMap::new()),
            stop: AtomicBool::new(false),
            rng: SystemRandom::new(),
            unclaimed: AtomicU64::new(0),
        });
        let h = hub.clone();
        std::thread::Builder::new()
            .name("nunet-subnet-udp".into())
            .spawn(move || h.receive_loop())?;
        Ok(hub)
    }

    /// The UDP port datagrams are received on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How long outbound threads busy-poll after sending.
    pub fn busy_poll(&self) -> Duration {
        self.busy_poll
    }

    /// Handles the datagrams already queued on the socket, without waiting (for a thread
    /// that is busy-polling); returns how many there were.
    pub fn receive_now(&self, buf: &mut [u8]) -> usize {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        let mut count = 0;
        while let Ok(n) = recv(self.socket.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            count += 1;
            self.handle_and_answer(buf, n);
        }
        count
    }

    /// Handles the datagram in `buf[..n]`; when it delivered a packet, sends the answers the
    /// kernel already queued on that TUN device (reusing `buf`).
    fn handle_and_answer(&self, buf: &mut [u8], n: usize) {
        if let Some(s) = buf.get_mut(..n).and_then(|d| self.handle(d)) {
            let ctx = &s.ctx;
            ctx.reader
                .try_drain(&ctx.dev, &ctx.table, &ctx.counters, buf, ANSWERS);
        }
    }

    /// Makes the receive thread exit (within [`RECV_TICK`]).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Datagrams no session claimed.
    pub fn unclaimed(&self) -> u64 {
        self.unclaimed.load(Ordering::Relaxed)
    }

    /// Registers a session for datagrams from `peer` into `ctx`'s ensemble. The session
    /// lives as long as the returned guard.
    pub fn register(self: &Arc<Self>, peer: PeerId, ctx: Inbound) -> Option<RxGuard> {
        let mut key = [0u8; 32];
        self.rng.fill(&mut key).ok()?;
        let unbound = UnboundKey::new(&AES_256_GCM, &key).ok()?;
        let session = Arc::new(RxSession {
            peer,
            key: LessSafeKey::new(unbound),
            window: Mutex::new(ReplayWindow::default()),
            ctx,
            confirmed: AtomicBool::new(false),
            confirm: Notify::new(),
            received: AtomicU64::new(0),
        });
        let mut map = self.sessions.write().unwrap_or_else(|e| e.into_inner());
        let id = loop {
            let mut b = [0u8; 4];
            self.rng.fill(&mut b).ok()?;
            let id = u32::from_be_bytes(b);
            if id != 0 && !map.contains_key(&id) {
                break id;
            }
        };
        map.insert(id, session.clone());
        Some(RxGuard {
            hub: self.clone(),
            id,
            session,
            offer: Offer {
                port: self.port,
                session: id,
                key,
            },
        })
    }

    /// A sending path to `ip` with the remote's offer.
    pub fn open_tx(self: &Arc<Self>, ip: IpAddr, offer: &Offer) -> Option<TxPath> {
        TxPath::new(self.clone(), SocketAddr::new(ip, offer.port), offer)
    }

    fn receive_loop(&self) {
        let mut buf = vec![0u8; HDR + MAX_FRAME + TAG];
        while !self.stop.load(Ordering::Relaxed) {
            match self.socket.recv_from(&mut buf) {
                Ok((n, _)) => self.handle_and_answer(&mut buf, n),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // e.g. ICMP errors reported on the socket; keep receiving.
                    tracing::debug!(error = %e, "subnet datagram receive");
                }
            }
        }
    }

    /// Authenticates one datagram and delivers its packet; returns the session when a
    /// packet was written to its TUN device.
    fn handle(&self, buf: &mut [u8]) -> Option<Arc<RxSession>> {
        let Some((hdr, body)) = buf.split_first_chunk_mut::<HDR>() else {
            bump(&self.unclaimed);
            return None;
        };
        let found = self
            .sessions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session_of(hdr))
            .cloned();
        let Some(s) = found else {
            bump(&self.unclaimed);
            return None;
        };
        let c = &s.ctx.counters;
        let Some((kind, plain)) = open(&s.key, &s.window, hdr, body) else {
            bump(&c.dropped_bad_datagram);
            return None;
        };
        bump(&s.received);
        match kind {
            KIND_DATA if deliver(&s, plain) => Some(s),
            KIND_DATA => None,
            KIND_PROBE if plain.len() >= PROBE_LEN => {
                if !s.confirmed.swap(true, Ordering::AcqRel) {
                    s.confirm.notify_one();
                }
                None
            }
            _ => {
                bump(&c.dropped_bad_datagram);
                None
            }
        }
    }
}

/// The session id a datagram header names.
pub(crate) fn session_of(hdr: &[u8; HDR]) -> u32 {
    u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]])
}

/// Checks one datagram of a session (header `hdr`, sealed `body`): a fresh counter, zero
/// reserved bytes, a body that holds a tag, then authenticates and decrypts it in place;
/// only then is its counter recorded. Returns the kind byte and the plaintext; `None` for
/// anything else (the window is then untouched).
pub(crate) fn open<'b>(
    key: &LessSafeKey,
    window: &Mutex<ReplayWindow>,
    hdr: &[u8; HDR],
    body: &'b mut [u8],
) -> Option<(u8, &'b [u8])> {
    let mut ctr = [0u8; 8];
    ctr.copy_from_slice(&hdr[8..16]);
    let counter = u64::from_be_bytes(ctr);
    let fresh = window
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .check(counter);
    if !fresh || hdr[1..4] != [0, 0, 0] || body.len() < TAG {
        return None;
    }
    let plain = key
        .open_in_place(nonce(counter), Aad::from(&hdr[..]), body)
        .ok()?;
    let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
    if !w.check(counter) {
        return None; // a concurrent duplicate
    }
    w.commit(counter);
    Some((hdr[0], plain))
}

/// Seals `buf[HDR..HDR + len]` in place as a datagram of `kind` for `session` with
/// `counter` (header in front, tag behind); returns the datagram's length. Fails when
/// `buf` cannot hold it or it is larger than a UDP datagram.
pub(crate) fn seal(
    key: &LessSafeKey,
    kind: u8,
    session: u32,
    counter: u64,
    buf: &mut [u8],
    len: usize,
) -> io::Result<usize> {
    let total = HDR + len + TAG;
    if total > buf.len() || total > MAX_DATAGRAM {
        return Err(io::Error::other("payload too large for a datagram"));
    }
    let (hdr, body) = buf.split_at_mut(HDR);
    hdr[0] = kind;
    hdr[1..4].fill(0);
    hdr[4..8].copy_from_slice(&session.to_be_bytes());
    hdr[8..16].copy_from_slice(&counter.to_be_bytes());
    let tag = key
        .seal_in_place_separate_tag(nonce(counter), Aad::from(&hdr[..]), &mut body[..len])
        .map_err(|_| io::Error::other("AES-GCM seal failed"))?;
    body[len..len + TAG].copy_from_slice(tag.as_ref());
    Ok(total)
}

/// Delivers one authenticated payload after the stream path's checks; whether it was
/// written to the TUN device.
fn deliver(s: &RxSession, payload: &[u8]) -> bool {
    let c = &s.ctx.counters;
    let table = s.ctx.table.load();
    if !table.members.contains(&s.peer) {
        bump(&c.dropped_bad_datagram);
        return false;
    }
    match check_inbound(payload, &s.peer, &table, &s.ctx.network) {
        Ok(()) => match tun::write(&s.ctx.dev, payload) {
            Ok(_) => {
                bump(&c.packets_in);
                bump(&c.datagrams_in);
                add(&c.bytes_in, payload.len() - VNET_HDR_LEN);
                true
            }
            Err(_) => {
                bump(&c.dropped_tun_write);
                false
            }
        },
        Err(reason) => {
            count_inbound_drop(reason, c);
            false
        }
    }
}

/// A registered inbound session; dropping it ends the session.
pub(crate) struct RxGuard {
    hub: Arc<Hub>,
    id: u32,
    session: Arc<RxSession>,
    offer: Offer,
}

impl RxGuard {
    /// What to send to the peer.
    pub fn offer(&self) -> &Offer {
        &self.offer
    }

    /// Resolves once a probe from the peer arrived (a permit is kept if it arrived before
    /// anyone waited). Call it until it resolves once, then no more.
    pub async fn confirmed(&self) {
        self.session.confirm.notified().await;
    }

    /// Authenticated datagrams received so far.
    pub fn received(&self) -> u64 {
        self.session.received.load(Ordering::Relaxed)
    }
}

impl Drop for RxGuard {
    fn drop(&mut self) {
        self.hub
            .sessions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

/// Asks for large socket buffers (forced where the process may, as root can); the kernel's
/// defaults hold only a few super-packets.
fn grow_buffers(socket: &UdpSocket) {
    use nix::sys::socket::{setsockopt, sockopt};
    let size = SOCKET_BUF;
    if setsockopt(socket, sockopt::RcvBufForce, &size).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &size);
    }
    if setsockopt(socket, sockopt::SndBufForce, &size).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &size);
    }
}
