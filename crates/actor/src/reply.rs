use serde::{Deserialize, Serialize};

/// What kind of failure an invocation met.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The capability check failed (the message names the rule).
    Denied,
    /// Signature, expiry, replay or format problem.
    Rejected,
    /// No such behavior or actor here.
    NotFound,
    /// The deadline passed.
    Timeout,
    /// The behavior ran and failed.
    Failed,
    /// The message could not be delivered.
    Unreachable,
}

/// An error returned to an invoker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ActorError {
    /// Category.
    pub kind: ErrorKind,
    /// For denials, the capability rule that failed (e.g. `expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Human-readable reason.
    pub message: String,
}

impl ActorError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            rule: None,
            message: message.into(),
        }
    }

    /// A behavior failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }
}

/// The payload of a reply envelope: `{"ok": <value>}` or `{"error": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The behavior's result.
    Ok(serde_json::Value),
    /// Why there is no result.
    Error(ActorError),
}

impl Reply {
    /// From a behavior's result.
    pub fn from_result(r: Result<serde_json::Value, ActorError>) -> Self {
        match r {
            Ok(v) => Reply::Ok(v),
            Err(e) => Reply::Error(e),
        }
    }

    /// Into a result.
    pub fn into_result(self) -> Result<serde_json::Value, ActorError> {
        match self {
            Reply::Ok(v) => Ok(v),
            Reply::Error(e) => Err(e),
        }
    }
}
