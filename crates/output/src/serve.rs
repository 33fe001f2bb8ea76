//! The provider's side of following: tickets handed out by a capability-checked call, and
//! the stream server that pushes one allocation's spooled output to the ticket's holder.
//!
//! A follower opens [`PROTOCOL`], sends its ticket and the offsets it has per stream
//! ([`REQUEST`] bytes, within [`REQUEST_TIMEOUT`]), and then only reads: output frames as
//! the spool grows, a skip where retention dropped bytes, a state frame when the
//! allocation ended (after all output before it). The stream stays open until the
//! allocation is gone or the follower closes it. Writes wait for the follower, so a slow
//! one slows only its own stream (the spool keeps everything on disk meanwhile).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use nunet_network::slots::Slots;

use crate::OutputError;
use crate::frame::{Channel, Frame, MAX_DATA};
use crate::spool::{Read, Spools};

/// The stream protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/nunet/output/1.0.0");
/// Bytes of a request: ticket (32), stdout offset (8), stderr offset (8).
pub const REQUEST: usize = 48;
/// Longest a new stream may take to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most streams served at once.
pub const MAX_STREAMS: usize = 64;
/// Most streams served at once to one peer.
pub const MAX_STREAMS_PER_PEER: usize = 32;
/// How long a ticket can be used.
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// Most tickets held at once (the oldest goes first).
pub const MAX_TICKETS: usize = 256;
/// Most tickets held at once for one peer (its oldest goes first), so that one follower
/// cannot push out everyone else's.
pub const MAX_TICKETS_PER_PEER: usize = 32;

/// A ticket for one stream of one allocation's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// 32 random bytes, hex.
    pub ticket: String,
    /// The output's source ([`crate::spool::Spool::source`]).
    pub source: String,
}

struct Issued {
    peer: PeerId,
    allocation: String,
    at: Instant,
}

