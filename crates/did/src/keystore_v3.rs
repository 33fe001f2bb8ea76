//! NuNet's key files (keystore version 3), so a `~/.nunet/key` written by NuNet's DMS opens
//! here as it is.
//!
//! ```json
//! {"id":"dms","crypto":{"cipher":"aes-256-ctr","ciphertext":"<hex>","cipherparams":{"iv":"<16 bytes hex>"},
//!  "kdf":"scrypt","kdfparams":{"n":262144,"r":8,"p":1,"dklen":64,"salt":"<hex>"},"mac":"<hex>"},"version":3}
//! ```
//! `dk = scrypt(passphrase, salt, n, r, p, dklen)`; the MAC is SHA3-256(`dk[32..64]` ‖
//! ciphertext), checked before anything is decrypted; the plaintext is AES-256-CTR under
//! `dk[..32]` and holds a libp2p protobuf private key (`{1: key type, 2: key bytes}`).
//! Only ed25519 keys (type 1) can become a [`Keypair`]; other types are named in the error.

use aes::cipher::{KeyIvInit, StreamCipher};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha3::{Digest, Sha3_256};
use zeroize::Zeroizing;

use crate::Keypair;

/// The `version` of NuNet's key files.
pub const VERSION: u32 = 3;
const CIPHER: &str = "aes-256-ctr";
const KDF: &str = "scrypt";
/// `dk[..32]` encrypts, `dk[32..64]` authenticates.
const DKLEN: usize = 64;

/// scrypt cost of a file written here: NuNet's production values (N = 2^18, r = 8, p = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScryptCost {
    /// log2 of N.
    pub log_n: u8,
    /// Block size.
    pub r: u32,
    /// Parallelism.
    pub p: u32,
}

impl ScryptCost {
    /// What NuNet's DMS writes.
    pub const NUNET: Self = Self {
        log_n: 18,
        r: 8,
        p: 1,
    };
    /// Cheap parameters for tests only (NuNet's `SetTestScryptParams` does the same).
    pub const INSECURE_FAST: Self = Self {
        log_n: 4,
        r: 8,
        p: 1,
    };
}

/// A NuNet key file as JSON. Go's decoder matches keys case-insensitively, so `Crypto`
/// (as Ethereum tools write it) is read too; keys Go would ignore are ignored.
#[derive(Serialize, Deserialize)]
pub(crate) struct File {
    #[serde(default)]
    pub id: String,
    #[serde(alias = "Crypto")]
    crypto: CryptoSection,
    pub version: u32,
}

#[derive(Serialize, Deserialize)]
struct CryptoSection {
    cipher: String,
    ciphertext: String,
    cipherparams: CipherParams,
    kdf: String,
    kdfparams: ScryptParams,
    mac: String,
}

#[derive(Serialize, Deserialize)]
struct CipherParams {
    iv: String,
}

#[derive(Serialize, Deserialize)]
struct ScryptParams {
    n: u64,
    r: u32,
    p: u32,
    dklen: usize,
    salt: String,
}

/// Why a NuNet key file does not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum V3Error {
    /// Something in the file is malformed or outside the accepted bounds.
    #[error("{0}")]
    Malformed(String),
    /// The MAC does not match: a wrong passphrase, or an altered file.
    #[error("wrong passphrase (or the file was altered)")]
    WrongPassphrase,
    /// A key of a type this node cannot sign with.
    #[error(
        "it holds a {0} key; this node signs with ed25519 keys only (NuNet's default). \
         Create an ed25519 key with `nunet key new`"
    )]
    UnsupportedKeyType(&'static str),
}

fn malformed(what: impl Into<String>) -> V3Error {
    V3Error::Malformed(what.into())
}

impl ScryptParams {
    /// Bounds keep a crafted file from costing gigabytes or hours: N ≤ 2^20 and
    /// 128·N·r ≤ 1 GiB of memory.
    fn cost(&self) -> Result<scrypt::Params, V3Error> {
        if !self.n.is_power_of_two() || self.n < 2 {
            return Err(malformed(format!(
                "scrypt n = {} is not a power of two",
                self.n
            )));
        }
        let log_n = self.n.trailing_zeros();
        let mem = 128u64
            .saturating_mul(self.n)
            .saturating_mul(u64::from(self.r));
        if log_n > 20 || !(1..=32).contains(&self.r) || !(1..=16).contains(&self.p) || mem > 1 << 30
        {
            return Err(malformed(format!(
                "scrypt cost n={} r={} p={} is outside the accepted bounds (n ≤ 2^20, r ≤ 32, p ≤ 16, ≤ 1 GiB)",
                self.n, self.r, self.p
            )));
        }
        if self.dklen != DKLEN {
            return Err(malformed(format!(
                "scrypt dklen = {}; NuNet's files use {DKLEN}",
                self.dklen
            )));
        }
        scrypt::Params::new(log_n as u8, self.r, self.p, DKLEN)
            .map_err(|e| malformed(format!("scrypt parameters: {e}")))
    }
}

