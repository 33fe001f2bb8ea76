#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use super::*;
use crate::gpu::{GpuDetection, GpuSource, GpuVendor};
use crate::hardware::{CpuInfo, DiskInfo, Usage};
use crate::units::GIB;

pub(crate) fn spec(gpus: Vec<GpuInfo>) -> MachineSpec {
    MachineSpec {
        cpu: CpuInfo {
            model: "Test CPU".into(),
            vendor: "GenuineTest".into(),
            architecture: "x86_64".into(),
            physical_cores: Some(4),
            logical_cores: 8,
            base_frequency_mhz: 3000,
        },
        ram_bytes: 23 * GIB + 400 * (1 << 20), // 23.4 GiB
        disk: DiskInfo {
            path: PathBuf::from("/data"),
            mount_point: PathBuf::from("/"),
            filesystem: "ext4".into(),
            kind: "SSD".into(),
            total_bytes: 100 * GIB,
            free_bytes: 40 * GIB,
        },
        gpu: GpuDetection {
            notes: if gpus.is_empty() {
                vec!["NVML not available: fixture".into()]
            } else {
                vec![]
            },
            gpus,
        },
    }
}

pub(crate) fn gpu(index: u32, vram_gib: u64) -> GpuInfo {
    GpuInfo {
        index,
        vendor: GpuVendor::Nvidia,
        model: "NVIDIA A100".into(),
        uuid: Some(format!("GPU-{index}")),
        pci_address: format!("0000:0{index}:00.0"),
        vram_bytes: vram_gib * GIB,
        mig: vec![],
        source: GpuSource::Nvml,
        driver: "nvidia".into(),
        device_nodes: vec![],
    }
}

fn req(cpu: f64, ram: f64, disk: f64) -> OnboardRequest {
    OnboardRequest {
        cpu: Some(cpu),
        ram: Some(ram),
        disk: Some(disk),
        ..Default::default()
    }
}

