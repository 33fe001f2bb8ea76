//! The one error type every executor returns.

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong in an executor call. Each variant says what failed and, where it helps,
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The runtime behind this executor is not usable on this node (no dockerd, no VMM binary,
    /// no wasm engine). Nothing was attempted.
    #[error("{kind} executor is unavailable on this node: {reason}")]
    Unavailable {
        /// Which executor.
        kind: crate::ExecutorKind,
        /// Why, as found by the probe.
        reason: String,
    },
    /// The image is neither pullable from a registry nor present in the local image store.
    #[error("image {image:?} is not in the local image store and could not be pulled: {detail}")]
    ImageNotFound {
        /// The image reference as given.
        image: String,
        /// What the registry pull reported.
        detail: String,
    },
    /// No execution with this id is known to this executor.
    #[error("no execution {0:?} on this executor")]
    NotFound(String),
    /// An execution with this id already exists.
    #[error("execution {0:?} already exists")]
    AlreadyExists(String),
    /// The spec cannot run on this executor (wrong workload kind, missing field, bad value).
    #[error("invalid execution spec: {0}")]
    InvalidSpec(String),
    /// A call to the runtime did not answer in time.
    #[error("{what} did not answer within {after:?}")]
    Timeout {
        /// The call that timed out.
        what: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// A file the execution needs (kernel, initrd, rootfs, module) is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    File {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The runtime refused or failed the operation.
    #[error("{0}")]
    Runtime(String),
    /// A local I/O error (state directory, sockets, processes).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Short for `Result<T, ExecutorError>`.
pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;

/// Runs `fut` with a deadline, turning expiry into [`ExecutorError::Timeout`].
pub async fn with_deadline<T>(
    what: &str,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r,
        Err(_) => Err(ExecutorError::Timeout {
            what: what.to_string(),
            after,
        }),
    }
}
