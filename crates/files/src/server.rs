//! The stream server: takes transfer streams from peers, checks their header against the
//! tickets this node handed out, and sends or receives one file per stream.
//!
//! Bounds: a header must arrive within [`HEADER_TIMEOUT`] (before the stream takes a slot);
//! at most [`MAX_STREAMS`] streams are served at once and [`MAX_STREAMS_PER_PEER`] per peer;
//! a stream silent for [`STREAM_IDLE`] is dropped.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use nunet_network::slots::Slots;

use crate::direct::{self, Channel};
use crate::receive::Receiver;
use crate::service::{Files, Item};
use crate::wire::{Header, write_status};

/// Most streams served at once.
pub const MAX_STREAMS: usize = 16;
/// Most streams served at once for one peer.
pub const MAX_STREAMS_PER_PEER: usize = 4;
/// Longest a new stream may take to send its header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a stream may stay silent once it is served.
pub const STREAM_IDLE: Duration = Duration::from_secs(60);
/// Bytes per read on a stream.
pub(crate) const BUF: usize = 256 << 10;

/// The places for transfer streams ([`MAX_STREAMS`], [`MAX_STREAMS_PER_PEER`]).
pub(crate) fn slots() -> Slots {
    Slots::new(MAX_STREAMS, MAX_STREAMS_PER_PEER)
}

/// Serves [`crate::wire::PROTOCOL`] streams from `incoming` until it ends.
pub(crate) async fn run(files: Files, mut incoming: libp2p_stream::IncomingStreams) {
    while let Some((peer, stream)) = incoming.next().await {
        let f = files.clone();
        tokio::spawn(async move { f.serve(peer, stream).await });
    }
}

/// Whether to offer a direct connection on a stream.
#[derive(Clone, Copy)]
pub(crate) enum Offer {
    /// The opener did not ask for one.
    NotAsked,
    /// It asked, and this node offers.
    Make,
    /// It asked, and this node keeps the bytes on the stream (`files.direct` off).
    Decline,
}

impl Files {
    async fn serve(&self, peer: PeerId, mut stream: libp2p::Stream) {
        let header =
            match tokio::time::timeout(HEADER_TIMEOUT, Header::read_from(&mut stream)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    let _ = write_status(&mut stream, Err(&e.to_string())).await;
                    return;
                }
                Err(_) => return,
            };
        let Some(_slot) = self.slots().take(peer) else {
            let _ = write_status(
                &mut stream,
                Err("busy: too many transfers at once; try again"),
            )
            .await;
            return;
        };
        let (item, _in_use) = match self.item(peer, &header) {
            Ok(i) => i,
            Err(why) => {
                tracing::warn!(%peer, "files: stream refused: {why}");
                let _ = write_status(&mut stream, Err(&why)).await;
                return;
            }
        };
        let offer = match (header.direct, self.direct_allowed()) {
            (false, _) => Offer::NotAsked,
            (true, true) => Offer::Make,
            (true, false) => Offer::Decline,
        };
        let r = match item {
            Item::Send {
                path,
                size,
                dev,
                ino,
            } => serve_read(stream, path, (size, dev, ino), header.offset, offer).await,
            Item::Receive {
                target,
                size,
                blake3,
                mode,
            } => serve_write(stream, target, (size, blake3, mode), header.offset, offer).await,
        };
        if let Err(e) = r {
            tracing::warn!(%peer, "files: transfer stream ended: {e}");
        }
    }
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

/// Answers a stream whose file was opened (or not) on a blocking thread: the refusal with
/// its reason, or OK and the channel the bytes take.
async fn answer<T, E: std::fmt::Display>(
    mut stream: libp2p::Stream,
    offer: Offer,
    opened: Result<Result<T, E>, tokio::task::JoinError>,
) -> Result<(T, Channel), String> {
    let opened = opened
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match opened {
        Ok(t) => {
            write_status(&mut stream, Ok(()))
                .await
                .map_err(|e| e.to_string())?;
            Ok((t, channel(stream, offer).await?))
        }
        Err(why) => {
            let _ = write_status(&mut stream, Err(&why)).await;
            Err(why)
        }
    }
}

async fn serve_read(
    stream: libp2p::Stream,
    path: PathBuf,
    (size, dev, ino): (u64, u64, u64),
    offset: u64,
    offer: Offer,
) -> Result<(), String> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let p = path.clone();
    let opened = tokio::task::spawn_blocking(move || {
        // No symlink at the end, no blocking on a FIFO, and the very file that was listed:
        // a path swapped since (a symlink put in its place higher up) opens another inode.
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(&p)?;
        let md = f.metadata()?;
        if !md.is_file() || md.dev() != dev || md.ino() != ino {
            return Err(std::io::Error::other(format!(
                "{} is no longer the file that was listed",
                p.display()
            )));
        }
        if md.len() != size {
            return Err(std::io::Error::other(format!(
                "{} changed since it was listed ({} bytes, not {size})",
                p.display(),
                md.len()
            )));
        }
        if offset > size {
            return Err(std::io::Error::other(format!(
                "offset {offset} is past the end"
            )));
        }
        f.seek(std::io::SeekFrom::Start(offset))?;
        Ok(f)
    })
    .await;
    let (mut f, mut channel) = answer(stream, offer, opened).await?;
    // The disk reads run on a blocking thread feeding a short queue, overlapping the sends.
    const QUEUE: usize = 4;
    let (tx, mut chunks) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(QUEUE);
    let left = size - offset;
    let reader = tokio::task::spawn_blocking(move || {
        let mut left = left;
        while left > 0 {
            let mut buf = vec![0u8; direct::FRAME.min(left as usize)];
            let r = f.read(&mut buf).and_then(|n| match n {
                0 => Err(std::io::Error::other("the file shrank while being sent")),
                n => Ok(n),
            });
            let n = match r {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            };
            buf.truncate(n);
            left -= n as u64;
            if tx.blocking_send(Ok(buf)).is_err() {
                return; // the stream side stopped
            }
        }
    });
    while let Some(chunk) = chunks.recv().await {
        let chunk = chunk.map_err(|e| format!("{}: {e}", path.display()))?;
        tokio::time::timeout(STREAM_IDLE, channel.write_all(&chunk))
            .await
            .map_err(|_| "the peer stopped reading".to_string())?
            .map_err(|e| e.to_string())?;
    }
    let _ = reader.await;
    channel.end().await.map_err(|e| e.to_string())?;
    if channel.is_direct() {
        let _ = channel.control().close().await;
    }
    Ok(())
}

async fn serve_write(
    stream: libp2p::Stream,
    target: PathBuf,
    (size, blake3, mode): (u64, String, u32),
    offset: u64,
    offer: Offer,
) -> Result<(), String> {
    let t = target.clone();
    let opened =
        tokio::task::spawn_blocking(move || Receiver::open(&t, size, &blake3, mode, offset)).await;
    let (mut rx, mut channel) = answer(stream, offer, opened).await?;
    // The disk work runs on a blocking thread fed through a short queue, so hashing and
    // writing overlap with reading. Buffers go back to the reader once written, so none is
    // allocated per read.
    const QUEUE: usize = 4;
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
