use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Config;
use crate::keys::{env_name, get, leaf_keys, parse_value, set, suggestions};
use crate::nunet;

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
    /// Two keys of one section that differ only in case.
    #[error(
        "{origin}: the key {key:?} is given twice, in different case (keys are case-insensitive, as in NuNet)"
    )]
    CaseClash {
        /// File it came from.
        origin: String,
        /// The key, lower-cased.
        key: String,
    },
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
    /// What the loader read differently from the file or ignored in it (NuNet's keys this
    /// node does not use, deprecated spellings, unknown keys, other candidate files): show
    /// them to the operator.
    pub warnings: Vec<String>,
}

/// A configuration resolved from a file's value and the environment.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The effective configuration.
    pub config: Config,
    /// Environment variables that overrode file values.
    pub env_overrides: Vec<String>,
    /// See [`Loaded::warnings`].
    pub warnings: Vec<String>,
    /// Keys of the file that neither this node nor NuNet knows (also in `warnings`):
    /// `config edit` refuses them, loading only warns.
    pub unknown_keys: Vec<String>,
}

/// Where a config file is looked for when `--config` is not given, first found wins:
/// `<home>/dms_config.json`, then `extra` in order (the CLI passes NuNet's other places,
/// `./dms_config.json` and `~/.config/nunet/dms_config.json`, when the home is the default
/// `~/.nunet`), then `/etc/nunet/dms_config.json`.
pub fn candidates(home: &Path, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut c = vec![home.join(FILE_NAME)];
    c.extend(extra.iter().cloned());
    c.push(PathBuf::from(SYSTEM_PATH));
    c
}

/// Reads a candidate file found in a shared place (the current directory, `~/.config`): a
/// file someone else could have written must not configure this node. The file is opened
/// once without following a symbolic link, and its owner and mode are checked on that open
/// file (no race with a swapped path), as are its directory's. `Err` says why it is not read.
fn read_shared(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let me = nix::unistd::geteuid().as_raw();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| format!("cannot be opened without following links ({e})"))?;
    let trusted = |what: &str, m: &fs::Metadata| {
        if m.uid() != me && m.uid() != 0 {
            return Err(format!("{what} is owned by uid {}, not by you", m.uid()));
        }
        if m.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} is writable by others (mode {:o})",
                m.mode() & 0o777
            ));
        }
        Ok(())
    };
    let m = f.metadata().map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err("it is not a regular file".into());
    }
    trusted("it", &m)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    trusted(
        "its directory",
        &fs::metadata(dir).map_err(|e| e.to_string())?,
    )?;
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text)
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
    load_from(home, explicit, &[], env)
}

