//! A node's side of transfers: the four behaviours, the tickets it hands to peers and the
//! sessions it hands to its CLI, and the opener's side of each file's stream (the server's
//! is [`crate::server`]).
//!
//! * A ticket is minted by `read` or `write` after the actor layer admitted the call. It is
//!   bound to the calling node's peer id, so a stream from any other peer is refused; it
//!   names the entries it covers and what each may do (send this file from here, receive
//!   that file into there). Tickets and sessions are leases (`leases.rs`): kept while
//!   streams use them, dropped 10 minutes after their last use.
//! * A session is minted by `fetch` or `send` for the CLI and is only usable through the
//!   local API (loopback). The node opens one stream per file to the peer and pipes it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
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

use crate::area::Area;
use crate::calls::{
    FetchReply, FetchRequest, FilesFetch, FilesRead, FilesSend, FilesWrite, ReadReply, ReadRequest,
    SendReply, SendRequest, WriteReply, WriteRequest,
};
use crate::direct::{self, Channel};
use crate::leases::{InUse, Leases};
use crate::manifest::{Kind, Manifest, build, source_path};
use crate::receive::{make_dirs, plan, targets};
use crate::server::{BUF, STREAM_IDLE};
use crate::wire::{Header, Op, PROTOCOL, read_status};
use nunet_network::slots::Slots;

/// Most tickets held at once.
pub const MAX_TICKETS: usize = 256;
/// Most tickets one peer may hold (its least recently used idle one makes room).
pub const MAX_TICKETS_PER_PEER: usize = 16;
/// Most CLI sessions at once.
pub const MAX_SESSIONS: usize = 64;
/// How long a peer may take to list or check what it is asked for (hashing included), and
/// to check and place a file it received: under libp2p's request-response limit (300 s).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(290);
/// Most `read`/`write` calls listing, hashing or planning at once (the rest wait).
pub const MAX_PLANNING: usize = 2;
/// How long a peer whose direct connection failed keeps its bytes on the stream.
pub const DIRECT_RETRY: Duration = Duration::from_secs(600);
/// Files with fewer bytes left than this stay on the stream (a connection of their own
/// would cost more than it saves).
pub const DIRECT_MIN_BYTES: u64 = 4 << 20;

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

/// What a ticket lets one stream do.
#[derive(Clone)]
pub(crate) enum Item {
    /// Send this file (the inode listed, so a path swapped since is refused).
    Send {
        path: PathBuf,
        size: u64,
        dev: u64,
        ino: u64,
    },
    /// Receive this file into there.
    Receive {
        target: PathBuf,
        size: u64,
        blake3: String,
        mode: u32,
    },
}

type Ticket = (Op, Arc<Vec<Option<Item>>>);
type TicketInUse = InUse<[u8; 32], PeerId, Ticket>;

#[derive(Clone)]
struct Session {
    peer: PeerId,
    ticket: [u8; 32],
    op: Op,
    manifest: Arc<Manifest>,
}

type SessionInUse = InUse<String, (), Session>;

struct Inner {
    system: ActorSystem,
    net: Network,
    area: Area,
    tickets: Leases<[u8; 32], PeerId, Ticket>,
    sessions: Leases<String, (), Session>,
    slots: Slots,
    /// Listing or planning for peers (walks and hashes whole trees) runs this many at once.
    planning: Arc<tokio::sync::Semaphore>,
    /// Offer and take direct connections for file bytes.
    direct: bool,
    /// Peers whose offered direct connection could not be reached, and when: their bytes
    /// stay on the stream for [`DIRECT_RETRY`] (no connect timeout per file).
    no_direct: Mutex<HashMap<PeerId, Instant>>,
}

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

pub(crate) fn ticket_of(hex_ticket: &str) -> Result<[u8; 32], ActorError> {
    hex::decode(hex_ticket)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ActorError::new(ErrorKind::Rejected, "the peer sent a malformed ticket"))
}

