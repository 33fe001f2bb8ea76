//! The frames that carry output: on a provider's stream to a follower (one allocation per
//! stream, empty keys) and on the local API to the CLI (every allocation of a deployment,
//! keyed `<node>.<allocation>`).
//!
//! A frame is a 15-byte head — kind (1), key length (2), offset (8), data length (4), all
//! big-endian — then the key and the data. Keys are at most [`MAX_KEY`] bytes and data at
//! most [`MAX_DATA`]; anything else is refused as it is read, before it is buffered.

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt};
use nunet_protocol::AllocationStatus;
use serde::{Deserialize, Serialize};

/// Longest key.
pub const MAX_KEY: usize = 1024;
/// Most bytes of output (or text) in one frame.
pub const MAX_DATA: usize = 256 * 1024;
/// Bytes of a frame before its key and data.
pub const HEAD: usize = 15;

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Standard output (and a VM's console).
    Stdout,
    /// Standard error.
    Stderr,
}

impl Channel {
    /// Both, stdout first.
    pub const BOTH: [Channel; 2] = [Channel::Stdout, Channel::Stderr];

    /// `stdout` / `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
        }
    }
}

/// Where an allocation stands, as a follower learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Its status.
    pub status: AllocationStatus,
    /// Its exit code, when it ended with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Output bytes of `channel` starting at byte `offset` of that channel.
    Output {
        /// Allocation key (empty on a provider stream).
        key: String,
        /// Which stream.
        channel: Channel,
        /// Position of the first byte.
        offset: u64,
        /// The bytes (not necessarily whole lines or characters).
        data: Bytes,
    },
    /// The bytes of `channel` before `to` are no longer kept (the provider's retention
    /// limit); output resumes there.
    Skipped {
        /// Allocation key.
        key: String,
        /// Which stream.
        channel: Channel,
        /// Where output resumes.
        to: u64,
    },
    /// The offsets that follow for `key` count from the start of output `source` (an
    /// allocation's output on one provider). A follower whose cursor names another source
    /// starts again at 0.
    Begin {
        /// Allocation key.
        key: String,
        /// The source's name.
        source: String,
    },
    /// The allocation's status changed; all output before this frame was sent.
    State {
        /// Allocation key.
        key: String,
        /// Where it stands.
        state: State,
    },
    /// The output of `key` (or of everything, with an empty key) cannot be followed.
    Error {
        /// Allocation key, or empty.
        key: String,
        /// Why.
        message: String,
    },
    /// Following ended as it should (every allocation ended and was drained, or the
    /// deployment is over); `status` names why. A stream that ends without it was cut.
    Done {
        /// The deployment's status, or why following stopped.
        status: String,
    },
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or ended inside a frame.
    #[error("output stream: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes are not a frame.
    #[error("output stream: bad frame: {0}")]
    Bad(String),
}

fn bad(m: impl Into<String>) -> FrameError {
    FrameError::Bad(m.into())
}

const OUTPUT: u8 = 1;
const SKIPPED: u8 = 3;
const BEGIN: u8 = 5;
const STATE: u8 = 6;
const ERROR: u8 = 7;
const DONE: u8 = 8;

fn channel_bit(c: Channel) -> u8 {
    match c {
        Channel::Stdout => 0,
        Channel::Stderr => 1,
    }
}

impl Frame {
    /// The frame's key.
    pub fn key(&self) -> &str {
        match self {
            Frame::Output { key, .. }
            | Frame::Skipped { key, .. }
            | Frame::Begin { key, .. }
            | Frame::State { key, .. }
            | Frame::Error { key, .. } => key,
            Frame::Done { .. } => "",
        }
    }

    /// The same frame under `key`.
    pub fn keyed(mut self, new: &str) -> Self {
        match &mut self {
            Frame::Output { key, .. }
            | Frame::Skipped { key, .. }
            | Frame::Begin { key, .. }
            | Frame::State { key, .. }
            | Frame::Error { key, .. } => *key = new.to_string(),
            Frame::Done { .. } => {}
        }
        self
    }

