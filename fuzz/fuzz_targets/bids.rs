//! The orchestrator ↔ provider messages (bid requests, signed bids and declines, commit /
//! allocate / revert requests, exit reports) decoded from reply and request JSON, followed by
//! the checks each side applies at once (bid and decline signatures, resource and location
//! matching, executor names, the volume checks), and a live update's ensemble compared with
//! itself and with an empty one, and manifests with standbys. Never panics; a bid or decline a
//! provider signs verifies at the orchestrator after the trip through JSON.
#![no_main]

use std::sync::OnceLock;

use nunet_actor::Handle;
use nunet_did::Keypair;
use nunet_ensemble::{Location, Resources};
use nunet_protocol::{
    AllocateRequest, AllocationExited, Bid, BidRequest, CommitRequest, Decline, Manifest,
    RevertRequest, UpdateDeployment,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

fn key() -> &'static Keypair {
    static K: OnceLock<Keypair> = OnceLock::new();
    K.get_or_init(|| Keypair::from_seed(&[7; 32]))
}

/// Through the wire as the reply path carries it: value → JSON bytes → value → message.
fn wire<T: Serialize + DeserializeOwned>(m: &T) -> T {
    let v = serde_json::to_value(m).expect("a message encodes");
    let bytes = serde_json::to_vec(&v).expect("a value encodes");
    let v: Value = serde_json::from_slice(&bytes).expect("its JSON decodes");
    serde_json::from_value(v).expect("its value decodes")
}

fn check_bid(bid: Bid) {
    let _ = bid.verify();
    let _ = bid.free.satisfied_by(&Resources::default());
    let _ = Resources::default().satisfied_by(&bid.free);
    let _ = bid.location.to_string();
    // As the provider would sign it: the orchestrator must accept it.
    let k = key();
    let me = Handle::root_of(&k.public());
    let signed = Bid {
        peer: me.addr.host.clone(),
        handle: me,
        ..bid
    }
    .sign(k);
    let received = wire(&signed);
    assert_eq!(
        received.verify().ok(),
        Some(k.did()),
        "a signed bid does not verify"
    );
}

fn check_decline(d: Decline) {
    let _ = d.verify();
    let _ = d.summary();
    let k = key();
    let signed = Decline {
        peer: k.public().peer_id().to_base58(),
        ..d
    }
    .sign(k);
    let v = serde_json::to_value(&signed).expect("a decline encodes");
    assert!(Decline::is_decline(&v) == signed.declined);
    let received = wire(&signed);
    assert_eq!(
        received.verify().ok(),
        Some(k.did()),
        "a signed decline does not verify"
    );
}

fn check_request(req: &BidRequest) {
    let here = Location::default();
    let offer = Resources::default();
    for n in &req.nodes {
        let _ = n.resources.satisfied_by(&offer);
        let _ = n.location.refusal(&here);
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if Decline::is_decline(&v) {
        if let Ok(d) = serde_json::from_value::<Decline>(v.clone()) {
            check_decline(d);
        }
    } else if let Ok(bid) = serde_json::from_value::<Bid>(v.clone()) {
        check_bid(bid);
    }
    if let Ok(req) = serde_json::from_value::<BidRequest>(v.clone()) {
        check_request(&req);
    }
    if let Ok(req) = serde_json::from_value::<CommitRequest>(v.clone()) {
        for a in &req.allocations {
            let _ = (a.resources.cpu.cores * 1000.0).ceil().max(0.0) as u64;
        }
    }
    if let Ok(req) = serde_json::from_value::<AllocateRequest>(v.clone()) {
        for a in &req.allocations {
            let _ = a.execution.executor();
            // The provider's re-check of the volumes it is sent, before it mounts any.
            let size =
                nunet_ensemble::volumes::named_volume_size(&a.volumes, a.resources.disk.size);
            for v in &a.volumes {
                let _ = nunet_ensemble::volumes::problems(v, size);
                let _ = nunet_ensemble::volumes::destination(&v.mount_destination);
            }
        }
    }
    let _ = serde_json::from_value::<RevertRequest>(v.clone());
    if let Ok(u) = serde_json::from_value::<UpdateDeployment>(v.clone()) {
        // An ensemble compared with itself changes nothing; with an empty one, every node
        // of it is new.
        if let Ok(d) = nunet_orchestrator::update::diff("e", &u.ensemble, &u.ensemble) {
            assert!(
                d.is_empty(),
                "an ensemble differs from itself: {}",
                d.summary()
            );
        }
        let mut empty = u.ensemble.clone();
        empty.nodes.clear();
        if let Ok(d) = nunet_orchestrator::update::diff("e", &empty, &u.ensemble) {
            assert_eq!(d.added_nodes.len(), u.ensemble.nodes.len());
            let _ = d.summary();
        }
    }
    if let Ok(m) = serde_json::from_value::<Manifest>(v.clone()) {
        let _ = m.peers();
        for (node, s) in &m.standbys {
            for x in s {
                assert!(m.is_standby(node, &x.node.did));
            }
        }
    }
    let _ = serde_json::from_value::<AllocationExited>(v);
});
