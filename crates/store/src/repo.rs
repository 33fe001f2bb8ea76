//! Typed repositories over the open connection. Each write is one transaction.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use crate::StoreError;

/// A write transaction that takes the write lock at its start (`BEGIN IMMEDIATE`). A deferred
/// one that reads first and writes later fails at once with "database is locked" when
/// another connection (the records thread) committed in between: SQLite cannot upgrade its
/// stale read snapshot, and the busy timeout does not apply. Taking the lock first waits for
/// the other writer instead.
fn write_tx(conn: &Connection) -> Result<Transaction<'_>, StoreError> {
    Ok(Transaction::new_unchecked(
        conn,
        TransactionBehavior::Immediate,
    )?)
}
use crate::model::{BenchmarkRecord, OnboardingRecord, Reservation, ReservationState, Resources};

fn to_i64(v: u64, column: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::BadValue {
        table: "(write)",
        column,
        detail: format!("{v} does not fit in a signed 64-bit column"),
    })
}

fn to_u64(v: i64, table: &'static str, column: &'static str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::BadValue {
        table,
        column,
        detail: format!("negative value {v}"),
    })
}

/// The onboarding record (a single row) and its GPU devices.
pub struct OnboardingRepo<'c> {
    conn: &'c Connection,
}

impl<'c> OnboardingRepo<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        OnboardingRepo { conn }
    }

    /// The current record, if the node is onboarded.
    pub fn get(&self) -> Result<Option<OnboardingRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT cpu_millicores, ram_bytes, disk_bytes, onboarded_at_ms, details
                 FROM onboarding WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        let Some((cpu, ram, disk, at, details)) = row else {
            return Ok(None);
        };
        let mut stmt = self
            .conn
            .prepare("SELECT device, vram_bytes FROM onboarded_gpus")?;
        let mut gpus = BTreeMap::new();
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (dev, vram) = row?;
            gpus.insert(dev, to_u64(vram, "onboarded_gpus", "vram_bytes")?);
        }
        Ok(Some(OnboardingRecord {
            resources: Resources {
                cpu_millicores: to_u64(cpu, "onboarding", "cpu_millicores")?,
                ram_bytes: to_u64(ram, "onboarding", "ram_bytes")?,
                disk_bytes: to_u64(disk, "onboarding", "disk_bytes")?,
                gpus,
            },
            onboarded_at_ms: at,
            details,
        }))
    }

    /// Stores the record, replacing any previous one.
    pub fn put(&self, rec: &OnboardingRecord) -> Result<(), StoreError> {
        let tx = write_tx(self.conn)?;
        tx.execute("DELETE FROM onboarded_gpus", [])?;
        tx.execute(
            "INSERT OR REPLACE INTO onboarding
             (id, cpu_millicores, ram_bytes, disk_bytes, onboarded_at_ms, details)
             VALUES (1, ?1, ?2, ?3, ?4, ?5)",
            params![
                to_i64(rec.resources.cpu_millicores, "cpu_millicores")?,
                to_i64(rec.resources.ram_bytes, "ram_bytes")?,
                to_i64(rec.resources.disk_bytes, "disk_bytes")?,
                rec.onboarded_at_ms,
                rec.details,
            ],
        )?;
        for (dev, vram) in &rec.resources.gpus {
            tx.execute(
                "INSERT INTO onboarded_gpus (device, vram_bytes) VALUES (?1, ?2)",
                params![dev, to_i64(*vram, "vram_bytes")?],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes the record and every reservation in one transaction; returns the ids of the
    /// reservations that were dropped.
    pub fn delete(&self) -> Result<Vec<String>, StoreError> {
        let tx = write_tx(self.conn)?;
        let ids = {
            let mut stmt = tx.prepare("SELECT id FROM reservations ORDER BY id")?;
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?
        };
        tx.execute("DELETE FROM reservations", [])?;
        tx.execute("DELETE FROM onboarded_gpus", [])?;
        tx.execute("DELETE FROM onboarding", [])?;
        tx.commit()?;
        Ok(ids)
    }
}

/// Commitments and allocations.
pub struct ReservationRepo<'c> {
    conn: &'c Connection,
}

impl<'c> ReservationRepo<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        ReservationRepo { conn }
    }

    /// Inserts a new reservation; fails with [`StoreError::Duplicate`] if the id exists.
    pub fn insert(&self, r: &Reservation) -> Result<(), StoreError> {
        let tx = write_tx(self.conn)?;
        let n = tx.execute(
            "INSERT OR IGNORE INTO reservations
             (id, state, cpu_millicores, ram_bytes, disk_bytes, expires_at_ms, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            params![
                r.id,
                r.state.as_str(),
                to_i64(r.resources.cpu_millicores, "cpu_millicores")?,
                to_i64(r.resources.ram_bytes, "ram_bytes")?,
                to_i64(r.resources.disk_bytes, "disk_bytes")?,
                r.expires_at_ms,
                r.created_at_ms,
            ],
        )?;
        if n == 0 {
            return Err(StoreError::Duplicate(r.id.clone()));
        }
        for (dev, vram) in &r.resources.gpus {
            tx.execute(
                "INSERT INTO reservation_gpus (reservation_id, device, vram_bytes) VALUES (?1, ?2, ?3)",
                params![r.id, dev, to_i64(*vram, "vram_bytes")?],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Turns a commitment into an allocation (clears its expiry). `false` if there was no
    /// such commitment.
    pub fn mark_allocated(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE reservations SET state = 'allocated', expires_at_ms = NULL, updated_at_ms = ?2
             WHERE id = ?1 AND state = 'committed'",
            params![id, now_ms],
        )?;
        Ok(n == 1)
    }

    /// Deletes a reservation (either state). `false` if it did not exist.
    pub fn delete(&self, id: &str) -> Result<bool, StoreError> {
        // reservation_gpus rows go with it (ON DELETE CASCADE).
        let n = self
            .conn
            .execute("DELETE FROM reservations WHERE id = ?1", params![id])?;
        Ok(n == 1)
    }

    /// Deletes several reservations in one transaction; returns how many existed.
    pub fn delete_many(&self, ids: &[String]) -> Result<usize, StoreError> {
        let tx = write_tx(self.conn)?;
        let mut n = 0;
        for id in ids {
            n += tx.execute("DELETE FROM reservations WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Every reservation, ordered by id.
    pub fn list(&self) -> Result<Vec<Reservation>, StoreError> {
        let mut gpus: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT reservation_id, device, vram_bytes FROM reservation_gpus")?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })? {
            let (id, dev, vram) = row?;
            gpus.entry(id)
                .or_default()
                .insert(dev, to_u64(vram, "reservation_gpus", "vram_bytes")?);
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, state, cpu_millicores, ram_bytes, disk_bytes, expires_at_ms, created_at_ms
             FROM reservations ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, i64>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, state, cpu, ram, disk, exp, created) = row?;
            let state = match state.as_str() {
                "committed" => ReservationState::Committed,
                "allocated" => ReservationState::Allocated,
                other => {
                    return Err(StoreError::BadValue {
                        table: "reservations",
                        column: "state",
                        detail: format!("unknown state {other:?}"),
                    });
                }
            };
            out.push(Reservation {
                resources: Resources {
                    cpu_millicores: to_u64(cpu, "reservations", "cpu_millicores")?,
                    ram_bytes: to_u64(ram, "reservations", "ram_bytes")?,
                    disk_bytes: to_u64(disk, "reservations", "disk_bytes")?,
                    gpus: gpus.remove(&id).unwrap_or_default(),
                },
                id,
                state,
                expires_at_ms: exp,
                created_at_ms: created,
            });
        }
        Ok(out)
    }
}

/// Machine benchmark results, newest last.
pub struct BenchmarkRepo<'c> {
    conn: &'c Connection,
}

impl<'c> BenchmarkRepo<'c> {
    pub(crate) fn new(conn: &'c Connection) -> Self {
        BenchmarkRepo { conn }
    }

    /// Stores one run.
    pub fn insert(&self, b: &BenchmarkRecord) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO benchmarks (taken_at_ms, duration_ms, threads, cpu_single_ops_s,
             cpu_multi_ops_s, mem_bandwidth_bytes_s, disk_write_bytes_s, disk_read_bytes_s)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                b.taken_at_ms,
                to_i64(b.duration_ms, "duration_ms")?,
                b.threads,
                b.cpu_single_ops_s,
                b.cpu_multi_ops_s,
                b.mem_bandwidth_bytes_s,
                b.disk_write_bytes_s,
                b.disk_read_bytes_s,
            ],
        )?;
        Ok(())
    }

    /// The most recent run.
    pub fn latest(&self) -> Result<Option<BenchmarkRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                "SELECT taken_at_ms, duration_ms, threads, cpu_single_ops_s, cpu_multi_ops_s,
                 mem_bandwidth_bytes_s, disk_write_bytes_s, disk_read_bytes_s
                 FROM benchmarks ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, u32>(2)?,
                        r.get::<_, f64>(3)?,
                        r.get::<_, f64>(4)?,
                        r.get::<_, f64>(5)?,
                        r.get::<_, f64>(6)?,
                        r.get::<_, f64>(7)?,
                    ))
                },
            )
            .optional()?;
        row.map(|(at, dur, threads, s, m, mem, w, rd)| {
            Ok(BenchmarkRecord {
                taken_at_ms: at,
                duration_ms: to_u64(dur, "benchmarks", "duration_ms")?,
                threads,
                cpu_single_ops_s: s,
                cpu_multi_ops_s: m,
                mem_bandwidth_bytes_s: mem,
                disk_write_bytes_s: w,
                disk_read_bytes_s: rd,
            })
        })
        .transpose()
    }
}