    /// Appends the frame's bytes to `out`. Keys and texts longer than the limits are cut
    /// (on a character boundary); output data must be at most [`MAX_DATA`] (the spool reads
    /// no more).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, offset, data): (u8, u64, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Output {
                channel,
                offset,
                data,
                ..
            } => (
                OUTPUT + channel_bit(*channel),
                *offset,
                data.as_ref().into(),
            ),
            Frame::Skipped { channel, to, .. } => {
                (SKIPPED + channel_bit(*channel), *to, (&[][..]).into())
            }
            Frame::Begin { source, .. } => (BEGIN, 0, clip(source, MAX_DATA).as_bytes().into()),
            Frame::State { state, .. } => (
                STATE,
                0,
                serde_json::to_vec(state).unwrap_or_default().into(),
            ),
            Frame::Error { message, .. } => (ERROR, 0, clip(message, MAX_DATA).as_bytes().into()),
            Frame::Done { status } => (DONE, 0, clip(status, MAX_DATA).as_bytes().into()),
        };
        let key = clip(self.key(), MAX_KEY).as_bytes();
        let data = &data[..data.len().min(MAX_DATA)];
        out.push(kind);
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(data);
    }

    /// The frame as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }

    /// Reads one frame; `None` at a clean end between frames.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
        let mut head = [0u8; HEAD];
        // A clean end is an end before the first byte of a head.
        let mut got = 0;
        while got < HEAD {
            let n = r.read(&mut head[got..]).await?;
            if n == 0 {
                return if got == 0 {
                    Ok(None)
                } else {
                    Err(bad("the stream ended inside a frame head"))
                };
            }
            got += n;
        }
        let (key_len, data_len) = parse_head(&head)?;
        let mut body = vec![0u8; key_len + data_len];
        r.read_exact(&mut body).await?;
        let data = body.split_off(key_len);
        decode(head, body, data).map(Some)
    }

    /// Takes one whole frame from the front of `buf`; `None` while it holds only part of
    /// one (read more and try again).
    pub fn take(buf: &mut bytes::BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEAD {
            return Ok(None);
        }
        let mut head = [0u8; HEAD];
        head.copy_from_slice(&buf[..HEAD]);
        let (key_len, data_len) = parse_head(&head)?;
        if buf.len() < HEAD + key_len + data_len {
            return Ok(None);
        }
        let mut whole = buf.split_to(HEAD + key_len + data_len);
        let _ = whole.split_to(HEAD);
        let data = whole.split_off(key_len);
        decode(head, whole.to_vec(), data.to_vec()).map(Some)
    }
}

/// Key and data lengths from a head, checked against the limits.
fn parse_head(head: &[u8; HEAD]) -> Result<(usize, usize), FrameError> {
    let key_len = usize::from(u16::from_be_bytes([head[1], head[2]]));
    let data_len = u32::from_be_bytes([head[11], head[12], head[13], head[14]]) as usize;
    if key_len > MAX_KEY {
        return Err(bad(format!("key of {key_len} bytes (at most {MAX_KEY})")));
    }
    if data_len > MAX_DATA {
        return Err(bad(format!(
            "{data_len} bytes of data (at most {MAX_DATA})"
        )));
    }
    Ok((key_len, data_len))
}

