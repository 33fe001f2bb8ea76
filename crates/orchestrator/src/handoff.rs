//! Inputs taken from another allocation's output (`from: <allocation>/<name>`): an
//! allocation with such inputs starts only once every allocation they name has completed;
//! then the orchestrator asks each of those allocations' actors to share the output with the
//! node that runs the waiting allocation, and hands it the tickets and listings in its start
//! message. The bytes go between the two providers directly (`nunet-files`); nothing passes
//! through the orchestrator but the listing.

use std::time::Duration;

use nunet_ensemble::spec::InputSource;
use nunet_protocol::calls::AllocationShareOutput;
use nunet_protocol::transfer::{
    FetchInput, MAX_ENTRIES, MAX_TOTAL_PATH_BYTES, ShareOutput, StartRequest,
};
use nunet_protocol::{AllocationStatus, ManifestAllocation};

use crate::engine::Engine;
use crate::state::Deployment;

/// How long a provider may take to list (and hash) an output it shares.
pub const SHARE_TIMEOUT: Duration = Duration::from_secs(120);
/// Starts in a row of an allocation that waited for outputs before the deployment fails
/// (the supervisor tries again at its next check).
pub const START_TRIES: u32 = 3;

/// The manifest entry of allocation `name`.
fn entry<'a>(rec: &'a Deployment, name: &str) -> Option<(&'a String, &'a ManifestAllocation)> {
    let suffix = format!(".{name}");
    rec.manifest
        .allocations
        .iter()
        .find(|(k, _)| k.ends_with(&suffix))
}

/// The allocations whose outputs allocation `name` takes and that have not completed yet
/// (empty: it may start).
pub fn waiting_on(rec: &Deployment, name: &str) -> Vec<String> {
    let Some(a) = rec.ensemble.allocation(name) else {
        return Vec::new();
    };
    let mut out: Vec<String> = a
        .producers()
        .filter(|p| entry(rec, p).is_none_or(|(_, m)| m.status != AllocationStatus::Completed))
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Allocations that take another allocation's output, and those that depend on one of them
/// (directly or not): the ones a start round may leave waiting.
fn downstream(e: &nunet_ensemble::Ensemble) -> Vec<&str> {
    let mut out: Vec<&str> = e
        .allocations
        .iter()
        .filter(|a| a.producers().next().is_some())
        .map(|a| a.name.as_str())
        .collect();
    loop {
        let more: Vec<&str> = e
            .allocations
            .iter()
            .filter(|a| !out.contains(&a.name.as_str()))
            .filter(|a| a.depends_on.iter().any(|d| out.contains(&d.as_str())))
            .map(|a| a.name.as_str())
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

/// Whether an allocation a start round left waiting may start now: everything whose output
/// it takes completed, and everything it depends on started.
pub fn someone_ready(rec: &Deployment) -> bool {
    let pending =
        |n: &str| entry(rec, n).is_none_or(|(_, m)| m.status == AllocationStatus::Pending);
    // Only a placed allocation with an actor can be started (one a failed move left out of
    // the manifest cannot).
    let startable = |n: &str| {
        entry(rec, n)
            .is_some_and(|(_, m)| m.status == AllocationStatus::Pending && m.handle.is_some())
    };
    downstream(&rec.ensemble).into_iter().any(|n| {
        startable(n)
            && waiting_on(rec, n).is_empty()
            && rec
                .ensemble
                .allocation(n)
                .is_some_and(|a| a.depends_on.iter().all(|d| !pending(d)))
    })
}

impl Engine {
    /// What allocation `name`, run by the node with peer id `reader`, needs to start: each of
    /// its inputs from another allocation's output, shared by that allocation's actor.
    pub(crate) async fn start_request(
        &self,
        rec: &Deployment,
        name: &str,
        reader: &str,
    ) -> Result<StartRequest, String> {
        let Some(a) = rec.ensemble.allocation(name) else {
            return Ok(StartRequest::default());
        };
        let mut req = StartRequest::default();
        for (i, input) in a.inputs.iter().enumerate() {
            let InputSource::Output(r) = &input.source else {
                continue;
            };
            let (key, producer) = entry(rec, &r.allocation)
                .ok_or_else(|| format!("inputs[{i}]: no allocation {} placed", r.allocation))?;
            let handle = producer
                .handle
                .as_ref()
                .ok_or_else(|| format!("inputs[{i}]: {key} has no actor"))?;
            let peer = rec
                .manifest
                .nodes
                .get(&producer.node_id)
                .map(|n| n.peer.clone())
                .unwrap_or_default();
            let t = self.paths.timeout(SHARE_TIMEOUT, &handle.addr.host, 2);
            let shared = self
                .call::<AllocationShareOutput>(
                    handle,
                    &ShareOutput {
                        output: r.output.clone(),
                        reader: reader.to_string(),
                    },
                    t,
                )
                .await
                .map_err(|e| {
                    format!(
                        "inputs[{i}] of {name}: {key} on {peer} did not share output {:?}: {}",
                        r.output, e.message
                    )
                })?;
            if shared.manifest.skipped_total > 0 {
                let some: Vec<String> = shared.manifest.skipped.iter().take(3).cloned().collect();
                self.event(format!(
                    "inputs[{i}] of {name}: {} entr(ies) of {key}'s output {:?} are not carried \
                     (symlinks, devices, names that are not UTF-8), e.g. {}",
                    shared.manifest.skipped_total,
                    r.output,
                    some.join("; ")
                ));
            }
            req.inputs.push(FetchInput {
                input: i as u32,
                peer,
                shared,
            });
        }
        let paths: usize = req
            .inputs
            .iter()
            .flat_map(|f| &f.shared.manifest.entries)
            .map(|e| e.path.len())
            .sum();
        if req.entries() > MAX_ENTRIES || paths > MAX_TOTAL_PATH_BYTES {
            return Err(format!(
                "the outputs {name} takes list {} files and directories with {paths} bytes of \
                 paths together; at most {MAX_ENTRIES} and {MAX_TOTAL_PATH_BYTES} (pack them \
                 into an archive)",
                req.entries()
            ));
        }
        Ok(req)
    }
}
