//! One module per subcommand group.

pub mod actor;
pub mod cap;
pub mod config;
pub mod cp;
pub mod dashboard;
pub mod deploy;
pub mod deployment;
pub mod devnet;
pub mod gpu;
pub mod key;
pub mod run;
pub mod tap;
pub mod validate;
