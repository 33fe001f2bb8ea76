//! Routing decisions of one ensemble: the route table (IPv4 address → hosting peer), the
//! outbound thread that reads the TUN device and sends each packet to its peer (as a
//! datagram where that peer's datagram path is confirmed, else through the peer's stream
//! queue), and the checks an inbound packet must pass before it is written to the TUN device.
//!
//! The outbound side is a plain thread, not a task: a packet read from the TUN device is
//! encrypted and sent from the thread the kernel woke, with no hand-off in between.
//!
//! It must not decide membership (the table is handed in by the node) and must not block
//! on a peer: a full peer queue drops the packet, like a full NIC queue.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use ipnet::Ipv4Net;
use libp2p::PeerId;

use crate::{
    carrier::PeerQueue,
    datagram::{HDR, Hub, TAG, TxPath},
    stats::{Counters, add, bump},
    tun::{READ_BUF, Tun},
    wire::{self, VNET_HDR_LEN},
};

/// One immutable version of an ensemble's routes, swapped whole on update.
#[derive(Default)]
pub(crate) struct Table {
    /// Allocation address → peer hosting it (this node's addresses included).
    pub routes: HashMap<Ipv4Addr, PeerId>,
    /// Peers that appear in `routes`.
    pub members: HashSet<PeerId>,
    /// Send queues of the remote members.
    pub queues: HashMap<PeerId, Arc<PeerQueue>>,
}

impl Table {
    /// Builds a table from the node's route map and the remote members' queues.
    pub fn new(
        routes: &BTreeMap<Ipv4Addr, PeerId>,
        queues: HashMap<PeerId, Arc<PeerQueue>>,
    ) -> Self {
        Self {
            routes: routes.iter().map(|(a, p)| (*a, *p)).collect(),
            members: routes.values().copied().collect(),
            queues,
        }
    }
}

/// The current route table plus a version number, so hot loops re-read it only on change.
#[derive(Default)]
pub(crate) struct SharedTable {
    table: RwLock<Arc<Table>>,
    version: AtomicU64,
}