fn hex_field(name: &str, value: &str) -> Result<Vec<u8>, V3Error> {
    hex::decode(value).map_err(|e| malformed(format!("{name} is not hex: {e}")))
}

fn derive(passphrase: &str, salt: &[u8], cost: &scrypt::Params) -> Zeroizing<[u8; DKLEN]> {
    let mut dk = Zeroizing::new([0u8; DKLEN]);
    // The output length was checked when `cost` was built, so this cannot fail.
    if scrypt::scrypt(passphrase.as_bytes(), salt, cost, dk.as_mut()).is_err() {
        unreachable!("scrypt output length is fixed at {DKLEN}");
    }
    dk
}

fn mac(dk: &[u8; DKLEN], ciphertext: &[u8]) -> [u8; 32] {
    let mut h = Sha3_256::new();
    h.update(&dk[32..]);
    h.update(ciphertext);
    h.finalize().into()
}

fn ctr(dk: &[u8; DKLEN], iv: &[u8; 16], data: &mut [u8]) {
    let mut c = ctr::Ctr128BE::<aes::Aes256>::new(dk[..32].into(), iv.into());
    c.apply_keystream(data);
}

/// Parses a key file's JSON.
pub(crate) fn parse(bytes: &[u8]) -> Result<File, V3Error> {
    let f: File = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if f.version != VERSION {
        return Err(malformed(format!("version {} is not {VERSION}", f.version)));
    }
    Ok(f)
}

impl File {
    /// Decrypts the file and returns the ed25519 key it holds.
    pub(crate) fn open(&self, passphrase: &str) -> Result<Keypair, V3Error> {
        let c = &self.crypto;
        if c.cipher != CIPHER || c.kdf != KDF {
            return Err(malformed(format!(
                "cipher {:?} with kdf {:?}; NuNet's files use {CIPHER} with {KDF}",
                c.cipher, c.kdf
            )));
        }
        let cost = c.kdfparams.cost()?;
        let salt = hex_field("salt", &c.kdfparams.salt)?;
        let iv: [u8; 16] = hex_field("iv", &c.cipherparams.iv)?
            .try_into()
            .map_err(|_| malformed("iv is not 16 bytes"))?;
        let want_mac = hex_field("mac", &c.mac)?;
        let mut data = Zeroizing::new(hex_field("ciphertext", &c.ciphertext)?);
        if data.len() > 4096 {
            return Err(malformed("ciphertext is longer than any private key"));
        }
        let dk = derive(passphrase, &salt, &cost);
        // Not secret-dependent timing that matters: the MAC is public in the file.
        if mac(&dk, &data)[..] != want_mac[..] {
            return Err(V3Error::WrongPassphrase);
        }
        ctr(&dk, &iv, &mut data);
        keypair_from_protobuf(&data)
    }
}

/// Writes `key` as NuNet writes it (`id` is the key's name).
pub fn seal(
    id: &str,
    key: &Keypair,
    passphrase: &str,
    cost: ScryptCost,
) -> Result<Vec<u8>, V3Error> {
    let params = ScryptParams {
        n: 1u64 << cost.log_n,
        r: cost.r,
        p: cost.p,
        dklen: DKLEN,
        salt: String::new(),
    };
    let scrypt_cost = params.cost()?;
    let mut salt = [0u8; 64];
    let mut iv = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut iv);
    let dk = derive(passphrase, &salt, &scrypt_cost);
    let mut data = keypair_to_protobuf(key);
    ctr(&dk, &iv, &mut data);
    let file = File {
        id: id.to_string(),
        crypto: CryptoSection {
            cipher: CIPHER.into(),
            ciphertext: hex::encode(&data[..]),
            cipherparams: CipherParams {
                iv: hex::encode(iv),
            },
            kdf: KDF.into(),
            kdfparams: ScryptParams {
                salt: hex::encode(salt),
                ..params
            },
            mac: hex::encode(mac(&dk, &data)),
        },
        version: VERSION,
    };
    serde_json::to_vec_pretty(&file).map_err(|e| malformed(e.to_string()))
}

/// libp2p's key types (`crypto.pb.KeyType`).
fn key_type_name(t: u64) -> &'static str {
    match t {
        0 => "RSA",
        1 => "ed25519",
        2 => "secp256k1",
        3 => "ECDSA",
        _ => "unknown-type",
    }
}

