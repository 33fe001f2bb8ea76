//! The REST server's limits, over real sockets: idle and half-sent requests are cut off,
//! connections are bounded, and slow handlers are not.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use nunet_actor::{ActorSystem, Envelope, Options, SystemConfig};
use nunet_capability::{Anchors, now_ns};
use nunet_did::Keypair;
use nunet_node::api::{self, ApiState, ServeLimits};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

/// Safety net for reads the server must end on its own; never reached when it works.
const HANG: Duration = Duration::from_secs(30);
const HEALTH: &[u8] = b"GET /api/v1/health HTTP/1.1\r\nHost: dms\r\nConnection: close\r\n\r\n";

fn system() -> ActorSystem {
    let key = Keypair::from_seed(&[7; 32]);
    ActorSystem::new(
        key.clone(),
        Anchors::new(key.did()),
        SystemConfig {
            verify_capabilities: false,
        },
    )
}

/// The API on 127.0.0.1 (port chosen by the OS), with `limits` or, when `None`, through
/// [`api::serve`] and its defaults.
async fn start(system: ActorSystem, limits: Option<ServeLimits>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = ApiState {
        system,
        metrics: None,
        files: None,
        output: None,
        dashboard: None,
    };
    let never = std::future::pending::<()>();
    tokio::spawn(async move {
        match limits {
            Some(l) => api::serve_with(listener, state, l, never).await,
            None => api::serve(listener, state, never).await,
        }
    });
    addr
}

/// Sends `raw` and reads until the server closes the connection (or [`HANG`]: a failure).
async fn exchange(s: &mut TcpStream, raw: &[u8]) -> String {
    let _ = s.write_all(raw).await;
    let mut back = Vec::new();
    match tokio::time::timeout(HANG, s.read_to_end(&mut back)).await {
        Ok(_) => String::from_utf8_lossy(&back).into_owned(),
        Err(_) => panic!("the server kept the connection open for {HANG:?}"),
    }
}

async fn health(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    exchange(&mut s, HEALTH).await
}

fn body_of(resp: &str) -> Value {
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_health_still_answers() {
    let addr = start(system(), None).await;
    // More connections than the server keeps (64), none sending a byte.
    let mut idle = Vec::new();
    for _ in 0..2 * api::MAX_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let r = health(addr).await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(body_of(&r)["status"], "ok");

    // Every idle connection is closed by the server: the oldest at once to make room, the
    // rest when their header-read time runs out.
    let closed = futures::future::join_all(idle.into_iter().map(|mut s| async move {
        let mut b = Vec::new();
        tokio::time::timeout(HANG, s.read_to_end(&mut b))
            .await
            .is_ok()
            && b.is_empty()
    }))
    .await;
    let open = closed.iter().filter(|c| !**c).count();
    assert_eq!(open, 0, "{open} idle connections still open after {HANG:?}");

    // And the server is still there.
    assert!(health(addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_half_a_header_is_closed() {
    let addr = start(system(), None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = exchange(
        &mut s,
        b"GET /api/v1/health HTTP/1.1\r\nHost: dms\r\nX-Slow: ",
    )
    .await;
    assert!(!r.contains("200"), "a half-sent request was answered: {r}");
    assert!(health(addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_and_the_connection_closed() {
    let addr = start(system(), None).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let r = exchange(
        &mut s,
        b"POST /api/v1/actor/invoke HTTP/1.1\r\nHost: dms\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"be\": \"/",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 408"), "{r}");
    assert!(health(addr).await.starts_with("HTTP/1.1 200"));
}

/// A signed invocation of `be` on the node's root actor, as the CLI would post it.
fn invocation(system: &ActorSystem, be: &str) -> String {
    let user = Keypair::from_seed(&[8; 32]);
    let env = Envelope::sign(
        &user,
        nunet_actor::Handle::root_of(&user.public()),
        system.root(),
        be,
        Options {
            exp: now_ns() + 60_000_000_000,
            ..Default::default()
        },
        b"{}".to_vec(),
        Vec::new(),
    );
    let body = serde_json::to_string(&env).unwrap();
    format!(
        "POST /api/v1/actor/invoke HTTP/1.1\r\nHost: dms\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Registers `/test/wait` on the root actor: it reports its start on the returned receiver,
/// then waits for a permit of `gate` before answering.
fn waiting_behavior(system: &ActorSystem, gate: &std::sync::Arc<Semaphore>) -> mpsc::Receiver<()> {
    let (started, rx) = mpsc::channel(64);
    let gate = gate.clone();
    system
        .register_with(
            "root",
            "/test/wait",
            (started, gate),
            |(started, gate), _| async move {
                let _ = started.send(()).await;
                let _permit = gate.acquire().await;
                Ok(json!("done"))
            },
        )
        .unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handlers_are_not_cut_off_by_the_read_timeouts() {
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        max_connections: 4,
    };
    let system = system();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    let mut started = waiting_behavior(&system, &gate);
    let addr = start(system.clone(), Some(limits)).await;
    let req = invocation(&system, "/test/wait");
    let call = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        exchange(&mut s, req.as_bytes()).await
    });
    started.recv().await.unwrap();
    // Well past both read timeouts, the handler is still working, then answers.
    tokio::time::sleep(4 * limits.header_read_timeout).await;
    gate.add_permits(1);
    let r = call.await.unwrap();
    assert_done(&r);
}

/// `r` is a 200 carrying the reply envelope of `/test/wait`.
fn assert_done(r: &str) {
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let reply: Envelope = serde_json::from_value(body_of(r)).unwrap();
    let msg: Value = serde_json::from_slice(&reply.msg).unwrap();
    assert_eq!(msg, json!({"ok": "done"}), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_connections_are_kept_and_newcomers_refused_at_the_limit() {
    let limits = ServeLimits {
        max_connections: 4,
        ..ServeLimits::default()
    };
    let system = system();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    let mut started = waiting_behavior(&system, &gate);
    let addr = start(system.clone(), Some(limits)).await;
    let mut calls = Vec::new();
    for _ in 0..limits.max_connections {
        let req = invocation(&system, "/test/wait");
        calls.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            exchange(&mut s, req.as_bytes()).await
        }));
        started.recv().await.unwrap();
    }
    // Every slot has a request in progress: the next connection is closed unanswered.
    let r = health(addr).await;
    assert!(r.is_empty(), "a connection over the limit was served: {r}");

    gate.add_permits(limits.max_connections);
    for c in calls {
        assert_done(&c.await.unwrap());
    }
    assert!(health(addr).await.starts_with("HTTP/1.1 200"));
}
