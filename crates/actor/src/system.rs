use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use nunet_capability::{Action, Anchors, Capability, TokenList, TokenSpec, Verifier, now_ns};
use nunet_did::{Did, Keypair};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::dispatch::Origin;
use crate::envelope::{Address, Envelope, Handle, Options};
use crate::reply::{ActorError, ErrorKind, Reply};
use crate::security::ReplayCache;

/// Why bytes could not be moved.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

/// Moves envelope bytes between nodes. The response to a request is the receiver's signed
/// reply envelope. Implementations must authenticate the peer that answers a request (libp2p
/// does, through the connection's noise handshake): the actor layer relies on it.
pub trait Transport: Send + Sync + 'static {
    /// Sends `bytes` to the node with libp2p peer id `peer` and waits for its answer.
    fn request(
        &self,
        peer: &str,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
    /// Publishes `bytes` on a gossip topic.
    fn publish(
        &self,
        topic: &str,
        bytes: Vec<u8>,
    ) -> BoxFuture<'static, Result<(), TransportError>>;
    /// The peers known to be subscribed to `topic` (libp2p peer ids), or `None` when the
    /// transport cannot tell.
    fn topic_peers(&self, _topic: &str) -> BoxFuture<'static, Option<Vec<String>>> {
        Box::pin(async { None })
    }
    /// `peers` (libp2p peer ids) did not answer a broadcast they were expected to: the
    /// transport may leave them out of [`Self::topic_peers`] for a while.
    fn quiet_topic_peers(&self, _peers: Vec<String>) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

/// An authenticated message handed to a behavior.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The envelope as received.
    pub envelope: Arc<Envelope>,
    /// The verified sender (its key).
    pub sender: Did,
    /// The decoded payload (`null` when empty).
    pub payload: Value,
}

/// A behavior's code.
pub type Handler =
    Arc<dyn Fn(Incoming) -> BoxFuture<'static, Result<Value, ActorError>> + Send + Sync>;

/// How a behavior is reached and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BehaviorKind {
    /// Invoked or sent directly; needs an invoke capability for its name.
    Direct,
    /// Received from a gossip topic; needs a broadcast capability for its name and topic.
    Broadcast,
    /// An ephemeral reply endpoint: its unguessable name is the capability.
    Reply,
}

/// Where a reply endpoint reports replies it refused: the sender's handle and why.
pub type DeniedSink = mpsc::Sender<(Handle, ActorError)>;

/// A registered behavior.
#[derive(Clone)]
pub struct Behavior {
    /// The code.
    pub handler: Handler,
    /// How it is reached.
    pub kind: BehaviorKind,
    /// For a broadcast behavior: the capability its replies are sent under (they carry
    /// invocation tokens for it, addressed to the broadcaster). For a reply endpoint: the
    /// capability a reply must be authorized for, like any message (e.g. a bid).
    pub reply_capability: Option<Capability>,
    /// For a reply endpoint: where refused replies are reported.
    pub denied: Option<DeniedSink>,
}

impl Behavior {
    /// A direct behavior from an async function.
    pub fn direct<F, Fut>(f: F) -> Self
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, ActorError>> + Send + 'static,
    {
        Self {
            handler: Arc::new(move |m| Box::pin(f(m))),
            kind: BehaviorKind::Direct,
            reply_capability: None,
            denied: None,
        }
    }

    /// This broadcast behavior's replies are sent under `cap` (see
    /// [`Behavior::reply_capability`]).
    pub fn replying_as(mut self, cap: Capability) -> Self {
        self.reply_capability = Some(cap);
        self
    }

    /// A broadcast behavior from an async function.
    pub fn broadcast<F, Fut>(f: F) -> Self
    where
        F: Fn(Incoming) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, ActorError>> + Send + 'static,
    {
        Self {
            kind: BehaviorKind::Broadcast,
            ..Self::direct(f)
        }
    }
}

