//! A node's side of transfers: the four behaviours, the tickets it hands to peers and the
//! sessions it hands to its CLI, and the stream server.
//!
//! * A ticket is minted by `read` or `write` after the actor layer admitted the call. It is
//!   bound to the calling node's peer id, so a stream from any other peer is refused; it
//!   names the entries it covers and what each may do (send this file from here, receive
//!   that file into there). It lapses [`TICKET_IDLE`] after its last use.
//! * A session is minted by `fetch` or `send` for the CLI and is only usable through the
//!   local API (loopback). The node opens one stream per file to the peer and pipes it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{AsyncWriteExt, Stream, StreamExt};
use libp2p::PeerId;
use nunet_actor::{ActorError, ActorSystem, ErrorKind, Handle, Incoming};
use nunet_network::Network;
use nunet_protocol::call;
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::area::Area;
use crate::calls::{
    FetchReply, FetchRequest, FilesFetch, FilesRead, FilesSend, FilesWrite, ReadReply, ReadRequest,
    SendReply, SendRequest, WriteReply, WriteRequest,
};
use crate::direct::{self, Channel, direct_ip};
use crate::manifest::{Kind, Manifest, build};
use crate::receive::{Receiver, make_dir, resume_offset, targets};
use crate::wire::{Header, Op, PROTOCOL, read_status, write_status};

/// A ticket or session unused this long is dropped.
pub const TICKET_IDLE: Duration = Duration::from_secs(600);
/// Most tickets held at once, and per peer.
pub const MAX_TICKETS: usize = 256;
/// Most tickets one peer may hold.
pub const MAX_TICKETS_PER_PEER: usize = 16;
/// Most CLI sessions at once.
pub const MAX_SESSIONS: usize = 64;
/// Most streams served at once.
pub const MAX_STREAMS: usize = 16;
/// Longest a stream may stay silent (header, data, status).
pub const STREAM_IDLE: Duration = Duration::from_secs(60);
/// How long a peer may take to list or check what it is asked for (hashing included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(900);
/// Bytes per read on a stream.
const BUF: usize = 256 << 10;

/// Why a transfer step failed (the local API maps these to HTTP statuses).
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// No such session (never made, or lapsed).
    #[error("no transfer session {0:?} (unknown, or unused for 10 minutes)")]
    NoSession(String),
    /// A request that does not fit the session.
    #[error("{0}")]
    Bad(String),
    /// The peer could not be reached or the stream broke.
    #[error("{0}")]
    Unreachable(String),
    /// The peer refused or failed.
    #[error("peer: {0}")]
    Peer(String),
}

#[derive(Clone)]
enum Item {
    Send {
        path: PathBuf,
        size: u64,
    },
    Receive {
        target: PathBuf,
        size: u64,
        blake3: String,
        mode: u32,
    },
}

struct Ticket {
    peer: PeerId,
    op: Op,
    items: Vec<Option<Item>>,
    touched: Instant,
}

struct Session {
    peer: PeerId,
    ticket: [u8; 32],
    op: Op,
    manifest: Manifest,
    touched: Instant,
}

struct Inner {
    system: ActorSystem,
    net: Network,
    area: Area,
    tickets: Mutex<HashMap<[u8; 32], Ticket>>,
    sessions: Mutex<HashMap<String, Session>>,
    slots: Arc<Semaphore>,
    /// Offer and take direct connections for file bytes.
    direct: bool,
    /// Peers whose offered direct connection could not be reached, and when: their bytes
    /// stay on the stream for [`DIRECT_RETRY`] (no connect timeout per file).
    no_direct: Mutex<HashMap<PeerId, Instant>>,
}

/// How long a peer whose direct connection failed keeps its bytes on the stream.
pub const DIRECT_RETRY: Duration = Duration::from_secs(600);

/// Transfers on this node (cheap to clone).
#[derive(Clone)]
pub struct Files(Arc<Inner>);

