//! An allocation's `inputs` and `outputs` (objects of S3-compatible stores) on the provider:
//!
//! - before each start, every input not staged yet is downloaded (`nunet-objectstore`) into
//!   `<data_dir>/volumes/<ensemble>/staging/<allocation>/in/<digest of the input>` and
//!   mounted read-only at its `path`; a staged input is reused by later starts, and a changed
//!   input (a live update) gets a new directory (the old one goes). Each output gets an
//!   empty, writable directory `out/<start generation>/<i>` at its `path` at every start, so
//!   the directory a finished start publishes is never one a later start writes to;
//! - when a task exits with code 0, the files of each output directory with a target are
//!   uploaded under its target prefix before the allocation is reported Completed; a failed
//!   upload fails the allocation with the store's reason. Every output directory stays here
//!   until the ensemble ends, for the allocations that fetch it by name (`handoff.rs`, which
//!   also stages inputs from other allocations' outputs);
//! - the staging directories go with the ensemble's volumes (`volumes.rs`).
//!
//! All inputs together are bounded by the allocation's disk, and so is what an output
//! publishes (outputs are not size-limited while the workload writes them). Endpoints on addresses
//! that are not public are reached only when `job.s3_private_endpoints` lists them. The
//! credentials arrive in the allocate message and are held in memory only (never in the
//! allocation record on disk): after a restart of this daemon, an allocation that still
//! needs them fails with that reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nunet_actor::ActorError;
use nunet_ensemble::Execution;
use nunet_ensemble::data::{
    MAX_INPUTS, MAX_OUTPUTS, S3Credentials, input_problems, output_problems,
};
use nunet_ensemble::spec::{Input, InputSource, ObjectLocation};
use nunet_executor::Mount;
use nunet_objectstore::Store;
use nunet_protocol::AllocationRequest;
use nunet_protocol::transfer::FetchInput;
use sha2::{Digest, Sha256};

use super::{AllocRecord, failed};

/// How long one request to a store may take (a start waits for every input).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(240);
/// Written next to a staged input once all of it is there.
const STAGED: &str = ".staged";

/// What an allocation sent to this provider must be, before anything is accepted: its
/// inputs' and outputs' own rules, an executor that gets them, and the credentials they name.
pub(super) fn check(a: &AllocationRequest) -> Result<(), ActorError> {
    if a.inputs.is_empty() && a.outputs.is_empty() {
        return Ok(());
    }
    if matches!(a.execution, Execution::Firecracker(_))
        && let Some(p) = a
            .inputs
            .iter()
            .map(|x| &x.path)
            .chain(a.outputs.iter().map(|x| &x.path))
            .find(|p| !nunet_ensemble::volumes::vm_destination_ok(p))
    {
        return Err(failed(format!(
            "allocation {}: {p:?} cannot go on a microVM's kernel command line (letters, digits and / . _ - only)",
            a.name
        )));
    }
    if a.inputs.len() > MAX_INPUTS || a.outputs.len() > MAX_OUTPUTS {
        return Err(failed(format!(
            "allocation {}: at most {MAX_INPUTS} inputs and {MAX_OUTPUTS} outputs",
            a.name
        )));
    }
    let entries = a
        .inputs
        .iter()
        .enumerate()
        .map(|(i, x)| (format!("inputs[{i}]"), input_problems(x), &x.credentials))
        .chain(
            a.outputs
                .iter()
                .enumerate()
                .map(|(i, x)| (format!("outputs[{i}]"), output_problems(x), &x.credentials)),
        );
    for (at, problems, credentials) in entries {
        if let Some(p) = problems.first() {
            return Err(failed(format!(
                "allocation {}: {at}.{}: {}",
                a.name, p.field, p.message
            )));
        }
        if let Some(name) = credentials
            && !a.credentials.contains_key(name)
        {
            return Err(failed(format!(
                "allocation {}: {at} names the secret {name:?}, which its orchestrator did not send \
                 (secrets are held in the orchestrator's memory only: after its node restarted, deploy again with --secret)",
                a.name
            )));
        }
    }
    Ok(())
}

