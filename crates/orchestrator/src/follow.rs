//! Following a deployment's output (`deployment logs -f`): one stream per allocation from
//! its provider ([`nunet_output::serve`]), merged into one channel of keyed frames for the
//! local API.
//!
//! Each allocation's reader keeps the offsets it has passed on; when its stream breaks (the
//! provider restarted, the connection dropped) it asks for a new ticket and resumes at
//! those offsets, so the merged output has no gap and no duplicate. The channel is
//! bounded: a slow reader at the end stops the readers, which stop reading their streams,
//! which stops the providers. Following ends with [`Frame::Done`] once every followed
//! allocation reported a final state after its output, or the deployment is over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use nunet_output::{Frame, State};
use nunet_protocol::calls::EnsembleLogsFollow;
use nunet_protocol::{FollowRequest, LogCursor, ManifestAllocation, ManifestNode};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::engine::Engine;

/// Frames buffered between the readers and the local API.
const CHANNEL: usize = 16;
/// How often the merge looks at the deployment for allocations that appeared, moved or
/// ended (its own record, in memory; nothing goes over the network).
const LOOK: Duration = Duration::from_secs(1);
/// Longest wait before a broken stream is opened again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a ticket call may take.
const TICKET_TIMEOUT: Duration = Duration::from_secs(15);

/// The allocations `only` selects (all without it): `<node>.<alloc>`, the allocation name,
/// or its id.
pub(crate) fn pick<'a>(
    allocations: &'a BTreeMap<String, ManifestAllocation>,
    only: Option<&str>,
) -> Vec<(&'a String, &'a ManifestAllocation)> {
    allocations
        .iter()
        .filter(|(k, a)| {
            only.is_none_or(|o| o == k.as_str() || o == a.id || k.ends_with(&format!(".{o}")))
        })
        .collect()
}

/// Why a reader stopped.
enum End {
    /// The allocation reported a final state after all its output.
    Final,
    /// Its output cannot be followed any more (gone from the deployment, or the follower
    /// left).
    Gone,
}

