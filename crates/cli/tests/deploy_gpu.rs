//! GPU ensembles end to end on a 3-node devnet (real daemons, real libp2p, real dockerd),
//! with a recorded GPU inventory instead of hardware (`DMS_TEST_GPU_FIXTURE`): one NVIDIA
//! L4 (NVML-shaped), an Intel Arc and two AMD cards (a sysfs tree), and device nodes the test
//! creates. An AMD ensemble goes through bid → commit → allocate → start and its container
//! sees its own card and nothing else; a second one gets the other card; a third finds none
//! free and the providers say so; an NVIDIA one is declined because this dockerd has no
//! NVIDIA runtime; a shutdown gives the card back.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::Path;
use std::time::{Duration, Instant};

use deploy_support::*;
use serde_json::{Value, json};

const GIB: u64 = 1 << 30;

/// Writes a card the way the kernel lays it out under /sys/class/drm.
fn card(sys: &Path, n: u32, vendor: &str, pci: &str, driver: &str, extra: &[(&str, String)]) {
    let card = sys.join(format!("class/drm/card{n}"));
    let dev = card.join("device");
    std::fs::create_dir_all(dev.join(format!("drm/card{n}"))).unwrap();
    std::fs::create_dir_all(dev.join(format!("drm/renderD{}", 128 + n))).unwrap();
    std::fs::write(dev.join("vendor"), format!("{vendor}\n")).unwrap();
    std::fs::write(dev.join("device"), "0x1234\n").unwrap();
    std::fs::write(dev.join("class"), "0x030000\n").unwrap();
    std::fs::write(
        dev.join("uevent"),
        format!("DRIVER={driver}\nPCI_SLOT_NAME={pci}\n"),
    )
    .unwrap();
    for (k, v) in extra {
        let at = if *k == "lmem_total_bytes" {
            card.join(k)
        } else {
            dev.join(k)
        };
        std::fs::write(at, v).unwrap();
    }
}

fn mknod(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let ok = std::process::Command::new("mknod")
        .arg(p)
        .args(["c", "1", "3"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mknod {} (tests run as root, as CI does)", p.display());
}

/// The fixture: its JSON file.
fn fixture(root: &Path) -> std::path::PathBuf {
    let sys = root.join("sys");
    let dev = root.join("dev");
    card(
        &sys,
        0,
        "0x8086",
        "0000:03:00.0",
        "i915",
        &[
            ("lmem_total_bytes", format!("{}\n", 16 * GIB)),
            ("product_name", "Intel Arc A770\n".into()),
        ],
    );
    for (n, pci) in [(1, "0000:c1:00.0"), (2, "0000:c2:00.0")] {
        card(
            &sys,
            n,
            "0x1002",
            pci,
            "amdgpu",
            &[
                ("mem_info_vram_total", format!("{}\n", 64 * GIB)),
                ("product_name", "AMD Instinct MI210\n".into()),
            ],
        );
    }
    for n in [
        "kfd",
        "dri/card0",
        "dri/renderD128",
        "dri/card1",
        "dri/renderD129",
        "dri/card2",
        "dri/renderD130",
    ] {
        mknod(&dev.join(n));
    }
    let f = root.join("gpus.json");
    let doc = json!({
        "nvml": [{
            "index": 0,
            "uuid": "GPU-5f1c0a7e-0000-4000-8000-00000000l4l4",
            "name": "NVIDIA L4",
            "memory_total": 24 * GIB,
            "pci_bus_id": "00000000:01:00.0",
        }],
        "sysfs_root": sys,
        "dev_root": dev,
    });
    std::fs::write(&f, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    f
}

fn ensemble(dir: &Path, name: &str, gpus: &str, cmd: &str) -> String {
    let yaml = format!(
        "version: V1\n\
         allocations:\n  job:\n    executor: docker\n    type: service\n\
         \x20   resources:\n      cpu: {{cores: 0.1}}\n      ram: {{size: 64MiB}}\n      disk: {{size: 10MiB}}\n\
         \x20     gpus: {gpus}\n\
         \x20   execution:\n      type: docker\n      image: nunet-test/busybox:latest\n\
         \x20     cmd: [sh, -c, \"{cmd}\"]\n\
         nodes:\n  n1:\n    allocations: [job]\n"
    );
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, yaml).unwrap();
    p.display().to_string()
}

fn deploy(dn: &Devnet, file: &str) -> Value {
    let (code, out) = dn.run(1, &["deploy", "-f", file, "-t", "60s", "--json"]);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Deploys `file` (it must reach Running): its id, the GPUs the manifest names for its one
/// allocation, and a guard that removes its containers.
fn deploy_job(dn: &Devnet, file: &str) -> (String, Value, Containers) {
    let d = deploy(dn, file);
    assert_eq!(d["status"], "Running", "{d}");
    let id = d["id"].as_str().unwrap().to_string();
    let gpus = d["manifest"]["allocations"]["n1.job"]["gpus"].clone();
    (id.clone(), gpus, Containers(id))
}

/// Starts a deployment that no provider can take, waits until its events show `reason`
/// from node-2, shuts it down and returns the events.
fn declined(dn: &Devnet, file: &str, reason: &str, known: &[String]) -> String {
    let dir = dn.dir.clone();
    let f = file.to_string();
    let deploy = std::thread::spawn(move || {
        let o = nunet(&dir, Some("node-1"), &["deploy", "-f", &f, "-t", "60s"]);
        (o.status.code().unwrap_or(-1), text(&o))
    });
    let t0 = Instant::now();
    let (id, events) = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no decline {reason:?} seen"
        );
        std::thread::sleep(Duration::from_millis(200));
        let l = dn.json(1, &["get", "deployments", "--json"]);
        let Some(d) = l["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| !known.contains(&d["id"].as_str().unwrap().to_string()))
            .cloned()
        else {
            continue;
        };
        let id = d["id"].as_str().unwrap().to_string();
        let s = dn.json(1, &["deployment", "status", &id, "--json"]);
        let events = s["events"].to_string();
        // The decline, and the round's error that says what the node asked for.
        if events.contains(reason) && events.contains("asks for GPUs") {
            break (id, events);
        }
    };
    assert!(!events.contains("bid from"), "nobody may bid: {events}");
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = deploy.join().unwrap();
    assert_ne!(
        code, 0,
        "a deployment nobody bid on must not succeed: {out}"
    );
    events
}

fn devices_of(id: &str) -> Vec<String> {
    let c = containers_of(id);
    let o = std::process::Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{json .HostConfig.Devices}}",
            c.trim(),
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["PathInContainer"].as_str().unwrap().to_string())
        .collect()
}