impl SharedTable {
    /// The current table.
    pub fn load(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the table.
    pub fn store(&self, table: Table) {
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Refreshes `cached` when the table changed since it was loaded.
    pub fn refresh(&self, cached: &mut (u64, Arc<Table>)) {
        let v = self.version.load(Ordering::Acquire);
        if v != cached.0 {
            *cached = (v, self.load());
        }
    }

    /// The current version and table.
    pub fn snapshot(&self) -> (u64, Arc<Table>) {
        let v = self.version.load(Ordering::Acquire);
        (v, self.load())
    }
}

/// Who may read the ensemble's TUN device right now. The outbound thread holds it while it
/// drains the device; the datagram receiver takes it (without waiting) right after writing
/// an inbound packet, because the answer to that packet (an echo reply, a TCP ACK) is
/// usually queued on the TUN device by the time the write returns: sending it from the
/// receiving thread saves waking the outbound thread. One holder at a time keeps the
/// packets of a flow in order.
pub(crate) struct TunReader {
    lock: std::sync::Mutex<()>,
    local: PeerId,
}

impl TunReader {
    /// A reader lock for the ensemble on the node `local`.
    pub fn new(local: PeerId) -> Self {
        Self {
            lock: std::sync::Mutex::new(()),
            local,
        }
    }

    /// If nobody is reading the device, reads and routes up to `max` packets that are
    /// already queued. `buf` must hold `HDR + READ_BUF + TAG` bytes.
    pub fn try_drain(
        &self,
        dev: &Tun,
        table: &SharedTable,
        c: &Counters,
        buf: &mut [u8],
        max: usize,
    ) {
        let Ok(_held) = self.lock.try_lock() else {
            return;
        };
        let table = table.load();
        for _ in 0..max {
            match dev.recv(&mut buf[HDR..HDR + READ_BUF]) {
                Ok(n) => {
                    bump(&c.answers_in_line);
                    let _ = route_outbound(buf, n, &table, self.local, c);
                }
                Err(_) => return,
            }
        }
    }
}

/// The outbound thread of one ensemble; stops when its event is triggered.
pub(crate) struct Outbound {
    stop: Arc<tun_rs::InterruptEvent>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Outbound {
    /// Starts the thread reading `dev`.
    pub fn spawn(
        dev: Tun,
        table: Arc<SharedTable>,
        counters: Arc<Counters>,
        reader: Arc<TunReader>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(tun_rs::InterruptEvent::new()?);
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nunet-subnet-tun".into())
            .spawn(move || run_outbound(&dev, &table, &counters, &reader, &s))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (it holds the device until it exits).
    pub async fn stop(mut self) {
        let _ = self.stop.trigger();
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let _ = self.stop.trigger();
    }
}

/// Reads packets from the TUN device until it fails or `stop` is triggered and sends each to
/// the peer hosting its destination. One reusable buffer, with room for the datagram header
/// in front and the tag behind, so a datagram is sealed in place: no copy, no allocation.
fn run_outbound(
    dev: &Tun,
    table: &SharedTable,
    counters: &Counters,
    reader: &TunReader,
    stop: &tun_rs::InterruptEvent,
) {
    let mut buf = vec![0u8; HDR + READ_BUF + TAG];
    let mut cached = table.snapshot();
    let mut spin = SpinBudget::default();
    loop {
        match dev.wait_readable_intr(stop) {
            Ok(()) => {}
            Err(_) if stop.is_trigger() => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "TUN wait failed; outbound router stops");
                return;
            }
        }
        let _held = reader.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent_to: Option<Arc<Hub>> = None;
        loop {
            let n = match dev.recv(&mut buf[HDR..HDR + READ_BUF]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "TUN read failed; outbound router stops");
                    return;
                }
            };
            table.refresh(&mut cached);
            if let Some(hub) = route_outbound(&mut buf, n, &cached.1, reader.local, counters) {
                sent_to = Some(hub);
            }
        }
        if let Some(hub) = sent_to.filter(|h| !h.busy_poll().is_zero())
            && spin.wanted()
        {
            let caught = busy_poll(
                dev,
                table,
                &mut cached,
                counters,
                reader.local,
                &hub,
                &mut buf,
                stop,
            );
            spin.record(caught);
        }
    }
}

/// Whether busy-polling pays off: after [`SpinBudget::MISSES`] polls in a row that caught
/// no datagram (the peers answer slower than the poll time, e.g. across a WAN), polling
/// pauses for [`SpinBudget::PAUSE`] bursts, so it cannot burn CPU for nothing for long.
#[derive(Debug, Default)]
struct SpinBudget {
    misses: u32,
    paused: u32,
}

impl SpinBudget {
    const MISSES: u32 = 8;
    const PAUSE: u32 = 64;

    /// Whether to poll after this burst.
    fn wanted(&mut self) -> bool {
        if self.paused > 0 {
            self.paused -= 1;
            return false;
        }
        true
    }

    /// Records whether a poll caught a datagram.
    fn record(&mut self, caught: bool) {
        if caught {
            self.misses = 0;
            return;
        }
        self.misses += 1;
        if self.misses >= Self::MISSES {
            self.misses = 0;
            self.paused = Self::PAUSE;
        }
    }
}

/// How long to keep polling after an answer was caught (for the rest of a burst).
const AFTER_ANSWER: std::time::Duration = std::time::Duration::from_micros(50);