fn refusals(r: Result<OnboardPlan, OnboardError>) -> Vec<String> {
    match r {
        Err(OnboardError::Refused(v)) => v,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn refusals_name_the_exact_limit() {
    let s = spec(vec![]);
    let r = refusals(plan(&req(2.0, 64.0, 10.0), &s, &HostReserve::default()));
    assert_eq!(
        r,
        vec![
            "ram 64 GiB requested, machine has 23.4 GiB, at most 21.4 GiB can be onboarded (2 GiB reserved for the host)"
        ]
    );
    let r = refusals(plan(&req(16.0, 1.0, 36.0), &s, &HostReserve::default()));
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(
        r[0],
        "cpu 16 cores requested, machine has 8 cores, at most 7 cores can be onboarded (1 core reserved for the host)"
    );
    assert_eq!(
        r[1],
        "disk 36 GiB requested, the filesystem of /data has 40 GiB free, at most 35 GiB can be onboarded (5 GiB reserved for the host)"
    );
    // Exactly at the limit is fine.
    let p = plan(&req(7.0, 21.39, 35.0), &s, &HostReserve::default()).unwrap();
    assert_eq!(p.resources.cpu_millicores, 7000);
    assert!(p.resources.gpus.is_empty());
}

#[test]
fn gpu_requests_map_indexes_to_devices() {
    let s = spec(vec![gpu(0, 40), gpu(1, 80)]);
    let mut r = req(1.0, 1.0, 1.0);
    r.gpus = Some("0:4,1:80".into());
    let p = plan(&r, &s, &HostReserve::default()).unwrap();
    assert_eq!(p.resources.gpus.len(), 2);
    assert_eq!(p.resources.gpus["GPU-1"], 80 * GIB);
    r.gpus = Some("1:81,2:1".into());
    let out = refusals(plan(&r, &s, &HostReserve::default()));
    assert_eq!(
        out,
        vec![
            "gpu 1 (NVIDIA A100) VRAM 81 GiB requested, the device has 80 GiB",
            "gpu 2 requested, this machine has GPU 0, 1 (see `nunet gpu list`)"
        ]
    );
    let none = spec(vec![]);
    r.gpus = Some("0:4".into());
    assert_eq!(
        refusals(plan(&r, &none, &HostReserve::default())),
        vec!["gpu 0 requested, no GPU found (NVML not available: fixture)"]
    );
    r.no_gpu = true;
    assert!(matches!(
        plan(&r, &none, &HostReserve::default()),
        Err(OnboardError::BadRequest(_))
    ));
}

#[test]
fn request_json_accepts_cli_payloads() {
    let r = OnboardRequest::from_json(
        &json!({"cpu": 2, "ram": "4", "disk": 10.5, "gpus": "0:4,1:8", "no_gpu": false}),
    )
    .unwrap();
    assert_eq!(r.cpu, Some(2.0));
    assert_eq!(r.ram, Some(4.0));
    assert_eq!(r.gpus.as_deref(), Some("0:4,1:8"));
    let r = OnboardRequest::from_json(&json!({"C": 1, "R": 2, "D": 3, "no_gpu": true})).unwrap();
    assert_eq!(
        (r.cpu, r.ram, r.disk, r.no_gpu),
        (Some(1.0), Some(2.0), Some(3.0), true)
    );
    assert!(OnboardRequest::from_json(&json!({"cpu": "lots"})).is_err());
    // Sizes with units, as NuNet's CLI takes them (`--ram 512MiB`, `-D 1TB`).
    let r =
        OnboardRequest::from_json(&json!({"cpu": 1, "ram": "512MiB", "disk": "1.5 GiB"})).unwrap();
    assert_eq!((r.ram, r.disk), (Some(0.5), Some(1.5)));
    let r = OnboardRequest::from_json(&json!({"R": "2GiB", "D": "1TB"})).unwrap();
    assert_eq!(r.ram, Some(2.0));
    assert_eq!(r.disk, Some(1e12 / (1u64 << 30) as f64));
    assert!(
        matches!(OnboardRequest::from_json(&json!({"ram": "4 parsecs"})), Err(OnboardError::BadRequest(m)) if m.contains("--ram"))
    );
    let missing = plan(
        &OnboardRequest::from_json(&json!({"cpu": 1})).unwrap(),
        &spec(vec![]),
        &HostReserve::default(),
    );
    assert!(matches!(missing, Err(OnboardError::BadRequest(m)) if m.contains("--ram")));
    assert!(matches!(
        plan(&req(0.0, 1.0, 1.0), &spec(vec![]), &HostReserve::default()),
        Err(OnboardError::BadRequest(_))
    ));
}

struct Fixed(MachineSpec);

impl HardwareSource for Fixed {
    fn spec(&self) -> Result<MachineSpec, HardwareError> {
        Ok(self.0.clone())
    }
    fn usage(&self) -> Result<Usage, HardwareError> {
        Err(HardwareError::Detect("fixture".into()))
    }
}

struct NoExecutor;

impl AllocationStopper for NoExecutor {
    fn stop(&self, _: &str) -> Result<crate::StopOutcome, String> {
        Ok(crate::StopOutcome::NoExecutor)
    }
}

#[test]
fn onboard_status_offboard_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("dms.sqlite");
    let hw: Arc<dyn HardwareSource> = Arc::new(Fixed(spec(vec![gpu(0, 40)])));
    let geo = Geolocation::from_config("Lisbon", "PT", "Europe");
    let open = || {
        ResourceManager::new(
            Accounting::open(nunet_store::Store::open(&db).unwrap()).unwrap(),
            hw.clone(),
            tmp.path().to_path_buf(),
            geo.clone(),
        )
    };
    let mut m = open();
    assert_eq!(m.status()["onboarded"], json!(false));
    let mut r = req(2.0, 4.0, 10.0);
    r.gpus = Some("0:8".into());
    let st = m.onboard(&r, &BenchBudget::quick(), 42).unwrap();
    assert_eq!(st["onboarded"], json!(true));
    assert_eq!(st["onboarded_resources"]["ram"]["size"], json!(4 * GIB));
    assert_eq!(st["free"]["gpus"][0]["vram"], json!(8 * GIB));
    assert!(st["benchmark"]["cpu_single_ops_s"].as_f64().unwrap() > 0.0);
    assert_eq!(st["geolocation"]["city"], json!("Lisbon"));
    assert!(matches!(
        m.plan_onboard(&r),
        Err(OnboardError::Accounting(AccountingError::AlreadyOnboarded))
    ));
    m.accounting_mut()
        .commit(
            "a1",
            Resources {
                cpu_millicores: 500,
                ram_bytes: GIB,
                ..Default::default()
            },
            10_000,
            50,
        )
        .unwrap();
    m.accounting_mut().allocate("a1", 60).unwrap();
    drop(m);
    let mut m = open();
    let st = m.status();
    assert_eq!(st["allocated"]["cpu"]["millicores"], json!(500));
    assert_eq!(st["free"]["ram"]["size"], json!(3 * GIB));
    assert_eq!(st["benchmark"]["taken_at_ms"], json!(42));
    let err = m.offboard(false, &NoExecutor).unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 allocation(s) running (a1); stop them first or offboard with --force"
    );
    let rep = m.offboard(true, &NoExecutor).unwrap();
    assert_eq!(rep.released_without_executor, vec!["a1"]);
    assert!(!m.is_onboarded());
    drop(m);
    assert_eq!(open().status()["onboarded"], json!(false));
}

