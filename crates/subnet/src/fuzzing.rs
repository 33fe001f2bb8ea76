//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`, off in every
//! build of the daemon): the crate's private decoders of bytes from peers, driven the way
//! the node drives them. Not an API; nothing here is used by the crate itself.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::Ipv4Addr,
    pin::pin,
    sync::{Mutex, OnceLock},
    task::{Context, Poll, Waker},
};

use ipnet::Ipv4Net;
use libp2p::PeerId;
use ring::aead::{AES_256_GCM, LessSafeKey, UnboundKey};

use crate::{
    Records, carrier,
    datagram::{self, HDR, OFFER_LEN, Offer, TAG, replay::ReplayWindow},
    dns::{self, Transport},
    router::{self, Table},
    wire::{ADMISSION_LEN, FrameError},
};

/// Runs the inbound handshake reader with `bytes` as everything the stream delivers.
pub fn read_handshake(bytes: &[u8]) -> Result<String, FrameError> {
    let mut stream = futures::io::Cursor::new(bytes);
    let fut = pin!(carrier::read_handshake(&mut stream));
    // A cursor never waits: the future finishes on its first poll.
    match fut.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(FrameError::Truncated),
    }
}

/// A decoded answer to a handshake: the acceptor's datagram offer, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission(Option<Offer>);

impl Admission {
    /// Whether the acceptor offered a datagram path.
    pub fn has_offer(&self) -> bool {
        self.0.is_some()
    }
}

/// The writer's reading of an acceptor's answer (`None`: refused or malformed).
pub fn decode_admission(ack: &[u8; ADMISSION_LEN]) -> Option<Admission> {
    carrier::decode_admission(ack).map(Admission)
}

/// The acceptor's answer for `admission`.
pub fn encode_admission(admission: &Admission) -> [u8; ADMISSION_LEN] {
    carrier::encode_admission(admission.0.as_ref())
}

/// Decodes a bare datagram offer block: whether it holds an offer, `None` when malformed.
pub fn decode_offer(block: &[u8; OFFER_LEN]) -> Option<bool> {
    Offer::decode(block).ok().map(|o| o.is_some())
}

/// The checks an inbound packet from peer `sender` (0 or 1) passes before it is written to
/// the TUN device, against a fixed ensemble: network 10.1.2.0/24, 10.1.2.2 hosted by peer
/// 0, 10.1.2.3 by peer 1. `Err` names the drop reason.
pub fn check_inbound(payload: &[u8], sender: u8) -> Result<(), String> {
    static FIXED: OnceLock<([PeerId; 2], Table, Ipv4Net)> = OnceLock::new();
    let (peers, table, net) = FIXED.get_or_init(|| {
        let peers = [PeerId::random(), PeerId::random()];
        let routes = BTreeMap::from([
            (Ipv4Addr::new(10, 1, 2, 2), peers[0]),
            (Ipv4Addr::new(10, 1, 2, 3), peers[1]),
        ]);
        let net = Ipv4Net::new(Ipv4Addr::new(10, 1, 2, 0), 24).unwrap_or_default();
        (peers, Table::new(&routes, HashMap::new()), net)
    });
    let peer = &peers[usize::from(sender & 1)];
    router::check_inbound(payload, peer, table, net).map_err(|e| format!("{e:?}"))
}

/// One inbound datagram session (key, id, replay window), as the receive thread holds it.
pub struct Session {
    id: u32,
    key: LessSafeKey,
    sealer: LessSafeKey,
    window: Mutex<ReplayWindow>,
}

impl Session {
    /// A session `id` keyed with `key`.
    pub fn new(id: u32, key: [u8; 32]) -> Option<Session> {
        let k = || {
            UnboundKey::new(&AES_256_GCM, &key)
                .ok()
                .map(LessSafeKey::new)
        };
        Some(Session {
            id,
            key: k()?,
            sealer: k()?,
            window: Mutex::new(ReplayWindow::default()),
        })
    }

    /// What the receive thread does with `datagram` before delivery: header, session,
    /// replay window, authentication. Returns the kind byte and the plaintext.
    pub fn receive(&self, datagram: &mut [u8]) -> Option<(u8, Vec<u8>)> {
        let (hdr, body) = datagram.split_first_chunk_mut::<HDR>()?;
        if datagram::session_of(hdr) != self.id {
            return None;
        }
        datagram::open(&self.key, &self.window, hdr, body).map(|(k, p)| (k, p.to_vec()))
    }

    /// A datagram of `kind` carrying `payload` with `counter`, as a sender seals it.
    pub fn seal(&self, kind: u8, counter: u64, payload: &[u8]) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; HDR + payload.len() + TAG];
        buf.get_mut(HDR..HDR + payload.len())?
            .copy_from_slice(payload);
        let n = datagram::seal(
            &self.sealer,
            kind,
            self.id,
            counter,
            &mut buf,
            payload.len(),
        )
        .ok()?;
        buf.truncate(n);
        Some(buf)
    }
}

/// A bare replay window.
#[derive(Default)]
pub struct Window(ReplayWindow);

impl Window {
    /// Whether `counter` would be accepted.
    pub fn check(&self, counter: u64) -> bool {
        self.0.check(counter)
    }

    /// Records `counter`.
    pub fn commit(&mut self, counter: u64) {
        self.0.commit(counter)
    }

    /// How far behind the newest counter a datagram may be.
    pub const WINDOW: u64 = datagram::replay::WINDOW;
}

/// What the `.internal` responder sends back for one query `packet` (over TCP when `tcp`)
/// with `web` → 10.1.2.2 and `db` → 10.1.2.3 in the zone: the answer's bytes, or `None` when
/// the packet gets no answer. Counters must balance: every packet is counted once.
pub fn dns_answer(packet: &[u8], tcp: bool) -> Option<Vec<u8>> {
    static RECORDS: OnceLock<Records> = OnceLock::new();
    let records = RECORDS.get_or_init(|| {
        let r = Records::new();
        r.set([
            ("web", Ipv4Addr::new(10, 1, 2, 2)),
            ("db", Ipv4Addr::new(10, 1, 2, 3)),
        ]);
        r
    });
    let transport = if tcp { Transport::Tcp } else { Transport::Udp };
    let counters = dns::Counters::default();
    let out = dns::answer(packet, transport, records, &counters);
    let s = counters.snapshot();
    let outcomes = s.answered + s.no_data + s.nxdomain + s.refused + s.errors + s.malformed;
    assert!(
        outcomes >= 1,
        "a query left no trace in the counters: {s:?}"
    );
    out
}

/// Whether `bytes` decode as a DNS message.
pub fn dns_decodes(bytes: &[u8]) -> bool {
    hickory_proto::op::Message::from_vec(bytes).is_ok()
}