fn failed(e: impl std::fmt::Display) -> ActorError {
    ActorError::failed(e.to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

fn parse_peer(s: &str) -> Result<(PeerId, Handle), ActorError> {
    let to = Handle::parse(s).map_err(|e| failed(format!("peer {s:?}: {e}")))?;
    let peer = to
        .addr
        .host
        .parse()
        .map_err(|_| failed(format!("peer {s:?}: no peer id")))?;
    Ok((peer, to))
}

fn ticket_of(hex_ticket: &str) -> Result<[u8; 32], ActorError> {
    hex::decode(hex_ticket)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ActorError::new(ErrorKind::Rejected, "the peer sent a malformed ticket"))
}

impl Files {
    /// Transfers for `system` over `net`, sharing `area` with peers; `direct`: offer and
    /// take direct connections for file bytes ([`crate::direct`]). Registers the four
    /// behaviours on the root actor and starts the stream server (inside a tokio runtime).
    pub fn start(
        system: &ActorSystem,
        net: &Network,
        area: Area,
        direct: bool,
    ) -> Result<Self, ActorError> {
        let f = Files(Arc::new(Inner {
            system: system.clone(),
            net: net.clone(),
            area,
            tickets: Mutex::default(),
            sessions: Mutex::default(),
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
            direct,
            no_direct: Mutex::default(),
        }));
        call::register::<FilesRead, _, _, _>(system, "root", f.clone(), |f, m, req| async move {
            f.read(m, req).await
        })?;
        call::register::<FilesWrite, _, _, _>(system, "root", f.clone(), |f, m, req| async move {
            f.write(m, req).await
        })?;
        call::register::<FilesFetch, _, _, _>(
            system,
            "root",
            f.clone(),
            |f, _m, req| async move { f.fetch(req).await },
        )?;
        call::register::<FilesSend, _, _, _>(system, "root", f.clone(), |f, _m, req| async move {
            f.send(req).await
        })?;
        let mut incoming = net
            .streams()
            .accept(PROTOCOL)
            .map_err(|e| failed(format!("cannot serve {PROTOCOL}: {e}")))?;
        let server = f.clone();
        tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let s = server.clone();
                match s.0.slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            s.serve(peer, stream).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(async move {
                            let mut stream = stream;
                            let _ = write_status(
                                &mut stream,
                                Err("busy: too many transfers at once; try again"),
                            )
                            .await;
                        });
                    }
                }
            }
        });
        Ok(f)
    }

    fn mint(&self, peer: PeerId, op: Op, items: Vec<Option<Item>>) -> Result<String, ActorError> {
        let mut t = lock(&self.0.tickets);
        t.retain(|_, v| v.touched.elapsed() < TICKET_IDLE);
        if t.len() >= MAX_TICKETS
            || t.values().filter(|v| v.peer == peer).count() >= MAX_TICKETS_PER_PEER
        {
            return Err(failed(
                "too many transfers open on this node; finish some or wait 10 minutes",
            ));
        }
        let id = random32();
        t.insert(
            id,
            Ticket {
                peer,
                op,
                items,
                touched: Instant::now(),
            },
        );
        Ok(hex::encode(id))
    }

    /// The calling node's peer id (tickets are for nodes).
    fn caller(m: &Incoming) -> Result<PeerId, ActorError> {
        m.sender.peer_id().map_err(|_| {
            failed("transfers are opened by nodes (ed25519 DIDs); ask through your own node")
        })
    }

    async fn read(&self, m: Incoming, req: ReadRequest) -> Result<ReadReply, ActorError> {
        let peer = Self::caller(&m)?;
        let area = self.0.area.clone();
        let (src, manifest) = tokio::task::spawn_blocking(move || {
            let src = area.source(&req.path).map_err(failed)?;
            let manifest = build(&src, &mut |_| {}).map_err(failed)?;
            Ok::<_, ActorError>((src, manifest))
        })
        .await
        .map_err(failed)??;
        let items = manifest
            .entries
            .iter()
            .map(|e| {
                (e.kind == Kind::File).then(|| Item::Send {
                    path: match e.path.split_once('/') {
                        Some((_, rest)) => src.join(rest),
                        None => src.clone(),
                    },
                    size: e.size,
                })
            })
            .collect();
        let ticket = self.mint(peer, Op::Read, items)?;
        tracing::info!(%peer, source = %src.display(), files = manifest.files(), bytes = manifest.bytes(), "files: a peer reads");
        Ok(ReadReply {
            ticket,
            manifest,
            source: src.display().to_string(),
        })
    }

    async fn write(&self, m: Incoming, req: WriteRequest) -> Result<WriteReply, ActorError> {
        let peer = Self::caller(&m)?;
        req.manifest.check().map_err(failed)?;
        let area = self.0.area.clone();
        let manifest = req.manifest;
        let (items, offsets, target) = tokio::task::spawn_blocking(move || {
            let dest = area.destination(&req.path).map_err(failed)?;
            let places = targets(&dest, &manifest).map_err(failed)?;
            let mut items = Vec::with_capacity(places.len());
            let mut offsets = Vec::with_capacity(places.len());
            let mut need = 0u64;
            for (e, at) in manifest.entries.iter().zip(&places) {
                match (e.kind, &e.blake3) {
                    (Kind::Dir, _) => {
                        make_dir(at, e.mode).map_err(failed)?;
                        items.push(None);
                        offsets.push(None);
                    }
                    (Kind::File, Some(sha)) => {
                        let off = resume_offset(at, e.size, sha).map_err(failed)?;
                        need += off.map_or(0, |o| e.size - o);
                        offsets.push(off);
                        items.push(Some(Item::Receive {
                            target: at.clone(),
                            size: e.size,
                            blake3: sha.clone(),
                            mode: e.mode,
                        }));
                    }
                    (Kind::File, None) => return Err(failed("a file without a digest")),
                }
            }
            let top = places.first().cloned().unwrap_or_default();
            let dir = top.parent().unwrap_or(&top).to_path_buf();
            let free = nix::sys::statvfs::statvfs(&dir)
                .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
                .map_err(|e| failed(format!("{}: {e}", dir.display())))?;
            if need > free {
                return Err(failed(format!(
                    "{}: {need} bytes to write, {free} available on that filesystem",
                    dir.display()
                )));
            }
            Ok::<_, ActorError>((items, offsets, top))
        })
        .await
        .map_err(failed)??;
        let ticket = self.mint(peer, Op::Write, items)?;
        tracing::info!(%peer, target = %target.display(), "files: a peer writes");
        Ok(WriteReply {
            ticket,
            offsets,
            target: target.display().to_string(),
        })
    }

    fn open_session(
        &self,
        peer: PeerId,
        ticket: [u8; 32],
        op: Op,
        manifest: Manifest,
    ) -> Result<String, ActorError> {
        let mut s = lock(&self.0.sessions);
        s.retain(|_, v| v.touched.elapsed() < TICKET_IDLE);
        if s.len() >= MAX_SESSIONS {
            return Err(failed("too many copies in progress on this node"));
        }
        let id = hex::encode(random32());
        s.insert(
            id.clone(),
            Session {
                peer,
                ticket,
                op,
                manifest,
                touched: Instant::now(),
            },
        );
        Ok(id)
    }

    async fn fetch(&self, req: FetchRequest) -> Result<FetchReply, ActorError> {
        let (peer, to) = parse_peer(&req.peer)?;
        let r = call::invoke::<FilesRead>(
            &self.0.system,
            "root",
            to,
            &ReadRequest { path: req.path },
            CALL_TIMEOUT,
        )
        .await?;
        r.manifest.check().map_err(|e| {
            ActorError::new(ErrorKind::Rejected, format!("the peer's manifest: {e}"))
        })?;
        let session =
            self.open_session(peer, ticket_of(&r.ticket)?, Op::Read, r.manifest.clone())?;
        Ok(FetchReply {
            session,
            manifest: r.manifest,
            source: r.source,
        })
    }

    async fn send(&self, req: SendRequest) -> Result<SendReply, ActorError> {
        req.manifest.check().map_err(failed)?;
        let (peer, to) = parse_peer(&req.peer)?;
        let w = call::invoke::<FilesWrite>(
            &self.0.system,
            "root",
            to,
            &WriteRequest {
                path: req.path,
                manifest: req.manifest.clone(),
            },
            CALL_TIMEOUT,
        )
        .await?;
        if w.offsets.len() != req.manifest.entries.len() {
            return Err(ActorError::new(
                ErrorKind::Rejected,
                "the peer's offsets do not match the manifest",
            ));
        }
        let session = self.open_session(peer, ticket_of(&w.ticket)?, Op::Write, req.manifest)?;
        Ok(SendReply {
            session,
            offsets: w.offsets,
            target: w.target,
        })
    }

    /// Opens the stream for file `index` of `session` at `offset` (with a direct connection
    /// beside it when the peer is reached directly and offers one); returns the channel with
    /// the bytes left to move.
    async fn open(
        &self,
        session: &str,
        index: u32,
        offset: u64,
        op: Op,
    ) -> Result<(Channel, u64), FilesError> {
        let (peer, ticket, size) = {
            let mut s = lock(&self.0.sessions);
            let sess = s
                .get_mut(session)
                .filter(|v| v.touched.elapsed() < TICKET_IDLE)
                .ok_or_else(|| FilesError::NoSession(session.chars().take(80).collect()))?;
            if sess.op != op {
                return Err(FilesError::Bad(match op {
                    Op::Read => "this session sends files; PUT them".into(),
                    Op::Write => "this session fetches files; GET them".into(),
                }));
            }
            let e = sess
                .manifest
                .entries
                .get(index as usize)
                .filter(|e| e.kind == Kind::File)
                .ok_or_else(|| {
                    FilesError::Bad(format!("entry {index} is not a file of this transfer"))
                })?;
            if offset > e.size {
                return Err(FilesError::Bad(format!(
                    "offset {offset} is past the end ({} bytes)",
                    e.size
                )));
            }
            sess.touched = Instant::now();
            (sess.peer, sess.ticket, e.size)
        };
        let mut stream = tokio::time::timeout(STREAM_IDLE, self.0.net.open_stream(peer, PROTOCOL))
            .await
            .map_err(|_| {
                FilesError::Unreachable(format!("no stream to {peer} within {STREAM_IDLE:?}"))
            })?
            .map_err(|e| FilesError::Unreachable(format!("cannot open a stream to {peer}: {e}")))?;
        let recently_failed = lock(&self.0.no_direct)
            .get(&peer)
            .is_some_and(|t| t.elapsed() < DIRECT_RETRY);
        let ip = if self.0.direct && !recently_failed {
            self.0
                .net
                .peers()
                .await
                .into_iter()
                .find(|p| p.peer_id == peer && !p.relayed)
                .and_then(|p| direct_ip(&p.addrs))
        } else {
            None
        };
        let header = Header {
            op,
            ticket,
            index,
            offset,
            direct: ip.is_some(),
        };
        let go = async {
            stream.write_all(&header.encode()).await?;
            stream.flush().await?;
            let status = read_status(&mut stream)
                .await
                .map_err(std::io::Error::other)?;
            let direct = match (&status, ip) {
                (Ok(()), Some(ip)) => match direct::take(&mut stream, ip).await? {
                    direct::Taken::Direct(d) => Some(d),
                    direct::Taken::NotOffered => None,
                    direct::Taken::Unreachable => {
                        lock(&self.0.no_direct).insert(peer, Instant::now());
                        None
                    }
                },
                _ => None,
            };
            Ok::<_, std::io::Error>((status, direct))
        };
        match tokio::time::timeout(STREAM_IDLE, go).await {
            Err(_) => Err(FilesError::Unreachable(format!(
                "{peer} did not answer within {STREAM_IDLE:?}"
            ))),
            Ok(Err(e)) => Err(FilesError::Unreachable(format!("stream to {peer}: {e}"))),
            Ok(Ok((Err(reason), _))) => Err(FilesError::Peer(reason)),
            Ok(Ok((Ok(()), Some(d)))) => Ok((Channel::Direct(d, stream), size - offset)),
            Ok(Ok((Ok(()), None))) => Ok((Channel::Stream(stream), size - offset)),
        }
    }

    /// The bytes of file `index` of a fetch `session` from `offset` on, as they arrive from
    /// the peer, and how many there will be. The stream ends with an error if the peer stops
    /// early.
    pub async fn pull(
        &self,
        session: &str,
        index: u32,
        offset: u64,
    ) -> Result<
        (
            u64,
            bool,
            impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
        ),
        FilesError,
    > {
        let (channel, len) = self.open(session, index, offset, Op::Read).await?;
        let direct = channel.is_direct();
        let body = futures::stream::unfold((channel, len), |(mut c, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = Vec::new();
            let read = tokio::time::timeout(STREAM_IDLE, c.read_into(&mut buf, BUF)).await;
            match read {
                Ok(Ok(0)) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the peer stopped with {left} bytes to go"),
                    )),
                    (c, 0),
                )),
                Ok(Ok(n)) if n as u64 > left => Some((
                    Err(std::io::Error::other("the peer sent more than the file")),
                    (c, 0),
                )),
                Ok(Ok(n)) => Some((Ok(Bytes::from(buf)), (c, left - n as u64))),
                Ok(Err(e)) => Some((Err(e), (c, 0))),
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer went silent",
                    )),
                    (c, 0),
                )),
            }
        });
        Ok((len, direct, body))
    }

    /// Sends `body` as file `index` of a send `session` from `offset` on and waits for the
    /// peer to check and place it; whether the bytes took a direct connection.
    pub async fn push<E: std::fmt::Display>(
        &self,
        session: &str,
        index: u32,
        offset: u64,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<bool, FilesError> {
        let (mut channel, len) = self.open(session, index, offset, Op::Write).await?;
        let direct = channel.is_direct();
        let mut body = std::pin::pin!(body);
        let mut sent = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| FilesError::Bad(format!("reading the upload: {e}")))?;
            sent += chunk.len() as u64;
            if sent > len {
                return Err(FilesError::Bad(format!(
                    "more than the {len} bytes left of this file"
                )));
            }
            tokio::time::timeout(STREAM_IDLE, channel.write_all(&chunk))
                .await
                .map_err(|_| FilesError::Unreachable("the peer stopped taking data".into()))?
                .map_err(|e| FilesError::Unreachable(format!("stream: {e}")))?;
        }
        if sent != len {
            return Err(FilesError::Bad(format!(
                "the upload ended after {sent} of {len} bytes"
            )));
        }
        let fin = async {
            channel.end().await?;
            read_status(channel.control())
                .await
                .map_err(std::io::Error::other)
        };
        match tokio::time::timeout(CALL_TIMEOUT, fin).await {
            Err(_) => Err(FilesError::Unreachable(
                "the peer did not confirm the file".into(),
            )),
            Ok(Err(e)) => Err(FilesError::Unreachable(format!("stream: {e}"))),
            Ok(Ok(Err(reason))) => Err(FilesError::Peer(reason)),
            Ok(Ok(Ok(()))) => Ok(direct),
        }
    }

    /// The item a stream from `peer` asks for, or why not.
    fn item(&self, peer: PeerId, h: &Header) -> Result<Item, String> {
        let mut t = lock(&self.0.tickets);
        let ticket = t
            .get_mut(&h.ticket)
            .filter(|v| v.peer == peer && v.touched.elapsed() < TICKET_IDLE)
            .ok_or("unknown or expired ticket")?;
        if ticket.op != h.op {
            return Err("this ticket is for the other direction".into());
        }
        ticket.touched = Instant::now();
        ticket
            .items
            .get(h.index as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("entry {} is not a file of this transfer", h.index))
    }

    async fn serve(&self, peer: PeerId, mut stream: libp2p::Stream) {
        let header = match tokio::time::timeout(STREAM_IDLE, Header::read_from(&mut stream)).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                let _ = write_status(&mut stream, Err(&e.to_string())).await;
                return;
            }
            Err(_) => return,
        };
        let item = match self.item(peer, &header) {
            Ok(i) => i,
            Err(why) => {
                tracing::warn!(%peer, "files: stream refused: {why}");
                let _ = write_status(&mut stream, Err(&why)).await;
                return;
            }
        };
        let direct = match (header.direct, self.0.direct) {
            (false, _) => Offer::NotAsked,
            (true, true) => Offer::Make,
            (true, false) => Offer::Decline,
        };
        let r = match item {
            Item::Send { path, size } => {
                serve_read(stream, path, size, header.offset, direct).await
            }
            Item::Receive {
                target,
                size,
                blake3,
                mode,
            } => serve_write(stream, target, (size, blake3, mode), header.offset, direct).await,
        };
        if let Err(e) = r {
            tracing::warn!(%peer, "files: transfer stream ended: {e}");
        }
    }
}

