//! Who signs: a key held by this process ([`Keypair`]), or a key held outside it, such as a
//! Ledger hardware wallet, reached through an external program ([`ExternalSigner`]).
//!
//! The external program speaks the interface NuNet's DMS uses for Ledger wallets
//! (`ledger-cli`):
//!
//! - `PROGRAM key -o OUT -a ACCOUNT` writes `{"key": "<hex public key>", "address": "0x…"}` to
//!   `OUT`. The key is a secp256k1 point, compressed (33 bytes) or not (65); the DID is the
//!   key's Ethereum `did:key` (multicodec `0xef01`).
//! - `PROGRAM sign -o OUT -a ACCOUNT <hex of the data>` writes
//!   `{"ecdsa": {"v": <int>, "r": "<hex>", "s": "<hex>"}}`: an EIP-191 `personal_sign`
//!   signature of the data (not of its hex). `v` is not used: the key is known.
//!
//! Every signature an external program returns is checked against its DID before it is used,
//! so a wallet that signed something else (or the hex text instead of the bytes) is reported
//! here, not by the node that receives the token.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Did, KeyError, Keypair, SecpPublicKey};

/// Something that signs as a DID.
pub trait Signer {
    /// The DID whose signatures this makes.
    fn did(&self) -> Did;
    /// A signature of `msg` in the DID's scheme (see [`Did::verify`]).
    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError>;
}

impl Signer for Keypair {
    fn did(&self) -> Did {
        Keypair::did(self)
    }
    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.sign(msg).to_bytes().to_vec())
    }
}

