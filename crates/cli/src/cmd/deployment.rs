//! `nunet deployment status|manifest|logs [-f]|shutdown <id>` and `nunet get
//! deployments|allocations`: the control behaviors of deployments the local node orchestrates
//! and of the allocations it runs. Printing only: the node does the work.

use std::time::Duration;

use anyhow::{Result, anyhow};
use clap::Subcommand;
use nunet_actor::Handle;
use nunet_capability::Anchors;
use nunet_did::Keypair;
use nunet_protocol::call::{self, Call};
use nunet_protocol::calls::{
    AllocationsList, DeploymentListCall, DeploymentManifest, DeploymentShutdown,
    DeploymentStatusCall, DeploymentUpdate,
};
use nunet_protocol::{DeploymentRef, Empty, Manifest, StatusRequest, UpdateDeployment};
use serde::Serialize;
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

    /// The local daemon's API address and port.
    pub fn endpoint(&self) -> (&str, u16) {
        (&self.addr, self.port)
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

    /// Invokes the call `C` on the local node: its request encoded, its reply decoded.
    /// `Err(exit code)` as [`Caller::call`]; a reply that is not a `C::Reply` is an error
    /// naming the behaviour.
    pub fn call_typed<C: Call>(
        &self,
        req: &C::Request,
        ttl: Duration,
    ) -> Result<Result<C::Reply, i32>> {
        Ok(self.call_typed_raw::<C>(req, ttl)?.map(|(reply, _)| reply))
    }

    /// [`Caller::call_typed`], also returning the reply as it came (what `--json` prints).
    pub fn call_typed_raw<C: Call>(
        &self,
        req: &C::Request,
        ttl: Duration,
    ) -> Result<Result<(C::Reply, Value), i32>> {
        let behavior = C::behavior(None);
        let payload = call::encode(&behavior, req).map_err(|e| anyhow!("{}", e.message))?;
        match self.call(&behavior, &payload, ttl)? {
            Ok(v) => Ok(Ok((typed_reply::<C>(&behavior, v.clone())?, v))),
            Err(code) => Ok(Err(code)),
        }
    }
}

/// The reply `v` of `behavior` as `C::Reply`, or an error naming the behaviour and the
/// type expected.
fn typed_reply<C: Call>(behavior: &str, v: Value) -> Result<C::Reply> {
    call::decode_reply::<C>(behavior, v).map_err(|e| anyhow!("{}", e.message))
}

