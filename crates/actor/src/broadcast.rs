//! Gossip broadcasts whose receivers answer directly (to an ephemeral reply behavior), and
//! the caller's rules for when to stop collecting. This module only publishes and collects;
//! it must not interpret the replies (that is the caller's business).

use std::time::Duration;

use nunet_capability::now_ns;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::envelope::{Handle, Options};
use crate::reply::ActorError;
use crate::system::{ActorSystem, decode_reply, reply_collector};

impl ActorSystem {
    /// Broadcasts `be` on `topic` and collects the replies that arrive within `collect`.
    pub async fn broadcast(
        &self,
        from_inbox: &str,
        topic: &str,
        be: &str,
        payload: Value,
        collect: Duration,
    ) -> Result<Vec<(Handle, Value)>, ActorError> {
        self.broadcast_with(from_inbox, topic, be, payload, collect, |_| None)
            .await
    }

    /// Like [`Self::broadcast`], but after each reply `close(replies so far)` may return
    /// how much longer to collect (`Some(Duration::ZERO)`: stop now). The collection only
    /// ever gets shorter, never past `collect`.
    pub async fn broadcast_with(
        &self,
        from_inbox: &str,
        topic: &str,
        be: &str,
        payload: Value,
        collect: Duration,
        mut close: impl FnMut(&[(Handle, Value)]) -> Option<Duration> + Send,
    ) -> Result<Vec<(Handle, Value)>, ActorError> {
        let cont = format!("/reply/{:016x}", rand::random::<u64>());
        let (tx, mut rx) = mpsc::channel(1024);
        self.register(from_inbox, &cont, reply_collector(tx))?;
        let exp = now_ns().saturating_add(collect.as_nanos() as u64);
        let opt = Options {
            exp,
            cont: cont.clone(),
            topic: topic.to_string(),
        };
        let env = match self.envelope(from_inbox, Handle::default(), be, &payload, opt) {
            Ok(env) => env,
            Err(e) => {
                self.unregister(from_inbox, &cont);
                return Err(e);
            }
        };
        let published = self.publish(&env).await;
        let mut out = Vec::new();
        if published.is_ok() {
            let mut deadline = tokio::time::Instant::now() + collect;
            while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                if let Ok(v) = decode_reply(&r) {
                    out.push((r.from.clone(), v));
                }
                if let Some(more) = close(&out) {
                    deadline = deadline.min(tokio::time::Instant::now() + more);
                }
            }
        }
        self.unregister(from_inbox, &cont);
        published.map(|_| out)
    }

    /// The peers the transport knows to be subscribed to `topic` (libp2p peer ids); `None`
    /// when there is no network or the transport cannot tell.
    pub async fn topic_peers(&self, topic: &str) -> Option<Vec<String>> {
        self.transport()?.topic_peers(topic).await
    }
}
