//! Follow sessions on the orchestrating node: a capability-checked call (`deployment logs
//! --follow`) offers one, and the local API's output route claims it by its id, once,
//! within [`CLAIM_WITHIN`]. The follow itself starts only when it is claimed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::OutputError;
use crate::frame::Frame;

/// How long an offered session waits to be claimed.
pub const CLAIM_WITHIN: Duration = Duration::from_secs(30);
/// Most sessions waiting at once.
pub const MAX_PENDING: usize = 64;

/// Starts a follow: frames until [`Frame::Done`], or until the receiver is dropped.
pub type Follow = Box<dyn FnOnce() -> mpsc::Receiver<Frame> + Send>;

/// Sessions offered and not yet claimed.
#[derive(Default)]
pub struct Sessions {
    pending: Mutex<HashMap<String, (Instant, Follow)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// Offers `follow`; returns the id that claims it.
    pub fn offer(&self, follow: Follow) -> Result<String, OutputError> {
        let mut p = self
            .pending
            .lock()
            .map_err(|_| OutputError::Follow("sessions lock poisoned".into()))?;
        p.retain(|_, (at, _)| at.elapsed() < CLAIM_WITHIN);
        if p.len() >= MAX_PENDING {
            return Err(OutputError::Follow(format!(
                "{MAX_PENDING} follow sessions are waiting to be claimed; try again shortly"
            )));
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        p.insert(id.clone(), (Instant::now(), follow));
        Ok(id)
    }

    /// Starts the session `id`, once.
    pub fn claim(&self, id: &str) -> Option<mpsc::Receiver<Frame>> {
        let (at, follow) = self.pending.lock().ok()?.remove(id)?;
        (at.elapsed() < CLAIM_WITHIN).then(follow)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_session_starts_once_and_only_when_claimed() {
        let s = Sessions::default();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = started.clone();
        let id = s
            .offer(Box::new(move || {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                let (tx, rx) = mpsc::channel(1);
                let _ = tx.try_send(Frame::Done {
                    status: "running".into(),
                });
                rx
            }))
            .unwrap();
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst));
        assert!(s.claim("nope").is_none());
        let mut rx = s.claim(&id).unwrap();
        assert!(matches!(rx.recv().await, Some(Frame::Done { .. })));
        assert!(s.claim(&id).is_none(), "claimed once");
        for _ in 0..MAX_PENDING {
            s.offer(Box::new(|| mpsc::channel(1).1)).unwrap();
        }
        assert!(s.offer(Box::new(|| mpsc::channel(1).1)).is_err());
    }
}
