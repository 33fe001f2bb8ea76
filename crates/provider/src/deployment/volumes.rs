//! An allocation's volumes, turned into host directories the executor mounts at
//! `mount_destination` (a bind mount for containers, a preopen for WASM):
//!
//! - `local` with an absolute `src`: a host directory under `job.volume_roots`, resolved as
//!   [`super::files`] resolves paths (`..` and symlinks cannot leave the roots);
//! - `local` with a name: a *named volume* of the ensemble on this provider, an ext4 image
//!   on a loop device sized by the allocation's disk (`resources.disk`, already counted
//!   against the onboarded disk, shared evenly among its named volumes), so a writer stops
//!   at its size with `ENOSPC`; it outlives the allocation's restarts and goes with the
//!   ensemble. `encrypted: true` keeps only gocryptfs ciphertext in the image, under a
//!   random key held in the daemon's memory, and mounts the plaintext view;
//! - `glusterfs`: the volume mounted with the GlusterFS FUSE client, once per ensemble.
//!
//! Everything lives under `<data_dir>/volumes/<ensemble id>/` (`images/`, `mnt/`,
//! `glusterfs/`). Nothing is ever deleted while something is still mounted under it, so
//! removing an ensemble can never reach into a GlusterFS volume or a host directory.
//! A microVM gets its named volumes as disks instead ([`Volumes::disks`]): the ext4 image
//! itself, attached as a virtio block device the guest mounts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nunet_actor::ActorError;
use nunet_ensemble::Execution;
use nunet_ensemble::spec::{Volume, VolumeSource};
use nunet_executor::{Mount, VmDisk};
use sha2::{Digest, Sha256};

use nunet_ensemble::volumes::{
    MAX_VOLUMES, destination, named_volume_size, problems, valid_name, vm_problem,
};

use super::files::LocalFiles;
use super::{AllocRecord, failed};

mod system;
use system::{is_mounted, mounted_under, path_arg, remove_tree_one_fs, run, run_keyed, unmount};

/// How long `mount`/`umount`/`mkfs` may take (a GlusterFS server that does not answer).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// The directory inside a named volume that the allocation gets: it exists only inside the
/// mounted filesystem, so a mount dockerd cannot see (a daemon in a private mount
/// namespace) fails the start instead of binding the empty directory under it.
const DATA_DIR: &str = "data";

/// The provider's volumes.
pub(crate) struct Volumes {
    /// `<data_dir>/volumes`, resolved.
    base: PathBuf,
    /// Whether the base was made root's only (why not, otherwise): no volume is made in a
    /// directory other local users can reach.
    private: Result<(), String>,
    /// `job.volume_roots`.
    roots: LocalFiles,
    /// `job.glusterfs_servers`: the GlusterFS servers ensembles may name (`*`: any).
    glusterfs_servers: Vec<String>,
    /// One mount or removal at a time (two allocations may share a named volume).
    busy: tokio::sync::Mutex<()>,
    /// Keys of the encrypted named volumes made since the daemon started, by image path;
    /// held in memory only, so the provider's disk alone never opens one.
    keys: std::sync::Mutex<std::collections::HashMap<PathBuf, String>>,
}

impl std::fmt::Debug for Volumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volumes")
            .field("base", &self.base)
            .field("roots", &self.roots)
            .field("glusterfs_servers", &self.glusterfs_servers)
            .finish_non_exhaustive() // never the keys
    }
}

