use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use nunet_actor::{ActorError, ActorSystem, Behavior, Incoming};
use nunet_did::Did;
use nunet_network::Network;
use serde_json::{Value, json};

/// What the behaviors need from the node.
#[derive(Clone)]
pub struct NodeInfo {
    /// The node's actors.
    pub system: ActorSystem,
    /// The libp2p host.
    pub network: Network,
    /// When the node started.
    pub started: Instant,
    /// Whether the node is onboarded (shown in `/public/status`).
    pub onboarded: Arc<dyn Fn() -> bool + Send + Sync>,
}

pub(crate) fn arg<'a>(p: &'a Value, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| p.get(*n).and_then(Value::as_str))
}

fn did_of(peer: &PeerId) -> Value {
    Did::from_peer_id(peer)
        .map(|d| Value::String(d.to_string()))
        .unwrap_or(Value::Null)
}

/// A peer given as peer id or DID.
fn parse_peer(s: &str) -> Result<PeerId, ActorError> {
    if s.starts_with("did:") {
        return Did::parse(s)
            .and_then(|d| d.peer_id())
            .map_err(|e| ActorError::failed(e.to_string()));
    }
    s.parse()
        .map_err(|_| ActorError::failed(format!("{s:?} is not a peer id or DID")))
}

/// The peer a behavior's `--host` names (peer id or DID), with the text as given.
pub(crate) fn host_arg(payload: &Value) -> Result<(PeerId, &str), ActorError> {
    let host = arg(payload, &["host", "peer", "did"])
        .ok_or_else(|| ActorError::failed("give --host <peer id or DID>"))?;
    Ok((parse_peer(host)?, host))
}

