//! The daemon's log output: human-readable lines on stderr and, when configured, JSON lines
//! in a file rotated by size ([`rotate`]); one level for both, which [`Logging`] changes at
//! run time (the node's `/dms/node/logger/config`).
//!
//! This crate decides where log lines go and which levels pass; it must not decide what the
//! rest of the node logs, and it holds no other state.

pub mod rotate;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

pub use rotate::{Limits, RotatingFile};

/// Log levels, most verbose first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Everything.
    Trace,
    /// Diagnostics.
    Debug,
    /// The default.
    Info,
    /// Problems the node works around.
    Warn,
    /// Failures.
    Error,
}

impl Level {
    /// Parses a level name, case-insensitively; NuNet's (zap's) `dpanic`, `panic` and `fatal`
    /// mean `error` here.
    pub fn parse(s: &str) -> Result<Self, LogError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "trace" => Ok(Self::Trace),
            "debug" => Ok(Self::Debug),
            "info" => Ok(Self::Info),
            "warn" | "warning" => Ok(Self::Warn),
            "error" | "dpanic" | "panic" | "fatal" => Ok(Self::Error),
            _ => Err(LogError::Level(s.to_string())),
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// What can go wrong setting up or changing the logging.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Not a level name.
    #[error("{0:?} is not a log level (trace, debug, info, warn, error)")]
    Level(String),
    /// The log file's directory could not be created.
    #[error("log file {path}: {source}")]
    File {
        /// The configured file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The filter could not be swapped (the subscriber is gone).
    #[error("changing the log level: {0}")]
    Reload(String),
}

/// What the daemon's logging lets the node change.
pub trait LogControl: Send + Sync {
    /// The level in force.
    fn level(&self) -> Level;
    /// The `RUST_LOG` filter in force instead of the level, until the level is changed.
    fn filter_override(&self) -> Option<String> {
        None
    }
    /// Switches to `level` at once (no restart).
    fn set_level(&self, level: Level) -> Result<(), LogError>;
}

/// Where logs go and at what level.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The starting level.
    pub level: Level,
    /// JSON lines also go to this file, rotated within these limits.
    pub file: Option<(PathBuf, Limits)>,
    /// `RUST_LOG`, when set: a full filter that replaces the level until the level is changed
    /// at run time.
    pub env_filter: Option<String>,
}

/// Libraries whose debug output drowns the node's own: kept at `warn` whatever the level.
const QUIET: &str = "libp2p_gossipsub=warn,libp2p_kad=warn,libp2p_swarm=warn";

fn filter_for(level: Level) -> EnvFilter {
    EnvFilter::new(format!("{},{QUIET}", level.as_str()))
}

/// Swaps the log filter in place.
type Reload = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The installed logging.
pub struct Logging {
    reload: Reload,
    /// The level, and the `RUST_LOG` filter in force instead of it until it is changed.
    level: Mutex<(Level, Option<String>)>,
}

impl LogControl for Logging {
    fn level(&self) -> Level {
        self.level.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    fn filter_override(&self) -> Option<String> {
        self.level
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn set_level(&self, level: Level) -> Result<(), LogError> {
        let mut cur = self.level.lock().unwrap_or_else(|e| e.into_inner());
        (self.reload)(filter_for(level)).map_err(LogError::Reload)?;
        *cur = (level, None);
        Ok(())
    }
}

#[derive(Clone)]
struct FileWriter(Arc<RotatingFile>);

impl<'a> MakeWriter<'a> for FileWriter {
    type Writer = rotate::LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        rotate::LineWriter(&self.0)
    }
}

/// Installs the process's logging, and `traces` beside it when given (a layer that sees
/// spans whatever the log level: the logs then filter per layer). A second call in the same
/// process (tests) leaves the first in place and returns a control that still changes its
/// own, uninstalled filter.
pub fn init<T>(settings: &Settings, traces: Option<T>) -> Result<Arc<Logging>, LogError>
where
    T: tracing_subscriber::Layer<Registry> + Send + Sync + 'static,
{
    let (filter, custom) = match settings.env_filter.as_deref() {
        Some(f) => match EnvFilter::try_new(f) {
            Ok(filter) => (filter, Some(f.to_string())),
            Err(e) => {
                eprintln!(
                    "RUST_LOG {f:?}: {e}; using level {}",
                    settings.level.as_str()
                );
                (filter_for(settings.level), None)
            }
        },
        None => (filter_for(settings.level), None),
    };
    let file = match &settings.file {
        Some((path, limits)) => Some(Arc::new(RotatingFile::new(path.clone(), *limits).map_err(
            |source| LogError::File {
                path: path.clone(),
                source,
            },
        )?)),
        None => None,
    };
    // Built where they are layered: their type names the subscriber below them.
    macro_rules! layers {
        () => {
            (
                tracing_subscriber::fmt::layer().with_writer(std::io::stderr),
                file.clone().map(|f| {
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_current_span(true)
                        .with_span_list(true)
                        .with_writer(FileWriter(f))
                }),
            )
        };
    }
    let reload: Reload = match traces {
        // Without traces the filter is global: disabled levels cost nothing anywhere.
        None => {
            let (filter, handle) = reload::Layer::new(filter);
            let (stderr, json) = layers!();
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(stderr)
                .with(json)
                .try_init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
        Some(traces) => {
            let (filter, handle) = reload::Layer::new(filter);
            let (stderr, json) = layers!();
            let logs = tracing_subscriber::Layer::with_filter(
                tracing_subscriber::Layer::and_then(stderr, json),
                filter,
            );
            let _ = tracing_subscriber::registry()
                .with(traces)
                .with(logs)
                .try_init();
            Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
        }
    };
    Ok(Arc::new(Logging {
        reload,
        level: Mutex::new((settings.level, custom)),
    }))
}

/// Days as a duration (config `max_age_days`; 0: no age limit).
pub fn days(n: u64) -> Option<Duration> {
    (n > 0).then(|| Duration::from_secs(n.saturating_mul(24 * 3600)))
}
