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
    /// ticket for, unless what is staged under `dir` is that very listing. An input staged
    /// from another listing (its producer ran again) is fetched anew.
    pub(super) async fn fetch_inputs(
        &self,
        rec: &AllocRecord,
        dir: &Path,
        fetch: &[FetchInput],
    ) -> Result<(), ActorError> {
        // A ticket for anything but an input from another allocation's output is refused,
        // never ignored.
        if let Some(f) = fetch.iter().find(|f| {
            !rec.inputs
                .get(f.input as usize)
                .is_some_and(|x| matches!(x.source, InputSource::Output(_)))
        }) {
            return Err(ActorError::new(
                ErrorKind::Rejected,
                format!(
                    "the start names inputs[{}], which is not an input from another allocation's output",
                    f.input
                ),
            ));
        }
        // One budget for all inputs: the allocation's disk, less what is staged already.
        let mut left = rec.resources.disk.size.saturating_sub(
            rec.inputs
                .iter()
                .filter_map(|x| staged(&input_dir(dir, x).0))
                .sum(),
        );
        for (i, input) in rec.inputs.iter().enumerate() {
            if !matches!(input.source, InputSource::Output(_)) {
                continue;
            }
            let Some(f) = fetch.iter().find(|f| f.input as usize == i) else {
                continue; // staged already, or `objects::prepare` says it is missing
            };
            let (at, content) = input_dir(dir, input);
            let listing = listing_digest(&f.shared.manifest);
            let same = std::fs::read_to_string(at.join(LISTING)).is_ok_and(|d| d.trim() == listing);
            if same && let Some(_) = staged(&at) {
                continue;
            }
            // Another listing (or none): nothing of it may show through.
            if let Some(bytes) = staged(&at) {
                left = left.saturating_add(bytes);
            }
            if !same && at.exists() {
                std::fs::remove_dir_all(&at)
                    .map_err(|e| failed(format!("{}: {e}", at.display())))?;
                let _ = std::fs::remove_file(super::vmdata::input_image(dir, &at));
            }
            // Terminated (a revert, a shutdown) while an earlier input was fetched: stop.
            if !self.still_pending(&rec.id, rec.generation) {
                return Err(failed(format!(
                    "allocation {} is no longer starting",
                    rec.id
                )));
            }
            let peer = f.peer.parse().map_err(|_| {
                ActorError::new(
                    ErrorKind::Rejected,
                    format!("inputs[{i}]: {:?} is not a peer id", f.peer),
                )
            })?;
            let what = input.source.describe();
            std::fs::create_dir_all(&at)
                .and_then(|()| std::fs::write(at.join(LISTING), format!("{listing}\n")))
                .map_err(|e| failed(format!("{}: {e}", at.display())))?;
            // What an earlier attempt at this listing left stays: its files are not fetched
            // again, and a partial file resumes.
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
            let c = content.clone();
            tokio::task::spawn_blocking(move || readable(&c))
                .await
                .map_err(failed)?
                .map_err(failed)?;
            let bytes = f.shared.manifest.bytes();
            mark_staged(&at, bytes).map_err(failed)?;
            left = left.saturating_sub(bytes);
            tracing::info!(allocation = %rec.id, input = i, source = %what, from = %f.peer,
                files = d.files, bytes = d.bytes, "input fetched from another provider");
        }
        Ok(())
    }

    /// Whether allocation `id` is still waiting to start with `generation`.
    fn still_pending(&self, id: &str, generation: u64) -> bool {
        let cell = self.allocs.lock().ok().and_then(|m| m.get(id).cloned());
        cell.and_then(|c| c.lock().ok().map(|r| (r.status, r.generation)))
            .is_some_and(|(s, g)| s == AllocationStatus::Pending && g == generation)
    }
}

/// Written beside a fetched input: the digest of the listing it was fetched from.
const LISTING: &str = ".listing";

/// A digest of `m` (a producer's run that wrote other bytes lists other digests).
fn listing_digest(m: &nunet_protocol::transfer::Manifest) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(m).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&bytes))
}

/// Makes what was fetched readable by whatever user the workload runs as (directories
/// 0755, files gain read for everyone; the producer's owner-only modes would lock out a
/// consumer that does not run as root). The mount is read-only anyway.
fn readable(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", d.display()))?;
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let e = e.map_err(|e| format!("{}: {e}", d.display()))?;
            let md = std::fs::symlink_metadata(e.path())
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
            if md.is_dir() {
                todo.push(e.path());
            } else if md.is_file() {
                let mode = md.permissions().mode() & 0o7777;
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(mode | 0o444))
                    .map_err(|err| format!("{}: {err}", e.path().display()))?;
            }
        }
    }
    Ok(())
}