/// Whether to offer a direct connection on a stream.
#[derive(Clone, Copy)]
enum Offer {
    /// The opener did not ask for one.
    NotAsked,
    /// It asked, and this node offers.
    Make,
    /// It asked, and this node keeps the bytes on the stream (`files.direct` off).
    Decline,
}

/// After an OK status: the channel the bytes take (a direct connection when the opener asked
/// for one, this node offers it and the opener got through).
async fn channel(mut stream: libp2p::Stream, offer: Offer) -> Result<Channel, String> {
    let offered = match offer {
        Offer::NotAsked => return Ok(Channel::Stream(stream)),
        Offer::Decline => {
            let said = async {
                stream.write_all(&[0]).await?;
                stream.flush().await
            };
            said.await.map_err(|e| format!("stream: {e}"))?;
            return Ok(Channel::Stream(stream));
        }
        Offer::Make => tokio::time::timeout(STREAM_IDLE, direct::offer(&mut stream)).await,
    };
    match offered {
        Ok(Ok(Some(d))) => Ok(Channel::Direct(Box::new(d), stream)),
        Ok(Ok(None)) => Ok(Channel::Stream(stream)),
        Ok(Err(e)) => Err(format!("direct channel: {e}")),
        Err(_) => Err("direct channel: no answer".into()),
    }
}

