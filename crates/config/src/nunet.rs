//! Reading `dms_config.json` files that NuNet's DMS (or a person following its docs) wrote.
//!
//! NuNet reads its config through viper: keys are case-insensitive, `null` means the default,
//! values are weakly typed (`"9999"` for a number), and its CLI runs on with keys it does not
//! know. Its files carry sections this node has no use for (`apm`, `coinmarketcap`,
//! `payment_provider`, …) and deprecated flat observability keys. [`normalize`] turns such a
//! file into one this node's strict loader reads, and says what it did in warnings: NuNet's
//! keys this node does not use, deprecated keys it mapped, and keys nobody knows (with
//! suggestions). The file itself is never changed by loading, so every key is kept.

use serde_json::{Map, Value};

use crate::keys::{get, leaf_keys, set, suggestions};

/// Keys (or whole sections) of NuNet's configuration that this node reads but does not use,
/// with the reason. A key matches an entry equal to it or below it.
const NUNET_ONLY: &[(&str, &str)] = &[
    (
        "apm",
        "NuNet's Elastic APM agent; this node serves Prometheus metrics at /metrics instead",
    ),
    (
        "coinmarketcap",
        "NuNet's price feed for contracts, which this node does not implement",
    ),
    (
        "general.payment_provider",
        "payments and contracts are not implemented here",
    ),
    (
        "job.require_contracts_for_deployment",
        "contracts are not implemented here",
    ),
    (
        "general.compute_gateway",
        "NuNet's compute gateway is not implemented here",
    ),
    (
        "general.providers",
        "NuNet's compute gateway providers are not implemented here",
    ),
    (
        "job.containerd",
        "the containerd executor is not implemented here",
    ),
    (
        "observability.elastic",
        "shipping logs to Elasticsearch is not implemented; logs go to observability.logging.file",
    ),
    (
        "observability.elasticsearch_url",
        "shipping logs to Elasticsearch is not implemented",
    ),
    (
        "observability.elasticsearch_index",
        "shipping logs to Elasticsearch is not implemented",
    ),
    (
        "observability.elasticsearch_enabled",
        "shipping logs to Elasticsearch is not implemented",
    ),
    (
        "observability.elasticsearch_api_key",
        "shipping logs to Elasticsearch is not implemented",
    ),
    (
        "observability.flush_interval",
        "shipping logs to Elasticsearch is not implemented",
    ),
    (
        "observability.insecure_skip_verify",
        "shipping logs to Elasticsearch is not implemented",
    ),
    (
        "observability.otel",
        "NuNet's OpenTelemetry metrics export is not implemented; metrics are served at /metrics, traces go to observability.tracing.endpoint",
    ),
    (
        "general.pushlivenessenabled",
        "a setting of older NuNet versions",
    ),
    (
        "general.payment_provider.starting_block_scanning",
        "a setting of older NuNet versions",
    ),
    ("general.metadata_path", "a setting of early NuNet versions"),
    (
        "job.log_update_interval",
        "a setting of early NuNet versions",
    ),
    ("job.target_peer", "a setting of early NuNet versions"),
    ("job.cleanup_interval", "a setting of early NuNet versions"),
    ("telemetry", "a section of early NuNet versions"),
];

/// NuNet's deprecated flat logging keys and the keys they stand for.
const FLAT_LOGGING: &[(&str, &str)] = &[
    ("observability.log_level", "observability.logging.level"),
    ("observability.log_file", "observability.logging.file"),
    (
        "observability.max_size",
        "observability.logging.rotation.max_size_mb",
    ),
    (
        "observability.max_backups",
        "observability.logging.rotation.max_backups",
    ),
    (
        "observability.max_age",
        "observability.logging.rotation.max_age_days",
    ),
];

fn nunet_only(key: &str) -> Option<(&'static str, &'static str)> {
    NUNET_ONLY
        .iter()
        .find(|(p, _)| key == *p || key.starts_with(&format!("{p}.")))
        .copied()
}

/// Whether NuNet's DMS knows `key` although this node does not use it (`config set` accepts
/// such keys, with a warning, because NuNet's tools write them).
pub fn is_nunet_only(key: &str) -> bool {
    nunet_only(key).is_some() || FLAT_LOGGING.iter().any(|(k, _)| *k == key)
}

/// Two keys of one section that differ only in case (`"rest"` and `"REST"`): NuNet would
/// pick one at random, so this is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseClash(pub String);

