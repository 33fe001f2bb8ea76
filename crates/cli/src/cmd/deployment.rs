//! `nunet deployment status|manifest|logs [-f]|shutdown <id>` and `nunet get
//! deployments|allocations`: the control behaviors of deployments the local node orchestrates
//! and of the allocations it runs. Printing only: the node does the work.

use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use nunet_actor::Handle;
use nunet_capability::Anchors;
use nunet_did::Keypair;
use serde_json::{Value, json};

use crate::client::{self, Api, Outcome, exit};
use crate::home::Home;

mod logs;

/// Signs invocations with one context and posts them to the local daemon.
pub struct Caller {
    key: Keypair,
    anchors: Anchors,
    local: Handle,
    addr: String,
    port: u16,
}

impl Caller {
    /// Unlocks `context` and asks the local daemon for its handle.
    pub fn new(home: &Home, context: &str) -> Result<Self> {
        let (addr, port) = home.api_endpoint()?;
        let local = Api::new(&addr, port, Duration::from_secs(10)).handle()?;
        let (anchors, key) = home.context_with_key(context)?;
        Ok(Self {
            key,
            anchors,
            local,
            addr,
            port,
        })
    }

    /// Invokes `behavior` on the local node; `Err(exit code)` after printing why it failed.
    pub fn call(
        &self,
        behavior: &str,
        payload: &Value,
        ttl: Duration,
    ) -> Result<Result<Value, i32>> {
        let env = client::sign_envelope(
            &self.key,
            &self.anchors,
            &self.local,
            Some(self.local.clone()),
            behavior,
            payload,
            ttl,
            None,
        )?;
        let api = Api::new(&self.addr, self.port, ttl);
        match client::post_envelope(&api, "invoke", &env)? {
            Ok(Outcome::Value(v)) => Ok(Ok(v)),
            Ok(Outcome::Replies(_)) => Ok(Err(exit::FAILED)),
            Err(e) => {
                let rule = e
                    .rule
                    .as_deref()
                    .map(|r| format!(" [{r}]"))
                    .unwrap_or_default();
                eprintln!("error: {:?}{rule}: {}", e.kind, e.message);
                Ok(Err(client::code_of(&e)))
            }
        }
    }
}

/// Prints a manifest: nodes with their peers, allocations with their status.
pub fn print_manifest(m: &Value) {
    for (name, n) in m["nodes"].as_object().into_iter().flatten() {
        println!(
            "node {name}: peer {} ({})",
            n["peer"].as_str().unwrap_or("?"),
            n["location"].as_str().unwrap_or("")
        );
    }
    for (name, a) in m["allocations"].as_object().into_iter().flatten() {
        let code = a["exit_code"]
            .as_i64()
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default();
        let net = match (a["ip"].as_str(), a["dns"].as_str()) {
            (Some(ip), Some(dns)) => format!("  {ip} {dns}"),
            _ => String::new(),
        };
        let ports: Vec<String> = a["ports"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(public, private)| format!("{public}->{private}"))
            .collect();
        let ports = if ports.is_empty() {
            String::new()
        } else {
            format!("  ports {}", ports.join(","))
        };
        println!(
            "  {name}: {} ({}{code}){net}{ports}",
            a["id"].as_str().unwrap_or("?"),
            a["status"].as_str().unwrap_or("?")
        );
    }
}

/// `nunet deployment …`.
#[derive(Subcommand, Debug)]
pub enum DeploymentCmd {
    /// Status and progress events of a deployment.
    Status(IdArgs),
    /// Which peer runs what.
    Manifest(IdArgs),
    /// Output of every allocation (or one); `-f` follows it until the allocations end.
    Logs(LogsArgs),
    /// Stop every allocation and release every resource.
    Shutdown(IdArgs),
}

/// A deployment id and output options.
#[derive(clap::Args, Debug)]
pub struct IdArgs {
    /// Ensemble id (or a unique prefix of at least 6 characters).
    id: String,
    /// Capability context that signs the request.
    #[arg(short = 'c', long = "context", default_value = "user")]
    context: String,
    /// Print the raw JSON result.
    #[arg(long)]
    json: bool,
}

/// Arguments of `nunet deployment logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    ids: IdArgs,
    /// Keep printing new output until the allocations end (or Ctrl-C).
    #[arg(short = 'f', long = "follow")]
    follow: bool,
    /// Only this allocation (its name, `<node>.<name>`, or id).
    #[arg(long = "allocation", value_name = "NAME")]
    allocation: Option<String>,
}

/// `nunet get …`.
#[derive(Subcommand, Debug)]
pub enum GetCmd {
    /// Deployments the local node orchestrates.
    Deployments {
        /// Capability context that signs the request.
        #[arg(short = 'c', long = "context", default_value = "user")]
        context: String,
        /// Only those whose field equals the value (`status=Running`).
        #[arg(long)]
        filter: Vec<String>,
        /// Print the raw JSON result.
        #[arg(long)]
        json: bool,
    },
    /// Allocations the local node runs as a provider.
    Allocations {
        /// Capability context that signs the request.
        #[arg(short = 'c', long = "context", default_value = "user")]
        context: String,
        /// Only those whose field equals the value (`status=running`, `executor=docker`).
        #[arg(long)]
        filter: Vec<String>,
        /// Print the raw JSON result.
        #[arg(long)]
        json: bool,
    },
}

