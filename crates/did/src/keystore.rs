//! Key files: one JSON file per named key, `<dir>/<name>.json`, mode 0600 in a 0700 directory.
//!
//! Format (version 1):
//! ```json
//! {"version":1,"name":"dms","did":"did:key:z6Mk…",
//!  "kdf":{"alg":"argon2id","m_cost_kib":65536,"t_cost":3,"p_cost":1,"salt":"<32 bytes hex>"},
//!  "cipher":{"alg":"xchacha20poly1305","nonce":"<24 bytes hex>","ciphertext":"<hex>"}}
//! ```
//! The AEAD key is argon2id(passphrase, salt); the plaintext is the 32-byte ed25519 seed; the
//! associated data binds the file's name and DID, so a file renamed or edited fails to open.
//!
//! NuNet's key files (version 3, [`crate::keystore_v3`]) in the same directory open as they
//! are: `~/.nunet/key/dms.json` written by NuNet's DMS is the same node here.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Did, Keypair, keystore_v3};

const FORMAT_VERSION: u32 = 1;
const AAD_DOMAIN: &str = "nunet-keystore-v1";

/// What went wrong with a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    /// No key of that name.
    #[error("no key named {name:?} in {dir} (create it with `nunet key new {name}`)")]
    NotFound {
        /// Key name.
        name: String,
        /// Keystore directory.
        dir: PathBuf,
    },
    /// A key of that name exists already; keys are never overwritten.
    #[error("a key named {0:?} already exists; keys are never overwritten")]
    AlreadyExists(String),
    /// The passphrase does not open the key.
    #[error("wrong passphrase for key {0:?} (or its ciphertext was altered)")]
    WrongPassphrase(String),
    /// Empty passphrases are refused.
    #[error("the passphrase must not be empty")]
    EmptyPassphrase,
    /// Names are limited so they are safe as file names.
    #[error(
        "invalid key name {0:?}: use 1-64 characters from A-Z a-z 0-9 . _ - (not starting with '.')"
    )]
    InvalidName(String),
    /// The file exists but is not a valid key file.
    #[error("key file {path} is corrupted: {reason}")]
    Corrupt {
        /// File path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file can be read by others than its owner.
    #[error("key file {path} has mode {mode:o}, readable by others; fix with `chmod 600 {path}`")]
    InsecurePermissions {
        /// File path.
        path: PathBuf,
        /// Its current mode bits.
        mode: u32,
    },
    /// NuNet's key files keep the DID inside the encrypted key.
    #[error(
        "key {0:?} is a NuNet key file (keystore v3), which keeps its DID encrypted; \
         unlock it with its passphrase to learn the DID"
    )]
    DidSealed(String),
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost_kib: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism.
    pub p_cost: u32,
}

impl KdfParams {
    /// Production parameters: 64 MiB, 3 passes, 1 lane (≈ 0.2 s on a laptop core).
    pub const DEFAULT: Self = Self {
        m_cost_kib: 64 * 1024,
        t_cost: 3,
        p_cost: 1,
    };
    /// Cheap parameters for tests only: they give no protection against guessing.
    pub const INSECURE_FAST: Self = Self {
        m_cost_kib: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn check(&self) -> Result<(), String> {
        // Bounds keep a crafted file from costing gigabytes or hours to open.
        if !(8..=4 * 1024 * 1024).contains(&self.m_cost_kib) {
            return Err(format!(
                "argon2 memory {} KiB out of range 8..=4GiB",
                self.m_cost_kib
            ));
        }
        if !(1..=64).contains(&self.t_cost) || !(1..=16).contains(&self.p_cost) {
            return Err(format!(
                "argon2 t_cost {} / p_cost {} out of range",
                self.t_cost, self.p_cost
            ));
        }
        Ok(())
    }

    fn derive(&self, passphrase: &str, salt: &[u8]) -> Result<Zeroizing<[u8; 32]>, String> {
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| e.to_string())?;
        let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        a.hash_password_into(passphrase.as_bytes(), salt, out.as_mut())
            .map_err(|e| e.to_string())?;
        Ok(out)
    }
}

