//! A storage node's GlusterFS volumes (NuNet's storage mode, `general.storage_mode`):
//! `/dms/volume/create`, `/dms/volume/start` and `/dms/volume/delete`, run through the
//! `gluster` CLI against this host's `glusterd`.
//!
//! Every volume is TLS-only and belongs to one client certificate, the one its creator sent:
//! `server.ssl` and `client.ssl` are on, the brick trusts that certificate alone
//! (`ssl.ca-list`) and admits its common name alone (`auth.ssl-allow`). The bricks present this
//! node's certificate (`<ca dir>/glusterfs.pem`, made on first start when missing), which the
//! create reply returns for the client's CA list. Only the DID that created a volume may start
//! or delete it; that record lives next to the volume's certificate, so it survives a restart.
//!
//! Each volume's brick lives on a filesystem of its own: an ext4 image of the volume's size
//! (the create call's `size`, else `general.storage_volume_size_mb`), allocated in full when
//! the volume is made and loop-mounted beside it, so a volume holds no more than its size
//! and a node refuses a volume its disk cannot hold. The images are mounted again when the
//! daemon starts.
//!
//! This crate must not mount anything but its own bricks (the provider mounts volumes for
//! its allocations) and must not touch glusterd's global TLS files (`/etc/ssl/glusterfs.*`,
//! `/var/lib/glusterd/secure-access`): management traffic stays as the operator set it up.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nunet_actor::{ActorError, ActorSystem};
use nunet_protocol::call;
use nunet_protocol::calls::{CreateVolume, DeleteVolume, StartVolume};
use nunet_protocol::{VolumeCreate, VolumeCreated, VolumeDone, VolumeRef};
use serde::{Deserialize, Serialize};

/// How long one `gluster` command may take.
const GLUSTER_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest volume name.
pub const MAX_NAME: usize = 64;
/// Largest client certificate accepted (PEM).
pub const MAX_CLIENT_PEM: usize = 64 << 10;
/// Smallest volume, in bytes.
pub const MIN_VOLUME: u64 = nunet_config::MIN_STORAGE_VOLUME_MB << 20;
/// Largest volume, in bytes.
pub const MAX_VOLUME: u64 = nunet_config::MAX_STORAGE_VOLUME_MB << 20;
/// How long making or mounting a brick's filesystem may take.
const BRICK_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file or directory of the storage node.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was done.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The volume name is not one GlusterFS takes.
    #[error(
        "volume name {0:?}: use 1 to {MAX_NAME} letters, digits, '-' or '_', starting with a letter or digit"
    )]
    Name(String),
    /// The client certificate cannot be used.
    #[error("client_pem: {0}")]
    Certificate(String),
    /// This node's own certificate could not be made.
    #[error("this storage node's certificate: {0}")]
    OwnCertificate(String),
    /// The requested size is out of bounds.
    #[error("size: {0} bytes; a volume has {min} to {max} bytes", min = MIN_VOLUME, max = MAX_VOLUME)]
    Size(u64),
    /// The brick's filesystem could not be made or mounted.
    #[error("brick {}: {why}", path.display())]
    Brick {
        /// The image or mount point.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// A volume of that name exists.
    #[error("volume {0:?} exists on this storage node")]
    Exists(String),
    /// No volume of that name was created here.
    #[error("no volume {0:?} was created on this storage node")]
    Missing(String),
    /// The caller did not create the volume.
    #[error("volume {name:?} belongs to {owner}, not to {caller}")]
    NotOwner {
        /// The volume.
        name: String,
        /// Who created it.
        owner: String,
        /// Who asked.
        caller: String,
    },
    /// `gluster` failed or could not run.
    #[error("gluster {command}: {output}")]
    Gluster {
        /// The command's arguments.
        command: String,
        /// What it said (or why it did not run).
        output: String,
    },
}

impl From<StorageError> for ActorError {
    fn from(e: StorageError) -> Self {
        ActorError::failed(e.to_string())
    }
}

/// What is kept about a volume (`<ca dir>/volumes/<name>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The DID that created it.
    owner: String,
    /// Its brick directory.
    brick: PathBuf,
    /// The common name its client certificate carries (`auth.ssl-allow`).
    client_cn: String,
    /// Written before glusterd is asked and cleared once the volume is made: a record still
    /// pending after a crash names what its owner's delete cleans up.
    #[serde(default)]
    pending: bool,
    /// The brick's filesystem image (none: a volume made before bricks had their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<PathBuf>,
    /// Where the image is mounted (the brick is a directory inside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mount: Option<PathBuf>,
    /// The volume's size in bytes.
    #[serde(default)]
    size: u64,
}

