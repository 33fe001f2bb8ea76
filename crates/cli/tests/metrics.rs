//! Metrics end to end: a real Prometheus (Debian's `prometheus`) scrapes a 3-node devnet of
//! real daemons; PromQL then sees the onboarded cores, the running deployment and its
//! allocation, the bid round, the executor's start, a denied message with its rule, and
//! libp2p's connections. `promtool check metrics` accepts what every node serves.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use deploy_support::*;
use serde_json::Value;

/// A minimal HTTP/1.0 GET (the daemons and Prometheus are on loopback); returns the status
/// code and the body.
fn get(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: {accept}\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

fn rest_of(dn: &Devnet, node: usize) -> String {
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(dn.dir.join(format!("node-{node}/data/run.json"))).unwrap(),
    )
    .unwrap();
    run["rest"].as_str().unwrap().to_string()
}

/// TCP ports `pid` listens on, read from `/proc` (Prometheus binds port 0; this is how the
/// test learns what it got).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().to_string();
                    l.strip_prefix("socket:[")
                        .and_then(|r| r.strip_suffix(']'))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, …, st (0A = LISTEN), …, inode
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

struct Prometheus {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn scraping(targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: nunet\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let check = Command::new("promtool")
            .args(["check", "config", cfg.to_str().unwrap()])
            .output()
            .expect("promtool (Debian's prometheus package; .ci/install-runtimes.sh installs it)");
        assert!(check.status.success(), "{}", text(&check));
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian's prometheus package)");
        let pid = child.id();
        let mut p = Prometheus {
            child,
            addr: String::new(),
            _dir: dir,
        };
        let port = wait_for("prometheus listening", Duration::from_secs(60), |seen| {
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("prometheus exited: {st}");
            }
            let ports = listening_ports(pid);
            *seen = format!("{ports:?}");
            ports.first().copied()
        });
        p.addr = format!("127.0.0.1:{port}");
        // It listens before it is ready: queries answer 503 until then.
        wait_for("prometheus ready", Duration::from_secs(60), |seen| {
            let (code, body) = get(&p.addr, "/-/ready", "*/*");
            *seen = format!("{code} {body}");
            (code == 200).then_some(())
        });
        p
    }

    /// The value of an instant query that returns one series, or `None` while it returns
    /// none.
    fn value(&self, promql: &str) -> Option<f64> {
        let q: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_.-".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (code, body) = get(
            &self.addr,
            &format!("/api/v1/query?query={q}"),
            "application/json",
        );
        assert_eq!(code, 200, "{promql}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let result = v["data"]["result"].as_array()?;
        assert!(result.len() <= 1, "{promql}: more than one series: {v}");
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` gives `want`.
    fn expect(&self, promql: &str, want: impl Fn(f64) -> bool) -> f64 {
        wait_for(promql, Duration::from_secs(60), |seen| {
            let v = self.value(promql);
            *seen = format!("{v:?}");
            v.filter(|x| want(*x))
        })
    }
}

#[test]
fn prometheus_scrapes_a_devnet_and_sees_resources_deployments_and_denials() {
    let dn = Devnet::up(0);
    dn.onboard(2);
    let rest: Vec<String> = (1..=3).map(|n| rest_of(&dn, n)).collect();
    for r in &rest {
        let (code, body) = get(r, "/metrics", "*/*");
        assert_eq!(code, 200, "{body}");
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(out.status.success(), "promtool: {}\n{body}", text(&out));
        let (code, om) = get(r, "/metrics", "application/openmetrics-text");
        assert_eq!(code, 200);
        assert!(om.ends_with("# EOF\n"), "OpenMetrics when asked: {om}");
    }
    let prom = Prometheus::scraping(&rest);
    // `metric{labels…,instance="<node's API>"}`
    let at = |node: usize, metric: &str, labels: &str| {
        let sep = if labels.is_empty() { "" } else { "," };
        format!("{metric}{{{labels}{sep}instance=\"{}\"}}", rest[node - 1])
    };

    prom.expect(&at(2, "nunet_onboarded_cpu_cores", ""), |v| v == 1.0);
    prom.expect(&at(1, "nunet_onboarded_cpu_cores", ""), |v| v == 0.0);
    prom.expect(&at(2, "nunet_onboarded_memory_bytes", ""), |v| {
        v == 1024.0 * 1024.0 * 1024.0
    });

    let v = dn.deploy_running(1, IDLE_SERVICE);
    let id = v["id"].as_str().unwrap().to_string();
    let _guard = Containers(id.clone());

    prom.expect("sum(nunet_deployments{status=\"running\"})", |v| v == 1.0);
    prom.expect(&at(1, "nunet_deployments", "status=\"running\""), |v| {
        v == 1.0
    });
    prom.expect(&at(2, "nunet_allocations", "status=\"running\""), |v| {
        v == 1.0
    });
    prom.expect(
        &at(2, "nunet_resources_cpu_cores", "state=\"allocated\""),
        |v| v == 0.5,
    );
    prom.expect(&at(2, "nunet_resources_cpu_cores", "state=\"free\""), |v| {
        v == 0.5
    });
    prom.expect(&at(1, "nunet_bid_rounds_total", ""), |v| v >= 1.0);
    prom.expect(
        &at(1, "nunet_bid_replies_total", "outcome=\"accepted\""),
        |v| v >= 1.0,
    );
    prom.expect(
        &at(
            2,
            "nunet_executor_operations_total",
            "executor=\"docker\",op=\"start\",outcome=\"ok\"",
        ),
        |v| v >= 1.0,
    );
    prom.expect(
        "sum(nunet_libp2p_swarm_connections_established_total)",
        |v| v >= 2.0,
    );
    prom.expect(
        &format!("sum({})", at(2, "nunet_actor_messages_admitted_total", "")),
        |v| v >= 1.0,
    );

    // A message node 3 refuses: signed by a context the organisation granted nothing.
    let (code, out) = dn.run(1, &["cap", "new", "stranger"]);
    assert_eq!(code, 0, "{out}");
    let did3 = serde_json::from_str::<Value>(
        &std::fs::read_to_string(dn.dir.join("node-3/data/run.json")).unwrap(),
    )
    .unwrap()["did"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, out) = dn.run(
        1,
        &[
            "actor",
            "cmd",
            "-c",
            "stranger",
            "-d",
            &did3,
            "/dms/node/peers/list",
        ],
    );
    assert_eq!(code, 3, "denied: {out}");
    assert!(out.contains("[not-anchored]"), "{out}");
    let denied = prom.expect(
        &format!(
            "sum({})",
            at(
                3,
                "nunet_actor_messages_denied_total",
                "rule=\"not-anchored\""
            )
        ),
        |v| v >= 1.0,
    );
    eprintln!("denied on node 3: {denied}");

    let (code, out) = dn.run(1, &["deployment", "shutdown", &id]);
    assert_eq!(code, 0, "{out}");
    prom.expect(&at(1, "nunet_deployments", "status=\"running\""), |v| {
        v == 0.0
    });
    prom.expect(
        &at(2, "nunet_resources_cpu_cores", "state=\"allocated\""),
        |v| v == 0.0,
    );
}
