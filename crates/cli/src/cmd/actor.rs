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
        after_help = "Node behaviors:\n  /public/hello, /public/status\n  /broadcast/hello                     (broadcast; every node answers)\n  /dms/node/peers/list | self | dht | score   (self: reachability, relays, hole punches)\n  /dms/node/peers/connect -a|--address /ip4/…/tcp/…/p2p/<peer id>\n  /dms/node/peers/ping -H|--host <peer id or DID>\n  /dms/node/peers/disconnect -H|--host <peer id or DID>\n  /dms/node/onboarding/onboard -C|--cpu <cores> -R|--ram <size> -D|--disk <size> [-G|--gpus idx:GiB,…]\n  /dms/node/onboarding/offboard [--force], /dms/node/onboarding/status\n  /dms/node/deployment/new -f|--spec-file <ensemble.yaml>\n  /dms/node/deployment/status | manifest | shutdown -i|--id <id>\n  /dms/node/deployment/logs -i|--id <id> [-a|--allocation <name>]\n  /dms/node/logger/config [-l|--level debug]\n  /dms/node/nunet/invoke -H|--host <NuNet peer> --behavior <name> [-m|--message JSON] [--timeout <seconds>]\n  /dms/volume/create --name <volume> --client-pem-file <cert.pem> [--size <size>] [--ca-output-dir <dir>] -d <storage node>\n  /dms/volume/start | delete --name <volume> -d <storage node>   (storage nodes: general.storage_mode)\n\nSizes are GiB unless a unit is given (512MiB, 2GiB, 1TB).\n\nExamples:\n  nunet actor cmd /dms/node/peers/list\n  nunet actor cmd -d did:key:z6Mk… /public/status --json\n  nunet actor cmd -c dms /dms/node/onboarding/onboard -C 2 -R 4 -D 20"
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
    /// Expiry (overrides --timeout for the message lifetime): a duration from now (`90s`,
    /// `10m`) or a time as NuNet writes it (`2026-12-31`, `2026-12-31 12:00:00`,
    /// `2026-12-31T12:00:00Z`).
    #[arg(short = 'e', long = "expiry", value_parser = parse_expiry_arg)]
    expiry: Option<Duration>,
}

/// `-e`: a duration, or an absolute time turned into the time left until it.
fn parse_expiry_arg(s: &str) -> Result<Duration, String> {
    if let Ok(d) = s.parse::<humantime::Duration>() {
        return Ok(d.into());
    }
    let at = crate::cmd::cap::parse_expiry(s).map_err(|_| {
        format!("{s:?} is neither a duration (90s, 10m) nor a time (2026-12-31, 2026-12-31 12:00:00, RFC 3339)")
    })?;
    let now = nunet_capability::now_ns();
    if at <= now {
        return Err(format!("{s:?} is in the past"));
    }
    Ok(Duration::from_nanos(at - now))
}

/// NuNet's one-letter spellings of behavior parameters (`actor cmd` and the commands that
/// wrap it), per behavior: `-R 4 -C 2 -D 20` is `--ram 4 --cpu 2 --disk 20`.
const SHORT_FLAGS: &[(&str, &[(char, &str)])] = &[
    (
        "/dms/node/onboarding/onboard",
        &[
            ('R', "ram"),
            ('C', "cpu"),
            ('D', "disk"),
            ('G', "gpus"),
            ('N', "no-gpu"),
        ],
    ),
    ("/dms/node/peers/connect", &[('a', "address")]),
    ("/dms/node/peers/ping", &[('H', "host")]),
    ("/dms/node/peers/disconnect", &[('H', "host")]),
    ("/dms/node/nunet/invoke", &[('H', "host"), ('m', "message")]),
    ("/dms/node/deployment/new", &[('f', "spec-file")]),
    (
        "/dms/node/deployment/update",
        &[('f', "spec-file"), ('i', "id")],
    ),
    ("/dms/node/deployment/status", &[('i', "id")]),
    ("/dms/node/deployment/manifest", &[('i', "id")]),
    ("/dms/node/deployment/shutdown", &[('i', "id")]),
    (
        "/dms/node/deployment/logs",
        &[('i', "id"), ('a', "allocation")],
    ),
    (
        "/dms/node/logger/config",
        &[('l', "level"), ('u', "url"), ('i', "interval")],
    ),
];

