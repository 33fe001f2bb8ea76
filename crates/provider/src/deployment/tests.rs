//! The provider behaviors with a deployer's hostile numbers, sent through the actor system
//! as an orchestrator's messages arrive, over a real SQLite accounting.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use nunet_ensemble::execution::DockerExecution;
use nunet_ensemble::spec::PortMapping;
use nunet_protocol::{AllocationRequest, CommitAllocation, NodeBidRequest};

use super::*;
use crate::onboarding::tests::{manager, system};
use nunet_protocol::names::{ALLOCATE, BID_REQUEST_DIRECT, COMMIT, REVERT};
use serde_json::{Value, json};

struct Fixture {
    system: ActorSystem,
    resources: SharedManager,
    provider: Arc<Provider>,
    _dir: tempfile::TempDir,
}

async fn provider() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let resources = manager(dir.path());
    let (system, p) = build(dir.path(), resources.clone(), BTreeMap::new(), 21).await;
    Fixture {
        system,
        resources,
        provider: p,
        _dir: dir,
    }
}

/// A registered provider over `resources` and `executors` with data dir `dir`, on a
/// loopback libp2p host, whose key and actor system come from `seed`.
pub(in crate::deployment) async fn build(
    dir: &std::path::Path,
    resources: SharedManager,
    executors: BTreeMap<String, Arc<dyn Executor>>,
    seed: u8,
) -> (ActorSystem, Arc<Provider>) {
    let system = system(seed);
    let mut cfg = nunet_network::NetConfig::new(libp2p::identity::Keypair::generate_ed25519());
    cfg.listen = nunet_network::NetConfig::loopback_listen();
    let network = nunet_network::start(cfg).await.unwrap().0;
    let config = nunet_config::Config::defaults(dir);
    let subnets = crate::subnet::NodeSubnets::new(
        false,
        nunet_subnet::DatagramConfig {
            enabled: false,
            port: 0,
            busy_poll: Duration::ZERO,
        },
        &network,
        None,
        dir.into(),
    );
    let p = Provider::new(
        Parts {
            system: system.clone(),
            key: Keypair::from_seed(&[seed; 32]),
            resources,
            records: nunet_store::Records::in_memory().unwrap(),
            executors,
            subnets,
            output: nunet_output::Server::start(
                &network,
                Arc::new(nunet_output::Spools::new(dir.join("output"), 0)),
            )
            .unwrap(),
            transfers: nunet_files::Files::start(
                &system,
                &network,
                nunet_files::Area::new(dir.join("files"), &[]),
                false,
            )
            .unwrap(),
            network,
        },
        &config,
    );
    p.register().unwrap();
    (system, p)
}

impl Fixture {
    async fn call(&self, be: &str, payload: Value) -> Result<Value, ActorError> {
        let s = &self.system;
        s.invoke("root", s.root(), be, payload, Duration::from_secs(10))
            .await
    }

    fn reserved(&self) -> Vec<(String, u64, u64)> {
        let g = crate::onboarding::lock(&self.resources).unwrap();
        g.accounting()
            .reservations()
            .map(|r| {
                (
                    r.id.clone(),
                    r.resources.cpu_millicores,
                    r.resources.ram_bytes,
                )
            })
            .collect()
    }
}

fn res(cores: f64, ram: u64) -> nunet_ensemble::Resources {
    let mut r = nunet_ensemble::Resources::default();
    r.cpu.cores = cores;
    r.ram.size = ram;
    r.disk.size = 1 << 20;
    r
}

fn commit(r: nunet_ensemble::Resources, expires_at_ms: i64) -> Value {
    serde_json::to_value(CommitRequest {
        ensemble_id: "e".into(),
        node_id: "n".into(),
        allocations: vec![CommitAllocation {
            name: "web".into(),
            id: "a-web".into(),
            resources: r,
            ports: Vec::new(),
        }],
        expires_at_ms,
    })
    .unwrap()
}

