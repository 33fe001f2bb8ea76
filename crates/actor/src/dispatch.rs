//! The admission pipeline: everything an incoming envelope must pass before a behavior runs.

use std::sync::Arc;
use std::time::Duration;

use nunet_capability::{Action, Capability, Request, TokenList, now_ns};
use nunet_did::Did;
use serde_json::Value;

use crate::envelope::{Envelope, Options};
use crate::metrics::Channel;
use crate::reply::{ActorError, ErrorKind, Reply};
use crate::security::MAX_TTL_NS;
use crate::system::{ActorSystem, BehaviorKind, Incoming};

/// At most [`LOG_CLIP`] bytes of a sender-controlled string, for logs: a denied message must
/// not be able to write megabytes into the log.
pub(crate) fn clip(s: &str) -> &str {
    if s.len() <= LOG_CLIP {
        return s;
    }
    let mut end = LOG_CLIP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Longest sender-controlled string written to a log line.
pub(crate) const LOG_CLIP: usize = 160;

/// Longest behavior, topic or continuation name accepted.
pub const MAX_NAME_LEN: usize = 512;

/// Bounds every sender-controlled name before anything parses or looks it up (DIDs are
/// base58-decoded, names parsed as capabilities).
fn check_field_sizes(env: &Envelope) -> Result<(), ActorError> {
    let names = [
        ("be", &env.be),
        ("opt.topic", &env.opt.topic),
        ("opt.cont", &env.opt.cont),
        ("to.addr.inbox", &env.to.addr.inbox),
        ("from.addr.inbox", &env.from.addr.inbox),
    ];
    let ids = [
        ("from.id", &env.from.id),
        ("from.did", &env.from.did),
        ("to.id", &env.to.id),
        ("to.did", &env.to.did),
        ("to.addr.host", &env.to.addr.host),
        ("from.addr.host", &env.from.addr.host),
    ];
    let too_long = names
        .iter()
        .map(|(k, v)| (k, v.len(), MAX_NAME_LEN))
        .chain(
            ids.iter()
                .map(|(k, v)| (k, v.len(), nunet_did::MAX_DID_LEN)),
        )
        .find(|(_, len, max)| len > max);
    match too_long {
        Some((k, len, max)) => Err(rejected(format!("{k} is {len} bytes; at most {max}"))),
        None => Ok(()),
    }
}

fn rejected(msg: impl Into<String>) -> ActorError {
    ActorError::new(ErrorKind::Rejected, msg)
}

/// Where an envelope came from: decides whether the same-node shortcut may apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Signed and delivered inside this process by one of its own actors.
    InProcess,
    /// Anything that arrived from outside: the network, gossip, the REST bridge.
    External,
}