impl Default for KdfParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    version: u32,
    name: String,
    did: String,
    kdf: KdfSection,
    cipher: CipherSection,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KdfSection {
    alg: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherSection {
    alg: String,
    nonce: String,
    ciphertext: String,
}

/// A stored key's name and what its file is (or why it could not be read).
pub type KeyEntry = (String, Result<KeyInfo, KeystoreError>);

/// The format of a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// This node's format (version 1: argon2id, XChaCha20-Poly1305, DID in clear).
    Native,
    /// NuNet's keystore format (version 3: scrypt, AES-256-CTR, SHA3 MAC), opened as it is.
    NuNetV3,
}

impl std::fmt::Display for KeyFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyFormat::Native => "nunet-rs v1",
            KeyFormat::NuNetV3 => "NuNet keystore v3",
        })
    }
}

/// What can be known about a key file without its passphrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// Its format.
    pub format: KeyFormat,
    /// Its DID, when the file records it in clear (NuNet's files do not).
    pub did: Option<Did>,
    /// The file's mode when others than its owner can read it (allowed for NuNet's files,
    /// which NuNet may write 0644; this node's own files are refused then).
    pub readable_by_others: Option<u32>,
}

enum Stored {
    Native(KeyFile),
    NuNet { file: keystore_v3::File, mode: u32 },
}

/// Opens a file of this node's format.
fn open_native(
    name: &str,
    path: &Path,
    file: &KeyFile,
    passphrase: &str,
) -> Result<Keypair, KeystoreError> {
    let corrupt = |reason: String| KeystoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    if file.kdf.alg != "argon2id" || file.cipher.alg != "xchacha20poly1305" {
        return Err(corrupt(format!(
            "unsupported algorithms {}/{}",
            file.kdf.alg, file.cipher.alg
        )));
    }
    file.kdf.params.check().map_err(&corrupt)?;
    let did = Did::parse(&file.did).map_err(|e| corrupt(e.to_string()))?;
    let salt = hex::decode(&file.kdf.salt).map_err(|e| corrupt(format!("salt: {e}")))?;
    let nonce = hex::decode(&file.cipher.nonce).map_err(|e| corrupt(format!("nonce: {e}")))?;
    let ct =
        hex::decode(&file.cipher.ciphertext).map_err(|e| corrupt(format!("ciphertext: {e}")))?;
    if salt.len() < 16 || ct.len() != 32 + 16 {
        return Err(corrupt("salt or ciphertext has the wrong length".into()));
    }
    let nonce =
        XNonce::try_from(nonce.as_slice()).map_err(|_| corrupt("nonce must be 24 bytes".into()))?;
    let dk = file
        .kdf
        .params
        .derive(passphrase, &salt)
        .map_err(&corrupt)?;
    let cipher = XChaCha20Poly1305::new_from_slice(dk.as_ref())
        .map_err(|_| corrupt("bad key length".into()))?;
    let aad = aad(name, &did);
    let seed = Zeroizing::new(
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: &ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KeystoreError::WrongPassphrase(name.into()))?,
    );
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| corrupt("decrypted seed has the wrong length".into()))?;
    let key = Keypair::from_seed(&seed);
    if key.did() != did {
        return Err(corrupt(
            "decrypted key does not match the recorded DID".into(),
        ));
    }
    Ok(key)
}

/// A directory of encrypted key files.
#[derive(Clone, Debug)]
pub struct Keystore {
    dir: PathBuf,
    kdf: KdfParams,
}