impl Volumes {
    pub(crate) fn new(data_dir: &Path, job: &nunet_config::model::Job) -> Self {
        let base = data_dir.join("volumes");
        // Root's only: named volumes are world-writable inside, and an encrypted one's
        // plaintext view is mounted under it; no other local user may reach either.
        let private = std::fs::create_dir_all(&base)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
            })
            .map_err(|e| format!("{} cannot be made private: {e}", base.display()));
        Self {
            base: base.canonicalize().unwrap_or(base),
            private,
            roots: LocalFiles::volumes(&job.volume_roots),
            glusterfs_servers: job.glusterfs_servers.clone(),
            busy: tokio::sync::Mutex::new(()),
            keys: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn ensemble_dir(&self, ensemble: &str) -> Result<PathBuf, ActorError> {
        if !valid_name(ensemble) {
            return Err(failed(format!(
                "ensemble id {ensemble:?} cannot name a volume directory"
            )));
        }
        Ok(self.base.join(ensemble))
    }

    /// `<data_dir>/volumes/<ensemble>/staging/<allocation>`: where the allocation's inputs
    /// and outputs are staged (removed with the ensemble's volumes).
    pub(crate) fn staging_dir(
        &self,
        ensemble: &str,
        allocation: &str,
    ) -> Result<PathBuf, ActorError> {
        if let Err(e) = &self.private {
            return Err(failed(format!(
                "inputs and outputs cannot be staged here: {e}"
            )));
        }
        if !valid_name(allocation) {
            return Err(failed(format!(
                "allocation name {allocation:?} cannot name a staging directory"
            )));
        }
        Ok(self
            .ensemble_dir(ensemble)?
            .join("staging")
            .join(allocation))
    }

    /// Checks `rec`'s volumes again (sent by the orchestrator), all of them before anything is
    /// made, with a microVM's own rules when `vm`; the size of each named volume.
    fn admit(&self, rec: &AllocRecord, vm: bool) -> Result<u64, ActorError> {
        if let Err(e) = &self.private {
            return Err(failed(format!("volumes cannot be made here: {e}")));
        }
        if rec.volumes.len() > MAX_VOLUMES {
            return Err(failed(format!(
                "{} volumes; an allocation may have at most {MAX_VOLUMES}",
                rec.volumes.len()
            )));
        }
        let named_size = named_volume_size(&rec.volumes, rec.resources.disk.size);
        for (i, v) in rec.volumes.iter().enumerate() {
            let p = problems(v, named_size)
                .into_iter()
                .map(|p| (p.field, p.message))
                .next()
                .or_else(|| {
                    vm.then(|| vm_problem(v))
                        .flatten()
                        .map(|(f, m)| (f.to_string(), m))
                });
            if let Some((field, message)) = p {
                return Err(failed(format!("volume[{i}].{field}: {message}")));
            }
        }
        Ok(named_size)
    }

    /// The mounts of `rec`'s volumes, creating and mounting what is not there yet.
    pub(crate) async fn mounts(&self, rec: &AllocRecord) -> Result<Vec<Mount>, ActorError> {
        if rec.volumes.is_empty() {
            return Ok(Vec::new());
        }
        if matches!(rec.execution, Execution::Firecracker(_)) {
            return Err(failed(
                "a microVM's volumes are attached as disks (Volumes::disks), not mounted",
            ));
        }
        let named_size = self.admit(rec, false)?;
        let _one = self.busy.lock().await;
        let mut out: Vec<Mount> = Vec::new();
        for (i, v) in rec.volumes.iter().enumerate() {
            let what = format!("volume[{i}]");
            let target = destination(&v.mount_destination).ok_or_else(|| {
                failed(format!("{what}: mount_destination is not an absolute path"))
            })?;
            if out.iter().any(|m| m.target == target) {
                return Err(failed(format!(
                    "{what}: two volumes are mounted at {target}"
                )));
            }
            let source = self
                .source(rec, v, named_size)
                .await
                .map_err(|e| failed(format!("{what}: {}", e.message)))?;
            out.push(Mount {
                source,
                target,
                read_only: v.read_only,
            });
        }
        Ok(out)
    }

    /// The disks of microVM allocation `rec`'s volumes (named, unencrypted `local` volumes
    /// only, checked with [`vm_problem`]): each named volume's ext4 image, made when missing
    /// and never loop-mounted here while a VM has it, and the kernel argument that tells the
    /// guest where to mount it (`nunet.volume=<serial>:<mount_destination>:<rw|ro>`).
    pub(crate) async fn disks(
        &self,
        rec: &AllocRecord,
    ) -> Result<Vec<(VmDisk, String)>, ActorError> {
        if rec.volumes.is_empty() {
            return Ok(Vec::new());
        }
        let named_size = self.admit(rec, true)?;
        let dir = self.ensemble_dir(&rec.ensemble_id)?;
        let _one = self.busy.lock().await;
        let mut out = Vec::new();
        for (i, v) in rec.volumes.iter().enumerate() {
            let VolumeSource::Local { src } = &v.source else {
                continue; // refused above
            };
            if rec.volumes[..i]
                .iter()
                .any(|w| matches!(&w.source, VolumeSource::Local { src: s } if s == src))
            {
                return Err(failed(format!(
                    "volume[{i}]: named volume {src:?} is attached twice"
                )));
            }
            let target = destination(&v.mount_destination).ok_or_else(|| {
                failed(format!(
                    "volume[{i}]: mount_destination is not an absolute path"
                ))
            })?;
            // A container of this ensemble has it mounted: the VM's filesystem cache and
            // the host's would corrupt it.
            if is_mounted(&dir.join("mnt").join(src)).await? {
                return Err(failed(format!(
                    "volume[{i}]: named volume {src:?} is mounted on this provider for \
                     another allocation; a microVM needs it alone"
                )));
            }
            let path = image(&dir, src, named_size, false)
                .await
                .map_err(|e| failed(format!("volume[{i}]: {}", e.message)))?;
            let serial = format!("nunet-vol-{i}");
            let mode = if v.read_only { "ro" } else { "rw" };
            let arg = format!("nunet.volume={serial}:{target}:{mode}");
            out.push((
                VmDisk {
                    path,
                    read_only: v.read_only,
                    serial,
                },
                arg,
            ));
        }
        Ok(out)
    }

    /// The host directory behind volume `v` (already checked with [`problems`]).
    async fn source(
        &self,
        rec: &AllocRecord,
        v: &Volume,
        named_size: u64,
    ) -> Result<PathBuf, ActorError> {
        match &v.source {
            VolumeSource::Local { src } if src.starts_with('/') => self.roots.resolve("src", src),
            VolumeSource::Local { src } => {
                let dir = self.ensemble_dir(&rec.ensemble_id)?;
                self.named(&dir, src, named_size, v.encrypted).await
            }
            VolumeSource::Glusterfs {
                servers,
                name,
                client_private_key,
                client_pem,
                client_ca,
            } => {
                if let Some(s) = servers.iter().find(|s| {
                    !self
                        .glusterfs_servers
                        .iter()
                        .any(|a| a == "*" || a.eq_ignore_ascii_case(s))
                }) {
                    return Err(failed(format!(
                        "GlusterFS server {s:?} is not one this provider mounts from \
                         (job.glusterfs_servers: {:?})",
                        self.glusterfs_servers
                    )));
                }
                let dir = self.ensemble_dir(&rec.ensemble_id)?;
                let tls = match (client_private_key, client_pem, client_ca) {
                    (Some(key), Some(pem), Some(ca)) => Some(Tls { key, pem, ca }),
                    (None, None, None) => None,
                    // Refused by validation before a deployment gets here.
                    _ => {
                        return Err(failed(format!(
                            "GlusterFS volume {name:?}: client_private_key, client_pem and \
                             client_ca go together"
                        )));
                    }
                };
                glusterfs(&dir, servers, name, tls).await
            }
        }
    }

    /// Unmounts and deletes the volumes of `ensemble` unless `still_used` says an allocation
    /// of it is on this provider again (checked while no mount can start).
    pub(crate) async fn remove(&self, ensemble: &str, still_used: impl Fn() -> bool) {
        let Ok(dir) = self.ensemble_dir(ensemble) else {
            return;
        };
        if !dir.exists() {
            return;
        }
        let _one = self.busy.lock().await;
        if still_used() {
            return;
        }
        let mounted = match mounted_under(&dir) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(ensemble, error = %e, "volumes kept: the mount table cannot be read");
                return;
            }
        };
        for m in mounted {
            if let Err(e) = unmount(&m).await {
                tracing::warn!(mount = %m.display(), error = %e, "volume not unmounted");
            }
        }
        if let Ok(mut k) = self.keys.lock() {
            k.retain(|image, _| !image.starts_with(&dir));
        }
        // Whatever is still mounted under it (it would not unmount, or it appeared since)
        // is never descended into.
        let d = dir.clone();
        match tokio::task::spawn_blocking(move || remove_tree_one_fs(&d)).await {
            Ok(Ok(0)) => tracing::info!(ensemble, "volumes removed"),
            Ok(Ok(kept)) => tracing::warn!(
                ensemble,
                kept,
                "volumes partly kept: something is still mounted under them"
            ),
            Ok(Err(e)) => tracing::warn!(ensemble, error = %e, "volumes not removed"),
            Err(e) => tracing::warn!(ensemble, error = %e, "volumes not removed"),
        }
    }

    /// After a restart: removes the volumes of every ensemble not in `live`.
    pub(crate) async fn remove_all_but(&self, live: &std::collections::HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.base) else {
            return;
        };
        let gone: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|e| !live.contains(e))
            .collect();
        for e in gone {
            self.remove(&e, || false).await;
        }
    }
}

