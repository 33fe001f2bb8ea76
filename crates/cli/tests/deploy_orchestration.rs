//! Deployment orchestration against real processes (a 3-node `nunet devnet`, real dockerd,
//! `nunet-test/busybox:latest`): a static public port is published by the provider and
//! locked (a second deployment of the same ensemble is not placed on that provider), and is
//! free again after shutdown; provision scripts run inside the container before the workload.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deploy_support::*;
use serde_json::Value;

fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// A static public port for a deployment to publish, reserved while this lives.
struct PublicPort {
    port: u16,
    _lock: std::fs::File,
}

/// A port the deployer names for the provider to publish: the one place where a port is
/// chosen for someone else to bind later, so it is chosen where nothing else takes it. It is
/// in the provider range (16384 and up) but below the kernel's ephemeral range, which the
/// kernel never hands out (no `bind(0)` or `connect()` anywhere gets it); it is reserved
/// against the other tests (a lock file per port, held while the [`PublicPort`] lives, so
/// parallel tests and test runs never choose the same; in /tmp/nunet-test-ports); and it is
/// free now.
fn public_port() -> PublicPort {
    let ephemeral_lo: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let (lo, hi) = (16384u16, ephemeral_lo.max(16385));
    let span = u32::from(hi - lo);
    // One directory for every run on this machine, whatever its TMPDIR.
    let dir = std::path::Path::new("/tmp/nunet-test-ports");
    if std::fs::create_dir_all(dir).is_ok() {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777));
    }
    let first = std::process::id() % span;
    for k in 0..span {
        let port = lo + ((first + k) % span) as u16;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
            .unwrap();
        if lock.try_lock().is_ok() && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return PublicPort { port, _lock: lock };
        }
    }
    panic!("no free port in {lo}..{hi}");
}

fn http_get(port: u16) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn web(dir: &Path, port: u16) -> PathBuf {
    write(
        dir,
        &format!("web-{port}.yaml"),
        &format!(
            r#"version: V1
scripts:
  page: "mkdir -p /www && echo port-test-page > /www/index.html"
allocations:
  web:
    executor: docker
    type: service
    provision: [page]
    resources: {{cpu: {{cores: 0.25}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [httpd, -f, -p, "8080", -h, /www]
nodes:
  front:
    allocations: [web]
    ports:
      - {{public: {port}, private: 8080, allocation: web}}
"#
        ),
    )
}

#[test]
fn static_port_is_published_locked_and_released() {
    let dn = Devnet::up(0);
    dn.onboard(2);
    let public = public_port();
    let port = public.port;
    let file = web(&dn.dir, port);
    let f = file.to_str().unwrap();
    let v = dn.json(1, &["deploy", "-f", f, "-t", "60s", "--json"]);
    assert_eq!(v["status"], "Running", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["manifest"]["allocations"]["front.web"]["ports"][port.to_string()],
        8080,
        "{v}"
    );
    // The page written by the provision script is served on the public port.
    let t0 = Instant::now();
    let page = loop {
        match http_get(port) {
            Ok(p) if p.contains("port-test-page") => break p,
            other => assert!(t0.elapsed() < Duration::from_secs(10), "{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(page.starts_with("HTTP/1."), "{page}");

    // Node-2 is the only onboarded provider and holds the port: no bid, a clear failure.
    let (code, out) = dn.run(1, &["deploy", "-f", f, "-t", "16s", "--json"]);
    assert_ne!(code, 0, "second deployment on a locked port: {out}");
    let second: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    if !second.is_null() {
        assert_eq!(second["status"], "Failed", "{second}");
        assert!(second["manifest"]["nodes"]["front"].is_null(), "{second}");
    }

    // After shutdown the port is free again: a listener can take it.
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    let t0 = Instant::now();
    while std::net::TcpListener::bind(("0.0.0.0", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "port {port} still bound"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(dn.resources(2, "free"), dn.resources(2, "onboarded"));
    assert!(containers_of(&id).is_empty());
    // …and a new deployment gets it.
    let v = dn.json(1, &["deploy", "-f", f, "-t", "60s", "--json"]);
    assert_eq!(v["status"], "Running", "{v}");
    let id2 = v["id"].as_str().unwrap().to_string();
    let (code, out) = dn.run(1, &["deployment", "shutdown", &id2]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn provision_scripts_run_before_the_task_and_failures_name_the_script() {
    let dn = Devnet::up(0);
    dn.onboard(2);
    let yaml = |second: &str| {
        format!(
            r#"version: V1
scripts:
  make: "echo provisioned-content > /tmp/p.txt"
  check: "{second}"
allocations:
  t:
    executor: docker
    type: task
    provision: [make, check]
    resources: {{cpu: {{cores: 0.25}}, ram: {{size: 64MiB}}, disk: {{size: 50MiB}}}}
    execution:
      type: docker
      image: nunet-test/busybox:latest
      cmd: [cat, /tmp/p.txt]
nodes:
  n:
    allocations: [t]
"#
        )
    };
    let ok = write(&dn.dir, "prov-ok.yaml", &yaml("test -f /tmp/p.txt"));
    let v = dn.json(
        1,
        &["deploy", "-f", ok.to_str().unwrap(), "-t", "60s", "--json"],
    );
    assert_eq!(v["status"], "Completed", "{v}");
    let (code, logs) = dn.run(1, &["deployment", "logs", v["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("provisioned-content"), "{logs}");

    let bad = write(&dn.dir, "prov-bad.yaml", &yaml("exit 9"));
    let (_, out) = dn.run(
        1,
        &["deploy", "-f", bad.to_str().unwrap(), "-t", "60s", "--json"],
    );
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["status"], "Failed", "{v}");
    let reason = v["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("provision script check failed with exit code 9"),
        "{v}"
    );
}
