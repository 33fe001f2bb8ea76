//! Gossip broadcasts whose receivers answer directly (to an ephemeral reply behavior), and
//! the caller's rules for when to stop collecting. This module only publishes and collects;
//! it must not interpret the replies (that is the caller's business).

use std::time::Duration;

use nunet_capability::{Capability, now_ns};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::envelope::{Handle, Options};
use crate::reply::ActorError;
use crate::system::{ActorSystem, decode_reply, reply_collector};

/// What a broadcast collected.
#[derive(Debug, Default)]
pub struct BroadcastReplies {
    /// Admitted replies: the replier's handle and its value.
    pub replies: Vec<(Handle, Value)>,
    /// Replies refused by the authorization check: the replier's handle and why.
    pub denied: Vec<(Handle, ActorError)>,
    /// When the first and the last admitted reply arrived, counted from the publish.
    pub first_reply: Option<Duration>,
    /// See [`Self::first_reply`].
    pub last_reply: Option<Duration>,
}

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
        close: impl FnMut(&[(Handle, Value)]) -> Option<Duration> + Send,
    ) -> Result<Vec<(Handle, Value)>, ActorError> {
        self.broadcast_collect(from_inbox, topic, be, payload, collect, None, close)
            .await
            .map(|r| r.replies)
    }

    /// Like [`Self::broadcast_with`], for replies that carry a decision (bids): each reply
    /// must be authorized for `reply_cap` by a chain our anchors accept, like any message
    /// (receivers send it under that capability when their broadcast behavior says so,
    /// [`crate::Behavior::replying_as`]). Refused replies never reach `close` or the result
    /// list; they come back in [`BroadcastReplies::denied`].
    #[allow(clippy::too_many_arguments)]
    pub async fn broadcast_authorized(
        &self,
        from_inbox: &str,
        topic: &str,
        be: &str,
        payload: Value,
        collect: Duration,
        reply_cap: Capability,
        close: impl FnMut(&[(Handle, Value)]) -> Option<Duration> + Send,
    ) -> Result<BroadcastReplies, ActorError> {
        self.broadcast_collect(
            from_inbox,
            topic,
            be,
            payload,
            collect,
            Some(reply_cap),
            close,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn broadcast_collect(
        &self,
        from_inbox: &str,
        topic: &str,
        be: &str,
        payload: Value,
        collect: Duration,
        reply_cap: Option<Capability>,
        mut close: impl FnMut(&[(Handle, Value)]) -> Option<Duration> + Send,
    ) -> Result<BroadcastReplies, ActorError> {
        let cont = format!("/reply/{:016x}", rand::random::<u64>());
        let (tx, mut rx) = mpsc::channel(1024);
        let (denied_tx, mut denied_rx) = mpsc::channel(1024);
        let mut endpoint = reply_collector(tx);
        if reply_cap.is_some() {
            endpoint.reply_capability = reply_cap;
            endpoint.denied = Some(denied_tx);
        }
        self.register(from_inbox, &cont, endpoint)?;
        let exp = now_ns().saturating_add(u64::try_from(collect.as_nanos()).unwrap_or(u64::MAX));
        let opt = Options {
            exp,
            cont: cont.clone(),
            topic: topic.to_string(),
            ..Options::default()
        };
        let env = match self.envelope(from_inbox, Handle::default(), be, &payload, opt) {
            Ok(env) => env,
            Err(e) => {
                self.unregister(from_inbox, &cont);
                return Err(e);
            }
        };
        let started = tokio::time::Instant::now();
        let published = self.publish(&env).await;
        let mut out = Vec::new();
        let (mut first_reply, mut last_reply) = (None, None);
        if published.is_ok() {
            let mut deadline = started + collect;
            while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                if let Ok(v) = decode_reply(&r) {
                    out.push((r.from.clone(), v));
                    last_reply = Some(started.elapsed());
                    first_reply = first_reply.or(last_reply);
                }
                if let Some(more) = close(&out) {
                    deadline = deadline.min(tokio::time::Instant::now() + more);
                }
            }
        }
        self.unregister(from_inbox, &cont);
        let mut denied = Vec::new();
        while let Ok(d) = denied_rx.try_recv() {
            denied.push(d);
        }
        published.map(|_| BroadcastReplies {
            replies: out,
            denied,
            first_reply,
            last_reply,
        })
    }

    /// The peers the transport knows to be subscribed to `topic` (libp2p peer ids); `None`
    /// when there is no network or the transport cannot tell.
    pub async fn topic_peers(&self, topic: &str) -> Option<Vec<String>> {
        self.transport()?.topic_peers(topic).await
    }

    /// Tells the transport that `peers` stayed silent in a broadcast they were expected to
    /// answer (see [`crate::Transport::quiet_topic_peers`]).
    pub async fn quiet_topic_peers(&self, peers: Vec<String>) {
        if let Some(t) = self.transport() {
            t.quiet_topic_peers(peers).await;
        }
    }
}