impl super::Provider {
    /// Removes the ensemble's volumes when none of its allocations is on this provider any
    /// more (finished ones keep them: their output may be read after they end).
    pub(super) async fn volumes_down_if_gone(&self, ensemble: &str) {
        let here = || {
            self.allocs.lock().map_or(true, |m| {
                m.values()
                    .any(|c| c.lock().map_or(true, |r| r.ensemble_id == ensemble))
            })
        };
        if !here() {
            self.volumes.remove(ensemble, here).await;
        }
    }

    /// After a restart: removes the volumes of ensembles with no allocation here.
    pub(super) async fn restore_volumes(&self) {
        let live = match self.allocs.lock() {
            Ok(m) => m
                .values()
                .filter_map(|c| c.lock().ok().map(|r| r.ensemble_id.clone()))
                .collect(),
            Err(_) => return, // never judge every volume gone on a poisoned map
        };
        self.volumes.remove_all_but(&live).await;
    }
}

/// The ext4 image of named volume `name` (`dir/images/<name>`, or `dir/encrypted/<name>`
/// for an encrypted one), created with `size` bytes when it does not exist yet.
async fn image(dir: &Path, name: &str, size: u64, encrypted: bool) -> Result<PathBuf, ActorError> {
    let (kind, other) = if encrypted {
        ("encrypted", "images")
    } else {
        ("images", "encrypted")
    };
    if dir.join(other).join(name).exists() {
        return Err(failed(format!(
            "named volume {name:?} is encrypted for one allocation and not for another; \
             give every allocation the same `encrypted`"
        )));
    }
    let images = dir.join(kind);
    let image = images.join(name);
    if image.exists() {
        return Ok(image);
    }
    tokio::fs::create_dir_all(&images).await.map_err(failed)?;
    // Made aside and renamed: a crash never leaves a half-made filesystem under the
    // volume's name.
    let tmp = images.join(format!(".{name}.tmp"));
    let _ = tokio::fs::remove_file(&tmp).await;
    // Allocated, not sparse: a full host disk shows at creation, not as I/O errors inside
    // the volume later.
    run("fallocate", &["-l", &size.to_string(), path_arg(&tmp)?])
        .await
        .map_err(|e| failed(format!("named volume {name:?}: {e}")))?;
    run("mkfs.ext4", &["-q", "-F", "-m", "0", path_arg(&tmp)?])
        .await
        .map_err(|e| failed(format!("named volume {name:?}: {e}")))?;
    tokio::fs::rename(&tmp, &image).await.map_err(failed)?;
    Ok(image)
}

