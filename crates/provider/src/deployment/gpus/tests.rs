//! GPU bids, commitments, allocations and releases on a provider whose inventory is a
//! recorded NVML fixture (1×, 4× and MIG-partitioned NVIDIA), through the actor system as an
//! orchestrator's messages arrive, over a real SQLite accounting. The executor is a stand-in
//! that only says which vendors it can hand over; dockerd's side is tested in
//! `nunet-executor` (`docker::gpu`) and end to end in `cli/tests/deploy_gpu.rs`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem};
use nunet_ensemble::execution::DockerExecution;
use nunet_ensemble::resources::Gpu;
use nunet_ensemble::spec::AllocationType;
use nunet_ensemble::{Execution, Resources};
use nunet_executor::{
    ExecutionInfo, ExecutionSpec, Executor, ExecutorError, ExecutorKind, ExecutorStatus,
    ExitStatus, GpuSupport, GpuVendor, LogOptions, LogStream,
};
use nunet_protocol::names::{ALLOCATE, BID_REQUEST_DIRECT, COMMIT, REVERT};
use nunet_protocol::{
    AllocateRequest, Allocated, AllocationRequest, BidReply, BidRequest, CommitAllocation,
    CommitRequest, DeclineReason, NodeBidRequest, RevertRequest,
};
use nunet_resources::benchmark::BenchBudget;
use nunet_resources::gpu::{NvmlDevice, detect_gpus};
use nunet_resources::hardware::{
    GpuFixture, HardwareError, HardwareSource, LocalHardware, MachineSpec, Usage,
};
use nunet_resources::{Accounting, OnboardRequest, ResourceManager, Store};
use serde_json::Value;

use crate::deployment::Provider;
use crate::onboarding::{SharedManager, now_ms};

const GIB: u64 = 1 << 30;

/// The local machine with a fixture's GPUs.
struct WithGpus {
    local: LocalHardware,
    nvml: Vec<NvmlDevice>,
}

impl HardwareSource for WithGpus {
    fn spec(&self) -> Result<MachineSpec, HardwareError> {
        let mut s = self.local.spec()?;
        let fixture = GpuFixture {
            nvml: Some(self.nvml.clone()),
            ..Default::default()
        };
        s.gpu = detect_gpus(
            &fixture,
            std::path::Path::new("/nonexistent"),
            std::path::Path::new("/dev"),
        );
        Ok(s)
    }
    fn usage(&self) -> Result<Usage, HardwareError> {
        self.local.usage()
    }
}

/// An executor that runs nothing and hands over the GPU vendors it is told to.
struct Stub(GpuSupport);

#[async_trait::async_trait]
impl Executor for Stub {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Docker
    }
    fn status(&self) -> ExecutorStatus {
        ExecutorStatus {
            kind: ExecutorKind::Docker,
            available: true,
            detail: "stand-in".into(),
        }
    }
    fn gpu_support(&self) -> GpuSupport {
        self.0.clone()
    }
    async fn prepare(&self, _: &ExecutionSpec) -> nunet_executor::Result<()> {
        Err(ExecutorError::Runtime("stand-in".into()))
    }
    async fn start(&self, _: &ExecutionSpec) -> nunet_executor::Result<ExecutionInfo> {
        Err(ExecutorError::Runtime("stand-in".into()))
    }
    async fn inspect(&self, id: &str) -> nunet_executor::Result<ExecutionInfo> {
        Err(ExecutorError::NotFound(id.into()))
    }
    async fn wait(&self, id: &str) -> nunet_executor::Result<ExitStatus> {
        Err(ExecutorError::NotFound(id.into()))
    }
    async fn logs(&self, id: &str, _: LogOptions) -> nunet_executor::Result<LogStream> {
        Err(ExecutorError::NotFound(id.into()))
    }
    async fn stop(&self, _: &str, _: Duration) -> nunet_executor::Result<()> {
        Ok(())
    }
    async fn remove(&self, _: &str) -> nunet_executor::Result<()> {
        Ok(())
    }
    async fn list(&self) -> nunet_executor::Result<Vec<ExecutionInfo>> {
        Ok(Vec::new())
    }
}

fn nv(index: u32, name: &str, gib: u64, mig: &[u64]) -> NvmlDevice {
    NvmlDevice {
        index,
        uuid: format!("GPU-{index}"),
        name: name.into(),
        memory_total: gib * GIB,
        pci_bus_id: format!("00000000:{:02x}:00.0", index + 1),
        mig: mig
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("MIG-{index}-{i}"), g * GIB))
            .collect(),
        driver_version: None,
    }
}

struct Fixture {
    system: ActorSystem,
    resources: SharedManager,
    _provider: Arc<Provider>,
    dir: tempfile::TempDir,
    nonce: Mutex<u64>,
}

