//! NuNet's Go actor wire format, as its nodes (`nunet/device-management-service`) write it.
//!
//! What it is for: turning the bytes a NuNet node sends on `actor/<inbox>/messages/0.0.1`
//! into an authenticated envelope of this node, and this node's answers back into bytes a
//! NuNet node verifies. The reading of the Go source it follows is `docs/nunet-wire.md`; each
//! rule below names the Go file it comes from.
//!
//! - [`GoEnvelope`]: the envelope (`actor/interface.go`) encoded exactly as Go's
//!   `encoding/json` does, because a Go receiver re-encodes what it parsed and verifies the
//!   signature over that, never over the bytes it received.
//! - [`GoEnvelope::signing_bytes`]: `"dms:msg:"` ‖ that JSON without `sig` (`actor/msg.go`).
//! - [`key_id`]: `crypto.ID`, base32 of the libp2p protobuf public key (`lib/crypto/id.go`).
//! - [`GoEnvelope::to_actor`] and [`reply_to`]: the conversion to this node's envelope and
//!   the reply NuNet expects (a new message to `opt.cont`, its tokens chained on the
//!   requester's delegation).
//!
//! What it must not do: network I/O, or deciding what a sender may do. It authenticates
//! (signature, key type, expiry) and converts; capabilities are checked by the actor system.

mod envelope;
mod id;
mod reply;

pub use envelope::{GoEnvelope, GoHandle, MAX_GO_ENVELOPE, NUNET_TOPICS, SIGNING_PREFIX};
pub use id::{did_of_key_id, key_id, key_id_b32};
pub use reply::{answer, reply_to, reply_tokens};

/// What is wrong with a NuNet envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GoWireError {
    /// Not JSON of NuNet's envelope shape.
    #[error("malformed NuNet envelope: {0}")]
    Malformed(String),
    /// Larger than a NuNet node sends or accepts.
    #[error("NuNet envelope of {0} bytes exceeds the {MAX_GO_ENVELOPE}-byte limit")]
    TooLarge(usize),
    /// A key id that is not base32 of an ed25519 or secp256k1 libp2p public key.
    #[error("bad key id: {0}")]
    BadKeyId(String),
    /// The signature does not verify against `from.id`.
    #[error("NuNet envelope signature does not verify")]
    BadSignature,
    /// Past `opt.exp`.
    #[error("NuNet envelope expired")]
    Expired,
    /// A reply could not be built (no `opt.cont`, no key to sign with, a token error).
    #[error("cannot answer: {0}")]
    Reply(String),
}