async fn serve_read(
    mut stream: libp2p::Stream,
    path: PathBuf,
    size: u64,
    offset: u64,
    direct: Offer,
) -> Result<(), String> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt};
    let opened = async {
        let mut f = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .await?;
        let len = f.metadata().await?.len();
        if len != size {
            return Err(std::io::Error::other(format!(
                "{} changed since it was listed ({len} bytes, not {size})",
                path.display()
            )));
        }
        if offset > size {
            return Err(std::io::Error::other(format!(
                "offset {offset} is past the end"
            )));
        }
        f.seek(std::io::SeekFrom::Start(offset)).await?;
        Ok(f)
    };
    let mut f = match opened.await {
        Ok(f) => f,
        Err(e) => {
            let why = e.to_string();
            let _ = write_status(&mut stream, Err(&why)).await;
            return Err(why);
        }
    };
    write_status(&mut stream, Ok(()))
        .await
        .map_err(|e| e.to_string())?;
    let mut channel = channel(stream, direct).await?;
    let mut left = size - offset;
    let mut buf = vec![0u8; direct::FRAME];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{} shrank while being sent", path.display()));
        }
        tokio::time::timeout(STREAM_IDLE, channel.write_all(&buf[..n]))
            .await
            .map_err(|_| "the peer stopped reading".to_string())?
            .map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    channel.end().await.map_err(|e| e.to_string())?;
    if channel.is_direct() {
        let _ = channel.control().close().await;
    }
    Ok(())
}

