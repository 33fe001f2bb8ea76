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
use nunet_protocol::calls::DeploymentLogsCall;
use nunet_protocol::{DeploymentLogsRequest, LogCursor};

use super::{Caller, LogsArgs, show};
use crate::client::exit;
use crate::home::Home;

/// How often `-f` asks for new output when there was none.
const POLL: Duration = Duration::from_millis(500);

/// Runs the command.
pub fn run(home: &Home, a: &LogsArgs) -> Result<i32> {
    let caller = Caller::new(home, &a.ids.context)?;
    let mut cursors: BTreeMap<String, LogCursor> = BTreeMap::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut errors: BTreeSet<String> = BTreeSet::new();
    loop {
        let req = DeploymentLogsRequest {
            id: a.ids.id.clone(),
            allocation: a.allocation.clone(),
            cursors: cursors.clone(),
        };
        let (v, raw) =
            match caller.call_typed_raw::<DeploymentLogsCall>(&req, Duration::from_secs(60))? {
                Ok(r) => r,
                Err(code) => return Ok(code),
            };
        if a.ids.json && !a.follow {
            show(&raw, true)?;
            return Ok(exit::OK);
        }
        // No allocation yet (still deploying): wait for them when following.
        let (mut fresh, mut all_ended) = (false, !v.logs.is_empty());
        for (name, l) in &v.logs {
            let (out, err) = (l.stdout.as_str(), l.stderr.as_str());
            fresh |= !out.is_empty() || !err.is_empty();
            if let Some(e) = &l.error {
                // Gone (shut down) or unreachable: nothing more will come from it.
                if errors.insert(name.clone()) && !a.ids.json {
                    println!("== {name}: error: {e}");
                }
                continue;
            }
            // No more output comes after a final status.
            all_ended &= l.status.is_some_and(|s| s.is_final());
            cursors.insert(name.clone(), l.cursor());
            if a.ids.json {
                continue;
            }
            let many = v.logs.len() > 1 || !a.follow;
            if many && seen.insert(name.clone()) {
                let status = l.status.map_or("?", |s| s.as_str());
                println!("== {name} ({status})");
            }
            print!("{out}");
            eprint!("{err}");
        }
        if a.ids.json && fresh {
            show(&raw, true)?;
        }
        match std::io::stdout().flush() {
            // The reader went away (`| head`): nothing more to do.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(exit::OK),
            r => r?,
        }
        let over = v.status.is_terminal();
        if fresh {
            continue; // drain what is there before waiting
        }
        if !a.follow || all_ended || over {
            return Ok(exit::OK);
        }
        std::thread::sleep(POLL);
    }
}
