//! NuNet's actor transport (`network/libp2p/libp2p.go`: `sendMessage`,
//! `handleReadBytesFromStream`): one stream per message on `actor/<inbox>/messages/0.0.1`,
//! carrying an 8-byte little-endian length and that many bytes of envelope JSON, written in
//! one piece; the sender closes its side and never reads; a reply is a new message on a new
//! stream. The slash-less protocol name is translated below the swarm
//! ([`crate::legacy_ids`]); here it has its slash.
//!
//! Frames are opaque bytes, as everywhere in this crate: the envelope is checked above.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{Semaphore, mpsc};

use crate::{NetError, Network};

/// Largest frame, prefix included, that a NuNet node sends or reads (`maxMessageLengthMB`).
pub const MAX_NUNET_FRAME: usize = 1024 * 1024;
/// How long a NuNet node waits for a whole message on a stream (`readTimeout`).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams read at once; more wait for a slot.
const MAX_READERS: usize = 64;
/// Streams of one peer read at once; more are refused (reset), so one peer cannot hold the
/// slots of all.
const MAX_READERS_PER_PEER: usize = 4;
/// Frames waiting for the layer above; more are dropped with a warning.
const FRAME_QUEUE: usize = 64;

/// One message received on a NuNet inbox.
#[derive(Debug)]
pub struct NuNetFrame {
    /// The authenticated (noise) peer that sent it.
    pub peer: PeerId,
    /// The envelope bytes. Untrusted.
    pub payload: Vec<u8>,
}

/// The protocol of NuNet inbox `inbox`, as this swarm names it (with a leading slash).
pub fn nunet_protocol(inbox: &str) -> Result<StreamProtocol, NetError> {
    if inbox.is_empty() || inbox.contains(['/', '\n', ' ']) {
        return Err(NetError::Setup(format!(
            "{inbox:?} is not a NuNet inbox name"
        )));
    }
    StreamProtocol::try_from_owned(format!("/actor/{inbox}/messages/0.0.1"))
        .map_err(|e| NetError::Setup(e.to_string()))
}

impl Network {
    /// Receives the messages NuNet nodes send to this node's inbox `inbox`.
    pub fn accept_nunet(&self, inbox: &str) -> Result<mpsc::Receiver<NuNetFrame>, NetError> {
        let mut incoming = self
            .streams()
            .accept(nunet_protocol(inbox)?)
            .map_err(|e| NetError::Setup(e.to_string()))?;
        let (tx, rx) = mpsc::channel(FRAME_QUEUE);
        let slots = Arc::new(Semaphore::new(MAX_READERS));
        let per_peer: Arc<Mutex<HashMap<PeerId, usize>>> = Arc::default();
        tokio::spawn(async move {
            while let Some((peer, mut stream)) = incoming.next().await {
                let Some(mine) = PeerSlot::take(&per_peer, peer) else {
                    tracing::debug!(%peer, "NuNet stream refused: {MAX_READERS_PER_PEER} already open");
                    continue; // dropping the stream resets it
                };
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let _mine = mine;
                    match tokio::time::timeout(READ_TIMEOUT, read_frame(&mut stream)).await {
                        Ok(Ok(payload)) => {
                            let _ = stream.close().await;
                            if tx.try_send(NuNetFrame { peer, payload }).is_err() {
                                tracing::warn!(%peer, "NuNet message dropped: queue full");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "NuNet stream: {e}"),
                        Err(_) => tracing::debug!(%peer, "NuNet stream: no whole message in 30 s"),
                    }
                });
            }
        });
        Ok(rx)
    }

    /// Sends one message to NuNet inbox `inbox` of `peer`, as a NuNet node does: a new
    /// stream, the prefix and the bytes in one write, then close.
    pub async fn send_nunet(
        &self,
        peer: PeerId,
        inbox: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), NetError> {
        if payload.len() + 8 > MAX_NUNET_FRAME {
            return Err(NetError::Stream {
                peer,
                reason: format!(
                    "a NuNet message of {} bytes exceeds the {MAX_NUNET_FRAME}-byte frame",
                    payload.len()
                ),
            });
        }
        let protocol = nunet_protocol(inbox)?;
        let send = async {
            let mut stream = self
                .open_stream(peer, protocol)
                .await
                .map_err(|e| e.to_string())?;
            let mut frame = Vec::with_capacity(8 + payload.len());
            frame.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            frame.extend_from_slice(payload);
            stream.write_all(&frame).await.map_err(|e| e.to_string())?;
            stream.close().await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, send).await {
            Ok(r) => r.map_err(|reason| NetError::Stream { peer, reason }),
            Err(_) => Err(NetError::Timeout(timeout)),
        }
    }
}

/// One peer's share of the readers, given back when dropped.
struct PeerSlot(Arc<Mutex<HashMap<PeerId, usize>>>, PeerId);

impl PeerSlot {
    fn take(map: &Arc<Mutex<HashMap<PeerId, usize>>>, peer: PeerId) -> Option<Self> {
        let mut m = map.lock().ok()?;
        let n = m.entry(peer).or_default();
        if *n >= MAX_READERS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(Self(map.clone(), peer))
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.0.lock()
            && let Some(n) = m.get_mut(&self.1)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

async fn read_frame(stream: &mut libp2p::Stream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    stream.read_exact(&mut len).await?;
    let len = u64::from_le_bytes(len);
    if len > (MAX_NUNET_FRAME - 8) as u64 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("NuNet message of {len} bytes exceeds the {MAX_NUNET_FRAME}-byte frame"),
        ));
    }
    // Memory grows with the bytes that arrive, not with what the prefix claims.
    let mut buf = Vec::new();
    (&mut *stream).take(len).read_to_end(&mut buf).await?;
    if buf.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}
