//! Network sandboxes for Docker workloads: a tiny container, started with network mode
//! `none`, whose only job is to own a network namespace. The subnet code moves a veth into
//! that namespace (found by the sandbox's PID) and configures address and routes; the
//! workload container is then started with network mode `container:<sandbox>`
//! ([`Sandbox::network`]), so its network is ready before its first instruction runs.
//!
//! The sandbox image needs no registry: its only file is a hand-assembled static x86_64 ELF
//! (`/pause`, 129 bytes) that loops on the `pause` system call, imported as
//! `nunet/sandbox:<version>` by [`DockerExecutor::ensure_sandbox_image`]. As PID 1 it ignores
//! SIGTERM, so sandboxes are removed with a forced remove (SIGKILL).
//!
//! What it must not do: configure the namespace itself (the subnet crate does), give the
//! sandbox capabilities, a writable root, or more than a few MiB of memory, or remove
//! containers that do not carry the `nunet.sandbox` label of this node.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptions,
};
use futures::StreamExt;

use crate::docker::{api_err, is_status};
use crate::{
    DockerExecutor, ExecutorError, LABEL_NODE, LABEL_PREFIX, NetworkAttachment, Result,
    with_deadline,
};

/// Label every sandbox carries (value `1`).
pub const LABEL_SANDBOX: &str = "nunet.sandbox";
/// Repository of the sandbox image.
pub const SANDBOX_REPO: &str = "nunet/sandbox";
/// Sandbox container names are `nunet.sandbox-<name>` (execution containers are
/// `nunet-<id>`, so the two never collide).
const NAME_PREFIX: &str = "nunet.sandbox-";
/// Bumped whenever [`pause_elf`] changes, so nodes import the new image.
const IMAGE_REVISION: u32 = 1;
/// Memory limit of a sandbox (dockerd refuses less than 6 MiB).
const SANDBOX_MEMORY: i64 = 8 << 20;

/// A running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Docker container id.
    pub id: String,
    /// Docker container name (`nunet.sandbox-<name>`).
    pub name: String,
    /// Host PID of the sandbox's init process (0 when it is not running); its network
    /// namespace is `/proc/<pid>/ns/net`.
    pub pid: u32,
    /// Labels on the container.
    pub labels: BTreeMap<String, String>,
}

impl Sandbox {
    /// The attachment that makes a workload container share this sandbox's network
    /// namespace (docker network mode `container:<name>`).
    pub fn network(&self) -> NetworkAttachment {
        NetworkAttachment::Named(format!("container:{}", self.name))
    }
}