/// Serves [`PROTOCOL`] from the node's spools.
pub struct Server {
    spools: Arc<Spools>,
    tickets: Mutex<HashMap<[u8; 32], Issued>>,
    slots: Slots,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Serves the spools' output on `net` from now on.
    pub fn start(
        net: &nunet_network::Network,
        spools: Arc<Spools>,
    ) -> Result<Arc<Self>, OutputError> {
        let server = Arc::new(Self {
            spools,
            tickets: Mutex::default(),
            slots: Slots::new(MAX_STREAMS, MAX_STREAMS_PER_PEER),
        });
        let mut incoming = net
            .streams()
            .accept(PROTOCOL)
            .map_err(|e| OutputError::Serve(e.to_string()))?;
        let s = server.clone();
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let s = s.clone();
                tokio::spawn(async move { s.serve(peer, stream).await });
            }
        });
        Ok(server)
    }

    /// The spools it serves.
    pub fn spools(&self) -> &Arc<Spools> {
        &self.spools
    }

    /// A ticket for `peer` to follow `allocation` (whose caller the actor layer checked).
    pub fn ticket(&self, peer: PeerId, allocation: &str) -> Result<Ticket, OutputError> {
        let spool = self.spools.get(allocation).ok_or_else(|| {
            OutputError::Serve(format!("allocation {allocation} has no output here"))
        })?;
        let bytes: [u8; 32] = rand::random();
        let mut t = self
            .tickets
            .lock()
            .map_err(|_| OutputError::Serve("tickets lock poisoned".into()))?;
        t.retain(|_, i| i.at.elapsed() < TICKET_TTL);
        // The peer's own oldest first, then (all full) anyone's oldest.
        let oldest = |t: &HashMap<[u8; 32], Issued>, only: Option<PeerId>| {
            t.iter()
                .filter(|(_, i)| only.is_none_or(|p| i.peer == p))
                .min_by_key(|(_, i)| i.at)
                .map(|(k, _)| *k)
        };
        while t.values().filter(|i| i.peer == peer).count() >= MAX_TICKETS_PER_PEER {
            let Some(k) = oldest(&t, Some(peer)) else {
                break;
            };
            t.remove(&k);
        }
        while t.len() >= MAX_TICKETS {
            let Some(k) = oldest(&t, None) else { break };
            t.remove(&k);
        }
        t.insert(
            bytes,
            Issued {
                peer,
                allocation: allocation.to_string(),
                at: Instant::now(),
            },
        );
        Ok(Ticket {
            ticket: hex::encode(bytes),
            source: spool.source().to_string(),
        })
    }

    /// The allocation a ticket names, once, for the peer it was issued to.
    fn redeem(&self, peer: PeerId, ticket: &[u8; 32]) -> Result<String, &'static str> {
        let mut t = self.tickets.lock().map_err(|_| "tickets lock poisoned")?;
        match t.remove(ticket) {
            Some(i) if i.peer == peer && i.at.elapsed() < TICKET_TTL => Ok(i.allocation),
            Some(i) if i.peer != peer => {
                // Not this peer's: it stays for its holder.
                t.insert(*ticket, i);
                Err("unknown ticket")
            }
            Some(_) => Err("expired ticket"),
            None => Err("unknown ticket"),
        }
    }

    async fn serve(&self, peer: PeerId, mut stream: libp2p::Stream) {
        let mut req = [0u8; REQUEST];
        match tokio::time::timeout(REQUEST_TIMEOUT, stream.read_exact(&mut req)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
        let refuse = |message: &str| {
            Frame::Error {
                key: String::new(),
                message: message.to_string(),
            }
            .to_bytes()
        };
        let Some(_slot) = self.slots.take(peer) else {
            let _ = stream
                .write_all(&refuse("busy: too many output streams; try again"))
                .await;
            return;
        };
        let mut ticket = [0u8; 32];
        ticket.copy_from_slice(&req[..32]);
        let offset = |r: &[u8]| {
            let mut b = [0u8; 8];
            b.copy_from_slice(r);
            u64::from_be_bytes(b)
        };
        let at = [offset(&req[32..40]), offset(&req[40..48])];
        let spool = match self
            .redeem(peer, &ticket)
            .map_err(str::to_string)
            .and_then(|a| {
                // Only a spool that still exists: a removed allocation's is not made again.
                self.spools
                    .get(&a)
                    .ok_or_else(|| format!("allocation {a} has no output here"))
            }) {
            Ok(s) => s,
            Err(why) => {
                tracing::debug!(%peer, "output stream refused: {why}");
                let _ = stream.write_all(&refuse(&why)).await;
                return;
            }
        };
        let (mut rd, mut wr) = stream.split();
        // The follower sends nothing more: a read that returns means it left.
        let left = async move {
            let mut b = [0u8; 1];
            let _ = rd.read(&mut b).await;
        };
        tokio::pin!(left);
        let mut rx = spool.subscribe();
        let mut at = at;
        let mut sent_state = None;
        loop {
            let mark = rx.borrow_and_update().clone();
            let mut out = Vec::new();
            for (i, c) in Channel::BOTH.into_iter().enumerate() {
                match spool.read(c, at[i], MAX_DATA) {
                    Ok(Read::Data(d)) => {
                        let n = d.len() as u64;
                        Frame::Output {
                            key: String::new(),
                            channel: c,
                            offset: at[i],
                            data: d.into(),
                        }
                        .encode(&mut out);
                        at[i] += n;
                    }
                    Ok(Read::Skipped(to)) => {
                        Frame::Skipped {
                            key: String::new(),
                            channel: c,
                            to,
                        }
                        .encode(&mut out);
                        at[i] = to;
                    }
                    Ok(Read::Nothing) => {}
                    Err(e) => {
                        let _ = wr.write_all(&refuse(&format!("output: {e}"))).await;
                        return;
                    }
                }
            }
            let drained = out.is_empty();
            if drained && mark.state != sent_state {
                if let Some(state) = mark.state {
                    Frame::State {
                        key: String::new(),
                        state,
                    }
                    .encode(&mut out);
                }
                sent_state = mark.state;
            }
            if !out.is_empty() {
                // Waits while the follower does not read: its back-pressure.
                tokio::select! {
                    r = wr.write_all(&out) => if r.is_err() { return },
                    () = &mut left => return,
                }
                continue;
            }
            if mark.closed {
                let _ = wr.flush().await;
                let _ = wr.close().await;
                return;
            }
            let _ = wr.flush().await;
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    // The spool was dropped (the allocation is gone).
                    let _ = wr.close().await;
                    return;
                },
                () = &mut left => return,
            }
        }
    }
}

