//! Traces end to end: a 3-node devnet whose daemons export to a test OTLP/HTTP collector
//! (`nunet_traces::collector`, which keeps every JSON body posted to `/v1/traces`). One
//! deployment must give one trace with spans from the orchestrating node and the provider,
//! each phase under the deployment's root, and the provider's handling of commit, allocate
//! and start under the orchestrator's phase that sent it (the context travelled in the
//! actor envelopes). No span may name a parent the trace does not have.
#![allow(clippy::unwrap_used, missing_docs)]

mod deploy_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use deploy_support::*;
use serde_json::Value;

/// Bodies posted to the test collector.
type Posts = nunet_traces::collector::Received;

#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: Option<String>,
    name: String,
    /// `service.instance.id`: the exporting node's peer id.
    node: String,
    attrs: HashMap<String, String>,
}

fn spans(posts: &Posts) -> Vec<Span> {
    let mut out = Vec::new();
    for (path, body) in posts.lock().unwrap().iter() {
        assert_eq!(path, "/v1/traces");
        let v: Value = serde_json::from_slice(body).unwrap();
        for rs in v["resourceSpans"].as_array().unwrap() {
            let node = rs["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.instance.id")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_string();
            for ss in rs["scopeSpans"].as_array().unwrap() {
                for s in ss["spans"].as_array().unwrap() {
                    let attrs = s["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| {
                            let v = a["value"]["stringValue"].as_str().unwrap_or("");
                            (a["key"].as_str().unwrap().to_string(), v.to_string())
                        })
                        .collect();
                    out.push(Span {
                        trace: s["traceId"].as_str().unwrap().to_string(),
                        id: s["spanId"].as_str().unwrap().to_string(),
                        parent: s["parentSpanId"].as_str().map(str::to_string),
                        name: s["name"].as_str().unwrap().to_string(),
                        node: node.clone(),
                        attrs,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn one_deployment_is_one_trace_across_the_orchestrator_and_its_provider() {
    let (port, posts) = nunet_traces::collector::start().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dn = Devnet::up_with_env(0, &[("DMS_OBSERVABILITY_TRACING_ENDPOINT", &endpoint)]);
    // Node 1 orchestrates; node 2 is the only provider.
    dn.onboard(2);
    let (code, out) = dn.run(1, &["deploy", "-f", &hello(), "-t", "60s", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["status"], "Completed", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let orchestrator = peer_of(&dn, 1).as_str().unwrap().to_string();
    let provider = peer_of(&dn, 2).as_str().unwrap().to_string();

    // The root comes when the deployment ended; the provider's spans a second later at most.
    let trace = wait_for("the trace", Duration::from_secs(30), |seen| {
        let all = spans(&posts);
        *seen = format!("{} spans", all.len());
        let root = all
            .iter()
            .find(|s| s.name == "deployment" && s.attrs.get("ensemble") == Some(&id))?
            .trace
            .clone();
        let mine: Vec<Span> = all.into_iter().filter(|s| s.trace == root).collect();
        let provider_start = mine
            .iter()
            .any(|s| s.node == provider && s.name == "/dms/allocation/start");
        provider_start.then_some(mine)
    });

    // What the trace holds, for the test's output.
    let mut names: Vec<String> = trace
        .iter()
        .map(|s| {
            format!(
                "{}@{}",
                s.name,
                if s.node == orchestrator {
                    "orchestrator"
                } else {
                    "provider"
                }
            )
        })
        .collect();
    names.sort();
    eprintln!("{} spans in the trace: {names:?}", trace.len());
    // With traces on, logs filter per layer: still info lines and no debug ones.
    let log = std::fs::read_to_string(dn.dir.join("node-1/nunet.log")).unwrap();
    assert!(log.contains("INFO"), "info lines: {log}");
    assert!(
        !log.contains("DEBUG") && !log.contains("TRACE"),
        "level info: {log}"
    );
    let root = trace.iter().find(|s| s.name == "deployment").unwrap();
    assert_eq!(root.parent, None);
    assert_eq!(root.node, orchestrator);
    assert_eq!(root.attrs["status"], "Completed");
    let nodes: HashSet<&str> = trace.iter().map(|s| s.node.as_str()).collect();
    assert!(
        nodes.contains(orchestrator.as_str()) && nodes.contains(provider.as_str()),
        "spans from both nodes: {nodes:?}"
    );
    // Every parent is a span of this trace.
    let ids: HashSet<&str> = trace.iter().map(|s| s.id.as_str()).collect();
    for s in &trace {
        if let Some(p) = &s.parent {
            assert!(
                ids.contains(p.as_str()),
                "{} names a parent not in the trace: {s:?}",
                s.name
            );
        }
    }
    // The orchestrator's phases hang under the root.
    let phase = |name: &str| {
        trace
            .iter()
            .find(|s| s.node == orchestrator && s.name == name)
            .unwrap_or_else(|| panic!("no {name} span: {trace:#?}"))
    };
    for name in [
        "bid_round",
        "placement",
        "commit",
        "allocate",
        "subnet",
        "start",
    ] {
        assert_eq!(
            phase(name).parent.as_deref(),
            Some(root.id.as_str()),
            "{name}"
        );
    }
    // The provider handled each message under the phase that sent it.
    for (sent_in, behaviour) in [
        ("commit", "/dms/deployment/commit"),
        ("allocate", "/dms/deployment/allocate"),
        ("start", "/dms/allocation/start"),
    ] {
        let handled = trace
            .iter()
            .find(|s| s.node == provider && s.name == behaviour)
            .unwrap_or_else(|| panic!("the provider's {behaviour}: {trace:#?}"));
        assert_eq!(
            handled.parent.as_deref(),
            Some(phase(sent_in).id.as_str()),
            "{behaviour} under the orchestrator's {sent_in}"
        );
    }
}
