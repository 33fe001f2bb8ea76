//! NuNet's Go nodes name their actor protocols without a leading slash
//! (`actor/<inbox>/messages/0.0.1`). rust-libp2p's multistream-select refuses such names on
//! both sides of a negotiation, so this module translates them on every substream of every
//! connection, below the swarm:
//!
//! - the remote proposes `actor/…` → the swarm sees `/actor/…`, and our echo goes back
//!   without the slash;
//! - the swarm proposes `/actor/…/messages/0.0.1` → the remote sees `actor/…`, and its echo
//!   comes back with the slash.
//!
//! Only the first protocol line of each direction is looked at; after it (or at anything
//! that is not a well-formed multistream message) the substream is passed through untouched,
//! so every other protocol, and every byte after negotiation, is unchanged. A second proposal
//! after a refusal (`na`) is not translated: Go's `SelectOneOf` with one protocol never
//! sends one.
//!
//! One exception to "untouched": the identify message this node sends (`/ipfs/id/1.0.0`
//! answers, `/ipfs/id/push/1.0.0` pushes) also lists each `/actor/…/messages/0.0.1` protocol
//! without its slash, because a NuNet node decides from that list whether a peer is a DMS
//! node (`includesRootProtocol` in `dms/node/network.go`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::{AsyncRead, AsyncWrite, FutureExt, TryFutureExt};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p::core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

/// The multistream-select header line.
const HEADER: &[u8] = b"/multistream/1.0.0\n";
/// Longest multistream message (two varint length bytes).
const MAX_MESSAGE: usize = 16383;
/// Most bytes buffered while a direction negotiates before giving up on translating it.
const MAX_NEGOTIATION_BYTES: usize = 2 * (MAX_MESSAGE + 2);

/// Whether `name` (without the newline) is one of NuNet's slash-less actor protocols.
pub fn is_legacy_actor_id(name: &[u8]) -> bool {
    name.starts_with(b"actor/") && name.ends_with(b"/messages/0.0.1") && name.len() > 21
}

/// The name this swarm uses for NuNet's `id`: the same with a leading slash.
pub fn local_name(legacy: &str) -> String {
    format!("/{legacy}")
}

/// Wraps a stream muxer so that each substream translates NuNet's protocol names.
pub struct LegacyIds<M> {
    inner: M,
}

impl<M> LegacyIds<M> {
    /// Wraps `inner`.
    pub fn new(inner: M) -> Self {
        Self { inner }
    }
}

impl<M> StreamMuxer for LegacyIds<M>
where
    M: StreamMuxer + Unpin,
    M::Substream: Unpin,
{
    type Substream = Translated<M::Substream>;
    type Error = M::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_inbound(cx)
            .map_ok(|s| Translated::new(s, Side::Listener))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_outbound(cx)
            .map_ok(|s| Translated::new(s, Side::Dialer))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

/// A multiplexer upgrade (yamux) whose muxers translate: pass it where the swarm builder
/// takes a multiplexer.
#[derive(Clone)]
pub struct LegacyMux<U>(pub U);

impl<U: UpgradeInfo> UpgradeInfo for LegacyMux<U> {
    type Info = U::Info;
    type InfoIter = U::InfoIter;

    fn protocol_info(&self) -> Self::InfoIter {
        self.0.protocol_info()
    }
}

impl<C, U, M> InboundConnectionUpgrade<C> for LegacyMux<U>
where
    U: InboundConnectionUpgrade<C, Output = M>,
    U::Future: Send + 'static,
    U::Error: 'static,
    M: 'static,
{
    type Output = LegacyIds<M>;
    type Error = U::Error;
    type Future = BoxFuture<'static, Result<LegacyIds<M>, U::Error>>;

    fn upgrade_inbound(self, socket: C, info: Self::Info) -> Self::Future {
        self.0
            .upgrade_inbound(socket, info)
            .map_ok(LegacyIds::new)
            .boxed()
    }
}

impl<C, U, M> OutboundConnectionUpgrade<C> for LegacyMux<U>
where
    U: OutboundConnectionUpgrade<C, Output = M>,
    U::Future: Send + 'static,
    U::Error: 'static,
    M: 'static,
{
    type Output = LegacyIds<M>;
    type Error = U::Error;
    type Future = BoxFuture<'static, Result<LegacyIds<M>, U::Error>>;

    fn upgrade_outbound(self, socket: C, info: Self::Info) -> Self::Future {
        self.0
            .upgrade_outbound(socket, info)
            .map_ok(LegacyIds::new)
            .boxed()
    }
}

/// Which end of the negotiation this node is on a substream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The remote opened the substream and proposes.
    Listener,
    /// This node opened it and proposes.
    Dialer,
}

