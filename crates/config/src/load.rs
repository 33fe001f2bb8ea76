use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Config;
use crate::keys::{env_name, get, leaf_keys, parse_value, set, suggestions};

/// The file name NuNet uses.
pub const FILE_NAME: &str = "dms_config.json";
/// System-wide fallback location.
pub const SYSTEM_PATH: &str = "/etc/nunet/dms_config.json";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file is not JSON.
    #[error("{path}: not valid JSON: {reason}")]
    Syntax {
        /// File.
        path: PathBuf,
        /// Parser message with line and column.
        reason: String,
    },
    /// A key that does not exist.
    #[error("{origin}: unknown config key {key:?}{}", hint(.suggestions))]
    UnknownKey {
        /// File or variable it came from.
        origin: String,
        /// The key.
        key: String,
        /// Similar known keys.
        suggestions: Vec<String>,
    },
    /// A value of the wrong type or out of range.
    #[error("{origin}: {key}: {reason}")]
    BadValue {
        /// File or variable it came from.
        origin: String,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Values that are well-typed but unusable together.
    #[error("invalid configuration{}:\n  {}", .origin.as_deref().map(|o| format!(" ({o})")).unwrap_or_default(), .problems.join("\n  "))]
    Invalid {
        /// Where it came from.
        origin: Option<String>,
        /// Every problem, each naming its key.
        problems: Vec<String>,
    },
    /// The file named with `--config` does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
}

fn hint(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean one of: {})", s.join(", "))
    }
}

/// A loaded configuration and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// The file that was read, if any.
    pub file: Option<PathBuf>,
    /// Where `config set/edit` write: the file read, or `<home>/dms_config.json`.
    pub write_path: PathBuf,
    /// Environment variables that overrode file values.
    pub env_overrides: Vec<String>,
}

/// Loads defaults ← file ← environment, and validates.
///
/// `explicit` is `--config`: it must exist. Otherwise `<home>/dms_config.json` and then
/// `/etc/nunet/dms_config.json` are used if present. `env` looks up variables (pass
/// `|k| std::env::var(k).ok()` in production).
pub fn load(
    home: &Path,
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let home_file = home.join(FILE_NAME);
    let file = match explicit {
        Some(p) if p.exists() => Some(p.to_path_buf()),
        Some(p) => return Err(ConfigError::Missing(p.to_path_buf())),
        None if home_file.exists() => Some(home_file.clone()),
        None if Path::new(SYSTEM_PATH).exists() => Some(PathBuf::from(SYSTEM_PATH)),
        None => None,
    };
    let write_path = explicit
        .map(Path::to_path_buf)
        .or_else(|| file.clone())
        .unwrap_or(home_file);
    let file_value = match &file {
        Some(p) => read_file(p)?,
        None => Value::Object(Default::default()),
    };
    let origin = file.as_ref().map(|p| p.display().to_string());
    let (config, env_overrides) = resolve(home, &file_value, origin.as_deref(), env)?;
    Ok(Loaded {
        config,
        file,
        write_path,
        env_overrides,
    })
}

/// Reads a config file as JSON (an object).
pub fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let text = fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.into(),
        source,
    })?;
    parse_text(&text, path)
}

/// Parses the text of a config file read from `path` (named in errors) as JSON: an object,
/// or nothing at all. [`resolve`] then checks its keys and values.
pub fn parse_text(text: &str, path: &Path) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.into(),
        reason: e.to_string(),
    })?;
    if !v.is_object() {
        return Err(ConfigError::Syntax {
            path: path.into(),
            reason: "the top level must be an object".into(),
        });
    }
    Ok(v)
}

