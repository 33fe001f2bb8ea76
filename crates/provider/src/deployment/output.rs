//! Allocation output on the provider: every execution's stdout and stderr go into the
//! allocation's spool ([`nunet_output::Spool`]) while it runs, and are served from there —
//! in chunks to `/dms/ensemble/<id>/allocation/logs`, and as a pushed stream to a follower
//! holding a ticket from `/dms/ensemble/<id>/allocation/logs/follow`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nunet_actor::{ActorError, ErrorKind, Incoming};
use nunet_executor::{Executor, LogOptions, LogSource};
use nunet_output::{Channel, Spool, State};
use nunet_protocol::{AllocationLogs, FollowRequest, FollowTicket, LOG_CHUNK, LogsRequest};

use super::{AllocRecord, MAX_LOG_BYTES, Provider, failed};

/// How long output may keep arriving after an execution ended before the rest is read from
/// the executor's history instead.
const DRAIN: Duration = Duration::from_secs(10);

/// The state a follower learns from a record: its final one, or `None` while it may still
/// produce output.
pub(super) fn state_of(r: &AllocRecord) -> Option<State> {
    r.status.is_final().then_some(State {
        status: r.status,
        exit_code: r.exit_code,
    })
}

/// Copies execution `id`'s output (generation `generation`) into `spool`: history first,
/// then as it comes when `follow`, until the executor's stream ends.
async fn copy(
    spool: Arc<Spool>,
    exec: Arc<dyn Executor>,
    id: String,
    generation: u64,
    follow: bool,
) -> Result<(), String> {
    let mut w = spool.writer(generation).await.map_err(|e| e.to_string())?;
    let opts = LogOptions {
        follow,
        skip_history: false,
    };
    let mut s = exec.logs(&id, opts).await.map_err(|e| e.to_string())?;
    let mut full = false;
    while let Some(chunk) = s.next().await {
        let c = chunk.map_err(|e| e.to_string())?;
        let channel = match c.source {
            LogSource::Stderr => Channel::Stderr,
            LogSource::Stdout | LogSource::Console => Channel::Stdout,
        };
        if let Err(e) = w.append(channel, &c.data) {
            // A full disk: said once; output is lost until there is room again.
            if !full {
                tracing::warn!(allocation = %id, error = %e, "cannot keep the allocation's output");
                full = true;
            }
        }
    }
    Ok(())
}

/// Copies an execution's output into its spool while it runs.
pub(super) struct Pump {
    task: tokio::task::JoinHandle<Result<(), String>>,
    spool: Arc<Spool>,
    exec: Arc<dyn Executor>,
    id: String,
    generation: u64,
}

impl Pump {
    /// Starts copying execution `id` (its record's `generation`).
    pub(super) fn start(
        spool: Arc<Spool>,
        exec: Arc<dyn Executor>,
        id: &str,
        generation: u64,
    ) -> Self {
        let task = tokio::spawn(copy(
            spool.clone(),
            exec.clone(),
            id.to_string(),
            generation,
            true,
        ));
        Self {
            task,
            spool,
            exec,
            id: id.to_string(),
            generation,
        }
    }

    /// After the execution ended: waits for the copy to reach the end of its output, or
    /// reads what is missing from the executor's history.
    pub(super) async fn drain(self) {
        let Pump {
            task,
            spool,
            exec,
            id,
            generation,
        } = self;
        let abort = task.abort_handle();
        let ok = matches!(tokio::time::timeout(DRAIN, task).await, Ok(Ok(Ok(()))));
        if ok {
            return;
        }
        abort.abort();
        // The history again: the writer skips what is already there.
        if let Err(e) = copy(spool, exec, id.clone(), generation, false).await {
            tracing::warn!(allocation = %id, error = %e, "output after the end could not be read");
        }
    }
}

impl Provider {
    /// The spool of allocation `id`, made when its record was adopted; never made again
    /// after the record was forgotten.
    pub(super) fn spool(&self, id: &str) -> Result<Arc<Spool>, ActorError> {
        self.output.spools().get(id).ok_or_else(|| {
            ActorError::new(
                ErrorKind::NotFound,
                format!("allocation {id} has no output here"),
            )
        })
    }

    /// The spool's view of `r` (after every change of a record). A terminated allocation
    /// gets its final state from its watcher once the output is drained (or at once when
    /// nothing ran), so followers see it after the last output.
    pub(super) fn spool_state(&self, r: &AllocRecord) {
        if r.status == nunet_protocol::AllocationStatus::Terminated {
            return;
        }
        self.spool_final(r);
    }

    /// The spool's view of `r`, whatever it is.
    pub(super) fn spool_final(&self, r: &AllocRecord) {
        if let Some(s) = self.output.spools().get(&r.id) {
            s.set_state(state_of(r));
        }
    }

