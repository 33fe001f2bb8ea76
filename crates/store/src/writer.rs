//! Deployment and allocation records written by a thread of their own: callers queue a
//! document and go on (no SQLite call on their thread, no lock held while one runs); a
//! caller that must not answer before its records are on disk awaits [`Records::flush`].
//! The thread owns its own connection to the node database (WAL: it and the accounting's
//! connection never block each other's readers; writers wait up to the busy timeout).

use std::path::Path;
use std::sync::mpsc;

use futures::channel::oneshot;

use crate::{Store, StoreError, StoredDocument};

/// Which records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Deployments this node orchestrates.
    Deployment,
    /// Allocations this node runs as a provider.
    Allocation,
}

enum Cmd {
    Put(Kind, StoredDocument, i64),
    Delete(Kind, String),
    List(Kind, mpsc::Sender<Result<Vec<StoredDocument>, StoreError>>),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// A handle on the records thread (cheap to clone; the thread ends when every handle is
/// dropped, after writing what was queued).
#[derive(Clone)]
pub struct Records {
    tx: mpsc::Sender<Cmd>,
}

/// Why the records could not be written or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// A queued write failed (e.g. the disk is full); the first failure since the last flush.
    #[error("writing deployment records failed: {0}")]
    Write(String),
    /// The records thread is gone (it panicked, or the node is shutting down).
    #[error("the deployment records thread is gone")]
    Gone,
}

impl Records {
    /// Opens a second connection to the database at `path` (already opened and migrated by
    /// [`Store::open`]) and starts the thread.
    pub fn open(path: &Path) -> Result<Records, StoreError> {
        Self::start(Store::open(path)?)
    }

    /// Records in a private in-memory database (tests).
    pub fn in_memory() -> Result<Records, StoreError> {
        Self::start(Store::open_in_memory()?)
    }

    fn start(store: Store) -> Result<Records, StoreError> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        std::thread::Builder::new()
            .name("nunet-records".into())
            .spawn(move || run(store, rx))
            .map_err(|source| StoreError::Io {
                path: "<records thread>".into(),
                source,
            })?;
        Ok(Records { tx })
    }

    /// Queues `doc` to be inserted or replaced (never blocks on SQLite).
    pub fn put(&self, kind: Kind, doc: StoredDocument, now_ms: i64) {
        if self.tx.send(Cmd::Put(kind, doc, now_ms)).is_err() {
            tracing::error!("deployment records thread gone: a record was not written");
        }
    }

    /// Queues the removal of record `id`.
    pub fn delete(&self, kind: Kind, id: &str) {
        if self.tx.send(Cmd::Delete(kind, id.to_string())).is_err() {
            tracing::error!("deployment records thread gone: a record was not removed");
        }
    }

    /// Every record of `kind`, after every write queued before this call (blocks the caller
    /// until the thread answers: for start-up, not for async tasks).
    pub fn list(&self, kind: Kind) -> Result<Vec<StoredDocument>, RecordsError> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Cmd::List(kind, tx))
            .map_err(|_| RecordsError::Gone)?;
        rx.recv()
            .map_err(|_| RecordsError::Gone)?
            .map_err(|e| RecordsError::Write(e.to_string()))
    }

    /// Resolves once every write queued before this call is committed; the first write that
    /// failed since the last flush is the error.
    pub async fn flush(&self) -> Result<(), RecordsError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Flush(tx))
            .map_err(|_| RecordsError::Gone)?;
        rx.await
            .map_err(|_| RecordsError::Gone)?
            .map_err(RecordsError::Write)
    }
}

fn run(store: Store, rx: mpsc::Receiver<Cmd>) {
    let repo = |k: Kind| match k {
        Kind::Deployment => store.deployments(),
        Kind::Allocation => store.allocations(),
    };
    let mut failed: Option<String> = None;
    for cmd in rx {
        match cmd {
            Cmd::Put(k, doc, now) => {
                if let Err(e) = repo(k).put(&doc, now) {
                    tracing::error!(id = %doc.id, error = %e, "could not write a {k:?} record");
                    failed.get_or_insert_with(|| format!("{k:?} {}: {e}", doc.id));
                }
            }
            Cmd::Delete(k, id) => {
                if let Err(e) = repo(k).delete(&id) {
                    tracing::error!(%id, error = %e, "could not remove a {k:?} record");
                    failed.get_or_insert_with(|| format!("removing {k:?} {id}: {e}"));
                }
            }
            Cmd::List(k, reply) => {
                let _ = reply.send(repo(k).list());
            }
            Cmd::Flush(reply) => {
                let _ = reply.send(failed.take().map_or(Ok(()), Err));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(id: &str, status: &str) -> StoredDocument {
        StoredDocument {
            id: id.into(),
            ensemble_id: "e1".into(),
            status: status.into(),
            doc: "{}".into(),
        }
    }

    #[test]
    fn queued_writes_are_on_disk_after_flush_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dms.sqlite");
        let store = Store::open(&path).expect("open");
        let r = Records::open(&path).expect("records");
        r.put(Kind::Allocation, doc("a1", "pending"), 1);
        r.put(Kind::Allocation, doc("a1", "running"), 2);
        r.put(Kind::Allocation, doc("a2", "pending"), 3);
        r.delete(Kind::Allocation, "a2");
        r.put(Kind::Deployment, doc("e1", "Running"), 4);
        futures::executor::block_on(r.flush()).expect("flush");
        // The accounting's own connection sees them.
        let allocs = store.allocations().list().expect("list");
        assert_eq!(allocs.len(), 1);
        assert_eq!(allocs[0].status, "running");
        assert_eq!(r.list(Kind::Deployment).expect("list")[0].status, "Running");
    }

    #[test]
    fn a_failed_write_is_reported_by_the_next_flush_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dms.sqlite");
        let r = Records::open(&path).expect("records");
        // Remove the table behind the thread's back: the next write fails.
        let store = Store::open(&path).expect("open");
        store
            .conn
            .execute_batch("DROP TABLE allocations")
            .expect("drop");
        r.put(Kind::Allocation, doc("a1", "pending"), 1);
        let e = futures::executor::block_on(r.flush()).expect_err("failed write");
        assert!(
            matches!(e, RecordsError::Write(ref m) if m.contains("a1")),
            "{e}"
        );
        futures::executor::block_on(r.flush()).expect("reported once");
    }
}
