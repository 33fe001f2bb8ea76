//! The ensemble's `.internal` DNS responder: a small authoritative server on the subnet
//! gateway address that answers A queries for the ensemble's allocations from an in-memory
//! record map ([`Records`]).
//!
//! Answers: `<name>.internal.` and the bare `<name>.` (case-insensitive) get the record's
//! address (TTL 5 s, authoritative); other types for a known name get NOERROR with no answers;
//! unknown names under `.internal` and unknown single-label names get NXDOMAIN at once (with the
//! zone's SOA, so negative answers are cached for 5 s); any other name gets REFUSED, which makes
//! a stub resolver move on to its next nameserver. UDP answers larger than the client's limit
//! (512 bytes, or its EDNS size up to 1232) are truncated with TC set; TCP uses the 2-byte
//! length framing with a per-message deadline and a bound on concurrent connections.
//!
//! What it must not do: recurse or forward (it knows only the ensemble's names), answer
//! malformed packets (they are dropped and counted, never reflected), panic on any input, or
//! keep sockets open after [`DnsResponder::stop`] / drop.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// TTL of answers and of negative answers (SOA minimum).
pub const DNS_TTL: u32 = 5;
/// The zone every allocation name lives in.
pub const ZONE: &str = "internal";
/// Largest UDP answer without EDNS.
const UDP_LIMIT: usize = 512;
/// Largest UDP answer we send even when a client advertises more (no IP fragmentation).
const EDNS_LIMIT: u16 = 1232;
/// Concurrent TCP connections; further ones are closed at once.
const MAX_TCP_CONNECTIONS: usize = 64;
/// Deadline for reading one framed message (or the idle gap before it) and writing an answer.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of the DNS responder.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A socket could not be bound.
    #[error("cannot bind the DNS responder on {proto} {addr}: {source}")]
    Bind {
        /// `udp` or `tcp`.
        proto: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The name → address map the responder answers from. Cheap to clone; all clones share the
/// same map, so the subnet updates it while the responder runs. Names are stored lowercase
/// without a trailing dot or the `.internal` suffix (`web`, `Web.internal.` and `web.` are the
/// same name).
#[derive(Debug, Clone, Default)]
pub struct Records(Arc<RwLock<HashMap<String, Ipv4Addr>>>);

/// `Web.Internal.` → `web`; `None` for an empty name.
fn normalize(name: &str) -> Option<String> {
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let base = lower
        .strip_suffix(ZONE)
        .and_then(|b| b.strip_suffix('.'))
        .map(str::to_string)
        .unwrap_or(lower);
    (!base.is_empty()).then_some(base)
}

impl Records {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every record with `map`.
    pub fn set<S: AsRef<str>>(&self, map: impl IntoIterator<Item = (S, Ipv4Addr)>) {
        let fresh: HashMap<String, Ipv4Addr> = map
            .into_iter()
            .filter_map(|(n, ip)| normalize(n.as_ref()).map(|n| (n, ip)))
            .collect();
        if let Ok(mut m) = self.0.write() {
            *m = fresh;
        }
    }

    /// Adds or replaces one record.
    pub fn insert(&self, name: &str, ip: Ipv4Addr) {
        if let (Some(n), Ok(mut m)) = (normalize(name), self.0.write()) {
            m.insert(n, ip);
        }
    }

    /// Removes one record; returns its address if it existed.
    pub fn remove(&self, name: &str) -> Option<Ipv4Addr> {
        let n = normalize(name)?;
        self.0.write().ok()?.remove(&n)
    }

    /// The address of `name` (any of the accepted spellings).
    pub fn get(&self, name: &str) -> Option<Ipv4Addr> {
        let n = normalize(name)?;
        self.0.read().ok()?.get(&n).copied()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.0.read().map(|m| m.len()).unwrap_or(0)
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counters of a running responder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries received over UDP (well-formed or not).
    pub udp_queries: u64,
    /// Queries received over TCP.
    pub tcp_queries: u64,
    /// NOERROR answers with at least one record.
    pub answered: u64,
    /// NOERROR answers without records (known name, other type).
    pub no_data: u64,
    /// NXDOMAIN answers.
    pub nxdomain: u64,
    /// REFUSED answers (names outside the zone, unsupported classes).
    pub refused: u64,
    /// FORMERR / NOTIMP answers.
    pub errors: u64,
    /// Packets dropped without an answer (undecodable, or not a query).
    pub malformed: u64,
    /// UDP answers sent truncated (TC set).
    pub truncated: u64,
    /// TCP connections closed at once because too many were open.
    pub tcp_rejected: u64,
    /// TCP connections closed on a read or write deadline.
    pub tcp_timeouts: u64,
}

/// Shared counters; a lock per packet is far below the cost of the socket calls.
#[derive(Debug, Default)]
pub(crate) struct Counters(Mutex<DnsStats>);

impl Counters {
    fn bump(&self, f: impl FnOnce(&mut DnsStats)) {
        if let Ok(mut s) = self.0.lock() {
            f(&mut s);
        }
    }

    pub(crate) fn snapshot(&self) -> DnsStats {
        self.0.lock().map(|s| *s).unwrap_or_default()
    }
}

/// The zone's SOA record (its minimum is the negative-answer TTL).
fn soa() -> Option<Record> {
    let zone = Name::from_ascii("internal.").ok()?;
    let mname = Name::from_ascii("ns.internal.").ok()?;
    let rname = Name::from_ascii("hostmaster.internal.").ok()?;
    let rdata = SOA::new(mname, rname, 1, 60, 10, 600, DNS_TTL);
    Some(Record::from_rdata(zone, DNS_TTL, RData::SOA(rdata)))
}

/// Builds the answer to `req`, or `None` when the packet must be dropped.
fn respond(req: &Message, records: &Records, counters: &Counters) -> Option<Message> {
    if req.message_type != MessageType::Query {
        counters.bump(|s| s.malformed += 1);
        return None;
    }
    let mut resp = Message::response(req.id, req.op_code);
    resp.metadata.recursion_desired = req.recursion_desired;
    resp.metadata.checking_disabled = req.checking_disabled;
    if req.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_LIMIT);
        resp.set_edns(edns);
    }
    resp.add_queries(req.queries.iter().cloned());
    let code = if req.op_code != OpCode::Query {
        ResponseCode::NotImp
    } else if req.queries.len() != 1 {
        ResponseCode::FormErr
    } else {
        lookup(&req.queries[0], records, &mut resp)
    };
    resp.metadata.response_code = code;
    match code {
        ResponseCode::NoError if resp.answers.is_empty() => counters.bump(|s| s.no_data += 1),
        ResponseCode::NoError => counters.bump(|s| s.answered += 1),
        ResponseCode::NXDomain => counters.bump(|s| s.nxdomain += 1),
        ResponseCode::Refused => counters.bump(|s| s.refused += 1),
        _ => counters.bump(|s| s.errors += 1),
    }
    Some(resp)
}