/// Knobs of an actor system.
#[derive(Clone, Debug)]
pub struct SystemConfig {
    /// Check capability tokens (off only for benchmarking the cost of checking).
    pub verify_capabilities: bool,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            verify_capabilities: true,
        }
    }
}

pub(crate) struct Actor {
    pub(crate) handle: Handle,
    pub(crate) key: Option<Keypair>,
    /// Delegations this actor chains its invocation tokens on (besides the node's); renewed
    /// from `grant` before they run out.
    pub(crate) provide: RwLock<Vec<nunet_capability::Token>>,
    /// What the node delegated to it, for renewals.
    pub(crate) grant: Option<Grant>,
    pub(crate) behaviors: RwLock<HashMap<String, Behavior>>,
}

/// A child actor's grant: capabilities and broadcast topics, delegated by the node for `ttl`
/// at a time and renewed when less than half of it is left, for as long as the actor lives.
#[derive(Clone)]
pub(crate) struct Grant {
    pub(crate) caps: Vec<Capability>,
    pub(crate) topics: Vec<Capability>,
    pub(crate) ttl: Duration,
}

pub(crate) struct Inner {
    pub(crate) node_key: Keypair,
    pub(crate) node_did: Did,
    pub(crate) peer: String,
    pub(crate) anchors: RwLock<Anchors>,
    pub(crate) verifier: Verifier,
    pub(crate) replay: ReplayCache,
    pub(crate) actors: RwLock<HashMap<String, Arc<Actor>>>,
    pub(crate) transport: RwLock<Option<Arc<dyn Transport>>>,
    pub(crate) config: SystemConfig,
    /// Invocation tokens by (inbox, behavior, audience, topic), with the time they stay valid.
    pub(crate) token_cache: std::sync::Mutex<HashMap<TokenCacheKey, (Vec<u8>, u64)>>,
}

type TokenCacheKey = (String, String, String, String);

/// How long past a message an invocation token stays valid for reuse.
const TOKEN_REUSE_NS: u64 = 60_000_000_000;

/// The actors of one node, their behaviors, and the way in and out.
#[derive(Clone)]
pub struct ActorSystem(pub(crate) Arc<Inner>);

impl ActorSystem {
    /// A system whose root actor (inbox `root`) has the node's key and trusts `anchors`.
    pub fn new(node_key: Keypair, anchors: Anchors, config: SystemConfig) -> Self {
        let node_did = node_key.did();
        let root = Handle::root_of(&node_key.public());
        let peer = root.addr.host.clone();
        let sys = Self(Arc::new(Inner {
            node_key: node_key.clone(),
            node_did,
            peer,
            anchors: RwLock::new(anchors),
            verifier: Verifier::default(),
            replay: ReplayCache::default(),
            actors: RwLock::new(HashMap::new()),
            transport: RwLock::new(None),
            config,
            token_cache: std::sync::Mutex::new(HashMap::new()),
        }));
        sys.insert_actor(Actor {
            handle: root,
            key: Some(node_key),
            provide: RwLock::new(Vec::new()),
            grant: None,
            behaviors: RwLock::new(HashMap::new()),
        });
        sys
    }

    fn insert_actor(&self, a: Actor) {
        if let Ok(mut m) = self.0.actors.write() {
            m.insert(a.handle.addr.inbox.clone(), Arc::new(a));
        }
    }

    pub(crate) fn actor(&self, inbox: &str) -> Option<Arc<Actor>> {
        self.0.actors.read().ok()?.get(inbox).cloned()
    }

    /// Keeps the replay cache in the log file at `path`, so a message admitted before a
    /// restart is still refused after it (call before the network delivers anything).
    pub fn keep_replay_state_in(&self, path: &std::path::Path) -> std::io::Result<()> {
        self.0.replay.keep_in(path, now_ns())
    }

