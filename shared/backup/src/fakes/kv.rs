//! [`FakeKv`]: databases in memory.

use super::lock;
use crate::source::{ChangeSource, LivePage};
use async_trait::async_trait;
use denokv_proto::backup::{BackupKvMutationKind, BackupMutationRange, BackupReplicationLogEntry};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Mutex;
use subkv_dynamo_kv::{now_ms, whole_commits, LogPart, LoggedCommit};
use subkv_kv::backup_format::{versionstamp12, COMMIT_END};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::model::Entry;
use uuid::Uuid;

/// One mutation of a fake commit: a key set to a value (bytes), or deleted.
pub type Op<'a> = (&'a str, Option<&'a str>);

#[derive(Default)]
struct Db {
    head: u64,
    /// The change log; commits at or below an expiry are removed.
    log: BTreeMap<u64, LoggedCommit>,
    live: BTreeMap<Vec<u8>, Entry>,
    /// Commits to make right after the next page of the snapshot scan is read.
    during_scan: Vec<Vec<(String, Option<String>)>>,
    /// A writer that never stops: one more commit before every read of the
    /// change log (the engine never finds it caught up).
    busy: bool,
    /// Commits the busy writer made.
    busy_commits: u64,
    /// Reads of the change log so far, and commits to make before a given read.
    reads: u64,
    on_read: BTreeMap<u64, Vec<(String, Option<String>)>>,
    /// Parts of change records that expired on their own (commit, part).
    lost_parts: BTreeSet<(u64, u16)>,
    /// Commits whose change record does not parse: a read that reaches one fails.
    malformed: BTreeSet<u64>,
    /// Reads of the change log that fail as a busy store does, still to come.
    unavailable: u32,
}

impl Db {
    /// The change log's items after commit `after`, as `DynamoKv` reads them: a
    /// commit's record in one part per entry (one, empty, for a commit without
    /// mutations), less the parts lost.
    fn log_items(&self, after: u64) -> impl Iterator<Item = LogPart> + '_ {
        self.log
            .range(after.saturating_add(1)..)
            .flat_map(|(version, commit)| {
                let parts = commit.entries.len().max(1) as u16;
                (0..parts).map(move |part| LogPart {
                    version: *version,
                    part,
                    parts,
                    range: BackupMutationRange {
                        entries: commit
                            .entries
                            .get(part as usize)
                            .cloned()
                            .into_iter()
                            .collect(),
                        timestamp_ms: commit.timestamp_ms,
                    },
                })
            })
            .filter(|p| !self.lost_parts.contains(&(p.version, p.part)))
    }
}

impl Db {
    fn commit(&mut self, ops: &[(String, Option<String>)]) -> u64 {
        self.head += 1;
        let version = self.head;
        let entries = ops
            .iter()
            .enumerate()
            .map(|(i, (key, value))| {
                let index = if i + 1 == ops.len() {
                    COMMIT_END
                } else {
                    i as u16
                };
                let kind = match value {
                    Some(_) => BackupKvMutationKind::MkSet,
                    None => BackupKvMutationKind::MkClear,
                };
                BackupReplicationLogEntry {
                    versionstamp: versionstamp12(version, index).to_vec(),
                    kind: kind as i32,
                    key: key.as_bytes().to_vec(),
                    value: value.clone().unwrap_or_default().into_bytes(),
                    value_encoding: 3,
                    expire_at_ms: 0,
                }
            })
            .collect();
        for (key, value) in ops {
            let key = key.as_bytes().to_vec();
            match value {
                Some(value) => {
                    let entry = Entry {
                        key: key.clone(),
                        value: value.clone().into_bytes(),
                        encoding: 3,
                        version,
                        seq: 0,
                        expire_at_ms: None,
                    };
                    self.live.insert(key, entry);
                }
                None => {
                    self.live.remove(&key);
                }
            }
        }
        self.log.insert(
            version,
            LoggedCommit {
                version,
                timestamp_ms: now_ms() as u64,
                entries,
            },
        );
        version
    }
}

