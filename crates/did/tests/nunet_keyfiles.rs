//! NuNet's key files (written by an independent implementation, `fixtures/make-nunet-keys.py`,
//! from NuNet's Go code) open here as they are.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use nunet_did::{KeyFormat, Keystore, KeystoreError};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> (String, HashMap<String, String>) {
    let text = fs::read_to_string(fixtures().join("nunet-keys.expected")).unwrap();
    let mut pass = String::new();
    let mut dids = HashMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once(' ').unwrap();
        if k == "passphrase" {
            pass = v.to_string();
        } else {
            dids.insert(k.to_string(), v.to_string());
        }
    }
    (pass, dids)
}

/// A NuNet home's key directory, files 0644 as a Go program with the default umask writes them.
fn nunet_home() -> (tempfile::TempDir, Keystore) {
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("key");
    fs::create_dir(&keys).unwrap();
    for (fixture, name) in [
        ("nunet-dms.json", "dms"),
        ("nunet-user.json", "user"),
        ("nunet-capital-crypto.json", "eth-style"),
        ("nunet-secp256k1.json", "secp"),
    ] {
        let to = keys.join(format!("{name}.json"));
        fs::copy(fixtures().join(fixture), &to).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let ks = Keystore::open(keys).unwrap();
    (d, ks)
}

#[test]
fn nunet_key_files_open_with_their_passphrase() {
    let (pass, dids) = expected();
    let (_d, ks) = nunet_home();
    for (name, fixture) in [
        ("dms", "nunet-dms.json"),
        ("user", "nunet-user.json"),
        ("eth-style", "nunet-capital-crypto.json"),
    ] {
        let info = ks.inspect(name).unwrap();
        assert_eq!(info.format, KeyFormat::NuNetV3);
        assert_eq!(info.did, None, "NuNet files keep the DID encrypted");
        assert_eq!(info.readable_by_others, Some(0o644));
        assert!(matches!(ks.did(name), Err(KeystoreError::DidSealed(_))));
        let key = ks.load(name, &pass).unwrap();
        assert_eq!(key.did().to_string(), dids[fixture], "{name}");
    }
    let listed: Vec<_> = ks.list().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(listed, ["dms", "eth-style", "secp", "user"]);
}

#[test]
fn wrong_passphrase_and_foreign_key_types_are_named() {
    let (pass, _) = expected();
    let (_d, ks) = nunet_home();
    assert!(matches!(
        ks.load("user", "not it"),
        Err(KeystoreError::WrongPassphrase(n)) if n == "user"
    ));
    let err = ks.load("secp", &pass).unwrap_err().to_string();
    assert!(
        err.contains("secp256k1") && err.contains("ed25519"),
        "{err}"
    );
    assert!(matches!(
        ks.load("user", ""),
        Err(KeystoreError::EmptyPassphrase)
    ));
}

#[test]
fn import_keeps_a_nunet_file_byte_for_byte_and_never_overwrites() {
    let (pass, dids) = expected();
    let d = tempfile::tempdir().unwrap();
    let ks = Keystore::open(d.path().join("key")).unwrap();
    let bytes = fs::read(fixtures().join("nunet-user.json")).unwrap();
    // A wrong passphrase imports nothing.
    assert!(matches!(
        ks.import("me", &bytes, "nope"),
        Err(KeystoreError::WrongPassphrase(_))
    ));
    assert!(!ks.exists("me"));
    let did = ks.import("me", &bytes, &pass).unwrap();
    assert_eq!(did.to_string(), dids["nunet-user.json"]);
    assert_eq!(fs::read(ks.dir().join("me.json")).unwrap(), bytes);
    assert_eq!(
        ks.inspect("me").unwrap().readable_by_others,
        None,
        "imported 0600"
    );
    assert_eq!(ks.load("me", &pass).unwrap().did(), did);
    assert!(matches!(
        ks.import("me", &bytes, &pass),
        Err(KeystoreError::AlreadyExists(_))
    ));
    // Garbage is refused with the reason.
    assert!(matches!(
        ks.import("junk", b"{\"version\":3}", &pass),
        Err(KeystoreError::Corrupt { .. })
    ));
}
