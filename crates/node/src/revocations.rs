//! Revocations that travel: a revoke token handed to any node (`nunet cap revoke --broadcast`,
//! behavior `/dms/cap/revoke`) is gossiped to every node (`/broadcast/revocations` on
//! `/nunet`), which checks it, stores it in its capability context and enforces it at once.
//! Every node re-announces the revocations it holds every [`REANNOUNCE_EVERY`], so a node
//! that was offline learns them within that time of coming back.
//!
//! A revoke token is self-authenticating (signed by its issuer, never chained) and only
//! ever denies chains in which its issuer issued a token, so relaying one gives nobody any
//! power. A node keeps only revocations issued by DIDs its trust depends on (itself, its
//! root anchors, the issuers and subjects of its require anchors, the issuers of its provide
//! chains) and ignores the rest, so strangers cannot fill its context with noise.
//!
//! This module must not decide what a revocation means: that is the verifier's job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem, Behavior, Handle, Incoming, Options};
use nunet_capability::{Action, Anchors, ContextFile, Token, TokenList, now_ns};
use nunet_did::Did;
use serde_json::{Value, json};

/// Gossip behavior carrying revoke tokens.
pub const ANNOUNCE: &str = "/broadcast/revocations";
/// Topic the announcements go out on.
pub const TOPIC: &str = "/nunet";
/// Direct behavior: hand revoke tokens to this node, which keeps and announces them.
pub const SUBMIT: &str = "/dms/cap/revoke";
/// How often a node re-announces the revocations it holds.
pub const REANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// Most revoke tokens accepted in one message.
pub const MAX_PER_MESSAGE: usize = 256;

/// Outcome of taking a batch of revoke tokens.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// New revocations now enforced.
    pub added: usize,
    /// Already known.
    pub known: usize,
    /// Refused: not a valid revoke token, or issued by nobody this node's trust depends on.
    pub ignored: usize,
}

/// The node's revocation keeper.
pub struct Revocations {
    system: ActorSystem,
    context: Option<(ContextFile, String)>,
    /// Serialises read-modify-write of the anchors and the context file.
    lock: Mutex<()>,
}

/// Whether `iss` is somebody this node's trust depends on.
fn relevant(a: &Anchors, iss: &Did) -> bool {
    iss == &a.did
        || a.roots.contains(iss)
        || a.require
            .iter()
            .chain(&a.provide)
            .flat_map(|t| t.links())
            .any(|l| &l.iss == iss || &l.sub == iss)
}

impl Revocations {
    /// A keeper over `system`'s anchors, persisting into `context` when given.
    pub fn new(system: ActorSystem, context: Option<(ContextFile, String)>) -> Arc<Self> {
        Arc::new(Self {
            system,
            context,
            lock: Mutex::new(()),
        })
    }

    /// Checks and keeps `tokens`; enforced from the moment this returns.
    pub fn take(&self, tokens: Vec<Token>) -> Result<Taken, ActorError> {
        let _g = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut anchors = self.system.anchors();
        let mut out = Taken::default();
        for t in tokens.into_iter().take(MAX_PER_MESSAGE) {
            let d = t.dms();
            if d.act != Action::Revoke || !relevant(&anchors, &d.iss) {
                out.ignored += 1;
                continue;
            }
            let before = anchors.revocations.len();
            match anchors.revocations.add(t) {
                Ok(_) if anchors.revocations.len() > before => out.added += 1,
                Ok(_) => out.known += 1,
                Err(_) => out.ignored += 1,
            }
        }
        if out.added > 0 {
            anchors.revocations.gc(now_ns());
            if let Some((file, name)) = &self.context {
                // Keep what is on disk (the operator may have changed it) and add ours.
                let mut on_disk = file.load(name).map_err(|e| {
                    ActorError::failed(format!("loading capability context {name}: {e}"))
                })?;
                for t in anchors.revocations.tokens() {
                    let _ = on_disk.revocations.add(t.clone());
                }
                file.save(name, &on_disk).map_err(|e| {
                    ActorError::failed(format!("saving capability context {name}: {e}"))
                })?;
                anchors.revocations = on_disk.revocations.clone();
            }
            self.system.set_anchors(anchors);
            tracing::info!(added = out.added, "revocations received and enforced");
        }
        Ok(out)
    }

