//! The bridge to NuNet's Go nodes: messages they send to this node's root inbox
//! (`actor/root/messages/0.0.1`) are authenticated in their format (`nunet-gowire`), then
//! dispatched by the actor system with the same capability checks as any message; answers
//! go back as NuNet sends them, a new signed message to the requester's `opt.cont`.
//!
//! As on a NuNet node (`actor/dispatch.go`), a message that fails a check gets no answer; the
//! reason is logged here. A behavior that ran and failed answers `{"error": …}`.

use std::sync::Arc;
use std::time::Duration;

use nunet_actor::{ActorSystem, ErrorKind, next_nonce};
use nunet_did::Keypair;
use nunet_gowire::{GoEnvelope, key_id, reply_to};
use nunet_network::{NetError, Network, NuNetFrame, PeerId};
use tokio::sync::{Semaphore, mpsc, watch};

/// Messages handled at once; more wait.
const CONCURRENT: usize = 64;

/// Serves NuNet messages sent to this node's root actor until `stop`.
pub(crate) fn start(
    system: ActorSystem,
    network: Network,
    key: Keypair,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, NetError> {
    let frames = network.accept_nunet("root")?;
    Ok(tokio::spawn(async move {
        let mut stop = stop;
        tokio::select! {
            _ = serve(system, network, key, frames) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    }))
}

async fn serve(
    system: ActorSystem,
    network: Network,
    key: Keypair,
    mut frames: mpsc::Receiver<NuNetFrame>,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT));
    while let Some(frame) = frames.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (system, network, key) = (system.clone(), network.clone(), key.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let peer = frame.peer;
            if let Err(why) = handle(&system, &network, &key, frame).await {
                tracing::warn!(%peer, "NuNet message not answered: {why}");
            }
        });
    }
}

async fn handle(
    system: &ActorSystem,
    network: &Network,
    key: &Keypair,
    frame: NuNetFrame,
) -> Result<(), String> {
    let req = GoEnvelope::from_json(&frame.payload).map_err(|e| e.to_string())?;
    // dispatch.go / basic.go: the receiver's id, and the stream's peer as the sender's host.
    if req.to.id != key_id(&key.public()) {
        return Err("not addressed to this node's key (to.id)".into());
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
    let env = req.to_actor().map_err(|e| e.to_string())?;
    let outcome = system.handle_authenticated(env, &sender).await;
    let payload = match outcome {
        Ok(value) => serde_json::to_vec(&value).map_err(|e| e.to_string())?,
        Err(e) if matches!(e.kind, ErrorKind::Denied | ErrorKind::Rejected) => {
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
    let left = Duration::from_nanos(req.exp.saturating_sub(nunet_capability::now_ns()));
    network
        .send_nunet(
            peer_of(&req.from.host)?,
            &req.from.inbox,
            &reply.to_json(),
            left.max(Duration::from_secs(1)),
        )
        .await
        .map_err(|e| format!("reply to {}: {e}", req.cont))
}

fn peer_of(host: &str) -> Result<PeerId, String> {
    host.parse()
        .map_err(|_| format!("{host:?} is not a peer id"))
}
