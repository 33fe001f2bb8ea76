//! The operator's web dashboard, served by the daemon on its local REST listener: this node
//! (identity, peers, reachability, onboarded / free / allocated resources with their history),
//! the deployments it orchestrates (status, per-phase timeline, allocations with provider,
//! address, health and restarts), what it hosts, and a live view of a deployment's output.
//!
//! - [`assets`]: the page, built from `web/` with Vite into `dist/` and embedded in the binary
//!   at compile time, so the daemon serves it offline (no CDN, no npm at run time).
//! - [`auth`]: the dashboard's access token and the one-time codes a page trades for it. The
//!   REST listener already refuses every non-loopback client; the token keeps out the other
//!   local users and any web page the operator's browser visits (they cannot read the `0600`
//!   token file).
//! - [`views`]: read-only JSON views made by invoking a fixed list of this node's own
//!   behaviours in process; [`history`] samples the resources every few seconds.
//!
//! What it must not do: change anything on the node (every view reads; the `POST`s open a
//! follow session of a deployment's output or trade a one-time code), let the browser choose
//! which behaviour is invoked, or hold a user's key. Actions stay with the CLI, whose envelopes the user signs.

pub mod assets;
pub mod auth;
pub mod history;
mod routes;
pub mod views;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nunet_actor::ActorSystem;

pub use auth::{Codes, TOKEN_FILE, Token};
pub use routes::router;

/// How often the resources are sampled for the chart.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The token file could not be written.
    #[error("dashboard token {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// No randomness for the token.
    #[error("dashboard token: no randomness: {0}")]
    Random(String),
}

/// The dashboard of one node: its token, its resource history and the actor system its views
/// read through.
#[derive(Clone)]
pub struct Dashboard {
    pub(crate) system: ActorSystem,
    pub(crate) token: Arc<Token>,
    pub(crate) codes: Arc<Codes>,
    pub(crate) history: Arc<history::History>,
}

impl Dashboard {
    /// A dashboard reading through `system`, with a new token written to
    /// `<data_dir>/dashboard.token` (mode `0600`; a token from an earlier run no longer
    /// works). Call [`Dashboard::start_sampling`] inside a Tokio runtime to fill the chart.
    pub fn new(system: ActorSystem, data_dir: &Path) -> Result<Self, DashboardError> {
        let token = Token::generate()?;
        token.write(&data_dir.join(TOKEN_FILE))?;
        Ok(Self {
            system,
            token: Arc::new(token),
            codes: Arc::default(),
            history: Arc::new(history::History::new(history::KEEP)),
        })
    }

    /// Samples the node's resources every `every` until the returned task is aborted.
    pub fn start_sampling(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let d = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let s = views::sample(&d.system).await;
                d.history.push(s);
            }
        })
    }

    /// The token (the CLI reads it from the file; tests may use it directly).
    pub fn token(&self) -> &Token {
        &self.token
    }
}
