//! The direct channel: a file's bytes over a TCP connection of their own instead of the
//! libp2p stream, when the two nodes have a direct (not relayed) path.
//!
//! Why: every stream to a peer shares its one libp2p connection, whose noise encryption and
//! yamux framing run in one task; measured between two namespace hosts it carried about
//! 330 MB/s, a fifth of what the link carries, and two copies at once did not go faster.
//!
//! How: the stream's opener asks for it in the header; the server listens on a fresh port
//! and answers, over the authenticated stream, the port, a random AES-256-GCM key and a
//! random 32-byte token. The opener connects to the peer's address (the remote end of their
//! direct libp2p connection, never an address the peer only announced), sends the token,
//! and says over the stream whether it got through; the server then confirms whether it
//! took that connection. If either fails (a NAT, a firewall, a middlebox answering the
//! connect), the bytes go over the stream as before. On the connection, bytes travel as
//! frames: a big-endian `u32` length, then that many bytes of AES-256-GCM ciphertext and
//! tag; the nonce is the frame's number, so frames cannot be dropped, reordered or
//! replayed. The listener (all IPv4 interfaces, a port the kernel picks) takes the first
//! connection that presents the token within [`ACCEPT_TIMEOUT`]; others are dropped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rand::RngCore;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Longest the server waits for the opener's connection.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection may take to present its token.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest the opener tries to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most plaintext bytes per frame.
pub const FRAME: usize = 1 << 20;
const TAG: usize = 16;
/// Offer on the stream: 1, port (2), key (32), token (32).
const OFFER_LEN: usize = 1 + 2 + 32 + 32;

/// One direction of sealed frames over a TCP connection.
pub struct Direct {
    tcp: TcpStream,
    key: LessSafeKey,
    counter: u64,
    buf: Vec<u8>,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn key_of(k: &[u8; 32]) -> std::io::Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM, k)
        .map(LessSafeKey::new)
        .map_err(|_| std::io::Error::other("bad key"))
}

impl Direct {
    fn new(tcp: TcpStream, key: &[u8; 32]) -> std::io::Result<Self> {
        let _ = tcp.set_nodelay(true);
        Ok(Self {
            tcp,
            key: key_of(key)?,
            counter: 0,
            buf: Vec::with_capacity(FRAME + TAG),
        })
    }

    /// Seals and sends `data` (in frames of at most [`FRAME`]).
    pub async fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        for chunk in data.chunks(FRAME) {
            self.buf.clear();
            self.buf
                .extend_from_slice(&((chunk.len() + TAG) as u32).to_be_bytes());
            self.buf.extend_from_slice(chunk);
            let n = nonce(self.counter);
            self.counter += 1;
            let tag = self
                .key
                .seal_in_place_separate_tag(n, Aad::empty(), &mut self.buf[4..])
                .map_err(|_| std::io::Error::other("AES-GCM seal failed"))?;
            self.buf.extend_from_slice(tag.as_ref());
            self.tcp.write_all(&self.buf).await?;
        }
        Ok(())
    }

    /// Receives one frame into `out` (replacing its contents); `Ok(false)` at the end of the
    /// connection. A frame that does not authenticate is an error.
    pub async fn recv(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let mut len = [0u8; 4];
        match self.tcp.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(TAG..=FRAME + TAG).contains(&len) {
            return Err(std::io::Error::other(format!("bad frame length {len}")));
        }
        out.resize(len, 0);
        self.tcp.read_exact(out).await?;
        let n = nonce(self.counter);
        self.counter += 1;
        let plain = self
            .key
            .open_in_place(n, Aad::empty(), out)
            .map_err(|_| std::io::Error::other("a frame did not authenticate"))?
            .len();
        out.truncate(plain);
        Ok(true)
    }

    /// Flushes and closes the sending side.
    pub async fn finish(&mut self) -> std::io::Result<()> {
        self.tcp.flush().await?;
        self.tcp.shutdown().await
    }
}

/// Where a file's bytes go: the libp2p stream itself, or a direct connection beside it (the
/// stream then carries only statuses).
pub enum Channel {
    /// Over the stream.
    Stream(libp2p::Stream),
    /// Over a direct connection.
    Direct(Box<Direct>, libp2p::Stream),
}

impl Channel {
    /// The stream, for statuses.
    pub fn control(&mut self) -> &mut libp2p::Stream {
        match self {
            Channel::Stream(s) | Channel::Direct(_, s) => s,
        }
    }

    /// Whether the bytes go over a direct connection.
    pub fn is_direct(&self) -> bool {
        matches!(self, Channel::Direct(..))
    }