/// Answers one question into `resp` and returns the response code.
fn lookup(q: &hickory_proto::op::Query, records: &Records, resp: &mut Message) -> ResponseCode {
    if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
        return ResponseCode::Refused;
    }
    let full = q.name().to_ascii().to_ascii_lowercase();
    let full = full.trim_end_matches('.');
    let apex = full == ZONE;
    let found = if apex { None } else { records.get(full) };
    let foreign = full.is_empty() || (full.contains('.') && !full.ends_with(".internal"));
    if found.is_none() && !apex && foreign {
        return ResponseCode::Refused;
    }
    resp.metadata.authoritative = true;
    let qtype = q.query_type();
    match found {
        Some(ip) if matches!(qtype, RecordType::A | RecordType::ANY) => {
            let rdata = RData::A(A(ip));
            resp.add_answer(Record::from_rdata(q.name().clone(), DNS_TTL, rdata));
        }
        _ => match soa() {
            Some(soa) if apex && matches!(qtype, RecordType::SOA | RecordType::ANY) => {
                resp.add_answer(soa);
            }
            Some(soa) => {
                resp.add_authority(soa);
            }
            None => {}
        },
    }
    if found.is_some() || apex {
        ResponseCode::NoError
    } else {
        ResponseCode::NXDomain
    }
}

/// How a query arrived (answers over UDP are limited to what the client can receive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// The encoded answer to one query `packet`, or `None` when the packet gets none (it does
/// not decode, is not a query, or no answer fits the transport's limit).
pub(crate) fn answer(
    packet: &[u8],
    transport: Transport,
    records: &Records,
    counters: &Counters,
) -> Option<Vec<u8>> {
    let Ok(req) = Message::from_vec(packet) else {
        counters.bump(|s| s.malformed += 1);
        return None;
    };
    let resp = respond(&req, records, counters)?;
    let limit = match transport {
        Transport::Udp => udp_limit(&req),
        Transport::Tcp => usize::from(u16::MAX),
    };
    let Some((bytes, truncated)) = encode_limited(&resp, limit) else {
        counters.bump(|s| s.errors += 1);
        return None;
    };
    if truncated {
        counters.bump(|s| s.truncated += 1);
    }
    Some(bytes)
}

/// Encodes `resp` in at most `limit` bytes, dropping every record and setting TC when the
/// whole answer does not fit. Returns the bytes and whether it was truncated.
pub(crate) fn encode_limited(resp: &Message, limit: usize) -> Option<(Vec<u8>, bool)> {
    let full = resp.to_vec().ok()?;
    if full.len() <= limit {
        return Some((full, false));
    }
    let short = resp.truncate().to_vec().ok()?;
    (short.len() <= limit).then_some((short, true))
}

/// The UDP size limit for answers to `req`.
fn udp_limit(req: &Message) -> usize {
    match &req.edns {
        Some(e) => usize::from(e.max_payload().clamp(512, EDNS_LIMIT)),
        None => UDP_LIMIT,
    }
}

