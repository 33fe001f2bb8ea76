use serde_json::Value;

/// All leaf keys of a JSON object, dotted (`rest.port`), in file order.
pub fn leaf_keys(v: &Value) -> Vec<String> {
    fn walk(v: &Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(c, &p, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

/// The value at a dotted key (a section or a leaf).
pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(v, |cur, part| cur.get(part))
}

/// Sets a dotted key, creating sections as needed.
pub fn set(v: &mut Value, key: &str, value: Value) {
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = v;
    for part in &parts[..parts.len() - 1] {
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        cur = match cur {
            Value::Object(m) => m
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Default::default())),
            _ => unreachable!("made an object above"),
        };
    }
    if !cur.is_object() {
        *cur = Value::Object(Default::default());
    }
    if let (Value::Object(m), Some(last)) = (cur, parts.last()) {
        m.insert(last.to_string(), value);
    }
}

/// Interprets the text a user typed for a key whose default is `like`: strings are taken
/// as-is, lists accept JSON or comma-separated items, numbers and booleans must parse.
pub fn parse_value(text: &str, like: &Value) -> Result<Value, String> {
    match like {
        Value::String(_) => Ok(match serde_json::from_str::<Value>(text) {
            Ok(Value::String(s)) => Value::String(s),
            _ => Value::String(text.to_string()),
        }),
        Value::Array(_) => {
            let t = text.trim();
            if t.starts_with('[') {
                serde_json::from_str(t).map_err(|e| format!("expected a JSON list: {e}"))
            } else if t.is_empty() {
                Ok(Value::Array(vec![]))
            } else {
                Ok(Value::Array(
                    t.split(',')
                        .map(|s| Value::String(s.trim().to_string()))
                        .collect(),
                ))
            }
        }
        Value::Bool(_) => match text.trim() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            other => Err(format!("expected true or false, got {other:?}")),
        },
        Value::Number(_) => text
            .trim()
            .parse::<u64>()
            .map(Value::from)
            .map_err(|_| format!("expected a whole number, got {text:?}")),
        _ => serde_json::from_str(text).map_err(|e| e.to_string()),
    }
}

/// The environment variable overriding a key: `DMS_` + key upper-cased with `.` → `_`.
pub fn env_name(key: &str) -> String {
    format!("DMS_{}", key.to_uppercase().replace('.', "_"))
}

/// Known keys resembling `key` (same section or same last segment), for error messages.
pub fn suggestions(known: &[String], key: &str) -> Vec<String> {
    let last = key.rsplit('.').next().unwrap_or(key);
    let section = key.split('.').next().unwrap_or(key);
    known
        .iter()
        .filter(|k| k.ends_with(last) || k.starts_with(&format!("{section}.")))
        .take(8)
        .cloned()
        .collect()
}
