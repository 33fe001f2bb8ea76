//! `nunet deploy -f <ensemble.yaml>`: asks the local node to orchestrate an ensemble, shows
//! each phase as it happens (bids received per node, placement, commits, allocations, starts;
//! the status is polled at once, every 100 ms for 2 s, then every 500 ms) and ends with the manifest: which peer runs what. With
//! `--json`, stdout carries exactly one JSON document (status + manifest) at the end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use clap::Args;
use nunet_actor::MAX_ENVELOPE_BYTES;
use nunet_ensemble::{Context, Execution, parse_file};
use nunet_protocol::calls::{DeploymentManifest, DeploymentNew, DeploymentStatusCall};
use nunet_protocol::{DeploymentRef, DeploymentStatus, NewDeployment, StatusRequest};
use serde::Serialize;
use serde_json::json;

use crate::client::{TooLarge, exit};
use crate::cmd::deployment::{Caller, print_manifest};
use crate::home::Home;

/// Arguments of `nunet deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Ensemble file (YAML or JSON). `--spec-file` is NuNet's spelling; NuNet's default
    /// `ensemble.yaml` (in the current directory) applies when none is given.
    #[arg(
        short = 'f',
        long = "file",
        visible_alias = "spec-file",
        default_value = "ensemble.yaml"
    )]
    file: PathBuf,
    /// Deadline for reaching Running (the `new` message's expiry).
    #[arg(short = 't', long = "timeout", default_value = "5m")]
    timeout: humantime::Duration,
    /// Capability context that signs the request.
    #[arg(short = 'c', long = "context", default_value = "user")]
    context: String,
    /// Print only the final result (status and manifest) as one JSON document.
    #[arg(long)]
    json: bool,
    /// Credentials of an object store that inputs or outputs name as `credentials: NAME`,
    /// read from FILE (`aws_access_key_id = …`, `aws_secret_access_key = …`, optionally
    /// `aws_session_token = …`: the `[default]` profile of ~/.aws/credentials works). Sent
    /// only to the providers whose allocations name it, held in memory only. Repeatable.
    #[arg(long = "secret", value_name = "NAME=FILE")]
    secrets: Vec<String>,
}

/// The `--secret NAME=FILE` arguments, read and parsed.
fn read_secrets(
    args: &[String],
) -> Result<std::collections::BTreeMap<String, nunet_ensemble::data::S3Credentials>> {
    let mut out = std::collections::BTreeMap::new();
    for a in args {
        let (name, file) = a
            .split_once('=')
            .ok_or_else(|| anyhow!("--secret {a:?}: expected NAME=FILE"))?;
        let meta = std::fs::metadata(file).with_context(|| format!("--secret {name}: {file}"))?;
        if meta.len() > nunet_ensemble::data::MAX_SECRET_BYTES as u64 {
            return Err(anyhow!(
                "--secret {name}: {file} is larger than {} bytes",
                nunet_ensemble::data::MAX_SECRET_BYTES
            ));
        }
        let text =
            std::fs::read_to_string(file).with_context(|| format!("--secret {name}: {file}"))?;
        let creds = nunet_ensemble::data::S3Credentials::parse(&text)
            .map_err(|e| anyhow!("--secret {name}: {file}: {e}"))?;
        if out.insert(name.to_string(), creds).is_some() {
            return Err(anyhow!("--secret {name} is given twice"));
        }
    }
    Ok(out)
}

/// Relative WASM module paths are made absolute (providers on this machine read them).
fn absolute_modules(e: &mut nunet_ensemble::Ensemble, base: &Path) {
    for a in &mut e.allocations {
        if let Execution::Wasm(w) = &mut a.execution
            && !w.module.contains("://")
            && Path::new(&w.module).is_relative()
        {
            let p = base.join(&w.module);
            w.module = p.canonicalize().unwrap_or(p).display().to_string();
        }
    }
}

/// How often the deployment status is polled, once [`FAST_POLLS`] are done.
const POLL: Duration = Duration::from_millis(500);
/// How often the status is polled at first: a fast deployment is seen finished soon after
/// it finishes, a slow one soon costs only one poll per [`POLL`].
const FAST_POLL: Duration = Duration::from_millis(100);
/// How many polls are [`FAST_POLL`] apart (the first one is at once).
const FAST_POLLS: usize = 20;