/// A provider onboarded with `gpus` (`--gpus`) of the `nvml` inventory, whose Docker
/// executor hands over `vendors`.
async fn provider(nvml: Vec<NvmlDevice>, gpus: &str, vendors: Vec<GpuVendor>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let resources = manager(dir.path(), nvml);
    {
        let mut g = resources.lock().unwrap();
        let req = OnboardRequest {
            cpu: Some(1.0),
            ram: Some(1.0),
            disk: Some(1.0),
            gpus: Some(gpus.into()),
            ..Default::default()
        };
        g.onboard(&req, &BenchBudget::quick(), now_ms()).unwrap();
    }
    let stub: Arc<dyn Executor> = Arc::new(Stub(GpuSupport {
        vendors,
        notes: vec!["no NVIDIA container runtime (stand-in)".into()],
    }));
    let executors = BTreeMap::from([("docker".to_string(), stub)]);
    let (system, p) =
        crate::deployment::tests::build(dir.path(), resources.clone(), executors, 23).await;
    Fixture {
        system,
        resources,
        _provider: p,
        dir,
        nonce: Mutex::new(0),
    }
}

fn manager(dir: &std::path::Path, nvml: Vec<NvmlDevice>) -> SharedManager {
    let acct = Accounting::open(Store::open(&dir.join("dms.sqlite")).unwrap()).unwrap();
    let hw = Arc::new(WithGpus {
        local: LocalHardware::new(dir),
        nvml,
    });
    Arc::new(Mutex::new(ResourceManager::new(acct, hw, dir.into(), None)))
}

fn gpu(vendor: &str, model: Option<&str>, vram_gib: u64) -> Gpu {
    Gpu {
        vendor: Some(vendor.into()),
        model: model.map(str::to_string),
        vram: Some(vram_gib * GIB),
    }
}

fn res(gpus: Vec<Gpu>) -> Resources {
    let mut r = Resources::default();
    r.cpu.cores = 0.1;
    r.ram.size = 1 << 20;
    r.disk.size = 1 << 20;
    r.gpus = gpus;
    r
}

impl Fixture {
    async fn call(&self, be: &str, payload: Value) -> Result<Value, ActorError> {
        let s = &self.system;
        s.invoke("root", s.root(), be, payload, Duration::from_secs(10))
            .await
    }

    async fn bid(&self, ensemble: &str, r: Resources) -> BidReply {
        let nonce = {
            let mut n = self.nonce.lock().unwrap();
            *n += 1;
            *n
        };
        let req = BidRequest {
            ensemble_id: ensemble.into(),
            nonce,
            nodes: vec![NodeBidRequest {
                node_id: "n".into(),
                executors: vec!["docker".into()],
                resources: r,
                location: Default::default(),
                peer: None,
                ports: Vec::new(),
                gpu_executors: vec!["docker".into()],
            }],
            exclude: Vec::new(),
        };
        let v = self
            .call(BID_REQUEST_DIRECT, serde_json::to_value(req).unwrap())
            .await
            .unwrap();
        BidReply::from_value(v).unwrap()
    }

    async fn commit(
        &self,
        ensemble: &str,
        allocs: &[(&str, Resources)],
    ) -> Result<Value, ActorError> {
        let req = CommitRequest {
            ensemble_id: ensemble.into(),
            node_id: "n".into(),
            allocations: allocs
                .iter()
                .map(|(name, r)| CommitAllocation {
                    name: name.to_string(),
                    id: format!("{ensemble}-{name}"),
                    resources: r.clone(),
                    ports: Vec::new(),
                })
                .collect(),
            expires_at_ms: now_ms() + 60_000,
        };
        self.call(COMMIT, serde_json::to_value(req).unwrap()).await
    }

    /// The allocate request of `allocs` (docker tasks) as committed by [`Fixture::commit`].
    fn allocate_req(&self, ensemble: &str, allocs: &[(&str, Resources)]) -> Value {
        let req = AllocateRequest {
            ensemble_id: ensemble.into(),
            node_id: "n".into(),
            orchestrator: self.system.root(),
            allocations: allocs
                .iter()
                .map(|(name, r)| AllocationRequest {
                    name: name.to_string(),
                    id: format!("{ensemble}-{name}"),
                    kind: AllocationType::Task,
                    execution: Execution::Docker(DockerExecution {
                        image: "cuda".into(),
                        ..Default::default()
                    }),
                    resources: r.clone(),
                    ports: Vec::new(),
                    provision: Vec::new(),
                    healthcheck: None,
                    keep_on_exit: false,
                    volumes: Vec::new(),
                    inputs: Vec::new(),
                    outputs: Vec::new(),
                    credentials: Default::default(),
                })
                .collect(),
        };
        serde_json::to_value(req).unwrap()
    }