fn logs_of(dn: &Devnet, id: &str, want: &str) -> String {
    let t0 = Instant::now();
    loop {
        let (_, out) = dn.run(1, &["deployment", "logs", id]);
        if out.contains(want) || t0.elapsed() > Duration::from_secs(20) {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn gpu_ensembles_get_exactly_their_committed_cards() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = fixture(tmp.path());
    let dn = Devnet::up_with_env(0, &[("DMS_TEST_GPU_FIXTURE", fx.to_str().unwrap())]);

    // `gpu list` sees the fixture: NVML first, then sysfs in PCI order.
    let o = nunet_cmd(&dn.dir, None, Some("node-2"), &["gpu", "list", "--json"])
        .env("DMS_TEST_GPU_FIXTURE", &fx)
        .output()
        .unwrap();
    let list: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let models: Vec<&str> = list["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["model"].as_str().unwrap())
        .collect();
    assert_eq!(
        models,
        [
            "NVIDIA L4",
            "Intel Arc A770",
            "AMD Instinct MI210",
            "AMD Instinct MI210"
        ]
    );

    // `gpu test` says what a job would get, and why not.
    let o = nunet_cmd(&dn.dir, None, Some("node-2"), &["gpu", "test", "--no-run"])
        .env("DMS_TEST_GPU_FIXTURE", &fx)
        .output()
        .unwrap();
    let report = text(&o);
    assert_eq!(o.status.code(), Some(0), "{report}");
    assert!(report.contains("GPU 0 NVIDIA NVIDIA L4"), "{report}");
    assert!(
        report.contains("docker job: none (NVIDIA GPUs cannot be handed to containers: no NVIDIA container runtime"),
        "{report}"
    );
    assert!(
        report.contains(
            "driver amdgpu\n  docker job: gets /dev/kfd, /dev/dri/card1, /dev/dri/renderD129"
        ),
        "{report}"
    );
    assert!(
        report.contains("microVM job: none (microVMs get no GPU here: that needs VFIO"),
        "{report}"
    );

    // node-2 is the only provider: every GPU, all of its VRAM.
    let on = dn.json(
        2,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/onboarding/onboard",
            "--cpu",
            "1",
            "--ram",
            "1",
            "--disk",
            "1",
            "--gpus",
            "0:24,1:16,2:64,3:64",
        ],
    );
    assert_eq!(
        on["onboarded_resources"]["gpus"].as_array().unwrap().len(),
        4,
        "{on}"
    );
    // Onboarding says what a GPU job would get, and why not.
    let units = on["gpu_units"].as_array().unwrap();
    let l4 = units.iter().find(|u| u["model"] == "NVIDIA L4").unwrap();
    assert_eq!(l4["usable_by"], json!([]), "{l4}");
    assert!(
        l4["not_usable_by"]["docker"]
            .as_str()
            .unwrap()
            .contains("no NVIDIA container runtime"),
        "{l4}"
    );
    let mi = units
        .iter()
        .find(|u| u["device"] == "pci:0000:c1:00.0")
        .unwrap();
    assert_eq!(mi["usable_by"], json!(["docker"]), "{mi}");
    assert!(
        mi["not_usable_by"]["firecracker"]
            .as_str()
            .unwrap()
            .contains("VFIO"),
        "{mi}"
    );
    let st = dn.json(
        2,
        &["actor", "cmd", "--json", "/dms/node/onboarding/status"],
    );
    assert_eq!(st["gpu_units"], on["gpu_units"]);

    let amd = ensemble(
        tmp.path(),
        "amd",
        "[{vendor: AMD, vram: 32}]",
        "ls /dev/dri; test -c /dev/kfd && echo kfd; sleep 600",
    );
    let (id_a, gpus_a, _ca) = deploy_job(&dn, &amd);
    assert_eq!(gpus_a, json!(["pci:0000:c1:00.0"]));
    // The bid named the card it offered.
    let events = dn.json(1, &["deployment", "status", &id_a, "--json"])["events"].to_string();
    assert!(
        events.contains("for node n1, offering GPU pci:0000:c1:00.0"),
        "{events}"
    );
    // The container got the card's own nodes and /dev/kfd, nothing else.
    assert_eq!(
        devices_of(&id_a),
        ["/dev/kfd", "/dev/dri/card1", "/dev/dri/renderD129"]
    );
    let out = logs_of(&dn, &id_a, "kfd");
    assert!(out.contains("card1\nrenderD129\nkfd"), "{out}");
    assert!(!out.contains("renderD130"), "{out}");

    // A second AMD job gets the other card, never the same one.
    let (id_b, gpus_b, _cb) = deploy_job(&dn, &amd);
    assert_eq!(gpus_b, json!(["pci:0000:c2:00.0"]));
    assert_eq!(
        devices_of(&id_b),
        ["/dev/kfd", "/dev/dri/card2", "/dev/dri/renderD130"]
    );

    // A third finds no free AMD card: the provider declines with the GPU reason.
    let known = vec![id_a.clone(), id_b.clone()];
    let events = declined(&dn, &amd, "no free GPU matches", &known);
    assert!(
        events.contains("declined to bid: n1: no free GPU matches"),
        "{events}"
    );
    assert!(
        events.contains("(node n1 asks for GPUs: vendor = AMD/ATI, vram ≥ 32GiB)"),
        "{events}"
    );

    // NVIDIA: the L4 matches, but this dockerd has no NVIDIA container runtime.
    let nvidia = ensemble(
        tmp.path(),
        "nvidia",
        "[{vendor: NVIDIA, vram: 16}]",
        "nvidia-smi",
    );
    let mut known = known;
    known.extend(
        dn.json(1, &["get", "deployments", "--json"])["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string()),
    );
    declined(
        &dn,
        &nvidia,
        "GPUs match but the executor cannot use them here",
        &known,
    );

    // Intel: the Arc's own nodes.
    let intel = ensemble(
        tmp.path(),
        "intel",
        "[{vendor: Intel, model: arc}]",
        "sleep 600",
    );
    let (id_i, gpus_i, _ci) = deploy_job(&dn, &intel);
    assert_eq!(gpus_i, json!(["pci:0000:03:00.0"]));
    assert_eq!(devices_of(&id_i), ["/dev/dri/card0", "/dev/dri/renderD128"]);

    // Shutting down the first gives its card back: the next AMD job gets card1 again.
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id_a]);
    assert_eq!(code, 0, "{out}");
    let free = dn.resources(2, "free");
    let free_gpus: Vec<&str> = free["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["vram"].as_u64() > Some(0))
        .map(|g| g["device"].as_str().unwrap())
        .collect();
    assert!(free_gpus.contains(&"pci:0000:c1:00.0"), "{free}");
    assert!(!free_gpus.contains(&"pci:0000:c2:00.0"), "{free}");
    let (_, gpus_c, _cc) = deploy_job(&dn, &amd);
    assert_eq!(gpus_c, json!(["pci:0000:c1:00.0"]));
}
