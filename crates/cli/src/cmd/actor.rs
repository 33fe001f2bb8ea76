//! `nunet actor`: build, sign and send actor messages through the local daemon.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use nunet_actor::{Envelope, Handle};
use serde_json::{Value, json};

use crate::client::{self, Api, Outcome, exit};
use crate::home::Home;

#[derive(Subcommand, Debug)]
pub enum ActorCmd {
    /// Build and sign a message (printed as JSON, for send/invoke/broadcast).
    Msg {
        /// Behavior, e.g. /public/status.
        behavior: String,
        /// Payload (JSON; plain text becomes a JSON string).
        payload: Option<String>,
        #[command(flatten)]
        common: Common,
        /// Broadcast on this topic instead of addressing one actor.
        #[arg(short = 'b', long = "broadcast", value_name = "TOPIC")]
        broadcast: Option<String>,
        /// Mark it as an invocation (reply expected). Messages are invocations unless sent.
        #[arg(short = 'i', long)]
        invoke: bool,
    },
    /// Deliver a message built with `msg` (one way).
    Send {
        /// The message (JSON, @file, or -).
        msg: String,
    },
    /// Deliver a message and print the reply.
    Invoke {
        /// The message (JSON, @file, or -).
        msg: String,
    },
    /// Publish a broadcast message and print the replies.
    Broadcast {
        /// The message (JSON, @file, or -).
        msg: String,
    },
    /// Invoke a behavior: `nunet actor cmd /dms/node/peers/ping --host <peer>`. Parameters
    /// after the behavior become the payload (`--name value`, `--flag` = true).
    /// Behaviors under /broadcast/ are broadcast on /nunet/hello unless -b gives a topic.
    /// Exit codes: 0 ok, 1 failed, 3 denied or rejected, 4 timeout or unreachable.
    #[command(
        allow_hyphen_values = true,
        after_help = "Node behaviors:\n  /public/hello, /public/status\n  /broadcast/hello                     (broadcast; every node answers)\n  /dms/node/peers/list | self | dht | score\n  /dms/node/peers/connect --address /ip4/…/tcp/…/p2p/<peer id>\n  /dms/node/peers/ping --host <peer id or DID>\n\nExamples:\n  nunet actor cmd /dms/node/peers/list\n  nunet actor cmd -d did:key:z6Mk… /public/status --json"
    )]
    Cmd {
        /// Behavior name.
        behavior: String,
        #[command(flatten)]
        common: Common,
        /// Broadcast topic.
        #[arg(short = 'b', long = "broadcast", value_name = "TOPIC")]
        broadcast: Option<String>,
        /// Print the raw JSON result.
        #[arg(long)]
        json: bool,
        /// Behavior parameters.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PARAMS"
        )]
        params: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct Common {
    /// Capability context that signs the message.
    #[arg(short = 'c', long = "context", default_value = "user")]
    context: String,
    /// Destination: a DID, a peer id, or a handle JSON (default: the local node).
    #[arg(short = 'd', long = "dest")]
    dest: Option<String>,
    /// How long to wait for the answer (also the message's expiry).
    #[arg(short = 't', long = "timeout", default_value = "30s")]
    timeout: humantime::Duration,
    /// Expiry as a duration from now (overrides --timeout for the message lifetime).
    #[arg(short = 'e', long = "expiry")]
    expiry: Option<humantime::Duration>,
}

