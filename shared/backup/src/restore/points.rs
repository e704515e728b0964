//! Restore points, newest first, a page at a time, without reading the whole
//! backup.
//!
//! **Precision: exact.** A page lists real commit ends (`0xffff` entries) at or
//! after the differential, each with its time as `denokv pitr list` shows it (the
//! `timestamp_ms` of the first log object, in name order, holding it: one time per
//! object, so the points of one object share it). To get them it reads the bodies
//! of the log objects that hold the page's points (and of overlapping retried
//! objects, whose time may win), nothing else: names give each object's `first`
//! and `last`, so objects entirely before the differential or after the cursor are
//! never fetched.
//!
//! **Newest first over an ascending listing.** S3 lists in name order only. The
//! names just below a bound are found by probing the name space by `monoseq`
//! (`start-after` = [`log_floor`], a listing of a few keys each): exponentially
//! away from the bound, then by bisection, to the largest `monoseq` from which at
//! least the wanted number of names lie below the bound; then one listing from
//! there. That is `O(log(monoseq distance))` small listings per batch (at most
//! 128 for 64-bit `monoseq`s; about 2 log2 of the distance covered in practice),
//! whatever the backup's size. It relies on the log names sorting in versionstamp
//! order, which [`super::Scan`] checks and subkv's and `denokv`'s writers keep.
//!
//! The cursor is opaque to clients: the last versionstamp listed and the log name
//! from which the next page resumes.

use super::names::{log_floor, parse_log, LogName, LOGS};
use super::objects;
use super::{vs10, vs12, LayoutError, ReadBucket, RestoreError, RestorePoint};
use std::collections::BTreeMap;

/// The largest page.
pub const MAX_POINTS_PAGE: usize = 1000;

/// One page of restore points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PointsPage {
    /// Newest first.
    pub points: Vec<RestorePoint>,
    /// The cursor of the next page; None on the last page.
    pub next: Option<String>,
}

/// Where a page resumes: points before `below`, from log objects up to `bound`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Resume {
    below: [u8; 10],
    bound: Bound,
}

/// A log name bound: objects up to it (inclusive or not).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Bound {
    name: LogName,
    inclusive: bool,
}

impl Bound {
    fn admits(&self, key: &str) -> bool {
        if self.inclusive {
            key <= self.name.key.as_str()
        } else {
            key < self.name.key.as_str()
        }
    }
}

fn encode_cursor(root: &str, resume: &Resume) -> String {
    let relative = resume
        .bound
        .name
        .key
        .strip_prefix(root)
        .and_then(|k| k.strip_prefix(LOGS))
        .unwrap_or(&resume.bound.name.key);
    format!(
        "{}.{}.{relative}",
        hex::encode(resume.below),
        if resume.bound.inclusive { "i" } else { "x" }
    )
}

fn decode_cursor(root: &str, cursor: &str) -> Result<Resume, RestoreError> {
    let mut parts = cursor.splitn(3, '.');
    let (Some(below), Some(kind), Some(relative)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(RestoreError::BadCursor);
    };
    let mut vs = [0u8; 10];
    hex::decode_to_slice(below, &mut vs).map_err(|_| RestoreError::BadCursor)?;
    let inclusive = match kind {
        "i" => true,
        "x" => false,
        _ => return Err(RestoreError::BadCursor),
    };
    let name =
        parse_log(root, &format!("{root}{LOGS}{relative}")).map_err(|_| RestoreError::BadCursor)?;
    Ok(Resume {
        below: vs,
        bound: Bound { name, inclusive },
    })
}

