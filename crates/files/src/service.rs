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
use futures::{AsyncReadExt, AsyncWriteExt, Stream, StreamExt};
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

fn ticket_of(hex_ticket: &str) -> Result<[u8; 32], ActorError> {
    hex::decode(hex_ticket)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ActorError::new(ErrorKind::Rejected, "the peer sent a malformed ticket"))
}

impl Files {
    /// Transfers for `system` over `net`, sharing `area` with peers. Registers the four
    /// behaviours on the root actor and starts the stream server (inside a tokio runtime).
    pub fn start(system: &ActorSystem, net: &Network, area: Area) -> Result<Self, ActorError> {
        let f = Files(Arc::new(Inner {
            system: system.clone(),
            net: net.clone(),
            area,
            tickets: Mutex::default(),
            sessions: Mutex::default(),
            slots: Arc::new(Semaphore::new(MAX_STREAMS)),
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

    /// Opens the stream for file `index` of `session` at `offset`; returns it with the bytes
    /// left to move.
    async fn open(
        &self,
        session: &str,
        index: u32,
        offset: u64,
        op: Op,
    ) -> Result<(libp2p::Stream, u64), FilesError> {
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
        let header = Header {
            op,
            ticket,
            index,
            offset,
        };
        let go = async {
            stream.write_all(&header.encode()).await?;
            stream.flush().await?;
            read_status(&mut stream)
                .await
                .map_err(std::io::Error::other)
        };
        match tokio::time::timeout(STREAM_IDLE, go).await {
            Err(_) => Err(FilesError::Unreachable(format!(
                "{peer} did not answer within {STREAM_IDLE:?}"
            ))),
            Ok(Err(e)) => Err(FilesError::Unreachable(format!("stream to {peer}: {e}"))),
            Ok(Ok(Err(reason))) => Err(FilesError::Peer(reason)),
            Ok(Ok(Ok(()))) => Ok((stream, size - offset)),
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
            impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
        ),
        FilesError,
    > {
        let (stream, len) = self.open(session, index, offset, Op::Read).await?;
        let body = futures::stream::unfold((stream, len), |(mut s, left)| async move {
            if left == 0 {
                return None;
            }
            let mut buf = vec![0u8; BUF.min(left as usize)];
            match tokio::time::timeout(STREAM_IDLE, s.read(&mut buf)).await {
                Ok(Ok(0)) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the peer stopped with {left} bytes to go"),
                    )),
                    (s, 0),
                )),
                Ok(Ok(n)) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), (s, left - n as u64)))
                }
                Ok(Err(e)) => Some((Err(e), (s, 0))),
                Err(_) => Some((
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the peer went silent",
                    )),
                    (s, 0),
                )),
            }
        });
        Ok((len, body))
    }

    /// Sends `body` as file `index` of a send `session` from `offset` on and waits for the
    /// peer to check and place it.
    pub async fn push<E: std::fmt::Display>(
        &self,
        session: &str,
        index: u32,
        offset: u64,
        body: impl Stream<Item = Result<Bytes, E>>,
    ) -> Result<(), FilesError> {
        let (mut stream, len) = self.open(session, index, offset, Op::Write).await?;
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
            tokio::time::timeout(STREAM_IDLE, stream.write_all(&chunk))
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
            stream.close().await?;
            read_status(&mut stream)
                .await
                .map_err(std::io::Error::other)
        };
        match tokio::time::timeout(CALL_TIMEOUT, fin).await {
            Err(_) => Err(FilesError::Unreachable(
                "the peer did not confirm the file".into(),
            )),
            Ok(Err(e)) => Err(FilesError::Unreachable(format!("stream: {e}"))),
            Ok(Ok(Err(reason))) => Err(FilesError::Peer(reason)),
            Ok(Ok(Ok(()))) => Ok(()),
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
        let r = match item {
            Item::Send { path, size } => serve_read(&mut stream, path, size, header.offset).await,
            Item::Receive {
                target,
                size,
                blake3,
                mode,
            } => serve_write(&mut stream, target, size, blake3, mode, header.offset).await,
        };
        if let Err(e) = r {
            tracing::warn!(%peer, "files: transfer stream ended: {e}");
        }
    }
}

async fn serve_read(
    stream: &mut libp2p::Stream,
    path: PathBuf,
    size: u64,
    offset: u64,
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
            let _ = write_status(stream, Err(&why)).await;
            return Err(why);
        }
    };
    write_status(stream, Ok(()))
        .await
        .map_err(|e| e.to_string())?;
    let mut left = size - offset;
    let mut buf = vec![0u8; BUF];
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = f.read(&mut buf[..want]).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("{} shrank while being sent", path.display()));
        }
        tokio::time::timeout(STREAM_IDLE, stream.write_all(&buf[..n]))
            .await
            .map_err(|_| "the peer stopped reading".to_string())?
            .map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    stream.close().await.map_err(|e| e.to_string())
}

async fn serve_write(
    stream: &mut libp2p::Stream,
    target: PathBuf,
    size: u64,
    blake3: String,
    mode: u32,
    offset: u64,
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
            let _ = write_status(stream, Err(&why)).await;
            return Err(why);
        }
    };
    write_status(stream, Ok(()))
        .await
        .map_err(|e| e.to_string())?;
    // The disk work runs on a blocking thread fed through a short queue, so hashing and
    // writing overlap with reading the stream.
    // Buffers go back to the reader once written, so none is allocated (and zeroed) per read.
    const QUEUE: usize = 8;
    let (tx, mut chunks) = tokio::sync::mpsc::channel::<(Vec<u8>, usize)>(QUEUE);
    let (give_back, mut spare) = tokio::sync::mpsc::channel::<Vec<u8>>(QUEUE + 1);
    let writer = tokio::task::spawn_blocking(move || {
        while let Some((c, n)) = chunks.blocking_recv() {
            rx.write(&c[..n])?;
            let _ = give_back.try_send(c);
        }
        Ok::<_, crate::receive::ReceiveError>(rx)
    });
    let mut read_err = None;
    loop {
        let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0u8; BUF]);
        match tokio::time::timeout(STREAM_IDLE, stream.read(&mut buf)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                if tx.send((buf, n)).await.is_err() {
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
    let _ = write_status(stream, status).await;
    let _ = stream.close().await;
    result
}