fn allocate(f: &Fixture, r: nunet_ensemble::Resources, ports: Vec<PortMapping>) -> Value {
    serde_json::to_value(AllocateRequest {
        ensemble_id: "e".into(),
        node_id: "n".into(),
        orchestrator: f.system.root(),
        allocations: vec![AllocationRequest {
            name: "web".into(),
            id: "a-web".into(),
            kind: AllocationType::Task,
            execution: Execution::Docker(DockerExecution {
                image: "nginx".into(),
                ..Default::default()
            }),
            resources: r,
            ports,
            provision: Vec::new(),
            healthcheck: None,
            keep_on_exit: false,
            volumes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            credentials: Default::default(),
        }],
    })
    .unwrap()
}

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_refuses_impossible_numbers_naming_the_field() {
    let f = provider().await;
    let later = now_ms() + 60_000;
    for (r, expires, field) in [
        (res(-4.0, GIB), later, "allocations[0].resources.cpu.cores"),
        (res(1.0, 0), later, "allocations[0].resources.ram.size"),
        (res(1e300, GIB), later, "allocations[0].resources.cpu.cores"),
        (
            res(1.0, u64::MAX),
            later,
            "allocations[0].resources.ram.size",
        ),
        (res(1.0, GIB), i64::MAX, "expires_at_ms"),
    ] {
        let e = f.call(COMMIT, commit(r, expires)).await.unwrap_err();
        assert!(e.message.contains(field), "{field}: {}", e.message);
    }
    assert!(f.reserved().is_empty(), "nothing was locked");
    f.call(COMMIT, commit(res(1.5, GIB), later)).await.unwrap();
    assert_eq!(f.reserved(), [("a-web".to_string(), 1500, GIB)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bid_requests_with_impossible_numbers_are_refused() {
    let f = provider().await;
    let req = |r: nunet_ensemble::Resources| {
        serde_json::to_value(BidRequest {
            ensemble_id: "e".into(),
            nonce: 1,
            nodes: vec![NodeBidRequest {
                node_id: "n".into(),
                executors: Vec::new(),
                resources: r,
                location: Default::default(),
                peer: None,
                ports: Vec::new(),
                gpu_executors: Vec::new(),
            }],
            exclude: Vec::new(),
        })
        .unwrap()
    };
    let e = f
        .call(BID_REQUEST_DIRECT, req(res(-4.0, GIB)))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("nodes[0].resources.cpu.cores"),
        "{}",
        e.message
    );
    let bid = f
        .call(BID_REQUEST_DIRECT, req(res(1.0, GIB)))
        .await
        .unwrap();
    assert_eq!(bid["node_id"], "n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_must_match_what_was_committed() {
    let f = provider().await;
    f.call(COMMIT, commit(res(1.0, GIB), now_ms() + 60_000))
        .await
        .unwrap();
    // Bigger limits than the accounting holds, or values no file could hold.
    for (r, ports, words) in [
        (
            res(64.0, GIB),
            Vec::new(),
            "allocations[0].resources differ",
        ),
        (
            res(1.0, 64 * GIB),
            Vec::new(),
            "allocations[0].resources differ",
        ),
        (
            res(-4.0, GIB),
            Vec::new(),
            "allocations[0].resources.cpu.cores",
        ),
        (res(1.0, 0), Vec::new(), "allocations[0].resources.ram.size"),
        (
            res(1.0, GIB),
            vec![PortMapping {
                public: 20_000,
                private: 80,
                allocation: "web".into(),
            }],
            "allocations[0].ports differ",
        ),
    ] {
        let e = f.call(ALLOCATE, allocate(&f, r, ports)).await.unwrap_err();
        assert!(e.message.contains(words), "{words}: {}", e.message);
    }
    // Still a commitment of what was committed.
    assert_eq!(f.reserved(), [("a-web".to_string(), 1000, GIB)]);
}

#[test]
fn wasm_memory_is_never_unlimited_nor_above_the_committed_ram() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("images")).unwrap();
    let module = data.path().join("images/m.wasm");
    std::fs::write(&module, b"\0asm").unwrap();
    let rec = |limit: Option<u64>| {
        let a = AllocationRequest {
            name: "calc".into(),
            id: "a-calc".into(),
            kind: AllocationType::Task,
            execution: Execution::Wasm(nunet_ensemble::execution::WasmExecution {
                module: module.to_str().unwrap().into(),
                memory_limit: limit,
                ..Default::default()
            }),
            resources: res(1.0, 64 << 20),
            ports: Vec::new(),
            provision: Vec::new(),
            healthcheck: None,
            keep_on_exit: false,
            volumes: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            credentials: Default::default(),
        };
        let req = AllocateRequest {
            ensemble_id: "e".into(),
            node_id: "n".into(),
            orchestrator: Handle::root_of(&Keypair::from_seed(&[1; 32]).public()),
            allocations: vec![a.clone()],
        };
        record(&req, &a)
    };
    let files = files::LocalFiles::new(data.path(), &[]);
    let mem = |limit| {
        exec::spec_of(&rec(limit), &files)
            .unwrap()
            .resources
            .memory_bytes
    };
    assert_eq!(mem(None), 64 << 20);
    assert_eq!(mem(Some(16 << 20)), 16 << 20);
    assert_eq!(mem(Some(GIB)), 64 << 20);
}

/// An orchestrator that learnt another deployment's ensemble id (it travels in the bid
/// request) can neither allocate that deployment's committed reservations with its own
/// workload nor commit under that ensemble: the first orchestrator owns it on this provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orchestrator_cannot_take_over_a_committed_ensemble() {
    let f = provider().await;
    let s = &f.system;
    let a = s.spawn_child_at("orch-a", s.child_key("orch-a"), &[], &[], Duration::ZERO);
    let b = s.spawn_child_at("orch-b", s.child_key("orch-b"), &[], &[], Duration::ZERO);
    let call = |from: &'static str, be: &'static str, payload: Value| {
        let s = s.clone();
        async move {
            s.invoke(from, s.root(), be, payload, Duration::from_secs(10))
                .await
        }
    };
    let as_from = |h: &Handle| {
        let mut v = allocate(&f, res(1.0, GIB), Vec::new());
        v["orchestrator"] = serde_json::to_value(h).unwrap();
        v
    };
    call("orch-a", COMMIT, commit(res(1.0, GIB), now_ms() + 60_000))
        .await
        .unwrap();
    let e = call("orch-b", ALLOCATE, as_from(&b)).await.unwrap_err();
    assert_eq!(e.kind, nunet_actor::ErrorKind::Denied, "{e:?}");
    assert!(e.message.contains("orchestrated by"), "{}", e.message);
    let e = call("orch-b", COMMIT, commit(res(1.0, GIB), now_ms() + 60_000))
        .await
        .unwrap_err();
    assert!(e.message.contains("orchestrated by"), "{}", e.message);
    // The owner may allocate only what it committed.
    let mut other = as_from(&a);
    other["allocations"][0]["id"] = json!("a-other");
    let e = call("orch-a", ALLOCATE, other).await.unwrap_err();
    assert!(e.message.contains("was not committed"), "{}", e.message);
    assert_eq!(f.reserved(), [("a-web".to_string(), 1000, GIB)]);
}