impl ActorSystem {
    /// Handles raw bytes received on the actor protocol; always returns a signed reply.
    pub async fn handle_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match Envelope::from_bytes(bytes) {
            Ok(env) => self.handle_envelope(env).await.to_bytes(),
            Err(e) => {
                crate::metrics::undecodable(Channel::Direct);
                tracing::warn!(error = %clip(&e.to_string()), "rejected undecodable envelope");
                self.node_reply(None, Reply::Error(rejected(e.to_string())))
                    .to_bytes()
            }
        }
    }

    /// Authenticates and dispatches a direct envelope that came from outside this process
    /// (network, REST bridge); returns the signed reply. Capability checks always apply,
    /// whoever signed it.
    pub async fn handle_envelope(&self, env: Envelope) -> Envelope {
        self.handle_from(env, Origin::External).await
    }

    /// Dispatches a message whose signature a wire adapter checked in its own format
    /// (NuNet's Go envelope, `nunet-gowire`): `sender` is the key that signed it, and must be
    /// the key in `env.from.id`; `broadcast` says which channel it came on (gossip, or a
    /// stream to this node), never inferred from the envelope. Every other check (address, expiry, capability, behavior, replay) runs as for
    /// [`Self::handle_envelope`] or [`Self::handle_gossip`]. Returns the behavior's result:
    /// the adapter answers in its own format.
    pub async fn handle_authenticated(
        &self,
        env: Envelope,
        sender: &Did,
        broadcast: bool,
    ) -> Result<Value, ActorError> {
        if Did::parse(&env.from.id).ok().as_ref() != Some(sender) {
            return Err(rejected("from.id is not the key that signed the message"));
        }
        let channel = if broadcast {
            Channel::Broadcast
        } else {
            Channel::Direct
        };
        let env = Arc::new(env);
        match self.admit_as(&env, broadcast, Origin::External, Some(sender)) {
            Ok((sender, kind @ (BehaviorKind::Direct | BehaviorKind::Broadcast))) => {
                crate::metrics::admitted(channel);
                self.run(&env, sender, kind).await
            }
            // This node's reply endpoints answer its own wire only.
            Ok((_, kind)) => Err(rejected(format!(
                "{kind:?} behaviors are not invoked over NuNet's wire"
            ))),
            Err(e) => {
                crate::metrics::denied(channel, &e);
                tracing::warn!(behavior = %clip(&env.be), from = %clip(&env.from.id), error = %clip(&e.message), rule = ?e.rule, "denied (NuNet wire)");
                Err(e)
            }
        }
    }

    pub(crate) async fn handle_from(&self, env: Envelope, origin: Origin) -> Envelope {
        let env = Arc::new(env);
        let outcome = match self.admit(&env, false, origin) {
            Ok((sender, kind)) => {
                crate::metrics::admitted(Channel::Direct);
                self.run(&env, sender, kind).await
            }
            Err(e) => {
                crate::metrics::denied(Channel::Direct, &e);
                tracing::warn!(behavior = %clip(&env.be), from = %clip(&env.from.id), error = %clip(&e.message), rule = ?e.rule, "denied");
                Err(e)
            }
        };
        let inbox = env.to.addr.inbox.clone();
        self.reply_from(&inbox, &env, Reply::from_result(outcome))
    }

    /// Authenticates and dispatches a broadcast from gossip; sends the behavior's result back
    /// to the sender's `opt.cont` behavior when it asked for one.
    pub async fn handle_gossip(&self, bytes: &[u8]) {
        let env = match Envelope::from_bytes(bytes) {
            Ok(e) => Arc::new(e),
            Err(e) => {
                crate::metrics::undecodable(Channel::Broadcast);
                tracing::debug!(error = %clip(&e.to_string()), "dropped undecodable gossip");
                return;
            }
        };
        let (sender, kind) = match self.admit(&env, true, Origin::External) {
            Ok(x) => {
                crate::metrics::admitted(Channel::Broadcast);
                x
            }
            Err(e) => {
                crate::metrics::denied(Channel::Broadcast, &e);
                tracing::warn!(behavior = %clip(&env.be), from = %clip(&env.from.id), error = %clip(&e.message), "broadcast denied");
                return;
            }
        };
        let result = self.run(&env, sender, kind).await;
        if env.opt.cont.is_empty() {
            return;
        }
        let Ok(value) = result else { return };
        let reply_cap = self.actor("root").and_then(|a| {
            a.behaviors
                .read()
                .ok()
                .and_then(|m| m.get(&env.be).and_then(|b| b.reply_capability.clone()))
        });
        let reply = match reply_cap {
            // Sent under a capability: tokens for it, addressed to the broadcaster.
            Some(cap) => {
                let opt = Options {
                    exp: env.opt.exp.max(now_ns() + 1_000_000_000),
                    ..Default::default()
                };
                let body = serde_json::to_value(Reply::Ok(value)).unwrap_or(Value::Null);
                match self.envelope_under(
                    "root",
                    env.from.clone(),
                    &env.opt.cont,
                    Some(&cap.to_string()),
                    &body,
                    opt,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, capability = %cap, "no tokens for a broadcast reply");
                        return;
                    }
                }
            }
            None => {
                let mut reply = self.reply_from("root", &env, Reply::Ok(value));
                reply.be = env.opt.cont.clone();
                reply
            }
        };
        if let Err(e) = self.deliver_from(reply, Origin::InProcess).await {
            tracing::warn!(error = %e, to = %env.from.did, "broadcast reply not delivered");
        }
    }

    /// Every check, in order: sizes, address, expiry, signature, capability, behavior,
    /// replay (recorded last, so only admitted messages are remembered).
    fn admit(
        &self,
        env: &Envelope,
        broadcast: bool,
        origin: Origin,
    ) -> Result<(Did, BehaviorKind), ActorError> {
        self.admit_as(env, broadcast, origin, None)
    }

    /// [`Self::admit`], with the signature already checked by a wire adapter when
    /// `authenticated` names the signer.
    fn admit_as(
        &self,
        env: &Envelope,
        broadcast: bool,
        origin: Origin,
        authenticated: Option<&Did>,
    ) -> Result<(Did, BehaviorKind), ActorError> {
        let inner = &self.0;
        check_field_sizes(env)?;
        let inbox = if broadcast {
            if env.opt.topic.is_empty() || !env.to.is_empty() {
                return Err(rejected("a broadcast needs a topic and no receiver"));
            }
            "root"
        } else {
            if env.to.addr.host != inner.peer {
                return Err(rejected(format!(
                    "message for node {} arrived at {}",
                    env.to.addr.host, inner.peer
                )));
            }
            env.to.addr.inbox.as_str()
        };
        let actor = self.actor(inbox).ok_or_else(|| {
            ActorError::new(
                ErrorKind::NotFound,
                format!("no actor {inbox:?} on this node"),
            )
        })?;
        let now = now_ns();
        if env.opt.exp <= now {
            return Err(rejected("message expired"));
        }
        if env.opt.exp > now.saturating_add(MAX_TTL_NS) {
            return Err(rejected("message expiry is more than 24h ahead"));
        }
        let sender = match authenticated {
            Some(did) => did.clone(),
            None => env
                .verify_signature()
                .map_err(|e| rejected(e.to_string()))?,
        };
        let behavior = actor
            .behaviors
            .read()
            .ok()
            .and_then(|m| m.get(&env.be).cloned());
        let kind = behavior.as_ref().map(|b| b.kind.clone());
        // Same node = signed inside this process by the node key or one of our child actors'
        // keys. Never for anything that arrived from outside (a leaked child key, or the
        // node key used by a local client, still needs tokens), and never inferred from the
        // handle's claimed `did`, which anyone can write.
        let same_node = origin == Origin::InProcess
            && (sender == inner.node_did
                || inner
                    .actors
                    .read()
                    .map(|m| {
                        m.values()
                            .any(|a| a.key.is_some() && a.handle.id == env.from.id)
                    })
                    .unwrap_or(false));
        let audience = || -> Result<Did, ActorError> {
            if actor.handle.id.is_empty() {
                Ok(inner.node_did.clone())
            } else {
                Did::parse(&actor.handle.id).map_err(|e| rejected(e.to_string()))
            }
        };
        if let Some(b) = behavior.as_ref().filter(|b| b.kind == BehaviorKind::Reply) {
            // A reply endpoint's unguessable name admits the reply; one that carries a
            // decision (a bid) must also be authorized for the capability it declares, like
            // any message, and its denials are reported to whoever collects the replies.
            if let (Some(cap), false) = (
                &b.reply_capability,
                same_node || !inner.config.verify_capabilities,
            ) && let Err(e) = self.authorize(env, &sender, cap, None, &audience()?, now)
            {
                if let Some(sink) = &b.denied {
                    let _ = sink.try_send((env.from.clone(), e.clone()));
                }
                return Err(e);
            }
            self.record_nonce(env, now)?;
            return Ok((sender, BehaviorKind::Reply));
        }
        if inner.config.verify_capabilities && !same_node {
            let cap: Capability = env
                .be
                .parse()
                .map_err(|e| rejected(format!("behavior name: {e}")))?;
            let topic: Option<Capability> = if broadcast {
                Some(
                    env.opt
                        .topic
                        .parse()
                        .map_err(|e| rejected(format!("topic: {e}")))?,
                )
            } else {
                None
            };
            self.authorize(env, &sender, &cap, topic.as_ref(), &audience()?, now)?;
        }
        match kind {
            Some(k) if (k == BehaviorKind::Broadcast) == broadcast => {
                // Recorded only now, after authentication and authorization: denied
                // messages never fill the cache.
                self.record_nonce(env, now)?;
                Ok((sender, k))
            }
            _ => Err(ActorError::new(
                ErrorKind::NotFound,
                format!("no behavior {} on actor {inbox:?}", env.be),
            )),
        }
    }

    /// Refuses a replay, else remembers the message's (sender, nonce) until it expires.
    fn record_nonce(&self, env: &Envelope, now: u64) -> Result<(), ActorError> {
        self.0
            .replay
            .check(&env.from.id, env.nonce, env.opt.exp, now)
            .map_err(rejected)
    }

    /// Checks the envelope's tokens: `sender` may use `cap` (broadcast on `topic` when
    /// given, else invoke) on an actor whose DID is `audience`, anchored in our anchors.
    fn authorize(
        &self,
        env: &Envelope,
        sender: &Did,
        cap: &Capability,
        topic: Option<&Capability>,
        audience: &Did,
        now: u64,
    ) -> Result<(), ActorError> {
        let inner = &self.0;
        let list = if env.cap.is_empty() {
            TokenList::default()
        } else {
            TokenList::from_json(&env.cap).map_err(|e| rejected(e.to_string()))?
        };
        let req = Request {
            action: if topic.is_some() {
                Action::Broadcast
            } else {
                Action::Invoke
            },
            subject: sender,
            audience,
            capability: cap,
            topic,
        };
        let anchors = inner
            .anchors
            .read()
            .map_err(|_| ActorError::failed("anchors unavailable"))?;
        inner
            .verifier
            .verify_any(&list, &req, &anchors, now)
            .map(|_| ())
            .map_err(|denied| ActorError {
                kind: ErrorKind::Denied,
                rule: Some(denied.rule().to_string()),
                message: denied.to_string(),
            })
    }

    async fn run(
        &self,
        env: &Arc<Envelope>,
        sender: Did,
        _kind: BehaviorKind,
    ) -> Result<Value, ActorError> {
        let inbox = if env.to.is_empty() {
            "root"
        } else {
            env.to.addr.inbox.as_str()
        };
        let handler = self
            .actor(inbox)
            .and_then(|a| {
                a.behaviors
                    .read()
                    .ok()
                    .and_then(|m| m.get(&env.be).map(|b| b.handler.clone()))
            })
            .ok_or_else(|| {
                ActorError::new(ErrorKind::NotFound, format!("no behavior {}", env.be))
            })?;
        let payload = if env.msg.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&env.msg)
                .map_err(|e| rejected(format!("payload is not JSON: {e}")))?
        };
        let left = Duration::from_nanos(env.opt.exp.saturating_sub(now_ns()));
        let fut = handler(Incoming {
            envelope: env.clone(),
            sender,
            payload,
        });
        // A message sent from inside a trace is handled in a span of that trace (at debug:
        // logs at info do not format it; the trace layer takes it whatever the level).
        // Only where this node records traces, and only a context of the W3C size (55
        // characters): anything else from a peer is not even put in a span.
        let traced =
            !env.opt.trace.is_empty() && env.opt.trace.len() <= 64 && crate::trace::recording();
        let fut: futures::future::BoxFuture<'static, Result<Value, ActorError>> = if !traced {
            fut
        } else {
            let span =
                tracing::debug_span!("handle", otel.name = %env.be, traceparent = %env.opt.trace);
            Box::pin(tracing::Instrument::instrument(fut, span))
        };
        match tokio::time::timeout(left, fut).await {
            Ok(r) => r,
            Err(_) => Err(ActorError::new(
                ErrorKind::Timeout,
                format!("{} did not finish before the message expired", env.be),
            )),
        }
    }

    /// A reply from the actor at `inbox` (falling back to the root actor's key).
    fn reply_from(&self, inbox: &str, req: &Envelope, reply: Reply) -> Envelope {
        let actor = self
            .actor(inbox)
            .filter(|a| a.key.is_some())
            .or_else(|| self.actor("root"));
        let (handle, key) = match actor.and_then(|a| a.key.clone().map(|k| (a.handle.clone(), k))) {
            Some(x) => x,
            None => (self.root(), self.0.node_key.clone()),
        };
        let be = if req.opt.cont.is_empty() {
            "/reply".to_string()
        } else {
            req.opt.cont.clone()
        };
        let msg = serde_json::to_vec(&reply).unwrap_or_default();
        let opt = Options {
            exp: req.opt.exp.max(now_ns() + 1_000_000_000),
            ..Options::default()
        };
        Envelope::sign(&key, handle, req.from.clone(), &be, opt, msg, Vec::new())
    }

    fn node_reply(&self, req: Option<&Envelope>, reply: Reply) -> Envelope {
        let msg = serde_json::to_vec(&reply).unwrap_or_default();
        let to = req.map(|r| r.from.clone()).unwrap_or_default();
        let opt = Options {
            exp: now_ns() + 60_000_000_000,
            ..Default::default()
        };
        Envelope::sign(
            &self.0.node_key,
            self.root(),
            to,
            "/reply",
            opt,
            msg,
            Vec::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_fields_are_clipped_on_a_char_boundary() {
        let long = "é".repeat(1000);
        let c = clip(&long);
        assert!(c.len() <= LOG_CLIP && c.len() >= LOG_CLIP - 1);
        assert!(long.starts_with(c));
        assert_eq!(clip("short"), "short");
    }
}
