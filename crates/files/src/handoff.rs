//! Directories handed from one node to another on a third party's word: an orchestrator asks
//! the node that holds a finished task's output to [`Files::share`] it with the node that
//! runs the allocation needing it, and hands that node the ticket and listing, which it
//! [`Files::download`]s. No capability of the fetching node is checked here: whoever asked
//! for the share (the orchestrator, through the allocation actor that checks it) vouches for
//! the reader, and the ticket is valid for that reader's streams only.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use libp2p::PeerId;
use nunet_actor::ActorError;

use crate::area::Destination;
use crate::manifest::{Kind, Manifest};
use crate::receive::{Receiver, make_dirs, plan, targets};
use crate::service::{Files, FilesError, Item, listed};
use crate::wire::{Header, Op};

/// What [`Files::download`] moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Downloaded {
    /// Regular files in place (sent now or already there).
    pub files: usize,
    /// Bytes received now.
    pub bytes: u64,
}

fn failed(e: impl std::fmt::Display) -> ActorError {
    ActorError::failed(e.to_string())
}

impl Files {
    /// Lists directory `dir` (a path of this node's own choosing, not the file area) and
    /// mints a read ticket for `reader`'s streams; the ticket and the listing.
    pub async fn share(
        &self,
        reader: PeerId,
        dir: PathBuf,
    ) -> Result<(String, Manifest), ActorError> {
        let _turn = self.planning_turn().await?;
        let (manifest, items) = tokio::task::spawn_blocking(move || listed(&dir))
            .await
            .map_err(failed)??;
        let ticket = self.mint(reader, Op::Read, items)?;
        tracing::info!(%reader, files = manifest.files(), bytes = manifest.bytes(), "files: a directory shared");
        Ok((ticket, manifest))
    }

    /// Fetches what `peer` shared (`ticket`, `manifest`) into `dest`, which becomes the
    /// shared directory (made if missing); at most `budget` bytes. Files already in place
    /// with their digest are not fetched again, and an interrupted file resumes.
    pub async fn download(
        &self,
        peer: PeerId,
        ticket: &str,
        manifest: Manifest,
        dest: &Path,
        budget: u64,
    ) -> Result<Downloaded, FilesError> {
        manifest
            .check()
            .map_err(|e| FilesError::Bad(format!("the listing: {e}")))?;
        if manifest.entries.first().map(|e| e.kind) != Some(Kind::Dir) {
            return Err(FilesError::Bad("the listing is not of a directory".into()));
        }
        if manifest.bytes() > budget {
            return Err(FilesError::Bad(format!(
                "{} bytes to fetch; at most {budget} fit",
                manifest.bytes()
            )));
        }
        let ticket = crate::service::ticket_of(ticket).map_err(|e| FilesError::Bad(e.message))?;
        let places = targets(&Destination::New(dest.to_path_buf()), &manifest)
            .map_err(|e| FilesError::Bad(e.to_string()))?;
        let (m, at) = (manifest.clone(), places.clone());
        let offsets = tokio::task::spawn_blocking(move || {
            let (offsets, _) = plan(&m, &at)?;
            make_dirs(&m, &at)?;
            Ok::<_, crate::receive::ReceiveError>(offsets)
        })
        .await
        .map_err(|e| FilesError::Bad(e.to_string()))?
        .map_err(|e| FilesError::Bad(e.to_string()))?;
        // Shared by this very node (both allocations run here): copied, not streamed.
        let local = peer == self.local_peer();
        let session = if local {
            String::new()
        } else {
            self.open_session(peer, ticket, Op::Read, manifest.clone())
                .map_err(|e| FilesError::Bad(e.message))?
        };
        let mut done = Downloaded::default();
        for (i, ((e, at), offset)) in manifest
            .entries
            .iter()
            .zip(&places)
            .zip(offsets)
            .enumerate()
        {
            let Some(digest) = e.blake3.clone().filter(|_| e.kind == Kind::File) else {
                continue;
            };
            done.files += 1;
            let Some(offset) = offset else {
                continue; // already here
            };
            let (at, size, mode) = (at.clone(), e.size, e.mode);
            let rx = tokio::task::spawn_blocking(move || {
                Receiver::open(&at, size, &digest, mode, offset)
            })
            .await
            .map_err(|e| FilesError::Bad(e.to_string()))?
            .map_err(|e| FilesError::Bad(e.to_string()))?;
            if local {
                let header = Header {
                    op: Op::Read,
                    ticket,
                    index: i as u32,
                    offset,
                    direct: false,
                };
                let (item, _in_use) = self.item(peer, &header).map_err(FilesError::Peer)?;
                done.bytes += tokio::task::spawn_blocking(move || copy(item, offset, rx))
                    .await
                    .map_err(|e| FilesError::Bad(e.to_string()))??;
                continue;
            }
            let (_, _, body) = self.pull(&session, i as u32, offset).await?;
            done.bytes += receive(body, rx).await?;
        }
        Ok(done)
    }
}

/// Writes `body` into `rx` on a blocking thread fed through a short queue, then finishes it
/// (digest, mode, rename); the bytes received.
async fn receive(
    body: impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>>,
    rx: Receiver,
) -> Result<u64, FilesError> {
    use futures::StreamExt;
    let (tx, mut chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut rx = rx;
        while let Some(c) = chunks.blocking_recv() {
            rx.write(&c)?;
        }
        rx.finish()
    });
    let mut body = std::pin::pin!(body);
    let mut moved = 0u64;
    let mut broke = None;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                moved += c.len() as u64;
                if tx.send(c).await.is_err() {
                    break; // the writer stopped; its error is below
                }
            }
            Err(e) => {
                broke = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| FilesError::Bad(e.to_string()))?;
    if let Some(e) = broke {
        return Err(FilesError::Unreachable(format!(
            "the transfer broke after {moved} bytes: {e}"
        )));
    }
    written.map_err(|e| FilesError::Bad(e.to_string()))?;
    Ok(moved)
}

/// Copies the listed file `item` from `offset` on into `rx` (the same checks as a stream
/// serving it: no symlink, the inode listed, the size listed), then finishes it.
fn copy(item: Item, offset: u64, mut rx: Receiver) -> Result<u64, FilesError> {
    use std::io::{Read, Seek};
    use std::os::unix::fs::OpenOptionsExt;
    let Item::Send {
        path,
        size,
        dev,
        ino,
    } = item
    else {
        return Err(FilesError::Bad("this ticket receives files".into()));
    };
    let bad = |e: std::io::Error| FilesError::Peer(format!("{}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(&path)
        .map_err(bad)?;
    let md = f.metadata().map_err(bad)?;
    if !md.is_file() || md.dev() != dev || md.ino() != ino || md.len() != size {
        return Err(FilesError::Peer(format!(
            "{} is no longer the file that was listed",
            path.display()
        )));
    }
    f.seek(std::io::SeekFrom::Start(offset)).map_err(bad)?;
    let mut buf = vec![0u8; crate::server::BUF];
    let mut moved = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(bad)?;
        if n == 0 {
            break;
        }
        rx.write(&buf[..n])
            .map_err(|e| FilesError::Bad(e.to_string()))?;
        moved += n as u64;
    }
    rx.finish().map_err(|e| FilesError::Bad(e.to_string()))?;
    Ok(moved)
}