/// Merges a file's values and env overrides over the defaults for `home`, checking every key.
pub fn resolve(
    home: &Path,
    file: &Value,
    origin: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Config, Vec<String>), ConfigError> {
    let defaults = defaults_value(home);
    let known = leaf_keys(&defaults);
    let origin_name = origin.unwrap_or("config").to_string();
    let mut merged = defaults.clone();
    for key in leaf_keys(file) {
        let Some(like) = get(&defaults, &key) else {
            return Err(ConfigError::UnknownKey {
                origin: origin_name,
                suggestions: suggestions(&known, &key),
                key,
            });
        };
        let v = get(file, &key).cloned().unwrap_or(Value::Null);
        check_type(&v, like).map_err(|reason| ConfigError::BadValue {
            origin: origin_name.clone(),
            key: key.clone(),
            reason,
        })?;
        set(&mut merged, &key, v);
    }
    let mut overrides = Vec::new();
    for key in &known {
        let var = env_name(key);
        if let Some(text) = env(&var) {
            let like = get(&defaults, key).cloned().unwrap_or(Value::Null);
            let v = parse_value(&text, &like).map_err(|reason| ConfigError::BadValue {
                origin: format!("environment variable {var}"),
                key: key.clone(),
                reason,
            })?;
            set(&mut merged, key, v);
            overrides.push(var);
        }
    }
    let config: Config =
        serde_path_to_error::deserialize(&merged).map_err(|e| ConfigError::BadValue {
            origin: origin_name.clone(),
            key: e.path().to_string(),
            reason: e.inner().to_string(),
        })?;
    let problems = config.validate();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            origin: origin.map(String::from),
            problems,
        });
    }
    Ok((config, overrides))
}

fn check_type(v: &Value, like: &Value) -> Result<(), String> {
    let kind = |v: &Value| match v {
        Value::Null => "null",
        Value::Bool(_) => "true or false",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a section",
    };
    if std::mem::discriminant(v) != std::mem::discriminant(like) {
        return Err(format!("expected {}, got {}", kind(like), kind(v)));
    }
    Ok(())
}

/// The defaults as JSON.
pub fn defaults_value(home: &Path) -> Value {
    serde_json::to_value(Config::defaults(home)).unwrap_or(Value::Null)
}

/// `nunet config set`: checks the key and value, then writes only that key into the file at
/// `path` (created if missing), atomically. The whole resulting file must validate.
pub fn set_key(home: &Path, path: &Path, key: &str, text: &str) -> Result<(), ConfigError> {
    let defaults = defaults_value(home);
    let Some(like) = get(&defaults, key).filter(|v| !v.is_object()) else {
        let known = leaf_keys(&defaults);
        return Err(ConfigError::UnknownKey {
            origin: "config set".into(),
            suggestions: suggestions(&known, key),
            key: key.into(),
        });
    };
    let value = parse_value(text, like).map_err(|reason| ConfigError::BadValue {
        origin: "config set".into(),
        key: key.into(),
        reason,
    })?;
    let mut file = if path.exists() {
        read_file(path)?
    } else {
        Value::Object(Default::default())
    };
    set(&mut file, key, value);
    resolve(home, &file, Some(&path.display().to_string()), &|_| None)?;
    write_file(path, &file)
}