/// Up to `limit` (1..=[`MAX_POINTS_PAGE`]; clamped) restore points of the backup
/// at `root`, newest first, after `cursor` (a previous page's `next`).
pub async fn restore_points(
    bucket: &dyn ReadBucket,
    root: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<PointsPage, RestoreError> {
    let limit = limit.clamp(1, MAX_POINTS_PAGE);
    let resume = cursor.map(|c| decode_cursor(root, c)).transpose()?;
    let dv = objects::differential(bucket, root).await?;
    let dv_end = vs12(dv, 0xffff);
    let (format, oldest) = match &resume {
        Some(r) => (r.bound.name.format, 0),
        None => {
            let first = bucket.list(&format!("{root}{LOGS}"), None, 1).await?;
            match first.first() {
                Some(object) => {
                    let first = parse_log(root, &object.key)?;
                    (first.format, first.monoseq)
                }
                None => {
                    // No log: the differential is the only point.
                    return Ok(PointsPage {
                        points: vec![RestorePoint {
                            versionstamp: dv,
                            time_ms: None,
                        }],
                        next: None,
                    });
                }
            }
        }
    };
    let below = resume.as_ref().map(|r| r.below);
    let mut bound = resume.map(|r| r.bound);
    // Commit → (time, from the earliest-named object seen holding it).
    let mut points: BTreeMap<[u8; 10], u64> = BTreeMap::new();
    // Every object read, newest name first, with its `first`.
    let mut read: Vec<LogName> = Vec::new();
    let mut newest_seen: Option<LogName> = None;
    let want = (limit + 1).min(MAX_POINTS_PAGE);
    'batches: loop {
        let batch = names_before(bucket, root, format, bound.as_ref(), oldest, want).await?;
        if batch.is_empty() {
            break;
        }
        for name in batch.iter().rev() {
            if newest_seen.is_none() {
                newest_seen = Some(name.clone());
            }
            if name.last < dv_end {
                break 'batches; // every earlier object ends before the differential too
            }
            if points.len() > limit {
                let page_min = points.keys().rev().nth(limit - 1).copied().unwrap_or(dv);
                if name.last < vs12(page_min, 0xffff) {
                    break 'batches;
                }
            }
            if below.is_some_and(|b| name.first >= vs12(b, 0)) {
                continue; // every point in it was on an earlier page
            }
            let body = objects::log(bucket, name).await?;
            for end in body.commit_ends() {
                let vs = vs10(&end);
                if end >= dv_end && below.is_none_or(|b| vs < b) {
                    points.insert(vs, body.timestamp_ms);
                }
            }
            read.push(name.clone());
        }
        bound = batch.first().map(|name| Bound {
            name: name.clone(),
            inclusive: false,
        });
    }

    if points.is_empty() && below.is_none() {
        // Logs that all end before the differential: one point, their last commit.
        if let Some(newest) = newest_seen {
            let body = objects::log(bucket, &newest).await?;
            let last = body.commit_ends().next_back();
            if let Some(end) = last.filter(|_| newest.last < dv_end) {
                return Ok(PointsPage {
                    points: vec![RestorePoint {
                        versionstamp: vs10(&end),
                        time_ms: Some(body.timestamp_ms),
                    }],
                    next: None,
                });
            }
        }
    }

    let more = points.len() > limit;
    let page: Vec<RestorePoint> = points
        .iter()
        .rev()
        .take(limit)
        .map(|(vs, time)| RestorePoint {
            versionstamp: *vs,
            time_ms: Some(*time),
        })
        .collect();
    let next = match page.last() {
        Some(last) if more => {
            let below = last.versionstamp;
            // The newest object read that may hold points before `below`; if none
            // may, everything before the oldest object read.
            let bound = match read.iter().find(|n| n.first < vs12(below, 0)) {
                Some(name) => Bound {
                    name: name.clone(),
                    inclusive: true,
                },
                None => match read.last() {
                    Some(name) => Bound {
                        name: name.clone(),
                        inclusive: false,
                    },
                    None => return Err(RestoreError::BadCursor),
                },
            };
            Some(encode_cursor(root, &Resume { below, bound }))
        }
        _ => None,
    };
    Ok(PointsPage { points: page, next })
}

/// Up to `want` log names just below `bound` (all names if None), oldest first.
async fn names_before(
    bucket: &dyn ReadBucket,
    root: &str,
    format: u16,
    bound: Option<&Bound>,
    oldest: u64,
    want: usize,
) -> Result<Vec<LogName>, RestoreError> {
    let prefix = format!("{root}{LOGS}");
    let admits = |key: &str| bound.is_none_or(|b| b.admits(key));
    let enough = |monoseq: u64| enough(bucket, root, format, bound, want, monoseq);
    // The largest `monoseq` from which at least `want` names lie below the bound:
    // `lo` has enough (None: not even `oldest`), `hi` (if known) has not.
    let (lo, hi) = match bound {
        // Exponentially down from the bound.
        Some(b) => {
            let mut hi = None;
            let mut distance = 0u64;
            loop {
                let m = b.name.monoseq.saturating_sub(distance).max(oldest);
                if enough(m).await? {
                    break (Some(m), hi);
                }
                hi = Some(m);
                if m == oldest {
                    break (None, hi);
                }
                distance = distance.saturating_mul(2).max(1);
            }
        }
        // No bound (the first page): exponentially up from the oldest object.
        None => {
            if enough(oldest).await? {
                let mut lo = oldest;
                let mut distance = 1u64;
                loop {
                    let m = oldest.saturating_add(distance);
                    if m == lo {
                        break (Some(lo), None);
                    }
                    if !enough(m).await? {
                        break (Some(lo), Some(m));
                    }
                    lo = m;
                    distance = distance.saturating_mul(2);
                }
            } else {
                (None, None)
            }
        }
    };
    let start = match (lo, hi) {
        (None, _) => None,
        (Some(lo), None) => Some(lo),
        (Some(mut lo), Some(mut hi)) => {
            while hi > lo + 1 {
                let mid = lo + (hi - lo) / 2;
                if enough(mid).await? {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            Some(lo)
        }
    };
    // Fewer than `want` names from `oldest` on: list them all.
    let mut after = start.map(|m| log_floor(root, format, m));
    let mut names = Vec::new();
    'pages: loop {
        let listed = bucket.list(&prefix, after.as_deref(), 1000).await?;
        for object in &listed {
            if !admits(&object.key) {
                break 'pages;
            }
            let name = parse_log(root, &object.key)?;
            if name.format != format {
                return Err(LayoutError::MixedFormats {
                    key: name.key,
                    folder: "log objects".into(),
                    expected: format,
                    found: name.format,
                }
                .into());
            }
            names.push(name);
        }
        match listed.last() {
            Some(last) if listed.len() == 1000 => after = Some(last.key.clone()),
            _ => break,
        }
    }
    let skip = names.len().saturating_sub(want);
    Ok(names.split_off(skip))
}

/// Whether at least `want` log names from `monoseq` on lie below `bound`: one
/// listing of `want` keys.
async fn enough(
    bucket: &dyn ReadBucket,
    root: &str,
    format: u16,
    bound: Option<&Bound>,
    want: usize,
    monoseq: u64,
) -> Result<bool, RestoreError> {
    let floor = log_floor(root, format, monoseq);
    let listed = bucket
        .list(&format!("{root}{LOGS}"), Some(&floor), want)
        .await?;
    Ok(listed.len() == want
        && listed
            .iter()
            .all(|l| bound.is_none_or(|b| b.admits(&l.key))))
}