impl Keystore {
    /// Opens (creating with mode 0700 if needed) the keystore directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, KeystoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io_err(&dir))?;
        Ok(Self {
            dir,
            kdf: KdfParams::DEFAULT,
        })
    }

    /// Uses other KDF parameters for keys created from now on.
    pub fn with_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = kdf;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> Result<PathBuf, KeystoreError> {
        validate_name(name)?;
        Ok(self.dir.join(format!("{name}.json")))
    }

    /// Whether a key of that name exists.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).map(|p| p.exists()).unwrap_or(false)
    }

    /// Generates a key, stores it encrypted under `name`, and returns it.
    pub fn create(&self, name: &str, passphrase: &str) -> Result<Keypair, KeystoreError> {
        let key = Keypair::generate();
        self.save(name, &key, passphrase)?;
        Ok(key)
    }

    /// Stores `key` encrypted under `name`. Refuses to overwrite.
    pub fn save(&self, name: &str, key: &Keypair, passphrase: &str) -> Result<(), KeystoreError> {
        let path = self.path(name)?;
        if passphrase.is_empty() {
            return Err(KeystoreError::EmptyPassphrase);
        }
        let mut salt = [0u8; 32];
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let did = key.did();
        let dk = self
            .kdf
            .derive(passphrase, &salt)
            .map_err(|reason| KeystoreError::Corrupt {
                path: path.clone(),
                reason,
            })?;
        let cipher =
            XChaCha20Poly1305::new_from_slice(dk.as_ref()).map_err(|_| KeystoreError::Corrupt {
                path: path.clone(),
                reason: "bad key length".into(),
            })?;
        let aad = aad(name, &did);
        let seed = key.seed();
        let ct = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: seed.as_ref(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KeystoreError::Corrupt {
                path: path.clone(),
                reason: "encryption failed".into(),
            })?;
        let file = KeyFile {
            version: FORMAT_VERSION,
            name: name.to_string(),
            did: did.to_string(),
            kdf: KdfSection {
                alg: "argon2id".into(),
                params: self.kdf,
                salt: hex::encode(salt),
            },
            cipher: CipherSection {
                alg: "xchacha20poly1305".into(),
                nonce: hex::encode(nonce),
                ciphertext: hex::encode(ct),
            },
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| KeystoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_new_private(&path, &json)
    }

    fn read(&self, name: &str) -> Result<(PathBuf, Stored), KeystoreError> {
        let path = self.path(name)?;
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeystoreError::NotFound {
                    name: name.into(),
                    dir: self.dir.clone(),
                });
            }
            Err(e) => return Err(KeystoreError::Io { path, source: e }),
        };
        let mode = meta.permissions().mode() & 0o777;
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let corrupt = |reason: String| KeystoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        match probe.version {
            FORMAT_VERSION => {
                if mode & 0o077 != 0 {
                    return Err(KeystoreError::InsecurePermissions { path, mode });
                }
                let file: KeyFile =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                if file.name != name {
                    return Err(corrupt(format!(
                        "file holds key {:?}, not {name:?}",
                        file.name
                    )));
                }
                Ok((path, Stored::Native(file)))
            }
            // NuNet's files are opened as they are; a loose mode is reported, not refused.
            keystore_v3::VERSION => {
                let file = keystore_v3::parse(&bytes)
                    .map_err(|e| corrupt(format!("NuNet key file: {e}")))?;
                Ok((path, Stored::NuNet { file, mode }))
            }
            v => Err(corrupt(format!(
                "unsupported key file version {v} (this node reads {FORMAT_VERSION}, and NuNet's {})",
                keystore_v3::VERSION
            ))),
        }
    }

    /// What a stored key file is, without the passphrase.
    pub fn inspect(&self, name: &str) -> Result<KeyInfo, KeystoreError> {
        let (path, stored) = self.read(name)?;
        Ok(match stored {
            Stored::Native(file) => KeyInfo {
                format: KeyFormat::Native,
                did: Some(Did::parse(&file.did).map_err(|e| KeystoreError::Corrupt {
                    path,
                    reason: e.to_string(),
                })?),
                readable_by_others: None,
            },
            Stored::NuNet { mode, .. } => KeyInfo {
                format: KeyFormat::NuNetV3,
                did: None,
                readable_by_others: (mode & 0o077 != 0).then_some(mode),
            },
        })
    }

    /// The DID of a stored key, without the passphrase. NuNet's files keep the DID inside
    /// the encrypted key, so for them this is [`KeystoreError::DidSealed`].
    pub fn did(&self, name: &str) -> Result<Did, KeystoreError> {
        let (path, stored) = self.read(name)?;
        match stored {
            Stored::Native(file) => Did::parse(&file.did).map_err(|e| KeystoreError::Corrupt {
                path,
                reason: e.to_string(),
            }),
            Stored::NuNet { .. } => Err(KeystoreError::DidSealed(name.into())),
        }
    }

    /// Decrypts a stored key (this node's format or NuNet's).
    pub fn load(&self, name: &str, passphrase: &str) -> Result<Keypair, KeystoreError> {
        if passphrase.is_empty() {
            return Err(KeystoreError::EmptyPassphrase);
        }
        let (path, stored) = self.read(name)?;
        match stored {
            Stored::Native(file) => open_native(name, &path, &file, passphrase),
            Stored::NuNet { file, .. } => file.open(passphrase).map_err(|e| match e {
                keystore_v3::V3Error::WrongPassphrase => {
                    KeystoreError::WrongPassphrase(name.into())
                }
                other => KeystoreError::Corrupt {
                    path,
                    reason: format!("NuNet key file: {other}"),
                },
            }),
        }
    }

    /// Adds a key file from elsewhere (NuNet's format or this node's) under `name`, after
    /// checking that `passphrase` opens it. A NuNet file is kept byte for byte, so NuNet's
    /// DMS can still read this home; a file of this node's format is re-sealed under the new
    /// name (its name is bound into its encryption). Never overwrites.
    pub fn import(&self, name: &str, bytes: &[u8], passphrase: &str) -> Result<Did, KeystoreError> {
        let target = self.path(name)?;
        if target.exists() {
            return Err(KeystoreError::AlreadyExists(name.into()));
        }
        if passphrase.is_empty() {
            return Err(KeystoreError::EmptyPassphrase);
        }
        let corrupt = |reason: String| KeystoreError::Corrupt {
            path: PathBuf::from("<imported file>"),
            reason,
        };
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        match probe.version {
            keystore_v3::VERSION => {
                let file = keystore_v3::parse(bytes).map_err(|e| corrupt(e.to_string()))?;
                let key = file.open(passphrase).map_err(|e| match e {
                    keystore_v3::V3Error::WrongPassphrase => {
                        KeystoreError::WrongPassphrase(name.into())
                    }
                    other => corrupt(other.to_string()),
                })?;
                write_new_private(&target, bytes)?;
                Ok(key.did())
            }
            FORMAT_VERSION => {
                let file: KeyFile =
                    serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
                let key = open_native(
                    &file.name.clone(),
                    Path::new("<imported file>"),
                    &file,
                    passphrase,
                )?;
                self.save(name, &key, passphrase)?;
                Ok(key.did())
            }
            v => Err(corrupt(format!("unsupported key file version {v}"))),
        }
    }

    /// All stored keys by name, with their DIDs (or why a file could not be read).
    pub fn list(&self) -> Result<Vec<KeyEntry>, KeystoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let fname = entry.file_name();
            let Some(name) = fname.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if validate_name(name).is_err() {
                continue;
            }
            out.push((name.to_string(), self.inspect(name)));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

