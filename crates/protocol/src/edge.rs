//! Edge constraints: the orchestrator asks one candidate provider to measure its link to
//! another (round trip, and throughput when a bandwidth bound is asked).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long one edge check may take (NuNet `VerifyEdgeConstraintTimeout`).
pub const EDGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Payload of [`crate::names::EDGE_CONSTRAINT`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeRequest {
    /// The other candidate peer (base58 peer id).
    pub peer: String,
    /// Largest acceptable round trip, ms (informative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Smallest acceptable bandwidth, Mbit/s; only when present is throughput probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<f64>,
}

/// Reply of [`crate::names::EDGE_CONSTRAINT`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EdgeReply {
    /// Smallest of three round trips, ms.
    pub rtt_ms: f64,
    /// Measured throughput, Mbit/s (only when a bandwidth bound was asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<f64>,
}
