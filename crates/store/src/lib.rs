//! The node's embedded database: one SQLite file per node (`<data_dir>/dms.sqlite`), schema
//! migrations applied at open (versioned, forward-only), and typed repositories for the
//! onboarding record, resource reservations (commitments and allocations) and machine
//! benchmark results.
//!
//! Every write runs in a transaction that is durable when the call returns (WAL journal with
//! `synchronous=FULL`: each commit fsyncs the WAL, so a power loss cannot roll back a
//! reservation that was already acknowledged to a peer; `NORMAL` would only survive a process
//! crash). A file that is not a database, fails SQLite's integrity check, or carries a schema
//! newer than this build is reported as an error and never replaced or migrated.
//!
//! This crate stores and loads; it does not decide anything (limits, free resources and
//! expiry policy live in `nunet-resources`).

mod migrations;
/// Row types shared with the crates above.
pub mod model;
mod records;
mod repo;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use migrations::SCHEMA_VERSION;
pub use model::{BenchmarkRecord, OnboardingRecord, Reservation, ReservationState, Resources};
pub use records::{DocumentRepo, StoredDocument};
pub use repo::{BenchmarkRepo, OnboardingRepo, ReservationRepo};
pub use writer::{Kind, Records, RecordsError};

/// Why the database could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is not a usable SQLite database.
    #[error(
        "database {path} is corrupt or not a DMS database ({reason}); it was left untouched: move it aside to start with an empty one, or restore a backup"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The file was written by a newer DMS.
    #[error(
        "database {path} has schema version {found}, newer than this build supports ({supported}); upgrade nunet, or move the file aside"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its `user_version`.
        found: usize,
        /// The newest version this build knows.
        supported: usize,
    },
    /// A migration failed (the database is left at the last version that applied).
    #[error("database {path}: migration failed: {source}")]
    Migration {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rusqlite_migration::Error,
    },
    /// The file could not be read or created.
    #[error("database {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An SQLite error while reading or writing.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A stored value does not fit the type it is read into (a hand-edited or damaged row).
    #[error("database: bad value in {table}.{column}: {detail}")]
    BadValue {
        /// Table.
        table: &'static str,
        /// Column.
        column: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A reservation with this id already exists.
    #[error("reservation {0:?} already exists")]
    Duplicate(String),
}

/// An open node database.
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

impl Store {
    /// Opens (creating it if missing) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_at(path, SCHEMA_VERSION)
    }

    /// Opens a private in-memory database (tests and benchmarks).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        configure(&conn)?;
        let mem = PathBuf::from(":memory:");
        migrations::apply(&mut conn, &mem, SCHEMA_VERSION)?;
        Ok(Store { conn, path: None })
    }

    fn open_at(path: &Path, version: usize) -> Result<Store, StoreError> {
        check_header(path)?;
        owner_only(path)?;
        let corrupt = |e: rusqlite::Error| classify(path, e);
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(corrupt)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(corrupt)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(corrupt)?;
        if check != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("integrity check: {check}"),
            });
        }
        configure(&conn).map_err(|e| match e {
            StoreError::Sql(e) => classify(path, e),
            other => other,
        })?;
        migrations::apply(&mut conn, path, version)?;
        Ok(Store {
            conn,
            path: Some(path.to_path_buf()),
        })
    }

    /// The file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let v: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?;
        usize::try_from(v).map_err(|_| StoreError::BadValue {
            table: "pragma",
            column: "user_version",
            detail: v.to_string(),
        })
    }

    /// The onboarding record (at most one).
    pub fn onboarding(&self) -> OnboardingRepo<'_> {
        OnboardingRepo::new(&self.conn)
    }

    /// Commitments and allocations.
    pub fn reservations(&self) -> ReservationRepo<'_> {
        ReservationRepo::new(&self.conn)
    }

    /// Machine benchmark results.
    pub fn benchmarks(&self) -> BenchmarkRepo<'_> {
        BenchmarkRepo::new(&self.conn)
    }

    /// Deployments this node orchestrates (documents keyed by ensemble id).
    pub fn deployments(&self) -> DocumentRepo<'_> {
        DocumentRepo::new(&self.conn, records::Table::Deployments)
    }

    /// Allocations this node runs for orchestrators (documents keyed by allocation id,
    /// grouped by ensemble id).
    pub fn allocations(&self) -> DocumentRepo<'_> {
        DocumentRepo::new(&self.conn, records::Table::Allocations)
    }
}

fn configure(conn: &Connection) -> Result<(), StoreError> {
    // WAL: readers do not block the writer; FULL: every commit is on disk before we reply.
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if mode != "wal" && mode != "memory" {
        // WAL is unavailable on some filesystems; SQLite then keeps its rollback journal,
        // which is durable with synchronous=FULL too, only slower.
        tracing::warn!(journal_mode = %mode, "SQLite could not switch to WAL");
    }
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")?;
    Ok(())
}

/// Creates the database file readable and writable by its owner only, and takes those
/// rights back from group and others on an existing one and on its WAL and shared-memory
/// files (SQLite gives those the database file's mode). The database holds deployment
/// records and allocation logs: nothing in it is for other local users.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StoreError::Io { path: p, source }
    };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(path)(e)),
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let p = PathBuf::from(name);
        match std::fs::metadata(&p) {
            Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(io(&p))?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&p)(e)),
        }
    }
    Ok(())
}

/// Refuses files that exist, are not empty, and do not start with the SQLite header, before
/// SQLite gets a chance to touch them.
fn check_header(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut head = Vec::with_capacity(16);
    f.by_ref()
        .take(16)
        .read_to_end(&mut head)
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if head.is_empty() || head.as_slice() == SQLITE_MAGIC {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: "the file does not start with the SQLite header".into(),
    })
}

fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
        _ => StoreError::Sql(e),
    }
}

#[cfg(test)]
mod tests;
