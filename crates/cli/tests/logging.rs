//! The daemon's log file on a devnet of real daemons: JSON lines in
//! `observability.logging.file` (relative to the node home), the level changed at run time
//! through NuNet's `/dms/node/logger/config` without a restart, and rotation at the
//! configured `rotation.max_size_mb` with no line split across files.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use deploy_support::*;
use serde_json::Value;

/// The file's complete lines (a last line still being written is left out), each JSON.
fn lines(p: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{p:?}: not JSON ({e}): {l}")))
        .collect()
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with("dms-") && n.ends_with(".log")
        })
        .collect();
    v.sort();
    v
}

/// Node 1's level, through NuNet's behavior; returns the reply.
fn set_level(dn: &Devnet, level: &str) -> Value {
    dn.json(
        1,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/logger/config",
            "--level",
            level,
        ],
    )
}

#[test]
fn json_log_file_level_changed_at_run_time_and_rotated_at_the_configured_size() {
    let dn = Devnet::up_with_env(
        0,
        &[
            ("DMS_OBSERVABILITY_LOGGING_FILE", "logs/dms.log"),
            ("DMS_OBSERVABILITY_LOGGING_ROTATION_MAX_SIZE_MB", "1"),
            ("DMS_OBSERVABILITY_LOGGING_ROTATION_MAX_BACKUPS", "2"),
        ],
    );
    let dir = dn.dir.join("node-1/logs");
    let file = dir.join("dms.log");
    let did = dn.json(1, &["actor", "cmd", "--json", "/dms/node/peers/self"])["did"]
        .as_str()
        .unwrap()
        .to_string();
    let started = wait_for(
        "'node started' in the log file",
        Duration::from_secs(20),
        |seen| {
            let l = lines(&file);
            *seen = format!("{} lines", l.len());
            l.into_iter()
                .find(|v| v["fields"]["message"] == "node started")
        },
    );
    assert_eq!(started["level"], "INFO", "{started}");
    assert_eq!(started["fields"]["did"], did.as_str(), "{started}");
    assert!(started["timestamp"].is_string(), "{started}");
    assert!(
        lines(&file).iter().all(|v| v["level"] != "DEBUG"),
        "level info: no debug lines"
    );

    // A deployment's orchestration lines carry its id (span `deployment`, field `ensemble`),
    // and so do the provider's about its allocation (node 2, at debug: at info it says
    // little).
    dn.onboard(2);
    let v = dn.json(
        2,
        &[
            "actor",
            "cmd",
            "--json",
            "/dms/node/logger/config",
            "--level",
            "debug",
        ],
    );
    assert_eq!(v["level"], "debug", "{v}");
    let v = dn.json(1, &["deploy", "-f", &hello(), "-t", "60s", "--json"]);
    assert_eq!(v["status"], "Completed", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let _guard = Containers(id.clone());
    // The line's innermost span may be a phase (`commit`, `start`, …) inside the deployment's.
    let tagged: Vec<Value> = lines(&file)
        .into_iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["name"] == "deployment"))
        })
        .collect();
    assert!(!tagged.is_empty(), "no line in a deployment span");
    for l in &tagged {
        let dep = l["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "deployment")
            .unwrap();
        assert_eq!(dep["ensemble"], id.as_str(), "{l}");
    }
    let provider = lines(&dn.dir.join("node-2/logs/dms.log"));
    let spans_of = |name: &str| {
        provider
            .iter()
            .filter(|l| {
                l["spans"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|s| s["name"] == name && s["ensemble"] == id.as_str())
                })
            })
            .count()
    };
    assert!(
        spans_of("allocation") > 0,
        "provider lines of the allocation's start"
    );

    // Read, then change, the level: no restart, debug lines follow.
    let v = dn.json(1, &["actor", "cmd", "--json", "/dms/node/logger/config"]);
    assert_eq!(v["level"], "info", "{v}");
    let v = set_level(&dn, "debug");
    assert_eq!(v, serde_json::json!({"OK": true, "level": "debug"}));
    wait_for("a debug line", Duration::from_secs(20), |seen| {
        dn.json(1, &["actor", "cmd", "--json", "/dms/node/peers/list"]);
        let l = lines(&file);
        *seen = format!("{} lines", l.len());
        l.iter().any(|v| v["level"] == "DEBUG").then_some(())
    });
    // What this node cannot do is refused, not ignored.
    let (code, out) = dn.run(
        1,
        &[
            "actor",
            "cmd",
            "/dms/node/logger/config",
            "--url",
            "http://127.0.0.1:9200",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no Elasticsearch"), "{out}");
    let (code, out) = dn.run(
        1,
        &["actor", "cmd", "/dms/node/logger/config", "--level", "loud"],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a log level"), "{out}");

    // Trace fills the file quickly; it is rotated before it passes 1 MiB, and only two
    // rotated files are kept.
    set_level(&dn, "trace");
    // Calls to another node: libp2p's trace lines (yamux frames) fill the file.
    let did2 = dn.json(2, &["actor", "cmd", "--json", "/dms/node/peers/self"])["did"]
        .as_str()
        .unwrap()
        .to_string();
    let mut oldest: Option<PathBuf> = None;
    wait_for(
        "rotations, the oldest pruned",
        Duration::from_secs(120),
        |seen| {
            for _ in 0..5 {
                dn.json(
                    1,
                    &["actor", "cmd", "--json", "-d", &did2, "/public/status"],
                );
            }
            let b = backups(&dir);
            if oldest.is_none() {
                oldest = b.first().cloned();
            }
            *seen = format!(
                "rotated {b:?}, current {:?} bytes",
                std::fs::metadata(&file).map(|m| m.len())
            );
            // At most two kept: the first rotated file goes at the third rotation.
            assert!(b.len() <= 2, "{b:?}");
            (b.len() == 2 && oldest.as_ref().is_some_and(|o| !o.exists())).then_some(())
        },
    );
    set_level(&dn, "info");
    for b in backups(&dir) {
        let size = std::fs::metadata(&b).unwrap().len();
        assert!(size <= 1 << 20, "{b:?}: {size} bytes");
        assert!(
            size > (1 << 20) - (64 << 10),
            "{b:?}: rotated early at {size} bytes"
        );
        // Every line whole: each parses as JSON.
        assert!(!lines(&b).is_empty(), "{b:?}");
    }
}
