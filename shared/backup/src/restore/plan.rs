//! Planning a restore: check the bucket's layout, then resolve the target to an
//! exact commit end.
//!
//! A [`Scan`] lists every name under `snapshots/` and `logs/` (names only, pages of
//! 1000, no body) and checks each: it must parse as the reader parses it, all of
//! one format, and the log objects must sort in versionstamp order (each one's
//! `first` and `last` at or after the previous one's: objects may overlap, as a
//! retried object does, but never go back). The last point is what the restore
//! relies on to apply the logs one object at a time in name order, as `denokv`'s
//! later syncs do, instead of sorting every entry of the backup as its first sync
//! does; a bucket that breaks it is refused, not restored wrongly. The scan keeps
//! a few names (the first object reaching the differential, the one holding the
//! newest commit, the one that should hold a versionstamp target) and is
//! resumable: it is a small serializable value, and [`Scan::run`] takes a number of
//! pages, so a function can checkpoint it however many objects the backup has.
//!
//! [`Scan::finish`] then reads at most a few log objects (the first and newest
//! points' objects, a versionstamp target's object) or, for a time target, about
//! `2 log2(monoseq range)` of them at most: a binary search over the `monoseq`
//! name space with one-key listings (`start-after` [`log_floor`]).

use super::names::{log_floor, parse_log, parse_snapshot, LogName, LOGS, SNAPSHOTS};
use super::objects::{self, LogBody};
use super::{
    is_commit_end, vs10, vs12, LayoutError, NotInBackup, ReadBucket, RestoreError, RestorePoint,
    Target,
};
use serde::{Deserialize, Serialize};

/// Names per listing call.
const PAGE: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum ScanPhase {
    /// Listing `snapshots/` after this key.
    Snapshots {
        after: Option<String>,
    },
    /// Listing `logs/` after the last log name seen.
    Logs,
    Done,
}

/// The layout check, resumable: see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scan {
    root: String,
    target: Target,
    differential: [u8; 10],
    phase: ScanPhase,
    snapshot_chunks: u64,
    snapshot_format: Option<u16>,
    log_objects: u64,
    /// The last log name seen (where the listing goes on).
    previous: Option<LogName>,
    /// The first log object whose `last` reaches the differential's commit end.
    base: Option<LogName>,
    /// The first log object with the greatest `last`.
    newest: Option<LogName>,
    /// For a versionstamp target: the first log object whose range covers it.
    holder: Option<LogName>,
}

impl Scan {
    /// Reads the differential (the root must hold one) and begins.
    pub async fn start(
        bucket: &dyn ReadBucket,
        root: &str,
        target: Target,
    ) -> Result<Self, RestoreError> {
        let differential = objects::differential(bucket, root).await?;
        Ok(Self {
            root: root.to_string(),
            target,
            differential,
            phase: ScanPhase::Snapshots { after: None },
            snapshot_chunks: 0,
            snapshot_format: None,
            log_objects: 0,
            previous: None,
            base: None,
            newest: None,
            holder: None,
        })
    }

    pub fn is_done(&self) -> bool {
        self.phase == ScanPhase::Done
    }

    /// Lists at most `pages` pages of names; true once every name was checked.
    pub async fn run(
        &mut self,
        bucket: &dyn ReadBucket,
        pages: usize,
    ) -> Result<bool, RestoreError> {
        for _ in 0..pages {
            match &self.phase {
                ScanPhase::Done => break,
                ScanPhase::Snapshots { after } => {
                    let prefix = format!("{}{SNAPSHOTS}", self.root);
                    let listed = bucket.list(&prefix, after.as_deref(), PAGE).await?;
                    for object in &listed {
                        let name = parse_snapshot(&self.root, &object.key)?;
                        let expected = *self.snapshot_format.get_or_insert(name.format);
                        if name.format != expected {
                            return Err(LayoutError::MixedFormats {
                                key: name.key,
                                folder: "snapshot ranges".into(),
                                expected,
                                found: name.format,
                            }
                            .into());
                        }
                        self.snapshot_chunks += 1;
                    }
                    self.phase = match listed.last() {
                        Some(last) if listed.len() == PAGE => ScanPhase::Snapshots {
                            after: Some(last.key.clone()),
                        },
                        _ => ScanPhase::Logs,
                    };
                }
                ScanPhase::Logs => {
                    let prefix = format!("{}{LOGS}", self.root);
                    let after = self.previous.as_ref().map(|p| p.key.clone());
                    let listed = bucket.list(&prefix, after.as_deref(), PAGE).await?;
                    for object in &listed {
                        let name = parse_log(&self.root, &object.key)?;
                        self.see_log(name)?;
                    }
                    if listed.len() < PAGE {
                        self.phase = ScanPhase::Done;
                    }
                }
            }
        }
        Ok(self.is_done())
    }