/// Lower-cases every key of a file, as NuNet's viper does.
pub fn lowercase_keys(v: &Value) -> Result<Value, CaseClash> {
    fn walk(v: &Value, path: &str) -> Result<Value, CaseClash> {
        let Value::Object(m) = v else {
            return Ok(v.clone());
        };
        let mut out = Map::new();
        for (k, c) in m {
            let lk = k.to_lowercase();
            let p = if path.is_empty() {
                lk.clone()
            } else {
                format!("{path}.{lk}")
            };
            if out.contains_key(&lk) {
                return Err(CaseClash(p));
            }
            out.insert(lk, walk(c, &p)?);
        }
        Ok(Value::Object(out))
    }
    walk(v, "")
}

/// A file's value prepared for the strict loader.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The keys this node uses, lower-cased, deprecated spellings mapped.
    pub value: Value,
    /// What was read differently or ignored, for the operator.
    pub warnings: Vec<String>,
    /// Keys neither this node nor NuNet knows (also in `warnings`, with suggestions).
    pub unknown: Vec<String>,
}

/// Prepares a file's value for the strict loader. `defaults` names every key this node
/// knows.
pub fn normalize(file: &Value, defaults: &Value) -> Result<Normalized, CaseClash> {
    let lowered = lowercase_keys(file)?;
    let mut out = Value::Object(Map::new());
    let mut warnings = Vec::new();
    let mut ignored: Vec<(&'static str, &'static str, usize)> = Vec::new();
    let mut unknown = Vec::new();
    let known = leaf_keys(defaults);
    for key in leaf_keys(&lowered) {
        let Some(v) = get(&lowered, &key) else {
            // A key with a '.' in its own name: the dotted path does not lead to it.
            warnings.push(format!(
                "config key {key:?} ignored (kept in the file): a key name cannot contain '.'; \
                 nest it, e.g. {{\"rest\": {{\"port\": …}}}}"
            ));
            unknown.push(key);
            continue;
        };
        // NuNet (viper) reads null as "use the default"; an empty section is nothing.
        if v.is_null() || v.as_object().is_some_and(Map::is_empty) {
            continue;
        }
        if let Some((_, to)) = FLAT_LOGGING.iter().find(|(k, _)| *k == key) {
            if get(&lowered, to).is_some() {
                warnings.push(format!(
                    "{key} is NuNet's deprecated spelling of {to}, which the file also sets: {to} is used"
                ));
            } else {
                warnings.push(format!(
                    "{key} is NuNet's deprecated spelling of {to}: read as {to}"
                ));
                set(&mut out, to, v.clone());
            }
            continue;
        }
        if get(defaults, &key).is_some() {
            set(&mut out, &key, v.clone());
            continue;
        }
        if let Some((prefix, why)) = nunet_only(&key) {
            match ignored.iter_mut().find(|(p, _, _)| *p == prefix) {
                Some(e) => e.2 += 1,
                None => ignored.push((prefix, why, 1)),
            }
            continue;
        }
        let s = suggestions(&known, &key);
        warnings.push(format!(
            "unknown config key {key:?} ignored (kept in the file){}",
            if s.is_empty() {
                String::new()
            } else {
                format!("; did you mean one of: {}", s.join(", "))
            }
        ));
        unknown.push(key);
    }
    for (prefix, why, n) in ignored {
        let what = if n == 1 {
            prefix.to_string()
        } else {
            format!("{prefix}.* ({n} keys)")
        };
        warnings.push(format!(
            "{what}: NuNet setting not used by this node ({why}); kept in the file"
        ));
    }
    Ok(Normalized {
        value: out,
        warnings,
        unknown,
    })
}

/// NuNet's spellings of values this node reads differently, mapped to this node's, for the
/// key `key` of a normalized file or an environment variable. Returns a warning when the
/// meaning changes (a port range end beyond any port).
pub fn value_habits(key: &str, v: &mut Value) -> Option<String> {
    match key {
        // NuNet's default is 65536: a loop bound that means "up to 65535".
        "general.port_available_range_to" => {
            let n = v.as_u64()?;
            if n > 65535 {
                *v = Value::from(65535u64);
                return (n > 65536)
                    .then(|| format!("{key}: {n} is beyond the last port; read as 65535"));
            }
            None
        }
        "rest.addr" | "profiler.addr" if v.as_str() == Some("localhost") => {
            *v = Value::from("127.0.0.1");
            None
        }
        "observability.logging.level" => {
            let s = v.as_str()?.trim().to_ascii_lowercase();
            let mapped = match s.as_str() {
                // NuNet writes "" in configs marshalled from sparse structs: the default.
                "" => "info",
                "warning" => "warn",
                // zap's levels above error.
                "dpanic" | "panic" | "fatal" => "error",
                other => other,
            };
            *v = Value::from(mapped.to_string());
            None
        }
        // lumberjack (NuNet's rotation) reads 0 as its default of 100 MB.
        "observability.logging.rotation.max_size_mb" if v.as_u64() == Some(0) => {
            *v = Value::from(100u64);
            None
        }
        _ => None,
    }
}