fn decode(head: [u8; HEAD], key: Vec<u8>, data: Vec<u8>) -> Result<Frame, FrameError> {
    let key = String::from_utf8(key).map_err(|_| bad("key is not UTF-8"))?;
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&head[3..11]);
    let offset = u64::from_be_bytes(offset);
    let text = |d: Vec<u8>| String::from_utf8(d).map_err(|_| bad("text is not UTF-8"));
    let channel = |k: u8| {
        if k & 1 == 0 {
            Channel::Stdout
        } else {
            Channel::Stderr
        }
    };
    Ok(match head[0] {
        k @ (OUTPUT | 2) => Frame::Output {
            key,
            channel: channel(k - OUTPUT),
            offset,
            data: Bytes::from(data),
        },
        k @ (SKIPPED | 4) => {
            if !data.is_empty() {
                return Err(bad("a skip frame with data"));
            }
            Frame::Skipped {
                key,
                channel: channel(k - SKIPPED),
                to: offset,
            }
        }
        BEGIN => Frame::Begin {
            key,
            source: text(data)?,
        },
        STATE => Frame::State {
            key,
            state: serde_json::from_slice(&data).map_err(|e| bad(format!("state: {e}")))?,
        },
        ERROR => Frame::Error {
            key,
            message: text(data)?,
        },
        DONE => Frame::Done {
            status: text(data)?,
        },
        k => return Err(bad(format!("unknown kind {k}"))),
    })
}

/// `s` cut to at most `max` bytes on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn all() -> Vec<Frame> {
        vec![
            Frame::Output {
                key: "n1.job".into(),
                channel: Channel::Stderr,
                offset: 1 << 40,
                data: Bytes::from_static(b"\xffbinary\n"),
            },
            Frame::Skipped {
                key: String::new(),
                channel: Channel::Stdout,
                to: 77,
            },
            Frame::Begin {
                key: "k".into(),
                source: "abc/def".into(),
            },
            Frame::State {
                key: "k".into(),
                state: State {
                    status: AllocationStatus::Completed,
                    exit_code: Some(0),
                },
            },
            Frame::Error {
                key: String::new(),
                message: "gone".into(),
            },
            Frame::Done {
                status: "completed".into(),
            },
        ]
    }

    #[test]
    fn frames_round_trip_through_both_readers() {
        let mut wire = Vec::new();
        for f in all() {
            f.encode(&mut wire);
        }
        let mut r = futures::io::Cursor::new(wire.clone());
        let mut read = Vec::new();
        futures::executor::block_on(async {
            while let Some(f) = Frame::read(&mut r).await.unwrap() {
                read.push(f);
            }
        });
        assert_eq!(read, all());
        // Byte by byte through the buffer reader: partial frames wait for more.
        let mut buf = bytes::BytesMut::new();
        let mut took = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = Frame::take(&mut buf).unwrap() {
                took.push(f);
            }
        }
        assert_eq!(took, all());
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_and_unknown_frames_are_refused_before_buffering() {
        let mut head = vec![OUTPUT, 0, 0];
        head.extend_from_slice(&0u64.to_be_bytes());
        head.extend_from_slice(&(u32::MAX).to_be_bytes());
        let mut buf = bytes::BytesMut::from(&head[..]);
        assert!(
            matches!(Frame::take(&mut buf), Err(FrameError::Bad(m)) if m.contains("bytes of data"))
        );
        let mut big_key = vec![OUTPUT, 0xff, 0xff];
        big_key.extend_from_slice(&[0; 12]);
        let mut r = futures::io::Cursor::new(big_key);
        let e = futures::executor::block_on(Frame::read(&mut r)).unwrap_err();
        assert!(e.to_string().contains("key of 65535 bytes"), "{e}");
        let mut unknown = vec![42u8, 0, 0];
        unknown.extend_from_slice(&[0; 12]);
        let mut buf = bytes::BytesMut::from(&unknown[..]);
        assert!(Frame::take(&mut buf).is_err());
        // Cut inside a head: an error, not a clean end.
        let mut r = futures::io::Cursor::new(vec![OUTPUT, 0]);
        assert!(futures::executor::block_on(Frame::read(&mut r)).is_err());
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary() {
        let f = Frame::Error {
            key: "é".repeat(MAX_KEY),
            message: "x".into(),
        };
        let mut buf = bytes::BytesMut::from(&f.to_bytes()[..]);
        let back = Frame::take(&mut buf).unwrap().unwrap();
        assert_eq!(back.key().len(), MAX_KEY);
    }
}
