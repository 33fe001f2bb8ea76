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
//! microVMs get no volumes yet: such an allocation fails with that reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nunet_actor::ActorError;
use nunet_ensemble::Execution;
use nunet_ensemble::spec::{Volume, VolumeSource};
use nunet_executor::Mount;
use sha2::{Digest, Sha256};

use nunet_ensemble::volumes::{
    MAX_NAME, MIN_NAMED_VOLUME_BYTES, is_named, named_volume_size, valid_name,
};

use super::files::LocalFiles;
use super::{AllocRecord, failed};

/// How long `mount`/`umount`/`mkfs` may take (a GlusterFS server that does not answer).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// The provider's volumes.
#[derive(Debug)]
pub(crate) struct Volumes {
    /// `<data_dir>/volumes`.
    base: PathBuf,
    /// `job.volume_roots`.
    roots: LocalFiles,
    /// One mount or removal at a time (two allocations may share a named volume).
    busy: tokio::sync::Mutex<()>,
    /// Keys of the encrypted named volumes made since the daemon started, by image path;
    /// held in memory only, so the provider's disk alone never opens one.
    keys: std::sync::Mutex<std::collections::HashMap<PathBuf, String>>,
}

impl Volumes {
    pub(crate) fn new(data_dir: &Path, roots: &[PathBuf]) -> Self {
        Self {
            base: data_dir.join("volumes"),
            roots: LocalFiles::volumes(roots),
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

    /// The mounts of `rec`'s volumes, creating and mounting what is not there yet.
    pub(crate) async fn mounts(&self, rec: &AllocRecord) -> Result<Vec<Mount>, ActorError> {
        if rec.volumes.is_empty() {
            return Ok(Vec::new());
        }
        if matches!(rec.execution, Execution::Firecracker(_)) {
            return Err(failed(
                "volumes cannot be mounted into microVMs on this provider yet \
                 (docker and WASM allocations get them)",
            ));
        }
        let _one = self.busy.lock().await;
        let mut out: Vec<Mount> = Vec::new();
        for (i, v) in rec.volumes.iter().enumerate() {
            let what = format!("volume[{i}]");
            let target = destination(&what, v)?;
            if out.iter().any(|m| m.target == target) {
                return Err(failed(format!(
                    "{what}: two volumes are mounted at {target}"
                )));
            }
            let source = self
                .source(rec, &what, v)
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

    async fn source(
        &self,
        rec: &AllocRecord,
        what: &str,
        v: &Volume,
    ) -> Result<PathBuf, ActorError> {
        let encrypted = v.encrypted;
        if encrypted && !is_named(v) {
            return Err(failed(
                "only named local volumes are encrypted at rest on this provider",
            ));
        }
        match &v.source {
            VolumeSource::Local { src } if src.starts_with('/') => self
                .roots
                .resolve("src", src)
                .map_err(|e| failed(e.message.replacen("src", &format!("{what} src"), 1))),
            VolumeSource::Local { src } => {
                let dir = self.ensemble_dir(&rec.ensemble_id)?;
                let size = named_volume_size(&rec.volumes, rec.resources.disk.size);
                self.named(&dir, src, size, encrypted).await
            }
            VolumeSource::Glusterfs {
                servers,
                name,
                client_private_key,
                client_pem,
                client_ca,
            } => {
                if client_private_key.is_some() || client_pem.is_some() || client_ca.is_some() {
                    return Err(failed(format!(
                        "GlusterFS volume {name:?}: TLS client material \
                         (client_private_key, client_pem, client_ca) is not supported by \
                         this provider yet; mount it without TLS or on another provider"
                    )));
                }
                let dir = self.ensemble_dir(&rec.ensemble_id)?;
                glusterfs(&dir, servers, name).await
            }
        }
    }

    /// Unmounts and deletes the volumes of `ensemble` (it has no allocation here any more).
    pub(crate) async fn remove(&self, ensemble: &str) {
        let Ok(dir) = self.ensemble_dir(ensemble) else {
            return;
        };
        if !dir.exists() {
            return;
        }
        let _one = self.busy.lock().await;
        for m in mounted_under(&dir) {
            if let Err(e) = unmount(&m).await {
                tracing::warn!(mount = %m.display(), error = %e, "volume not unmounted");
            }
        }
        let left = mounted_under(&dir);
        if !left.is_empty() {
            tracing::warn!(
                ensemble,
                still_mounted = ?left,
                "volumes of a gone ensemble kept: something is still mounted under them"
            );
            return;
        }
        if let Ok(mut k) = self.keys.lock() {
            k.retain(|image, _| !image.starts_with(&dir));
        }
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => tracing::info!(ensemble, "volumes removed"),
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
            self.remove(&e).await;
        }
    }
}

impl super::Provider {
    /// Removes the ensemble's volumes when none of its allocations is on this provider any
    /// more (finished ones keep them: their output may be read after they end).
    pub(super) async fn volumes_down_if_gone(&self, ensemble: &str) {
        let here = self.allocs.lock().is_ok_and(|m| {
            m.values()
                .any(|c| c.lock().is_ok_and(|r| r.ensemble_id == ensemble))
        });
        if !here {
            self.volumes.remove(ensemble).await;
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

/// The checked `mount_destination`, normalised.
fn destination(what: &str, v: &Volume) -> Result<String, ActorError> {
    nunet_ensemble::volumes::destination(&v.mount_destination).ok_or_else(|| {
        failed(format!(
            "{what}: mount_destination {:?} must be an absolute path other than /",
            v.mount_destination
        ))
    })
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
    if size < MIN_NAMED_VOLUME_BYTES {
        return Err(failed(format!(
            "named volume {name:?} takes its size from the allocation's disk \
             (resources.disk), which is {size} bytes; it needs at least {} MiB",
            MIN_NAMED_VOLUME_BYTES >> 20
        )));
    }
    tokio::fs::create_dir_all(&images).await.map_err(failed)?;
    // Made aside and renamed: a crash never leaves a half-made filesystem under the
    // volume's name.
    let tmp = images.join(format!(".{name}.tmp"));
    let f = tokio::fs::File::create(&tmp).await.map_err(failed)?;
    f.set_len(size).await.map_err(failed)?;
    drop(f);
    run("mkfs.ext4", &["-q", "-F", "-m", "0", path_arg(&tmp)?])
        .await
        .map_err(|e| failed(format!("named volume {name:?}: {e}")))?;
    tokio::fs::rename(&tmp, &image).await.map_err(failed)?;
    Ok(image)
}

/// Loop-mounts `image` at `at` unless something is mounted there already.
async fn mount_image(name: &str, image: &Path, at: &Path) -> Result<(), ActorError> {
    if is_mounted(at) {
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
        if !valid_name(name) {
            return Err(failed(format!(
                "volume name {name:?} must be 1-{MAX_NAME} characters of [A-Za-z0-9_.-], \
                 starting with a letter or digit"
            )));
        }
        let image = image(dir, name, size, encrypted).await?;
        let mnt = dir.join("mnt").join(name);
        if is_mounted(&mnt) {
            return Ok(mnt);
        }
        if !encrypted {
            mount_image(name, &image, &mnt).await?;
            return Ok(mnt);
        }
        let backing = dir.join("backing").join(name);
        mount_image(name, &image, &backing).await?;
        let cipher = backing.join("cipher");
        let held = self.keys.lock().ok().and_then(|k| k.get(&image).cloned());
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
                    k.insert(image.clone(), key.clone());
                }
                key
            }
        };
        tokio::fs::create_dir_all(&mnt).await.map_err(failed)?;
        let err = backing.join("gocryptfs.err");
        let args = [
            "-q",
            "-nosyslog",
            "-allow_other",
            path_arg(&cipher)?,
            path_arg(&mnt)?,
        ];
        run_keyed("gocryptfs", &args, &key, &err)
            .await
            .map_err(|e| failed(format!("encrypted named volume {name:?}: {e}")))?;
        Ok(mnt)
    }
}

/// GlusterFS volume `name` from `servers`, mounted once per ensemble.
async fn glusterfs(dir: &Path, servers: &[String], name: &str) -> Result<PathBuf, ActorError> {
    if !valid_name(name) {
        return Err(failed(format!(
            "GlusterFS volume name {name:?} must be [A-Za-z0-9_.-]"
        )));
    }
    let (first, rest) = servers
        .split_first()
        .ok_or_else(|| failed(format!("GlusterFS volume {name:?} names no server")))?;
    if let Some(bad) = servers.iter().find(|s| !valid_name(s)) {
        return Err(failed(format!(
            "GlusterFS server {bad:?} must be a host name or IPv4 address"
        )));
    }
    let key = hex::encode(&Sha256::digest(format!("{}/{name}", servers.join(",")))[..8]);
    let mnt = dir.join("glusterfs").join(format!("{name}-{key}"));
    if is_mounted(&mnt) {
        return Ok(mnt);
    }
    tokio::fs::create_dir_all(&mnt).await.map_err(failed)?;
    // The client's own log says why a mount failed (`mount` only says that it did).
    let log = mnt.with_extension("log");
    let _ = tokio::fs::remove_file(&log).await;
    let mut options = format!("log-file={}", path_arg(&log)?);
    if !rest.is_empty() {
        options.push_str(&format!(",backup-volfile-servers={}", rest.join(":")));
    }
    let remote = format!("{first}:/{name}");
    let args = ["-t", "glusterfs", "-o", &options, &remote, path_arg(&mnt)?];
    if let Err(e) = run("mount", &args).await {
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

fn path_arg(p: &Path) -> Result<&str, ActorError> {
    p.to_str()
        .ok_or_else(|| failed(format!("{} is not UTF-8", p.display())))
}

/// Runs a system tool; its stderr is the error.
async fn run(tool: &str, args: &[&str]) -> Result<(), String> {
    let out = tokio::time::timeout(
        MOUNT_TIMEOUT,
        tokio::process::Command::new(tool)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{tool} did not finish in {}s", MOUNT_TIMEOUT.as_secs()))?
    .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let err = err.trim();
    Err(format!(
        "{tool} failed ({}): {}",
        out.status,
        if err.is_empty() { "no message" } else { err }
    ))
}

/// Runs a tool that reads `key` from its stdin and may leave a daemon behind (gocryptfs): no
/// pipe stays open to that daemon (stdout is discarded, stderr goes to `err`, which is the
/// error when the tool fails).
async fn run_keyed(tool: &str, args: &[&str], key: &str, err: &Path) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let errf = std::fs::File::create(err).map_err(|e| format!("{}: {e}", err.display()))?;
    let mut child = tokio::process::Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(errf)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{key}\n").as_bytes())
            .await
            .map_err(|e| format!("{tool}: {e}"))?;
    }
    let status = tokio::time::timeout(MOUNT_TIMEOUT, child.wait())
        .await
        .map_err(|_| format!("{tool} did not finish in {}s", MOUNT_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{tool}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let msg = std::fs::read_to_string(err).unwrap_or_default();
    Err(format!("{tool} failed ({status}): {}", msg.trim()))
}

async fn unmount(p: &Path) -> Result<(), String> {
    let arg = p.to_str().ok_or("not UTF-8")?;
    match run("umount", &[arg]).await {
        Ok(()) => Ok(()),
        // Busy (a process still holds a file): detach it now, the kernel finishes later.
        Err(_) => run("umount", &["-l", arg]).await,
    }
}

/// Mount points of this process's mount namespace (`/proc/self/mountinfo`, field 5, with
/// its octal escapes undone).
fn mount_points() -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (b[i], oct) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn real(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

fn is_mounted(p: &Path) -> bool {
    let p = real(p);
    mount_points().contains(&p)
}

/// What is mounted under `dir`, last mounted first (an encrypted volume's plaintext view
/// before the image holding its ciphertext).
fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    let dir = real(dir);
    let mut v: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(&dir) && *m != dir)
        .collect();
    v.reverse();
    v
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

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/x\04"), r"/x\04");
    }
}