fn read_msg(arg: &str) -> Result<Envelope> {
    let text = if arg == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else if let Some(p) = arg.strip_prefix('@') {
        std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(&text).context("not a message built with `nunet actor msg`")
}

fn params_to_json(params: &[String]) -> Result<Value> {
    let mut map = serde_json::Map::new();
    let mut i = 0;
    while i < params.len() {
        let Some(name) = params[i]
            .strip_prefix("--")
            .or_else(|| params[i].strip_prefix('-'))
        else {
            bail!("unexpected parameter {:?}: use --name value", params[i]);
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (name.to_string(), None),
        };
        let value = match inline {
            Some(v) => v,
            None if i + 1 < params.len() && !params[i + 1].starts_with("--") => {
                i += 1;
                params[i].clone()
            }
            None => "true".to_string(),
        };
        let v = serde_json::from_str::<Value>(&value).unwrap_or(Value::String(value));
        map.insert(name.replace('-', "_"), v);
        i += 1;
    }
    Ok(Value::Object(map))
}

/// NuNet's `--spec-file <file>` (for `/dms/node/deployment/new` and `…/update`): the file is
/// read and decoded here, as `nunet deploy` does, and sent as `ensemble`; the daemon never
/// opens a path a message names.
fn spec_file_to_ensemble(payload: &mut Value) -> Result<()> {
    let Some(map) = payload.as_object_mut() else {
        return Ok(());
    };
    let Some(file) = map.remove("spec_file") else {
        return Ok(());
    };
    let Some(path) = file.as_str() else {
        bail!("--spec-file needs a file name");
    };
    let ensemble = crate::cmd::deploy::read_ensemble(std::path::Path::new(path))?;
    map.insert("ensemble".into(), serde_json::to_value(ensemble)?);
    Ok(())
}

fn api_for(home: &Home, timeout: Duration) -> Result<Api> {
    let (addr, port) = home.api_endpoint()?;
    Ok(Api::new(&addr, port, timeout))
}

pub fn run(home: &Home, cmd: ActorCmd) -> Result<i32> {
    match cmd {
        ActorCmd::Msg {
            behavior,
            payload,
            common,
            broadcast,
            invoke: _,
        } => {
            let payload = payload
                .map(|p| serde_json::from_str(&p).unwrap_or(Value::String(p)))
                .unwrap_or(Value::Null);
            let env = build(home, &behavior, &payload, &common, broadcast.as_deref())?;
            println!("{}", serde_json::to_string(&env)?);
            Ok(exit::OK)
        }
        ActorCmd::Send { msg } => deliver(home, "send", &read_msg(&msg)?, false),
        ActorCmd::Invoke { msg } => deliver(home, "invoke", &read_msg(&msg)?, false),
        ActorCmd::Broadcast { msg } => deliver(home, "broadcast", &read_msg(&msg)?, false),
        ActorCmd::Cmd {
            behavior,
            common,
            broadcast,
            json,
            params,
        } => {
            let mut payload = params_to_json(&params)?;
            spec_file_to_ensemble(&mut payload)?;
            let topic = broadcast.or_else(|| {
                behavior
                    .starts_with("/broadcast/")
                    .then(|| "/nunet/hello".to_string())
            });
            let env = build(home, &behavior, &payload, &common, topic.as_deref())?;
            let kind = if topic.is_some() {
                "broadcast"
            } else {
                "invoke"
            };
            deliver(home, kind, &env, json)
        }
    }
}

fn build(
    home: &Home,
    behavior: &str,
    payload: &Value,
    common: &Common,
    topic: Option<&str>,
) -> Result<Envelope> {
    let timeout: Duration = common.timeout.into();
    let ttl = common.expiry.map(Duration::from).unwrap_or(timeout);
    home.ensure_keystore_context(&common.context)?;
    let api = api_for(home, timeout)?;
    let local = api.handle()?;
    let (anchors, key) = home.context_with_key(&common.context)?;
    let to = match (&common.dest, topic) {
        (_, Some(_)) => None,
        (Some(d), None) => Some(Handle::parse(d).map_err(|e| anyhow::anyhow!("--dest: {e}"))?),
        (None, None) => Some(local.clone()),
    };
    client::sign_envelope(&key, &anchors, &local, to, behavior, payload, ttl, topic)
}

fn deliver(home: &Home, kind: &str, env: &Envelope, raw: bool) -> Result<i32> {
    let left = Duration::from_nanos(env.opt.exp.saturating_sub(nunet_capability::now_ns()));
    let api = api_for(home, left)?;
    match client::post_envelope(&api, kind, env)? {
        Ok(Outcome::Value(v)) => {
            if raw || !v.is_object() {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(exit::OK)
        }
        Ok(Outcome::Replies(list)) => {
            let out: Vec<Value> = list
                .into_iter()
                .map(|(h, r)| match r {
                    Ok(v) => json!({"from": h.did, "result": v}),
                    Err(e) => json!({"from": h.did, "error": e}),
                })
                .collect();
            println!(
                "{}",
                if raw {
                    serde_json::to_string(&out)?
                } else {
                    serde_json::to_string_pretty(&out)?
                }
            );
            Ok(exit::OK)
        }
        Err(e) => {
            if raw {
                println!("{}", json!({"error": e}));
            }
            let rule = e
                .rule
                .as_deref()
                .map(|r| format!(" [{r}]"))
                .unwrap_or_default();
            eprintln!("error: {:?}{rule}: {}", e.kind, e.message);
            Ok(client::code_of(&e))
        }
    }
}
