//! Network sandboxes for Docker workloads: a tiny container, started with network mode
//! `none`, whose only job is to own a network namespace. The subnet code moves a veth into
//! that namespace (found by the sandbox's PID) and configures address and routes; the
//! workload container is then started with network mode `container:<sandbox>`
//! ([`Sandbox::network`]), so its network is ready before its first instruction runs.
//!
//! The sandbox image needs no registry: its only file is a hand-assembled static x86_64 ELF
//! (`/pause`, 129 bytes) that loops on the `pause` system call, loaded as
//! `nunet/sandbox:<version>` by [`DockerExecutor::ensure_sandbox_image`] from an archive
//! built in memory, byte for byte the same on every node (`image.rs`). As PID 1 it ignores
//! SIGTERM, so sandboxes are removed with a forced remove (SIGKILL).
//!
//! What it must not do: configure the namespace itself (the subnet crate does), give the
//! sandbox capabilities, a writable root, or more than a few MiB of memory, or remove
//! containers that do not carry the `nunet.sandbox` label of this node.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{ContainerCreateBody, HostConfig, RestartPolicy, RestartPolicyNameEnum};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptions,
};
use futures::StreamExt;

mod image;
pub use image::pause_elf;

use crate::docker::{api_err, is_status};
use crate::{
    DockerExecutor, ExecutorError, LABEL_NODE, LABEL_PREFIX, NetworkAttachment, Result,
    with_deadline,
};

/// Label every sandbox carries (value `1`).
pub const LABEL_SANDBOX: &str = "nunet.sandbox";
/// Repository of the sandbox image.
pub const SANDBOX_REPO: &str = "nunet/sandbox";
/// Sandbox container names are `nunet.sandbox-<node tag>-<name>` (execution containers are
/// `nunet-<node tag>-<id>`, so the two never collide).
const NAME_PREFIX: &str = "nunet.sandbox-";
/// Bumped whenever the image changes, so nodes load the new one (2: reproducible load).
const IMAGE_REVISION: u32 = 2;
/// Memory limit of a sandbox (dockerd refuses less than 6 MiB). The pause process needs a few
/// hundred KiB, but runc's init (a Go program) runs inside the container's cgroups until it
/// executes pause.
const SANDBOX_MEMORY: i64 = 16 << 20;
/// Processes and threads of a sandbox. Pause is one; runc's init counts its own threads here
/// until it executes pause. With a limit of 4, a start in CI once failed with "cannot start a
/// stopped process" (runc's init died before pause ran), most likely for want of a thread.
const SANDBOX_PIDS: i64 = 32;

/// A running sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Docker container id.
    pub id: String,
    /// Docker container name (`nunet.sandbox-<node tag>-<name>`).
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

/// The container name of sandbox `name` of the node with [`crate::docker::node_tag`] `tag`.
pub fn sandbox_container_name(tag: &str, name: &str) -> String {
    format!("{NAME_PREFIX}{tag}-{name}")
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

impl DockerExecutor {
    /// Loads the sandbox image ([`sandbox_image`]) into dockerd unless it is there already.
    /// Fails with [`ExecutorError::Runtime`] when dockerd does not run x86_64 containers.
    pub async fn ensure_sandbox_image(&self) -> Result<String> {
        let image = sandbox_image();
        if self.image_is_local(&image).await? {
            return Ok(image);
        }
        self.load_sandbox_image().await?;
        Ok(image)
    }

    /// Loads the sandbox image whether or not it is there. Every load gives the same image
    /// id, so loads may run at any time, from any number of processes sharing the dockerd.
    pub async fn load_sandbox_image(&self) -> Result<()> {
        let image = sandbox_image();
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
        let archive = image::archive(&image, LABEL_SANDBOX);
        let opts = ImportImageOptionsBuilder::default().quiet(true).build();
        let timeout = self.config().timeout;
        with_deadline("sandbox image load", timeout, async {
            let mut progress = docker.import_image(opts, bollard::body_full(archive.into()), None);
            while let Some(item) = progress.next().await {
                item.map_err(api_err)?;
            }
            Ok(())
        })
        .await?;
        self.prune_sandbox_images(&image).await;
        Ok(())
    }

    /// Removes sandbox images other than `keep`: older revisions (and the untagged copies
    /// that revision 1's `docker import` left). Loads of one revision all give the same
    /// image, so this never removes the image a concurrent start is using.
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
    /// 16 MiB of memory, 32 PIDs, no restart) labelled `nunet.sandbox=1`, this node's
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
            pids_limit: Some(SANDBOX_PIDS),
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
        let cname = sandbox_container_name(self.tag(), name);
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
            // A node of another version pruned this revision a moment ago.
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
    /// when it does not exist. Takes this node's sandbox name, or a container name as
    /// [`Sandbox::name`] gives it (also one from before names carried the node tag).
    pub async fn remove_sandbox(&self, name: &str) -> Result<()> {
        let cname = match sandbox_name(name) {
            Some(rest) => {
                validate_name(rest)?;
                format!("{NAME_PREFIX}{rest}")
            }
            None => {
                validate_name(name)?;
                sandbox_container_name(self.tag(), name)
            }
        };
        let docker = self.client()?;
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
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

/// What follows the prefix of a sandbox container name (`nunet.sandbox-1a2b3c4d-web` →
/// `1a2b3c4d-web`); `None` for a name that is not a sandbox container's.
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
    fn names_map_both_ways() {
        assert_eq!(
            sandbox_container_name("1a2b3c4d", "web"),
            "nunet.sandbox-1a2b3c4d-web"
        );
        assert_eq!(
            sandbox_name("/nunet.sandbox-1a2b3c4d-web"),
            Some("1a2b3c4d-web")
        );
        assert_eq!(sandbox_name("web"), None);
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
    }
}
