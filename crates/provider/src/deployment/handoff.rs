//! Tasks' outputs passed to other allocations by name, provider to provider:
//!
//! - `/dms/allocation/output/share` (from the allocation's orchestrator, on a completed
//!   task's actor): lists the output directory its last start wrote and hands out a read
//!   ticket for the node that will fetch it;
//! - a start whose message carries such tickets fetches each input not staged yet from the
//!   node that shared it (`nunet-files`: BLAKE3 per file, a fetch cut off resumes) into the
//!   input's staging directory before anything else is prepared; the input counts against
//!   the allocation's disk like an object-store input and is mounted read-only.
//!
//! An output stays in its task's staging directory until the ensemble ends, so it can be
//! shared again (a waiting allocation moved to another provider fetches it anew).

use std::path::Path;
use std::sync::{Arc, Mutex};

use nunet_actor::{ActorError, ErrorKind, Incoming};
use nunet_ensemble::spec::InputSource;
use nunet_protocol::AllocationStatus;
use nunet_protocol::transfer::{FetchInput, ShareOutput, SharedOutput};

use super::objects::{input_dir, mark_staged, output_dir, staged};
use super::{AllocRecord, Provider, failed};

impl Provider {
    /// `/dms/allocation/output/share` on the actor of the allocation in `cell`.
    pub(super) async fn share_output(
        &self,
        cell: &Arc<Mutex<AllocRecord>>,
        m: &Incoming,
        req: ShareOutput,
    ) -> Result<SharedOutput, ActorError> {
        let (rec, _) = self.own(cell, m)?;
        if rec.status != AllocationStatus::Completed {
            return Err(failed(format!(
                "allocation {} is {}: only a completed task's outputs can be fetched",
                rec.id, rec.status
            )));
        }
        let i = rec
            .outputs
            .iter()
            .position(|o| o.name.as_deref() == Some(req.output.as_str()))
            .ok_or_else(|| {
                failed(format!(
                    "allocation {} has no output named {:?}",
                    rec.id, req.output
                ))
            })?;
        let reader = req.reader.parse().map_err(|_| {
            ActorError::new(
                ErrorKind::Rejected,
                format!("reader {:?} is not a peer id", req.reader),
            )
        })?;
        let dir = self.volumes.staging_dir(&rec.ensemble_id, &rec.name)?;
        let out = output_dir(&dir, rec.generation, i);
        if !out.is_dir() {
            return Err(failed(format!(
                "output {:?} of allocation {} is gone from this provider",
                req.output, rec.id
            )));
        }
        let (ticket, manifest) = self.transfers.share(reader, out).await?;
        tracing::info!(allocation = %rec.id, output = %req.output, reader = %req.reader,
            files = manifest.files(), bytes = manifest.bytes(), "output shared");
        Ok(SharedOutput { ticket, manifest })
    }

    /// Fetches every input of `rec` from another allocation's output that `fetch` carries a
    /// ticket for and that is not staged under `dir` yet.
    pub(super) async fn fetch_inputs(
        &self,
        rec: &AllocRecord,
        dir: &Path,
        fetch: &[FetchInput],
    ) -> Result<(), ActorError> {
        let mut left = rec.resources.disk.size;
        for (i, input) in rec.inputs.iter().enumerate() {
            let (at, content) = input_dir(dir, input);
            if let Some(bytes) = staged(&at) {
                left = left.saturating_sub(bytes);
                continue;
            }
            if !matches!(input.source, InputSource::Output(_)) {
                continue;
            }
            let Some(f) = fetch.iter().find(|f| f.input as usize == i) else {
                continue; // `objects::prepare` says it is missing
            };
            let peer = f.peer.parse().map_err(|_| {
                ActorError::new(
                    ErrorKind::Rejected,
                    format!("inputs[{i}]: {:?} is not a peer id", f.peer),
                )
            })?;
            let what = input.source.describe();
            std::fs::create_dir_all(&at).map_err(|e| failed(format!("{}: {e}", at.display())))?;
            // What an earlier attempt left stays: its files are not fetched again, and a
            // partial file resumes.
            let d = self
                .transfers
                .download(
                    peer,
                    &f.shared.ticket,
                    f.shared.manifest.clone(),
                    &content,
                    left,
                )
                .await
                .map_err(|e| failed(format!("inputs[{i}] ({what}) from {}: {e}", f.peer)))?;
            let bytes = f.shared.manifest.bytes();
            mark_staged(&at, bytes).map_err(failed)?;
            left = left.saturating_sub(bytes);
            tracing::info!(allocation = %rec.id, input = i, source = %what, from = %f.peer,
                files = d.files, bytes = d.bytes, "input fetched from another provider");
        }
        Ok(())
    }
}
