//! The state at a plan's point, one bounded step at a time.
//!
//! Like `denokv`'s first sync followed by a checkout: every snapshot range in name
//! order (a later range's key overrides an earlier one's), then every log object in
//! name order from the first, each entry once (an entry at or before the last one
//! applied is a duplicate from a retried, overlapping object and is skipped; an
//! object entirely at or before it is not even fetched), up to and including the
//! point's commit end. Unlike it, each key keeps its **original versionstamp**
//! (snapshot metadata's 10 bytes; a log entry's first 10) and its **expiry
//! deadline**, which the reader drops.
//!
//! **Why resuming is exact.** A [`step`] is a pure function of the plan, the
//! [`Cursor`] and the bucket's (immutable) objects: called again with the same
//! cursor it returns the same writes and the same next cursor. Its writes are
//! collapsed to one per key (the last entry for that key within the step wins), so
//! they are independent upserts and deletes: applying them in any order, in any
//! batches, any number of times, partly or wholly, then all of them, leaves each
//! key as the step says. A function that applies a step's writes and only then
//! stores the next cursor therefore never loses an entry (a step is redone until
//! its cursor is stored) and never applies one twice with a different effect (a
//! redone step overwrites its own partial writes with the same values).
//!
//! **Memory per step**: one object's body and its decoded entries (a snapshot
//! range, or a log object: subkv writes at most 8 MiB, 1000 commits), plus at most
//! [`StepLimits::max_writes`] writes of at most [`StepLimits::max_bytes`] bytes of
//! keys and values (one entry more if a single entry is larger). A large object is
//! worked through over several steps (the cursor records where).

use super::names::{parse_log, parse_snapshot, LOGS, SNAPSHOTS};
use super::objects::{self, LogEntry};
use super::plan::Plan;
use super::{vs10, vs12, ReadBucket, RestoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a restore is. Serializable and small (object keys and a versionstamp):
/// the restore function stores it after each step's writes are acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cursor {
    /// Snapshot ranges: every range up to `done_through` is applied, and
    /// `partial`'s first so many pairs.
    Snapshots {
        done_through: Option<String>,
        partial: Option<(String, usize)>,
        chunks_done: u64,
    },
    /// Log objects: every object up to `done_through` is applied, every entry up
    /// to `applied_through` too (of `partial`, if set).
    Logs {
        done_through: Option<String>,
        partial: Option<String>,
        applied_through: [u8; 12],
    },
    /// The state at the plan's point is complete.
    Done,
}

impl Cursor {
    /// Where every restore begins.
    pub fn start() -> Self {
        Cursor::Snapshots {
            done_through: None,
            partial: None,
            chunks_done: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == Cursor::Done
    }

    fn logs() -> Self {
        Cursor::Logs {
            done_through: None,
            partial: None,
            applied_through: [0; 12],
        }
    }
}

/// How much one step may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepLimits {
    /// Writes (keys) per step.
    pub max_writes: usize,
    /// Bytes of keys and values per step.
    pub max_bytes: usize,
}

impl Default for StepLimits {
    /// 1000 writes (40 `BatchWriteItem` calls of 25) and 4 MiB.
    fn default() -> Self {
        Self {
            max_writes: 1000,
            max_bytes: 4 << 20,
        }
    }
}

/// A key as the restored database must hold it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// denokv value encoding: 1 V8, 2 little-endian u64, 3 bytes.
    pub encoding: i64,
    /// The versionstamp of the commit that last wrote it, in the source database.
    pub versionstamp: [u8; 10],
    /// Milliseconds since the Unix epoch; None never expires.
    pub expire_at_ms: Option<i64>,
}

/// One idempotent write into the restored database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Set the key to exactly this (value, encoding, versionstamp, deadline).
    Put(Restored),
    /// The key must not exist (deleted, or expired when the plan was made).
    Delete { key: Vec<u8> },
}

impl Write {
    pub fn key(&self) -> &[u8] {
        match self {
            Write::Put(r) => &r.key,
            Write::Delete { key } => key,
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Write::Put(r) => r.key.len() + r.value.len(),
            Write::Delete { key } => key.len(),
        }
    }
}