/// Prints a manifest: nodes with their peers, allocations with their status.
pub fn print_manifest(m: &Manifest) {
    for (name, n) in &m.nodes {
        println!("node {name}: peer {} ({})", n.peer, n.location);
        for s in m.standbys.get(name).into_iter().flatten() {
            println!(
                "  standby: peer {} ({}), {} allocation(s) allocated, not started",
                s.node.peer,
                s.node.location,
                s.allocations.len()
            );
        }
    }
    for (name, a) in &m.allocations {
        let mut code = a
            .exit_code
            .map(|c| format!(", exit {c}"))
            .unwrap_or_default();
        if let Some(h) = &a.health {
            let word = if h.healthy { "healthy" } else { "unhealthy" };
            code.push_str(&format!(", {word}: {}", h.message));
        }
        if a.restarts > 0 {
            code.push_str(&format!(", {} restart(s)", a.restarts));
        }
        let net = match (&a.ip, &a.dns) {
            (Some(ip), Some(dns)) => format!("  {ip} {dns}"),
            _ => String::new(),
        };
        // In the order of their text, as the ports have always been listed.
        let mut ports: Vec<(String, u16)> = a
            .ports
            .iter()
            .map(|(public, private)| (public.to_string(), *private))
            .collect();
        ports.sort();
        let ports: Vec<String> = ports
            .iter()
            .map(|(public, private)| format!("{public}->{private}"))
            .collect();
        let ports = if ports.is_empty() {
            String::new()
        } else {
            format!("  ports {}", ports.join(","))
        };
        let gpus = if a.gpus.is_empty() {
            String::new()
        } else {
            format!("  gpus {}", a.gpus.join(","))
        };
        println!("  {name}: {} ({}{code}){net}{ports}{gpus}", a.id, a.status);
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
    /// Apply a changed ensemble file to a running deployment (live update): allocations and
    /// nodes that are new are placed, those gone are stopped and released, changed ones are
    /// started anew; everything else keeps running untouched, at the same address. Also
    /// `nunet actor cmd /dms/node/deployment/update --id <id> --spec-file <file>` (NuNet's form).
    Update(UpdateArgs),
}

/// Arguments of `nunet deployment update`.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    #[command(flatten)]
    ids: IdArgs,
    /// The whole ensemble as it should run from now on (YAML or JSON).
    #[arg(short = 'f', long = "file")]
    file: std::path::PathBuf,
    /// How long to wait for the update (new nodes need a bid round each).
    #[arg(short = 't', long = "timeout", default_value = "3m")]
    timeout: humantime::Duration,
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
    let args = match &cmd {
        DeploymentCmd::Status(a) | DeploymentCmd::Manifest(a) | DeploymentCmd::Shutdown(a) => a,
        DeploymentCmd::Logs(l) => return logs::run(home, l),
        DeploymentCmd::Update(u) => return update(home, u),
    };
    let caller = Caller::new(home, &args.context)?;
    let id = DeploymentRef {
        id: args.id.clone(),
    };
    // The reply as it came, for `--json`; what the other forms print, typed.
    let (raw, summary) = match cmd {
        DeploymentCmd::Manifest(_) => {
            match caller.call_typed_raw::<DeploymentManifest>(&id, Duration::from_secs(15))? {
                Ok((m, _)) if !args.json => {
                    print_manifest(&m.manifest);
                    return Ok(exit::OK);
                }
                Ok((_, raw)) => (raw, None),
                Err(code) => return Ok(code),
            }
        }
        DeploymentCmd::Shutdown(_) => {
            match caller.call_typed_raw::<DeploymentShutdown>(&id, Duration::from_secs(60))? {
                Ok((s, raw)) => (raw, Some(s)),
                Err(code) => return Ok(code),
            }
        }
        _ => {
            let req = StatusRequest {
                id: id.id,
                after: 0,
            };
            match caller.call_typed_raw::<DeploymentStatusCall>(&req, Duration::from_secs(15))? {
                Ok((s, raw)) => (raw, Some(s)),
                Err(code) => return Ok(code),
            }
        }
    };
    match summary {
        Some(mut s) if !args.json => {
            s.events = None;
            show(&serde_json::to_value(&s)?, false)?;
        }
        _ => show(&raw, true)?,
    }
    Ok(exit::OK)
}

/// `nunet deployment update`: sends the file's ensemble and prints what changed.
fn update(home: &Home, u: &UpdateArgs) -> Result<i32> {
    let ensemble = crate::cmd::deploy::read_ensemble(&u.file)?;
    let caller = Caller::new(home, &u.ids.context)?;
    let req = UpdateDeployment {
        id: u.ids.id.clone(),
        ensemble,
    };
    match caller.call_typed_raw::<DeploymentUpdate>(&req, u.timeout.into())? {
        Ok((_, raw)) if u.ids.json => show(&raw, true)?,
        Ok((r, _)) => println!("updated: {}", r.changes),
        Err(code) => return Ok(code),
    }
    Ok(exit::OK)
}

/// The entries of `list` whose fields equal every `k=v` of `filter` (strings compared as
/// they are, other values by their JSON text), each with its JSON form.
fn filtered<T: Serialize>(list: Vec<T>, filter: &[String]) -> Result<Vec<(T, Value)>> {
    let wanted: Vec<(&str, &str)> = filter.iter().filter_map(|f| f.split_once('=')).collect();
    let mut out = Vec::new();
    for item in list {
        let d = serde_json::to_value(&item)?;
        let keep = wanted.iter().all(|(k, want)| match &d[*k] {
            Value::String(s) => s == want,
            other => *other.to_string() == **want,
        });
        if keep {
            out.push((item, d));
        }
    }
    Ok(out)
}