    fn see_log(&mut self, name: LogName) -> Result<(), RestoreError> {
        if let Some(previous) = &self.previous {
            if name.format != previous.format {
                return Err(LayoutError::MixedFormats {
                    key: name.key,
                    folder: "log objects".into(),
                    expected: previous.format,
                    found: name.format,
                }
                .into());
            }
            if name.first < previous.first || name.last < previous.last {
                return Err(LayoutError::OutOfOrder {
                    key: name.key,
                    previous: previous.key.clone(),
                }
                .into());
            }
        }
        let dv_end = vs12(self.differential, 0xffff);
        if self.base.is_none() && name.last >= dv_end {
            self.base = Some(name.clone());
        }
        if self.newest.as_ref().is_none_or(|n| name.last > n.last) {
            self.newest = Some(name.clone());
        }
        if let Target::Versionstamp(vs) = self.target {
            let end = vs12(vs, 0xffff);
            if self.holder.is_none() && (name.first..=name.last).contains(&end) {
                self.holder = Some(name.clone());
            }
        }
        self.log_objects += 1;
        self.previous = Some(name);
        Ok(())
    }

    /// Completes the scan if needed, then resolves the target. `now_ms`: keys whose
    /// deadline is at or before it are restored as absent ([`Plan::expired_at_ms`]).
    pub async fn finish(
        mut self,
        bucket: &dyn ReadBucket,
        now_ms: i64,
    ) -> Result<Plan, RestoreError> {
        while !self.run(bucket, usize::MAX).await? {}
        let root = self.root.clone();
        let dv = self.differential;
        let plan = |point, first, newest, replay_logs| Plan {
            root: root.clone(),
            target: self.target,
            differential: dv,
            point,
            first,
            newest,
            snapshot_chunks: self.snapshot_chunks,
            log_objects: self.log_objects,
            replay_logs,
            expired_at_ms: now_ms,
        };

        let Some(newest_name) = self.newest.clone() else {
            // No log at all: the snapshot is the state at the differential.
            let only = RestorePoint {
                versionstamp: dv,
                time_ms: None,
            };
            let why = match self.target {
                Target::Latest => None,
                Target::Versionstamp(vs) if vs == dv => None,
                Target::Versionstamp(_) => Some("the backup has no logs, only its snapshot"),
                Target::Timestamp(_) => {
                    Some("the backup has no logs, so no times; restore its latest state")
                }
            };
            if let Some(why) = why {
                return Err(not_in(self.target, why, only, only));
            }
            return Ok(plan(only, only, only, false));
        };

        let newest_body = objects::log(bucket, &newest_name).await?;
        let newest = RestorePoint {
            versionstamp: held_last(&newest_name, &newest_body)?,
            time_ms: Some(newest_body.timestamp_ms),
        };
        let first = match &self.base {
            // Logs that all end before the differential: their last commit names the
            // state (snapshot plus every log), as the reader names it.
            None => newest,
            Some(base) => {
                let body = if base.key == newest_name.key {
                    newest_body.clone()
                } else {
                    objects::log(bucket, base).await?
                };
                let dv_end = vs12(dv, 0xffff);
                let end = body.commit_ends().find(|e| *e >= dv_end).ok_or_else(|| {
                    RestoreError::Corrupt {
                        key: base.key.clone(),
                        what: "log object",
                        why: "its name reaches the differential but it holds no commit end there"
                            .into(),
                    }
                })?;
                RestorePoint {
                    versionstamp: vs10(&end),
                    time_ms: Some(body.timestamp_ms),
                }
            }
        };

        let point = match self.target {
            Target::Latest => newest,
            Target::Versionstamp(vs) if vs < first.versionstamp => return Err(not_in(
                self.target,
                "it is before the first restore point (the backup is consistent only from there)",
                first,
                newest,
            )),
            Target::Versionstamp(vs) if vs > newest.versionstamp => {
                return Err(not_in(
                    self.target,
                    "it is after the newest restore point",
                    first,
                    newest,
                ))
            }
            Target::Versionstamp(vs) if vs == first.versionstamp => first,
            Target::Versionstamp(vs) if vs == newest.versionstamp => newest,
            Target::Versionstamp(vs) => {
                let not_a_point = "no commit ends there (the logs hold no `0xffff` entry for it)";
                let holder = self
                    .holder
                    .as_ref()
                    .ok_or_else(|| not_in(self.target, not_a_point, first, newest))?;
                let body = objects::log(bucket, holder).await?;
                if !body.commit_ends().any(|e| e == vs12(vs, 0xffff)) {
                    return Err(not_in(self.target, not_a_point, first, newest));
                }
                RestorePoint {
                    versionstamp: vs,
                    time_ms: Some(body.timestamp_ms),
                }
            }
            Target::Timestamp(at) => match (first.time_ms, newest.time_ms) {
                (Some(t), _) if at < t => {
                    return Err(not_in(
                        self.target,
                        "it is before the first restore point's time",
                        first,
                        newest,
                    ))
                }
                (_, Some(t)) if at >= t => newest,
                _ => match &self.base {
                    Some(base) => {
                        let found = by_time(bucket, &self.root, base, &newest_name, at).await?;
                        found
                            .filter(|p| p.versionstamp >= first.versionstamp)
                            .unwrap_or(first)
                    }
                    None => newest,
                },
            },
        };
        Ok(plan(point, first, newest, true))
    }
}

