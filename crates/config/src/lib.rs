//! The node's configuration: NuNet's `dms_config.json` keys and defaults, typed.
//!
//! Values come from, in increasing priority: built-in defaults, the config file (the
//! `--config` path, else `<home>/dms_config.json`, else `/etc/nunet/dms_config.json`), then
//! environment variables `DMS_<SECTION>_<KEY>` (e.g. `DMS_REST_PORT=9998`). Unknown keys and
//! ill-typed values are errors naming the key, never ignored.
//!
//! This crate only reads, checks and writes configuration; it starts nothing.

/// Dotted-key access (`rest.port`) for `nunet config get/set`, and env overrides.
pub mod keys;
/// Finding, loading and atomically writing the config file.
pub mod load;
pub mod local;
/// The typed configuration and its defaults.
pub mod model;

pub use load::{ConfigError, Loaded, load, write_file};
pub use local::{client_ip, is_loopback};
pub use model::Config;