/// `2024-05-01 12:00:00`-style UTC time of a Unix-ms value, or `-`.
fn when(ms: Option<i64>) -> String {
    ms.and_then(|m| u64::try_from(m).ok())
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
    const T: Duration = Duration::from_secs(15);
    match cmd {
        GetCmd::Deployments {
            context,
            filter,
            json,
        } => {
            let caller = Caller::new(home, &context)?;
            let list = match caller.call_typed::<DeploymentListCall>(&Empty {}, T)? {
                Ok(l) => filtered(l.deployments, &filter)?,
                Err(code) => return Ok(code),
            };
            if json {
                let list: Vec<Value> = list.into_iter().map(|(_, v)| v).collect();
                show(&json!({ "deployments": list }), true)?;
                return Ok(exit::OK);
            }
            println!("{:<66} {:<13} ALLOCATIONS", "ID", "STATUS");
            for (d, _) in &list {
                let allocs: Vec<String> = d
                    .allocations
                    .iter()
                    .map(|(k, s)| format!("{k}={s}"))
                    .collect();
                // `as_str`: the statuses' `Display` ignores the column width.
                println!(
                    "{:<66} {:<13} {}",
                    d.id,
                    d.status.as_str(),
                    allocs.join(",")
                );
            }
        }
        GetCmd::Allocations {
            context,
            filter,
            json,
        } => {
            let caller = Caller::new(home, &context)?;
            let list = match caller.call_typed::<AllocationsList>(&Empty {}, T)? {
                Ok(l) => filtered(l.allocations, &filter)?,
                Err(code) => return Ok(code),
            };
            if json {
                let list: Vec<Value> = list.into_iter().map(|(_, v)| v).collect();
                show(&json!({ "allocations": list }), true)?;
                return Ok(exit::OK);
            }
            println!(
                "{:<34} {:<12} {:<20} {:<8} {:<10} {:<9} {:<8} {:<20} FINISHED",
                "ID", "ENSEMBLE", "NAME", "EXECUTOR", "STATUS", "HEALTH", "RESTARTS", "STARTED"
            );
            for (a, _) in &list {
                let ens = &a.ensemble_id;
                let health = match &a.health {
                    None => "-",
                    Some(h) if h.healthy => "healthy",
                    Some(_) => "unhealthy",
                };
                println!(
                    "{:<34} {:<12} {:<20} {:<8} {:<10} {:<9} {:<8} {:<20} {}",
                    a.id,
                    ens.get(..12).unwrap_or(ens),
                    format!("{}.{}", a.node_id, a.name),
                    a.executor,
                    a.status.as_str(),
                    health,
                    a.restarts,
                    when(a.started_ms),
                    when(a.finished_ms),
                );
            }
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    use nunet_actor::envelope::Address;
    use nunet_actor::{Envelope, Options, Reply};

    use super::*;

    /// Serves one `/actor/invoke` as a daemon would, answering with a reply envelope signed
    /// by `node` whose result is `result`.
    fn daemon_once(
        listener: TcpListener,
        node: Keypair,
        local: Handle,
        result: Value,
    ) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let (mut first, mut len) = (String::new(), 0usize);
            r.read_line(&mut first).unwrap();
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let opt = Options {
                exp: u64::MAX,
                ..Options::default()
            };
            let msg = serde_json::to_vec(&Reply::Ok(result)).unwrap();
            let reply = Envelope::sign(&node, local, Handle::default(), "/reply", opt, msg, vec![]);
            let body = serde_json::to_vec(&reply).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let mut s = s;
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
            first
        })
    }

    #[test]
    fn a_malformed_reply_to_a_typed_call_is_an_error_naming_the_behaviour() {
        let e = typed_reply::<DeploymentStatusCall>(
            DeploymentStatusCall::NAME,
            json!({"id": "abc", "status": "Sideways"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(DeploymentStatusCall::NAME), "{e}");
        assert!(e.contains("DeploymentSummary"), "{e}");

        // Through the caller, from a daemon that answers `list` with something else.
        let node = Keypair::from_seed(&[7; 32]);
        let local = Handle {
            id: node.did().to_string(),
            did: node.did().to_string(),
            addr: Address {
                host: "12D3KooWtest".into(),
                inbox: "root".into(),
            },
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let daemon = daemon_once(
            listener,
            node,
            local.clone(),
            json!({"deployments": [{"id": 3}]}),
        );
        let user = Keypair::from_seed(&[8; 32]);
        let caller = Caller {
            anchors: Anchors::new(user.did()),
            key: user,
            local,
            addr: "127.0.0.1".into(),
            port,
        };
        let e = caller
            .call_typed::<DeploymentListCall>(&Empty {}, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            daemon
                .join()
                .unwrap()
                .starts_with("POST /api/v1/actor/invoke")
        );
        assert!(e.contains(DeploymentListCall::NAME), "{e}");
        assert!(e.contains("DeploymentList"), "{e}");
    }

    #[test]
    fn times_past_the_formatter_read_as_unknown() {
        assert_eq!(when(Some(0)), "1970-01-01T00:00:00Z");
        // Past the year 9999: formatting failed and `to_string` panicked.
        assert_eq!(when(Some(i64::MAX)), "-");
        assert_eq!(when(Some(-1)), "-");
        assert_eq!(when(None), "-");
    }
}