/// Writes JSON to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_file(path: &Path, v: &Value) -> Result<(), ConfigError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ConfigError::Io { path: p, source }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".{FILE_NAME}.tmp{}", std::process::id()));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
    text.push('\n');
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_match_nunet() {
        let d = tempfile::tempdir().unwrap();
        let l = load(d.path(), None, &no_env).unwrap();
        assert_eq!(l.config.rest.addr, "127.0.0.1");
        assert_eq!(l.config.rest.port, 9999);
        assert_eq!(l.config.general.port_available_range_from, 16384);
        assert!(
            l.config
                .p2p
                .listen_address
                .iter()
                .any(|a| a.contains("/tcp/9000"))
        );
        assert!(
            l.config
                .p2p
                .listen_address
                .iter()
                .any(|a| a.contains("/udp/9000/quic-v1"))
        );
        assert_eq!(l.config.general.user_dir, d.path());
        assert_eq!(l.write_path, d.path().join(FILE_NAME));
        assert!(l.file.is_none());
    }

    #[test]
    fn file_then_env_override() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(FILE_NAME);
        fs::write(&p, r#"{"rest":{"port":8080},"p2p":{"bootstrap_peers":[]}}"#).unwrap();
        let l = load(d.path(), None, &no_env).unwrap();
        assert_eq!(l.config.rest.port, 8080);
        assert_eq!(l.file.as_deref(), Some(p.as_path()));
        let env = |k: &str| match k {
            "DMS_REST_PORT" => Some("7000".to_string()),
            "DMS_P2P_LISTEN_ADDRESS" => {
                Some("/ip4/127.0.0.1/tcp/1, /ip4/127.0.0.1/udp/1/quic-v1".to_string())
            }
            "DMS_GENERAL_DEBUG" => Some("true".to_string()),
            _ => None,
        };
        let l = load(d.path(), None, &env).unwrap();
        assert_eq!(l.config.rest.port, 7000);
        assert!(l.config.general.debug);
        assert_eq!(l.config.p2p.listen_address.len(), 2);
        assert_eq!(l.env_overrides.len(), 3);
        let bad = |k: &str| (k == "DMS_REST_PORT").then(|| "lots".to_string());
        let e = load(d.path(), None, &bad).unwrap_err().to_string();
        assert!(
            e.contains("DMS_REST_PORT") && e.contains("rest.port"),
            "{e}"
        );
    }

    #[test]
    fn port_zero_is_accepted_for_the_kernel_to_pick() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(FILE_NAME);
        fs::write(
            &p,
            r#"{"rest":{"port":0},"p2p":{"listen_address":["/ip4/127.0.0.1/tcp/0","/ip4/127.0.0.1/udp/0/quic-v1"]}}"#,
        )
        .unwrap();
        let l = load(d.path(), None, &no_env).unwrap();
        assert_eq!(l.config.rest.port, 0);
        assert_eq!(l.config.p2p.listen_address[0], "/ip4/127.0.0.1/tcp/0");
    }

    #[test]
    fn unknown_keys_and_bad_types_are_rejected_with_their_key() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(FILE_NAME);
        let cases = [
            (r#"{"rest":{"prot":1}}"#, "unknown config key \"rest.prot\""),
            (r#"{"nope":1}"#, "unknown config key \"nope\""),
            (
                r#"{"rest":{"port":"x"}}"#,
                "rest.port: expected a number, got a string",
            ),
            (r#"{"rest":{"port":70000}}"#, "rest.port"),
            (r#"{"rest":{"addr":"localhost!"}}"#, "rest.addr"),
            (
                r#"{"general":{"port_available_range_from":9000,"port_available_range_to":8000}}"#,
                "port_available_range_from",
            ),
            (
                r#"{"p2p":{"listen_address":["garbage"]}}"#,
                "p2p.listen_address[0]",
            ),
            (
                r#"{"p2p":{"bootstrap_peers":["/ip4/1.2.3.4/tcp/1"]}}"#,
                "/p2p/<peer id>",
            ),
            (
                r#"{"observability":{"logging":{"level":"loud"}}}"#,
                "observability.logging.level",
            ),
            (
                r#"{"job":{"vm_boot_timeout_secs":18446744073709551615}}"#,
                "job.vm_boot_timeout_secs",
            ),
            ("{not json", "not valid JSON"),
            ("[1]", "top level must be an object"),
        ];
        for (text, want) in cases {
            fs::write(&p, text).unwrap();
            let e = load(d.path(), None, &no_env).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert!(matches!(
            load(d.path(), Some(&d.path().join("missing.json")), &no_env),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn set_writes_only_that_key_and_validates() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(FILE_NAME);
        set_key(d.path(), &p, "rest.port", "9998").unwrap();
        set_key(d.path(), &p, "p2p.bootstrap_peers", "[]").unwrap();
        let v = read_file(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"rest":{"port":9998},"p2p":{"bootstrap_peers":[]}})
        );
        assert!(
            set_key(d.path(), &p, "rest.prot", "1")
                .unwrap_err()
                .to_string()
                .contains("did you mean")
        );
        assert!(set_key(d.path(), &p, "rest.port", "x").is_err());
        assert!(set_key(d.path(), &p, "rest", "1").is_err());
        assert!(set_key(d.path(), &p, "p2p.listen_address", "nonsense").is_err());
        // A refused set leaves the file as it was.
        assert_eq!(read_file(&p).unwrap(), v);
        assert_eq!(
            load(d.path(), None, &no_env).unwrap().config.rest.port,
            9998
        );
    }
}
