//! The behaviours of a transfer and their messages. A node asks a peer to `read` or `write`
//! (capability-checked there like any call) and gets a ticket for the streams; the CLI asks
//! its own node to `fetch` from or `send` to a peer and gets a session for the local API's
//! file routes, which pipe each file through a stream.

use nunet_protocol::Call;
use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// `/dms/node/files/read`: a peer asks this node for a file or directory.
#[derive(Debug, Clone, Copy)]
pub struct FilesRead;
/// `/dms/node/files/write`: a peer asks this node to take a file or directory.
#[derive(Debug, Clone, Copy)]
pub struct FilesWrite;
/// `/dms/node/cp/fetch`: the CLI asks its node to copy from a peer. Not under
/// `/dms/node/files`, so granting a peer that (read and write) never lets it make this node
/// act on its own authority towards a third node.
#[derive(Debug, Clone, Copy)]
pub struct FilesFetch;
/// `/dms/node/cp/send`: the CLI asks its node to copy to a peer (see [`FilesFetch`]).
#[derive(Debug, Clone, Copy)]
pub struct FilesSend;

/// What to read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRequest {
    /// A path in the node's file area (relative) or under its `files.roots` (absolute).
    pub path: String,
}

/// The source, listed, and the ticket to stream its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadReply {
    /// 32 bytes, hex; valid for the asking node's streams only.
    pub ticket: String,
    /// What will be sent.
    pub manifest: Manifest,
    /// The source as resolved on that node.
    pub source: String,
}

/// Where to write what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteRequest {
    /// A path in the node's file area (relative) or under its `files.roots` (absolute): an
    /// existing directory to copy into, or a new name.
    pub path: String,
    /// What will come.
    pub manifest: Manifest,
}

/// The ticket to stream the files, and where each one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteReply {
    /// 32 bytes, hex; valid for the asking node's streams only.
    pub ticket: String,
    /// Per manifest entry, the byte to start at (what an interrupted earlier attempt left,
    /// or 0); `null` for a file already there with these bytes, and for directories.
    pub offsets: Vec<Option<u64>>,
    /// Where the source lands, as resolved on that node.
    pub target: String,
}

/// Copy from a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The peer: DID or peer id.
    pub peer: String,
    /// The path on that peer.
    pub path: String,
}

/// A session for the local API's file routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchReply {
    /// For `GET /api/v1/files/<session>/<index>?offset=N`.
    pub session: String,
    /// What the peer will send.
    pub manifest: Manifest,
    /// The source as resolved on the peer.
    pub source: String,
}

/// Copy to a peer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The peer: DID or peer id.
    pub peer: String,
    /// The path on that peer.
    pub path: String,
    /// What the CLI will send (it lists and hashes the local source).
    pub manifest: Manifest,
}

/// A session for the local API's file routes, and where each file starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendReply {
    /// For `PUT /api/v1/files/<session>/<index>?offset=N`.
    pub session: String,
    /// As [`WriteReply::offsets`].
    pub offsets: Vec<Option<u64>>,
    /// Where the source lands on the peer.
    pub target: String,
}

impl Call for FilesRead {
    const NAME: &'static str = "/dms/node/files/read";
    type Request = ReadRequest;
    type Reply = ReadReply;
}

impl Call for FilesWrite {
    const NAME: &'static str = "/dms/node/files/write";
    type Request = WriteRequest;
    type Reply = WriteReply;
}

impl Call for FilesFetch {
    const NAME: &'static str = "/dms/node/cp/fetch";
    type Request = FetchRequest;
    type Reply = FetchReply;
}

impl Call for FilesSend {
    const NAME: &'static str = "/dms/node/cp/send";
    type Request = SendRequest;
    type Reply = SendReply;
}