/// `src` listed (blocking: it walks and hashes), with what a read ticket lets a stream send
/// for each entry: each file's inode as listed, so a stream for it later opens exactly that
/// file.
pub(crate) fn listed(src: &std::path::Path) -> Result<(Manifest, Vec<Option<Item>>), ActorError> {
    let manifest = build(src, &mut |_| {}).map_err(failed)?;
    let items = manifest
        .entries
        .iter()
        .map(|e| {
            if e.kind != Kind::File {
                return Ok(None);
            }
            let path = source_path(src, &e.path);
            let md = std::fs::symlink_metadata(&path)
                .map_err(|err| failed(format!("{}: {err}", path.display())))?;
            Ok(Some(Item::Send {
                path,
                size: e.size,
                dev: md.dev(),
                ino: md.ino(),
            }))
        })
        .collect::<Result<Vec<_>, ActorError>>()?;
    Ok((manifest, items))
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
            tickets: Leases::new(MAX_TICKETS, MAX_TICKETS_PER_PEER),
            sessions: Leases::new(MAX_SESSIONS, MAX_SESSIONS),
            slots: crate::server::slots(),
            planning: Arc::new(tokio::sync::Semaphore::new(MAX_PLANNING)),
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
        let incoming = net
            .streams()
            .accept(PROTOCOL)
            .map_err(|e| failed(format!("cannot serve {PROTOCOL}: {e}")))?;
        tokio::spawn(crate::server::run(f.clone(), incoming));
        Ok(f)
    }

    /// This node's peer id.
    pub(crate) fn local_peer(&self) -> PeerId {
        self.0.net.local_peer_id()
    }

    pub(crate) fn slots(&self) -> &Slots {
        &self.0.slots
    }

    pub(crate) fn direct_allowed(&self) -> bool {
        self.0.direct
    }

    /// A turn to list or plan for a peer.
    pub(crate) async fn planning_turn(
        &self,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, ActorError> {
        self.0
            .planning
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| failed("shutting down"))
    }

    pub(crate) fn mint(
        &self,
        peer: PeerId,
        op: Op,
        items: Vec<Option<Item>>,
    ) -> Result<String, ActorError> {
        let id = random32();
        self.0
            .tickets
            .insert(id, peer, (op, Arc::new(items)))
            .map_err(|why| failed(format!("{why}; try again when a transfer ends")))?;
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
        let _turn = self.planning_turn().await?;
        let (src, manifest, items) = tokio::task::spawn_blocking(move || {
            let src = area.source(&req.path).map_err(failed)?;
            let (manifest, items) = listed(&src)?;
            Ok::<_, ActorError>((src, manifest, items))
        })
        .await
        .map_err(failed)??;
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
        let _turn = self.planning_turn().await?;
        let (items, offsets, target) = tokio::task::spawn_blocking(move || {
            let dest = area.destination(&req.path).map_err(failed)?;
            let places = targets(&dest, &manifest).map_err(failed)?;
            // Nothing is made before the whole transfer is known to fit.
            let (offsets, need) = plan(&manifest, &places).map_err(failed)?;
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
            make_dirs(&manifest, &places).map_err(failed)?;
            let items = manifest
                .entries
                .iter()
                .zip(&places)
                .map(|(e, at)| match (e.kind, &e.blake3) {
                    (Kind::File, Some(digest)) => Some(Item::Receive {
                        target: at.clone(),
                        size: e.size,
                        blake3: digest.clone(),
                        mode: e.mode,
                    }),
                    _ => None,
                })
                .collect::<Vec<_>>();
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

    pub(crate) fn open_session(
        &self,
        peer: PeerId,
        ticket: [u8; 32],
        op: Op,
        manifest: Manifest,
    ) -> Result<String, ActorError> {
        let id = hex::encode(random32());
        let session = Session {
            peer,
            ticket,
            op,
            manifest: Arc::new(manifest),
        };
        self.0
            .sessions
            .insert(id.clone(), (), session)
            .map_err(|why| failed(format!("{why}; try again when a copy ends")))?;
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
    /// beside it when the peer is reached directly, the file is large enough and the peer
    /// offers one); returns the channel with the bytes left to move, and the session marked
    /// in use until that guard is dropped.
    async fn open(
        &self,
        session: &str,
        index: u32,
        offset: u64,
        op: Op,
    ) -> Result<(Channel, u64, SessionInUse), FilesError> {
        let (sess, in_use) = self
            .0
            .sessions
            .take(&session.to_string(), |_, _| true)
            .ok_or_else(|| FilesError::NoSession(session.chars().take(80).collect()))?;
        if sess.op != op {
            return Err(FilesError::Bad(match op {
                Op::Read => "this session sends files; PUT them".into(),
                Op::Write => "this session fetches files; GET them".into(),
            }));
        }
        let size = sess
            .manifest
            .entries
            .get(index as usize)
            .filter(|e| e.kind == Kind::File)
            .map(|e| e.size)
            .ok_or_else(|| {
                FilesError::Bad(format!("entry {index} is not a file of this transfer"))
            })?;
        if offset > size {
            return Err(FilesError::Bad(format!(
                "offset {offset} is past the end ({size} bytes)"
            )));
        }
        let peer = sess.peer;
        let mut stream = tokio::time::timeout(STREAM_IDLE, self.0.net.open_stream(peer, PROTOCOL))
            .await
            .map_err(|_| {
                FilesError::Unreachable(format!("no stream to {peer} within {STREAM_IDLE:?}"))
            })?
            .map_err(|e| FilesError::Unreachable(format!("cannot open a stream to {peer}: {e}")))?;
        let recently_failed = lock(&self.0.no_direct)
            .get(&peer)
            .is_some_and(|t| t.elapsed() < DIRECT_RETRY);
        let ip = if self.0.direct && !recently_failed && size - offset >= DIRECT_MIN_BYTES {
            // Only an address this node reached the peer at (never one it announced).
            self.0
                .net
                .peers()
                .await
                .into_iter()
                .find(|p| p.peer_id == peer)
                .and_then(|p| p.direct_ipv4())
        } else {
            None
        };
        let header = Header {
            op,
            ticket: sess.ticket,
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
        // The peer may hash what a resumed file already holds before it answers.
        match tokio::time::timeout(CALL_TIMEOUT, go).await {
            Err(_) => Err(FilesError::Unreachable(format!(
                "{peer} did not answer within {CALL_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => Err(FilesError::Unreachable(format!("stream to {peer}: {e}"))),
            Ok(Ok((Err(reason), _))) => Err(FilesError::Peer(reason)),
            Ok(Ok((Ok(()), Some(d)))) => Ok((Channel::Direct(d, stream), size - offset, in_use)),
            Ok(Ok((Ok(()), None))) => Ok((Channel::Stream(stream), size - offset, in_use)),
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
        let (channel, len, in_use) = self.open(session, index, offset, Op::Read).await?;
        let direct = channel.is_direct();
        // The session stays in use (and is not dropped as idle) while the body is read.
        let body = futures::stream::unfold((channel, len, in_use), |(mut c, left, u)| async move {
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
                    (c, 0, u),
                )),
                Ok(Ok(n)) if n as u64 > left => Some((
                    Err(std::io::Error::other("the peer sent more than the file")),
                    (c, 0, u),
                )),
                Ok(Ok(n)) => Some((Ok(Bytes::from(buf)), (c, left - n as u64, u))),
                Ok(Err(e)) => Some((Err(e), (c, 0, u))),
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer went silent",
                    )),
                    (c, 0, u),
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
        let (mut channel, len, _in_use) = self.open(session, index, offset, Op::Write).await?;
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

    /// The item a stream from `peer` asks for, with its ticket marked in use, or why not.
    pub(crate) fn item(&self, peer: PeerId, h: &Header) -> Result<(Item, TicketInUse), String> {
        let ((op, items), in_use) = self
            .0
            .tickets
            .take(&h.ticket, |owner, _| *owner == peer)
            .ok_or("unknown or expired ticket")?;
        if op != h.op {
            return Err("this ticket is for the other direction".into());
        }
        let item = items
            .get(h.index as usize)
            .cloned()
            .flatten()
            .ok_or_else(|| format!("entry {} is not a file of this transfer", h.index))?;
        Ok((item, in_use))
    }
}