fn owned(ops: &[Op<'_>]) -> Vec<(String, Option<String>)> {
    ops.iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect()
}

/// Databases in memory: commits, the change log (which can be told to expire)
/// and live entries.
#[derive(Default)]
pub struct FakeKv {
    dbs: Mutex<HashMap<Uuid, Db>>,
    calls: Mutex<Vec<&'static str>>,
}

impl FakeKv {
    /// Commits `ops` as one commit (no ops: a check-only commit); returns its
    /// version.
    pub fn commit(&self, database: Uuid, ops: &[Op<'_>]) -> u64 {
        lock(&self.dbs)
            .entry(database)
            .or_default()
            .commit(&owned(ops))
    }

    /// The change records of every commit up to `version` expire.
    pub fn expire_through(&self, database: Uuid, version: u64) {
        if let Some(db) = lock(&self.dbs).get_mut(&database) {
            db.log.retain(|v, _| *v > version);
        }
    }

    /// Part `part` of the change record of commit `version` expires on its own
    /// (DynamoDB's TTL deletes each item when it gets to it); the fake's records
    /// have one part per mutation.
    pub fn lose_part(&self, database: Uuid, version: u64, part: u16) {
        if let Some(db) = lock(&self.dbs).get_mut(&database) {
            db.lost_parts.insert((version, part));
        }
    }

    /// `ops` are committed while the snapshot scan runs: right after its next page
    /// is read.
    pub fn commit_during_scan(&self, database: Uuid, ops: &[Op<'_>]) {
        lock(&self.dbs)
            .entry(database)
            .or_default()
            .during_scan
            .push(owned(ops));
    }

    /// From now on a writer commits once before every read of the change log,
    /// setting `busy/<n>` to `n`: a database busier than the engine can drain.
    pub fn keep_busy(&self, database: Uuid) {
        lock(&self.dbs).entry(database).or_default().busy = true;
    }

    /// `ops` are committed right before the `read`-th read (from 1) of the change
    /// log: a commit that lands at a chosen moment of a pass.
    pub fn commit_on_read(&self, database: Uuid, read: u64, ops: &[Op<'_>]) {
        lock(&self.dbs)
            .entry(database)
            .or_default()
            .on_read
            .insert(read, owned(ops));
    }

    /// The change record of commit `version` does not parse from now on (as
    /// `DynamoKv` reads it: a [`KvError::Malformed`] for any read that reaches it).
    pub fn malform(&self, database: Uuid, version: u64) {
        if let Some(db) = lock(&self.dbs).get_mut(&database) {
            db.malformed.insert(version);
        }
    }

    /// The entries of commit `version` get another commit's versionstamps: the
    /// engine cannot build a log object holding it (a format error).
    pub fn corrupt(&self, database: Uuid, version: u64) {
        if let Some(commit) = lock(&self.dbs)
            .get_mut(&database)
            .and_then(|db| db.log.get_mut(&version))
        {
            for entry in &mut commit.entries {
                entry.versionstamp = versionstamp12(version + 1000, COMMIT_END).to_vec();
            }
        }
    }

    /// The next `reads` reads of the change log fail as a throttled store does
    /// ([`KvError::Unavailable`]).
    pub fn throttle_reads(&self, database: Uuid, reads: u32) {
        lock(&self.dbs).entry(database).or_default().unavailable = reads;
    }

    /// Stops the busy writer.
    pub fn stop_busy(&self, database: Uuid) {
        if let Some(db) = lock(&self.dbs).get_mut(&database) {
            db.busy = false;
        }
    }

    /// What the engine asked, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        lock(&self.calls).clone()
    }

    fn called(&self, name: &'static str) {
        lock(&self.calls).push(name);
    }
}

#[async_trait]
impl ChangeSource for FakeKv {
    async fn head(&self, database: Uuid) -> KvResult<u64> {
        self.called("head");
        Ok(lock(&self.dbs).get(&database).map_or(0, |db| db.head))
    }

    /// As `DynamoKv::change_log` (the same assembly of its items into commits):
    /// whole commits, at most `max_commits`, none more once the records' encoded
    /// size reaches `max_bytes`, none from one missing a part on.
    async fn change_log(
        &self,
        database: Uuid,
        after: u64,
        max_commits: usize,
        max_bytes: usize,
    ) -> KvResult<Vec<LoggedCommit>> {
        self.called("change_log");
        let mut dbs = lock(&self.dbs);
        let Some(db) = dbs.get_mut(&database) else {
            return Ok(Vec::new());
        };
        if db.unavailable > 0 {
            db.unavailable -= 1;
            return Err(KvError::Unavailable(
                "storage is busy (Query); retry".into(),
            ));
        }
        if let Some(v) = db.malformed.range(after.saturating_add(1)..).next() {
            return Err(KvError::Malformed(format!(
                "malformed data item: log body (commit {v})"
            )));
        }
        db.reads += 1;
        if let Some(ops) = db.on_read.remove(&db.reads) {
            db.commit(&ops);
        }
        if db.busy {
            db.busy_commits += 1;
            let n = db.busy_commits.to_string();
            db.commit(&[(format!("busy/{n}"), Some(n))]);
        }
        Ok(whole_commits(db.log_items(after), max_commits, max_bytes))
    }

    /// As a DynamoDB query with a limit: a page that reached the limit names its
    /// last key as where to go on, even when nothing follows.
    async fn live_entries_page(
        &self,
        database: Uuid,
        after: Option<&[u8]>,
        max_items: i32,
    ) -> KvResult<LivePage> {
        self.called("live_entries_page");
        let limit = max_items.clamp(1, 1000) as usize;
        let mut dbs = lock(&self.dbs);
        let db = dbs.entry(database).or_default();
        let from = match after {
            Some(after) => Bound::Excluded(after.to_vec()),
            None => Bound::Unbounded,
        };
        let entries: Vec<Entry> = db
            .live
            .range((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect();
        let next = match entries.last() {
            Some(last) if entries.len() == limit => Some(last.key.clone()),
            _ => None,
        };
        for ops in std::mem::take(&mut db.during_scan) {
            db.commit(&ops);
        }
        Ok(LivePage { entries, next })
    }
}
