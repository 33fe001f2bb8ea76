//! The transfer stream protocol, [`PROTOCOL`]: one libp2p stream per file.
//!
//! The opener writes a 52-byte header: `"NFT1"`, the operation (1 = read, 2 = write), a flag
//! byte (1: it would take the bytes on a direct connection, [`crate::direct`]), two zero
//! bytes, the 32-byte ticket a capability-checked call handed out, the entry's index in
//! the manifest and the offset to start at (big-endian `u32`, `u64`). The server answers a
//! status: `0`, or an error code, a big-endian `u16` length and that many bytes of UTF-8
//! reason (at most [`MAX_REASON`]).
//!
//! When the opener asked for a direct connection, the `0` is followed by the server's offer
//! and the opener's answer ([`crate::direct`]); the bytes below then go over whichever
//! carries them.
//!
//! * read: after `0` the server sends the file's bytes from the offset to its end and closes.
//! * write: after `0` the opener sends the bytes from the offset to the end and closes its
//!   write half; the server checks the digest, renames the file into place and answers a
//!   second status.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The stream protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/nunet/files/1.0.0");
/// Header length.
pub const HEADER_LEN: usize = 52;
/// Longest reason in a status.
pub const MAX_REASON: usize = 1024;
const MAGIC: &[u8; 4] = b"NFT1";

/// What a stream asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Send me the file.
    Read,
    /// Take the file.
    Write,
}

/// A stream's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What for.
    pub op: Op,
    /// The ticket.
    pub ticket: [u8; 32],
    /// The manifest entry.
    pub index: u32,
    /// Where to start.
    pub offset: u64,
    /// The opener would take a direct connection for the bytes.
    pub direct: bool,
}

/// Why a header or status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not this protocol.
    #[error("not a file transfer header")]
    Magic,
    /// Unknown operation.
    #[error("unknown operation {0}")]
    Op(u8),
    /// The stream failed.
    #[error("stream: {0}")]
    Io(#[from] std::io::Error),
    /// A reason that is too long or not UTF-8.
    #[error("malformed status")]
    Status,
}

impl Header {
    /// The 52 bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = match self.op {
            Op::Read => 1,
            Op::Write => 2,
        };
        b[5] = u8::from(self.direct);
        b[8..40].copy_from_slice(&self.ticket);
        b[40..44].copy_from_slice(&self.index.to_be_bytes());
        b[44..52].copy_from_slice(&self.offset.to_be_bytes());
        b
    }

    /// Reads one back.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, WireError> {
        if &b[..4] != MAGIC || b[5] > 1 || b[6..8] != [0, 0] {
            return Err(WireError::Magic);
        }
        let op = match b[4] {
            1 => Op::Read,
            2 => Op::Write,
            o => return Err(WireError::Op(o)),
        };
        let mut ticket = [0u8; 32];
        ticket.copy_from_slice(&b[8..40]);
        let mut index = [0u8; 4];
        index.copy_from_slice(&b[40..44]);
        let mut offset = [0u8; 8];
        offset.copy_from_slice(&b[44..52]);
        Ok(Self {
            op,
            ticket,
            index: u32::from_be_bytes(index),
            offset: u64::from_be_bytes(offset),
            direct: b[5] == 1,
        })
    }

    /// Reads a header from `s`.
    pub async fn read_from<S: AsyncRead + Unpin>(s: &mut S) -> Result<Self, WireError> {
        let mut b = [0u8; HEADER_LEN];
        s.read_exact(&mut b).await?;
        Self::decode(&b)
    }
}

/// Writes status `Ok(())` or `Err(reason)` (cut to [`MAX_REASON`] bytes).
pub async fn write_status<S: AsyncWrite + Unpin>(
    s: &mut S,
    status: Result<(), &str>,
) -> std::io::Result<()> {
    match status {
        Ok(()) => s.write_all(&[0]).await?,
        Err(reason) => {
            let mut end = reason.len().min(MAX_REASON);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            let r = &reason.as_bytes()[..end];
            let mut b = Vec::with_capacity(3 + r.len());
            b.push(1);
            b.extend_from_slice(&(r.len() as u16).to_be_bytes());
            b.extend_from_slice(r);
            s.write_all(&b).await?;
        }
    }
    s.flush().await
}

/// Reads a status: `Ok(Ok(()))`, `Ok(Err(reason))`, or why none could be read.
pub async fn read_status<S: AsyncRead + Unpin>(s: &mut S) -> Result<Result<(), String>, WireError> {
    let mut code = [0u8; 1];
    s.read_exact(&mut code).await?;
    if code[0] == 0 {
        return Ok(Ok(()));
    }
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_REASON {
        return Err(WireError::Status);
    }
    let mut r = vec![0u8; len];
    s.read_exact(&mut r).await?;
    String::from_utf8(r).map(Err).map_err(|_| WireError::Status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_statuses_round_trip_and_garbage_is_refused() {
        let h = Header {
            op: Op::Write,
            ticket: [7; 32],
            index: 3,
            offset: 1 << 40,
            direct: true,
        };
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        let mut b = h.encode();
        b[4] = 9;
        assert!(matches!(Header::decode(&b), Err(WireError::Op(9))));
        b[0] = b'X';
        assert!(matches!(Header::decode(&b), Err(WireError::Magic)));
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_status(&mut buf, Ok(())).await.unwrap();
            write_status(&mut buf, Err(&"é".repeat(1000)))
                .await
                .unwrap();
            let mut r = futures::io::Cursor::new(buf);
            assert_eq!(read_status(&mut r).await.unwrap(), Ok(()));
            let e = read_status(&mut r).await.unwrap().unwrap_err();
            assert_eq!(e.len(), MAX_REASON);
            let mut short = futures::io::Cursor::new(vec![1u8, 0xff, 0xff]);
            assert!(read_status(&mut short).await.is_err());
        });
    }
}
