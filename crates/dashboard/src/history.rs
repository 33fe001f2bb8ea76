//! The node's resources over time, for the dashboard's chart: one [`Sample`] every few seconds
//! (`crate::SAMPLE_EVERY`), the latest [`KEEP`] kept in memory (an hour at 5 s). Nothing is
//! written to disk: after a restart the chart starts again.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Samples kept.
pub const KEEP: usize = 720;

/// CPU, memory and disk of one kind (onboarded, free, allocated, committed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Amounts {
    /// Cores.
    pub cpu_cores: f64,
    /// Memory, bytes.
    pub ram_bytes: u64,
    /// Disk, bytes.
    pub disk_bytes: u64,
}

/// The resources at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix ms.
    pub at_ms: i64,
    /// Whether the node was onboarded (all amounts are zero when not).
    pub onboarded: bool,
    /// What the provider onboarded.
    pub total: Amounts,
    /// Not committed or allocated.
    pub free: Amounts,
    /// Held by running or starting allocations.
    pub allocated: Amounts,
    /// Promised to an orchestrator (two-phase commit), not yet allocated.
    pub committed: Amounts,
}

/// The latest samples.
pub struct History {
    keep: usize,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// Keeps the latest `keep` samples (at least 1).
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// Adds the newest sample, dropping the oldest beyond the limit.
    pub fn push(&self, s: Sample) {
        let mut v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        v.push_back(s);
        while v.len() > self.keep {
            v.pop_front();
        }
    }

    /// The samples taken after `after_ms` (Unix ms), oldest first.
    pub fn since(&self, after_ms: i64) -> Vec<Sample> {
        let v = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        v.iter().filter(|s| s.at_ms > after_ms).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Sample {
        Sample {
            at_ms: ms,
            onboarded: true,
            total: Amounts::default(),
            free: Amounts::default(),
            allocated: Amounts::default(),
            committed: Amounts::default(),
        }
    }

    #[test]
    fn keeps_the_latest_samples_in_order() {
        let h = History::new(3);
        for ms in 1..=5 {
            h.push(at(ms));
        }
        let got: Vec<i64> = h.since(0).iter().map(|s| s.at_ms).collect();
        assert_eq!(got, [3, 4, 5]);
        let got: Vec<i64> = h.since(3).iter().map(|s| s.at_ms).collect();
        assert_eq!(got, [4, 5]);
        assert!(h.since(5).is_empty());
    }
}
