//! One module per subcommand group.

pub mod cap;
pub mod config;
pub mod key;
pub mod validate;
