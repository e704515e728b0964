//! Restoring a backup: reading a bucket in the `denokv` backup format (subkv's own,
//! or Deno Deploy's: the same format) as `denokv`'s reader does, and producing the
//! state at a restore point in resumable steps. Pure logic over a [`ReadBucket`]:
//! no AWS client, no Lambda: the KV writes go through a [`RestoreSink`] (the KV
//! engine's restore write path in the function) and the job through a [`JobStore`].
//!
//! docs/restore.md is the design; the facts of the format are in
//! docs/backup-format.md.
//!
//! | file | what |
//! |---|---|
//! | `bucket.rs` | [`ReadBucket`] (list in name order with start-after and a limit; get), [`ReadFault`] |
//! | `names.rs` | object names as the reader parses them ([`LogName`], [`SnapshotName`]) |
//! | `objects.rs` | the differential, snapshot ranges and log objects, decoded and checked |
//! | `plan.rs` | [`Scan`] (resumable: every name checked) and [`Plan`] (the target resolved to an exact commit end) |
//! | `points.rs` | [`restore_points`]: newest first, paginated, fetching only the page's log objects |
//! | `apply.rs` | [`step`]: the state at the plan's point, one bounded step at a time, with a serializable [`Cursor`] |
//! | `job.rs` | [`Job`] and [`advance`]: a restore from start to end across invocations, each change stored after the writes it stands for |
//!
//! **Restore points** are the commits whose last log entry (index `0xffff`) is in
//! `logs/` and whose versionstamp is at or after the `differential` (`denokv`'s
//! first sync replays up to the first of them: earlier states are not
//! consistent). The first of them is the backup's *first* point, the newest its
//! *newest*. Two degenerate backups have a single point: no log at all (the point
//! is the differential itself, the snapshot alone), and logs that all end before
//! the differential (the point is their last commit; the snapshot plus every log).

mod apply;
mod bucket;
mod job;
#[cfg(test)]
mod job_tests;
mod names;
mod objects;
mod plan;
mod points;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_points;

pub use apply::{step, Cursor, Restored, Step, StepLimits, Write};
pub use bucket::{Listed, ReadBucket, ReadFault};
pub use job::{advance, Job, JobStore, RestoreSink, SinkFault, Stopped, StoreFault};
pub use names::{log_floor, parse_log, parse_snapshot, LogName, SnapshotName};
pub use plan::{plan, Plan, Scan};
pub use points::{restore_points, PointsPage, MAX_POINTS_PAGE};

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The newest restore point in the bucket when the plan is made.
    Latest,
    /// The state right after this commit: it must be a restore point.
    Versionstamp([u8; 10]),
    /// The last restore point whose time (its log object's `timestamp_ms`) is at
    /// or before this, milliseconds since the Unix epoch.
    Timestamp(u64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Latest => write!(f, "the latest state"),
            Target::Versionstamp(vs) => write!(f, "versionstamp {}", hex::encode(vs)),
            Target::Timestamp(ms) => write!(f, "time {}", time(*ms)),
        }
    }
}

/// A state the backup can be restored to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// The commit's 10-byte versionstamp.
    pub versionstamp: [u8; 10],
    /// The `timestamp_ms` of the first log object (in name order) holding the
    /// commit's last entry, as `denokv pitr list` shows it; `None` only for the
    /// differential of a backup without logs.
    pub time_ms: Option<u64>,
}

impl fmt::Display for RestorePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.versionstamp))?;
        match self.time_ms {
            Some(ms) => write!(f, " ({})", time(ms)),
            None => write!(f, " (time unknown)"),
        }
    }
}

/// RFC 3339 with milliseconds, for messages.
pub(crate) fn time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(at).to_string()
}

/// The bucket, or the prefix, does not hold a backup in the format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "no backup at `{root}`: there is no `{root}differential` object (check the \
         bucket and the prefix, which must end with the database id and `/`; a backup \
         still taking its first snapshot has none yet)"
    )]
    NoDifferential { root: String },
    #[error(
        "`{root}differential` must hold 20 hex characters (a 10-byte versionstamp), \
         not {found}"
    )]
    BadDifferential { root: String, found: String },
    #[error("`{key}` is not an object of the denokv backup format: {why}")]
    BadName { key: String, why: String },
    #[error(
        "`{key}` is in format {found} but the {folder} before it are in format \
         {expected}: a backup in both formats is not supported"
    )]
    MixedFormats {
        key: String,
        folder: String,
        expected: u16,
        found: u16,
    },
    #[error(
        "the log objects do not sort in versionstamp order: `{key}` sorts after \
         `{previous}` but covers earlier commits"
    )]
    OutOfOrder { key: String, previous: String },
}

/// The target is not a restore point of this backup.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{target} is not in this backup: {why}; it holds restore points from {first} to {newest}")]
pub struct NotInBackup {
    pub target: Target,
    pub why: String,
    pub first: RestorePoint,
    pub newest: RestorePoint,
}

/// Why planning, listing restore points or a step failed. Every message is for
/// the tenant (the database's `failed` status says it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The store refused or failed; [`ReadFault::is_transient`] says whether to
    /// retry the step.
    #[error("reading the backup failed: {0}")]
    Read(#[from] ReadFault),
    #[error("{0}")]
    Layout(#[from] LayoutError),
    #[error("{0}")]
    NotInBackup(#[from] NotInBackup),
    /// An object's body is not what its name and the format say.
    #[error("`{key}` is not a valid {what}: {why}")]
    Corrupt {
        key: String,
        what: &'static str,
        why: String,
    },
    /// Something the plan saw is gone or different (a re-snapshot began, or
    /// objects were removed): start again.
    #[error("the backup changed during the restore: {0}")]
    Changed(String),
    /// A restore-points cursor this code did not make.
    #[error("invalid cursor")]
    BadCursor,
}

impl RestoreError {
    /// Worth trying the same step again later (the store's transient faults).
    pub fn is_transient(&self) -> bool {
        matches!(self, RestoreError::Read(fault) if fault.is_transient())
    }
}

/// A versionstamp and index as 12 bytes.
pub(crate) fn vs12(vs: [u8; 10], index: u16) -> [u8; 12] {
    let mut out = [0u8; 12];
    out[..10].copy_from_slice(&vs);
    out[10..].copy_from_slice(&index.to_be_bytes());
    out
}

/// The commit part of a 12-byte versionstamp.
pub(crate) fn vs10(vs: &[u8; 12]) -> [u8; 10] {
    let mut out = [0u8; 10];
    out.copy_from_slice(&vs[..10]);
    out
}

/// Whether a 12-byte versionstamp is a commit's last entry.
pub(crate) fn is_commit_end(vs: &[u8; 12]) -> bool {
    vs[10..] == [0xff, 0xff]
}
