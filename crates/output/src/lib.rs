//! Allocation output (`deployment logs`): kept on the provider and pushed to followers.
//!
//! The provider writes each allocation's stdout and stderr into a [`spool::Spool`]:
//! append-only files where every byte has a stable offset, bounded per stream by a
//! retention limit. A follower (the orchestrating node) gets a ticket through a
//! capability-checked actor call and opens a [`serve::PROTOCOL`] stream with its offsets;
//! the provider pushes [`frame::Frame`]s as output arrives, and the stream's flow control
//! is the back-pressure. The orchestrating node merges its allocations' streams for the
//! CLI on its local API through a [`sessions::Sessions`] entry. Because every frame carries
//! its offset, a follower that reconnects asks for exactly the bytes after the last ones it
//! got: no gap, no duplicate.
//!
//! This crate must not decide who may follow what (the actor layer checks the caller before
//! a ticket is issued), read an executor itself (the provider feeds the spool), or keep
//! output in memory beyond one frame per stream.

pub mod frame;
pub mod serve;
pub mod sessions;
pub mod spool;

pub use frame::{Channel, Frame, FrameError, State};
pub use serve::{Server, Ticket};
pub use sessions::Sessions;
pub use spool::{Mark, Spool, Spools, Writer};

/// What went wrong with output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The spool's files.
    #[error("allocation output: {0}")]
    Spool(#[source] std::io::Error),
    /// The stream server.
    #[error("output streams: {0}")]
    Serve(String),
    /// Following a provider's stream.
    #[error("{0}")]
    Follow(String),
}