/// One direction's parser: counts multistream messages until the first protocol line.
#[derive(Default)]
struct Direction {
    /// Bytes not yet split into messages.
    pending: Vec<u8>,
    /// Messages seen (the header is the first).
    seen: usize,
    /// Past negotiation: bytes flow untouched.
    through: bool,
}

enum Parsed {
    /// A complete message (without its length prefix, with its newline) and its size on the wire.
    Message(Vec<u8>, usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a multistream message: stop translating.
    Garbage,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut len = 0usize;
    for (i, b) in buf.iter().enumerate().take(2) {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = i + 1;
            if len == 0 || len > MAX_MESSAGE {
                return Parsed::Garbage;
            }
            return match buf.get(start..start + len) {
                Some(m) if m.ends_with(b"\n") => Parsed::Message(m.to_vec(), start + len),
                Some(_) => Parsed::Garbage,
                None => Parsed::Incomplete,
            };
        }
    }
    if buf.len() >= 2 {
        Parsed::Garbage
    } else {
        Parsed::Incomplete
    }
}

fn encode(msg: &[u8], out: &mut Vec<u8>) {
    let len = msg.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        out.push((len & 0x7f) as u8 | 0x80);
        out.push((len >> 7) as u8);
    }
    out.extend_from_slice(msg);
}

/// The slash-less form of a local name, if it is one of NuNet's actor ids.
fn strip(msg: &[u8]) -> Option<Vec<u8>> {
    let body = msg.strip_suffix(b"\n")?.strip_prefix(b"/")?;
    is_legacy_actor_id(body).then(|| [body, b"\n"].concat())
}

/// The slashed form of a legacy id (when it still fits in a multistream message).
fn add_slash(msg: &[u8]) -> Option<Vec<u8>> {
    let body = msg.strip_suffix(b"\n")?;
    (is_legacy_actor_id(body) && msg.len() < MAX_MESSAGE).then(|| [b"/", msg].concat())
}

/// A substream whose negotiation is translated.
pub struct Translated<S> {
    inner: S,
    side: Side,
    read: Direction,
    write: Direction,
    /// Translated bytes the reader has not taken yet.
    read_out: Vec<u8>,
    read_pos: usize,
    /// Translated bytes not yet written to `inner`.
    write_out: Vec<u8>,
    /// The line (with newline) whose echo must be translated back, once one was translated.
    expect_echo: Option<Vec<u8>>,
    read_eof: bool,
    /// After negotiation, the identify message this node writes, gathered to be amended.
    identify: Option<Vec<u8>>,
}

const IDENTIFY: &[u8] = b"/ipfs/id/1.0.0\n";
const IDENTIFY_PUSH: &[u8] = b"/ipfs/id/push/1.0.0\n";
/// Largest identify message once amended: rust-libp2p refuses more than 4 KiB, so a message
/// the names would push past that goes out as it was.
const MAX_IDENTIFY: usize = 4096;
/// Protobuf tag of `Identify.protocols` (field 3, length-delimited).
const PROTOCOLS_TAG: u8 = 0x1a;