fn aad(name: &str, did: &Did) -> String {
    format!("{AAD_DOMAIN}\n{name}\n{did}")
}

fn validate_name(name: &str) -> Result<(), KeystoreError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeystoreError::InvalidName(name.into()))
    }
}

/// Writes a new 0600 file durably: temp file, fsync, atomic rename that refuses to replace.
fn write_new_private(path: &Path, data: &[u8]) -> Result<(), KeystoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|f| f.to_str()).unwrap_or("key"),
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    let res = (|| {
        f.write_all(data)?;
        f.sync_all()?;
        // hard_link fails if the target exists: no silent overwrite even under a race.
        fs::hard_link(&tmp, path)
    })();
    let _ = fs::remove_file(&tmp);
    match res {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            return Err(KeystoreError::AlreadyExists(name.into()));
        }
        Err(e) => {
            return Err(KeystoreError::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn store() -> (tempfile::TempDir, Keystore) {
        let d = tempfile::tempdir().unwrap();
        let ks = Keystore::open(d.path().join("key"))
            .unwrap()
            .with_kdf(KdfParams::INSECURE_FAST);
        (d, ks)
    }

    #[test]
    fn round_trip_and_permissions() {
        let (_d, ks) = store();
        let k = ks.create("dms", "correct horse").unwrap();
        let path = ks.dir().join("dms.json");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(ks.dir()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(ks.did("dms").unwrap(), k.did());
        let back = ks.load("dms", "correct horse").unwrap();
        assert_eq!(back.did(), k.did());
        assert_eq!(*back.seed(), *k.seed());
        let names: Vec<_> = ks.list().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["dms"]);
        // The seed is not in the file in clear.
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex::encode(*k.seed())));
    }

    #[test]
    fn wrong_passphrase_is_clear() {
        let (_d, ks) = store();
        ks.create("user", "right").unwrap();
        let err = ks.load("user", "wrong").unwrap_err();
        assert!(
            matches!(err, KeystoreError::WrongPassphrase(ref n) if n == "user"),
            "{err}"
        );
        assert!(err.to_string().contains("wrong passphrase"));
    }

    #[test]
    fn never_overwrites_and_rejects_bad_names_and_empty_passphrase() {
        let (_d, ks) = store();
        ks.create("a", "p").unwrap();
        assert!(matches!(
            ks.create("a", "p"),
            Err(KeystoreError::AlreadyExists(_))
        ));
        assert!(matches!(
            ks.create("../x", "p"),
            Err(KeystoreError::InvalidName(_))
        ));
        assert!(matches!(
            ks.create(".hidden", "p"),
            Err(KeystoreError::InvalidName(_))
        ));
        assert!(matches!(
            ks.create("b", ""),
            Err(KeystoreError::EmptyPassphrase)
        ));
        assert!(matches!(
            ks.load("nope", "p"),
            Err(KeystoreError::NotFound { .. })
        ));
    }

    #[test]
    fn corrupted_files_give_clear_errors() {
        let (_d, ks) = store();
        ks.create("k", "p").unwrap();
        let path = ks.dir().join("k.json");
        let orig = fs::read_to_string(&path).unwrap();
        let set = |s: &str| {
            fs::remove_file(&path).unwrap();
            write_new_private(&path, s.as_bytes()).unwrap();
        };
        // Truncated JSON.
        set(&orig[..orig.len() / 2]);
        assert!(matches!(
            ks.load("k", "p"),
            Err(KeystoreError::Corrupt { .. })
        ));
        // Garbage bytes.
        set("\u{0}\u{1}garbage");
        assert!(matches!(
            ks.load("k", "p"),
            Err(KeystoreError::Corrupt { .. })
        ));
        // A flipped ciphertext byte: authentication fails.
        let mut v: serde_json::Value = serde_json::from_str(&orig).unwrap();
        let ct = v["cipher"]["ciphertext"].as_str().unwrap().to_string();
        let flipped = format!("{}{}", if &ct[..1] == "0" { "1" } else { "0" }, &ct[1..]);
        v["cipher"]["ciphertext"] = flipped.into();
        set(&v.to_string());
        assert!(matches!(
            ks.load("k", "p"),
            Err(KeystoreError::WrongPassphrase(_))
        ));
        // Swapped DID: associated data no longer matches.
        let mut v: serde_json::Value = serde_json::from_str(&orig).unwrap();
        v["did"] = Keypair::generate().did().to_string().into();
        set(&v.to_string());
        assert!(ks.load("k", "p").is_err());
        // Absurd KDF cost from a crafted file is refused before any work.
        let mut v: serde_json::Value = serde_json::from_str(&orig).unwrap();
        v["kdf"]["m_cost_kib"] = u32::MAX.into();
        set(&v.to_string());
        assert!(matches!(
            ks.load("k", "p"),
            Err(KeystoreError::Corrupt { .. })
        ));
        // Group/world readable files are refused.
        set(&orig);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ks.load("k", "p"),
            Err(KeystoreError::InsecurePermissions { .. })
        ));
    }
}