/// Loop-mounts `image` at `at` unless something is mounted there already.
async fn mount_image(name: &str, image: &Path, at: &Path) -> Result<(), ActorError> {
    if is_mounted(at).await? {
        return Ok(());
    }
    tokio::fs::create_dir_all(at).await.map_err(failed)?;
    let args = ["-o", "loop,nosuid,nodev", path_arg(image)?, path_arg(at)?];
    run("mount", &args).await.map_err(|e| {
        failed(format!(
            "named volume {name:?}: {e} (named volumes are loop-mounted images: the daemon \
             must run as root)"
        ))
    })
}

impl Volumes {
    /// Named volume `name` of the ensemble directory `dir`, mounted at `dir/mnt/<name>`:
    /// its image itself, or for an encrypted one the plaintext view gocryptfs gives of the
    /// ciphertext kept in the image (mounted at `dir/backing/<name>`).
    async fn named(
        &self,
        dir: &Path,
        name: &str,
        size: u64,
        encrypted: bool,
    ) -> Result<PathBuf, ActorError> {
        let image = image(dir, name, size, encrypted).await?;
        let mnt = dir.join("mnt").join(name);
        if !is_mounted(&mnt).await? {
            if encrypted {
                self.open_encrypted(name, &image, dir, &mnt).await?;
            } else {
                mount_image(name, &image, &mnt).await?;
            }
        }
        // World-writable like a fresh Docker volume seen by a non-root user; only the
        // ensemble's own allocations mount it.
        let data = mnt.join(DATA_DIR);
        if !data.exists() {
            tokio::fs::create_dir(&data).await.map_err(failed)?;
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777))
                .await
                .map_err(failed)?;
        }
        Ok(data)
    }

    /// Opens encrypted named volume `name`: its image at `dir/backing/<name>`, the
    /// gocryptfs plaintext view of the ciphertext inside at `mnt`.
    async fn open_encrypted(
        &self,
        name: &str,
        image: &Path,
        dir: &Path,
        mnt: &Path,
    ) -> Result<(), ActorError> {
        let backing = dir.join("backing").join(name);
        mount_image(name, image, &backing).await?;
        let cipher = backing.join("cipher");
        let held = self.keys.lock().ok().and_then(|k| k.get(image).cloned());
        let key = match held {
            Some(k) => k,
            None if cipher.join("gocryptfs.conf").exists() => {
                return Err(failed(format!(
                    "encrypted named volume {name:?} cannot be opened: its key lived only in \
                     this provider's memory, and the provider restarted with the volume \
                     closed (its data cannot be read without the key)"
                )));
            }
            None => {
                // A new volume: a random key that never touches the disk.
                let key = hex::encode(rand::random::<[u8; 32]>());
                let _ = tokio::fs::remove_dir_all(&cipher).await;
                tokio::fs::create_dir_all(&cipher).await.map_err(failed)?;
                let err = backing.join("gocryptfs.err");
                run_keyed(
                    "gocryptfs",
                    &[
                        "-init",
                        "-q",
                        "-nosyslog",
                        "-scryptn",
                        "10",
                        path_arg(&cipher)?,
                    ],
                    &key,
                    &err,
                )
                .await
                .map_err(|e| failed(format!("encrypted named volume {name:?}: {e}")))?;
                if let Ok(mut k) = self.keys.lock() {
                    k.insert(image.to_path_buf(), key.clone());
                }
                key
            }
        };
        tokio::fs::create_dir_all(mnt).await.map_err(failed)?;
        let err = backing.join("gocryptfs.err");
        let args = [
            "-q",
            "-nosyslog",
            "-allow_other",
            path_arg(&cipher)?,
            path_arg(mnt)?,
        ];
        run_keyed("gocryptfs", &args, &key, &err)
            .await
            .map_err(|e| failed(format!("encrypted named volume {name:?}: {e}")))
    }
}