/// Registers the node behaviors on the root actor.
pub fn register(info: NodeInfo) -> Result<(), ActorError> {
    let sys = info.system.clone();
    let i = Arc::new(info);
    let reg = |name: &str, b: Behavior| sys.register("root", name, b);

    let n = i.clone();
    reg(
        "/public/hello",
        Behavior::direct(move |m: Incoming| {
            let n = n.clone();
            async move {
                // `DID` as NuNet's HelloResponse writes it (`{"DID": {"uri": …}}`), so a NuNet
                // node's hello gets the answer it decodes.
                Ok(json!({
                    "message": format!("hello {}, this is {}", m.sender, n.system.did()),
                    "DID": {"uri": n.system.did().to_string()},
                }))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/public/status",
        Behavior::direct(move |_m| {
            let n = n.clone();
            async move {
                Ok(json!({
                    "did": n.system.did().to_string(),
                    "peer_id": n.system.peer_id(),
                    "version": env!("CARGO_PKG_VERSION"),
                    "uptime_s": n.started.elapsed().as_secs(),
                    "listen_addrs": n.network.listen_addrs().await.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "connected_peers": n.network.peers().await.len(),
                    "onboarded": (n.onboarded)(),
                }))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/broadcast/hello",
        Behavior::broadcast(move |m: Incoming| {
            let n = n.clone();
            async move {
                // `DID` also as NuNet's HelloResponse writes it, for NuNet broadcasters.
                Ok(json!({
                    "did": n.system.did().to_string(),
                    "peer_id": n.system.peer_id(),
                    "hello": m.payload,
                    "DID": {"uri": n.system.did().to_string()},
                }))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/dms/node/peers/list",
        Behavior::direct(move |_m| {
            let n = n.clone();
            async move {
                let peers = n.network.peers().await;
                Ok(json!({"peers": peers.iter().map(|p| json!({
                "peer_id": p.peer_id.to_string(),
                "did": did_of(&p.peer_id),
                "addrs": p.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
                "path": if p.relayed { "relayed" } else { "direct" },
            })).collect::<Vec<_>>()}))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/dms/node/peers/self",
        Behavior::direct(move |_m| {
            let n = n.clone();
            async move {
                let reach = n
                    .network
                    .reachability()
                    .await
                    .map_err(|e| ActorError::failed(e.to_string()))?;
                let roster = n
                    .network
                    .roster()
                    .await
                    .map_err(|e| ActorError::failed(e.to_string()))?;
                Ok(json!({
                    "peer_id": n.system.peer_id(),
                    "did": n.system.did().to_string(),
                    "addrs": n.network.listen_addrs().await.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "reachability": reachability_json(&reach),
                    // Who a broadcast on each topic this node serves waits for.
                    "roster": {
                        "peers": roster.peers,
                        "quiet": roster.quiet,
                        "topics": roster.topics.iter().map(|(t, n)| (t.clone(), json!(n))).collect::<serde_json::Map<_, _>>(),
                    },
                }))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/dms/node/peers/connect",
        Behavior::direct(move |m: Incoming| {
            let n = n.clone();
            async move {
                let addr = arg(&m.payload, &["address", "addr"]).ok_or_else(|| {
                    ActorError::failed("give --address /ip4/…/tcp/…/p2p/<peer id>")
                })?;
                let ma: Multiaddr = addr
                    .parse()
                    .map_err(|e| ActorError::failed(format!("address {addr:?}: {e}")))?;
                n.network
                    .dial(ma)
                    .await
                    .map_err(|e| ActorError::failed(format!("connect {addr}: {e}")))?;
                Ok(json!({"status": "connected", "address": addr}))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/dms/node/peers/ping",
        Behavior::direct(move |m: Incoming| {
            let n = n.clone();
            async move {
                let (peer, host) = host_arg(&m.payload)?;
                let rtt: Duration = n
                    .network
                    .ping(peer)
                    .await
                    .map_err(|e| ActorError::failed(format!("ping {host}: {e}")))?;
                Ok(json!({"peer_id": peer.to_string(), "rtt_ms": rtt.as_secs_f64() * 1000.0}))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/dms/node/peers/disconnect",
        Behavior::direct(move |m: Incoming| {
            let n = n.clone();
            async move {
                let (peer, _) = host_arg(&m.payload)?;
                let was = n
                    .network
                    .disconnect(peer)
                    .await
                    .map_err(|e| ActorError::failed(e.to_string()))?;
                Ok(json!({"peer_id": peer.to_string(), "disconnected": was}))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/dms/node/peers/dht",
        Behavior::direct(move |_m| {
            let n = n.clone();
            async move {
                let table = n.network.dht_peers().await;
                Ok(json!({"peers": table.iter().map(|(p, addrs)| json!({
                "peer_id": p.to_string(),
                "did": did_of(p),
                "addrs": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()}))
            }
        }),
    )?;
    let n = i.clone();
    reg(
        "/dms/node/peers/score",
        Behavior::direct(move |_m| {
            let n = n.clone();
            async move {
                let peers = n.network.peers().await;
                Ok(json!({"scores": peers.iter().map(|p| json!({
                "peer_id": p.peer_id.to_string(),
                "did": did_of(&p.peer_id),
                "gossip_score": p.gossip_score,
                "rtt_ms": p.rtt.map(|d| d.as_secs_f64() * 1000.0),
            })).collect::<Vec<_>>()}))
            }
        }),
    )?;
    Ok(())
}

/// `/dms/node/peers/self`'s `reachability`: AutoNAT's verdict, relays, hole punches.
fn reachability_json(r: &nunet_network::Reachability) -> Value {
    json!({
        "nat": r.nat.as_str(),
        "reachable": r.reachable(),
        "summary": r.summary(),
        "public_addrs": r.public_addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "relays": r.relays.iter().map(|x| json!({
            "relay": x.relay.to_string(),
            "addr": x.addr.to_string(),
            "reserved": x.reserved,
            "automatic": x.automatic,
        })).collect::<Vec<_>>(),
        "hole_punches": {"succeeded": r.hole_punches_succeeded, "failed": r.hole_punches_failed},
    })
}