/// The storage node: where bricks and certificates go, and how to reach glusterd.
#[derive(Debug)]
pub struct Storage {
    bricks: PathBuf,
    ca: PathBuf,
    hostname: String,
    socket: Option<PathBuf>,
    /// One volume operation at a time (glusterd takes one transaction at a time anyway).
    lock: tokio::sync::Mutex<()>,
    /// Size of a volume whose create call names none.
    default_size: u64,
}

impl Storage {
    /// The storage node `cfg` describes, or `None` when `general.storage_mode` is off. Makes
    /// the brick and certificate directories, and this node's certificate when missing.
    pub fn from_config(cfg: &nunet_config::Config) -> Result<Option<Arc<Self>>, StorageError> {
        let g = &cfg.general;
        if !g.storage_mode {
            return Ok(None);
        }
        let or = |p: &Path, d: &str| {
            if p.as_os_str().is_empty() {
                g.data_dir.join("storage").join(d)
            } else {
                p.to_path_buf()
            }
        };
        let s = Storage {
            bricks: or(&g.storage_bricks_dir, "bricks"),
            ca: or(&g.storage_ca_directory, "ca"),
            hostname: g.storage_glusterfs_hostname.trim().to_string(),
            socket: (!g.storage_glusterd_socket.as_os_str().is_empty())
                .then(|| g.storage_glusterd_socket.clone()),
            lock: tokio::sync::Mutex::new(()),
            default_size: g.storage_volume_size_mb.saturating_mul(1 << 20),
        };
        for d in [&s.bricks, &s.ca.join("volumes")] {
            std::fs::create_dir_all(d).map_err(|e| io("create", d, e))?;
        }
        s.own_certificate()?;
        s.mount_bricks();
        Ok(Some(Arc::new(s)))
    }