/// A GlusterFS client's TLS material, PEM text as NuNet's ensembles carry it.
struct Tls<'a> {
    key: &'a str,
    pem: &'a str,
    ca: &'a str,
}

/// GlusterFS volume `name` from `servers`, mounted once per ensemble (and client
/// certificate). (Name and servers checked with [`problems`]: plain names, never a `mount`
/// option.)
async fn glusterfs(
    dir: &Path,
    servers: &[String],
    name: &str,
    tls: Option<Tls<'_>>,
) -> Result<PathBuf, ActorError> {
    let (first, rest) = servers
        .split_first()
        .ok_or_else(|| failed(format!("GlusterFS volume {name:?} names no server")))?;
    let identity = tls.as_ref().map_or("", |t| t.pem);
    let key = hex::encode(&Sha256::digest(format!("{}/{name}/{identity}", servers.join(",")))[..8]);
    let mnt = dir.join("glusterfs").join(format!("{name}-{key}"));
    if is_mounted(&mnt).await? {
        return Ok(mnt);
    }
    tokio::fs::create_dir_all(&mnt).await.map_err(failed)?;
    // The client's own log says why a mount failed (`mount` only says that it did).
    let log = dir.join("glusterfs").join(format!("{name}-{key}.log"));
    let _ = tokio::fs::remove_file(&log).await;
    // Set-user-ID files and device nodes on the server mean nothing here.
    let mut options = format!("nosuid,nodev,log-file={}", path_arg(&log)?);
    if !rest.is_empty() {
        options.push_str(&format!(",backup-volfile-servers={}", rest.join(":")));
    }
    let mounted = match &tls {
        None => {
            let remote = format!("{first}:/{name}");
            run(
                "mount",
                &["-t", "glusterfs", "-o", &options, &remote, path_arg(&mnt)?],
            )
            .await
        }
        Some(t) => {
            let files = dir.join("glusterfs").join(format!("{name}-{key}.tls"));
            tls_mount(&files, servers, name, t, &log, &mnt).await
        }
    };
    if let Err(e) = mounted {
        let why = tokio::fs::read_to_string(&log)
            .await
            .map(|l| client_errors(&l))
            .unwrap_or_default();
        return Err(failed(format!(
            "GlusterFS volume {name:?} from {}: {e}{}",
            servers.join(", "),
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({why})")
            }
        )));
    }
    Ok(mnt)
}

