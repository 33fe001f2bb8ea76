//! The node's configuration: NuNet's `dms_config.json` keys and defaults, typed.
//!
//! Values come from, in increasing priority: built-in defaults, the config file (the
//! `--config` path, else the first of [`load::candidates`]), then environment variables
//! `DMS_<SECTION>_<KEY>` (e.g. `DMS_REST_PORT=9998`). Files written by NuNet's DMS are read
//! as NuNet reads them ([`nunet`]): keys in any case, its own keys and unknown keys ignored
//! *with a warning* (never silently), loosely typed values. Ill-typed and inconsistent values
//! are errors naming the key.
//!
//! This crate only reads, checks and writes configuration; it starts nothing.

/// Dotted-key access (`rest.port`) for `nunet config get/set`, and env overrides.
pub mod keys;
/// Finding, loading and atomically writing the config file.
pub mod load;
pub mod local;
/// The typed configuration and its defaults.
pub mod model;
pub mod nunet;

pub use load::{ConfigError, Loaded, Resolved, load, load_from, write_file};
pub use local::{client_ip, is_loopback};
pub use model::{Config, MAX_STORAGE_VOLUME_MB, MIN_STORAGE_VOLUME_MB};