    /// Mounts every recorded volume's brick image that is not mounted (after a reboot). A
    /// brick that cannot be mounted is logged; glusterd then finds its brick directory
    /// without the volume's id and does not serve it.
    fn mount_bricks(&self) {
        let Ok(entries) = std::fs::read_dir(self.ca.join("volumes")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let Some(vol) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(Some(rec)) = self.record(vol) else {
                continue;
            };
            let (Some(image), Some(at)) = (rec.image, rec.mount) else {
                continue;
            };
            if !image.exists() || is_mounted(&at) {
                continue;
            }
            let r = std::fs::create_dir_all(&at)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    std::process::Command::new("mount")
                        .args(["-o", "loop,nosuid,nodev"])
                        .arg(&image)
                        .arg(&at)
                        .stdin(std::process::Stdio::null())
                        .output()
                        .map_err(|e| e.to_string())
                        .and_then(|o| {
                            if o.status.success() {
                                Ok(())
                            } else {
                                Err(String::from_utf8_lossy(&o.stderr).trim().to_string())
                            }
                        })
                });
            match r {
                Ok(()) => {
                    tracing::info!(volume = %vol, brick = %at.display(), "mounted a volume's brick")
                }
                Err(why) => tracing::warn!(volume = %vol, image = %image.display(), %why,
                    "could not mount a volume's brick; glusterd will not serve it"),
            }
        }
    }

    /// `<ca>/glusterfs.pem`, made with its key when both are missing (one without the
    /// other is refused: replacing a key would lock out every client that trusts its
    /// certificate).
    fn own_certificate(&self) -> Result<String, StorageError> {
        let (pem, key) = (self.ca.join("glusterfs.pem"), self.ca.join("glusterfs.key"));
        if pem.exists() != key.exists() {
            return Err(StorageError::OwnCertificate(format!(
                "{} and {} go together: one is missing (restore it, or remove both to make a new pair, which clients must then trust again)",
                pem.display(),
                key.display()
            )));
        }
        if !pem.exists() {
            let mut params = rcgen::CertificateParams::new(vec![self.hostname.clone()])
                .map_err(|e| StorageError::OwnCertificate(e.to_string()))?;
            params.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("nunet storage {}", self.hostname),
            );
            let pair = rcgen::KeyPair::generate()
                .map_err(|e| StorageError::OwnCertificate(e.to_string()))?;
            let cert = params
                .self_signed(&pair)
                .map_err(|e| StorageError::OwnCertificate(e.to_string()))?;
            write_private(&key, pair.serialize_pem().as_bytes())?;
            std::fs::write(&pem, cert.pem()).map_err(|e| io("write", &pem, e))?;
            tracing::info!(cert = %pem.display(), "made this storage node's TLS certificate");
        }
        std::fs::read_to_string(&pem).map_err(|e| io("read", &pem, e))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.ca.join("volumes").join(format!("{name}.json"))
    }

    fn client_ca_path(&self, name: &str) -> PathBuf {
        self.ca.join("volumes").join(format!("{name}.ca"))
    }

    fn record(&self, name: &str) -> Result<Option<Record>, StorageError> {
        let p = self.record_path(name);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io("read", &p, std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &p, e)),
        }
    }

    /// The record of `name`, when `caller` created it.
    fn owned(&self, caller: &str, name: &str) -> Result<Record, StorageError> {
        check_name(name)?;
        let r = self
            .record(name)?
            .ok_or_else(|| StorageError::Missing(name.to_string()))?;
        if r.owner != caller {
            return Err(StorageError::NotOwner {
                name: name.to_string(),
                owner: r.owner,
                caller: caller.to_string(),
            });
        }
        Ok(r)
    }

    /// Creates volume `req.name` for `owner`: one brick on this node, TLS on, only
    /// `req.client_pem` admitted. Undone when any step fails.
    pub async fn create(
        &self,
        owner: &str,
        req: &VolumeCreate,
    ) -> Result<VolumeCreated, StorageError> {
        check_name(&req.name)?;
        let cn = client_common_name(&req.client_pem)?;
        let size = req.size.unwrap_or(self.default_size);
        if !(MIN_VOLUME..=MAX_VOLUME).contains(&size) {
            return Err(StorageError::Size(size));
        }
        let _one = self.lock.lock().await;
        if self.record(&req.name)?.is_some() {
            return Err(StorageError::Exists(req.name.clone()));
        }
        // Volume names are the whole cluster's: one this node did not make is never touched.
        if self.gluster(&["volume", "info", &req.name]).await.is_ok() {
            return Err(StorageError::Exists(req.name.clone()));
        }
        let own = self.own_certificate()?;
        let mount = self.bricks.join(format!(
            "{}-{}",
            req.name,
            hex::encode(rand::random::<[u8; 6]>())
        ));
        let image = mount.with_extension("img");
        let brick = mount.join("brick");
        let ca = self.client_ca_path(&req.name);
        let mut rec = Record {
            owner: owner.to_string(),
            brick: brick.clone(),
            client_cn: cn,
            pending: true,
            image: Some(image.clone()),
            mount: Some(mount.clone()),
            size,
        };
        let mut created = false;
        let made = async {
            self.write_record(&req.name, &rec)?;
            make_brick(&image, &mount, &brick, size).await?;
            std::fs::write(&ca, req.client_pem.trim().to_string() + "\n")
                .map_err(|e| io("write", &ca, e))?;
            let spec = format!("{}:{}", self.hostname, path_str(&brick)?);
            self.gluster(&["volume", "create", &req.name, &spec, "force"])
                .await?;
            created = true;
            let (own_cert, own_key) =
                (self.ca.join("glusterfs.pem"), self.ca.join("glusterfs.key"));
            for (k, v) in [
                ("server.ssl", "on"),
                ("client.ssl", "on"),
                ("auth.ssl-allow", rec.client_cn.as_str()),
                ("ssl.own-cert", path_str(&own_cert)?),
                ("ssl.private-key", path_str(&own_key)?),
                ("ssl.ca-list", path_str(&ca)?),
            ] {
                self.gluster(&["volume", "set", &req.name, k, v]).await?;
            }
            Ok::<_, StorageError>(())
        }
        .await;
        let made = match made {
            Ok(()) => {
                rec.pending = false;
                self.write_record(&req.name, &rec)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = made {
            // Undo what this call made, and only that.
            if created {
                let _ = self.gluster(&["volume", "delete", &req.name]).await;
            }
            if is_mounted(&mount) {
                let _ = run("umount", &[path_str(&mount)?], &mount).await;
            }
            if !is_mounted(&mount) {
                let _ = remove_tree(mount).await;
                let _ = std::fs::remove_file(&image);
            }
            let _ = std::fs::remove_file(&ca);
            let _ = std::fs::remove_file(self.record_path(&req.name));
            return Err(e);
        }
        tracing::info!(volume = %req.name, %owner, client = %rec.client_cn, bytes = size, "created a GlusterFS volume");
        Ok(VolumeCreated {
            ok: true,
            ca_data: own,
            error: String::new(),
        })
    }

    /// Starts `name` (again: `force` also restarts a brick process that died).
    pub async fn start(&self, caller: &str, name: &str) -> Result<VolumeDone, StorageError> {
        let _one = self.lock.lock().await;
        self.owned(caller, name)?;
        self.gluster(&["volume", "start", name, "force"]).await?;
        Ok(VolumeDone::ok())
    }

    /// Stops and deletes `name`, then removes its brick (its data), certificate and record.
    /// A volume glusterd no longer has (a create cut short by a crash) is only cleaned up.
    pub async fn delete(&self, caller: &str, name: &str) -> Result<VolumeDone, StorageError> {
        let _one = self.lock.lock().await;
        let rec = self.owned(caller, name)?;
        match self.gluster(&["volume", "info", name]).await {
            Ok(info) => {
                if info.contains("Status: Started") {
                    self.gluster(&["volume", "stop", name, "force"]).await?;
                }
                self.gluster(&["volume", "delete", name]).await?;
            }
            Err(StorageError::Gluster { output, .. }) if output.contains("does not exist") => {
                tracing::info!(volume = %name, "glusterd has no such volume; cleaning up");
            }
            Err(e) => return Err(e),
        }
        match (&rec.mount, &rec.image) {
            (Some(mount), Some(image)) => {
                // Never delete through a mount: a brick that stays mounted keeps its record
                // so that the delete can be asked again.
                if is_mounted(mount) {
                    run("umount", &[path_str(mount)?], mount).await?;
                }
                remove_tree(mount.clone()).await?;
                match std::fs::remove_file(image) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io("remove", image, e));
                    }
                    _ => {}
                }
            }
            _ => remove_tree(rec.brick.clone()).await?,
        }
        for p in [self.client_ca_path(name), self.record_path(name)] {
            let _ = std::fs::remove_file(p);
        }
        tracing::info!(volume = %name, "deleted a GlusterFS volume and its brick");
        Ok(VolumeDone::ok())
    }

    /// Writes `name`'s record aside and renames it into place (never half a record).
    fn write_record(&self, name: &str, rec: &Record) -> Result<(), StorageError> {
        let p = self.record_path(name);
        let tmp = p.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(rec)
            .map_err(|e| io("write", &p, std::io::Error::other(e)))?;
        std::fs::write(&tmp, bytes).map_err(|e| io("write", &tmp, e))?;
        std::fs::rename(&tmp, &p).map_err(|e| io("write", &p, e))
    }

    /// Runs `gluster --mode=script <args>`; its output, or its output as the error.
    async fn gluster(&self, args: &[&str]) -> Result<String, StorageError> {
        let mut cmd = tokio::process::Command::new("gluster");
        if let Some(s) = &self.socket {
            cmd.arg(format!("--glusterd-sock={}", s.display()));
        }
        cmd.arg("--mode=script").args(args).kill_on_drop(true);
        let failed = |output: String| StorageError::Gluster {
            command: args.join(" "),
            output,
        };
        let out = tokio::time::timeout(GLUSTER_TIMEOUT, cmd.output())
            .await
            .map_err(|_| {
                failed(format!(
                    "no answer within {GLUSTER_TIMEOUT:?} (is glusterd running?)"
                ))
            })?
            .map_err(|e| {
                failed(format!(
                    "cannot run gluster ({e}); install glusterfs-server"
                ))
            })?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(failed(text))
        }
    }
}

