//! Files and directories moved between DMS nodes (`nunet cp`).
//!
//! A transfer is a [`manifest::Manifest`] (every directory and regular file with its size,
//! mode and BLAKE3) followed by one libp2p stream per file ([`wire`]). Who may read or write
//! what is decided before any stream opens: the actor layer checks the caller's capability
//! for `/dms/node/files/read` or `/dms/node/files/write`, and the node resolves the path in
//! its [`area::Area`] (`<data_dir>/files` and `files.roots`, symlinks included). The call
//! hands out a ticket bound to the caller's peer id ([`service`]). Receivers write into a
//! partial file hashed as it grows and renamed into place only when the digest matches
//! ([`receive`]); an interrupted file resumes where its partial file ends.
//!
//! This crate must not grant anything itself (capabilities are the actor layer's), follow a
//! symlink below a source or a destination, or write outside the resolved destination.

pub mod area;
pub mod calls;
pub mod direct;
pub mod handoff;
mod leases;
pub mod manifest;
pub mod receive;
pub mod server;
pub mod service;
pub mod wire;

pub use area::{Area, AreaError, Destination};
pub use calls::{
    FetchReply, FetchRequest, FilesFetch, FilesRead, FilesSend, FilesWrite, ReadReply, ReadRequest,
    SendReply, SendRequest, WriteReply, WriteRequest,
};
pub use handoff::Downloaded;
pub use manifest::{Entry, Kind, Manifest, ManifestError};
pub use receive::{ReceiveError, Receiver};
pub use service::{Files, FilesError};