    async fn allocate(&self, ensemble: &str, allocs: &[(&str, Resources)]) -> Allocated {
        let v = self
            .call(ALLOCATE, self.allocate_req(ensemble, allocs))
            .await
            .unwrap();
        serde_json::from_value(v).unwrap()
    }

    async fn revert(&self, ensemble: &str) {
        let req = RevertRequest {
            ensemble_id: ensemble.into(),
            allocations: Vec::new(),
        };
        self.call(REVERT, serde_json::to_value(req).unwrap())
            .await
            .unwrap();
    }

    /// Keys of the GPU units nothing holds.
    fn free(&self) -> Vec<String> {
        let g = self.resources.lock().unwrap();
        g.accounting().check_invariants().unwrap();
        g.gpu_units()
            .into_iter()
            .filter(|u| u.free)
            .map(|u| u.key)
            .collect()
    }
}

fn offered(b: &BidReply) -> Vec<String> {
    match b {
        BidReply::Bid(b) => b.gpus.iter().map(|g| g.device.clone()).collect(),
        BidReply::Decline(d) => panic!("declined: {}", d.summary()),
    }
}

fn declined(b: &BidReply) -> DeclineReason {
    match b {
        BidReply::Decline(d) => d.nodes["n"],
        BidReply::Bid(b) => panic!("bid {:?}", b.gpus),
    }
}