    /// The end of the output, for the record of an execution that ended (failure reasons,
    /// and providers' callers that read the whole output in one reply); `kept` when the
    /// spool has none (a record from before spools).
    pub(super) fn tails(&self, id: &str, kept: (&str, &str)) -> (String, String) {
        let (out, err) = match self.spool(id) {
            Ok(s) => (
                s.tail(Channel::Stdout, MAX_LOG_BYTES),
                s.tail(Channel::Stderr, MAX_LOG_BYTES),
            ),
            Err(_) => (String::new(), String::new()),
        };
        if out.is_empty() && err.is_empty() {
            return (kept.0.to_string(), kept.1.to_string());
        }
        (out, err)
    }

    /// `/dms/ensemble/<id>/allocation/logs`: one chunk per stream from the cursor.
    pub(super) async fn ensemble_logs(
        &self,
        ensemble_id: &str,
        m: &Incoming,
        req: LogsRequest,
    ) -> Result<AllocationLogs, ActorError> {
        let rec = self.one(ensemble_id, &req.allocation, m)?;
        let spool = self.spool(&rec.id)?;
        let max = match usize::try_from(req.max_bytes) {
            Ok(0) | Err(_) => LOG_CHUNK,
            Ok(n) => n.min(LOG_CHUNK),
        };
        let read = |c: Channel, from: u64| -> Result<(String, u64), ActorError> {
            let mut at = from;
            loop {
                match spool.read(c, at, max).map_err(failed)? {
                    nunet_output::spool::Read::Data(d) => {
                        // A character cut at the chunk's end comes whole in the next one.
                        let whole = whole_chars(&d);
                        let end = at + whole.len() as u64;
                        return Ok((String::from_utf8_lossy(whole).into_owned(), end));
                    }
                    nunet_output::spool::Read::Skipped(to) => at = to,
                    nunet_output::spool::Read::Nothing => return Ok((String::new(), at)),
                }
            }
        };
        let (stdout, stdout_offset) = read(Channel::Stdout, req.stdout_offset)?;
        let (stderr, stderr_offset) = read(Channel::Stderr, req.stderr_offset)?;
        Ok(AllocationLogs {
            allocation: Some(rec.id),
            name: Some(rec.name),
            status: Some(rec.status),
            exit_code: rec.exit_code,
            stdout,
            stderr,
            stdout_offset,
            stderr_offset,
            error: None,
        })
    }

    /// `/dms/ensemble/<id>/allocation/logs/follow`: a ticket for the calling node to follow
    /// one allocation's output on a stream.
    pub(super) fn follow_ticket(
        &self,
        ensemble_id: &str,
        m: &Incoming,
        req: FollowRequest,
    ) -> Result<FollowTicket, ActorError> {
        let rec = self.one(ensemble_id, &req.allocation, m)?;
        // The reply goes to this host, and only this host can open the stream with it.
        let peer = m
            .envelope
            .from
            .addr
            .host
            .parse()
            .map_err(|_| failed("the caller's host peer id is malformed"))?;
        let t = self.output.ticket(peer, &rec.id).map_err(failed)?;
        Ok(FollowTicket {
            ticket: t.ticket,
            source: t.source,
        })
    }

    /// The allocation of `ensemble_id` that `selector` names, for its orchestrator.
    fn one(
        &self,
        ensemble_id: &str,
        selector: &str,
        m: &Incoming,
    ) -> Result<AllocRecord, ActorError> {
        let cell: Arc<Mutex<AllocRecord>> = self
            .select(ensemble_id, Some(selector), m)?
            .into_iter()
            .next()
            .ok_or_else(|| ActorError::new(ErrorKind::NotFound, "no such allocation"))?;
        let rec = cell.lock().map_err(|_| failed("poisoned"))?.clone();
        Ok(rec)
    }
}

/// `d` without a UTF-8 sequence cut at its end (all of it when that would leave nothing).
fn whole_chars(d: &[u8]) -> &[u8] {
    match std::str::from_utf8(d) {
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => &d[..e.valid_up_to()],
        _ => d,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_end_on_whole_characters() {
        let s = "héllo".as_bytes();
        assert_eq!(super::whole_chars(&s[..2]), b"h");
        assert_eq!(super::whole_chars(&s[..3]), "hé".as_bytes());
        assert_eq!(
            super::whole_chars(&s[1..2]),
            &s[1..2],
            "nothing whole: as it is"
        );
        assert_eq!(
            super::whole_chars(b"\xff\xfeok"),
            b"\xff\xfeok",
            "invalid, not cut"
        );
    }
}
