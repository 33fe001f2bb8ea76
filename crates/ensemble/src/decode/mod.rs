//! Decoding of the value tree into an [`Ensemble`]: structure, types and units. Rules that
//! relate several fields to each other are in [`crate::validate`].

mod allocation;
mod data;
mod execution;
mod reader;
mod volume;

pub use execution::valid_image;
pub(crate) use reader::valid_env_name;

use std::collections::BTreeMap;

use reader::{
    Obj, integer, named, obj, opt_bool, opt_list, opt_string, req_string, string, with_unit,
};

use crate::problem::{Collector, index};
use crate::spec::{
    Contract, EdgeConstraint, Ensemble, EscalationStrategy, Location, LocationConstraint,
    NodeConfig, NodeRecovery, PortMapping, Supervisor, SupervisorStrategy,
};
use crate::tree::{Kind, Value};
use crate::{limits, units};

const ROOT_KEYS: &[&str] = &[
    "version",
    "allocations",
    "nodes",
    "edge_constraints",
    "supervisor",
    "keys",
    "scripts",
    "subnet",
    "exclude_peers",
    "metadata",
    "contracts",
    "escalation_strategy",
    "resources",
    "placement",
];

/// Decodes a whole document. Returns `None` only when the root is not a mapping; otherwise
/// an ensemble with whatever could be decoded (callers check the collector for errors).
pub(crate) fn ensemble(c: &mut Collector, root: &Value) -> Option<(Ensemble, Declared)> {
    if root.is_null() {
        c.error_at(
            "",
            root.line,
            "the file is empty; an ensemble needs at least `allocations` and `nodes`",
        );
        return None;
    }
    let o = obj(c, root, "", ROOT_KEYS, true)?;
    let version = opt_string(c, &o, "version");
    if let Some(v) = &version
        && !v.eq_ignore_ascii_case("v1")
        && v != "ensembleV1"
    {
        c.error(
            &o.path_of("version"),
            format!("unsupported version {v:?} (expected V1)"),
        );
    }
    let templates = allocation::templates(c, &o);
    let mut declared = Declared::default();
    let mut allocations = Vec::new();
    match o.get("allocations") {
        Some((v, p)) => {
            let entries = named(c, v, &p);
            if entries.is_empty() && v.as_map().is_some() {
                c.error_at(&p, v.line, "an ensemble needs at least one allocation");
            }
            for (name, v, p) in entries {
                declared.allocations.push(name.clone());
                if let Some(a) = allocation::allocation(c, &name, v, &p, &templates) {
                    allocations.push(a);
                }
            }
        }
        None => c.error_at(
            "allocations",
            o.line,
            "missing; an ensemble needs at least one allocation",
        ),
    }
    let mut nodes = Vec::new();
    match o.get("nodes") {
        Some((v, p)) => {
            for (name, v, p) in named(c, v, &p) {
                declared.nodes.push(name.clone());
                if let Some(n) = node(c, &name, v, &p) {
                    nodes.push(n);
                }
            }
        }
        None => c.error_at(
            "nodes",
            o.line,
            "missing; every allocation must be placed on a node",
        ),
    }
    let edges = o
        .get("edge_constraints")
        .map(|(v, p)| edges(c, v, &p))
        .unwrap_or_default();
    let supervisor = o.get("supervisor").and_then(|(v, p)| supervisor(c, v, &p));
    let keys = string_map(c, &o, "keys");
    let scripts = string_map(c, &o, "scripts");
    let subnet_join = match o.get("subnet") {
        Some((v, p)) => obj(c, v, &p, &["join"], false)
            .and_then(|s| match s.get("join") {
                Some((v, p)) => reader::boolean(c, v, &p),
                None => {
                    c.error_at(&p, v.line, "subnet needs `join: true` or `join: false`");
                    None
                }
            })
            .unwrap_or(false),
        None => {
            if o.has("subnet") {
                c.error(
                    &o.path_of("subnet"),
                    "subnet must not be empty; write `subnet: {join: true}` or remove it",
                );
            }
            false
        }
    };
    let exclude_peers = opt_list(c, &o, "exclude_peers");
    let metadata = string_map(c, &o, "metadata");
    let contracts = o
        .get("contracts")
        .map(|(v, p)| contracts(c, v, &p))
        .unwrap_or_default();
    let escalation_strategy =
        o.get("escalation_strategy")
            .and_then(|(v, p)| match string(c, v, &p).as_deref() {
                Some("redeploy") => Some(EscalationStrategy::Redeploy),
                Some("teardown") => Some(EscalationStrategy::Teardown),
                Some(other) => {
                    c.error_at(
                        &p,
                        v.line,
                        format!("expected redeploy or teardown, got {other:?}"),
                    );
                    None
                }
                None => None,
            });
    let distinct_peers = match o.get("placement") {
        Some((v, p)) => obj(c, v, &p, &["distinct_peers"], false)
            .and_then(|pl| opt_bool(c, &pl, "distinct_peers"))
            .unwrap_or(true),
        None => true,
    };
    let e = Ensemble {
        version,
        allocations,
        nodes,
        edges,
        supervisor,
        keys,
        scripts,
        subnet_join,
        exclude_peers,
        metadata,
        contracts,
        escalation_strategy,
        distinct_peers,
    };
    Some((e, declared))
}

