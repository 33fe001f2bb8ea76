//! Networked WASM: a WASI preview 2 component (`fixtures/tcp_greeter.wat`: listen on a port,
//! greet the first client) run in a network namespace made here. It serves inside that
//! namespace and not on the host; `stop` ends it while it is blocked in `accept`; without a
//! namespace it gets no sockets at all.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns, unshare};
use nunet_executor::{
    ExecutionSpec, ExecutionState, Executor, ExitReason, ModuleSource, NetworkAttachment, Workload,
};
use nunet_executor_wasm::{WasmConfig, WasmExecutor};

const GREETER: &str = include_str!("fixtures/tcp_greeter.wat");

/// A fresh network namespace (loopback up) held by a parked thread until dropped.
struct Netns {
    tid: i32,
    _done: mpsc::Sender<()>,
}

impl Netns {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        let (done, wait) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET): run the tests as root");
            // A child forked from this thread starts in its namespace.
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(up.success());
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = wait.recv();
        });
        Self {
            tid: rx.recv().unwrap(),
            _done: done,
        }
    }

    fn path(&self) -> PathBuf {
        format!("/proc/{}/task/{}/ns/net", std::process::id(), self.tid).into()
    }
}

/// Connects to `127.0.0.1:port` inside namespace `ns` (retrying for 10 s), reads to EOF.
fn fetch(ns: PathBuf, port: u16) -> String {
    let ns = std::fs::File::open(ns).unwrap();
    std::thread::spawn(move || {
        setns(&ns, CloneFlags::CLONE_NEWNET).unwrap();
        let t0 = Instant::now();
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() > Duration::from_secs(10) => panic!("connect: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .join()
    .unwrap()
}

/// The port of guests that never share a network with the host: inside a namespace of their
/// own nothing else listens, and without one (or when refused) they never bind. Any fixed
/// port does; one picked "free" on the host would mean nothing there.
const GUEST_PORT: u16 = 8080;

fn greeter(id: &str, port: u16, network: NetworkAttachment) -> ExecutionSpec {
    let wat_text = GREETER.replace("__PORT__", &port.to_string());
    let mut s = ExecutionSpec::new(
        id,
        Workload::Wasm {
            module: ModuleSource::Inline(wat::parse_str(wat_text).unwrap()),
            sha256: None,
        },
    );
    s.network = network;
    s
}

fn executor(dir: &std::path::Path) -> WasmExecutor {
    let ex = WasmExecutor::new(WasmConfig::new("wasm-net-node", dir.join("state")));
    assert!(ex.status().available, "{:?}", ex.status());
    ex
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_serves_inside_its_namespace_and_not_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let ns = Netns::new();
    // The same port is taken on the host's loopback: a guest on the host's network could not
    // listen there (and would fail), and nothing may connect to this one.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();

    let spec = greeter("greeter", port, NetworkAttachment::Namespace(ns.path()));
    ex.start(&spec).await.unwrap();
    let path = ns.path();
    let page = tokio::task::spawn_blocking(move || fetch(path, port))
        .await
        .unwrap();
    assert_eq!(page, "hello from wasm\n");
    let exit = tokio::time::timeout(Duration::from_secs(10), ex.wait("greeter"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, Some(0), "{exit:?}");
    assert!(
        host.accept().is_err(),
        "the guest's port must not be the host's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_ends_a_guest_blocked_in_accept() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let ns = Netns::new();
    let spec = greeter(
        "waiting",
        GUEST_PORT,
        NetworkAttachment::Namespace(ns.path()),
    );
    ex.start(&spec).await.unwrap();
    // Let it reach `accept`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(
        ex.inspect("waiting").await.unwrap().state,
        ExecutionState::Running
    ));
    let t0 = Instant::now();
    ex.stop("waiting", Duration::from_secs(1)).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    let exit = ex.wait("waiting").await.unwrap();
    assert!(
        matches!(exit.reason, ExitReason::Stopped) || exit.code == Some(1),
        "{exit:?}"
    );
}

#[tokio::test]
async fn without_a_namespace_there_are_no_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let spec = greeter("offline", GUEST_PORT, NetworkAttachment::None);
    let exit = tokio::time::timeout(Duration::from_secs(10), ex.run(&spec))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit.code, Some(1), "the bind must be refused: {exit:?}");
}

#[tokio::test]
async fn other_attachments_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path());
    let spec = greeter("hostnet", GUEST_PORT, NetworkAttachment::Host);
    let err = ex.start(&spec).await.unwrap_err();
    assert!(err.to_string().contains("network namespace"), "{err}");
    let spec = greeter(
        "missing",
        GUEST_PORT,
        NetworkAttachment::Namespace("/proc/nunet-no-such-ns".into()),
    );
    let err = ex.start(&spec).await.unwrap_err();
    assert!(err.to_string().contains("/proc/nunet-no-such-ns"), "{err}");
}