/// A revert from another orchestrator is refused before anything is touched: the owner's
/// commitment stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_orchestrator_cannot_revert_an_ensemble() {
    let f = provider().await;
    let s = &f.system;
    s.spawn_child_at("orch-a", s.child_key("orch-a"), &[], &[], Duration::ZERO);
    s.spawn_child_at("orch-b", s.child_key("orch-b"), &[], &[], Duration::ZERO);
    s.invoke(
        "orch-a",
        s.root(),
        COMMIT,
        commit(res(1.0, GIB), now_ms() + 60_000),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let revert = serde_json::to_value(RevertRequest::all("e")).unwrap();
    let e = s
        .invoke(
            "orch-b",
            s.root(),
            REVERT,
            revert.clone(),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind, nunet_actor::ErrorKind::Denied, "{e:?}");
    assert_eq!(f.reserved().len(), 1, "the commitment survived");
    s.invoke("orch-a", s.root(), REVERT, revert, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(f.reserved().is_empty());
}

/// While a forced offboard stops the workloads, no new work is taken (it would be left
/// running unaccounted); afterwards (offboarded or failed) the provider takes work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_or_allocate_while_offboarding() {
    use crate::onboarding::Workloads;
    let f = provider().await;
    let stopped = f.provider.clone().stop_all().await;
    assert!(stopped.is_empty(), "{stopped:?}");
    let e = f
        .call(COMMIT, commit(res(1.0, GIB), now_ms() + 60_000))
        .await
        .expect_err("refused while offboarding");
    assert!(e.message.contains("offboarding"), "{e:?}");
    assert!(f.reserved().is_empty());
    let e = f
        .call(ALLOCATE, allocate(&f, res(1.0, GIB), Vec::new()))
        .await
        .expect_err("refused while offboarding");
    assert!(e.message.contains("offboarding"), "{e:?}");
    f.provider.resume();
    f.call(COMMIT, commit(res(1.0, GIB), now_ms() + 60_000))
        .await
        .expect("taken again");
    assert_eq!(f.reserved().len(), 1);
}