/// Mounts TLS volume `name` with the client's own certificate, key and CA list. `mount -t
/// glusterfs` passes one translator option at most, so the FUSE client runs directly, as
/// `mount.glusterfs` would run it, with the three TLS paths set on the volume's client
/// translators: the volume file the server hands out names the server's own files there.
/// The material is written under `files` (mode 0700, the key 0600) and removed with the
/// ensemble's volume directory.
async fn tls_mount(
    files: &Path,
    servers: &[String],
    name: &str,
    t: &Tls<'_>,
    log: &Path,
    mnt: &Path,
) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let _ = std::fs::remove_dir_all(files);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(files)
        .map_err(|e| format!("{}: {e}", files.display()))?;
    let mut opts = Vec::new();
    for (file, text, option) in [
        ("client.pem", t.pem, "ssl-own-cert"),
        ("client.key", t.key, "ssl-private-key"),
        ("ca.pem", t.ca, "ssl-ca-list"),
    ] {
        let p = files.join(file);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        std::io::Write::write_all(&mut f, format!("{}\n", text.trim()).as_bytes())
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let path = p.to_str().ok_or("not UTF-8")?;
        opts.push(format!(
            "--xlator-option={name}-client-*.transport.socket.{option}={path}"
        ));
    }
    let mut args: Vec<String> = servers
        .iter()
        .map(|s| format!("--volfile-server={s}"))
        .collect();
    args.push(format!("--volfile-id={name}"));
    args.push(format!("--log-file={}", log.to_str().ok_or("not UTF-8")?));
    // Set-user-ID files and device nodes on the server mean nothing here.
    args.push("--fuse-mountopts=nosuid,nodev".into());
    args.extend(opts);
    args.push(mnt.to_str().ok_or("not UTF-8")?.to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let up = match run("glusterfs", &argv).await {
        Ok(()) => tls_mount_up(mnt).await,
        Err(e) => Err(e),
    };
    if up.is_err() {
        if let Some(p) = mnt.to_str() {
            let _ = run("umount", &["-l", p]).await;
        }
        // The key goes with the failed mount.
        let _ = std::fs::remove_dir_all(files);
    }
    up
}

