//! `nunet deployment logs <id> [-f] [--allocation NAME]`: prints the allocations' output once,
//! or follows it. Each request carries the byte offsets already printed per allocation and
//! stream, so nothing is printed twice and memory stays bounded (only the offsets are kept;
//! the node returns at most one chunk per stream and call). Following stops when every
//! selected allocation has ended and its output is drained, when the deployment is over, or
//! on Ctrl-C. With `--json`: the first reply as is, or with `-f` one JSON line per reply that
//! brought new output.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};

use super::{Caller, LogsArgs, show};
use crate::client::exit;
use crate::home::Home;

/// How often `-f` asks for new output when there was none.
const POLL: Duration = Duration::from_millis(500);

/// Allocation statuses after which no more output comes.
fn ended(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "terminated")
}

/// Runs the command.
pub fn run(home: &Home, a: &LogsArgs) -> Result<i32> {
    let caller = Caller::new(home, &a.ids.context)?;
    let mut cursors: BTreeMap<String, Value> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut errors: BTreeSet<String> = BTreeSet::new();
    loop {
        let v = match caller.call(
            "/dms/node/deployment/logs",
            &json!({"id": a.ids.id, "allocation": a.allocation, "cursors": cursors}),
            Duration::from_secs(60),
        )? {
            Ok(v) => v,
            Err(code) => return Ok(code),
        };
        if a.ids.json && !a.follow {
            show(&v, true)?;
            return Ok(exit::OK);
        }
        let logs = v["logs"].as_object().cloned().unwrap_or_default();
        // No allocation yet (still deploying): wait for them when following.
        let (mut fresh, mut all_ended) = (false, !logs.is_empty());
        for (name, l) in &logs {
            let (out, err) = (
                l["stdout"].as_str().unwrap_or(""),
                l["stderr"].as_str().unwrap_or(""),
            );
            fresh |= !out.is_empty() || !err.is_empty();
            if let Some(e) = l["error"].as_str() {
                // Gone (shut down) or unreachable: nothing more will come from it.
                if errors.insert(name.clone()) && !a.ids.json {
                    println!("== {name}: error: {e}");
                }
                continue;
            }
            let status = l["status"].as_str().unwrap_or("?");
            all_ended &= ended(status);
            cursors.insert(
                name.clone(),
                json!({"stdout_offset": l["stdout_offset"], "stderr_offset": l["stderr_offset"]}),
            );
            if a.ids.json {
                continue;
            }
            let many = logs.len() > 1 || !a.follow;
            if many && seen.insert(name.clone()) {
                println!("== {name} ({status})");
            }
            print!("{out}");
            eprint!("{err}");
        }
        if a.ids.json && fresh {
            show(&v, true)?;
        }
        match std::io::stdout().flush() {
            // The reader went away (`| head`): nothing more to do.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(exit::OK),
            r => r?,
        }
        let over = matches!(
            v["status"].as_str(),
            Some("Completed" | "Failed" | "ShuttingDown")
        );
        if fresh {
            continue; // drain what is there before waiting
        }
        if !a.follow || all_ended || over {
            return Ok(exit::OK);
        }
        std::thread::sleep(POLL);
    }
}