/// [`load`], also looking in `extra` places (see [`candidates`]).
pub fn load_from(
    home: &Path,
    explicit: Option<&Path>,
    extra: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Loaded, ConfigError> {
    let home_file = home.join(FILE_NAME);
    let mut warnings = Vec::new();
    let mut shared_text = None;
    let file = match explicit {
        Some(p) if p.exists() => Some(p.to_path_buf()),
        Some(p) => return Err(ConfigError::Missing(p.to_path_buf())),
        None => {
            let mut found: Option<PathBuf> = None;
            for c in candidates(home, extra) {
                if !c.exists() {
                    continue;
                }
                if let Some(f) = &found {
                    warnings.push(format!(
                        "{} is not read: {} comes first",
                        c.display(),
                        f.display()
                    ));
                    continue;
                }
                if extra.contains(&c) {
                    match read_shared(&c) {
                        Ok(text) => shared_text = Some(text),
                        Err(why) => {
                            warnings.push(format!("{} is not read: {why}", c.display()));
                            continue;
                        }
                    }
                }
                found = Some(c);
            }
            found
        }
    };
    let write_path = explicit
        .map(Path::to_path_buf)
        .or_else(|| file.clone())
        .unwrap_or(home_file);
    let file_value = match (&file, shared_text) {
        (Some(p), Some(text)) => parse_text(&text, p)?,
        (Some(p), None) => read_file(p)?,
        (None, _) => Value::Object(Default::default()),
    };
    let origin = file.as_ref().map(|p| p.display().to_string());
    let r = resolve(home, &file_value, origin.as_deref(), env)?;
    warnings.extend(r.warnings);
    Ok(Loaded {
        config: r.config,
        file,
        write_path,
        env_overrides: r.env_overrides,
        warnings,
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

/// Merges a file's values and env overrides over the defaults for `home`, checking every key
/// this node uses. A file in NuNet's habits is read as NuNet reads it ([`nunet::normalize`]):
/// keys in any case, `null` for the default, loosely typed values, NuNet's own keys and
/// unknown keys ignored with a warning.
pub fn resolve(
    home: &Path,
    file: &Value,
    origin: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, ConfigError> {
    let defaults = defaults_value(home);
    let known = leaf_keys(&defaults);
    let origin_name = origin.unwrap_or("config").to_string();
    let nunet::Normalized {
        value: file,
        mut warnings,
        unknown: unknown_keys,
    } = nunet::normalize(file, &defaults).map_err(|c| ConfigError::CaseClash {
        origin: origin_name.clone(),
        key: c.0,
    })?;
    let mut merged = defaults.clone();
    for key in leaf_keys(&file) {
        let Some(like) = get(&defaults, &key) else {
            continue;
        };
        let mut v = get(&file, &key).cloned().unwrap_or(Value::Null);
        if let Some(c) = check_type(&v, like)
            .is_err()
            .then(|| nunet::coerce(&v, like))
            .flatten()
        {
            v = c;
        }
        check_type(&v, like).map_err(|reason| ConfigError::BadValue {
            origin: origin_name.clone(),
            key: key.clone(),
            reason,
        })?;
        warnings.extend(nunet::value_habits(&key, &mut v));
        set(&mut merged, &key, v);
    }
    let mut overrides = Vec::new();
    for key in &known {
        let var = env_name(key);
        if let Some(text) = env(&var) {
            let like = get(&defaults, key).cloned().unwrap_or(Value::Null);
            let mut v = parse_value(&text, &like).map_err(|reason| ConfigError::BadValue {
                origin: format!("environment variable {var}"),
                key: key.clone(),
                reason,
            })?;
            warnings.extend(nunet::value_habits(key, &mut v));
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
    Ok(Resolved {
        config,
        env_overrides: overrides,
        warnings,
        unknown_keys,
    })
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
/// `path` (created if missing), atomically, after backing the old file up. The whole
/// resulting file must validate. Keys are case-insensitive. A key of NuNet's that this node
/// does not use is written too (NuNet's tools set them), with a warning in the result; a key
/// nobody knows is refused.
pub fn set_key(
    home: &Path,
    path: &Path,
    key: &str,
    text: &str,
) -> Result<Vec<String>, ConfigError> {
    let key = key.to_lowercase();
    let defaults = defaults_value(home);
    let mut warnings = Vec::new();
    let value = match get(&defaults, &key).filter(|v| !v.is_object()) {
        Some(like) => parse_value(text, like).map_err(|reason| ConfigError::BadValue {
            origin: "config set".into(),
            key: key.clone(),
            reason,
        })?,
        None if nunet::is_nunet_only(&key) => {
            warnings.push(format!("{key} is a NuNet setting this node does not use"));
            serde_json::from_str(text).unwrap_or_else(|_| Value::from(text.to_string()))
        }
        None => {
            let known = leaf_keys(&defaults);
            return Err(ConfigError::UnknownKey {
                origin: "config set".into(),
                suggestions: suggestions(&known, &key),
                key,
            });
        }
    };
    let mut file = if path.exists() {
        nunet::lowercase_keys(&read_file(path)?).map_err(|c| ConfigError::CaseClash {
            origin: path.display().to_string(),
            key: c.0,
        })?
    } else {
        Value::Object(Default::default())
    };
    set(&mut file, &key, value);
    resolve(home, &file, Some(&path.display().to_string()), &|_| None)?;
    if let Some(b) = backup(path)? {
        warnings.push(format!("the previous file is kept as {}", b.display()));
    }
    write_file(path, &file)?;
    Ok(warnings)
}

/// How many `<file>.bk.<unix time>` backups are kept.
pub const BACKUPS_KEPT: usize = 5;

/// Copies an existing config file to `<path>.bk.<unix seconds>` (NuNet's naming) before it
/// is rewritten, keeping the newest [`BACKUPS_KEPT`]. `None` when there was no file.
pub fn backup(path: &Path) -> Result<Option<PathBuf>, ConfigError> {
    if !path.exists() {
        return Ok(None);
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ConfigError::Io { path: p, source }
    };
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| FILE_NAME.into());
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut target = dir.join(format!("{name}.bk.{secs}"));
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{name}.bk.{secs}.{n}"));
        n += 1;
    }
    fs::copy(path, &target).map_err(io(&target))?;
    let prefix = format!("{name}.bk.");
    let mut old: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(BACKUPS_KEPT);
    for (_, p) in old.into_iter().take(excess) {
        if p != target {
            let _ = fs::remove_file(p);
        }
    }
    Ok(Some(target))
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
            (
                r#"{"p2p":{"relay_circuit_mb":0}}"#,
                "p2p.relay_circuit_mb: 0 is not between 1 and",
            ),
            (
                r#"{"general":{"storage_volume_size_mb":8}}"#,
                "general.storage_volume_size_mb: 8 is outside 16-",
            ),
            (
                r#"{"p2p":{"relay_max_circuits":8,"relay_max_circuits_per_peer":9}}"#,
                "p2p.relay_max_circuits_per_peer: 9 is not between 1 and 8",
            ),
            (
                r#"{"p2p":{"relay_circuit_secs":100000}}"#,
                "p2p.relay_circuit_secs: 100000 is not between 1 and 86400",
            ),
            (
                r#"{"onboarding":{"reserve_disk_gb":-1}}"#,
                "onboarding.reserve_disk_gb: -1 is not between 0 and",
            ),
            (
                r#"{"onboarding":{"reserve_cpu_cores":"two"}}"#,
                "onboarding.reserve_cpu_cores: expected a number",
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
        // Unknown keys are ignored as NuNet ignores them, but never silently.
        fs::write(&p, r#"{"rest":{"prot":1},"nope":1}"#).unwrap();
        let w = load(d.path(), None, &no_env).unwrap().warnings;
        assert!(
            w.iter()
                .any(|x| x.contains("\"rest.prot\"") && x.contains("did you mean")),
            "{w:?}"
        );
        assert!(w.iter().any(|x| x.contains("\"nope\"")), "{w:?}");
    }

    /// Config files in the shapes NuNet's DMS writes load here, and say what they ignore.
    #[test]
    fn nunet_written_files_load() {
        let d = tempfile::tempdir().unwrap();
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        for (name, port, level, file, range_to) in [
            (
                "nunet-newest.json",
                9999,
                "debug",
                "/home/nunet/logs/nunet-dms.log",
                32768,
            ),
            (
                "nunet-config-set.json",
                4444,
                "info",
                "/home/u/nunet/logs/nunet-dms-logs.jsonl",
                65535,
            ),
            (
                "nunet-flat-observability.json",
                9991,
                "debug",
                "/root/nunet/logs/nunet-dms.log",
                32768,
            ),
            ("nunet-mixed-case.json", 9995, "warn", "", 65535),
        ] {
            let l = load(d.path(), Some(&dir.join(name)), &no_env)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let c = &l.config;
            assert_eq!(c.rest.port, port, "{name}");
            assert_eq!(c.observability.logging.level, level, "{name}");
            assert_eq!(c.observability.logging.file, file, "{name}");
            assert_eq!(c.general.port_available_range_to, range_to, "{name}");
            assert!(
                !l.warnings.is_empty(),
                "{name}: NuNet's own keys are reported"
            );
            for w in &l.warnings {
                assert!(!w.contains("unknown config key"), "{name}: {w}");
            }
        }
        let l = load(d.path(), Some(&dir.join("nunet-newest.json")), &no_env).unwrap();
        assert!(
            l.warnings.iter().any(|w| w.starts_with("apm.* (5 keys)")),
            "{:?}",
            l.warnings
        );
        assert_eq!(l.config.p2p.bootstrap_peers.len(), 3);
    }

    #[test]
    fn shared_places_are_searched_after_the_home_and_must_be_yours() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        let cwd_file = d.path().join(FILE_NAME);
        fs::write(&cwd_file, r#"{"rest":{"port":1111}}"#).unwrap();
        let l = load_from(&home, None, std::slice::from_ref(&cwd_file), &no_env).unwrap();
        assert_eq!(l.config.rest.port, 1111);
        assert_eq!(l.file.as_deref(), Some(cwd_file.as_path()));
        // The home's file wins; the other is named.
        fs::create_dir_all(&home).unwrap();
        fs::write(home.join(FILE_NAME), r#"{"rest":{"port":2222}}"#).unwrap();
        let l = load_from(&home, None, std::slice::from_ref(&cwd_file), &no_env).unwrap();
        assert_eq!(l.config.rest.port, 2222);
        assert!(
            l.warnings.iter().any(|w| w.contains("is not read")),
            "{:?}",
            l.warnings
        );
        // A file others can write is skipped, with the reason.
        fs::remove_file(home.join(FILE_NAME)).unwrap();
        fs::set_permissions(&cwd_file, fs::Permissions::from_mode(0o666)).unwrap();
        let l = load_from(&home, None, std::slice::from_ref(&cwd_file), &no_env).unwrap();
        assert_eq!(l.config.rest.port, 9999);
        assert!(
            l.warnings.iter().any(|w| w.contains("writable by others")),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn set_backs_up_and_accepts_nunet_keys_and_case() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(FILE_NAME);
        fs::write(&p, r#"{"REST":{"Port":9000},"apm":{"server_url":"x"}}"#).unwrap();
        let w = set_key(d.path(), &p, "Rest.Port", "9001").unwrap();
        assert!(w.iter().any(|x| x.contains(".bk.")), "{w:?}");
        let v = read_file(&p).unwrap();
        assert_eq!(v["rest"]["port"], 9001);
        assert_eq!(v["apm"]["server_url"], "x", "NuNet's keys are kept");
        let backups: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".bk."))
            .collect();
        assert_eq!(backups.len(), 1);
        assert!(
            fs::read_to_string(backups[0].path())
                .unwrap()
                .contains("9000")
        );
        // A NuNet key is written, with a warning; a key nobody knows is refused.
        let w = set_key(d.path(), &p, "observability.elasticsearch_api_key", "k").unwrap();
        assert!(w.iter().any(|x| x.contains("does not use")), "{w:?}");
        assert!(set_key(d.path(), &p, "observability.nonsense", "k").is_err());
        for _ in 0..8 {
            set_key(d.path(), &p, "rest.port", "9002").unwrap();
        }
        let n = fs::read_dir(d.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".bk."))
            .count();
        assert_eq!(n, BACKUPS_KEPT);
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