fn show(v: &Value, json: bool) -> Result<()> {
    println!(
        "{}",
        if json {
            serde_json::to_string(v)?
        } else {
            serde_json::to_string_pretty(v)?
        }
    );
    Ok(())
}

/// Runs `nunet deployment …`.
pub fn run(home: &Home, cmd: DeploymentCmd) -> Result<i32> {
    let (be, args, ttl) = match &cmd {
        DeploymentCmd::Status(a) => ("status", a, 15),
        DeploymentCmd::Manifest(a) => ("manifest", a, 15),
        DeploymentCmd::Logs(l) => return logs::run(home, l),
        DeploymentCmd::Shutdown(a) => ("shutdown", a, 60),
    };
    let caller = Caller::new(home, &args.context)?;
    let v = match caller.call(
        &format!("/dms/node/deployment/{be}"),
        &json!({"id": args.id}),
        Duration::from_secs(ttl),
    )? {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    if args.json {
        show(&v, true)?;
        return Ok(exit::OK);
    }
    if let DeploymentCmd::Manifest(_) = cmd {
        print_manifest(&v["manifest"]);
    } else {
        let mut s = v.clone();
        if let Some(o) = s.as_object_mut() {
            o.remove("events");
        }
        show(&s, false)?;
    }
    Ok(exit::OK)
}

/// The entries of `list` whose fields equal every `k=v` of `filter` (strings compared as
/// they are, other values by their JSON text).
fn filtered(list: &Value, filter: &[String]) -> Vec<Value> {
    let wanted: Vec<(&str, &str)> = filter.iter().filter_map(|f| f.split_once('=')).collect();
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|d| {
            wanted.iter().all(|(k, want)| match &d[*k] {
                Value::String(s) => s == want,
                other => *other.to_string() == **want,
            })
        })
        .cloned()
        .collect()
}

/// `2024-05-01 12:00:00`-style UTC time of a Unix-ms value, or `-`.
fn when(ms: &Value) -> String {
    ms.as_i64()
        .and_then(|m| u64::try_from(m).ok())
        .and_then(|m| std::time::UNIX_EPOCH.checked_add(Duration::from_millis(m)))
        .and_then(|t| {
            // Past the year 9999 the formatter fails, and `to_string` would panic on that.
            use std::fmt::Write;
            let mut s = String::new();
            write!(s, "{}", humantime::format_rfc3339_seconds(t)).ok()?;
            Some(s)
        })
        .unwrap_or_else(|| "-".into())
}

/// Runs `nunet get …`.
pub fn get(home: &Home, cmd: GetCmd) -> Result<i32> {
    let (context, filter, json, be, field) = match cmd {
        GetCmd::Deployments {
            context,
            filter,
            json,
        } => (
            context,
            filter,
            json,
            "/dms/node/deployment/list",
            "deployments",
        ),
        GetCmd::Allocations {
            context,
            filter,
            json,
        } => (
            context,
            filter,
            json,
            "/dms/node/allocations/list",
            "allocations",
        ),
    };
    let caller = Caller::new(home, &context)?;
    let v = match caller.call(be, &Value::Null, Duration::from_secs(15))? {
        Ok(v) => v,
        Err(code) => return Ok(code),
    };
    let list = filtered(&v[field], &filter);
    if json {
        show(&json!({ field: list }), true)?;
    } else if field == "allocations" {
        println!(
            "{:<34} {:<12} {:<20} {:<8} {:<10} {:<20} FINISHED",
            "ID", "ENSEMBLE", "NAME", "EXECUTOR", "STATUS", "STARTED"
        );
        for a in &list {
            let ens = a["ensemble_id"].as_str().unwrap_or("?");
            println!(
                "{:<34} {:<12} {:<20} {:<8} {:<10} {:<20} {}",
                a["id"].as_str().unwrap_or("?"),
                ens.get(..12).unwrap_or(ens),
                format!(
                    "{}.{}",
                    a["node_id"].as_str().unwrap_or("?"),
                    a["name"].as_str().unwrap_or("?")
                ),
                a["executor"].as_str().unwrap_or("?"),
                a["status"].as_str().unwrap_or("?"),
                when(&a["started_ms"]),
                when(&a["finished_ms"]),
            );
        }
    } else {
        println!("{:<66} {:<13} ALLOCATIONS", "ID", "STATUS");
        for d in &list {
            let allocs: Vec<String> = d["allocations"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, s)| format!("{k}={}", s.as_str().unwrap_or("?")))
                .collect();
            println!(
                "{:<66} {:<13} {}",
                d["id"].as_str().unwrap_or("?"),
                d["status"].as_str().unwrap_or("?"),
                allocs.join(",")
            );
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_past_the_formatter_read_as_unknown() {
        assert_eq!(when(&json!(0)), "1970-01-01T00:00:00Z");
        // Past the year 9999: formatting failed and `to_string` panicked.
        assert_eq!(when(&json!(i64::MAX)), "-");
        assert_eq!(when(&json!(-1)), "-");
    }
}