/// Why an external signer gave no usable signature.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// The program could not be started.
    #[error("cannot run the signer {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The program exited with an error.
    #[error("the signer {program} failed ({status}): {stderr}")]
    Failed {
        /// The program.
        program: PathBuf,
        /// Its exit status.
        status: String,
        /// The end of what it wrote on stderr (2 KiB at most).
        stderr: String,
    },
    /// The data is too long to pass to the program as one argument.
    #[error(
        "{0} bytes are too many to sign through an external signer (at most {MAX_SIGNED} bytes)"
    )]
    TooLarge(usize),
    /// The program did not answer in time (a wallet waiting for a confirmation nobody gave).
    #[error(
        "the signer {0} did not answer within {1:?} (was the request confirmed on the device?)"
    )]
    Timeout(PathBuf, Duration),
    /// Its output file is missing or not the expected JSON.
    #[error("the signer {program} wrote no usable answer: {reason}")]
    BadOutput {
        /// The program.
        program: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The signature it returned does not verify for its own DID.
    #[error("the signer's signature does not verify for {did}: {source}")]
    WrongSignature {
        /// The signer's DID.
        did: Did,
        /// Why it failed.
        source: KeyError,
    },
    /// Local I/O (the private scratch directory, waiting for the program).
    #[error("running the signer: {0}")]
    Io(#[from] std::io::Error),
}

/// How long a wallet may take to answer: a person confirms each signature on the device.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest answer file read from a signer.
const MAX_ANSWER: u64 = 64 * 1024;
/// Longest data signed: its hex is one argument, and Linux refuses arguments over 128 KiB.
pub const MAX_SIGNED: usize = 60 * 1024;

/// A key held by an external program that speaks `ledger-cli`'s interface (module docs).
#[derive(Debug, Clone)]
pub struct ExternalSigner {
    program: Program,
    did: Did,
}

impl ExternalSigner {
    /// Asks `program` for the public key of `account` and returns a signer for its DID.
    pub fn open(program: &Path, account: u32, timeout: Duration) -> Result<Self, SignerError> {
        let program = Program {
            program: program.to_path_buf(),
            account,
            timeout,
        };
        let answer: KeyAnswer = program.call("key", &[])?;
        let key = parse_public_key(&answer.key).map_err(|reason| program.bad(reason))?;
        Ok(Self {
            program,
            did: Did::from_eth(&key),
        })
    }

    /// The account index on the device.
    pub fn account(&self) -> u32 {
        self.program.account
    }

    /// The program that is run.
    pub fn program(&self) -> &Path {
        &self.program.program
    }
}

/// The program, the account it signs with, and how long it may take.
#[derive(Debug, Clone)]
struct Program {
    program: PathBuf,
    account: u32,
    timeout: Duration,
}

impl Program {
    fn bad(&self, reason: String) -> SignerError {
        SignerError::BadOutput {
            program: self.program.clone(),
            reason,
        }
    }

    /// Runs `program <verb> -o <scratch file> -a <account> [args]` and parses the file.
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        verb: &str,
        args: &[&str],
    ) -> Result<T, SignerError> {
        use std::os::unix::process::CommandExt;
        let scratch = Scratch::new()?;
        let out = scratch.file("answer.json")?;
        // A file, not a pipe: a chatty program never blocks on a pipe nobody reads, and a
        // helper it leaves behind cannot hold our read open.
        let err = scratch.file("stderr")?;
        let mut child = Command::new(&self.program)
            .arg(verb)
            .arg("-o")
            .arg(&out)
            .arg("-a")
            .arg(self.account.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&err)?))
            // Its own process group, so a timeout stops whatever it started too.
            .process_group(0)
            .spawn()
            .map_err(|source| SignerError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let started = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if started.elapsed() >= self.timeout {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(SignerError::Timeout(self.program.clone(), self.timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if !status.success() {
            return Err(SignerError::Failed {
                program: self.program.clone(),
                status: status.to_string(),
                stderr: tail(&err, 2048),
            });
        }
        let file =
            std::fs::File::open(&out).map_err(|e| self.bad(format!("no answer file ({e})")))?;
        let mut text = String::new();
        use std::io::Read;
        file.take(MAX_ANSWER)
            .read_to_string(&mut text)
            .map_err(|e| self.bad(e.to_string()))?;
        serde_json::from_str(&text).map_err(|e| self.bad(format!("{verb} answer: {e}")))
    }
}

impl Signer for ExternalSigner {
    fn did(&self) -> Did {
        self.did.clone()
    }

    fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        if msg.len() > MAX_SIGNED {
            return Err(SignerError::TooLarge(msg.len()));
        }
        let p = &self.program;
        let answer: SignAnswer = p.call("sign", &[&hex::encode(msg)])?;
        let scalar = |name: &str, h: &str| -> Result<[u8; 32], SignerError> {
            let b = hex::decode(h.trim_start_matches("0x"))
                .map_err(|e| p.bad(format!("{name} is not hex: {e}")))?;
            if b.len() > 32 {
                return Err(p.bad(format!("{name} is {} bytes long", b.len())));
            }
            let mut out = [0u8; 32];
            out[32 - b.len()..].copy_from_slice(&b);
            Ok(out)
        };
        let r = scalar("r", &answer.ecdsa.r)?;
        let s = scalar("s", &answer.ecdsa.s)?;
        let sig = k256::ecdsa::Signature::from_scalars(r, s)
            .map_err(|_| p.bad("r or s is zero or not below the group order".into()))?;
        let sig = sig.normalize_s().unwrap_or(sig);
        let der = sig.to_der().as_bytes().to_vec();
        self.did
            .verify(msg, &der)
            .map_err(|source| SignerError::WrongSignature {
                did: self.did.clone(),
                source,
            })?;
        Ok(der)
    }
}

#[derive(serde::Deserialize)]
struct KeyAnswer {
    key: String,
}

#[derive(serde::Deserialize)]
struct SignAnswer {
    ecdsa: EcdsaAnswer,
}

#[derive(serde::Deserialize)]
struct EcdsaAnswer {
    r: String,
    s: String,
}

/// A wallet's public key in hex: compressed (33 bytes) or uncompressed (65, as Ledger's
/// Ethereum app returns it).
fn parse_public_key(h: &str) -> Result<SecpPublicKey, String> {
    let b = hex::decode(h.trim_start_matches("0x")).map_err(|e| format!("key: {e}"))?;
    let point = match b.len() {
        33 => b,
        65 => k256::ecdsa::VerifyingKey::from_sec1_bytes(&b)
            .map_err(|_| "key is not a secp256k1 point".to_string())?
            .to_encoded_point(true)
            .as_bytes()
            .to_vec(),
        n => return Err(format!("key is {n} bytes (expected 33 or 65)")),
    };
    SecpPublicKey::from_compressed(&point).map_err(|e| e.to_string())
}

/// The last `max` bytes of a file, as text (invalid UTF-8 replaced), trimmed.
fn tail(path: &Path, max: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut bytes = Vec::new();
    let _ = f.take(max).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).trim().to_string()
}

/// A private (0700) scratch directory for one call's files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    /// An empty file in it, 0600 (as NuNet pre-creates the answer file).
    fn file(&self, name: &str) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let p = self.0.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        Ok(p)
    }

    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let mut tag = [0u8; 8];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut tag);
        let dir = std::env::temp_dir().join(format!("nunet-signer-{}", hex::encode(tag)));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
