//! The composed libp2p behaviour and the transport stack that carries it.

use std::num::NonZeroU32;
use std::time::Duration;

use prometheus_client::registry::Registry;

use libp2p::{
    StreamProtocol, Swarm, Transport, autonat, connection_limits, core::upgrade::Version, dcutr,
    gossipsub, identify, identity::Keypair, kad, noise, ping, pnet, relay, request_response,
    swarm::behaviour::toggle, tcp, yamux,
};

use crate::{
    ACTOR_PROTOCOL, IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL, NetConfig, NetError, NetLimits,
    codec::BytesCodec,
    config,
    legacy_ids::{LegacyIds, LegacyMux},
    limits::InboundMemoryLimit,
};

/// How often ping measures every connection.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Room for gossipsub's protobuf framing, signature and key around a payload.
const GOSSIP_OVERHEAD: usize = 64 * 1024;
/// Request-response's own deadline; callers apply their (shorter) timeout on top.
const RR_MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Everything the node speaks, composed into one behaviour. The two limits come first, so a
/// connection they refuse is refused before any other behaviour sets anything up for it.
#[derive(libp2p::swarm::NetworkBehaviour)]
pub(crate) struct NodeBehaviour {
    pub(crate) connection_limits: connection_limits::Behaviour,
    pub(crate) memory_limit: InboundMemoryLimit,
    pub(crate) relay_client: relay::client::Behaviour,
    pub(crate) relay_server: toggle::Toggle<relay::Behaviour>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) gossipsub: gossipsub::Behaviour,
    pub(crate) actor: request_response::Behaviour<BytesCodec>,
    pub(crate) dcutr: dcutr::Behaviour,
    pub(crate) autonat: autonat::Behaviour,
    pub(crate) streams: libp2p_stream::Behaviour,
}

fn setup<E: std::fmt::Display>(e: E) -> NetError {
    NetError::Setup(e.to_string())
}

impl NodeBehaviour {
    fn new(
        key: &Keypair,
        relay_client: relay::client::Behaviour,
        cfg: &NetConfig,
    ) -> Result<Self, NetError> {
        let peer_id = key.public().to_peer_id();

        let mut kad_cfg = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_cfg
            .set_query_timeout(Duration::from_secs(20))
            .set_periodic_bootstrap_interval(Some(Duration::from_secs(5 * 60)));
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_cfg);
        // Answer DHT queries even on private/loopback addresses (AutoNAT would otherwise keep
        // nodes in client mode and loopback peers could never find each other).
        kad.set_mode(Some(kad::Mode::Server));

        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .validation_mode(gossipsub::ValidationMode::Strict)
            .flood_publish(true)
            .heartbeat_interval(Duration::from_secs(1))
            .max_transmit_size(cfg.max_message_bytes.saturating_add(GOSSIP_OVERHEAD))
            .message_id_fn(go_message_id)
            .build()
            .map_err(setup)?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_cfg,
        )
        .map_err(setup)?;
        gossipsub
            .with_peer_score(peer_score_params(), peer_score_thresholds())
            .map_err(setup)?;

        let actor = request_response::Behaviour::with_codec(
            BytesCodec::new(cfg.max_message_bytes),
            [(
                StreamProtocol::new(ACTOR_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(cfg.request_timeout.max(RR_MAX_TIMEOUT))
                .with_max_concurrent_streams(cfg.limits.max_concurrent_requests.max(1)),
        );

        let relay_server = cfg
            .relay_server
            .then(|| relay::Behaviour::new(peer_id, relay_config(&cfg.relay_limits)));

        Ok(Self {
            connection_limits: connection_limits::Behaviour::new(connection_limits(&cfg.limits)),
            memory_limit: InboundMemoryLimit::new(cfg.limits.max_memory_bytes),
            relay_client,
            relay_server: relay_server.into(),
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_string(), key.public())
                    .with_agent_version(format!("nunet-rs/{}", env!("CARGO_PKG_VERSION")))
                    // A node that dials its bootstrap peers before its own listeners are up
                    // sends a first identify without listen addresses; without a push, the
                    // peer could not add it to its DHT until the next periodic identify (5 min).
                    .with_push_listen_addr_updates(true),
            ),
            ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
            kad,
            gossipsub,
            actor,
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::Behaviour::new(peer_id, autonat_config(cfg)),
            streams: libp2p_stream::Behaviour::new(),
        })
    }
}

/// Circuit relay server limits: `limits` (by default 256 circuits at once, 32 per peer), and
/// new circuits from one peer in bursts of 120, then one every 5 s (from one IP address: 480,
/// then one a second). libp2p's defaults (16 at once, 4 per peer, 30 per peer then one every
/// 2 min) starve a NATed node that dials a few peers through the relay — each dial tries
/// every circuit address at once (TCP and QUIC to each relay) — within minutes.
fn relay_config(limits: &config::RelayLimits) -> relay::Config {
    let burst = |n| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
    relay::Config {
        max_reservations: limits.max_reservations,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.circuit_duration,
        max_circuit_bytes: limits.circuit_bytes,
        circuit_src_rate_limiters: Vec::new(),
        ..Default::default()
    }
    .circuit_src_per_peer(burst(120), Duration::from_secs(5))
    .circuit_src_per_ip(burst(480), Duration::from_secs(1))
}

/// AutoNAT (v1), as client and server. The first probe goes out soon after start (by then
/// the bootstrap peers are connected), so a private node reserves its relay slots within
/// seconds rather than libp2p's default 15 s + 90 s.
fn autonat_config(cfg: &NetConfig) -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(3),
        retry_interval: Duration::from_secs(30),
        throttle_server_period: Duration::from_secs(15),
        timeout: Duration::from_secs(20),
        only_global_ips: !cfg.probe_private_addrs,
        ..Default::default()
    }
}