    /// Gossips every revocation this node holds (nothing when it holds none).
    pub async fn announce(&self) -> Result<usize, ActorError> {
        let held: Vec<Token> = self.system.anchors().revocations.tokens().to_vec();
        if held.is_empty() {
            return Ok(0);
        }
        let n = held.len();
        // Receivers take at most MAX_PER_MESSAGE per message: announce in batches of that.
        for batch in held.chunks(MAX_PER_MESSAGE) {
            let payload = serde_json::to_value(TokenList {
                tok: batch.to_vec(),
            })
            .map_err(|e| ActorError::failed(e.to_string()))?;
            let env = self.system.envelope(
                "root",
                Handle::default(),
                ANNOUNCE,
                &payload,
                Options {
                    exp: now_ns().saturating_add(60_000_000_000),
                    topic: TOPIC.into(),
                    ..Options::default()
                },
            )?;
            self.system.publish(&env).await?;
        }
        Ok(n)
    }
}

fn tokens_of(payload: &Value) -> Result<Vec<Token>, ActorError> {
    let list: TokenList = serde_json::from_value(payload.clone())
        .map_err(|e| ActorError::failed(format!("give revoke tokens as {{\"tok\": […]}}: {e}")))?;
    if list.tok.len() > MAX_PER_MESSAGE {
        return Err(ActorError::failed(format!(
            "{} revoke tokens in one message; at most {MAX_PER_MESSAGE}",
            list.tok.len()
        )));
    }
    Ok(list.tok)
}

/// Registers the behaviors and starts the re-announcing task (ends when `stop` fires).
pub fn register(
    keeper: &Arc<Revocations>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ActorError> {
    let sys = keeper.system.clone();
    let k = keeper.clone();
    sys.register(
        "root",
        ANNOUNCE,
        Behavior::broadcast(move |m: Incoming| {
            let k = k.clone();
            async move {
                let t = k.take(tokens_of(&m.payload)?)?;
                Ok(json!({"added": t.added}))
            }
        }),
    )?;
    let k = keeper.clone();
    sys.register(
        "root",
        SUBMIT,
        Behavior::direct(move |m: Incoming| {
            let k = k.clone();
            async move {
                let t = k.take(tokens_of(&m.payload)?)?;
                let announced = k.announce().await;
                Ok(json!({
                    "added": t.added,
                    "known": t.known,
                    "ignored": t.ignored,
                    "announced": announced.as_ref().ok(),
                    "announce_error": announced.err().map(|e| e.message),
                }))
            }
        }),
    )?;
    let k = keeper.clone();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REANNOUNCE_EVERY) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = k.announce().await {
                tracing::debug!(error = %e.message, "revocations not re-announced");
            }
        }
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nunet_actor::SystemConfig;
    use nunet_capability::TokenSpec;
    use nunet_did::Keypair;

    const HOUR: u64 = 3_600_000_000_000;

    fn grant(org: &Keypair, to: &Did) -> Token {
        Anchors::new(org.did())
            .grant(
                org,
                &TokenSpec {
                    sub: to.clone(),
                    aud: None,
                    cap: vec!["/dms".parse().unwrap()],
                    topic: vec![],
                    exp: now_ns() + HOUR,
                    depth: 0,
                },
            )
            .unwrap()
    }

    /// Only revocations by DIDs the node's trust depends on are kept; they persist in the
    /// context file and are in force at once.
    #[test]
    fn relevant_revocations_are_kept_persisted_and_enforced() {
        let d = tempfile::tempdir().unwrap();
        let (org, me, member, stranger) = (
            Keypair::from_seed(&[1; 32]),
            Keypair::from_seed(&[2; 32]),
            Keypair::from_seed(&[3; 32]),
            Keypair::from_seed(&[4; 32]),
        );
        let mut anchors = Anchors::new(me.did());
        anchors.add_root(org.did());
        let file = ContextFile::new(d.path().join("cap"));
        file.create("dms", &anchors).unwrap();
        let sys = ActorSystem::new(me.clone(), anchors, SystemConfig::default());
        let k = Revocations::new(sys.clone(), Some((file.clone(), "dms".into())));
        let g = grant(&org, &member.did());
        let mut org_ctx = Anchors::new(org.did());
        let by_org = org_ctx.revoke(&org, &g).unwrap();
        let mut s_ctx = Anchors::new(stranger.did());
        let by_stranger = s_ctx
            .revoke(&stranger, &grant(&stranger, &member.did()))
            .unwrap();
        let t = k
            .take(vec![by_org.clone(), by_stranger, g.clone()])
            .unwrap();
        assert_eq!(
            t,
            Taken {
                added: 1,
                known: 0,
                ignored: 2
            }
        );
        assert_eq!(sys.anchors().revocations.len(), 1);
        assert_eq!(file.load("dms").unwrap().revocations.len(), 1);
        assert_eq!(k.take(vec![by_org]).unwrap().known, 1);
    }
}