/// Registers the volume behaviours on the root actor. On a node that is not in storage mode
/// they answer why, rather than not being there.
pub fn register(system: &ActorSystem, storage: Option<Arc<Storage>>) -> Result<(), ActorError> {
    fn serving(s: &Option<Arc<Storage>>) -> Result<Arc<Storage>, ActorError> {
        s.clone().ok_or_else(|| {
            ActorError::failed(
                "this node does not serve volumes (general.storage_mode is off; see docs/config.md)",
            )
        })
    }
    /// Runs `op` to its end even when the caller's message expires meanwhile (dropping it
    /// would kill `gluster` between steps of a transaction glusterd finishes anyway).
    async fn whole<T: Send + 'static>(
        op: impl Future<Output = Result<T, StorageError>> + Send + 'static,
    ) -> Result<T, ActorError> {
        tokio::spawn(op)
            .await
            .map_err(|e| ActorError::failed(format!("volume operation: {e}")))?
            .map_err(ActorError::from)
    }
    call::register::<CreateVolume, _, _, _>(
        system,
        "root",
        storage.clone(),
        |s, m, req| async move {
            let s = serving(&s)?;
            whole(async move { s.create(&m.sender.to_string(), &req).await }).await
        },
    )?;
    call::register::<StartVolume, _, _, _>(
        system,
        "root",
        storage.clone(),
        |s, m, req: VolumeRef| async move {
            let s = serving(&s)?;
            whole(async move { s.start(&m.sender.to_string(), &req.name).await }).await
        },
    )?;
    call::register::<DeleteVolume, _, _, _>(
        system,
        "root",
        storage,
        |s, m, req: VolumeRef| async move {
            let s = serving(&s)?;
            whole(async move { s.delete(&m.sender.to_string(), &req.name).await }).await
        },
    )
}