/// Opens a stream to follow one allocation's output on `peer` with `ticket`, from the
/// offsets given; read its frames with [`Frame::read`].
pub async fn open(
    net: &nunet_network::Network,
    peer: PeerId,
    ticket: &str,
    stdout: u64,
    stderr: u64,
) -> Result<libp2p::Stream, OutputError> {
    let t = hex::decode(ticket)
        .ok()
        .filter(|t| t.len() == 32)
        .ok_or_else(|| OutputError::Follow("the provider sent a malformed ticket".into()))?;
    let mut stream = net
        .open_stream(peer, PROTOCOL)
        .await
        .map_err(|e| OutputError::Follow(format!("cannot open an output stream: {e}")))?;
    let mut req = Vec::with_capacity(REQUEST);
    req.extend_from_slice(&t);
    req.extend_from_slice(&stdout.to_be_bytes());
    req.extend_from_slice(&stderr.to_be_bytes());
    stream
        .write_all(&req)
        .await
        .map_err(|e| OutputError::Follow(format!("output stream: {e}")))?;
    stream
        .flush()
        .await
        .map_err(|e| OutputError::Follow(format!("output stream: {e}")))?;
    Ok(stream)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_for_one_peer_once_and_bounded() {
        let d = tempfile::tempdir().unwrap();
        let s = Server {
            spools: Arc::new(Spools::new(d.path().into(), 0)),
            tickets: Mutex::default(),
            slots: Slots::new(1, 1),
        };
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(s.ticket(a, "alloc").is_err(), "no spool, no ticket");
        s.spools.open("alloc").unwrap();
        let t = s.ticket(a, "alloc").unwrap();
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&hex::decode(&t.ticket).unwrap());
        assert_eq!(s.redeem(b, &raw), Err("unknown ticket"), "another peer's");
        assert_eq!(s.redeem(a, &raw).unwrap(), "alloc");
        assert_eq!(s.redeem(a, &raw), Err("unknown ticket"), "used once");
        // One peer holds at most its share; a flood of its tickets leaves another's intact.
        let theirs = s.ticket(b, "alloc").unwrap();
        for _ in 0..MAX_TICKETS + 10 {
            s.ticket(a, "alloc").unwrap();
        }
        let held = |p: PeerId| {
            s.tickets
                .lock()
                .unwrap()
                .values()
                .filter(|i| i.peer == p)
                .count()
        };
        assert_eq!(held(a), MAX_TICKETS_PER_PEER);
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&hex::decode(&theirs.ticket).unwrap());
        assert_eq!(
            s.redeem(b, &raw).unwrap(),
            "alloc",
            "not pushed out by another peer"
        );
        // All peers together hold at most MAX_TICKETS.
        for _ in 0..MAX_TICKETS / MAX_TICKETS_PER_PEER + 2 {
            let p = PeerId::random();
            for _ in 0..MAX_TICKETS_PER_PEER {
                s.ticket(p, "alloc").unwrap();
            }
        }
        assert_eq!(s.tickets.lock().unwrap().len(), MAX_TICKETS);
        // The source names the spool: the same for every ticket of one allocation.
        assert_eq!(s.ticket(b, "alloc").unwrap().source, t.source);
    }
}