impl Engine {
    /// Follows the output of the deployment's allocations (those `only` selects) from
    /// `cursors`, as keyed frames, until [`Frame::Done`] or until the receiver is dropped.
    pub fn follow(
        self: Arc<Self>,
        net: nunet_network::Network,
        only: Option<String>,
        cursors: BTreeMap<String, LogCursor>,
    ) -> mpsc::Receiver<Frame> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let span = crate::deployment_span(&self.inbox);
        tokio::spawn(self.merge(net, only, cursors, tx).instrument(span));
        rx
    }

    async fn merge(
        self: Arc<Self>,
        net: nunet_network::Network,
        only: Option<String>,
        mut cursors: BTreeMap<String, LogCursor>,
        tx: mpsc::Sender<Frame>,
    ) {
        // key → (allocation id, its reader)
        let mut readers: HashMap<String, (String, tokio::task::JoinHandle<End>)> = HashMap::new();
        // key → the allocation id whose reader ended
        let mut ended: HashMap<String, String> = HashMap::new();
        let done = |status: String| Frame::Done { status };
        loop {
            let Some(rec) = self.record() else {
                let _ = tx.send(done("record lost".into())).await;
                return;
            };
            let picked = pick(&rec.manifest.allocations, only.as_deref());
            if let Some(o) = &only
                && picked.is_empty()
                && !rec.manifest.allocations.is_empty()
            {
                let _ = tx
                    .send(Frame::Error {
                        key: String::new(),
                        message: format!("no allocation {o} in deployment {}", rec.id),
                    })
                    .await;
                let _ = tx.send(done(rec.status.as_str().into())).await;
                return;
            }
            // Readers that ended.
            let finished: Vec<String> = readers
                .iter()
                .filter(|(_, (_, h))| h.is_finished())
                .map(|(k, _)| k.clone())
                .collect();
            for k in finished {
                if let Some((id, _)) = readers.remove(&k) {
                    ended.insert(k, id);
                }
            }
            for (k, a) in &picked {
                let Some(node) = rec.manifest.nodes.get(&a.node_id) else {
                    continue;
                };
                if ended.get(*k) == Some(&a.id) {
                    continue;
                }
                match readers.get(*k) {
                    Some((id, _)) if id == &a.id => continue,
                    // Replaced by another allocation: its reader goes.
                    Some((_, h)) => h.abort(),
                    None => {}
                }
                let cursor = cursors.remove(*k).unwrap_or_default();
                let reader = self.clone().read_one(
                    net.clone(),
                    (*k).clone(),
                    a.id.clone(),
                    node.clone(),
                    cursor,
                    tx.clone(),
                );
                readers.insert((*k).clone(), (a.id.clone(), tokio::spawn(reader)));
            }
            let over = rec.status.is_terminal();
            if readers.is_empty() && (!picked.is_empty() || over) {
                let _ = tx.send(done(rec.status.as_str().into())).await;
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(LOOK) => {}
                () = tx.closed() => break,
            }
        }
        for (_, (_, h)) in readers {
            h.abort();
        }
    }

    /// Whether allocation `id` is still the deployment's under `key`, and the deployment
    /// still runs.
    fn still_current(&self, key: &str, id: &str) -> bool {
        self.record().is_some_and(|r| {
            !r.status.is_terminal() && r.manifest.allocations.get(key).is_some_and(|a| a.id == id)
        })
    }

    /// Follows one allocation, reconnecting until it ends, moves, or the follower leaves.
    async fn read_one(
        self: Arc<Self>,
        net: nunet_network::Network,
        key: String,
        id: String,
        node: ManifestNode,
        mut cursor: LogCursor,
        tx: mpsc::Sender<Frame>,
    ) -> End {
        let Ok(peer) = node.peer.parse::<nunet_network::PeerId>() else {
            let _ = tx
                .send(Frame::Error {
                    key,
                    message: format!("provider peer id {} is malformed", node.peer),
                })
                .await;
            return End::Gone;
        };
        let mut backoff = Duration::from_millis(250);
        let mut said: Option<String> = None;
        let mut begun: Option<String> = None;
        loop {
            let why = match self
                .stream_once(&net, peer, &key, &id, &node, &mut cursor, &mut begun, &tx)
                .await
            {
                Ok(end) => return end,
                Err(why) => why,
            };
            if tx.is_closed() {
                return End::Gone;
            }
            if !self.still_current(&key, &id) {
                // Shut down or moved: the next look of the merge decides.
                return End::Gone;
            }
            // Said once per reason, not at every try.
            if said.as_deref() != Some(why.as_str()) {
                let message = format!("{why}; trying again");
                if tx
                    .send(Frame::Error {
                        key: key.clone(),
                        message,
                    })
                    .await
                    .is_err()
                {
                    return End::Gone;
                }
                said = Some(why);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One ticket and one stream: `Ok` when following this allocation is over, `Err` with
    /// the reason when the stream should be opened again.
    #[allow(clippy::too_many_arguments)]
    async fn stream_once(
        &self,
        net: &nunet_network::Network,
        peer: nunet_network::PeerId,
        key: &str,
        id: &str,
        node: &ManifestNode,
        cursor: &mut LogCursor,
        begun: &mut Option<String>,
        tx: &mpsc::Sender<Frame>,
    ) -> Result<End, String> {
        let req = FollowRequest {
            allocation: id.to_string(),
        };
        // Any refusal is tried again while this node's record still holds the allocation
        // (a restarting provider answers "no behavior" until it restored it); the caller
        // stops once the record says it is gone.
        let ticket = self
            .call_in::<EnsembleLogsFollow>(&node.handle, &req, TICKET_TIMEOUT)
            .await
            .map_err(|e| format!("provider {}: {}", node.peer, e.message))?;
        if cursor.source.as_deref() != Some(ticket.source.as_str()) {
            // Output of another source (none yet, or the allocation moved): from its start.
            *cursor = LogCursor {
                source: Some(ticket.source.clone()),
                ..LogCursor::default()
            };
        }
        if begun.as_deref() != Some(ticket.source.as_str()) {
            let begin = Frame::Begin {
                key: key.to_string(),
                source: ticket.source.clone(),
            };
            if tx.send(begin).await.is_err() {
                return Ok(End::Gone);
            }
            *begun = Some(ticket.source.clone());
        }
        let mut stream = nunet_output::serve::open(
            net,
            peer,
            &ticket.ticket,
            cursor.stdout_offset,
            cursor.stderr_offset,
        )
        .await
        .map_err(|e| e.to_string())?;
        loop {
            let frame = match Frame::read(&mut stream).await {
                Ok(Some(f)) => f,
                // A stream ends cleanly both when the provider dropped the allocation and
                // when its daemon died: the next ticket call tells which.
                Ok(None) => return Err(format!("provider {} closed the output stream", node.peer)),
                Err(e) => return Err(e.to_string()),
            };
            let fin = match &frame {
                Frame::Output {
                    channel,
                    offset,
                    data,
                    ..
                } => {
                    let at = match channel {
                        nunet_output::Channel::Stdout => &mut cursor.stdout_offset,
                        nunet_output::Channel::Stderr => &mut cursor.stderr_offset,
                    };
                    let end = offset.checked_add(data.len() as u64);
                    match end {
                        Some(end) if *offset == *at => *at = end,
                        _ => {
                            return Err(format!(
                                "provider {} sent output at {offset}, expected {at}",
                                node.peer
                            ));
                        }
                    }
                    false
                }
                Frame::Skipped { channel, to, .. } => {
                    let at = match channel {
                        nunet_output::Channel::Stdout => &mut cursor.stdout_offset,
                        nunet_output::Channel::Stderr => &mut cursor.stderr_offset,
                    };
                    if *to < *at {
                        return Err(format!(
                            "provider {} skipped back to {to} from {at}",
                            node.peer
                        ));
                    }
                    *at = *to;
                    false
                }
                Frame::State {
                    state: State { status, .. },
                    ..
                } => status.is_final(),
                Frame::Error { message, .. } => return Err(message.clone()),
                Frame::Begin { .. } | Frame::Done { .. } => {
                    return Err(format!("provider {} sent an unexpected frame", node.peer));
                }
            };
            if tx.send(frame.keyed(key)).await.is_err() {
                return Ok(End::Gone);
            }
            if fin {
                return Ok(End::Final);
            }
        }
    }
}
