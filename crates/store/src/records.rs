//! Deployment and allocation records: JSON documents with an id, a status and (for
//! allocations) the ensemble they belong to. The orchestrator and provider code own the
//! document shapes; this module only stores them durably.

use rusqlite::{Connection, params};

use crate::StoreError;

/// Which table a [`DocumentRepo`] reads and writes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Table {
    Deployments,
    Allocations,
}

/// One stored document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDocument {
    /// Its id (ensemble id or allocation id).
    pub id: String,
    /// The ensemble it belongs to (its own id for deployments).
    pub ensemble_id: String,
    /// Status as text.
    pub status: String,
    /// The JSON document.
    pub doc: String,
}

/// Deployments or allocations, as documents.
pub struct DocumentRepo<'c> {
    conn: &'c Connection,
    table: Table,
}

impl<'c> DocumentRepo<'c> {
    pub(crate) fn new(conn: &'c Connection, table: Table) -> Self {
        DocumentRepo { conn, table }
    }

    /// Inserts or replaces a document.
    pub fn put(&self, d: &StoredDocument, now_ms: i64) -> Result<(), StoreError> {
        match self.table {
            Table::Deployments => self.conn.execute(
                "INSERT OR REPLACE INTO deployments (id, status, doc, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4)",
                params![d.id, d.status, d.doc, now_ms],
            )?,
            Table::Allocations => self.conn.execute(
                "INSERT OR REPLACE INTO allocations (id, ensemble_id, status, doc, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d.id, d.ensemble_id, d.status, d.doc, now_ms],
            )?,
        };
        Ok(())
    }

    /// Deletes a document; `false` if it did not exist.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let sql = match self.table {
            Table::Deployments => "DELETE FROM deployments WHERE id = ?1",
            Table::Allocations => "DELETE FROM allocations WHERE id = ?1",
        };
        Ok(self.conn.execute(sql, params![id])? == 1)
    }

    /// Every document, ordered by id.
    pub fn list(&self) -> Result<Vec<StoredDocument>, StoreError> {
        let sql = match self.table {
            Table::Deployments => "SELECT id, id, status, doc FROM deployments ORDER BY id",
            Table::Allocations => {
                "SELECT id, ensemble_id, status, doc FROM allocations ORDER BY id"
            }
        };
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredDocument {
                id: r.get(0)?,
                ensemble_id: r.get(1)?,
                status: r.get(2)?,
                doc: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[test]
    fn documents_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dms.sqlite");
        {
            let s = Store::open(&path).expect("open");
            let d = StoredDocument {
                id: "e1".into(),
                ensemble_id: "e1".into(),
                status: "Running".into(),
                doc: "{\"a\":1}".into(),
            };
            s.deployments().put(&d, 1).expect("put");
            let a = StoredDocument {
                id: "a1".into(),
                ensemble_id: "e1".into(),
                status: "running".into(),
                doc: "{}".into(),
            };
            s.allocations().put(&a, 1).expect("put");
            s.allocations()
                .put(
                    &StoredDocument {
                        status: "completed".into(),
                        ..a
                    },
                    2,
                )
                .expect("replace");
        }
        let s = Store::open(&path).expect("reopen");
        let deps = s.deployments().list().expect("list");
        assert_eq!(deps.len(), 1);
        assert_eq!(deps[0].status, "Running");
        let allocs = s.allocations().list().expect("list");
        assert_eq!(allocs.len(), 1);
        assert_eq!(allocs[0].status, "completed");
        assert_eq!(allocs[0].ensemble_id, "e1");
        assert!(s.allocations().delete("a1").expect("delete"));
        assert!(!s.allocations().delete("a1").expect("delete"));
        assert!(s.allocations().list().expect("list").is_empty());
    }
}
