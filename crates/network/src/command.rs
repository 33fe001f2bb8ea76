//! Messages from [`Network`](crate::Network) handles to the swarm task.

use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use crate::{NetError, PeerInfo, Reachability, RosterInfo};

/// One-shot answer channel.
pub(crate) type Reply<T> = oneshot::Sender<T>;

/// A request for the swarm task.
pub(crate) enum Command {
    ListenAddrs(Reply<Vec<Multiaddr>>),
    Request {
        peer: PeerId,
        payload: Vec<u8>,
        reply: Reply<Result<Vec<u8>, NetError>>,
    },
    Subscribe {
        topic: String,
        reply: Reply<Result<(), NetError>>,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
        reply: Reply<Result<(), NetError>>,
    },
    TopicPeers {
        topic: String,
        reply: Reply<Vec<PeerId>>,
    },
    /// Leaves peers that stayed silent out of the roster's answers for a while.
    QuietTopicPeers(Vec<PeerId>),
    /// This node's roster, encoded for a peer that pulls it.
    RosterSnapshot(Reply<Vec<u8>>),
    /// A roster pulled from a peer, to merge.
    RosterMerge {
        from: PeerId,
        bytes: Vec<u8>,
    },
    Roster(Reply<RosterInfo>),
    Dial {
        addr: Multiaddr,
        reply: Reply<Result<(), NetError>>,
    },
    Connect {
        peer: PeerId,
        reply: Reply<Result<(), NetError>>,
    },
    Peers(Reply<Vec<PeerInfo>>),
    Disconnect {
        peer: PeerId,
        reply: Reply<bool>,
    },
    Reachability(Reply<Reachability>),
    DhtPeers(Reply<Vec<(PeerId, Vec<Multiaddr>)>>),
    FindPeer {
        peer: PeerId,
        reply: Reply<Result<Vec<Multiaddr>, NetError>>,
    },
    Shutdown(Reply<()>),
}
