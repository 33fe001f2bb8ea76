//! `/dms/node/logger/config` (NuNet's behavior): the daemon's log level, read and changed at
//! run time. The binary owns the logging setup and hands the node a [`LogControl`].
//!
//! NuNet's request also configures Elasticsearch and APM export (`url`, `interval`,
//! `api_key`, `apm_url`, `elastic_enabled`); this node has neither, and says so rather than
//! accepting and ignoring them.

use std::sync::Arc;

use nunet_actor::{ActorError, ActorSystem, Behavior, Incoming};
use nunet_logging::{Level, LogControl};
use serde::Deserialize;
use serde_json::json;

/// NuNet's `LoggerConfigRequest`, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    interval: Option<i64>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    apm_url: Option<String>,
    #[serde(default)]
    elastic_enabled: Option<bool>,
}

fn handle(
    control: &dyn LogControl,
    payload: serde_json::Value,
) -> Result<serde_json::Value, ActorError> {
    let req: Request = if payload.is_null() {
        Request::default()
    } else {
        serde_json::from_value(payload)
            .map_err(|e| ActorError::failed(format!("logger config request: {e}")))?
    };
    let unsupported: Vec<&str> = [
        ("url", req.url.is_some()),
        ("interval", req.interval.is_some_and(|i| i != 0)),
        ("api_key", req.api_key.is_some()),
        ("apm_url", req.apm_url.is_some()),
        ("elastic_enabled", req.elastic_enabled == Some(true)),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect();
    if !unsupported.is_empty() {
        return Err(ActorError::failed(format!(
            "{}: this node has no Elasticsearch or APM export (its logs go to stderr and \
             observability.logging.file; its metrics to /metrics on the local API)",
            unsupported.join(", ")
        )));
    }
    if let Some(l) = req.level.as_deref().filter(|l| !l.is_empty()) {
        let new = Level::parse(l).map_err(|e| ActorError::failed(e.to_string()))?;
        let old = control.level();
        control
            .set_level(new)
            .map_err(|e| ActorError::failed(e.to_string()))?;
        tracing::warn!(from = old.as_str(), to = new.as_str(), "log level changed");
    }
    let mut reply = json!({"OK": true, "level": control.level().as_str()});
    if let Some(f) = control.filter_override() {
        // RUST_LOG decides until the level is changed here.
        reply["filter"] = json!(f);
    }
    Ok(reply)
}

/// Registers `/dms/node/logger/config` on the root actor: `{"level": "debug"}` switches the
/// level; an empty request answers the level in force.
pub fn register(system: &ActorSystem, control: Arc<dyn LogControl>) -> Result<(), ActorError> {
    system.register(
        "root",
        "/dms/node/logger/config",
        Behavior::direct(move |m: Incoming| {
            let c = control.clone();
            async move { handle(c.as_ref(), m.payload) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Fixed(Mutex<Level>);

    impl LogControl for Fixed {
        fn level(&self) -> Level {
            *self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
        fn set_level(&self, level: Level) -> Result<(), nunet_logging::LogError> {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = level;
            Ok(())
        }
    }

    #[test]
    fn a_level_is_switched_and_reported_and_elastic_settings_are_refused() {
        let c = Fixed(Mutex::new(Level::Info));
        let r = handle(&c, json!({"level": "DEBUG"})).expect("switch");
        assert_eq!(r, json!({"OK": true, "level": "debug"}));
        assert_eq!(c.level(), Level::Debug);
        assert_eq!(handle(&c, json!({})).expect("read")["level"], "debug");
        assert_eq!(
            handle(&c, serde_json::Value::Null).expect("read")["level"],
            "debug"
        );
        assert_eq!(
            handle(&c, json!({"level": "fatal"})).expect("zap name")["level"],
            "error"
        );
        let e = handle(&c, json!({"level": "loud"})).expect_err("bad level");
        assert!(e.message.contains("\"loud\" is not a log level"), "{e}");
        let e = handle(&c, json!({"url": "http://es:9200", "level": "info"})).expect_err("elastic");
        assert!(
            e.message.contains("url: this node has no Elasticsearch"),
            "{e}"
        );
        assert_eq!(c.level(), Level::Error, "a refused request changes nothing");
        let e = handle(&c, json!({"levle": "info"})).expect_err("typo");
        assert!(e.message.contains("unknown field `levle`"), "{e}");
    }
}
