#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;

struct Fixture(Result<Vec<NvmlDevice>, String>);

impl NvmlSource for Fixture {
    fn devices(&self) -> Result<Vec<NvmlDevice>, String> {
        self.0.clone()
    }
}

/// Writes a card the way the kernel lays it out under /sys/class/drm.
fn card(
    root: &Path,
    n: u32,
    vendor: &str,
    device: &str,
    pci: &str,
    driver: &str,
    extra: &[(&str, &str)],
) {
    let dev = root.join(format!("class/drm/card{n}/device"));
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("vendor"), format!("{vendor}\n")).unwrap();
    std::fs::write(dev.join("device"), format!("{device}\n")).unwrap();
    std::fs::write(dev.join("class"), "0x030000\n").unwrap();
    std::fs::write(
        dev.join("uevent"),
        format!("DRIVER={driver}\nPCI_CLASS=30000\nPCI_SLOT_NAME={pci}\n"),
    )
    .unwrap();
    for (k, v) in extra {
        std::fs::write(dev.join(k), v).unwrap();
    }
    // A connector and a render node next to it must be ignored.
    std::fs::create_dir_all(root.join(format!("class/drm/card{n}-DP-1"))).unwrap();
    std::fs::create_dir_all(root.join(format!("class/drm/renderD{}", 128 + n))).unwrap();
}

fn h100(index: u32, pci: &str, mig: Vec<(String, u64)>) -> NvmlDevice {
    NvmlDevice {
        index,
        uuid: format!("GPU-{index}a0b1c2d-0000-1111-2222-333344445555"),
        name: "NVIDIA H100 80GB HBM3".into(),
        memory_total: 85_520_809_984,
        pci_bus_id: pci.into(),
        mig,
        driver_version: Some("550.54.15".into()),
    }
}

#[test]
fn nvml_devices_come_first_and_are_not_listed_twice_from_sysfs() {
    let tmp = tempfile::tempdir().unwrap();
    card(
        tmp.path(),
        0,
        "0x10de",
        "0x2330",
        "0000:1b:00.0",
        "nvidia",
        &[],
    );
    card(
        tmp.path(),
        1,
        "0x1002",
        "0x73bf",
        "0000:03:00.0",
        "amdgpu",
        &[
            ("mem_info_vram_total", "17163091968\n"),
            ("product_name", "Radeon RX 6900 XT\n"),
        ],
    );
    let det = detect_gpus(
        &Fixture(Ok(vec![h100(0, "00000000:1B:00.0", vec![])])),
        tmp.path(),
        Path::new("/dev"),
    );
    assert!(det.notes.is_empty(), "{:?}", det.notes);
    assert_eq!(det.gpus.len(), 2, "{det:?}");
    let nv = &det.gpus[0];
    assert_eq!(
        (nv.index, nv.vendor, nv.source),
        (0, GpuVendor::Nvidia, GpuSource::Nvml)
    );
    assert_eq!(nv.pci_address, "0000:1b:00.0");
    assert_eq!(nv.vram_bytes, 85_520_809_984);
    assert!(nv.device_key().starts_with("GPU-0"));
    let amd = &det.gpus[1];
    assert_eq!((amd.index, amd.vendor), (1, GpuVendor::Amd));
    assert_eq!(amd.model, "Radeon RX 6900 XT");
    assert_eq!(amd.vram_bytes, 17_163_091_968);
    assert_eq!(amd.device_key(), "pci:0000:03:00.0");
    assert_eq!(
        serde_json::to_value(amd).unwrap()["vendor"],
        serde_json::json!("AMD/ATI")
    );
}

#[test]
fn mig_instances_are_reported_per_parent() {
    let det = detect_gpus(
        &Fixture(Ok(vec![h100(
            0,
            "00000000:01:00.0",
            vec![("MIG-aaa".into(), 10 << 30), ("MIG-bbb".into(), 20 << 30)],
        )])),
        Path::new("/nonexistent"),
        Path::new("/dev"),
    );
    let g = &det.gpus[0];
    assert_eq!(g.mig.len(), 2);
    assert_eq!(g.mig[1].index, 1);
    assert_eq!(g.mig[1].uuid, "MIG-bbb");
    assert_eq!(g.mig[1].vram_bytes, 20 << 30);
}

#[test]
fn missing_nvml_with_an_nvidia_card_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    card(
        tmp.path(),
        0,
        "0x10de",
        "0x2684",
        "0000:01:00.0",
        "nouveau",
        &[],
    );
    card(
        tmp.path(),
        1,
        "0x8086",
        "0x4680",
        "0000:00:02.0",
        "i915",
        &[],
    );
    let det = detect_gpus(
        &Fixture(Err(
            "NVML not available: libnvidia-ml.so.1: cannot open".into()
        )),
        tmp.path(),
        Path::new("/dev"),
    );
    assert_eq!(det.gpus.len(), 2);
    // sysfs order is PCI order: the Intel iGPU at 00:02.0 first.
    assert_eq!(det.gpus[0].vendor, GpuVendor::Intel);
    assert_eq!(det.gpus[0].model, "8086:4680 (integrated)");
    assert_eq!(det.gpus[1].vendor, GpuVendor::Nvidia);
    assert_eq!(det.gpus[1].vram_bytes, 0);
    assert_eq!(det.notes.len(), 2, "{:?}", det.notes);
    assert!(det.notes[0].contains("NVML not available"));
    assert!(det.notes[1].contains("0000:01:00.0"));
}