/// go-libp2p-pubsub's default message id (`DefaultMsgIdFn`, which NuNet's nodes keep): the
/// author's peer id bytes, then the sequence number's bytes (8, big-endian), so that the
/// ids in IHAVE/IWANT gossip name the same messages on NuNet's nodes and here.
pub(crate) fn go_message_id(m: &gossipsub::Message) -> gossipsub::MessageId {
    let mut id = m.source.map(|p| p.to_bytes()).unwrap_or_default();
    if let Some(seq) = m.sequence_number {
        id.extend_from_slice(&seq.to_be_bytes());
    }
    gossipsub::MessageId::new(&id)
}

/// libp2p's connection limits from ours.
fn connection_limits(l: &NetLimits) -> connection_limits::ConnectionLimits {
    connection_limits::ConnectionLimits::default()
        .with_max_pending_incoming(Some(l.max_pending_incoming))
        .with_max_pending_outgoing(Some(l.max_pending_outgoing))
        .with_max_established_incoming(Some(l.max_established_incoming))
        .with_max_established_outgoing(Some(l.max_established_outgoing))
        .with_max_established(Some(l.max_established))
        .with_max_established_per_peer(Some(l.max_established_per_peer))
}

/// Yamux with the stream limit of [`NetLimits::max_streams_per_connection`]. Its receive
/// window stays yamux's default (256 KiB per stream, auto-tuned, at most 1 GiB per connection):
/// libp2p-yamux 0.48 does not let it be set.
fn yamux_config(l: &NetLimits) -> yamux::Config {
    let mut c = yamux::Config::default();
    // yamux asserts 256 KiB × streams ≤ its 1 GiB connection window: at most 4096 streams.
    c.set_max_num_streams(l.max_streams_per_connection.clamp(1, MAX_YAMUX_STREAMS));
    c
}

/// Most streams per connection yamux accepts with its default connection window.
const MAX_YAMUX_STREAMS: usize = 4096;

/// Gossipsub peer scoring as NuNet configures it: application-specific weight 1, scores
/// kept 6 h after a disconnect. IP colocation is not penalised: devnets run many nodes
/// behind one address.
fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        retain_score: Duration::from_secs(6 * 3600),
        ..Default::default()
    }
}

/// Thresholds: gossip −500, publish −1000, graylist −2500, opportunistic graft 2.5.
fn peer_score_thresholds() -> gossipsub::PeerScoreThresholds {
    gossipsub::PeerScoreThresholds {
        gossip_threshold: -500.0,
        publish_threshold: -1000.0,
        graylist_threshold: -2500.0,
        opportunistic_graft_threshold: 2.5,
        ..Default::default()
    }
}

/// Builds the swarm: TCP + QUIC in a public swarm, TCP + pnet in a private one. Every
/// connection's substreams go through [`LegacyIds`].
pub(crate) fn build_swarm(
    cfg: &NetConfig,
    registry: &mut Registry,
) -> Result<Swarm<NodeBehaviour>, NetError> {
    // Every connection's substreams translate NuNet's slash-less actor protocol names.
    let mux = LegacyMux(yamux_config(&cfg.limits));
    let relay_mux = mux.clone();
    let idle =
        |c: libp2p::swarm::Config| c.with_idle_connection_timeout(config::IDLE_CONNECTION_TIMEOUT);
    let builder = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone()).with_tokio();
    let swarm = match cfg.swarm_key {
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                move || mux,
            )
            .map_err(setup)?
            // QUIC has its own streams and no muxer upgrade, so the builder's QUIC phase
            // cannot wrap them: the same transport is added here with translating streams.
            .with_other_transport(|key| {
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
                        .map(|(peer, conn), _| (peer, LegacyIds::new(conn))),
                )
            })
            .map_err(setup)?
            .with_dns()
            .map_err(setup)?
            .with_relay_client(noise::Config::new, move || relay_mux)
            .map_err(setup)?
            .with_bandwidth_metrics(registry)
            .with_behaviour(|key, relay| {
                NodeBehaviour::new(key, relay, cfg).map_err(|e| e.to_string().into())
            })
            .map_err(setup)?
            .with_swarm_config(idle)
            .build(),
        Some(psk) => {
            let psk = pnet::PreSharedKey::new(psk);
            builder
                .with_other_transport(|key| {
                    let noise = noise::Config::new(key)?;
                    let t = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                        .and_then(move |socket, _| pnet::PnetConfig::new(psk).handshake(socket))
                        .upgrade(Version::V1Lazy)
                        .authenticate(noise)
                        .multiplex(mux);
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(t)
                })
                .map_err(setup)?
                .with_dns()
                .map_err(setup)?
                .with_relay_client(noise::Config::new, move || relay_mux)
                .map_err(setup)?
                .with_bandwidth_metrics(registry)
                .with_behaviour(|key, relay| {
                    NodeBehaviour::new(key, relay, cfg).map_err(|e| e.to_string().into())
                })
                .map_err(setup)?
                .with_swarm_config(idle)
                .build()
        }
    };
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn message_ids_are_go_pubsubs_from_and_seqno_bytes() {
        let peer = libp2p::PeerId::random();
        let m = gossipsub::Message {
            source: Some(peer),
            data: b"x".to_vec(),
            sequence_number: Some(0x0102_0304_0506_0708),
            topic: gossipsub::TopicHash::from_raw("/nunet/hello"),
        };
        let mut want = peer.to_bytes();
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(go_message_id(&m).0, want);
    }
}