/// The store of `loc`, with the credentials named `name` from `held`.
fn store(
    loc: &ObjectLocation,
    name: &Option<String>,
    held: &BTreeMap<String, S3Credentials>,
    private_ok: &[String],
) -> Result<Store, String> {
    let creds = match name {
        Some(n) => Some(held.get(n).ok_or_else(|| {
            format!(
                "the secret {n:?} is held in memory only and this provider restarted since the allocation was placed"
            )
        })?),
        None => None,
    };
    let private = nunet_objectstore::egress::private_allowed(&loc.endpoint, private_ok);
    Store::new(loc, creds, private, REQUEST_TIMEOUT).map_err(|e| e.to_string())
}

/// A directory name for `x` that changes when `x` does.
fn digest(x: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(x).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

fn make_dir(p: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p)
        .and_then(|()| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Stages `rec`'s inputs and empties its output directories under `dir`; returns the mounts.
/// Blocking (downloads).
pub(super) fn prepare(
    rec: &AllocRecord,
    dir: &Path,
    private_ok: &[String],
) -> Result<Vec<Mount>, String> {
    // One budget for all inputs: the allocation's disk.
    // What is staged already counts first, whatever its place in the list.
    let mut left = rec.resources.disk.size.saturating_sub(
        rec.inputs
            .iter()
            .filter_map(|x| staged(&input_dir(dir, x).0))
            .sum(),
    );
    let mut mounts = Vec::new();
    for (i, input) in rec.inputs.iter().enumerate() {
        let (at, content) = input_dir(dir, input);
        match staged(&at) {
            Some(_) => {}
            None => {
                let InputSource::Object(source) = &input.source else {
                    // Fetched before this (`handoff.rs`), from the ticket its start carried.
                    return Err(format!(
                        "inputs[{i}] ({}) is not here: its orchestrator sent no ticket to fetch it",
                        input.source.describe()
                    ));
                };
                if at.exists() {
                    std::fs::remove_dir_all(&at).map_err(|e| format!("{}: {e}", at.display()))?;
                }
                make_dir(&content, 0o755)?;
                let s = store(source, &input.credentials, &rec.credentials, private_ok)
                    .map_err(|e| format!("inputs[{i}] {}: {e}", source.url()))?;
                let moved = nunet_objectstore::transfer::stage(&s, &source.key, &content, left)
                    .map_err(|e| format!("inputs[{i}]: {e}"))?;
                mark_staged(&at, moved.bytes)?;
                tracing::info!(allocation = %rec.id, input = i, files = moved.files, bytes = moved.bytes,
                    source = %source.url(), "input staged");
                left = left.saturating_sub(moved.bytes);
            }
        }
        mounts.push(Mount {
            source: content,
            target: input.path.clone(),
            read_only: true,
        });
    }
    // Inputs a live update replaced are not needed any more.
    let current: Vec<String> = rec.inputs.iter().map(digest).collect();
    remove_other_dirs(&dir.join("in"), &current)?;
    if let Ok(images) = std::fs::read_dir(dir.join("vm")) {
        for e in images.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if let Some(d) = n.strip_prefix("in-").and_then(|n| n.strip_suffix(".img"))
                && !current.iter().any(|c| c == d)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    // Outputs of this start only: a later start (a restart while an earlier start's outputs
    // are being published) writes elsewhere, so what is published was written only by a
    // workload that has exited.
    remove_other_dirs(&dir.join("out"), &[])?;
    for (i, output) in rec.outputs.iter().enumerate() {
        let at = output_dir(dir, rec.generation, i);
        // Whatever user the workload runs as may write its results.
        make_dir(&at, 0o777)?;
        mounts.push(Mount {
            source: at,
            target: output.path.clone(),
            read_only: false,
        });
    }
    Ok(mounts)
}

/// Where input `input` is staged under an allocation's staging directory `dir`, and its
/// files under that (`content`).
pub(super) fn input_dir(dir: &Path, input: &Input) -> (PathBuf, PathBuf) {
    let at = dir.join("in").join(digest(input));
    let content = at.join("content");
    (at, content)
}

/// The bytes staged at `at`, if all of it is there.
pub(super) fn staged(at: &Path) -> Option<u64> {
    std::fs::read_to_string(at.join(STAGED))
        .ok()
        .and_then(|b| b.trim().parse::<u64>().ok())
}

/// Marks the input at `at` as all there, with `bytes`.
pub(super) fn mark_staged(at: &Path, bytes: u64) -> Result<(), String> {
    std::fs::write(at.join(STAGED), format!("{bytes}\n"))
        .map_err(|e| format!("{}: {e}", at.display()))
}

/// The directory of output `i` written by start `generation`, under staging directory `dir`.
pub(super) fn output_dir(dir: &Path, generation: u64, i: usize) -> PathBuf {
    dir.join("out")
        .join(generation.to_string())
        .join(i.to_string())
}

/// Removes every entry of `dir` not named in `keep` (a missing `dir` is fine).
fn remove_other_dirs(dir: &Path, keep: &[String]) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !keep.contains(&name) {
            std::fs::remove_dir_all(e.path())
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
        }
    }
    Ok(())
}

/// Uploads the files of `rec`'s output directories under `dir`; says what went where.
/// Blocking (uploads). Runs only after the workload exited, so nothing changes the
/// directories meanwhile.
pub(super) fn publish(
    rec: &AllocRecord,
    dir: &Path,
    private_ok: &[String],
) -> Result<Vec<String>, String> {
    let mut done = Vec::new();
    for (i, output) in rec.outputs.iter().enumerate() {
        let at = output_dir(dir, rec.generation, i);
        let Some(target) = &output.target else {
            // Kept here for the allocations that fetch it by name.
            continue;
        };
        let s = store(target, &output.credentials, &rec.credentials, private_ok)
            .map_err(|e| format!("outputs[{i}] {}: {e}", target.url()))?;
        let moved =
            nunet_objectstore::transfer::publish(&s, &target.key, &at, rec.resources.disk.size)
                .map_err(|e| format!("publishing outputs[{i}]: {e}"))?;
        tracing::info!(allocation = %rec.id, output = i, files = moved.files, bytes = moved.bytes,
            target = %target.url(), "output published");
        done.push(format!(
            "{} ({} files, {} bytes)",
            target.url(),
            moved.files,
            moved.bytes
        ));
    }
    Ok(done)
}

impl super::Provider {
    /// The mounts of `rec`'s inputs and outputs, staging what is not staged yet.
    /// `fetch`: inputs from other allocations' outputs, fetched first.
    pub(super) async fn data_mounts(
        &self,
        rec: &AllocRecord,
        fetch: &[FetchInput],
    ) -> Result<Vec<Mount>, ActorError> {
        if rec.inputs.is_empty() && rec.outputs.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self.volumes.staging_dir(&rec.ensemble_id, &rec.name)?;
        self.fetch_inputs(rec, &dir, fetch).await?;
        let (rec, private) = (rec.clone(), self.s3_private_endpoints.clone());
        tokio::task::spawn_blocking(move || prepare(&rec, &dir, &private))
            .await
            .map_err(|e| failed(format!("staging inputs: {e}")))?
            .map_err(failed)
    }

    /// Publishes `rec`'s outputs (nothing when it has none).
    /// A microVM's outputs are taken out of its disks first.
    pub(super) async fn publish_outputs(&self, rec: &AllocRecord) -> Result<Vec<String>, String> {
        if rec.outputs.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self
            .volumes
            .staging_dir(&rec.ensemble_id, &rec.name)
            .map_err(|e| e.message)?;
        let (rec, private) = (rec.clone(), self.s3_private_endpoints.clone());
        tokio::task::spawn_blocking(move || {
            if matches!(rec.execution, Execution::Firecracker(_)) {
                super::vmdata::take_outputs(&rec, &dir)?;
            }
            publish(&rec, &dir, &private)
        })
        .await
        .map_err(|e| format!("publishing outputs: {e}"))?
    }
}