/// A write as the KV engine applies it (`DynamoKv::restore_writes`): the
/// versionstamp as the entry's commit version and order within it.
impl From<Write> for subkv_dynamo_kv::RestoreWrite {
    fn from(write: Write) -> Self {
        match write {
            Write::Put(r) => {
                let (version, seq) = subkv_kv::model::split_stamp(&r.versionstamp);
                Self::Put(subkv_kv::model::Entry {
                    key: r.key,
                    value: r.value,
                    encoding: r.encoding,
                    version,
                    seq,
                    expire_at_ms: r.expire_at_ms,
                })
            }
            Write::Delete { key } => Self::Delete(key),
        }
    }
}

/// What one step produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// One write per key, in key order. Apply them all, then store `next`.
    pub writes: Vec<Write>,
    pub next: Cursor,
}

/// Writes of a step, collapsed per key, within the limits.
struct Batch {
    writes: BTreeMap<Vec<u8>, Write>,
    bytes: usize,
    limits: StepLimits,
    expired_at_ms: i64,
}

impl Batch {
    fn new(plan: &Plan, limits: StepLimits) -> Self {
        Self {
            writes: BTreeMap::new(),
            bytes: 0,
            limits,
            expired_at_ms: plan.expired_at_ms,
        }
    }

    /// Whether nothing more may be added. A step always takes at least one entry.
    fn full(&self, consumed: usize) -> bool {
        consumed > 0
            && (self.writes.len() >= self.limits.max_writes.max(1)
                || self.bytes >= self.limits.max_bytes)
    }

    fn put(&mut self, restored: Restored) {
        let write = match restored.expire_at_ms {
            Some(at) if at <= self.expired_at_ms => Write::Delete { key: restored.key },
            _ => Write::Put(restored),
        };
        self.add(write);
    }

    fn add(&mut self, write: Write) {
        self.bytes += write.bytes();
        if let Some(replaced) = self.writes.insert(write.key().to_vec(), write) {
            self.bytes = self.bytes.saturating_sub(replaced.bytes());
        }
    }

    fn into_step(self, next: Cursor) -> Step {
        Step {
            writes: self.writes.into_values().collect(),
            next,
        }
    }
}

/// A deadline as the formats carry it: snapshot metadata says -1 (or nothing) for
/// none, log entries 0; anything not positive is none.
fn deadline(at: Option<i64>) -> Option<i64> {
    at.filter(|at| *at > 0)
}

/// The next step of the restore `plan` from `cursor`: see the module documentation.
pub async fn step(
    bucket: &dyn ReadBucket,
    plan: &Plan,
    cursor: &Cursor,
    limits: StepLimits,
) -> Result<Step, RestoreError> {
    match cursor {
        Cursor::Done => Ok(Step {
            writes: Vec::new(),
            next: Cursor::Done,
        }),
        Cursor::Snapshots {
            done_through,
            partial,
            chunks_done,
        } => snapshot_step(bucket, plan, done_through, partial, *chunks_done, limits).await,
        Cursor::Logs {
            done_through,
            partial,
            applied_through,
        } => {
            log_step(
                bucket,
                plan,
                done_through,
                partial,
                *applied_through,
                limits,
            )
            .await
        }
    }
}

