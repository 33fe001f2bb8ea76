//! GPUs for containers: which vendors this dockerd can hand over, and the part of a
//! container's create request that gives it exactly its committed GPUs and nothing else.
//!
//! * NVIDIA: a device request for the `nvidia` driver naming the UUIDs, and
//!   `NVIDIA_VISIBLE_DEVICES` set to the same UUIDs. Every other container gets
//!   `NVIDIA_VISIBLE_DEVICES=void`: on a host whose default runtime is NVIDIA's, a CUDA image
//!   (which sets `NVIDIA_VISIBLE_DEVICES=all`) would otherwise see every GPU. The value from
//!   the deployer's environment is replaced, never kept.
//! * AMD and Intel: the device nodes of the committed cards only (`/dev/kfd` and the card's
//!   `/dev/dri/cardN` and `renderDN`), never the whole `/dev/dri`, and the nodes' groups
//!   (numeric, so any image works) so a non-root user may open them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bollard::Docker;
use bollard::models::{DeviceMapping, DeviceRequest, HostConfig};

use crate::{ExecutorError, GpuSupport, GpuVendor, Resources, Result};

/// The environment variable the NVIDIA container runtime reads.
pub(crate) const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// dockerd registers its `nvidia` device driver when this hook is on its `PATH`.
const NVIDIA_HOOK: &str = "nvidia-container-runtime-hook";

/// What this dockerd can hand over: AMD and Intel GPUs through device nodes always; NVIDIA
/// GPUs only with the NVIDIA container runtime (an `nvidia` runtime in `docker info`, or
/// the hook that makes dockerd register its `nvidia` device driver).
pub(crate) async fn support(client: &Docker) -> GpuSupport {
    let runtimes: Vec<String> = match client.info().await {
        Ok(info) => info.runtimes.unwrap_or_default().into_keys().collect(),
        Err(e) => {
            return GpuSupport {
                vendors: vec![GpuVendor::Amd, GpuVendor::Intel],
                notes: vec![format!(
                    "NVIDIA GPUs: `docker info` failed ({e}), so the NVIDIA container runtime could not be looked for"
                )],
            };
        }
    };
    let hook = on_path(NVIDIA_HOOK);
    support_from(&runtimes, hook.as_deref())
}

/// [`support`] from what was found: dockerd's runtimes, and where the hook is.
pub(crate) fn support_from(runtimes: &[String], hook: Option<&Path>) -> GpuSupport {
    let mut s = GpuSupport {
        vendors: vec![GpuVendor::Amd, GpuVendor::Intel],
        notes: Vec::new(),
    };
    if runtimes.iter().any(|r| r == "nvidia") || hook.is_some() {
        s.vendors.insert(0, GpuVendor::Nvidia);
    } else {
        s.notes.push(format!(
            "NVIDIA GPUs cannot be handed to containers: no NVIDIA container runtime (dockerd \
             lists no `nvidia` runtime and {NVIDIA_HOOK} is not on PATH; install \
             nvidia-container-toolkit and restart dockerd)"
        ));
    }
    s
}

fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Adds the spec's GPUs to `host` and returns the environment with
/// [`NVIDIA_VISIBLE_DEVICES`] set (see the module doc).
pub(crate) fn apply(
    r: &Resources,
    env: &std::collections::BTreeMap<String, String>,
    host: &mut HostConfig,
) -> Result<Vec<String>> {
    let nvidia: Vec<String> = r
        .gpus
        .iter()
        .filter(|g| g.vendor == GpuVendor::Nvidia)
        .map(|g| g.id.clone())
        .collect();
    let mut out: Vec<String> = env
        .iter()
        .filter(|(k, _)| k.as_str() != NVIDIA_VISIBLE_DEVICES)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if nvidia.is_empty() {
        out.push(format!("{NVIDIA_VISIBLE_DEVICES}=void"));
    } else {
        out.push(format!("{NVIDIA_VISIBLE_DEVICES}={}", nvidia.join(",")));
        host.device_requests = Some(vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(nvidia),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]);
    }
    let mut devices: Vec<DeviceMapping> = Vec::new();
    let mut groups: Vec<String> = Vec::new();
    for g in r.gpus.iter().filter(|g| g.vendor != GpuVendor::Nvidia) {
        if g.nodes.is_empty() {
            return Err(ExecutorError::InvalidSpec(format!(
                "GPU {} has no device nodes to hand to the container",
                g.id
            )));
        }
        for n in &g.nodes {
            if devices
                .iter()
                .any(|d| d.path_in_container.as_deref() == Some(n.container.as_str()))
            {
                continue; // /dev/kfd is shared by every AMD GPU
            }
            let meta = std::fs::metadata(&n.host).map_err(|e| {
                ExecutorError::InvalidSpec(format!(
                    "GPU {}: device node {}: {e}",
                    g.id,
                    n.host.display()
                ))
            })?;
            let gid = meta.gid().to_string();
            if meta.gid() != 0 && !groups.contains(&gid) {
                groups.push(gid);
            }
            devices.push(DeviceMapping {
                path_on_host: Some(n.host.to_string_lossy().into_owned()),
                path_in_container: Some(n.container.clone()),
                cgroup_permissions: Some("rwm".into()),
            });
        }
    }
    if !devices.is_empty() {
        host.devices = Some(devices);
    }
    if !groups.is_empty() {
        host.group_add = Some(groups);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{DevicePath, ExecutionSpec, Executor, GpuDevice, Workload};
    use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

    /// A character device node standing in for a GPU's (same numbers as /dev/null).
    fn fake_node(path: &Path, gid: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let ok = std::process::Command::new("mknod")
            .arg(path)
            .args(["c", "1", "3"])
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mknod {} (the test runs as root, as CI does)",
            path.display()
        );
        std::os::unix::fs::chown(path, None, Some(gid)).unwrap();
    }

    fn node(dev: &Path, rel: &str) -> DevicePath {
        DevicePath {
            host: dev.join(rel),
            container: format!("/dev/{rel}"),
        }
    }

    /// dockerd's own record of the container created for a spec with NVIDIA, AMD and Intel
    /// GPUs: the device request names exactly the NVIDIA UUIDs, the device list exactly the
    /// committed cards' nodes, the deployer's `NVIDIA_VISIBLE_DEVICES=all` is replaced.
    #[tokio::test]
    async fn dockerd_records_exactly_the_committed_gpus() {
        let ex = super::super::DockerExecutor::connect(crate::DockerConfig::new(format!(
            "gpu-test-{}",
            std::process::id()
        )))
        .await;
        assert!(
            ex.status().available,
            "dockerd is missing on this machine: run `sudo .ci/install-runtimes.sh` (CI always does): {}",
            ex.status().detail
        );
        let tmp = tempfile::tempdir().unwrap();
        let dev = tmp.path();
        for (rel, gid) in [
            ("kfd", 0),
            ("dri/card1", 44),
            ("dri/renderD129", 105),
            ("dri/card2", 44),
            ("dri/renderD130", 105),
            // Another card on the machine that the allocation was not given.
            ("dri/renderD131", 105),
        ] {
            fake_node(&dev.join(rel), gid);
        }
        let mut spec = ExecutionSpec::new(
            format!("gpu-{}", std::process::id()),
            Workload::Container {
                image: "nunet-test/busybox:latest".into(),
                working_dir: None,
                user: None,
            },
        );
        spec.env.insert(NVIDIA_VISIBLE_DEVICES.into(), "all".into());
        spec.env.insert("KEEP".into(), "me".into());
        spec.resources.gpus = vec![
            GpuDevice {
                vendor: GpuVendor::Nvidia,
                id: "GPU-0a0b1c2d".into(),
                nodes: vec![],
            },
            GpuDevice {
                vendor: GpuVendor::Nvidia,
                id: "MIG-5e6f7a8b".into(),
                nodes: vec![],
            },
            GpuDevice {
                vendor: GpuVendor::Amd,
                id: "pci:0000:c1:00.0".into(),
                nodes: vec![
                    node(dev, "kfd"),
                    node(dev, "dri/card1"),
                    node(dev, "dri/renderD129"),
                ],
            },
            GpuDevice {
                vendor: GpuVendor::Intel,
                id: "pci:0000:03:00.0".into(),
                nodes: vec![node(dev, "dri/card2"), node(dev, "dri/renderD130")],
            },
        ];
        // Without the NVIDIA runtime the request is refused before dockerd sees it.
        let no_nvidia = ex.gpu_support();
        if !no_nvidia.supports(GpuVendor::Nvidia) {
            let e = ex.create_body(&spec).unwrap_err().to_string();
            assert!(e.contains("no NVIDIA container runtime"), "{e}");
        }
        // As on a provider with the runtime.
        ex.conn.write().unwrap().gpu = support_from(&["nvidia".into()], None);
        let body = ex.create_body(&spec).unwrap();
        let docker = ex.client().unwrap();
        let name = format!("nunet-gpu-test-{}", std::process::id());
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        docker.create_container(Some(opts), body).await.unwrap();
        let seen = docker.inspect_container(&name, None).await;
        let rm = RemoveContainerOptionsBuilder::default().force(true).build();
        docker.remove_container(&name, Some(rm)).await.unwrap();
        let seen = seen.unwrap();
        let host = seen.host_config.unwrap();
        let req = host.device_requests.unwrap();
        assert_eq!(req.len(), 1, "{req:?}");
        assert_eq!(req[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(
            req[0].device_ids.as_deref().unwrap(),
            ["GPU-0a0b1c2d", "MIG-5e6f7a8b"]
        );
        assert_eq!(req[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
        let devices: Vec<(String, String)> = host
            .devices
            .unwrap()
            .into_iter()
            .map(|d| (d.path_on_host.unwrap(), d.path_in_container.unwrap()))
            .collect();
        let want: Vec<(String, String)> = [
            "kfd",
            "dri/card1",
            "dri/renderD129",
            "dri/card2",
            "dri/renderD130",
        ]
        .iter()
        .map(|r| {
            (
                dev.join(r).to_string_lossy().into_owned(),
                format!("/dev/{r}"),
            )
        })
        .collect();
        assert_eq!(devices, want);
        let mut groups = host.group_add.unwrap();
        groups.sort();
        assert_eq!(groups, ["105", "44"]);
        let env = seen.config.unwrap().env.unwrap();
        assert!(
            env.contains(&"NVIDIA_VISIBLE_DEVICES=GPU-0a0b1c2d,MIG-5e6f7a8b".to_string()),
            "{env:?}"
        );
        assert!(
            !env.contains(&"NVIDIA_VISIBLE_DEVICES=all".to_string()),
            "{env:?}"
        );
        assert!(env.contains(&"KEEP=me".to_string()), "{env:?}");
        // No GPU: no devices, and the NVIDIA runtime (were it the default) hands out none.
        spec.resources.gpus.clear();
        let body = ex.create_body(&spec).unwrap();
        let host = body.host_config.unwrap();
        assert!(host.devices.is_none() && host.device_requests.is_none());
        assert!(
            body.env
                .unwrap()
                .contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string())
        );
    }

    #[test]
    fn nvidia_needs_the_runtime_or_the_hook() {
        let none = support_from(&["runc".into()], None);
        assert!(!none.supports(GpuVendor::Nvidia));
        assert!(none.supports(GpuVendor::Amd) && none.supports(GpuVendor::Intel));
        assert!(none.notes[0].contains("no NVIDIA container runtime"));
        assert!(support_from(&["runc".into(), "nvidia".into()], None).supports(GpuVendor::Nvidia));
        let hook = support_from(
            &[],
            Some(Path::new("/usr/bin/nvidia-container-runtime-hook")),
        );
        assert!(hook.supports(GpuVendor::Nvidia) && hook.notes.is_empty());
    }
}