/// After sending datagrams, keeps serving the datagram socket and the TUN device without
/// sleeping: up to the hub's busy-poll time after the last packet sent, and a short
/// [`AFTER_ANSWER`] after the last datagram caught. An answer that comes back meanwhile
/// is delivered by this already running thread instead of waking the receive thread (each
/// wake-up of an idle thread costs tens of microseconds). Returns whether a datagram was
/// caught.
#[allow(clippy::too_many_arguments)]
fn busy_poll(
    dev: &Tun,
    table: &SharedTable,
    cached: &mut (u64, Arc<Table>),
    counters: &Counters,
    local: PeerId,
    hub: &Hub,
    buf: &mut [u8],
    stop: &tun_rs::InterruptEvent,
) -> bool {
    let mut caught = false;
    let (mut since, mut window) = (Instant::now(), hub.busy_poll());
    while since.elapsed() < window && !stop.is_trigger() {
        let mut busy = false;
        if hub.receive_now(buf) > 0 {
            caught = true;
            busy = true;
            (since, window) = (Instant::now(), AFTER_ANSWER.min(hub.busy_poll()));
        }
        while let Ok(n) = dev.recv(&mut buf[HDR..HDR + READ_BUF]) {
            busy = true;
            table.refresh(cached);
            route_outbound(buf, n, &cached.1, local, counters);
            (since, window) = (Instant::now(), hub.busy_poll());
        }
        if !busy {
            std::thread::yield_now();
        }
    }
    caught
}

/// Routes one payload (virtio-net header + packet) read from the TUN device into
/// `buf[HDR..HDR + len]`; returns the datagram socket when it went out as a datagram.
fn route_outbound(
    buf: &mut [u8],
    len: usize,
    table: &Table,
    local: PeerId,
    c: &Counters,
) -> Option<Arc<Hub>> {
    let Some(payload) = buf.get(HDR..HDR + len) else {
        bump(&c.dropped_not_ipv4_out);
        return None;
    };
    let Some((_, packet)) = payload.split_first_chunk::<VNET_HDR_LEN>() else {
        bump(&c.dropped_not_ipv4_out);
        return None;
    };
    let Ok((addrs, _)) = wire::ipv4_header(packet) else {
        bump(&c.dropped_not_ipv4_out);
        return None;
    };
    let Some(peer) = table.routes.get(&addrs.dst) else {
        bump(&c.dropped_no_route);
        return None;
    };
    if *peer == local {
        bump(&c.dropped_local);
        return None;
    }
    let Some(queue) = table.queues.get(peer) else {
        bump(&c.dropped_no_route);
        return None;
    };
    let bytes = packet.len();
    if let Some(path) = queue.path().filter(|_| TxPath::fits(len)) {
        match path.send_data(buf, len) {
            Ok(()) => {
                bump(&c.packets_out);
                bump(&c.datagrams_out);
                add(&c.bytes_out, bytes);
                return Some(path.hub().clone());
            }
            Err(_) => {
                bump(&c.dropped_datagram_send);
                return None;
            }
        }
    }
    if queue.push(payload) {
        bump(&c.packets_out);
        add(&c.bytes_out, bytes);
    } else {
        bump(&c.dropped_queue_full);
    }
    None
}

/// Why an inbound packet is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InboundDrop {
    /// Not IPv4 / malformed.
    NotIpv4,
    /// Unacceptable virtio-net header.
    BadOffload,
    /// Source not assigned to the sending peer.
    Spoofed,
    /// Destination outside the ensemble network.
    BadDestination,
}

/// Checks an inbound payload from `peer`: a well-formed IPv4 packet whose source the table
/// assigns to `peer` and whose destination lies in `network`.
pub(crate) fn check_inbound(
    payload: &[u8],
    peer: &PeerId,
    table: &Table,
    network: &Ipv4Net,
) -> Result<(), InboundDrop> {
    let addrs = wire::check_payload(payload).map_err(|e| match e {
        wire::PacketError::NotIpv4 => InboundDrop::NotIpv4,
        wire::PacketError::BadOffload => InboundDrop::BadOffload,
    })?;
    if table.routes.get(&addrs.src) != Some(peer) {
        return Err(InboundDrop::Spoofed);
    }
    if !network.contains(&addrs.dst) {
        return Err(InboundDrop::BadDestination);
    }
    Ok(())
}