/// Names written in the file, including those whose definitions had errors (so that
/// references to them are not reported as dangling).
#[derive(Debug, Default)]
pub(crate) struct Declared {
    pub allocations: Vec<String>,
    pub nodes: Vec<String>,
}

fn string_map(c: &mut Collector, o: &Obj<'_>, key: &str) -> BTreeMap<String, String> {
    let Some((v, p)) = o.get(key) else {
        return BTreeMap::new();
    };
    named(c, v, &p)
        .into_iter()
        .filter_map(|(k, v, p)| match &v.kind {
            Kind::Scalar { text, .. } => Some((k, text.clone())),
            Kind::Null => Some((k, String::new())),
            _ => {
                c.error_at(
                    &p,
                    v.line,
                    format!("expected a string, got {}", v.describe()),
                );
                None
            }
        })
        .collect()
}

fn node(c: &mut Collector, name: &str, v: &Value, path: &str) -> Option<NodeConfig> {
    let known = [
        "allocations",
        "ports",
        "location",
        "peer",
        "redundancy",
        "failure_recovery",
    ];
    let o = obj(c, v, path, &known, false)?;
    let allocations = opt_list(c, &o, "allocations");
    let ports = o
        .get("ports")
        .map(|(v, p)| ports(c, v, &p))
        .unwrap_or_default();
    let location = o
        .get("location")
        .map(|(v, p)| location_constraint(c, v, &p))
        .unwrap_or_default();
    let peer = opt_string(c, &o, "peer").filter(|s| !s.trim().is_empty());
    let redundancy = o
        .get("redundancy")
        .and_then(|(v, p)| {
            integer(
                c,
                v,
                &p,
                *limits::REDUNDANCY.start(),
                *limits::REDUNDANCY.end(),
            )
        })
        .unwrap_or(0) as u32;
    let failure_recovery = match o.get("failure_recovery") {
        Some((v, p)) => match string(c, v, &p).as_deref() {
            Some("stay_down") | None => NodeRecovery::StayDown,
            Some("restart") => NodeRecovery::Restart,
            Some("redeploy") => NodeRecovery::Redeploy,
            Some(other) => {
                c.error_at(
                    &p,
                    v.line,
                    format!("expected stay_down, restart or redeploy, got {other:?}"),
                );
                NodeRecovery::StayDown
            }
        },
        None => NodeRecovery::StayDown,
    };
    Some(NodeConfig {
        name: name.to_string(),
        allocations,
        ports,
        location,
        peer,
        redundancy,
        failure_recovery,
    })
}