    /// How many admitted messages the replay cache remembers.
    pub fn replay_entries(&self) -> usize {
        self.0.replay.len()
    }

    /// Whether an actor or mailbox lives at `inbox`.
    pub fn has_actor(&self, inbox: &str) -> bool {
        self.actor(inbox).is_some()
    }

    /// Plugs in the network.
    pub fn set_transport(&self, t: Arc<dyn Transport>) {
        if let Ok(mut slot) = self.0.transport.write() {
            *slot = Some(t);
        }
    }

    /// The root actor's handle.
    pub fn root(&self) -> Handle {
        Handle::root_of(&self.0.node_key.public())
    }

    /// The node's DID.
    pub fn did(&self) -> &Did {
        &self.0.node_did
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> &str {
        &self.0.peer
    }

    /// A copy of the anchors admission checks against.
    pub fn anchors(&self) -> Anchors {
        match self.0.anchors.read() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the node's trust anchors (e.g. after `nunet cap anchor` and a reload) and
    /// forgets cached tokens.
    pub fn set_anchors(&self, anchors: Anchors) {
        if let Ok(mut a) = self.0.anchors.write() {
            *a = anchors;
        }
        if let Ok(mut c) = self.0.token_cache.lock() {
            c.clear();
        }
    }

    /// Registers a behavior on an actor (`root` for the node).
    pub fn register(&self, inbox: &str, name: &str, b: Behavior) -> Result<(), ActorError> {
        let actor = self
            .actor(inbox)
            .ok_or_else(|| ActorError::new(ErrorKind::NotFound, format!("no actor {inbox}")))?;
        if let Ok(mut m) = actor.behaviors.write() {
            m.insert(name.to_string(), b);
        }
        Ok(())
    }

    /// Registers a direct behavior whose handler receives a clone of `state` with each
    /// message (the usual "clone the `Arc` into the closure, then into the future" dance).
    pub fn register_with<S, F, Fut>(
        &self,
        inbox: &str,
        name: &str,
        state: S,
        f: F,
    ) -> Result<(), ActorError>
    where
        S: Clone + Send + Sync + 'static,
        F: Fn(S, Incoming) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, ActorError>> + Send + 'static,
    {
        self.register(inbox, name, Behavior::direct(move |m| f(state.clone(), m)))
    }

    /// Removes a behavior.
    pub fn unregister(&self, inbox: &str, name: &str) {
        if let Some(a) = self.actor(inbox)
            && let Ok(mut m) = a.behaviors.write()
        {
            m.remove(name);
        }
    }

    /// Names of an actor's behaviors.
    pub fn behaviors(&self, inbox: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .actor(inbox)
            .and_then(|a| a.behaviors.read().ok().map(|m| m.keys().cloned().collect()))
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The key of the child actor at `inbox`, derived from the node's key: the same inbox
    /// gets the same key after a restart, so child keys are never stored anywhere.
    pub fn child_key(&self, inbox: &str) -> Keypair {
        self.0.node_key.derive(inbox)
    }

    /// Creates a child actor with its own key and a random inbox. `caps` are granted to it
    /// by the node (a delegation it chains its invocations on).
    pub fn spawn_child(&self, key: Keypair, caps: &[Capability], ttl: Duration) -> Handle {
        let inbox = format!("actor-{:016x}", rand::random::<u64>());
        self.spawn_child_at(&inbox, key, caps, &[], ttl)
    }

    /// Creates a child actor with its own key at `inbox` (replacing an actor there). `caps`
    /// and broadcast `topics` are delegated to it by the node, chained on the node's own
    /// provide anchors when they cover them (so peers that trust the node's issuer trust the
    /// child), and self-signed by the node as well (for peers that trust the node itself).
    pub fn spawn_child_at(
        &self,
        inbox: &str,
        key: Keypair,
        caps: &[Capability],
        topics: &[Capability],
        ttl: Duration,
    ) -> Handle {
        let handle = Handle {
            id: key.did().to_string(),
            did: self.0.node_did.to_string(),
            addr: Address {
                host: self.0.peer.clone(),
                inbox: inbox.to_string(),
            },
        };
        let grant = (!caps.is_empty()).then(|| Grant {
            caps: caps.to_vec(),
            topics: topics.to_vec(),
            ttl,
        });
        let provide = grant
            .as_ref()
            .map(|g| self.delegate_to(&key.did(), g, now_ns()))
            .unwrap_or_default();
        // Behaviors registered at this inbox before (an actor brought back after
        // [`Self::retire_child`]) stay.
        let behaviors = self
            .actor(inbox)
            .and_then(|a| a.behaviors.read().ok().map(|b| b.clone()))
            .unwrap_or_default();
        self.insert_actor(Actor {
            handle: handle.clone(),
            key: Some(key),
            provide: RwLock::new(provide),
            grant,
            behaviors: RwLock::new(behaviors),
        });
        handle
    }

    /// The node's delegation of `g` to `sub`, valid for `g.ttl` from `now`.
    fn delegate_to(&self, sub: &Did, g: &Grant, now: u64) -> Vec<nunet_capability::Token> {
        let spec = TokenSpec {
            sub: sub.clone(),
            aud: None,
            cap: g.caps.clone(),
            topic: g.topics.clone(),
            exp: now.saturating_add(u64::try_from(g.ttl.as_nanos()).unwrap_or(u64::MAX)),
            depth: 0,
        };
        let anchors = match self.0.anchors.read() {
            Ok(a) => a.clone(),
            Err(_) => Anchors::new(self.0.node_did.clone()),
        };
        anchors
            .delegate(
                &self.0.node_key,
                &spec,
                nunet_capability::SelfSign::Also,
                now,
            )
            .unwrap_or_default()
    }

    /// The actor's delegations, renewed first when less than half of their lifetime is
    /// left: a child lives as long as its work (a deployment may run for months), its
    /// grants only `ttl` at a time.
    fn provide_of(&self, actor: &Actor, sub: &Did, now: u64) -> Vec<nunet_capability::Token> {
        let current = actor.provide.read().map(|p| p.clone()).unwrap_or_default();
        let Some(g) = &actor.grant else {
            return current;
        };
        let half = u64::try_from(g.ttl.as_nanos() / 2).unwrap_or(u64::MAX);
        let earliest = current.iter().map(|t| t.dms().exp).min().unwrap_or(0);
        if earliest > now.saturating_add(half) {
            return current;
        }
        let fresh = self.delegate_to(sub, g, now);
        if fresh.is_empty() {
            return current;
        }
        if let Ok(mut p) = actor.provide.write() {
            *p = fresh.clone();
        }
        tracing::debug!(inbox = %actor.handle.addr.inbox, "child actor grant renewed");
        fresh
    }

    /// Takes a child actor's key and grants away, keeping its inbox, identity and behaviors:
    /// it can no longer send or sign anything (its answers are signed by the node), and no
    /// message counts as coming from it. For actors whose work is over but which must still
    /// answer (a finished deployment's orchestrator tells providers it wants nothing more).
    pub fn retire_child(&self, inbox: &str) {
        if inbox == "root" {
            return;
        }
        if let Some(a) = self.actor(inbox).filter(|a| a.key.is_some()) {
            let behaviors = a.behaviors.read().map(|b| b.clone()).unwrap_or_default();
            self.insert_actor(Actor {
                handle: a.handle.clone(),
                key: None,
                provide: RwLock::new(Vec::new()),
                grant: None,
                behaviors: RwLock::new(behaviors),
            });
        }
    }

    /// A keyless actor at `inbox` answering as `id` (see [`Self::retire_child`]): how a
    /// restarted node brings back a finished child without its key.
    pub fn keyless_child(&self, inbox: &str, id: &Did) -> Handle {
        let handle = Handle {
            id: id.to_string(),
            did: self.0.node_did.to_string(),
            addr: Address {
                host: self.0.peer.clone(),
                inbox: inbox.to_string(),
            },
        };
        self.insert_actor(Actor {
            handle: handle.clone(),
            key: None,
            provide: RwLock::new(Vec::new()),
            grant: None,
            behaviors: RwLock::new(HashMap::new()),
        });
        handle
    }

    /// Whether the actor at `inbox` holds a key (can send and sign).
    pub fn has_key(&self, inbox: &str) -> bool {
        self.actor(inbox).is_some_and(|a| a.key.is_some())
    }

    /// Removes a child actor.
    pub fn stop_child(&self, inbox: &str) {
        if inbox != "root"
            && let Ok(mut m) = self.0.actors.write()
        {
            m.remove(inbox);
        }
    }

    /// A keyless mailbox at `inbox` whose `reply_behavior` collects reply envelopes (used by
    /// the REST bridge for messages signed by the CLI). Remove it with [`Self::stop_child`].
    pub fn mailbox(
        &self,
        inbox: &str,
        reply_behavior: &str,
        capacity: usize,
    ) -> mpsc::Receiver<Envelope> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let handle = Handle {
            id: String::new(),
            did: self.0.node_did.to_string(),
            addr: Address {
                host: self.0.peer.clone(),
                inbox: inbox.into(),
            },
        };
        let mut behaviors = HashMap::new();
        behaviors.insert(reply_behavior.to_string(), reply_collector(tx));
        self.insert_actor(Actor {
            handle,
            key: None,
            provide: RwLock::new(Vec::new()),
            grant: None,
            behaviors: RwLock::new(behaviors),
        });
        rx
    }

    /// Signs an envelope from one of our actors, with invocation (or broadcast) tokens drawn
    /// from the node's provide anchors and the actor's own grants.
    pub fn envelope(
        &self,
        from_inbox: &str,
        to: Handle,
        be: &str,
        payload: &Value,
        opt: Options,
    ) -> Result<Envelope, ActorError> {
        self.envelope_under(from_inbox, to, be, None, payload, opt)
    }

    /// Like [`Self::envelope`], with tokens for `token_cap` instead of `be` when given (a
    /// reply to an ephemeral endpoint, sent under the capability the endpoint requires).
    pub(crate) fn envelope_under(
        &self,
        from_inbox: &str,
        to: Handle,
        be: &str,
        token_cap: Option<&str>,
        payload: &Value,
        mut opt: Options,
    ) -> Result<Envelope, ActorError> {
        if opt.trace.is_empty() {
            opt.trace = crate::trace::current();
        }
        let actor = self.actor(from_inbox).ok_or_else(|| {
            ActorError::new(ErrorKind::NotFound, format!("no actor {from_inbox}"))
        })?;
        let key = actor
            .key
            .clone()
            .ok_or_else(|| ActorError::failed("a mailbox cannot send"))?;
        let cap_bytes = if to.did == self.0.node_did.as_str() && !to.did.is_empty() {
            Vec::new() // same node: no tokens needed
        } else {
            self.tokens_for(&actor, &key, &to, token_cap.unwrap_or(be), &opt)?
        };
        let msg = serde_json::to_vec(payload).map_err(|e| ActorError::failed(e.to_string()))?;
        Ok(Envelope::sign(
            &key,
            actor.handle.clone(),
            to,
            be,
            opt,
            msg,
            cap_bytes,
        ))
    }

    /// Invocation tokens for a message, reused while they stay valid: a token is bound to its
    /// subject (the signer of the envelope), so reuse gives a receiver nothing it could replay
    /// (envelopes carry their own nonce), and it lets receivers serve a known chain from
    /// their verified-token cache instead of checking a fresh signature per message.
    fn tokens_for(
        &self,
        actor: &Actor,
        key: &Keypair,
        to: &Handle,
        be: &str,
        opt: &Options,
    ) -> Result<Vec<u8>, ActorError> {
        let cache_key = (
            actor.handle.addr.inbox.clone(),
            be.to_string(),
            to.id.clone(),
            opt.topic.clone(),
        );
        let now = now_ns();
        if let Ok(c) = self.0.token_cache.lock()
            && let Some((bytes, exp)) = c.get(&cache_key)
            && *exp >= opt.exp
            && *exp > now
        {
            return Ok(bytes.clone());
        }
        let cap: Capability = be
            .parse()
            .map_err(|e| ActorError::failed(format!("behavior {be:?}: {e}")))?;
        let (act, topic) = if opt.topic.is_empty() {
            (Action::Invoke, Vec::new())
        } else {
            let t: Capability = opt
                .topic
                .parse()
                .map_err(|e| ActorError::failed(format!("topic: {e}")))?;
            (Action::Broadcast, vec![t])
        };
        let aud = if to.id.is_empty() {
            None
        } else {
            Did::parse(&to.id).ok()
        };
        // Valid a little beyond this message so the next ones can reuse it.
        let exp = opt.exp.max(now.saturating_add(TOKEN_REUSE_NS));
        let spec = TokenSpec {
            sub: key.did(),
            aud,
            cap: vec![cap],
            topic,
            exp,
            depth: 0,
        };
        let mut anchors = match self.0.anchors.read() {
            Ok(a) => a.clone(),
            Err(_) => return Err(ActorError::failed("anchors unavailable")),
        };
        anchors.did = key.did();
        anchors.provide.retain(|t| t.dms().sub == anchors.did);
        anchors
            .provide
            .extend(self.provide_of(actor, &key.did(), now));
        let toks = anchors.invocation_tokens(key, act, &spec, now);
        // Chained tokens are clamped to their anchors' expiry: reuse only as long as all last.
        let valid_until = toks.iter().map(|t| t.dms().exp).min().unwrap_or(now);
        let bytes = TokenList { tok: toks }.to_json().into_bytes();
        if let Ok(mut c) = self.0.token_cache.lock() {
            if c.len() > 4096 {
                c.retain(|_, (_, e)| *e > now);
            }
            c.insert(cache_key, (bytes.clone(), valid_until));
        }
        Ok(bytes)
    }

    /// Invokes `be` on `to` and waits for the reply until `timeout` (the message expiry).
    pub async fn invoke(
        &self,
        from_inbox: &str,
        to: Handle,
        be: &str,
        payload: Value,
        timeout: Duration,
    ) -> Result<Value, ActorError> {
        let exp = now_ns().saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        let opt = Options {
            exp,
            cont: "/reply".into(),
            ..Options::default()
        };
        let env = self.envelope(from_inbox, to, be, &payload, opt)?;
        let reply = self.deliver_from(env, Origin::InProcess).await?;
        decode_reply(&reply)
    }

    /// Sends `be` to `to` without waiting for a result (delivery is still confirmed).
    pub async fn send(
        &self,
        from_inbox: &str,
        to: Handle,
        be: &str,
        payload: Value,
        ttl: Duration,
    ) -> Result<(), ActorError> {
        let exp = now_ns().saturating_add(u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX));
        let env = self.envelope(
            from_inbox,
            to,
            be,
            &payload,
            Options {
                exp,
                ..Default::default()
            },
        )?;
        let reply = self.deliver_from(env, Origin::InProcess).await?;
        decode_reply(&reply).map(|_| ())
    }

    /// Publishes an already signed broadcast envelope.
    pub async fn publish(&self, env: &Envelope) -> Result<(), ActorError> {
        let t = self
            .transport()
            .ok_or_else(|| ActorError::new(ErrorKind::Unreachable, "no network"))?;
        t.publish(&env.opt.topic, env.to_bytes())
            .await
            .map_err(|e| ActorError::new(ErrorKind::Unreachable, e.0))
    }

    pub(crate) fn transport(&self) -> Option<Arc<dyn Transport>> {
        self.0.transport.read().ok()?.clone()
    }

    /// Delivers an envelope signed outside this process (by a local user, through the REST
    /// bridge) locally or over the network; returns the receiver's signed reply envelope.
    /// A local receiver checks its tokens whoever signed it.
    pub async fn deliver(&self, env: Envelope) -> Result<Envelope, ActorError> {
        self.deliver_from(env, Origin::External).await
    }

    pub(crate) async fn deliver_from(
        &self,
        env: Envelope,
        origin: Origin,
    ) -> Result<Envelope, ActorError> {
        if env.to.addr.host == self.0.peer {
            return Ok(self.handle_from(env, origin).await);
        }
        // Where no peer can be: the sender's fault, not the network's.
        if env.to.addr.host.parse::<libp2p_identity::PeerId>().is_err() {
            return Err(ActorError::new(
                ErrorKind::Rejected,
                format!("to.addr.host {:?} is not a peer id", env.to.addr.host),
            ));
        }
        let t = self
            .transport()
            .ok_or_else(|| ActorError::new(ErrorKind::Unreachable, "no network"))?;
        let now = now_ns();
        if env.opt.exp <= now {
            // Expired on arrival: the sender's fault, as when it reaches a local actor.
            return Err(ActorError::new(
                ErrorKind::Rejected,
                "message expired before it was sent",
            ));
        }
        let timeout = Duration::from_nanos(env.opt.exp - now);
        let host = env.to.addr.host.clone();
        let expected = env.to.clone();
        let bytes = t
            .request(&host, env.to_bytes(), timeout)
            .await
            .map_err(|e| {
                let kind = if e.0.contains("timeout") || e.0.contains("Timeout") {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Unreachable
                };
                ActorError::new(kind, format!("{host}: {}", e.0))
            })?;
        let reply = Envelope::from_bytes(&bytes).map_err(|e| {
            ActorError::new(ErrorKind::Rejected, format!("bad reply from {host}: {e}"))
        })?;
        // A reply signed by the root key of the node we asked is already authenticated by the
        // transport (the libp2p connection proves that peer's key): skip the second check.
        // Replies from other actors (children, mailboxes) are verified.
        let by_host = Did::parse(&reply.from.id)
            .is_ok_and(|d| d.peer_id().is_ok_and(|p| p.to_base58() == host));
        if !by_host {
            reply.verify_signature().map_err(|e| {
                ActorError::new(ErrorKind::Rejected, format!("reply from {host}: {e}"))
            })?;
        }
        // The reply must come from the actor we addressed, or from the node hosting it.
        let from_ok = reply.from.addr.host == host
            && (expected.id.is_empty()
                || reply.from.id == expected.id
                || reply.from.id == reply.from.did);
        if !from_ok {
            return Err(ActorError::new(
                ErrorKind::Rejected,
                format!(
                    "reply from {host} is signed by {}, not the addressed actor",
                    reply.from.id
                ),
            ));
        }
        Ok(reply)
    }
}

/// Decodes a reply envelope's outcome.
pub fn decode_reply(reply: &Envelope) -> Result<Value, ActorError> {
    match serde_json::from_slice::<Reply>(&reply.msg) {
        Ok(r) => r.into_result(),
        Err(e) => Err(ActorError::new(
            ErrorKind::Rejected,
            format!("malformed reply: {e}"),
        )),
    }
}

pub(crate) fn reply_collector(tx: mpsc::Sender<Envelope>) -> Behavior {
    Behavior {
        kind: BehaviorKind::Reply,
        reply_capability: None,
        denied: None,
        handler: Arc::new(move |m: Incoming| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.try_send((*m.envelope).clone());
                Ok(Value::Null)
            })
        }),
    }
}