/// Counts an inbound drop.
pub(crate) fn count_inbound_drop(reason: InboundDrop, c: &Counters) {
    bump(match reason {
        InboundDrop::NotIpv4 => &c.dropped_not_ipv4_in,
        InboundDrop::BadOffload => &c.dropped_bad_offload,
        InboundDrop::Spoofed => &c.dropped_spoofed,
        InboundDrop::BadDestination => &c.dropped_bad_destination,
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn payload(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut p = vec![0u8; VNET_HDR_LEN + 28];
        let ip = &mut p[VNET_HDR_LEN..];
        ip[0] = 0x45;
        ip[3] = 28;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&src.octets());
        ip[16..20].copy_from_slice(&dst.octets());
        p
    }

    #[test]
    fn outbound_routes_by_destination() {
        let (me, other) = (PeerId::random(), PeerId::random());
        let a = Ipv4Addr::new(10, 1, 2, 2);
        let b = Ipv4Addr::new(10, 1, 2, 3);
        let routes = BTreeMap::from([(a, me), (b, other)]);
        let q = Arc::new(PeerQueue::new(1 << 20));
        let table = Table::new(&routes, HashMap::from([(other, q.clone())]));
        let c = Counters::default();
        let route = |p: &[u8]| {
            let mut buf = vec![0u8; HDR + p.len() + TAG];
            buf[HDR..HDR + p.len()].copy_from_slice(p);
            route_outbound(&mut buf, p.len(), &table, me, &c);
        };
        route(&payload(a, b));
        route(&payload(b, a));
        route(&payload(a, Ipv4Addr::new(10, 1, 2, 9)));
        route(&[0u8; 4]);
        let s = c.snapshot();
        assert_eq!(
            (
                s.packets_out,
                s.dropped_local,
                s.dropped_no_route,
                s.dropped_not_ipv4_out
            ),
            (1, 1, 1, 1)
        );
        let mut out = Vec::new();
        q.take(&mut out);
        assert_eq!(out.len(), 4 + VNET_HDR_LEN + 28);
    }

    #[test]
    fn busy_polling_pauses_after_a_run_of_misses_and_resumes() {
        let mut s = SpinBudget::default();
        for _ in 0..SpinBudget::MISSES - 1 {
            assert!(s.wanted());
            s.record(false);
        }
        assert!(s.wanted());
        s.record(true); // a catch resets the run
        for _ in 0..SpinBudget::MISSES {
            assert!(s.wanted());
            s.record(false);
        }
        let skipped = (0..SpinBudget::PAUSE).filter(|_| !s.wanted()).count();
        assert_eq!(skipped as u32, SpinBudget::PAUSE);
        assert!(s.wanted(), "polling resumes after the pause");
    }

    #[test]
    fn inbound_checks_source_and_destination() {
        let (me, other) = (PeerId::random(), PeerId::random());
        let a = Ipv4Addr::new(10, 1, 2, 2);
        let b = Ipv4Addr::new(10, 1, 2, 3);
        let net: Ipv4Net = "10.1.2.0/24".parse().unwrap();
        let table = Table::new(&BTreeMap::from([(a, me), (b, other)]), HashMap::new());
        assert_eq!(check_inbound(&payload(b, a), &other, &table, &net), Ok(()));
        assert_eq!(
            check_inbound(&payload(a, b), &other, &table, &net),
            Err(InboundDrop::Spoofed)
        );
        assert_eq!(
            check_inbound(&payload(b, Ipv4Addr::new(8, 8, 8, 8)), &other, &table, &net),
            Err(InboundDrop::BadDestination)
        );
        assert_eq!(
            check_inbound(&payload(b, a), &PeerId::random(), &table, &net),
            Err(InboundDrop::Spoofed)
        );
    }
}