/// GlusterFS volume names: letters, digits, `-`, `_`; this crate also keeps them short and
/// starting with a letter or digit (they name files here).
fn check_name(name: &str) -> Result<(), StorageError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Name(name.to_string()))
    }
}

/// The common name of the one certificate in `pem`, which must be valid now and a name
/// `auth.ssl-allow` takes literally (no list separators or wildcards).
pub fn client_common_name(pem: &str) -> Result<String, StorageError> {
    let bad = |m: &str| StorageError::Certificate(m.to_string());
    if pem.len() > MAX_CLIENT_PEM {
        return Err(bad("larger than 64 KiB"));
    }
    if pem.matches("-----BEGIN").count() != 1 {
        return Err(bad("expected exactly one PEM certificate"));
    }
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes())
        .map_err(|e| bad(&format!("not a PEM certificate ({e})")))?;
    if block.label != "CERTIFICATE" {
        return Err(bad(&format!("a PEM {:?}, not a CERTIFICATE", block.label)));
    }
    let cert = block
        .parse_x509()
        .map_err(|e| bad(&format!("not an X.509 certificate ({e})")))?;
    if !cert.validity().is_valid() {
        return Err(bad(
            "the certificate is not valid now (expired or not yet valid)",
        ));
    }
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string)
        .ok_or_else(|| bad("the certificate's subject has no common name (CN)"))?;
    let ok = !cn.is_empty()
        && cn.len() <= 64
        && cn
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " .-_@:".contains(c));
    if !ok {
        return Err(bad(&format!(
            "common name {cn:?}: use letters, digits, spaces and . - _ @ : (it is matched literally)"
        )));
    }
    Ok(cn)
}