fn four() -> Vec<NvmlDevice> {
    vec![
        nv(0, "NVIDIA H100 80GB HBM3", 80, &[]),
        nv(1, "NVIDIA A100-SXM4-40GB", 40, &[]),
        nv(2, "NVIDIA H100 80GB HBM3", 80, &[]),
        nv(3, "NVIDIA A100-SXM4-40GB", 40, &[]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_gpus_bid_commit_allocate_and_release_by_uuid() {
    let f = provider(four(), "0:80,1:40,2:80,3:40", vec![GpuVendor::Nvidia]).await;
    // Smallest fit first: the 30 GiB request gets an A100, the H100 pattern an H100.
    let want = res(vec![
        gpu("NVIDIA", None, 30),
        gpu("NVIDIA", Some("h100"), 70),
    ]);
    let b = f.bid("e1", want.clone()).await;
    assert_eq!(offered(&b), ["GPU-1", "GPU-0"]);
    if let BidReply::Bid(b) = &b {
        assert_eq!(b.free.gpus.len(), 4, "every free GPU is in the offer");
    }
    f.commit("e1", &[("train", want.clone())]).await.unwrap();
    assert_eq!(f.free(), ["GPU-2", "GPU-3"]);
    let a = f.allocate("e1", &[("train", want.clone())]).await;
    assert_eq!(a.gpus["train"], ["GPU-0", "GPU-1"]);
    // What is left cannot hold a second copy of the H100 request plus two more GPUs; the
    // refusal names the rule nothing met.
    let three = res(vec![
        gpu("NVIDIA", Some("H100"), 70),
        gpu("NVIDIA", None, 40),
        gpu("NVIDIA", None, 40),
    ]);
    assert_eq!(
        declined(&f.bid("e2", three.clone()).await),
        DeclineReason::Gpu
    );
    let e = f.commit("e2", &[("more", three)]).await.unwrap_err();
    assert!(
        e.message
            .contains("no free GPU for gpus[2]: vendor = NVIDIA, vram ≥ 40GiB"),
        "{}",
        e.message
    );
    assert!(e.message.contains("2 free here"), "{}", e.message);
    assert_eq!(
        f.free(),
        ["GPU-2", "GPU-3"],
        "a refused commit holds nothing"
    );
    // More VRAM than any device has: declined with the GPU reason.
    assert_eq!(
        declined(&f.bid("e3", res(vec![gpu("NVIDIA", None, 96)])).await),
        DeclineReason::Gpu
    );
    f.revert("e1").await;
    assert_eq!(f.free(), ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gpu_goes_to_one_job_and_needs_the_vendor_runtime() {
    let f = provider(
        vec![nv(0, "NVIDIA L4", 24, &[])],
        "0:24",
        vec![GpuVendor::Nvidia],
    )
    .await;
    let one = res(vec![gpu("NVIDIA", None, 8)]);
    f.commit("a", &[("job", one.clone())]).await.unwrap();
    // Plenty of VRAM is left on the card, but a whole GPU goes to one allocation.
    assert_eq!(declined(&f.bid("b", one.clone()).await), DeclineReason::Gpu);
    assert!(f.commit("b", &[("job", one.clone())]).await.is_err());
    f.revert("a").await;
    assert_eq!(offered(&f.bid("b", one.clone()).await), ["GPU-0"]);
    // A provider whose Docker has no NVIDIA runtime never bids for NVIDIA jobs, and an
    // allocation of a committed NVIDIA GPU there is refused with the reason.
    let g = provider(
        vec![nv(0, "NVIDIA L4", 24, &[])],
        "0:24",
        vec![GpuVendor::Amd],
    )
    .await;
    assert_eq!(
        declined(&g.bid("c", one.clone()).await),
        DeclineReason::GpuRuntime
    );
    g.commit("c", &[("job", one.clone())]).await.unwrap();
    let e = g
        .call(ALLOCATE, g.allocate_req("c", &[("job", one)]))
        .await
        .unwrap_err();
    assert!(
        e.message.contains("no NVIDIA container runtime"),
        "{}",
        e.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mig_instances_are_units_of_their_own() {
    // One A100 in MIG mode: 10, 10 and 20 GiB instances.
    let f = provider(
        vec![nv(0, "NVIDIA A100-SXM4-40GB", 40, &[10, 10, 20])],
        "0:40",
        vec![GpuVendor::Nvidia],
    )
    .await;
    let small = res(vec![gpu("NVIDIA", Some("A100"), 8)]);
    let mut got = Vec::new();
    for e in ["m1", "m2", "m3"] {
        f.commit(e, &[("job", small.clone())]).await.unwrap();
        got.extend(f.allocate(e, &[("job", small.clone())]).await.gpus["job"].clone());
    }
    // Smallest first; each job its own instance; the 20 GiB one last.
    assert_eq!(got, ["MIG-0-0", "MIG-0-1", "MIG-0-2"]);
    assert!(f.free().is_empty());
    assert_eq!(
        declined(&f.bid("m4", small.clone()).await),
        DeclineReason::Gpu
    );
    f.revert("m2").await;
    assert_eq!(f.free(), ["MIG-0-1"]);
    // A 16 GiB request does not fit the freed 10 GiB instance.
    assert_eq!(
        declined(&f.bid("m5", res(vec![gpu("NVIDIA", None, 16)])).await),
        DeclineReason::Gpu
    );
}

/// A provider that crashes with a GPU committed (never allocated) finds the commitment
/// lapsed when it starts again and releases it once: the GPU is free, the accounting
/// holds, and nothing is released twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_a_gpu_committed_releases_it_exactly_once() {
    let f = provider(four(), "0:80,1:40", vec![GpuVendor::Nvidia]).await;
    let one = res(vec![gpu("NVIDIA", None, 30)]);
    let req = CommitRequest {
        ensemble_id: "x".into(),
        node_id: "n".into(),
        allocations: vec![CommitAllocation {
            name: "job".into(),
            id: "x-job".into(),
            resources: one,
            ports: Vec::new(),
        }],
        expires_at_ms: now_ms() + 300,
    };
    f.call(COMMIT, serde_json::to_value(req).unwrap())
        .await
        .unwrap();
    assert_eq!(f.free(), ["GPU-0"]);
    let dir = f.dir.path().to_path_buf();
    // The crash: nothing reverts, the process state is gone; the database stays.
    let Fixture { dir: keep, .. } = f;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let config = nunet_config::Config::defaults(&dir);
    let store = Store::open(&dir.join("dms.sqlite")).unwrap();
    let m = crate::onboarding::manager(&config, store).unwrap();
    let g = m.lock().unwrap();
    g.accounting().check_invariants().unwrap();
    let free: Vec<String> = g
        .gpu_units()
        .into_iter()
        .filter(|u| u.free)
        .map(|u| u.key)
        .collect();
    assert_eq!(free, ["GPU-0", "GPU-1"]);
    assert_eq!(g.accounting().reservations().count(), 0);
    drop(g);
    let again = m
        .lock()
        .unwrap()
        .accounting_mut()
        .reconcile(None, now_ms())
        .unwrap();
    assert!(again.is_empty(), "released a second time: {again:?}");
    drop(keep);
}

/// A node's allocations get their GPUs matched together at commit, as in the bid: taken
/// one at a time, the first (any 16 GiB) would take the L4 the second needs by model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_matches_all_of_its_allocations_gpus_together() {
    let f = provider(
        vec![
            nv(0, "NVIDIA L4", 24, &[]),
            nv(1, "NVIDIA A100-SXM4-80GB", 80, &[]),
        ],
        "0:24,1:80",
        vec![GpuVendor::Nvidia],
    )
    .await;
    let any = res(vec![gpu("NVIDIA", None, 16)]);
    let l4 = res(vec![gpu("NVIDIA", Some("L4"), 16)]);
    let both = [("any", any), ("l4", l4)];
    f.commit("j", &both).await.unwrap();
    let a = f.allocate("j", &both).await;
    assert_eq!(a.gpus["any"], ["GPU-1"]);
    assert_eq!(a.gpus["l4"], ["GPU-0"]);
}