/// `node-a 2, node-b 1` from the status' per-node bid counts (empty before the first round).
fn bids_line(bids: &std::collections::BTreeMap<String, u32>) -> String {
    bids.iter()
        .map(|(node, n)| format!("{node} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The deployment request is over the daemon's REST body limit ([`MAX_ENVELOPE_BYTES`]):
/// `request` bytes, or at least that many when `at_least`.
fn too_large(file: &Path, request: usize, at_least: bool) -> anyhow::Error {
    let file_bytes = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let at_least = if at_least { "at least " } else { "" };
    anyhow!(
        "{}: ensemble file is {file_bytes} bytes, {at_least}{request} bytes as a deployment request; the daemon accepts at most {MAX_ENVELOPE_BYTES}",
        file.display()
    )
}

/// Refuses, before contacting the daemon, a payload whose base64 form alone (as the signed
/// envelope carries it) is over the daemon's limit.
fn check_size(file: &Path, payload: &impl Serialize) -> Result<()> {
    let encoded = serde_json::to_vec(payload)?.len().div_ceil(3) * 4;
    if encoded > MAX_ENVELOPE_BYTES {
        return Err(too_large(file, encoded, true));
    }
    Ok(())
}

/// The ensemble of `file` as `nunet validate` decodes it, WASM module paths made absolute.
pub fn read_ensemble(file: &Path) -> Result<nunet_ensemble::Ensemble> {
    let mut ensemble = parse_file(file, &Context::from_process())
        .with_context(|| format!("reading {}", file.display()))?
        .ensemble;
    absolute_modules(&mut ensemble, file.parent().unwrap_or(Path::new(".")));
    Ok(ensemble)
}

/// Runs the command.
pub fn run(home: &Home, args: DeployArgs) -> Result<i32> {
    let ensemble = read_ensemble(&args.file)?;
    let has_service = ensemble
        .allocations
        .iter()
        .any(|a| a.kind == nunet_ensemble::spec::AllocationType::Service);
    let secrets = read_secrets(&args.secrets)?;
    let request = NewDeployment { ensemble, secrets };
    check_size(&args.file, &request)?;
    let caller = Caller::new(home, &args.context)?;
    let timeout: Duration = args.timeout.into();
    let created = caller
        .call_typed::<DeploymentNew>(&request, timeout)
        .map_err(|e| match e.downcast_ref::<TooLarge>() {
            Some(t) => too_large(&args.file, t.bytes, false),
            None => e,
        })?;
    let id = match created {
        Ok(created) => created.ensemble_id,
        Err(code) => return Ok(code),
    };
    if !args.json {
        println!("deployment {id}");
    }
    let mut after = 0u64;
    let (mut last_bids, mut last_phase) = (String::new(), None::<DeploymentStatus>);
    let mut polls =
        std::iter::once(Duration::ZERO).chain(std::iter::repeat_n(FAST_POLL, FAST_POLLS));
    let status = loop {
        std::thread::sleep(polls.next().unwrap_or(POLL));
        let req = StatusRequest {
            id: id.clone(),
            after,
        };
        let s = match caller.call_typed::<DeploymentStatusCall>(&req, Duration::from_secs(15))? {
            Ok(s) => s,
            Err(code) => return Ok(code),
        };
        for e in s.events.iter().flatten() {
            after = after.max(e.seq);
            if !args.json {
                println!("  [{}] {}", e.phase, e.message);
            }
        }
        let bids = bids_line(&s.bids);
        if !args.json && !bids.is_empty() && bids != last_bids {
            println!("bids: {bids}");
            last_bids = bids;
        }
        if !args.json && last_phase != Some(s.status) {
            println!("phase: {}", s.status);
            last_phase = Some(s.status);
        }
        if s.settled(has_service) {
            break s;
        }
    };
    let manifest = match caller.call_typed::<DeploymentManifest>(
        &DeploymentRef { id: id.clone() },
        Duration::from_secs(15),
    )? {
        Ok(m) => m.manifest,
        Err(code) => return Ok(code),
    };
    let ok = matches!(
        status.status,
        DeploymentStatus::Running | DeploymentStatus::Completed
    );
    if args.json {
        let out = json!({
            "id": id,
            "status": status.status,
            "reason": status.reason,
            "rounds": status.rounds,
            "bids": status.bids,
            "notes": status.notes,
            "manifest": manifest,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "status: {}{}",
            status.status,
            status
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        print_manifest(&manifest);
        for n in &status.notes {
            println!("note: {n}");
        }
    }
    Ok(if ok { exit::OK } else { exit::FAILED })
}