fn read_varint(b: &[u8]) -> Option<(usize, usize)> {
    let mut v = 0usize;
    for (i, byte) in b.iter().enumerate().take(9) {
        v |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn put_varint(mut v: usize, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Outcome of looking at the gathered identify bytes.
enum Amend {
    /// Not all of the message yet.
    More,
    /// The bytes to send instead (the amended message and whatever followed it).
    Done(Vec<u8>),
}

/// An identify message (unsigned-varint length, protobuf) with a slash-less copy of each
/// NuNet actor protocol added to `protocols`. Anything it cannot read is sent as it is.
fn amend_identify(buf: &[u8]) -> Amend {
    let Some((len, prefix)) = read_varint(buf) else {
        return if buf.len() < 9 {
            Amend::More
        } else {
            Amend::Done(buf.to_vec())
        };
    };
    if len > MAX_IDENTIFY {
        return Amend::Done(buf.to_vec());
    }
    let Some(msg) = buf.get(prefix..prefix + len) else {
        return Amend::More;
    };
    let rest = &buf[prefix + len..];
    let mut extra = Vec::new();
    let mut at = 0;
    while at < msg.len() {
        let Some((tag, n)) = read_varint(&msg[at..]) else {
            return Amend::Done(buf.to_vec());
        };
        at += n;
        let skip = match tag & 7 {
            0 => match read_varint(&msg[at..]) {
                Some((_, n)) => n,
                None => return Amend::Done(buf.to_vec()),
            },
            1 => 8,
            5 => 4,
            2 => {
                let Some((l, n)) = read_varint(&msg[at..]) else {
                    return Amend::Done(buf.to_vec());
                };
                if tag == usize::from(PROTOCOLS_TAG)
                    && let Some(name) = msg.get(at + n..at + n + l)
                    && let Some(bare) = name.strip_prefix(b"/")
                    && is_legacy_actor_id(bare)
                {
                    extra.push(PROTOCOLS_TAG);
                    put_varint(bare.len(), &mut extra);
                    extra.extend_from_slice(bare);
                }
                n + l
            }
            _ => return Amend::Done(buf.to_vec()),
        };
        at += skip;
    }
    if at != msg.len() || msg.len() + extra.len() > MAX_IDENTIFY {
        return Amend::Done(buf.to_vec());
    }
    let mut out = Vec::with_capacity(buf.len() + extra.len() + 2);
    put_varint(msg.len() + extra.len(), &mut out);
    out.extend_from_slice(msg);
    out.extend_from_slice(&extra);
    out.extend_from_slice(rest);
    Amend::Done(out)
}

impl<S> Translated<S> {
    /// Wraps a freshly opened substream.
    pub fn new(inner: S, side: Side) -> Self {
        Self {
            inner,
            side,
            read: Direction::default(),
            write: Direction::default(),
            read_out: Vec::new(),
            read_pos: 0,
            write_out: Vec::new(),
            expect_echo: None,
            read_eof: false,
            identify: None,
        }
    }

    /// Splits the read buffer into messages, translating the first protocol line.
    fn process_read(&mut self) {
        while !self.read.through {
            match parse(&self.read.pending) {
                Parsed::Incomplete if self.read.pending.len() <= MAX_NEGOTIATION_BYTES => return,
                Parsed::Incomplete | Parsed::Garbage => self.read.through = true,
                Parsed::Message(msg, used) => {
                    self.read.pending.drain(..used);
                    self.read.seen += 1;
                    if msg == HEADER {
                        encode(&msg, &mut self.read_out);
                        continue;
                    }
                    let out = match self.side {
                        // The remote's proposal: NuNet's name gains its slash, and our echo
                        // will lose it.
                        Side::Listener => add_slash(&msg).inspect(|slashed| {
                            self.expect_echo = Some(slashed.clone());
                        }),
                        // The remote's echo of what we proposed without the slash.
                        Side::Dialer => self
                            .expect_echo
                            .as_ref()
                            .filter(|e| strip(e).as_deref() == Some(&msg[..]))
                            .cloned(),
                    };
                    encode(out.as_deref().unwrap_or(&msg), &mut self.read_out);
                    self.read.through = true;
                }
            }
        }
        // Past negotiation: whatever followed in the same read goes out untouched.
        let rest = std::mem::take(&mut self.read.pending);
        self.read_out.extend_from_slice(&rest);
    }

    /// Splits written bytes into messages, translating the first protocol line.
    fn process_write(&mut self) {
        while !self.write.through {
            match parse(&self.write.pending) {
                Parsed::Incomplete if self.write.pending.len() <= MAX_NEGOTIATION_BYTES => return,
                Parsed::Incomplete | Parsed::Garbage => self.write.through = true,
                Parsed::Message(msg, used) => {
                    self.write.pending.drain(..used);
                    self.write.seen += 1;
                    if msg == HEADER {
                        encode(&msg, &mut self.write_out);
                        continue;
                    }
                    // The identify message that follows (our answer, or our push) is amended.
                    let identifies = match self.side {
                        Side::Listener => msg == IDENTIFY,
                        Side::Dialer => msg == IDENTIFY_PUSH,
                    };
                    if identifies {
                        self.identify = Some(Vec::new());
                    }
                    let out = match self.side {
                        // Our proposal of a NuNet actor protocol: sent without the slash.
                        Side::Dialer => strip(&msg).inspect(|_| {
                            self.expect_echo = Some(msg.clone());
                        }),
                        // Our echo of a proposal that was translated on the way in.
                        Side::Listener => self
                            .expect_echo
                            .as_ref()
                            .filter(|e| **e == msg)
                            .and_then(|e| strip(e)),
                    };
                    encode(out.as_deref().unwrap_or(&msg), &mut self.write_out);
                    self.write.through = true;
                }
            }
        }
        let rest = std::mem::take(&mut self.write.pending);
        self.after_negotiation(&rest);
    }

    /// Bytes written after negotiation: out as they are, except an identify message.
    fn after_negotiation(&mut self, bytes: &[u8]) {
        let Some(mut gathered) = self.identify.take() else {
            self.write_out.extend_from_slice(bytes);
            return;
        };
        gathered.extend_from_slice(bytes);
        match amend_identify(&gathered) {
            Amend::More => self.identify = Some(gathered),
            Amend::Done(out) => self.write_out.extend_from_slice(&out),
        }
    }

    /// Sends an identify message still being gathered as it is (the writer flushed or
    /// closed before all of it came).
    fn give_up_identify(&mut self) {
        if self.identify.as_ref().is_some_and(|g| !g.is_empty())
            && let Some(g) = self.identify.take()
        {
            self.write_out.extend_from_slice(&g);
        }
    }
}

impl<S: AsyncWrite + Unpin> Translated<S> {
    /// Writes out what translation has queued.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.write_out.is_empty() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.write_out) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.write_out.drain(..n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Translated<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if this.read_pos < this.read_out.len() {
                let n = buf.len().min(this.read_out.len() - this.read_pos);
                buf[..n].copy_from_slice(&this.read_out[this.read_pos..this.read_pos + n]);
                this.read_pos += n;
                if this.read_pos == this.read_out.len() {
                    this.read_out.clear();
                    this.read_pos = 0;
                }
                return Poll::Ready(Ok(n));
            }
            if this.read.through || this.read_eof {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 1024];
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => {
                    // End of stream mid-negotiation: hand over what there is.
                    this.read_eof = true;
                    this.read.through = true;
                    this.process_read();
                }
                Poll::Ready(Ok(n)) => {
                    this.read.pending.extend_from_slice(&chunk[..n]);
                    this.process_read();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Translated<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        if this.write.through && this.identify.is_some() {
            this.after_negotiation(buf);
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.write.through {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        // Negotiating: take the bytes, translate whole messages, and start writing them.
        this.write.pending.extend_from_slice(buf);
        this.process_write();
        let _ = this.drain(cx)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write.through {
            // A flush asks for everything written so far to leave.
            this.give_up_identify();
        }
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write.through {
            // Closing mid-negotiation: send what was written as it was.
            this.write.through = true;
            this.process_write();
        }
        this.give_up_identify();
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_close(cx)
    }
}
