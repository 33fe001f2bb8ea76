//! Allocation output: the provider's per-ensemble logs behaviour (byte cursors per stream,
//! one bounded chunk per call) and the orchestrating node's `logs`, which gathers those per
//! allocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::status::{AllocationStatus, DeploymentStatus};

/// Default and largest number of log bytes returned per stream and call.
pub const LOG_CHUNK: usize = 256 * 1024;

/// Payload of the per-ensemble logs behavior: which allocation and where to resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogsRequest {
    /// Allocation name or id.
    pub allocation: String,
    /// Bytes of stdout already seen.
    #[serde(default)]
    pub stdout_offset: u64,
    /// Bytes of stderr already seen.
    #[serde(default)]
    pub stderr_offset: u64,
    /// Most bytes wanted per stream (0 = [`LOG_CHUNK`]; never more than it).
    #[serde(default)]
    pub max_bytes: u64,
}

/// The part of `full` from byte `offset`, at most `max` bytes, cut on character
/// boundaries; returns it and the offset after it (to pass back next time), which is never
/// before `offset`.
pub fn log_slice(full: &str, offset: u64, max: usize) -> (String, u64) {
    let max = if max == 0 {
        LOG_CHUNK
    } else {
        max.min(LOG_CHUNK)
    };
    if usize::try_from(offset).map_or(true, |o| o > full.len()) {
        // Less output than already seen (e.g. read while the execution was being removed):
        // nothing new, and the cursor never moves back (that would print things twice).
        return (String::new(), offset);
    }
    let mut start = usize::try_from(offset).unwrap_or(0);
    while !full.is_char_boundary(start) {
        start += 1;
    }
    let mut end = start.saturating_add(max).min(full.len());
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    (full[start..end].to_string(), end as u64)
}

/// Where a reader of one allocation's output stands, per stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogCursor {
    /// Bytes of stdout already seen.
    #[serde(default)]
    pub stdout_offset: u64,
    /// Bytes of stderr already seen.
    #[serde(default)]
    pub stderr_offset: u64,
    /// The output these offsets count in (a follow's `Begin` frame names it); offsets of
    /// another source (the allocation moved to another provider) start again at 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Payload of the per-ensemble follow behavior: a ticket to follow one allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowRequest {
    /// Allocation id.
    pub allocation: String,
}

/// Reply of the follow behavior: a ticket for one output stream from the provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowTicket {
    /// Single-use, bound to the caller's peer, hex.
    pub ticket: String,
    /// The output's source: offsets of another source do not apply to it.
    pub source: String,
}

/// One allocation's output (a provider's reply to [`LogsRequest`], and each entry of
/// [`DeploymentLogs`]); `error` alone when it could not be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationLogs {
    /// Allocation id (providers with the per-ensemble behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<String>,
    /// Allocation name (providers with the per-ensemble behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AllocationStatus>,
    /// Exit code, when it ended with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// New stdout from the cursor.
    #[serde(default)]
    pub stdout: String,
    /// New stderr from the cursor.
    #[serde(default)]
    pub stderr: String,
    /// Cursor after this stdout.
    #[serde(default)]
    pub stdout_offset: u64,
    /// Cursor after this stderr.
    #[serde(default)]
    pub stderr_offset: u64,
    /// Why the output could not be read (gone, unreachable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AllocationLogs {
    /// An entry that only says why there is no output.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            error: Some(message.into()),
            ..Self::default()
        }
    }

    /// The cursor to send back next time.
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            stdout_offset: self.stdout_offset,
            stderr_offset: self.stderr_offset,
            source: None,
        }
    }
}

/// `logs` on the orchestrating node: every allocation of a deployment (or one), from the
/// cursors given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentLogsRequest {
    /// Deployment id or prefix.
    #[serde(alias = "ensemble_id")]
    pub id: String,
    /// Only this allocation (name, `<node>.<name>` or id).
    #[serde(default)]
    pub allocation: Option<String>,
    /// Cursors per allocation (`<node>.<alloc>`), from the previous reply.
    #[serde(default)]
    pub cursors: BTreeMap<String, LogCursor>,
    /// Follow: the reply names a session whose output the local API streams
    /// (`GET /api/v1/output/<session>`) from these cursors, instead of carrying output.
    #[serde(default)]
    pub follow: bool,
}

/// Reply of `logs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentLogs {
    /// Deployment id.
    pub id: String,
    /// Its status.
    pub status: DeploymentStatus,
    /// Output per allocation (`<node>.<alloc>`).
    pub logs: BTreeMap<String, AllocationLogs>,
    /// With `follow`: the session to claim on the local API, once, within 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_slices_resume_where_they_stopped_and_respect_char_boundaries() {
        let full = "héllo wörld\n";
        let (a, o1) = log_slice(full, 0, 2);
        // "h" + the first byte of "é" would split a character: the cut moves back.
        assert_eq!(a, "h");
        assert_eq!(o1, 1);
        let (b, o2) = log_slice(full, o1, 5);
        assert_eq!(b, "éllo");
        let (rest, end) = log_slice(full, o2, 0);
        assert_eq!(format!("{a}{b}{rest}"), full);
        assert_eq!(end, full.len() as u64);
        // Nothing new: empty, same offset; an offset past the end stays where it is.
        assert_eq!(log_slice(full, end, 0), (String::new(), end));
        assert_eq!(log_slice(full, 10_000, 0), (String::new(), 10_000));
        // An offset inside a character resumes at the next one.
        assert_eq!(log_slice(full, 2, 3).0, "llo");
    }
}