fn mig_gpu() -> GpuInfo {
    let mut g = gpu(0, 80);
    g.mig = [10u64, 10, 20]
        .iter()
        .zip(0u32..)
        .map(|(gib, index)| crate::gpu::MigInstance {
            index,
            uuid: format!("MIG-{index}"),
            vram_bytes: gib * GIB,
        })
        .collect();
    g
}

#[test]
fn mig_gpus_onboard_by_whole_instances() {
    let s = spec(vec![mig_gpu(), gpu(1, 24)]);
    let mut r = req(1.0, 1.0, 1.0);
    r.gpus = Some("0:25,1:24".into());
    let p = plan(&r, &s, &HostReserve::default()).unwrap();
    // 10 + 10 fit in 25 GiB; the 20 GiB instance would make 40.
    let keys: Vec<&str> = p.resources.gpus.keys().map(String::as_str).collect();
    assert_eq!(keys, ["GPU-1", "MIG-0", "MIG-1"]);
    assert_eq!(p.resources.gpus["MIG-1"], 10 * GIB);
    assert_eq!(
        p.gpus[0].mig.len(),
        2,
        "only the onboarded instances are kept"
    );
    r.gpus = Some("0:5".into());
    match plan(&r, &s, &HostReserve::default()) {
        Err(OnboardError::Refused(why)) => {
            assert_eq!(why.len(), 1);
            assert!(why[0].contains("MIG mode"), "{why:?}");
            assert!(why[0].contains("10 GiB"), "{why:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn onboarded_gpus_become_units_that_a_reservation_takes_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let hw: Arc<dyn HardwareSource> = Arc::new(Fixed(spec(vec![mig_gpu(), gpu(1, 24)])));
    let mut m = ResourceManager::new(
        Accounting::open(nunet_store::Store::open(&tmp.path().join("db")).unwrap()).unwrap(),
        hw,
        tmp.path().to_path_buf(),
        None,
    );
    assert!(m.gpu_units().is_empty(), "nothing onboarded yet");
    let mut r = req(1.0, 1.0, 1.0);
    r.gpus = Some("0:80,1:16".into());
    m.onboard(&r, &BenchBudget::quick(), 1).unwrap();
    let units = m.gpu_units();
    let view: Vec<(&str, u64, Option<&str>, bool)> = units
        .iter()
        .map(|u| {
            (
                u.key.as_str(),
                u.vram_bytes / GIB,
                u.parent.as_deref(),
                u.free,
            )
        })
        .collect();
    assert_eq!(
        view,
        [
            ("MIG-0", 10, Some("GPU-0"), true),
            ("MIG-1", 10, Some("GPU-0"), true),
            ("MIG-2", 20, Some("GPU-0"), true),
            // The onboarded share, not the device's 24 GiB.
            ("GPU-1", 16, None, true),
        ]
    );
    assert_eq!(units[2].model, "NVIDIA A100 MIG 2");
    let take = |key: &str, vram: u64| Resources {
        cpu_millicores: 100,
        gpus: [(key.to_string(), vram)].into(),
        ..Default::default()
    };
    m.accounting_mut()
        .commit("a", take("MIG-2", 20 * GIB), 10_000, 2)
        .unwrap();
    let busy: Vec<String> = m
        .gpu_units()
        .into_iter()
        .filter(|u| !u.free)
        .map(|u| u.key)
        .collect();
    assert_eq!(busy, ["MIG-2"]);
    // The same unit cannot be reserved twice.
    assert!(
        m.accounting_mut()
            .commit("b", take("MIG-2", 20 * GIB), 10_000, 3)
            .is_err()
    );
}