    /// Reads the next bytes into `buf` (resized to what arrived); 0 at the end.
    pub async fn read_into(&mut self, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
        match self {
            Channel::Stream(s) => {
                buf.resize(max, 0);
                let n = s.read(buf).await?;
                buf.truncate(n);
                Ok(n)
            }
            Channel::Direct(d, _) => {
                if d.recv(buf).await? {
                    Ok(buf.len())
                } else {
                    buf.clear();
                    Ok(0)
                }
            }
        }
    }

    /// Sends `data`.
    pub async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Channel::Stream(s) => s.write_all(data).await,
            Channel::Direct(d, _) => d.send(data).await,
        }
    }

    /// Ends what this side sends (the stream's write half, or the direct connection's).
    pub async fn end(&mut self) -> std::io::Result<()> {
        match self {
            Channel::Stream(s) => s.close().await,
            Channel::Direct(d, _) => d.finish().await,
        }
    }
}

/// The server's side: offers a channel on `stream` (or says it has none), then learns
/// whether the opener got through. `None`: use the stream.
pub async fn offer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
) -> std::io::Result<Option<Direct>> {
    let any = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
    let listener = match TcpListener::bind(any).await {
        Ok(l) => l,
        Err(_) => {
            stream.write_all(&[0]).await?;
            stream.flush().await?;
            return Ok(None);
        }
    };
    let port = listener.local_addr()?.port();
    let mut key = [0u8; 32];
    let mut token = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    rand::thread_rng().fill_bytes(&mut token);
    let mut o = Vec::with_capacity(OFFER_LEN);
    o.push(1);
    o.extend_from_slice(&port.to_be_bytes());
    o.extend_from_slice(&key);
    o.extend_from_slice(&token);
    stream.write_all(&o).await?;
    stream.flush().await?;
    let mut got = [0u8; 1];
    stream.read_exact(&mut got).await?;
    if got[0] != 1 {
        return Ok(None);
    }
    // Connections without the token (a port scan, a stranger) are dropped and the wait goes
    // on; only the deadline ends it.
    let deadline = tokio::time::Instant::now() + ACCEPT_TIMEOUT;
    let accepted = loop {
        let Ok(Ok((mut tcp, _))) = tokio::time::timeout_at(deadline, listener.accept()).await
        else {
            break None;
        };
        let mut t = [0u8; 32];
        if let Ok(Ok(_)) = tokio::time::timeout(TOKEN_TIMEOUT, tcp.read_exact(&mut t)).await
            && t == token
        {
            break Some(tcp);
        }
    };
    drop(listener);
    // The opener learns here whether the bytes take the connection or stay on the stream.
    stream.write_all(&[u8::from(accepted.is_some())]).await?;
    stream.flush().await?;
    match accepted {
        Some(tcp) => Ok(Some(Direct::new(tcp, &key)?)),
        None => Ok(None),
    }
}

/// What became of a request for a direct connection.
pub enum Taken {
    /// Connected: the bytes go over it.
    Direct(Box<Direct>),
    /// The server offered none.
    NotOffered,
    /// Offered, but the connection could not be made from here.
    Unreachable,
}