fn ports(c: &mut Collector, v: &Value, path: &str) -> Vec<PortMapping> {
    let Kind::Seq(items) = &v.kind else {
        c.error_at(
            path,
            v.line,
            format!(
                "expected a list of {{public, private, allocation}}, got {}",
                v.describe()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(o) = obj(c, item, &p, &["public", "private", "allocation"], false) else {
            continue;
        };
        let public = match o.get("public") {
            Some((v, p)) => integer(
                c,
                v,
                &p,
                *limits::PUBLIC_PORTS.start(),
                *limits::PUBLIC_PORTS.end(),
            ),
            None => {
                c.error_at(
                    &o.path_of("public"),
                    o.line,
                    "missing; the public port (1025–65535) is required",
                );
                None
            }
        };
        let private = match o.get("private") {
            Some((v, p)) => integer(
                c,
                v,
                &p,
                *limits::PRIVATE_PORTS.start(),
                *limits::PRIVATE_PORTS.end(),
            ),
            None => {
                c.error_at(
                    &o.path_of("private"),
                    o.line,
                    "missing; the private port (1–65535) is required",
                );
                None
            }
        };
        let allocation = req_string(c, &o, "allocation", "the allocation receiving the port");
        if let (Some(public), Some(private), Some(allocation)) = (public, private, allocation) {
            out.push(PortMapping {
                public: public as u16,
                private: private as u16,
                allocation,
            });
        }
    }
    out
}

/// Continent names and codes, normalised to the two-letter code.
pub fn normalize_continent(s: &str) -> Option<&'static str> {
    let l = s.trim().to_ascii_lowercase().replace([' ', '_', '-'], "");
    Some(match l.as_str() {
        "af" | "africa" => "AF",
        "an" | "antarctica" => "AN",
        "as" | "asia" => "AS",
        "eu" | "europe" => "EU",
        "na" | "northamerica" => "NA",
        "oc" | "oceania" | "australia" => "OC",
        "sa" | "southamerica" => "SA",
        _ => return None,
    })
}

fn location_constraint(c: &mut Collector, v: &Value, path: &str) -> LocationConstraint {
    let Some(o) = obj(c, v, path, &["accept", "reject"], false) else {
        return LocationConstraint::default();
    };
    let mut list = |key: &str| -> Vec<Location> {
        let Some((v, p)) = o.get(key) else {
            return Vec::new();
        };
        let Kind::Seq(items) = &v.kind else {
            c.error_at(
                &p,
                v.line,
                format!("expected a list of locations, got {}", v.describe()),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| location(c, it, &index(&p, i)))
            .collect()
    };
    LocationConstraint {
        accept: list("accept"),
        reject: list("reject"),
    }
}

fn location(c: &mut Collector, v: &Value, path: &str) -> Option<Location> {
    let o = obj(
        c,
        v,
        path,
        &["continent", "country", "city", "asn", "isp"],
        false,
    )?;
    if o.has("region") {
        c.warn(
            &o.path_of("region"),
            "`region` is the old name and is ignored; write `continent`",
        );
    }
    let continent = match req_string(c, &o, "continent", "continent") {
        Some(raw) => match normalize_continent(&raw) {
            Some(code) => Some(code.to_string()),
            None => {
                c.error(
                    &o.path_of("continent"),
                    format!(
                        "unknown continent {raw:?} (AF, AN, AS, EU, NA, OC, SA or their names)"
                    ),
                );
                None
            }
        },
        None => None,
    };
    let country = opt_string(c, &o, "country");
    let city = opt_string(c, &o, "city");
    if city.is_some() && country.is_none() {
        c.error(&o.path_of("city"), "a city needs its country");
    }
    let asn = o.get("asn").and_then(|(v, p)| {
        let text = v
            .as_scalar()
            .unwrap_or_default()
            .trim_start_matches(['A', 'S', 'a', 's'])
            .to_string();
        let stripped = Value {
            kind: Kind::Scalar { text, plain: true },
            line: v.line,
        };
        integer(c, &stripped, &p, 1, u32::MAX as u64).map(|n| n as u32)
    });
    Some(Location {
        continent,
        country,
        city,
        asn,
        isp: opt_string(c, &o, "isp"),
    })
}

fn edges(c: &mut Collector, v: &Value, path: &str) -> Vec<EdgeConstraint> {
    let Kind::Seq(items) = &v.kind else {
        c.error_at(
            path,
            v.line,
            format!(
                "expected a list of {{edges: [A, B], rtt, bw}}, got {}",
                v.describe()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = index(path, i);
        let Some(o) = obj(c, item, &p, &["edges", "rtt", "bw"], false) else {
            continue;
        };
        let pair = opt_list(c, &o, "edges");
        if pair.len() != 2 {
            c.error_at(
                &o.path_of("edges"),
                o.line,
                format!("expected exactly two node names, got {}", pair.len()),
            );
            continue;
        }
        let rtt_ms = o
            .get("rtt")
            .and_then(|(v, p)| with_unit(c, v, &p, units::parse_rtt_ms));
        let bw_bps = o
            .get("bw")
            .and_then(|(v, p)| with_unit(c, v, &p, units::parse_bandwidth));
        if rtt_ms.is_none() && bw_bps.is_none() && !o.has("rtt") && !o.has("bw") {
            c.warn_at(
                &p,
                o.line,
                "edge constraint without rtt or bw constrains nothing",
            );
        }
        if let Some(Err(e)) = rtt_ms.map(limits::rtt_ms) {
            c.error(&o.path_of("rtt"), e);
        }
        out.push(EdgeConstraint {
            source: pair[0].clone(),
            target: pair[1].clone(),
            rtt_ms,
            bw_bps,
        });
    }
    out
}

fn supervisor(c: &mut Collector, v: &Value, path: &str) -> Option<Supervisor> {
    let o = obj(c, v, path, &["strategy", "allocations", "children"], false)?;
    if o.has("alloctions") {
        c.warn(
            &o.path_of("alloctions"),
            "`alloctions` (a typo in NuNet's old docs) is ignored; write `allocations`",
        );
    }
    let strategy = match req_string(c, &o, "strategy", "the supervisor strategy")?.as_str() {
        "OneForOne" => SupervisorStrategy::OneForOne,
        "AllForOne" => SupervisorStrategy::AllForOne,
        "RestForOne" => SupervisorStrategy::RestForOne,
        other => {
            c.error(
                &o.path_of("strategy"),
                format!("expected OneForOne, AllForOne or RestForOne, got {other:?}"),
            );
            return None;
        }
    };
    let allocations = opt_list(c, &o, "allocations");
    let mut children = Vec::new();
    if let Some((v, p)) = o.get("children") {
        match &v.kind {
            Kind::Seq(items) => {
                for (i, it) in items.iter().enumerate() {
                    children.extend(supervisor(c, it, &index(&p, i)));
                }
            }
            _ => c.error_at(
                &p,
                v.line,
                format!("expected a list of supervisors, got {}", v.describe()),
            ),
        }
    }
    Some(Supervisor {
        strategy,
        allocations,
        children,
    })
}

fn contracts(c: &mut Collector, v: &Value, path: &str) -> BTreeMap<String, Contract> {
    let mut out = BTreeMap::new();
    for (name, v, p) in named(c, v, path) {
        let Some(o) = obj(c, v, &p, &["did", "host"], false) else {
            continue;
        };
        let did = req_string(c, &o, "did", "the contract DID");
        let host = opt_string(c, &o, "host");
        if let Some(d) = &did
            && !d.starts_with("did:")
        {
            c.error(
                &o.path_of("did"),
                format!("expected a DID (did:…), got {d:?}"),
            );
        }
        if let Some(h) = &host
            && !h.starts_with("did:")
        {
            c.error(
                &o.path_of("host"),
                format!("expected a DID (did:…), got {h:?}"),
            );
        }
        if let Some(did) = did {
            out.insert(name, Contract { did, host });
        }
    }
    out
}
