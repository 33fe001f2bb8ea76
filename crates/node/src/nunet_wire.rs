//! The bridge to NuNet's Go nodes: messages they send to this node's root inbox
//! (`actor/root/messages/0.0.1`) are authenticated in their format (`nunet-gowire`), then
//! dispatched by the actor system with the same capability checks as any message; answers
//! go back as NuNet sends them, a new signed message to the requester's `opt.cont`.
//!
//! As on a NuNet node (`actor/dispatch.go`), a message that fails a check gets no answer; the
//! reason is logged here. A behavior that ran and failed answers `{"error": …}`.
//!
//! The other way, `/dms/node/nunet/invoke` (`nunet actor cmd /dms/node/nunet/invoke --host
//! <peer> --behavior /public/hello`) invokes a behavior of a NuNet node as `Invoke` does: a
//! one-off reply name `/dms/actor/replyto/<n>` in `opt.cont`, an invocation token (chained on
//! NuNet-format provide anchors that cover it, and self-signed) and a depth-1 delegation of
//! the reply name to the callee; the answer is the first message on that name signed by the
//! callee's key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem, Behavior, ErrorKind, Incoming, next_nonce};
use nunet_capability::token::Claims;
use nunet_capability::{Action, Capability, Token, TokenFormat, TokenList, TokenSpec, now_ns};
use nunet_did::{Keypair, PublicKey};
use nunet_gowire::{GoEnvelope, GoHandle, key_id, reply_to};
use nunet_network::{NetError, Network, NuNetFrame, PeerId};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

/// Behavior that invokes a NuNet node.
pub const INVOKE: &str = "/dms/node/nunet/invoke";
/// How long an invocation waits by default (NuNet's `defaultMessageTimeout`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait a caller may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Invocations waiting for an answer at once.
const MAX_PENDING: usize = 1024;
/// Longest time spent delivering one answer (a request may ask for 24 h of life).
const MAX_ANSWER_SEND: Duration = Duration::from_secs(30);
/// NuNet broadcasts handled at once; more wait.
const CONCURRENT_BROADCASTS: usize = 64;

/// How long to spend delivering an answer that must arrive before `exp` (unix ns).
fn send_window(exp: u64) -> Duration {
    Duration::from_nanos(exp.saturating_sub(now_ns()))
        .clamp(Duration::from_secs(1), MAX_ANSWER_SEND)
}

/// This node's side of NuNet's wire: what it needs to answer and to invoke.
#[derive(Clone)]
pub(crate) struct Wire {
    system: ActorSystem,
    network: Network,
    key: Keypair,
    /// Reply names of invocations in flight.
    pending: Arc<Mutex<HashMap<String, Waiting>>>,
    /// Slots for NuNet broadcasts being handled.
    broadcasts: Arc<Semaphore>,
}

/// An invocation in flight: the callee's key id, and where its answer goes.
type Waiting = (Vec<u8>, oneshot::Sender<GoEnvelope>);

/// Messages handled at once; more wait.
const CONCURRENT: usize = 64;