/// How long a TLS mount may take to answer.
const TLS_MOUNT_WAIT: Duration = Duration::from_secs(15);

/// Waits until the FUSE client's mount at `mnt` answers. The client forks before it
/// connects: a refused certificate ends it moments later (its mount gone, or left without
/// its daemon). A live mount's root answers with inode 1 (what mount.glusterfs checks). A
/// look at the mount can block while the client connects, so each runs on a blocking
/// thread and the whole wait is bounded.
async fn tls_mount_up(mnt: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    enum Seen {
        Up,
        Waiting,
        Failed(String),
    }
    let started = tokio::time::Instant::now();
    let deadline = started + TLS_MOUNT_WAIT;
    loop {
        let at = mnt.to_path_buf();
        let early = started.elapsed() <= Duration::from_secs(2);
        let look = tokio::task::spawn_blocking(move || match system::mount_state(&at) {
            Err(e) => Seen::Failed(e.message),
            Ok(system::MountState::Live) => match std::fs::metadata(&at) {
                Ok(m) if m.ino() == 1 => Seen::Up,
                Ok(_) => Seen::Waiting,
                Err(e) => Seen::Failed(format!("the mount does not answer ({e})")),
            },
            Ok(system::MountState::Dead) => {
                Seen::Failed("the client gave up on the mount".to_string())
            }
            Ok(system::MountState::Absent) if early => Seen::Waiting,
            Ok(system::MountState::Absent) => {
                Seen::Failed("the client ended without mounting".to_string())
            }
        });
        let timed_out = || format!("the mount did not answer within {TLS_MOUNT_WAIT:?}");
        match tokio::time::timeout_at(deadline, look).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(e)) => return Err(format!("looking at the mount: {e}")),
            Ok(Ok(Seen::Up)) => return Ok(()),
            Ok(Ok(Seen::Failed(why))) => return Err(why),
            Ok(Ok(Seen::Waiting)) if tokio::time::Instant::now() >= deadline => {
                return Err(timed_out());
            }
            Ok(Ok(Seen::Waiting)) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The GlusterFS client log's errors and management messages (why a mount failed), the
/// last three, without timestamps and source locations.
fn client_errors(log: &str) -> String {
    let msgs: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("] E [") || l.contains("-mgmt: "))
        .filter_map(|l| l.rsplit_once("]").map(|(_, m)| m))
        .filter_map(|m| m.split_once(": ").map(|(_, m)| m.trim()))
        .filter(|m| !m.is_empty())
        .collect();
    msgs[msgs.len().saturating_sub(3)..].join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_glusterfs_client_log_says_why() {
        let log = "[2026-12-05 18:03:07.093043 +0000] I [glusterfsd.c:2447:daemonize] 0-glusterfs: Pid of current running process is 15283
[2026-12-05 18:03:07.096964 +0000] I [glusterfsd-mgmt.c:2673:mgmt_rpc_notify] 0-glusterfsd-mgmt: disconnected from remote-host: 10.99.0.1
[2026-12-05 18:03:07.096976 +0000] I [glusterfsd-mgmt.c:2712:mgmt_rpc_notify] 0-glusterfsd-mgmt: Exhausted all volfile servers
[2026-12-05 18:03:07.097255 +0000] I [fuse-bridge.c:7065:fini] 0-fuse: Unmounting '/tmp/gm2'.";
        assert_eq!(
            client_errors(log),
            "disconnected from remote-host: 10.99.0.1; Exhausted all volfile servers"
        );
        assert_eq!(client_errors(""), "");
    }
}