/// Runs `tool args` (making or mounting the brick at `at`); its failure as a brick error.
async fn run(tool: &str, args: &[&str], at: &Path) -> Result<(), StorageError> {
    let brick = |why: String| StorageError::Brick {
        path: at.to_path_buf(),
        why,
    };
    let out = tokio::time::timeout(
        BRICK_TIMEOUT,
        tokio::process::Command::new(tool)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        brick(format!(
            "{tool} did not finish in {}s",
            BRICK_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| brick(format!("cannot run {tool}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(brick(format!(
        "{tool} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The brick's own filesystem: `image` allocated in full (`size` bytes: a disk that cannot
/// hold it says so now, not as write errors later), ext4 on it, mounted at `mount`, and the
/// brick directory inside.
async fn make_brick(
    image: &Path,
    mount: &Path,
    brick: &Path,
    size: u64,
) -> Result<(), StorageError> {
    let img = path_str(image)?;
    run("fallocate", &["-l", &size.to_string(), img], image)
        .await
        .map_err(|e| match e {
            StorageError::Brick { path, why } => StorageError::Brick {
                path,
                why: format!("this node's disk cannot hold a volume of {size} bytes: {why}"),
            },
            other => other,
        })?;
    run("mkfs.ext4", &["-q", "-F", "-m", "0", img], image).await?;
    std::fs::create_dir_all(mount).map_err(|e| io("create", mount, e))?;
    run(
        "mount",
        &["-o", "loop,nosuid,nodev", img, path_str(mount)?],
        mount,
    )
    .await?;
    std::fs::create_dir(brick).map_err(|e| io("create", brick, e))
}

/// Whether something is mounted at `at` (`/proc/self/mountinfo`, field 5).
fn is_mounted(at: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = at.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// Removes a brick directory (any size) off the async runtime; one already gone is fine.
async fn remove_tree(dir: PathBuf) -> Result<(), StorageError> {
    let d = dir.clone();
    let r = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&d) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    })
    .await
    .map_err(|e| io("remove", &dir, std::io::Error::other(e)))?;
    r.map_err(|e| io("remove", &dir, e))
}

fn path_str(p: &Path) -> Result<&str, StorageError> {
    p.to_str().ok_or_else(|| {
        io(
            "use",
            p,
            std::io::Error::other("not UTF-8, which gluster's arguments need"),
        )
    })
}

fn io(what: &'static str, path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io("write", path, e))?;
    f.write_all(bytes).map_err(|e| io("write", path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cert(cn: &str) -> String {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let k = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&k).unwrap().pem()
    }

    #[test]
    fn client_certificates_are_read_for_their_common_name_and_refused_with_the_reason() {
        assert_eq!(client_common_name(&cert("alice")).unwrap(), "alice");
        let two = cert("a") + &cert("b");
        for (pem, why) in [
            ("garbage".to_string(), "exactly one"),
            (two, "exactly one"),
            (cert("a,b"), "matched literally"),
            (cert("*"), "matched literally"),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
                "not an X.509",
            ),
            (
                rcgen::KeyPair::generate().unwrap().serialize_pem(),
                "not a CERTIFICATE",
            ),
        ] {
            let e = client_common_name(&pem).unwrap_err().to_string();
            assert!(e.starts_with("client_pem: ") && e.contains(why), "{e}");
        }
        let mut no_cn = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        no_cn.distinguished_name = rcgen::DistinguishedName::new();
        let k = rcgen::KeyPair::generate().unwrap();
        let e = client_common_name(&no_cn.self_signed(&k).unwrap().pem()).unwrap_err();
        assert!(e.to_string().contains("no common name"), "{e}");
    }

    #[test]
    fn volume_names_are_checked() {
        for ok in ["v1", "Data_2", "a-b"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", "../x", "a/b", "a b", &"x".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(StorageError::Name(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn a_storage_node_makes_its_certificate_once_and_refuses_strangers() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = nunet_config::Config::defaults(d.path());
        assert!(Storage::from_config(&cfg).unwrap().is_none());
        cfg.general.storage_mode = true;
        cfg.general.storage_glusterfs_hostname = "10.9.0.1".into();
        let s = Storage::from_config(&cfg).unwrap().unwrap();
        let ca = d.path().join("data/storage/ca");
        let pem = std::fs::read_to_string(ca.join("glusterfs.pem")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ca.join("glusterfs.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second start keeps it.
        drop(s);
        let s = Storage::from_config(&cfg).unwrap().unwrap();
        assert_eq!(
            std::fs::read_to_string(ca.join("glusterfs.pem")).unwrap(),
            pem
        );
        // A key without its certificate (or the reverse) is not silently replaced.
        drop(s);
        std::fs::remove_file(ca.join("glusterfs.pem")).unwrap();
        let e = Storage::from_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("go together"), "{e}");
        std::fs::write(ca.join("glusterfs.pem"), &pem).unwrap();
        let s = Storage::from_config(&cfg).unwrap().unwrap();
        // A volume nobody created, or that someone else created, is refused before glusterd
        // is asked.
        let e = s.start("did:key:zA", "v1").await.unwrap_err();
        assert!(matches!(e, StorageError::Missing(_)), "{e}");
        let rec = Record {
            owner: "did:key:zA".into(),
            brick: d.path().join("b"),
            client_cn: "alice".into(),
            pending: false,
            image: None,
            mount: None,
            size: 0,
        };
        std::fs::write(s.record_path("v1"), serde_json::to_vec(&rec).unwrap()).unwrap();
        let e = s.delete("did:key:zB", "v1").await.unwrap_err().to_string();
        assert!(
            e.contains("belongs to did:key:zA, not to did:key:zB"),
            "{e}"
        );
        let e = s.start("did:key:zA", "../v1").await.unwrap_err();
        assert!(matches!(e, StorageError::Name(_)), "{e}");
        // A size out of bounds is refused before anything is made.
        for size in [1 << 20, MAX_VOLUME + 1] {
            let req = VolumeCreate {
                name: "v2".into(),
                client_pem: cert("bob"),
                size: Some(size),
            };
            let e = s.create("did:key:zA", &req).await.unwrap_err();
            assert!(matches!(e, StorageError::Size(_)), "{e}");
        }
        assert_eq!(
            std::fs::read_dir(d.path().join("data/storage/bricks"))
                .unwrap()
                .count(),
            0
        );
    }
}