/// Serves NuNet messages sent to this node's root actor until `stop`, and registers
/// [`INVOKE`]. The [`Wire`] handles NuNet broadcasts the gossip pump hands it.
pub(crate) fn start(
    system: ActorSystem,
    network: Network,
    key: Keypair,
    stop: watch::Receiver<bool>,
) -> Result<(Wire, tokio::task::JoinHandle<()>), NetError> {
    let frames = network.accept_nunet("root")?;
    let wire = Wire {
        system: system.clone(),
        network,
        key,
        pending: Arc::default(),
        broadcasts: Arc::new(Semaphore::new(CONCURRENT_BROADCASTS)),
    };
    let w = wire.clone();
    system
        .register(
            "root",
            INVOKE,
            Behavior::direct(move |m: Incoming| {
                let w = w.clone();
                async move { w.invoke_behavior(&m.payload).await }
            }),
        )
        .map_err(|e| NetError::Setup(e.to_string()))?;
    let w = wire.clone();
    let task = tokio::spawn(async move {
        let mut stop = stop;
        tokio::select! {
            _ = w.serve(frames) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    });
    Ok((wire, task))
}

impl Wire {
    async fn serve(&self, mut frames: mpsc::Receiver<NuNetFrame>) {
        let slots = Arc::new(Semaphore::new(CONCURRENT));
        while let Some(frame) = frames.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let w = self.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let peer = frame.peer;
                if let Err(why) = w.handle(frame).await {
                    tracing::warn!(%peer, "NuNet message not answered: {why}");
                }
            });
        }
    }

    async fn handle(&self, frame: NuNetFrame) -> Result<(), String> {
        let (system, network, key) = (&self.system, &self.network, &self.key);
        let req = GoEnvelope::from_json(&frame.payload).map_err(|e| e.to_string())?;
        // dispatch.go / basic.go: the receiver's id, and the stream's peer as the sender's host.
        // This stream is the root actor's, as on a NuNet node, whose inboxes each have theirs.
        if req.to.id != key_id(&key.public()) || req.to.inbox != "root" {
            return Err("not addressed to this node's root actor (to.id, to.addr.inbox)".into());
        }
        if req.from.host != frame.peer.to_base58() {
            return Err(format!(
                "from.addr.host {:?} is not the peer that sent it",
                req.from.host
            ));
        }
        let sender = req
            .verify(nunet_capability::now_ns())
            .map_err(|e| e.to_string())?;
        // The answer to one of our invocations: its reply name is its credential, and only
        // the key we asked may use it (a NuNet node checks the same through the tokens).
        if req.be.starts_with("/dms/actor/replyto/") && self.take_reply(req.clone())? {
            return Ok(());
        }
        let env = req.to_actor().map_err(|e| e.to_string())?;
        let outcome = system.handle_authenticated(env, &sender, false).await;
        let payload = match outcome {
            Ok(value) => serde_json::to_vec(&value).map_err(|e| e.to_string())?,
            // Refused before running (no such behavior, a token or format problem): silence,
            // as on a NuNet node.
            Err(e)
                if matches!(
                    e.kind,
                    ErrorKind::Denied | ErrorKind::Rejected | ErrorKind::NotFound
                ) =>
            {
                return Err(format!("{} refused: {e}", req.be));
            }
            Err(e) => {
                serde_json::to_vec(&serde_json::json!({ "error": e })).map_err(|e| e.to_string())?
            }
        };
        if req.cont.is_empty() {
            return Ok(()); // sent, not invoked: nothing to answer
        }
        let reply = reply_to(&req, key, payload, next_nonce()).map_err(|e| e.to_string())?;
        network
            .send_nunet(
                peer_of(&req.from.host)?,
                &req.from.inbox,
                &reply.to_json(),
                send_window(req.exp),
            )
            .await
            .map_err(|e| format!("reply to {}: {e}", req.cont))
    }

    /// A NuNet node's broadcast, received on gossip `topic`: checked as NuNet's validator
    /// does (a broadcast, for this topic, not expired, signed), dispatched as a broadcast,
    /// and answered as NuNet answers one: directly, from this node's root handle, on the
    /// broadcaster's `opt.cont`.
    /// `source` is the gossip message's author: the answer goes to `from.addr.host`, which must
    /// be that peer, so that nobody can aim this node's answers at a third party.
    pub(crate) async fn broadcast(&self, go: GoEnvelope, topic: &str, source: Option<PeerId>) {
        let Ok(_slot) = self.broadcasts.clone().acquire_owned().await else {
            return;
        };
        let from = go.from.host.clone();
        if let Err(why) = self.try_broadcast(go, topic, source).await {
            tracing::warn!(%from, %topic, "NuNet broadcast not answered: {why}");
        }
    }

    async fn try_broadcast(
        &self,
        go: GoEnvelope,
        topic: &str,
        source: Option<PeerId>,
    ) -> Result<(), String> {
        if go.to != GoHandle::default() || go.topic.is_empty() {
            return Err("not a broadcast (a receiver, or no topic)".into());
        }
        if go.topic != topic {
            return Err(format!("for topic {:?}, published on {topic:?}", go.topic));
        }
        if source.map(|p| p.to_base58()).as_deref() != Some(go.from.host.as_str()) {
            return Err(format!(
                "from.addr.host {:?} is not the peer that published it",
                go.from.host
            ));
        }
        let sender = go.verify(now_ns()).map_err(|e| e.to_string())?;
        let env = go.to_actor().map_err(|e| e.to_string())?;
        let value = self
            .system
            .handle_authenticated(env, &sender, true)
            .await
            .map_err(|e| format!("{}: {e}", go.be))?;
        if go.cont.is_empty() {
            return Ok(());
        }
        let me = self.key.did();
        let cont: Capability = go
            .cont
            .parse()
            .map_err(|e| format!("`opt.cont` {:?}: {e}", go.cont))?;
        let spec = TokenSpec {
            sub: me,
            aud: Some(sender),
            cap: vec![cont],
            topic: Vec::new(),
            exp: go.exp,
            depth: 0,
        };
        let tokens = TokenList {
            tok: self.system.anchors().invocation_tokens_as(
                TokenFormat::NuNet,
                &self.key,
                Action::Invoke,
                &spec,
                now_ns(),
            ),
        };
        let payload = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
        let reply = nunet_gowire::answer(
            &go,
            &self.key,
            GoHandle::root_of(&self.key.public()),
            &tokens,
            payload,
            next_nonce(),
        )
        .map_err(|e| e.to_string())?;
        self.network
            .send_nunet(
                peer_of(&go.from.host)?,
                &go.from.inbox,
                &reply.to_json(),
                send_window(go.exp),
            )
            .await
            .map_err(|e| format!("reply to {}: {e}", go.cont))
    }

    /// `/dms/node/nunet/invoke`: `host` (peer id or DID), `behavior`, optional `message`
    /// (any JSON) and `timeout` (seconds).
    async fn invoke_behavior(&self, payload: &Value) -> Result<Value, ActorError> {
        let (peer, _) = crate::behaviors::host_arg(payload)?;
        let be = crate::behaviors::arg(payload, &["behavior", "be"])
            .ok_or_else(|| ActorError::failed("give --behavior <name>, e.g. /public/hello"))?;
        let message = match payload.get("message") {
            None | Some(Value::Null) => None,
            // `actor cmd` passes parameters as text: JSON text is the message itself.
            Some(Value::String(s)) => {
                Some(serde_json::from_str(s).unwrap_or(Value::String(s.clone())))
            }
            Some(v) => Some(v.clone()),
        };
        let timeout = match payload.get("timeout") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(v) => {
                let secs = v
                    .as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|s| *s > 0.0 && *s <= MAX_TIMEOUT.as_secs_f64())
                    .ok_or_else(|| {
                        ActorError::failed(format!(
                            "--timeout must be seconds between 0 and {}",
                            MAX_TIMEOUT.as_secs()
                        ))
                    })?;
                Duration::from_secs_f64(secs)
            }
        };
        self.invoke(peer, be, message, timeout).await
    }

    /// Invokes `be` on the root actor of NuNet node `peer`; returns its answer's payload.
    pub(crate) async fn invoke(
        &self,
        peer: PeerId,
        be: &str,
        message: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, ActorError> {
        let callee = PublicKey::from_peer_id(&peer).map_err(|e| {
            ActorError::failed(format!(
                "{peer}: NuNet actors here must have ed25519 keys: {e}"
            ))
        })?;
        let cap: Capability = be
            .parse()
            .map_err(|e| ActorError::failed(format!("behavior {be:?}: {e}")))?;
        let now = now_ns();
        let exp = now + timeout.as_nanos() as u64;
        let cont = format!("/dms/actor/replyto/{}", next_nonce());
        let cont_cap: Capability = cont
            .parse()
            .map_err(|e| ActorError::failed(format!("reply name: {e}")))?;
        let me = self.key.did();
        let spec = TokenSpec {
            sub: me.clone(),
            aud: Some(callee.did()),
            cap: vec![cap],
            topic: Vec::new(),
            exp,
            depth: 0,
        };
        let mut tok = self.system.anchors().invocation_tokens_as(
            TokenFormat::NuNet,
            &self.key,
            Action::Invoke,
            &spec,
            now,
        );
        // Provide: the callee may answer on the reply name, one link deep.
        let delegation = Token::issue_as(
            TokenFormat::NuNet,
            &self.key,
            Claims {
                act: Action::Delegate,
                sub: callee.did(),
                aud: Some(me),
                topic: Vec::new(),
                cap: vec![cont_cap],
                exp,
                depth: 1,
                rev: None,
            },
            None,
        )
        .map_err(|e| ActorError::failed(e.to_string()))?;
        tok.push(delegation);
        let mut env = GoEnvelope {
            to: GoHandle::root_of(&callee),
            be: be.to_string(),
            from: GoHandle::root_of(&self.key.public()),
            nonce: next_nonce(),
            exp,
            cont: cont.clone(),
            topic: String::new(),
            msg: Some(match &message {
                Some(v) => serde_json::to_vec(v).map_err(|e| ActorError::failed(e.to_string()))?,
                None => Vec::new(),
            }),
            cap: TokenList { tok }.to_json().into_bytes(),
            sig: Vec::new(),
            native: None,
        };
        env.sign(&self.key)
            .map_err(|e| ActorError::failed(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self
                .pending
                .lock()
                .map_err(|_| ActorError::failed("pending invocations unavailable"))?;
            if pending.len() >= MAX_PENDING {
                return Err(ActorError::failed("too many NuNet invocations in flight"));
            }
            pending.insert(cont.clone(), (key_id(&callee), tx));
        }
        let outcome = async {
            self.network
                .send_nunet(peer, "root", &env.to_json(), timeout)
                .await
                .map_err(|e| ActorError::new(ErrorKind::Unreachable, format!("{peer}: {e}")))?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(reply)) => decode_payload(&reply),
                _ => Err(ActorError::new(
                    ErrorKind::Timeout,
                    format!(
                        "no answer from {peer} to {be} within {timeout:?} (a NuNet node answers \
                         nothing when it refuses a message: are this node's tokens anchored there?)"
                    ),
                )),
            }
        }
        .await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&cont);
        }
        outcome
    }

    /// Hands an answer to the invocation waiting on its reply name; `false` when none waits.
    fn take_reply(&self, env: GoEnvelope) -> Result<bool, String> {
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| "pending invocations unavailable")?;
        let Some((callee, _)) = pending.get(&env.be) else {
            return Ok(false);
        };
        if *callee != env.from.id {
            return Err(format!(
                "an answer on {} from a key that was not asked",
                env.be
            ));
        }
        if let Some((_, tx)) = pending.remove(&env.be) {
            let _ = tx.send(env);
        }
        Ok(true)
    }
}

/// The answer's payload as JSON (`null` when empty).
fn decode_payload(reply: &GoEnvelope) -> Result<Value, ActorError> {
    match reply.msg.as_deref() {
        None | Some([]) => Ok(Value::Null),
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| ActorError::failed(format!("the answer's payload is not JSON: {e}"))),
    }
}

fn peer_of(host: &str) -> Result<PeerId, String> {
    host.parse()
        .map_err(|_| format!("{host:?} is not a peer id"))
}
