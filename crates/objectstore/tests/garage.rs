//! Against a real S3-compatible store (Garage on loopback, started by
//! `scripts/s3-test-server.sh`, which `.ci/install-runtimes.sh` runs): publish a directory,
//! list it, stage it back byte for byte, and the failures a deployer meets — wrong
//! credentials, a missing key or prefix, an unreachable endpoint, an endpoint on this host
//! without the operator's leave, more bytes than the budget.
#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::time::Duration;

use nunet_ensemble::data::{S3Credentials, Secret};
use nunet_ensemble::spec::ObjectLocation;
use nunet_objectstore::transfer::{publish, stage};
use nunet_objectstore::{Store, StoreError};

fn server() -> (String, S3Credentials) {
    let dir = PathBuf::from(
        std::env::var("NUNET_TEST_S3_DIR").unwrap_or_else(|_| "/var/lib/nunet-test/garage".into()),
    );
    let creds = std::fs::read_to_string(dir.join("credentials")).expect(
        "no test S3 server: run scripts/s3-test-server.sh (as .ci/install-runtimes.sh does)",
    );
    let endpoint = std::fs::read_to_string(dir.join("endpoint")).unwrap();
    (
        endpoint.trim().to_string(),
        S3Credentials::parse(&creds).unwrap(),
    )
}

fn location(endpoint: &str, bucket: &str) -> ObjectLocation {
    ObjectLocation {
        endpoint: endpoint.to_string(),
        region: "garage".into(),
        bucket: bucket.to_string(),
        key: String::new(),
    }
}

fn bucket_name(what: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("t-{what}-{}-{n}", std::process::id())
}

const T: Duration = Duration::from_secs(20);

#[test]
fn a_directory_published_and_staged_back_is_the_same_bytes() {
    let (endpoint, creds) = server();
    let b = bucket_name("roundtrip");
    let store = Store::new(&location(&endpoint, &b), Some(&creds), true, T).unwrap();
    store.create_bucket().unwrap();
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("sub/deeper")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(out.path().join("sub/deeper/big.bin"), &big).unwrap();
    std::fs::write(out.path().join("a.txt"), "alpha\n").unwrap();
    std::fs::write(out.path().join("empty"), "").unwrap();
    let moved = publish(&store, "results", out.path(), 10 << 20).unwrap();
    assert_eq!((moved.files, moved.bytes), (3, big.len() as u64 + 6));
    let listed = store.list("results/", 100).unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "results/a.txt",
            "results/empty",
            "results/sub/deeper/big.bin"
        ]
    );
    assert_eq!(store.get_bytes("results/a.txt", 100).unwrap(), b"alpha\n");

    let back = tempfile::tempdir().unwrap();
    let staged = stage(&store, "results/", back.path(), 10 << 20).unwrap();
    assert_eq!(staged, moved);
    assert_eq!(
        std::fs::read(back.path().join("sub/deeper/big.bin")).unwrap(),
        big
    );
    assert_eq!(std::fs::read(back.path().join("empty")).unwrap(), b"");
    // One object lands under its last name.
    let one = tempfile::tempdir().unwrap();
    stage(&store, "results/sub/deeper/big.bin", one.path(), 10 << 20).unwrap();
    assert_eq!(std::fs::read(one.path().join("big.bin")).unwrap(), big);

    // The budget is the allocation's disk: a prefix over it is refused before any download,
    // one object over it is cut off and leaves nothing behind.
    let e = stage(
        &store,
        "results/",
        tempfile::tempdir().unwrap().path(),
        1 << 20,
    )
    .unwrap_err();
    assert!(
        matches!(e, StoreError::Limit { .. }) && e.to_string().contains("disk"),
        "{e}"
    );
    let small = tempfile::tempdir().unwrap();
    let e = stage(&store, "results/sub/deeper/big.bin", small.path(), 1000).unwrap_err();
    assert!(e.to_string().contains("larger than the 1000 bytes"), "{e}");
    assert_eq!(std::fs::read_dir(small.path()).unwrap().count(), 0);
}

#[test]
fn wrong_credentials_missing_objects_and_unreachable_stores_say_so() {
    let (endpoint, creds) = server();
    let b = bucket_name("errors");
    let store = Store::new(&location(&endpoint, &b), Some(&creds), true, T).unwrap();
    store.create_bucket().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let wrong = S3Credentials {
        access_key_id: creds.access_key_id.clone(),
        secret_access_key: Secret::new("not-the-secret"),
        session_token: None,
    };
    let bad = Store::new(&location(&endpoint, &b), Some(&wrong), true, T).unwrap();
    let e = stage(&bad, "in/x", dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(e, StoreError::Denied { .. }), "{e:?}");
    assert!(e.to_string().contains("access denied"), "{e}");
    assert!(!e.to_string().contains("not-the-secret"), "{e}");

    let e = stage(&store, "in/missing.csv", dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    assert!(
        e.to_string().contains("s3://") && e.to_string().contains("NoSuchKey"),
        "{e}"
    );
    let e = stage(&store, "nothing/here/", dir.path(), 1 << 20).unwrap_err();
    assert!(
        e.to_string().contains("no objects under this prefix"),
        "{e}"
    );

    // Keys a store may hold that cannot be files under the staging directory are refused;
    // a zero-byte marker of the prefix itself (what "create folder" tools write) is not a file.
    let put = |k: &str, body: &str| {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), body).unwrap();
        store.put_from(k, f.path()).unwrap();
    };
    put("hostile/a//b", "x");
    let e = stage(&store, "hostile/", dir.path(), 1 << 20).unwrap_err();
    assert!(e.to_string().contains("cannot be a file path"), "{e}");
    assert!(
        !dir.path().join("escaped").exists()
            && !dir.path().parent().unwrap().join("escaped").exists()
    );
    put("marked/", "");
    put("marked/a.txt", "a");
    let marked = tempfile::tempdir().unwrap();
    let m = stage(&store, "marked/", marked.path(), 1 << 20).unwrap();
    assert_eq!((m.files, m.bytes), (1, 1));

    // Signed requests to a store on the internet go over https only.
    let public = ObjectLocation {
        endpoint: "http://s3.example.com".into(),
        ..location(&endpoint, &b)
    };
    let e = Store::new(&public, Some(&creds), false, T).unwrap_err();
    assert!(e.to_string().contains("https only"), "{e}");

    // Nothing listens on port 1.
    let gone = Store::new(&location("http://127.0.0.1:1", &b), Some(&creds), true, T).unwrap();
    let e = stage(&gone, "in/x", dir.path(), 1 << 20).unwrap_err();
    assert!(matches!(e, StoreError::Unreachable { .. }), "{e:?}");
    assert!(
        e.to_string().contains("cannot reach http://127.0.0.1:1"),
        "{e}"
    );

    // Without the operator's leave, an endpoint on this host is never connected to.
    let local = Store::new(&location(&endpoint, &b), None, false, T).unwrap();
    let e = stage(&local, "in/x", dir.path(), 1 << 20).unwrap_err();
    assert!(
        e.to_string().contains("not public") && e.to_string().contains("job.s3_private_endpoints"),
        "{e}"
    );
}