async fn serve_write(
    mut stream: libp2p::Stream,
    target: PathBuf,
    (size, blake3, mode): (u64, String, u32),
    offset: u64,
    direct: Offer,
) -> Result<(), String> {
    let t = target.clone();
    let opened =
        tokio::task::spawn_blocking(move || Receiver::open(&t, size, &blake3, mode, offset))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
    let mut rx = match opened {
        Ok(r) => r,
        Err(why) => {
            let _ = write_status(&mut stream, Err(&why)).await;
            return Err(why);
        }
    };
    write_status(&mut stream, Ok(()))
        .await
        .map_err(|e| e.to_string())?;
    let mut channel = channel(stream, direct).await?;
    // The disk work runs on a blocking thread fed through a short queue, so hashing and
    // writing overlap with reading. Buffers go back to the reader once written, so none is
    // allocated per read.
    const QUEUE: usize = 8;
    let (tx, mut chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE);
    let (give_back, mut spare) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE + 1);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some(c) = chunks.blocking_recv() {
            rx.write(&c)?;
            let _ = give_back.try_send(c);
        }
        Ok::<_, crate::receive::ReceiveError>(rx)
    });
    let mut read_err = None;
    loop {
        let mut buf = spare.try_recv().unwrap_or_default();
        match tokio::time::timeout(STREAM_IDLE, channel.read_into(&mut buf, BUF)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(_)) => {
                if tx.send(buf).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Ok(Err(e)) => {
                read_err = Some(e.to_string());
                break;
            }
            Err(_) => {
                read_err = Some("the sender went silent".into());
                break;
            }
        }
    }
    drop(tx);
    let rx = writer.await.map_err(|e| e.to_string())?;
    let result = match (rx, read_err) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(_), Some(e)) => Err(format!(
            "{}: interrupted ({e}); the partial file is kept",
            target.display()
        )),
        (Ok(rx), None) => tokio::task::spawn_blocking(move || rx.finish())
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
    };
    let status = match &result {
        Ok(()) => Ok(()),
        Err(e) => Err(e.as_str()),
    };
    let stream = channel.control();
    let _ = write_status(stream, status).await;
    let _ = stream.close().await;
    result
}