#[test]
fn non_display_devices_and_empty_trees_give_no_gpu_with_reason() {
    let tmp = tempfile::tempdir().unwrap();
    card(
        tmp.path(),
        0,
        "0x1af4",
        "0x1050",
        "0000:00:05.0",
        "virtio-pci",
        &[],
    );
    std::fs::write(
        tmp.path().join("class/drm/card0/device/class"),
        "0x020000\n",
    )
    .unwrap();
    let det = detect_gpus(
        &Fixture(Err("NVML not available: no library".into())),
        tmp.path(),
        Path::new("/dev"),
    );
    // virtio-gpu is a display device with an unknown vendor… but class 0x02 is a NIC: skipped.
    assert!(det.gpus.is_empty(), "{det:?}");
    assert_eq!(
        det.none_found_message(),
        "no GPU found (NVML not available: no library)"
    );
    let det = detect_gpus(
        &Fixture(Ok(vec![])),
        Path::new("/nonexistent"),
        Path::new("/dev"),
    );
    assert_eq!(det.none_found_message(), "no GPU found");
}

#[test]
fn pci_addresses_normalise() {
    assert_eq!(normalize_pci("00000000:1B:00.0"), "0000:1b:00.0");
    assert_eq!(normalize_pci("0000:03:00.0"), "0000:03:00.0");
    assert_eq!(normalize_pci("garbage"), "garbage");
}

#[test]
fn gpu_spec_parses_and_refuses() {
    let g = parse_gpu_spec("0:4,1:8").unwrap();
    assert_eq!(
        g,
        vec![
            GpuRequest {
                index: 0,
                vram_gib: 4.0
            },
            GpuRequest {
                index: 1,
                vram_gib: 8.0
            }
        ]
    );
    assert_eq!(parse_gpu_spec(" 2 : 1.5 ,").unwrap()[0].vram_gib, 1.5);
    assert_eq!(parse_gpu_spec("0:4,0:2"), Err(GpuSpecError::Duplicate(0)));
    assert!(matches!(parse_gpu_spec("0:0"), Err(GpuSpecError::Zero(_))));
    for bad in ["", "0", "a:4", "0:x", "-1:4", "0:-4", "0:inf", "0:NaN", ","] {
        assert!(
            matches!(parse_gpu_spec(bad), Err(GpuSpecError::Syntax(_))),
            "{bad:?}"
        );
    }
}

/// On a machine with an NVIDIA GPU and its driver (NUNET_EXPECT_NVIDIA_GPU=1), the real
/// NVML path must find it with a UUID and memory.
#[test]
fn real_detection_on_this_machine() {
    let det = detect_gpus(&SystemNvml, Path::new("/sys"), Path::new("/dev"));
    if std::env::var_os("NUNET_EXPECT_NVIDIA_GPU").is_some() {
        let nv: Vec<_> = det
            .gpus
            .iter()
            .filter(|g| g.source == GpuSource::Nvml)
            .collect();
        assert!(!nv.is_empty(), "expected an NVIDIA GPU: {det:?}");
        for g in nv {
            assert!(
                g.uuid.as_deref().is_some_and(|u| u.starts_with("GPU-")),
                "{g:?}"
            );
            assert!(g.vram_bytes > 1 << 30, "{g:?}");
        }
    } else if det.gpus.is_empty() {
        assert!(det.none_found_message().starts_with("no GPU found"));
    }
}

#[test]
fn amd_and_intel_cards_name_their_own_device_nodes_only() {
    let tmp = tempfile::tempdir().unwrap();
    card(
        tmp.path(),
        1,
        "0x1002",
        "0x740f",
        "0000:c1:00.0",
        "amdgpu",
        &[("mem_info_vram_total", "68702699520\n")],
    );
    card(
        tmp.path(),
        2,
        "0x8086",
        "0x56a0",
        "0000:03:00.0",
        "i915",
        &[],
    );
    for (n, render) in [(1, 129), (2, 130)] {
        let drm = tmp.path().join(format!("class/drm/card{n}/device/drm"));
        std::fs::create_dir_all(drm.join(format!("card{n}"))).unwrap();
        std::fs::create_dir_all(drm.join(format!("renderD{render}"))).unwrap();
        std::fs::create_dir_all(drm.join(format!("card{n}-DP-1"))).unwrap();
    }
    let det = detect_gpus(
        &Fixture(Err("NVML not available: fixture".into())),
        tmp.path(),
        Path::new("/fake/dev"),
    );
    let nodes = |i: usize| -> Vec<(String, String)> {
        det.gpus[i]
            .device_nodes
            .iter()
            .map(|d| (d.host.clone(), d.container.clone()))
            .collect()
    };
    let pair = |h: &str, c: &str| (h.to_string(), c.to_string());
    // PCI order: the Intel card at 03:00.0 first.
    assert_eq!(det.gpus[0].vendor, GpuVendor::Intel);
    assert_eq!(
        nodes(0),
        [
            pair("/fake/dev/dri/card2", "/dev/dri/card2"),
            pair("/fake/dev/dri/renderD130", "/dev/dri/renderD130"),
        ]
    );
    assert_eq!(det.gpus[1].vendor, GpuVendor::Amd);
    assert_eq!(
        nodes(1),
        [
            pair("/fake/dev/kfd", "/dev/kfd"),
            pair("/fake/dev/dri/card1", "/dev/dri/card1"),
            pair("/fake/dev/dri/renderD129", "/dev/dri/renderD129"),
        ]
    );
    // The detection round-trips through JSON (it is kept in the onboarding record).
    let back: GpuDetection = serde_json::from_value(serde_json::to_value(&det).unwrap()).unwrap();
    assert_eq!(back, det);
}