/// The image reference `nunet/sandbox:<crate version>-r<revision>`.
pub fn sandbox_image() -> String {
    format!(
        "{SANDBOX_REPO}:{}-r{IMAGE_REVISION}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The container name of sandbox `name`.
pub fn sandbox_container_name(name: &str) -> String {
    format!("{NAME_PREFIX}{name}")
}

fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ExecutorError::InvalidSpec(format!(
            "sandbox name {name:?} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

/// A static x86_64 Linux executable: `loop { pause() }`, one PT_LOAD segment at 0x400000.
pub fn pause_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const EHDR: u16 = 64;
    const PHDR: u16 = 56;
    // mov eax, 34 (SYS_pause); syscall; jmp back to the mov.
    const CODE: [u8; 9] = [0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7];
    let header_len = u64::from(EHDR + PHDR);
    let total = header_len + CODE.len() as u64;
    let mut f = Vec::with_capacity(total as usize);
    // e_ident: magic, 64-bit, little-endian, version 1, System V ABI, padding.
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(BASE + header_len).to_le_bytes()); // e_entry
    f.extend_from_slice(&u64::from(EHDR).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&EHDR.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&PHDR.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R + X
    f.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    f.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    f.extend_from_slice(&total.to_le_bytes()); // p_filesz
    f.extend_from_slice(&total.to_le_bytes()); // p_memsz
    f.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    f.extend_from_slice(&CODE);
    f
}

/// A POSIX ustar archive holding one executable file.
fn tar_with_file(name: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    let field = |h: &mut [u8; 512], at: usize, v: &[u8]| h[at..at + v.len()].copy_from_slice(v);
    field(&mut h, 0, name.as_bytes());
    field(&mut h, 100, b"0000755\0"); // mode
    field(&mut h, 108, b"0000000\0"); // uid
    field(&mut h, 116, b"0000000\0"); // gid
    field(&mut h, 124, format!("{:011o}\0", data.len()).as_bytes()); // size
    field(&mut h, 136, b"00000000000\0"); // mtime: fixed, for a reproducible layer
    field(&mut h, 148, b"        "); // checksum counts as spaces while summing
    h[156] = b'0'; // regular file
    field(&mut h, 257, b"ustar\x0000");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    field(&mut h, 148, format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out.extend_from_slice(&[0u8; 1024]); // end of archive
    out
}

impl DockerExecutor {
    /// Imports the sandbox image ([`sandbox_image`]) into dockerd unless it is there already.
    /// Fails with [`ExecutorError::Runtime`] when dockerd does not run x86_64 containers.
    pub async fn ensure_sandbox_image(&self) -> Result<String> {
        let image = sandbox_image();
        if self.image_is_local(&image).await? {
            return Ok(image);
        }
        let docker = self.client()?;
        let version = self
            .call("version", docker.version())
            .await?
            .map_err(api_err)?;
        let arch = version.arch.unwrap_or_default();
        if arch != "amd64" && arch != "x86_64" {
            return Err(ExecutorError::Runtime(format!(
                "the network sandbox image is x86_64-only; dockerd runs {arch:?} containers"
            )));
        }
        let (repo, tag) = image.split_once(':').unwrap_or((&image, "latest"));
        let opts = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(tag)
            .changes(vec![
                r#"CMD ["/pause"]"#.to_string(),
                format!("LABEL {LABEL_SANDBOX}=1"),
            ])
            .build();
        let tar = tar_with_file("pause", &pause_elf());
        let body = bollard::body_full(tar.into());
        let timeout = self.config().timeout;
        with_deadline("sandbox image import", timeout, async {
            let mut progress = docker.create_image(Some(opts), Some(body), None);
            while let Some(item) = progress.next().await {
                item.map_err(api_err)?;
            }
            Ok(())
        })
        .await?;
        self.prune_sandbox_images(&image).await;
        Ok(image)
    }

    /// Removes sandbox images other than `keep`: older revisions, and the untagged copies
    /// that concurrent imports leave (each import gets a new id; the tag moves to the last).
    /// Images still used by a container stay; errors are ignored.
    async fn prune_sandbox_images(&self, keep: &str) {
        let Ok(docker) = self.client() else { return };
        let filters = HashMap::from([("label", vec![format!("{LABEL_SANDBOX}=1")])]);
        let opts = ListImagesOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(Ok(images)) = self
            .call("image list", docker.list_images(Some(opts)))
            .await
        else {
            return;
        };
        for img in images
            .iter()
            .filter(|i| !i.repo_tags.iter().any(|t| t == keep))
        {
            let _ = self
                .call(
                    "image remove",
                    docker.remove_image(&img.id, None::<RemoveImageOptions>, None),
                )
                .await;
        }
    }

    /// Starts sandbox `name` (network mode `none`, all capabilities dropped, read-only root,
    /// 8 MiB of memory, 4 PIDs, no restart) labelled `nunet.sandbox=1`, this node's
    /// `nunet.node` and `labels` (keys get the `nunet.` prefix when missing). Imports the
    /// image first when needed. Fails with [`ExecutorError::AlreadyExists`] when a sandbox of
    /// that name exists.
    pub async fn start_sandbox(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Sandbox> {
        validate_name(name)?;
        let image = self.ensure_sandbox_image().await?;
        let docker = self.client()?;
        let mut all: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| match k.starts_with(LABEL_PREFIX) {
                true => (k, v),
                false => (format!("{LABEL_PREFIX}{k}"), v),
            })
            .collect();
        all.insert(LABEL_SANDBOX.into(), "1".into());
        all.insert(LABEL_NODE.into(), self.config().node.clone());
        let host = HostConfig {
            network_mode: Some("none".into()),
            memory: Some(SANDBOX_MEMORY),
            memory_swap: Some(SANDBOX_MEMORY),
            pids_limit: Some(4),
            cap_drop: Some(vec!["ALL".into()]),
            readonly_rootfs: Some(true),
            security_opt: Some(vec!["no-new-privileges".into()]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(image),
            cmd: Some(vec!["/pause".into()]),
            labels: Some(all.into_iter().collect()),
            host_config: Some(host),
            ..Default::default()
        };
        let cname = sandbox_container_name(name);
        let opts = CreateContainerOptionsBuilder::default()
            .name(&cname)
            .build();
        let mut created = self
            .call(
                "sandbox create",
                docker.create_container(Some(opts.clone()), body.clone()),
            )
            .await?;
        if matches!(&created, Err(e) if is_status(e, 404)) {
            // Another process's prune removed the copy the tag named a moment ago.
            self.ensure_sandbox_image().await?;
            created = self
                .call("sandbox create", docker.create_container(Some(opts), body))
                .await?;
        }
        match created {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => return Err(ExecutorError::AlreadyExists(cname)),
            Err(e) => return Err(api_err(e)),
        }
        let started = self
            .call("sandbox start", docker.start_container(&cname, None))
            .await
            .and_then(|r| r.map_err(api_err));
        let found = match started {
            Ok(()) => self.inspect_sandbox(&cname).await,
            Err(e) => Err(e),
        };
        match found {
            Ok(s) if s.pid > 0 => Ok(s),
            other => {
                let _ = self.remove_sandbox(name).await;
                Err(other.err().unwrap_or_else(|| {
                    ExecutorError::Runtime(format!("sandbox {cname} started but has no PID"))
                }))
            }
        }
    }

    async fn inspect_sandbox(&self, cname: &str) -> Result<Sandbox> {
        let docker = self.client()?;
        let c = match self
            .call("sandbox inspect", docker.inspect_container(cname, None))
            .await?
        {
            Ok(c) => c,
            Err(e) if is_status(&e, 404) => return Err(ExecutorError::NotFound(cname.into())),
            Err(e) => return Err(api_err(e)),
        };
        let pid = c.state.as_ref().and_then(|s| s.pid).unwrap_or(0);
        Ok(Sandbox {
            id: c.id.unwrap_or_default(),
            name: cname.to_string(),
            pid: u32::try_from(pid).unwrap_or(0),
            labels: c
                .config
                .and_then(|cfg| cfg.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
        })
    }

    /// Force-removes sandbox `name` (SIGKILL; its network namespace goes with it). Succeeds
    /// when it does not exist. Takes the sandbox name or its container name.
    pub async fn remove_sandbox(&self, name: &str) -> Result<()> {
        let name = sandbox_name(name).unwrap_or(name);
        validate_name(name)?;
        let docker = self.client()?;
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        let cname = sandbox_container_name(name);
        match self
            .call(
                "sandbox remove",
                docker.remove_container(&cname, Some(opts)),
            )
            .await?
        {
            Ok(()) => {
                // The last user of an untagged copy may just have gone.
                self.prune_sandbox_images(&sandbox_image()).await;
                Ok(())
            }
            Err(e) if is_status(&e, 404) => Ok(()),
            // A concurrent remove of the same sandbox is already under way.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(api_err(e)),
        }
    }

    /// Every sandbox of this node (by the `nunet.sandbox` and `nunet.node` labels), running or
    /// not, sorted by name, so a restarted node can remove the orphans (pass
    /// [`Sandbox::name`] to [`DockerExecutor::remove_sandbox`]).
    pub async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        let docker = self.client()?;
        let filters = HashMap::from([(
            "label",
            vec![
                format!("{LABEL_SANDBOX}=1"),
                format!("{LABEL_NODE}={}", self.config().node),
            ],
        )]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let found = self
            .call("sandbox list", docker.list_containers(Some(opts)))
            .await?
            .map_err(api_err)?;
        let mut out = Vec::new();
        for c in found {
            let Some(cname) = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
            else {
                continue;
            };
            match self.inspect_sandbox(&cname).await {
                Ok(s) => out.push(s),
                Err(ExecutorError::NotFound(_)) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// Sandbox `name` from its container name (`nunet.sandbox-web` → `web`).
pub fn sandbox_name(container_name: &str) -> Option<&str> {
    container_name
        .trim_start_matches('/')
        .strip_prefix(NAME_PREFIX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_binary_is_a_small_static_elf() {
        let elf = pause_elf();
        assert_eq!(elf.len(), 129);
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u64::from_le_bytes(elf[24..32].try_into().unwrap());
        assert_eq!(entry, 0x40_0000 + 120);
        assert_eq!(elf[120], 0xb8, "entry point is the mov");
    }

    #[test]
    fn the_tar_holds_the_file_with_a_valid_checksum() {
        let t = tar_with_file("pause", b"abc");
        assert_eq!(t.len(), 512 * 2 + 1024);
        assert_eq!(&t[..5], b"pause");
        assert_eq!(&t[512..515], b"abc");
        let stored = u32::from_str_radix(std::str::from_utf8(&t[148..154]).unwrap(), 8).unwrap();
        let mut h = t[..512].to_vec();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|b| u32::from(*b)).sum::<u32>());
    }

    #[test]
    fn names_map_both_ways() {
        assert_eq!(sandbox_container_name("web"), "nunet.sandbox-web");
        assert_eq!(sandbox_name("/nunet.sandbox-web"), Some("web"));
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