/// The opener's side: reads the server's answer to a request for a direct channel, connects
/// to `ip` when offered, and tells the server over `stream` whether it got through.
pub async fn take<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    ip: IpAddr,
) -> std::io::Result<Taken> {
    let mut kind = [0u8; 1];
    stream.read_exact(&mut kind).await?;
    if kind[0] == 0 {
        return Ok(Taken::NotOffered);
    }
    let mut o = [0u8; OFFER_LEN - 1];
    stream.read_exact(&mut o).await?;
    let port = u16::from_be_bytes([o[0], o[1]]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&o[2..34]);
    let token = &o[34..66];
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut tcp = TcpStream::connect(SocketAddr::new(ip, port)).await?;
        tcp.write_all(token).await?;
        Ok::<_, std::io::Error>(tcp)
    })
    .await;
    match connected {
        Ok(Ok(tcp)) => {
            stream.write_all(&[1]).await?;
            stream.flush().await?;
            // The server confirms it took this connection (a middlebox may have answered
            // the connect instead).
            let mut confirmed = [0u8; 1];
            stream.read_exact(&mut confirmed).await?;
            if confirmed[0] == 1 {
                Ok(Taken::Direct(Box::new(Direct::new(tcp, &key)?)))
            } else {
                Ok(Taken::Unreachable)
            }
        }
        _ => {
            stream.write_all(&[0]).await?;
            stream.flush().await?;
            Ok(Taken::Unreachable)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_arrive_in_order_and_a_changed_byte_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let key = [9u8; 32];
        let send = tokio::spawn(async move {
            let mut d = Direct::new(TcpStream::connect(a).await.unwrap(), &key).unwrap();
            d.send(&vec![1u8; FRAME + 10]).await.unwrap();
            d.send(b"tail").await.unwrap();
            d.finish().await.unwrap();
        });
        let (tcp, _) = l.accept().await.unwrap();
        let mut d = Direct::new(tcp, &key).unwrap();
        let mut out = Vec::new();
        let mut got = Vec::new();
        while d.recv(&mut out).await.unwrap() {
            got.extend_from_slice(&out);
        }
        send.await.unwrap();
        assert_eq!(got.len(), FRAME + 14);
        assert!(got.ends_with(b"tail"));

        // A flipped byte on the wire.
        let send = tokio::spawn(async move {
            let mut raw = TcpStream::connect(a).await.unwrap();
            let k = key_of(&key).unwrap();
            let mut body = b"hello".to_vec();
            let tag = k
                .seal_in_place_separate_tag(nonce(0), Aad::empty(), &mut body)
                .unwrap();
            body.extend_from_slice(tag.as_ref());
            body[0] ^= 1;
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            raw.write_all(&frame).await.unwrap();
            raw.shutdown().await.unwrap();
        });
        let (tcp, _) = l.accept().await.unwrap();
        let mut d = Direct::new(tcp, &key).unwrap();
        assert!(d.recv(&mut out).await.is_err());
        send.await.unwrap();
    }

    /// A futures-io view of a tokio duplex pipe (the stream's traits), for the tests.
    struct Pipe(tokio::io::DuplexStream);

    impl futures::AsyncRead for Pipe {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut rb = tokio::io::ReadBuf::new(buf);
            match tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.0), cx, &mut rb) {
                std::task::Poll::Ready(Ok(())) => std::task::Poll::Ready(Ok(rb.filled().len())),
                std::task::Poll::Ready(Err(e)) => std::task::Poll::Ready(Err(e)),
                std::task::Poll::Pending => std::task::Poll::Pending,
            }
        }
    }

    impl futures::AsyncWrite for Pipe {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.0), cx, buf)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut self.0), cx)
        }
        fn poll_close(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            tokio::io::AsyncWrite::poll_shutdown(std::pin::Pin::new(&mut self.0), cx)
        }
    }

    #[tokio::test]
    async fn an_offer_is_taken_with_its_token_and_refused_without() {
        let (a, b) = tokio::io::duplex(4096);
        let (mut a, mut b) = (Pipe(a), Pipe(b));
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let server = tokio::spawn(async move {
            let mut d = offer(&mut a).await.unwrap().unwrap();
            let mut out = Vec::new();
            assert!(d.recv(&mut out).await.unwrap());
            out
        });
        let Taken::Direct(mut d) = take(&mut b, ip).await.unwrap() else {
            panic!("not taken");
        };
        d.send(b"x").await.unwrap();
        assert_eq!(server.await.unwrap(), b"x");
        // A connection without the token is dropped; the opener's, after it, is taken.
        let (a, b) = tokio::io::duplex(4096);
        let (mut a, mut b) = (Pipe(a), Pipe(b));
        let server = tokio::spawn(async move {
            let mut d = offer(&mut a)
                .await
                .unwrap()
                .expect("the token's connection");
            let mut out = Vec::new();
            assert!(d.recv(&mut out).await.unwrap());
            out
        });
        let mut kind = [0u8; 1];
        b.read_exact(&mut kind).await.unwrap();
        let mut o = [0u8; OFFER_LEN - 1];
        b.read_exact(&mut o).await.unwrap();
        let port = u16::from_be_bytes([o[0], o[1]]);
        let mut stranger = TcpStream::connect(SocketAddr::new(ip, port)).await.unwrap();
        stranger.write_all(&[0u8; 32]).await.unwrap();
        b.write_all(&[1]).await.unwrap();
        let mut tcp = TcpStream::connect(SocketAddr::new(ip, port)).await.unwrap();
        tcp.write_all(&o[34..66]).await.unwrap();
        let mut confirmed = [0u8; 1];
        b.read_exact(&mut confirmed).await.unwrap();
        assert_eq!(confirmed, [1]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&o[2..34]);
        let mut d = Direct::new(tcp, &key).unwrap();
        d.send(b"mine").await.unwrap();
        assert_eq!(server.await.unwrap(), b"mine");
    }
}
