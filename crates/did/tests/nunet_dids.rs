//! NuNet's non-ed25519 DIDs, checked against independent implementations: a secp256k1 vector
//! made with Python's `cryptography`, and Ethereum signatures from `fixtures/soft-ledger.py`
//! (its own keccak-256, `cryptography`'s ECDSA) reached through the external signer interface
//! that NuNet's DMS uses for Ledger wallets.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use nunet_did::{Did, ExternalSigner, KeyKind, SecpKeypair, Signer, SignerError};

/// Secret scalar 0x42…42, its DID (`e7 01` ‖ compressed key) and a DER signature over SHA-256
/// of `MSG`, all computed in Python with `cryptography` (the signature happens to be high-S,
/// which NuNet's verifier accepts).
const SECP_DID: &str = "did:key:zQ3shh6BM1i4BuBQKhBL7NtXcfmGXQrUT5JgPT53YYKXJWPHD";
const SECP_MSG: &[u8] = b"dms:token:{\"example\":true}";
const SECP_SIG: &str = "304602210099062d0904c56f7d646d41db08ad6d55f298f537922ad511a974df6dbcc759e30221009036006792fafd150d58f5ef0527eab01d2b981ba517cb1beb59b72892f84364";

const SECRET: &str = "1f2e3d4c5b6a79880102030405060708090a0b0c0d0e0f101112131415161718";

#[test]
fn a_secp256k1_did_and_signature_made_elsewhere_verify() {
    let did = Did::parse(SECP_DID).unwrap();
    assert_eq!(did.kind(), KeyKind::Secp256k1);
    let sig = hex::decode(SECP_SIG).unwrap();
    did.verify(SECP_MSG, &sig).unwrap();
    assert!(did.verify(b"dms:token:{\"example\":false}", &sig).is_err());
    // The same key, derived here, names the same DID.
    let k = SecpKeypair::from_secret(&[0x42; 32]).unwrap();
    assert_eq!(Did::from_secp256k1(&k.public()), did);
}

fn soft_ledger() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/soft-ledger.py")
}

/// Runs the soft ledger with `mode`; each test gets its own environment through a wrapper
/// script, so tests running in parallel do not share `std::env`.
fn signer_program(dir: &std::path::Path, mode: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(format!("ledger-{mode}"));
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nSOFT_LEDGER_SECRET={SECRET} SOFT_LEDGER_MODE={mode} exec python3 {} \"$@\"\n",
            soft_ledger().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn expected_did(account: u8) -> Did {
    let mut secret: [u8; 32] = hex::decode(SECRET).unwrap().try_into().unwrap();
    secret[31] += account;
    Did::from_eth(&SecpKeypair::from_secret(&secret).unwrap().public())
}

#[test]
fn an_external_signer_names_its_eth_did_and_its_signatures_verify() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["normal", "uncompressed"] {
        let s = ExternalSigner::open(
            &signer_program(dir.path(), mode),
            0,
            Duration::from_secs(30),
        )
        .unwrap();
        let did = Signer::did(&s);
        assert_eq!(did.kind(), KeyKind::Eth);
        assert!(did.as_str().starts_with("did:key:zzCH"), "{did}");
        assert_eq!(did, expected_did(0), "{mode}");
        let msg = b"dms:token:{\"act\":\"delegate\"}";
        let sig = s.sign_bytes(msg).unwrap();
        did.verify(msg, &sig).unwrap();
        assert!(did.verify(b"dms:token:{}", &sig).is_err());
    }
    // Another account is another key.
    let s1 = ExternalSigner::open(
        &signer_program(dir.path(), "normal"),
        1,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(Signer::did(&s1), expected_did(1));
    assert_ne!(Signer::did(&s1), expected_did(0));
}

#[test]
fn a_misbehaving_signer_is_named_never_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let t = Duration::from_secs(30);
    // Signs the hex text instead of the bytes: caught here, before any token leaves.
    let hex = ExternalSigner::open(&signer_program(dir.path(), "hex"), 0, t).unwrap();
    assert!(matches!(
        hex.sign_bytes(b"payload"),
        Err(SignerError::WrongSignature { .. })
    ));
    let e = ExternalSigner::open(&signer_program(dir.path(), "fail"), 0, t).unwrap_err();
    assert!(
        matches!(&e, SignerError::Failed { stderr, .. } if stderr.contains("device locked")),
        "{e}"
    );
    let e = ExternalSigner::open(&signer_program(dir.path(), "garbage"), 0, t).unwrap_err();
    assert!(matches!(e, SignerError::BadOutput { .. }), "{e}");
    let e = ExternalSigner::open(
        &signer_program(dir.path(), "hang"),
        0,
        Duration::from_millis(500),
    )
    .unwrap_err();
    assert!(matches!(e, SignerError::Timeout(..)), "{e}");
    let e = ExternalSigner::open(&dir.path().join("no-such-ledger-cli"), 0, t).unwrap_err();
    assert!(matches!(e, SignerError::Spawn { .. }), "{e}");
    // Data too long for one argument is refused before anything runs.
    let ok = ExternalSigner::open(&signer_program(dir.path(), "normal"), 0, t).unwrap();
    assert!(matches!(
        ok.sign_bytes(&vec![0; nunet_did::signer::MAX_SIGNED + 1]),
        Err(SignerError::TooLarge(_))
    ));
}

#[test]
fn a_chatty_signer_does_not_block_and_a_hung_one_is_stopped_with_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    // 1 MiB on stderr (a pipe would fill at 64 KiB and block it): it still answers.
    let s = ExternalSigner::open(
        &signer_program(dir.path(), "flood"),
        0,
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(Signer::did(&s), expected_did(0));
    // A wallet that starts a helper and hangs: the timeout stops both.
    let pidfile = dir.path().join("helper.pid");
    let program = signer_program(dir.path(), "hang-child");
    let wrapped = dir.path().join("ledger-hang-child-wrapped");
    std::fs::write(
        &wrapped,
        format!(
            "#!/bin/sh\nSOFT_LEDGER_PIDFILE={} {} \"$@\"\n",
            pidfile.display(),
            program.display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapped, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let e = ExternalSigner::open(&wrapped, 0, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(e, SignerError::Timeout(..)), "{e}");
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    // SIGKILL is delivered at once; the zombie is reaped by init shortly after.
    let gone = (0..100).any(|_| {
        let alive = std::fs::read_to_string(proc.join("stat"))
            .map(|st| !st.contains(") Z "))
            .unwrap_or(false);
        if alive {
            std::thread::sleep(Duration::from_millis(20));
        }
        !alive
    });
    assert!(gone, "the signer's helper {pid} outlived the timeout");
}