/// Decodes libp2p's `PrivateKey {1: KeyType, 2: bytes}` protobuf by hand: two fields, and
/// the error then names a key type instead of a protobuf failure.
fn keypair_from_protobuf(pb: &[u8]) -> Result<Keypair, V3Error> {
    let bad = || malformed("the decrypted key is not a libp2p private key");
    let mut rest = pb;
    let mut key_type = None;
    let mut data: Option<&[u8]> = None;
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        match tag {
            0x08 => {
                let (v, tail) = varint(rest).ok_or_else(bad)?;
                key_type = Some(v);
                rest = tail;
            }
            0x12 => {
                let (len, tail) = varint(rest).ok_or_else(bad)?;
                let len = usize::try_from(len).map_err(|_| bad())?;
                if tail.len() < len {
                    return Err(bad());
                }
                data = Some(&tail[..len]);
                rest = &tail[len..];
            }
            _ => return Err(bad()),
        }
    }
    let (Some(key_type), Some(data)) = (key_type, data) else {
        return Err(bad());
    };
    if key_type != 1 {
        return Err(V3Error::UnsupportedKeyType(key_type_name(key_type)));
    }
    // libp2p's ed25519 private key: seed ‖ public key (64 bytes); the public half must match.
    if data.len() != 64 {
        return Err(malformed(format!(
            "ed25519 private key of {} bytes, not 64",
            data.len()
        )));
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&data[..32]);
    let key = Keypair::from_seed(&seed);
    if key.public().to_bytes()[..] != data[32..] {
        return Err(malformed(
            "the ed25519 key's public half does not match its secret half",
        ));
    }
    Ok(key)
}

fn keypair_to_protobuf(key: &Keypair) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(68));
    out.extend_from_slice(&[0x08, 0x01, 0x12, 0x40]);
    out.extend_from_slice(key.seed().as_ref());
    out.extend_from_slice(&key.public().to_bytes());
    out
}

fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_file_opens_with_its_passphrase_only() {
        let k = Keypair::generate();
        let bytes = seal("dms", &k, "pw", ScryptCost::INSECURE_FAST).unwrap();
        let f = parse(&bytes).unwrap();
        assert_eq!(f.id, "dms");
        assert_eq!(f.open("pw").unwrap().did(), k.did());
        assert_eq!(f.open("other").unwrap_err(), V3Error::WrongPassphrase);
    }

    #[test]
    fn protobuf_of_the_key_matches_libp2p() {
        let k = Keypair::generate();
        let ours = keypair_to_protobuf(&k);
        let theirs = k.to_libp2p().to_protobuf_encoding().unwrap();
        assert_eq!(&ours[..], &theirs[..]);
        assert_eq!(keypair_from_protobuf(&theirs).unwrap().did(), k.did());
    }

    #[test]
    fn other_key_types_and_garbage_are_named() {
        // {1: 2 (secp256k1), 2: 32 bytes}
        let mut secp = vec![0x08, 0x02, 0x12, 0x20];
        secp.extend_from_slice(&[1; 32]);
        assert_eq!(
            keypair_from_protobuf(&secp).unwrap_err(),
            V3Error::UnsupportedKeyType("secp256k1")
        );
        for junk in [&[][..], &[0x08], &[0x12, 0x05, 1], &[0xff, 0x01]] {
            assert!(matches!(
                keypair_from_protobuf(junk),
                Err(V3Error::Malformed(_))
            ));
        }
        // A public half that is not the secret's.
        let k = Keypair::generate();
        let mut pb = keypair_to_protobuf(&k).to_vec();
        pb[40] ^= 1;
        assert!(matches!(
            keypair_from_protobuf(&pb),
            Err(V3Error::Malformed(m)) if m.contains("public half")
        ));
    }

    #[test]
    fn crafted_costs_are_refused_before_deriving() {
        let k = Keypair::generate();
        let bytes = seal("x", &k, "pw", ScryptCost::INSECURE_FAST).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        for (from, to) in [
            ("\"n\": 16", "\"n\": 4194304"),
            ("\"n\": 16", "\"n\": 17"),
            ("\"r\": 8", "\"r\": 4096"),
            ("\"dklen\": 64", "\"dklen\": 32"),
        ] {
            let f = parse(text.replace(from, to).as_bytes()).unwrap();
            assert!(
                matches!(f.open("pw"), Err(V3Error::Malformed(_))),
                "{to} was accepted"
            );
        }
        assert!(parse(text.replace("\"version\": 3", "\"version\": 4").as_bytes()).is_err());
    }
}