fn not_in(target: Target, why: &str, first: RestorePoint, newest: RestorePoint) -> RestoreError {
    NotInBackup {
        target,
        why: why.to_string(),
        first,
        newest,
    }
    .into()
}

/// The commit `name.last` names, which the body must hold as a commit end: the
/// restore takes the newest point from names, so an object whose name claims a
/// commit it does not end is refused.
fn held_last(name: &LogName, body: &LogBody) -> Result<[u8; 10], RestoreError> {
    if body.entries.last().map(|e| e.versionstamp) == Some(name.last) && is_commit_end(&name.last) {
        return Ok(vs10(&name.last));
    }
    Err(RestoreError::Corrupt {
        key: name.key.clone(),
        what: "log object",
        why: format!(
            "its name says it ends with the commit end {}, which it does not hold",
            hex::encode(name.last)
        ),
    })
}

/// The first log object whose `monoseq` is at least `monoseq`.
pub(super) async fn first_from(
    bucket: &dyn ReadBucket,
    root: &str,
    format: u16,
    monoseq: u64,
) -> Result<Option<LogName>, RestoreError> {
    let listed = bucket
        .list(
            &format!("{root}{LOGS}"),
            Some(&log_floor(root, format, monoseq)),
            1,
        )
        .await?;
    Ok(listed
        .first()
        .map(|l| parse_log(root, &l.key))
        .transpose()?)
}

/// The last restore point stamped at or before `at`, between the objects `base`
/// (stamped at or before) and `newest` (after): a binary search on `monoseq`,
/// assuming times do not decrease in name order (each object's `timestamp_ms` is
/// its latest commit's time).
async fn by_time(
    bucket: &dyn ReadBucket,
    root: &str,
    base: &LogName,
    newest: &LogName,
    at: u64,
) -> Result<Option<RestorePoint>, RestoreError> {
    let format = base.format;
    let (mut lo, mut hi) = (base.monoseq, newest.monoseq);
    while hi.saturating_sub(lo) > 1 {
        let mid = lo + (hi - lo) / 2;
        match first_from(bucket, root, format, mid).await? {
            Some(found) if found.monoseq < hi => {
                let body = objects::log(bucket, &found).await?;
                if body.timestamp_ms <= at {
                    lo = found.monoseq;
                } else {
                    hi = mid;
                }
            }
            _ => hi = mid,
        }
    }
    // Nothing lies strictly between lo and hi: the answer is among the objects at
    // those two monoseqs (retried objects share one).
    let prefix = format!("{root}{LOGS}");
    let mut after = Some(log_floor(root, format, lo));
    let mut best = None;
    'pages: loop {
        let listed = bucket.list(&prefix, after.as_deref(), 16).await?;
        for object in &listed {
            let name = parse_log(root, &object.key)?;
            if name.monoseq > hi {
                break 'pages;
            }
            let body = objects::log(bucket, &name).await?;
            if body.timestamp_ms > at {
                break 'pages;
            }
            let last = body.commit_ends().next_back();
            if let Some(end) = last {
                best = Some(RestorePoint {
                    versionstamp: vs10(&end),
                    time_ms: Some(body.timestamp_ms),
                });
            }
        }
        match listed.last() {
            Some(last) if listed.len() == 16 => after = Some(last.key.clone()),
            _ => break,
        }
    }
    Ok(best)
}

/// A restore resolved to an exact point: what [`super::step`] follows. Small and
/// serializable (the restore function stores it with its cursor).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// `<prefix><databaseId>/` of the source backup.
    pub root: String,
    pub target: Target,
    pub differential: [u8; 10],
    /// Where the restore ends: the state right after this commit.
    pub point: RestorePoint,
    /// The backup's first and newest restore points when planned.
    pub first: RestorePoint,
    pub newest: RestorePoint,
    pub snapshot_chunks: u64,
    pub log_objects: u64,
    /// False when the backup has no log: the snapshot alone is the state.
    pub replay_logs: bool,
    /// Keys whose deadline is at or before this (ms since the Unix epoch; the time
    /// the plan was made) are restored as absent: [`super::Write::Delete`].
    pub expired_at_ms: i64,
}

/// Plans a restore of the backup at `root` in one go: [`Scan::start`], then
/// [`Scan::finish`]. A function that must checkpoint a very long scan uses [`Scan`].
pub async fn plan(
    bucket: &dyn ReadBucket,
    root: &str,
    target: Target,
    now_ms: i64,
) -> Result<Plan, RestoreError> {
    Scan::start(bucket, root, target)
        .await?
        .finish(bucket, now_ms)
        .await
}