/// The long name of `-<c>` for `behavior`.
fn long_name(behavior: &str, c: char) -> Option<&'static str> {
    SHORT_FLAGS
        .iter()
        .find(|(b, _)| *b == behavior)
        .and_then(|(_, flags)| flags.iter().find(|(s, _)| *s == c))
        .map(|(_, l)| *l)
}

/// Whether a parameter word is a flag name rather than a value: `--name`, or `-X…` with a
/// letter (so `-5` stays a value).
fn is_flag(word: &str) -> bool {
    word.starts_with("--")
        || word
            .strip_prefix('-')
            .and_then(|r| r.chars().next())
            .is_some_and(|c| c.is_ascii_alphabetic())
}

/// `-X` of `behavior` as its long name; `-X4` and `-X=4` carry their value (as pflag reads
/// them). One dash before a whole name (`-id`, `-address`, `-verbose`) is read as two, as
/// this CLI always read it; anything else after one dash must be a known letter.
fn short_to_long(behavior: &str, word: &str, short: &str) -> Result<String> {
    let name = short.split('=').next().unwrap_or(short);
    let known_long = SHORT_FLAGS
        .iter()
        .filter(|(b, _)| *b == behavior)
        .flat_map(|(_, f)| f.iter())
        .any(|(_, l)| *l == name);
    if name.len() > 1 && known_long {
        return Ok(short.to_string());
    }
    let mut chars = short.chars();
    let Some(c) = chars.next() else {
        bail!("unexpected parameter {word:?}: use --name value");
    };
    let rest = chars.as_str();
    let word_like = name.len() > 1
        && name
            .chars()
            .all(|c| c.is_ascii_alphabetic() || c == '-' || c == '_');
    match long_name(behavior, c) {
        Some(long) if rest.is_empty() => Ok(long.to_string()),
        Some(long) => Ok(format!("{long}={}", rest.strip_prefix('=').unwrap_or(rest))),
        None if word_like => Ok(short.to_string()),
        None => {
            let known = SHORT_FLAGS
                .iter()
                .find(|(b, _)| *b == behavior)
                .map(|(_, f)| {
                    let list: Vec<String> = f.iter().map(|(s, l)| format!("-{s} --{l}")).collect();
                    format!(" (short flags here: {})", list.join(", "))
                })
                .unwrap_or_default();
            bail!("{behavior} has no short flag -{c}; use the --long form{known}")
        }
    }
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

fn params_to_json(behavior: &str, params: &[String]) -> Result<Value> {
    let mut map = serde_json::Map::new();
    let mut i = 0;
    while i < params.len() {
        let word = &params[i];
        let name = if let Some(long) = word.strip_prefix("--") {
            long.to_string()
        } else if let Some(short) = word.strip_prefix('-') {
            short_to_long(behavior, word, short)?
        } else {
            bail!("unexpected parameter {word:?}: use --name value");
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (name, None),
        };
        let value = match inline {
            Some(v) => v,
            None if i + 1 < params.len() && !is_flag(&params[i + 1]) => {
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
        ActorCmd::Send { msg } => deliver(home, "send", &read_msg(&msg)?, false, None),
        ActorCmd::Invoke { msg } => deliver(home, "invoke", &read_msg(&msg)?, false, None),
        ActorCmd::Broadcast { msg } => deliver(home, "broadcast", &read_msg(&msg)?, false, None),
        ActorCmd::Cmd {
            behavior,
            common,
            broadcast,
            json,
            params,
        } => {
            let mut payload = params_to_json(&behavior, &params)?;
            spec_file_to_ensemble(&mut payload)?;
            let ca_output_dir = volume_files(&behavior, &mut payload)?;
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
            deliver(home, kind, &env, json, ca_output_dir.as_deref())
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
    let ttl = common.expiry.unwrap_or(timeout);
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

/// NuNet's volume flags: `--client-pem-file <file>` is read here and sent as `client_pem`
/// (the daemon never opens a path a message names); `--ca-output-dir <dir>` stays here and
/// names where the reply's `ca_data` is written (`<dir>/glusterfs.ca`).
fn volume_files(behavior: &str, payload: &mut Value) -> Result<Option<std::path::PathBuf>> {
    let Some(map) = payload.as_object_mut() else {
        return Ok(None);
    };
    if let Some(file) = map.remove("client_pem_file") {
        let Some(path) = file.as_str() else {
            bail!("--client-pem-file needs a file name");
        };
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        map.insert("client_pem".into(), Value::String(pem));
    }
    // `--size 512MiB` (GiB without a unit, as every size here) travels as bytes.
    if behavior == nunet_protocol::names::VOLUME_CREATE
        && let Some(v) = map.remove("size")
    {
        let text = match &v {
            Value::String(t) => t.clone(),
            Value::Number(n) => n.to_string(),
            _ => bail!("--size needs a size like 10GiB"),
        };
        let bytes =
            nunet_ensemble::units::parse_size(&text).map_err(|e| anyhow::anyhow!("--size: {e}"))?;
        map.insert("size".into(), Value::from(bytes));
    }
    match map.remove("ca_output_dir") {
        None => Ok(None),
        Some(Value::String(d)) => Ok(Some(d.into())),
        Some(_) => bail!("--ca-output-dir needs a directory"),
    }
}

fn deliver(
    home: &Home,
    kind: &str,
    env: &Envelope,
    raw: bool,
    ca_output_dir: Option<&std::path::Path>,
) -> Result<i32> {
    let left = Duration::from_nanos(env.opt.exp.saturating_sub(nunet_capability::now_ns()));
    let api = api_for(home, left)?;
    match client::post_envelope(&api, kind, env)? {
        Ok(Outcome::Value(v)) => {
            if let Some(dir) = ca_output_dir {
                let Some(ca) = v.get("ca_data").and_then(Value::as_str) else {
                    bail!("--ca-output-dir: the reply has no ca_data: {v}");
                };
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let file = dir.join("glusterfs.ca");
                std::fs::write(&file, ca).with_context(|| format!("writing {}", file.display()))?;
                eprintln!("wrote the storage node's certificate to {}", file.display());
            }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn params(behavior: &str, words: &[&str]) -> Result<Value> {
        let v: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        params_to_json(behavior, &v)
    }

    #[test]
    fn nunet_short_flags_map_to_their_long_names() {
        let onboard = "/dms/node/onboarding/onboard";
        assert_eq!(
            params(onboard, &["-R", "4", "-C", "2", "-D", "20GiB", "-N"]).unwrap(),
            json!({"ram": 4, "cpu": 2, "disk": "20GiB", "no_gpu": true})
        );
        // A flag with no value before another short flag; pflag's `-R4` and `-R=4`.
        assert_eq!(
            params(onboard, &["-N", "-R4", "-C=2", "--disk", "-1"]).unwrap(),
            json!({"no_gpu": true, "ram": 4, "cpu": 2, "disk": -1})
        );
        assert_eq!(
            params("/dms/node/peers/ping", &["-H", "12D3KooW"]).unwrap(),
            json!({"host": "12D3KooW"})
        );
        assert_eq!(
            params("/dms/node/deployment/logs", &["-i", "abc", "-a", "web"]).unwrap(),
            json!({"id": "abc", "allocation": "web"})
        );
        // An unknown short flag is an error naming the ones that exist, never a key "X".
        let e = params(onboard, &["-X", "1"]).unwrap_err().to_string();
        assert!(
            e.contains("no short flag -X") && e.contains("-R --ram"),
            "{e}"
        );
        let e = params("/public/status", &["-q"]).unwrap_err().to_string();
        assert!(e.contains("no short flag -q"), "{e}");
        // A single dash before a word is read as two, also where its first letter is a
        // short flag; an unknown letter with a value attached is refused like one without.
        assert_eq!(
            params("/public/status", &["-verbose"]).unwrap(),
            json!({"verbose": true})
        );
        assert_eq!(
            params("/dms/node/deployment/status", &["-id", "abc"]).unwrap(),
            json!({"id": "abc"})
        );
        assert_eq!(
            params("/dms/node/peers/connect", &["-address=/ip4/1.2.3.4"]).unwrap(),
            json!({"address": "/ip4/1.2.3.4"})
        );
        assert!(params(onboard, &["-X4"]).is_err());
    }

    #[test]
    fn expiry_takes_a_duration_or_a_time() {
        assert_eq!(parse_expiry_arg("90s").unwrap(), Duration::from_secs(90));
        let left = parse_expiry_arg("2500-01-01").unwrap();
        assert!(left > Duration::from_secs(100 * 365 * 86400));
        assert!(parse_expiry_arg("2500-01-01 12:00:00").is_ok());
        assert!(parse_expiry_arg("2500-01-01T12:00:00Z").is_ok());
        assert!(
            parse_expiry_arg("2001-01-01")
                .unwrap_err()
                .contains("in the past")
        );
        assert!(parse_expiry_arg("soon").unwrap_err().contains("neither"));
    }
}
