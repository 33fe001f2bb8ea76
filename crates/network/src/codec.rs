//! Wire format of [`ACTOR_PROTOCOL`](crate::ACTOR_PROTOCOL): one unsigned-varint (LEB128)
//! length, then that many raw bytes, for the request and for the response. Lengths over the
//! configured limit are refused before any allocation.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// Longest valid varint for a `u64`.
const MAX_VARINT_BYTES: usize = 10;

/// Length-prefixed raw bytes with a size limit.
#[derive(Debug, Clone)]
pub(crate) struct BytesCodec {
    max_bytes: usize,
}

impl BytesCodec {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self { max_bytes }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads one frame, refusing lengths over `max`.
pub(crate) async fn read_frame<T>(io: &mut T, max: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin + Send,
{
    let mut len: u64 = 0;
    let mut shift = 0u32;
    let mut done = false;
    for _ in 0..MAX_VARINT_BYTES {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        let byte = b[0];
        len |= u64::from(byte & 0x7f)
            .checked_shl(shift)
            .ok_or_else(|| invalid("length prefix overflows".into()))?;
        shift += 7;
        if byte & 0x80 == 0 {
            done = true;
            break;
        }
    }
    if !done {
        return Err(invalid("length prefix is not a valid varint".into()));
    }
    let len = usize::try_from(len).map_err(|_| invalid("length prefix overflows".into()))?;
    if len > max {
        return Err(invalid(format!(
            "frame of {len} bytes exceeds the {max}-byte limit"
        )));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one frame and closes the write side, refusing payloads over `max`.
pub(crate) async fn write_frame<T>(io: &mut T, data: &[u8], max: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin + Send,
{
    if data.len() > max {
        return Err(invalid(format!(
            "frame of {} bytes exceeds the {max}-byte limit",
            data.len()
        )));
    }
    let mut prefix = Vec::with_capacity(MAX_VARINT_BYTES);
    let mut n = data.len() as u64;
    loop {
        let low = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            prefix.push(low);
            break;
        }
        prefix.push(low | 0x80);
    }
    io.write_all(&prefix).await?;
    io.write_all(data).await?;
    io.close().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_bytes).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req, self.max_bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res, self.max_bytes).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    fn roundtrip(data: &[u8]) -> Vec<u8> {
        futures::executor::block_on(async {
            let mut out = Cursor::new(Vec::new());
            write_frame(&mut out, data, 1 << 20).await.unwrap();
            let mut inp = Cursor::new(out.into_inner());
            read_frame(&mut inp, 1 << 20).await.unwrap()
        })
    }

    #[test]
    fn frames_round_trip() {
        for n in [0usize, 1, 127, 128, 300, 16_384, 100_000] {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            assert_eq!(roundtrip(&data), data);
        }
    }

    #[test]
    fn garbage_is_rejected_without_panic() {
        futures::executor::block_on(async {
            // Over the limit.
            let mut c = Cursor::new(vec![0xff, 0xff, 0x7f, 1, 2, 3]);
            assert!(read_frame(&mut c, 1024).await.is_err());
            // Never-ending varint.
            let mut c = Cursor::new(vec![0xff; 32]);
            assert!(read_frame(&mut c, usize::MAX).await.is_err());
            // Truncated body.
            let mut c = Cursor::new(vec![10, 1, 2]);
            assert!(read_frame(&mut c, 1024).await.is_err());
            // Empty input.
            let mut c = Cursor::new(Vec::new());
            assert!(read_frame(&mut c, 1024).await.is_err());
        });
    }

    #[test]
    fn oversized_write_is_refused() {
        futures::executor::block_on(async {
            let mut out = Cursor::new(Vec::new());
            assert!(write_frame(&mut out, &[0u8; 10], 9).await.is_err());
            assert!(out.into_inner().is_empty());
        });
    }
}
