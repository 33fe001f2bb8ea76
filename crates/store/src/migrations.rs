//! Schema migrations: forward-only, numbered by SQLite's `user_version`. Append new
//! migrations at the end; never edit one that has shipped.

use std::path::Path;

use rusqlite::Connection;
use rusqlite_migration::{M, Migrations, SchemaVersion};

use crate::StoreError;

/// Each entry is one schema version (index 0 → version 1).
const STEPS: &[M<'static>] = &[
    // 1: onboarding and benchmarks.
    M::up(
        "CREATE TABLE onboarding (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            cpu_millicores INTEGER NOT NULL CHECK (cpu_millicores >= 0),
            ram_bytes INTEGER NOT NULL CHECK (ram_bytes >= 0),
            disk_bytes INTEGER NOT NULL CHECK (disk_bytes >= 0),
            onboarded_at_ms INTEGER NOT NULL,
            details TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE onboarded_gpus (
            device TEXT PRIMARY KEY,
            vram_bytes INTEGER NOT NULL CHECK (vram_bytes >= 0)
        );
        CREATE TABLE benchmarks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            taken_at_ms INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            threads INTEGER NOT NULL,
            cpu_single_ops_s REAL NOT NULL,
            cpu_multi_ops_s REAL NOT NULL,
            mem_bandwidth_bytes_s REAL NOT NULL,
            disk_write_bytes_s REAL NOT NULL,
            disk_read_bytes_s REAL NOT NULL
        );",
    ),
    // 2: resource reservations (commitments and allocations), per GPU device.
    M::up(
        "CREATE TABLE reservations (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL CHECK (state IN ('committed', 'allocated')),
            cpu_millicores INTEGER NOT NULL CHECK (cpu_millicores >= 0),
            ram_bytes INTEGER NOT NULL CHECK (ram_bytes >= 0),
            disk_bytes INTEGER NOT NULL CHECK (disk_bytes >= 0),
            expires_at_ms INTEGER,
            created_at_ms INTEGER NOT NULL,
            updated_at_ms INTEGER NOT NULL
        );
        CREATE TABLE reservation_gpus (
            reservation_id TEXT NOT NULL REFERENCES reservations(id) ON DELETE CASCADE,
            device TEXT NOT NULL,
            vram_bytes INTEGER NOT NULL CHECK (vram_bytes >= 0),
            PRIMARY KEY (reservation_id, device)
        );
        CREATE INDEX reservations_expiry ON reservations(expires_at_ms)
            WHERE state = 'committed';",
    )
    .foreign_key_check(),
    // 3: deployments (orchestrator side) and allocations (provider side), as JSON documents.
    M::up(
        "CREATE TABLE deployments (
            id TEXT PRIMARY KEY,
            status TEXT NOT NULL,
            doc TEXT NOT NULL,
            updated_at_ms INTEGER NOT NULL
        );
        CREATE TABLE allocations (
            id TEXT PRIMARY KEY,
            ensemble_id TEXT NOT NULL,
            status TEXT NOT NULL,
            doc TEXT NOT NULL,
            updated_at_ms INTEGER NOT NULL
        );
        CREATE INDEX allocations_ensemble ON allocations(ensemble_id);",
    ),
    // 4: child actors' keys are derived from the node key now; erase the seeds that earlier
    // versions kept in plain text in these documents.
    M::up(
        "UPDATE deployments SET doc = json_remove(doc, '$.orchestrator_seed')
            WHERE json_type(doc, '$.orchestrator_seed') IS NOT NULL;
        UPDATE allocations SET doc = json_remove(doc, '$.key_seed')
            WHERE json_type(doc, '$.key_seed') IS NOT NULL;",
    ),
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = STEPS.len();

/// Brings `conn` to `version`, refusing databases newer than this build.
pub(crate) fn apply(conn: &mut Connection, path: &Path, version: usize) -> Result<(), StoreError> {
    let migrations = Migrations::from_slice(STEPS);
    let err = |source| StoreError::Migration {
        path: path.to_path_buf(),
        source,
    };
    match migrations.current_version(conn).map_err(err)? {
        SchemaVersion::Outside(found) => {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: found.get(),
                supported: SCHEMA_VERSION,
            });
        }
        SchemaVersion::NoneSet | SchemaVersion::Inside(_) => {}
    }
    migrations.to_version(conn, version).map_err(err)
}

#[cfg(test)]
pub(crate) fn open_at_version(path: &Path, version: usize) -> Result<crate::Store, StoreError> {
    crate::Store::open_at(path, version)
}

#[cfg(test)]
mod tests {
    #[test]
    fn steps_are_valid() {
        assert!(
            super::Migrations::from_slice(super::STEPS)
                .validate()
                .is_ok()
        );
    }
}
