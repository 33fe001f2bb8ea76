//! The output stream between two real libp2p hosts on loopback: a follower with a ticket gets
//! every byte from its offsets as the spool grows, then the state once the allocation ended;
//! a second follower resumes at an offset; a ticket is refused for another peer, twice, or
//! made up.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use nunet_network::NetConfig;
use nunet_output::{Channel, Frame, Server, Spools, State};
use nunet_protocol::AllocationStatus;

async fn host() -> nunet_network::Network {
    let mut cfg = NetConfig::new(libp2p::identity::Keypair::generate_ed25519());
    cfg.listen = NetConfig::loopback_listen();
    nunet_network::start(cfg).await.unwrap().0
}

/// Reads frames until a state frame; returns (stdout bytes, stderr bytes, state).
async fn drain(stream: &mut libp2p::Stream, mut at: [u64; 2]) -> (Vec<u8>, Vec<u8>, State) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        let f = tokio::time::timeout(Duration::from_secs(20), Frame::read(stream))
            .await
            .expect("a frame in time")
            .unwrap()
            .expect("no end before the state");
        match f {
            Frame::Output {
                channel,
                offset,
                data,
                ..
            } => {
                let i = usize::from(channel == Channel::Stderr);
                assert_eq!(offset, at[i], "frames come in order, without gaps");
                at[i] += data.len() as u64;
                if i == 0 { &mut out } else { &mut err }.extend_from_slice(&data);
            }
            Frame::State { state, .. } => return (out, err, state),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_every_byte_from_its_offsets_then_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let (provider, follower, stranger) = (host().await, host().await, host().await);
    for h in [&follower, &stranger] {
        let addr = provider.listen_addrs().await.into_iter().next().unwrap();
        h.dial(addr).await.unwrap();
    }
    let spools = Arc::new(Spools::new(dir.path().to_path_buf(), 64 << 20));
    let server = Server::start(&provider, spools.clone()).unwrap();
    let spool = spools.open("alloc-1").unwrap();
    let me = follower.local_peer_id();
    let pid = provider.local_peer_id();

    // Output written while the follower reads: 3 MiB of stdout in 1 KiB lines, some stderr.
    let mut want = Vec::new();
    for i in 0..3 * 1024 {
        want.extend_from_slice(format!("{i:08} {}\n", "y".repeat(1014)).as_bytes());
    }
    let t = server.ticket(me, "alloc-1").unwrap();
    assert_eq!(t.source, spool.source());
    let mut s = nunet_output::serve::open(&follower, pid, &t.ticket, 0, 0)
        .await
        .unwrap();
    let writer = {
        let (spool, want) = (spool.clone(), want.clone());
        tokio::spawn(async move {
            let mut w = spool.writer(1).await.unwrap();
            for c in want.chunks(4000) {
                w.append(Channel::Stdout, c).unwrap();
                tokio::task::yield_now().await;
            }
            w.append(Channel::Stderr, b"bye\n").unwrap();
            drop(w);
            spool.set_state(Some(State {
                status: AllocationStatus::Completed,
                exit_code: Some(0),
            }));
        })
    };
    let (out, err, state) = drain(&mut s, [0, 0]).await;
    writer.await.unwrap();
    assert_eq!(out, want);
    assert_eq!(err, b"bye\n");
    assert_eq!(state.status, AllocationStatus::Completed);

    // A second follower resumes in the middle of a line: exactly the rest.
    let t = server.ticket(me, "alloc-1").unwrap();
    let mut s = nunet_output::serve::open(&follower, pid, &t.ticket, 1_000_001, 4)
        .await
        .unwrap();
    let (out, err, _) = drain(&mut s, [1_000_001, 4]).await;
    assert_eq!(out, want[1_000_001..]);
    assert!(err.is_empty());

    // Refused: a ticket used twice, another peer's, one made up. The answer is an error
    // frame, and nothing else.
    let refused = |h: nunet_network::Network, ticket: String| async move {
        let mut s = nunet_output::serve::open(&h, pid, &ticket, 0, 0)
            .await
            .unwrap();
        match Frame::read(&mut s).await.unwrap() {
            Some(Frame::Error { message, .. }) => message,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        refused(follower.clone(), t.ticket.clone()).await,
        "unknown ticket"
    );
    let theirs = server.ticket(me, "alloc-1").unwrap();
    assert_eq!(
        refused(stranger.clone(), theirs.ticket.clone()).await,
        "unknown ticket"
    );
    assert_eq!(
        refused(stranger.clone(), "00".repeat(32)).await,
        "unknown ticket"
    );
    // The rightful holder can still use the ticket the stranger tried.
    let mut s = nunet_output::serve::open(&follower, pid, &theirs.ticket, 0, 0)
        .await
        .unwrap();
    assert_eq!(drain(&mut s, [0, 0]).await.0.len(), want.len());
}
