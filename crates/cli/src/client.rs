//! Talking to the local daemon: signing envelopes with a user context and posting them to
//! the REST bridge.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use nunet_actor::envelope::Address;
use nunet_actor::{ActorError, Envelope, ErrorKind, Handle, Options};
use nunet_capability::{Action, Anchors, Capability, TokenList, TokenSpec, expiry_after, now_ns};
use nunet_did::Keypair;
use serde_json::Value;

/// Exit codes of `nunet actor`.
pub mod exit {
    /// The behavior ran and returned a result.
    pub const OK: i32 = 0;
    /// The behavior failed, or bad input.
    pub const FAILED: i32 = 1;
    /// The receiver denied the message (capabilities, signature, expiry, replay).
    pub const DENIED: i32 = 3;
    /// No answer in time, or the receiver could not be reached.
    pub const TIMEOUT: i32 = 4;
}

/// Exit code for an actor error.
pub fn code_of(e: &ActorError) -> i32 {
    match e.kind {
        ErrorKind::Denied | ErrorKind::Rejected => exit::DENIED,
        ErrorKind::Timeout | ErrorKind::Unreachable => exit::TIMEOUT,
        _ => exit::FAILED,
    }
}

/// The local daemon's REST API.
pub struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// The API at `addr:port`.
    pub fn new(addr: &str, port: u16, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout.saturating_add(Duration::from_secs(5))))
            .build();
        Self {
            base: format!("http://{addr}:{port}/api/v1"),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            "cannot reach the DMS at {} ({e}); is `nunet run` running with this --data-dir?",
            self.base
        )
    }

    /// GET a JSON document.
    pub fn get(&self, path: &str) -> Result<Value> {
        let mut r = self
            .agent
            .get(&format!("{}{path}", self.base))
            .call()
            .map_err(|e| self.unreachable(e))?;
        r.body_mut()
            .read_json()
            .context("reading the daemon's answer")
    }

    /// POST a JSON document; returns the status and body.
    pub fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_json(body)
            .map_err(|e| self.unreachable(e))?;
        let status = r.status().as_u16();
        let v: Value = r
            .body_mut()
            .read_json()
            .context("reading the daemon's answer")?;
        Ok((status, v))
    }

    /// The local node's root handle.
    pub fn handle(&self) -> Result<Handle> {
        Ok(serde_json::from_value(self.get("/actor/handle")?)?)
    }
}

/// Builds and signs an envelope from a user context to `to` (None = broadcast on `topic`).
#[allow(clippy::too_many_arguments)]
pub fn sign_envelope(
    key: &Keypair,
    anchors: &Anchors,
    local: &Handle,
    to: Option<Handle>,
    be: &str,
    payload: &Value,
    ttl: Duration,
    topic: Option<&str>,
) -> Result<Envelope> {
    let exp = expiry_after(now_ns(), ttl).context("the message lifetime (--expiry)")?;
    let cap: Capability = be.parse().with_context(|| format!("behavior {be:?}"))?;
    let topic_caps: Vec<Capability> = topic
        .map(|t| t.parse())
        .transpose()
        .with_context(|| "topic")?
        .into_iter()
        .collect();
    let aud = to.as_ref().and_then(|h| nunet_did::Did::parse(&h.id).ok());
    let act = if topic.is_some() {
        Action::Broadcast
    } else {
        Action::Invoke
    };
    let spec = TokenSpec {
        sub: key.did(),
        aud,
        cap: vec![cap],
        topic: topic_caps,
        exp,
        depth: 0,
    };
    let toks = anchors.invocation_tokens(key, act, &spec, now_ns());
    let from = Handle {
        id: key.did().to_string(),
        did: key.did().to_string(),
        addr: Address {
            host: local.addr.host.clone(),
            inbox: format!("cli-{:016x}", rand::random::<u64>()),
        },
    };
    let cont = match topic {
        Some(_) => format!("/reply/{:016x}", rand::random::<u64>()),
        None => "/reply".to_string(),
    };
    let opt = Options {
        exp,
        cont,
        topic: topic.unwrap_or_default().to_string(),
    };
    let msg = serde_json::to_vec(payload)?;
    Ok(Envelope::sign(
        key,
        from,
        to.unwrap_or_default(),
        be,
        opt,
        msg,
        TokenList { tok: toks }.to_json().into_bytes(),
    ))
}

/// Outcome of posting an envelope.
pub enum Outcome {
    /// The behavior's result.
    Value(Value),
    /// Replies to a broadcast: sender handle and result.
    Replies(Vec<(Handle, Result<Value, ActorError>)>),
}

/// Posts an envelope to `/actor/{invoke,send,broadcast}` and interprets the answer.
pub fn post_envelope(api: &Api, kind: &str, env: &Envelope) -> Result<Result<Outcome, ActorError>> {
    let (status, body) = api.post(&format!("/actor/{kind}"), &serde_json::to_value(env)?)?;
    if let Some(e) = body.get("error") {
        let e: ActorError =
            serde_json::from_value(e.clone()).unwrap_or_else(|_| ActorError::failed(e.to_string()));
        return Ok(Err(e));
    }
    if status >= 400 {
        bail!("the daemon answered HTTP {status}: {body}");
    }
    match kind {
        "invoke" => {
            let reply: Envelope = serde_json::from_value(body).context("reply envelope")?;
            reply
                .verify_signature()
                .map_err(|e| anyhow!("reply: {e}"))?;
            Ok(nunet_actor::system::decode_reply(&reply).map(Outcome::Value))
        }
        "broadcast" => {
            let list: Vec<Envelope> =
                serde_json::from_value(body.get("replies").cloned().unwrap_or(Value::Null))
                    .unwrap_or_default();
            Ok(Ok(Outcome::Replies(
                list.into_iter()
                    .filter(|r| r.verify_signature().is_ok())
                    .map(|r| (r.from.clone(), nunet_actor::system::decode_reply(&r)))
                    .collect(),
            )))
        }
        _ => Ok(Ok(Outcome::Value(body))),
    }
}
