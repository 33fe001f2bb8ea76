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
use serde_json::json;

use crate::client::{TooLarge, exit};
use crate::cmd::deployment::{Caller, print_manifest};
use crate::home::Home;

/// Arguments of `nunet deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// Ensemble file (YAML or JSON).
    #[arg(short = 'f', long = "file")]
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
fn bids_line(bids: &serde_json::Value) -> String {
    bids.as_object()
        .into_iter()
        .flatten()
        .map(|(node, n)| format!("{node} {}", n.as_u64().unwrap_or(0)))
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
fn check_size(file: &Path, payload: &serde_json::Value) -> Result<()> {
    let encoded = serde_json::to_vec(payload)?.len().div_ceil(3) * 4;
    if encoded > MAX_ENVELOPE_BYTES {
        return Err(too_large(file, encoded, true));
    }
    Ok(())
}

/// Runs the command.
pub fn run(home: &Home, args: DeployArgs) -> Result<i32> {
    let mut ensemble = parse_file(&args.file, &Context::from_process())
        .with_context(|| format!("reading {}", args.file.display()))?
        .ensemble;
    let base = args.file.parent().unwrap_or(Path::new("."));
    absolute_modules(&mut ensemble, base);
    let has_service = ensemble
        .allocations
        .iter()
        .any(|a| a.kind == nunet_ensemble::spec::AllocationType::Service);
    let payload = json!({"ensemble": ensemble});
    check_size(&args.file, &payload)?;
    let caller = Caller::new(home, &args.context)?;
    let timeout: Duration = args.timeout.into();
    let created = caller
        .call("/dms/node/deployment/new", &payload, timeout)
        .map_err(|e| match e.downcast_ref::<TooLarge>() {
            Some(t) => too_large(&args.file, t.bytes, false),
            None => e,
        })?;
    let created = match created {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let id = created["ensemble_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if !args.json {
        println!("deployment {id}");
    }
    let mut after = 0u64;
    let (mut last_bids, mut last_phase) = (String::new(), String::new());
    let mut polls =
        std::iter::once(Duration::ZERO).chain(std::iter::repeat_n(FAST_POLL, FAST_POLLS));
    let status = loop {
        std::thread::sleep(polls.next().unwrap_or(POLL));
        let v = match caller.call(
            "/dms/node/deployment/status",
            &json!({"id": id, "after": after}),
            Duration::from_secs(15),
        )? {
            Ok(v) => v,
            Err(code) => return Ok(code),
        };
        for e in v["events"].as_array().into_iter().flatten() {
            after = after.max(e["seq"].as_u64().unwrap_or(0));
            if !args.json {
                println!(
                    "  [{}] {}",
                    e["phase"].as_str().unwrap_or("?"),
                    e["message"].as_str().unwrap_or("")
                );
            }
        }
        let s = v["status"].as_str().unwrap_or("").to_string();
        let bids = bids_line(&v["bids"]);
        if !args.json && !bids.is_empty() && bids != last_bids {
            println!("bids: {bids}");
            last_bids = bids;
        }
        if !args.json && s != last_phase {
            println!("phase: {s}");
            last_phase.clone_from(&s);
        }
        let done = matches!(s.as_str(), "Completed" | "Failed" | "ShuttingDown")
            || (s == "Running" && has_service);
        if done {
            break v;
        }
    };
    let manifest = match caller.call(
        "/dms/node/deployment/manifest",
        &json!({"id": id}),
        Duration::from_secs(15),
    )? {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let ok = matches!(status["status"].as_str(), Some("Running" | "Completed"));
    if args.json {
        let out = json!({
            "id": id,
            "status": status["status"],
            "reason": status["reason"],
            "rounds": status["rounds"],
            "bids": status["bids"],
            "notes": status["notes"],
            "manifest": manifest["manifest"],
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "status: {}{}",
            status["status"].as_str().unwrap_or("?"),
            status["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        print_manifest(&manifest["manifest"]);
        for n in status["notes"].as_array().into_iter().flatten() {
            println!("note: {}", n.as_str().unwrap_or(""));
        }
    }
    Ok(if ok { exit::OK } else { exit::FAILED })
}