async fn snapshot_step(
    bucket: &dyn ReadBucket,
    plan: &Plan,
    done_through: &Option<String>,
    partial: &Option<(String, usize)>,
    chunks_done: u64,
    limits: StepLimits,
) -> Result<Step, RestoreError> {
    let (key, offset) = match partial {
        Some((key, offset)) => (key.clone(), *offset),
        None => {
            let prefix = format!("{}{SNAPSHOTS}", plan.root);
            let listed = bucket.list(&prefix, done_through.as_deref(), 1).await?;
            let Some(next) = listed.into_iter().next() else {
                if chunks_done != plan.snapshot_chunks {
                    return Err(RestoreError::Changed(format!(
                        "the snapshot has {chunks_done} ranges, the plan saw {}",
                        plan.snapshot_chunks
                    )));
                }
                let next = if plan.replay_logs {
                    Cursor::logs()
                } else {
                    Cursor::Done
                };
                return Ok(Batch::new(plan, limits).into_step(next));
            };
            (next.key, 0)
        }
    };
    parse_snapshot(&plan.root, &key)?;
    let entries = objects::snapshot(bucket, &key).await?;
    let mut batch = Batch::new(plan, limits);
    let mut consumed = 0;
    for entry in entries.iter().skip(offset) {
        if batch.full(consumed) {
            break;
        }
        consumed += 1;
        batch.put(Restored {
            key: entry.key.clone(),
            value: entry.value.clone(),
            encoding: i64::from(entry.meta.encoding),
            versionstamp: entry.meta.versionstamp,
            expire_at_ms: deadline(entry.meta.expire_at_ms),
        });
    }
    let next = if offset + consumed < entries.len() {
        Cursor::Snapshots {
            done_through: done_through.clone(),
            partial: Some((key, offset + consumed)),
            chunks_done,
        }
    } else {
        Cursor::Snapshots {
            done_through: Some(key),
            partial: None,
            chunks_done: chunks_done + 1,
        }
    };
    Ok(batch.into_step(next))
}

async fn log_step(
    bucket: &dyn ReadBucket,
    plan: &Plan,
    done_through: &Option<String>,
    partial: &Option<String>,
    applied_through: [u8; 12],
    limits: StepLimits,
) -> Result<Step, RestoreError> {
    let end = vs12(plan.point.versionstamp, 0xffff);
    let missing = || {
        RestoreError::Changed(format!(
            "no log object holds the commit end of {} any more",
            hex::encode(plan.point.versionstamp)
        ))
    };
    let mut done_through = done_through.clone();
    let name = match partial {
        Some(key) => parse_log(&plan.root, key)?,
        None => {
            // The next object with an entry not yet applied; objects entirely at or
            // before `applied_through` (retried, overlapping ones) are passed over.
            let prefix = format!("{}{LOGS}", plan.root);
            'found: loop {
                let listed = bucket.list(&prefix, done_through.as_deref(), 100).await?;
                for object in &listed {
                    let name = parse_log(&plan.root, &object.key)?;
                    if name.first > end {
                        return Err(missing());
                    }
                    if name.last > applied_through {
                        break 'found name;
                    }
                    done_through = Some(name.key);
                }
                if listed.len() < 100 {
                    return Err(missing());
                }
            }
        }
    };
    let body = objects::log(bucket, &name).await?;
    let mut batch = Batch::new(plan, limits);
    let mut through = applied_through;
    let pending = body
        .entries
        .iter()
        .filter(|e| e.versionstamp > applied_through && e.versionstamp <= end);
    let mut left = false;
    for (consumed, entry) in pending.enumerate() {
        if batch.full(consumed) {
            left = true;
            break;
        }
        through = entry.versionstamp;
        apply_entry(&mut batch, entry);
    }
    let next = if through == end {
        Cursor::Done
    } else if left {
        Cursor::Logs {
            done_through,
            partial: Some(name.key),
            applied_through: through,
        }
    } else if body.entries.iter().any(|e| e.versionstamp > end) {
        // The object goes past the point without holding its commit end.
        return Err(missing());
    } else {
        Cursor::Logs {
            done_through: Some(name.key),
            partial: None,
            applied_through: through,
        }
    };
    Ok(batch.into_step(next))
}

fn apply_entry(batch: &mut Batch, entry: &LogEntry) {
    let e = &entry.entry;
    // The empty key is no Deno KV key: subkv's marker commit deletes it to change
    // nothing.
    if e.key.is_empty() {
        return;
    }
    if entry.is_clear() {
        batch.add(Write::Delete { key: e.key.clone() });
    } else {
        batch.put(Restored {
            key: e.key.clone(),
            value: e.value.clone(),
            encoding: i64::from(e.value_encoding),
            versionstamp: vs10(&entry.versionstamp),
            expire_at_ms: deadline(Some(i64::try_from(e.expire_at_ms).unwrap_or(i64::MAX))),
        });
    }
}