/// Weak typing as viper applies it: `"9999"` for a number, `"true"`/`"1"` for a boolean, a
/// comma-separated string for a list, `9999.0` for a whole number. `None` when `v` cannot
/// stand for a value like `like`.
pub fn coerce(v: &Value, like: &Value) -> Option<Value> {
    match (like, v) {
        (Value::Number(_), Value::String(s)) => s.trim().parse::<u64>().ok().map(Value::from),
        (Value::Number(_), Value::Number(n)) => {
            let f = n.as_f64()?;
            (f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(53)).then(|| Value::from(f as u64))
        }
        (Value::Bool(_), Value::String(s)) => match s.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(Value::Bool(true)),
            "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(Value::Bool(false)),
            _ => None,
        },
        (Value::Bool(_), Value::Number(n)) => match n.as_u64() {
            Some(0) => Some(Value::Bool(false)),
            Some(1) => Some(Value::Bool(true)),
            _ => None,
        },
        (Value::String(_), Value::Number(n)) => Some(Value::from(n.to_string())),
        (Value::String(_), Value::Bool(b)) => Some(Value::from(b.to_string())),
        (Value::Array(_), Value::String(s)) => Some(Value::Array(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| Value::from(x.to_string()))
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_case_insensitive_and_clashes_are_named() {
        let v = lowercase_keys(&json!({"REST": {"Port": 1}})).unwrap();
        assert_eq!(v, json!({"rest": {"port": 1}}));
        let e = lowercase_keys(&json!({"rest": {"port": 1, "PORT": 2}})).unwrap_err();
        assert_eq!(e, CaseClash("rest.port".into()));
    }

    #[test]
    fn nunet_sections_are_grouped_flat_keys_mapped_and_strangers_suggested() {
        let defaults =
            json!({"rest": {"port": 9999}, "observability": {"logging": {"level": "info"}}});
        let file = json!({
            "apm": {"server_url": "x", "service_name": "y"},
            "rest": {"port": 1, "prot": 2},
            "observability": {"log_level": "DEBUG"},
            "general": {"providers": null}
        });
        let n = normalize(&file, &defaults).unwrap();
        let (v, w) = (n.value, n.warnings);
        assert_eq!(n.unknown, ["rest.prot"]);
        assert_eq!(
            v,
            json!({"rest": {"port": 1}, "observability": {"logging": {"level": "DEBUG"}}})
        );
        assert!(w.iter().any(|x| x.starts_with("apm.* (2 keys)")), "{w:?}");
        assert!(
            w.iter()
                .any(|x| x.contains("\"rest.prot\"") && x.contains("rest.port")),
            "{w:?}"
        );
        assert!(
            w.iter().any(|x| x.contains("observability.log_level")),
            "{w:?}"
        );
        assert_eq!(w.len(), 3, "null general.providers is the default: {w:?}");
        let n = normalize(&json!({"rest.port": 5}), &defaults).unwrap();
        assert_eq!(n.unknown, ["rest.port"]);
        assert!(
            n.warnings[0].contains("cannot contain '.'"),
            "{:?}",
            n.warnings
        );
    }

    #[test]
    fn nunet_value_habits() {
        let mut v = json!(65536);
        assert_eq!(
            value_habits("general.port_available_range_to", &mut v),
            None
        );
        assert_eq!(v, json!(65535));
        let mut v = json!(90000);
        assert!(value_habits("general.port_available_range_to", &mut v).is_some());
        let mut v = json!("INFO");
        value_habits("observability.logging.level", &mut v);
        assert_eq!(v, json!("info"));
        let mut v = json!("localhost");
        value_habits("rest.addr", &mut v);
        assert_eq!(v, json!("127.0.0.1"));
        assert_eq!(coerce(&json!("9999"), &json!(1)), Some(json!(9999)));
        assert_eq!(coerce(&json!(9999.0), &json!(1)), Some(json!(9999)));
        assert_eq!(coerce(&json!(9999.5), &json!(1)), None);
        assert_eq!(coerce(&json!("T"), &json!(false)), Some(json!(true)));
        assert_eq!(coerce(&json!("yes"), &json!(false)), None);
        assert_eq!(coerce(&json!("a, b"), &json!([])), Some(json!(["a", "b"])));
    }
}