/// A running `.internal` responder. Dropping it stops it (the sockets close once the tasks
/// are cancelled); [`DnsResponder::stop`] also waits for that.
#[derive(Debug)]
pub struct DnsResponder {
    addr: SocketAddr,
    counters: Arc<Counters>,
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl DnsResponder {
    /// Binds UDP and TCP on `addr` (e.g. `10.42.7.1:53`; port 0 picks one free port for both)
    /// and answers from `records` until stopped or dropped.
    pub async fn start(addr: SocketAddr, records: Records) -> Result<Self, DnsError> {
        let (udp, tcp, local) = bind_both(addr).await?;
        let counters = Arc::new(Counters::default());
        let udp = tokio::spawn(serve_udp(udp, records.clone(), counters.clone()));
        let tcp = tokio::spawn(serve_tcp(tcp, records, counters.clone()));
        Ok(Self {
            addr: local,
            counters,
            udp,
            tcp,
        })
    }

    /// The bound address (same port for UDP and TCP).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters so far.
    pub fn stats(&self) -> DnsStats {
        self.counters.snapshot()
    }

    /// Stops answering and waits until both sockets are closed.
    pub async fn stop(mut self) {
        self.udp.abort();
        self.tcp.abort();
        let _ = (&mut self.udp).await;
        let _ = (&mut self.tcp).await;
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.udp.abort();
        self.tcp.abort();
    }
}

/// Binds UDP then TCP on the same port; with port 0, retries when TCP finds the port taken.
async fn bind_both(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let err = |proto| {
        move |source| DnsError::Bind {
            proto,
            addr,
            source,
        }
    };
    let mut attempt = 0;
    loop {
        let udp = UdpSocket::bind(addr).await.map_err(err("udp"))?;
        let local = udp.local_addr().map_err(err("udp"))?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp, local)),
            Err(e) if addr.port() == 0 && attempt < 8 => {
                attempt += 1;
                tracing::debug!("dns: tcp port {} taken ({e}), trying another", local.port());
            }
            Err(source) => return Err(err("tcp")(source)),
        }
    }
}

async fn serve_udp(sock: UdpSocket, records: Records, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux; keep serving.
                tracing::debug!("dns: udp receive: {e}");
                continue;
            }
        };
        counters.bump(|s| s.udp_queries += 1);
        let Some(bytes) = answer(&buf[..n], Transport::Udp, &records, &counters) else {
            continue;
        };
        if let Err(e) = sock.send_to(&bytes, peer).await {
            tracing::debug!("dns: udp send to {peer}: {e}");
        }
    }
}

async fn serve_tcp(listener: TcpListener, records: Records, counters: Arc<Counters>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    // Dropping the set (when this task is aborted) aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("dns: tcp accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    counters.bump(|s| s.tcp_rejected += 1);
                    drop(stream);
                    continue;
                };
                let (records, counters) = (records.clone(), counters.clone());
                conns.spawn(async move {
                    serve_connection(stream, &records, &counters).await;
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Answers framed queries on one connection until the client closes it, a deadline passes,
/// or a message is malformed.
async fn serve_connection(mut stream: TcpStream, records: &Records, counters: &Counters) {
    let mut buf = Vec::new();
    loop {
        let read = async {
            let len = stream.read_u16().await?;
            buf.resize(usize::from(len), 0);
            stream.read_exact(&mut buf).await?;
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(TCP_TIMEOUT, read).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return, // closed or reset
            Err(_) => {
                counters.bump(|s| s.tcp_timeouts += 1);
                return;
            }
        }
        counters.bump(|s| s.tcp_queries += 1);
        let Some(bytes) = answer(&buf, Transport::Tcp, records, counters) else {
            return;
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return;
        };
        let write = async {
            stream.write_u16(len).await?;
            stream.write_all(&bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(TCP_TIMEOUT, write).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                counters.bump(|s| s.tcp_timeouts += 1);
                return;
            }
        }
    }
}

/// The `/etc/resolv.conf` a workload of the ensemble gets: the gateway's responder first,
/// the `internal` search domain so bare names resolve, then `fallback` nameservers that
/// resolvers try for names the responder REFUSES (outside `.internal`).
pub fn resolv_conf(gateway: Ipv4Addr, fallback: &[std::net::IpAddr]) -> String {
    let mut out =
        format!("# written by nunet: the ensemble's .internal responder\nnameserver {gateway}\n");
    for ns in fallback.iter().take(2) {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    // ndots:1 — `web` (no dot) tries `web.internal` first; `web.internal` is tried as is.
    out.push_str("search internal\noptions ndots:1 timeout:1 attempts:2\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn oversized_answers_are_truncated_with_tc() {
        let mut m = Message::response(7, OpCode::Query);
        let name = Name::from_ascii("many.internal.").unwrap();
        for i in 0..60u8 {
            m.add_answer(Record::from_rdata(
                name.clone(),
                DNS_TTL,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        let (bytes, truncated) = encode_limited(&m, 512).unwrap();
        assert!(truncated);
        assert!(bytes.len() <= 512);
        let back = Message::from_vec(&bytes).unwrap();
        assert!(back.truncation);
        assert!(back.answers.is_empty());
        assert_eq!(back.id, 7);
        let (bytes, truncated) = encode_limited(&m, 65535).unwrap();
        assert!(!truncated);
        assert_eq!(Message::from_vec(&bytes).unwrap().answers.len(), 60);
    }
}
