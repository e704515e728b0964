//! In-memory fakes of the engine's ports, for its unit tests: a change source
//! ([`FakeKv`]), a progress store keeping [`DynamoProgress`]'s conditions
//! ([`FakeProgress`]) and a bucket that records every put ([`FakeBucket`]).
//!
//! [`DynamoProgress`]: crate::progress::DynamoProgress

use crate::bucket::BucketFault;
use crate::progress::{BackupState, Progress, Scan, SnapshotProgress, Stale, Update};
use crate::sink::{ObjectSink, Opened, Sinks};
use crate::source::{ChangeSource, LivePage};
use async_trait::async_trait;
use denokv_proto::backup::{BackupKvMutationKind, BackupMutationRange, BackupReplicationLogEntry};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use subkv_core::control::locator::Locator;
use subkv_core::control::records::{BackupRecord, BackupStatus};
use subkv_core::error::StoreError;
use subkv_dynamo_kv::{now_ms, LoggedCommit};
use subkv_kv::backup_format::{versionstamp12, COMMIT_END};
use subkv_kv::error::KvResult;
use subkv_kv::model::Entry;
use uuid::Uuid;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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

    /// `ops` are committed while the snapshot scan runs: right after its next page
    /// is read.
    pub fn commit_during_scan(&self, database: Uuid, ops: &[Op<'_>]) {
        lock(&self.dbs)
            .entry(database)
            .or_default()
            .during_scan
            .push(owned(ops));
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

    /// As `DynamoKv::change_log`: whole commits, at most `max_commits`, none more
    /// once the records' encoded size reaches `max_bytes`.
    async fn change_log(
        &self,
        database: Uuid,
        after: u64,
        max_commits: usize,
        max_bytes: usize,
    ) -> KvResult<Vec<LoggedCommit>> {
        self.called("change_log");
        let max_commits = max_commits.max(1);
        let dbs = lock(&self.dbs);
        let Some(db) = dbs.get(&database) else {
            return Ok(Vec::new());
        };
        let mut bytes = 0usize;
        let mut out: Vec<LoggedCommit> = Vec::new();
        for commit in db.log.range(after.saturating_add(1)..).map(|(_, c)| c) {
            if out.len() == max_commits || (!out.is_empty() && bytes >= max_bytes) {
                break;
            }
            bytes += BackupMutationRange {
                entries: commit.entries.clone(),
                timestamp_ms: commit.timestamp_ms,
            }
            .encoded_len();
            out.push(commit.clone());
        }
        Ok(out)
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

/// A backup item as the control table holds it: the record (status and the
/// `last*` attributes live there) plus the engine's progress attributes.
#[derive(Clone, Debug)]
pub struct Item {
    pub record: BackupRecord,
    pub cursor: Option<u64>,
    pub snap_gen: Option<u64>,
    pub snap_seq: Option<u64>,
    pub snap_after: Option<Vec<u8>>,
    pub snap_end: Option<u64>,
    pub lease: Option<i64>,
    pub lease_owner: Option<String>,
    pub stale: Option<Stale>,
}

#[derive(Default)]
struct Control {
    items: HashMap<Uuid, Item>,
    locators: HashMap<Uuid, Locator>,
    ledger: HashMap<Uuid, BTreeSet<String>>,
    calls: Vec<&'static str>,
}

/// The control table's backup items, ledger and locators, with
/// `DynamoProgress`'s condition on every change: an update of an item that is
/// not there (a deleted backup) is lost, never an insert.
#[derive(Default)]
pub struct FakeProgress {
    control: Mutex<Control>,
}

fn is_pending(record: &BackupRecord) -> bool {
    record.status == BackupStatus::Pending
}

impl FakeProgress {
    /// A backup as the API enables it: `pending`, no progress.
    pub fn add(&self, record: BackupRecord) -> Locator {
        let at = Locator {
            database_id: record.database_id,
            organization_id: record.organization_id,
            backup_id: record.id,
        };
        let mut control = lock(&self.control);
        control.locators.insert(at.database_id, at);
        control.items.insert(
            at.backup_id,
            Item {
                record,
                cursor: None,
                snap_gen: None,
                snap_seq: None,
                snap_after: None,
                snap_end: None,
                lease: None,
                lease_owner: None,
                stale: None,
            },
        );
        at
    }

    /// The API deletes the backup (its item and its locator).
    pub fn delete(&self, at: &Locator) {
        let mut control = lock(&self.control);
        control.items.remove(&at.backup_id);
        control.locators.remove(&at.database_id);
    }

    pub fn item(&self, at: &Locator) -> Option<Item> {
        lock(&self.control).items.get(&at.backup_id).cloned()
    }

    /// Another instance holds the snapshot lease until `until_ms`.
    pub fn hold_lease(&self, at: &Locator, owner: &str, until_ms: i64) {
        if let Some(item) = lock(&self.control).items.get_mut(&at.backup_id) {
            item.lease = Some(until_ms);
            item.lease_owner = Some(owner.to_string());
        }
    }

    pub fn ledger(&self, at: &Locator) -> Vec<String> {
        lock(&self.control)
            .ledger
            .get(&at.backup_id)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// What the engine asked, in order.
    pub fn calls(&self) -> Vec<&'static str> {
        lock(&self.control).calls.clone()
    }

    /// One conditional update: `apply` runs on the item if it exists and
    /// `condition` holds.
    fn update(
        &self,
        name: &'static str,
        at: &Locator,
        condition: impl FnOnce(&Item) -> bool,
        apply: impl FnOnce(&mut Item) -> Result<(), StoreError>,
    ) -> Result<Update, StoreError> {
        let mut control = lock(&self.control);
        control.calls.push(name);
        match control.items.get_mut(&at.backup_id) {
            Some(item) if condition(item) => {
                let mut changed = item.clone();
                apply(&mut changed)?;
                *item = changed;
                Ok(Update::Applied)
            }
            _ => Ok(Update::Lost),
        }
    }

    fn called(&self, name: &'static str) -> MutexGuard<'_, Control> {
        let mut control = lock(&self.control);
        control.calls.push(name);
        control
    }
}

#[async_trait]
impl Progress for FakeProgress {
    async fn locate(&self, database: Uuid) -> Result<Option<Locator>, StoreError> {
        Ok(self.called("locate").locators.get(&database).copied())
    }

    async fn all(&self) -> Result<Vec<Locator>, StoreError> {
        let mut all: Vec<Locator> = self.called("all").locators.values().copied().collect();
        all.sort_by_key(|at| at.backup_id);
        Ok(all)
    }

    async fn load(&self, at: &Locator) -> Result<Option<BackupState>, StoreError> {
        Ok(self
            .called("load")
            .items
            .get(&at.backup_id)
            .map(|item| BackupState {
                record: item.record.clone(),
                cursor: item.cursor,
                snapshot: SnapshotProgress {
                    generation: item.snap_gen.unwrap_or(0),
                    seq: item.snap_seq.unwrap_or(0),
                    after: item.snap_after.clone(),
                    end: item.snap_end,
                },
                stale: item.stale,
                lease_until_ms: item.lease.unwrap_or(0),
                lease_owner: item.lease_owner.clone(),
            }))
    }

    async fn begin_snapshot(
        &self,
        at: &Locator,
        expected: Option<u64>,
        head: u64,
        generation: u64,
    ) -> Result<Update, StoreError> {
        self.update(
            "begin_snapshot",
            at,
            |item| match expected {
                None => item.cursor.is_none() && is_pending(&item.record),
                Some(c) => {
                    item.cursor == Some(c)
                        && matches!(
                            item.record.status,
                            BackupStatus::Pending | BackupStatus::Active
                        )
                        && item.stale.is_none()
                }
            },
            |item| {
                if expected.is_some() {
                    // `staleGen = snapGen, staleSeq = snapSeq`: DynamoDB rejects
                    // the update if either is missing.
                    let (Some(generation), Some(chunks)) = (item.snap_gen, item.snap_seq) else {
                        return Err(StoreError::Malformed(
                            "the update refers to a missing snapGen or snapSeq".into(),
                        ));
                    };
                    item.stale = Some(Stale {
                        generation,
                        chunks,
                        below: head + 1,
                    });
                    item.record.last_versionstamp = None;
                }
                item.cursor = Some(head);
                item.snap_gen = Some(generation);
                item.snap_seq = Some(0);
                item.record.status = BackupStatus::Pending;
                item.snap_after = None;
                item.snap_end = None;
                Ok(())
            },
        )
    }

    async fn ledger_put(&self, at: &Locator, object_key: &str) -> Result<(), StoreError> {
        self.called("ledger_put")
            .ledger
            .entry(at.backup_id)
            .or_default()
            .insert(object_key.to_string());
        Ok(())
    }

    async fn ledger_before(
        &self,
        at: &Locator,
        below: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError> {
        let control = self.called("ledger_before");
        let Some(ledger) = control.ledger.get(&at.backup_id) else {
            return Ok(Vec::new());
        };
        Ok(ledger
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(below)))
            .take(limit.max(0) as usize)
            .cloned()
            .collect())
    }

    async fn ledger_delete(&self, at: &Locator, object_key: &str) -> Result<(), StoreError> {
        if let Some(ledger) = self.called("ledger_delete").ledger.get_mut(&at.backup_id) {
            ledger.remove(object_key);
        }
        Ok(())
    }

    async fn stale_cleared(&self, at: &Locator, generation: u64) -> Result<Update, StoreError> {
        self.update(
            "stale_cleared",
            at,
            |item| item.snap_gen == Some(generation),
            |item| {
                item.stale = None;
                Ok(())
            },
        )
    }

    async fn take_lease(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError> {
        self.update(
            "take_lease",
            at,
            |item| {
                item.lease.is_none_or(|lease| lease < now_ms)
                    || item.lease_owner.as_deref() == Some(owner)
            },
            |item| {
                item.lease = Some(until_ms);
                item.lease_owner = Some(owner.to_string());
                Ok(())
            },
        )
    }

    async fn snapshot_step(
        &self,
        at: &Locator,
        owner: &str,
        generation: u64,
        seq: u64,
        scan: Scan<'_>,
    ) -> Result<Update, StoreError> {
        self.update(
            "snapshot_step",
            at,
            |item| {
                item.lease_owner.as_deref() == Some(owner)
                    && item.snap_gen == Some(generation)
                    && item.snap_seq == Some(seq)
            },
            |item| {
                item.snap_seq = Some(seq + 1);
                match scan {
                    Scan::After(after) => item.snap_after = Some(after.to_vec()),
                    Scan::Complete { end } => {
                        item.snap_end = Some(end);
                        item.snap_after = None;
                    }
                }
                Ok(())
            },
        )
    }

    async fn advance(
        &self,
        at: &Locator,
        from: u64,
        to: u64,
        last_versionstamp: Option<&str>,
        at_time: &str,
    ) -> Result<Update, StoreError> {
        // Not a condition of DynamoProgress, but a rule of the engine's.
        assert!(to > from, "the cursor moves forward only: {from} -> {to}");
        self.update(
            "advance",
            at,
            |item| item.cursor == Some(from),
            |item| {
                item.cursor = Some(to);
                item.record.last_backed_up_at = Some(at_time.to_string());
                if let Some(vs) = last_versionstamp {
                    item.record.last_versionstamp = Some(vs.to_string());
                }
                item.record.last_error = None;
                Ok(())
            },
        )
    }

    async fn activate(
        &self,
        at: &Locator,
        generation: u64,
        differential: &str,
        at_time: &str,
    ) -> Result<Update, StoreError> {
        self.update(
            "activate",
            at,
            |item| is_pending(&item.record) && item.snap_gen == Some(generation),
            |item| {
                item.record.status = BackupStatus::Active;
                item.record.last_backed_up_at = Some(at_time.to_string());
                item.record
                    .last_versionstamp
                    .get_or_insert_with(|| differential.to_string());
                item.lease = None;
                item.lease_owner = None;
                item.record.last_error = None;
                Ok(())
            },
        )
    }

    async fn fail(&self, at: &Locator, message: &str) -> Result<Update, StoreError> {
        self.update(
            "fail",
            at,
            |_| true,
            |item| {
                item.record.status = BackupStatus::Failed {
                    message: message.to_string(),
                };
                item.lease = None;
                item.lease_owner = None;
                Ok(())
            },
        )
    }

    async fn note_error(&self, at: &Locator, message: &str) -> Result<Update, StoreError> {
        self.update(
            "note_error",
            at,
            |_| true,
            |item| {
                item.record.last_error = Some(message.to_string());
                Ok(())
            },
        )
    }
}

/// Which puts fail, and how.
type FaultRule = (Box<dyn Fn(&str) -> bool + Send>, BucketFault);

#[derive(Default)]
struct Store {
    /// Every put that succeeded, in order.
    puts: Vec<(String, Vec<u8>)>,
    attempts: usize,
    opens: usize,
    fault: Option<FaultRule>,
    open_fault: Option<BucketFault>,
}

/// A tenant bucket that records every put; clones share it. It is its own
/// [`Sinks`]: every backup opens it.
#[derive(Clone, Default)]
pub struct FakeBucket {
    store: Arc<Mutex<Store>>,
}

impl FakeBucket {
    /// Puts of keys for which `which` holds fail with `fault` from now on.
    pub fn fail_puts(&self, which: impl Fn(&str) -> bool + Send + 'static, fault: BucketFault) {
        lock(&self.store).fault = Some((Box::new(which), fault));
    }

    /// Every put fails with `fault` from now on.
    pub fn fail_every_put(&self, fault: BucketFault) {
        self.fail_puts(|_| true, fault);
    }

    /// Opening the bucket fails with `fault` (an endpoint the rules refuse).
    pub fn refuse_open(&self, fault: BucketFault) {
        lock(&self.store).open_fault = Some(fault);
    }

    /// Puts succeed again.
    pub fn heal(&self) {
        lock(&self.store).fault = None;
    }

    pub fn puts(&self) -> Vec<(String, Vec<u8>)> {
        lock(&self.store).puts.clone()
    }

    pub fn keys(&self) -> Vec<String> {
        self.puts().into_iter().map(|(k, _)| k).collect()
    }

    /// The bucket's content: the last body put at each key.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.puts().into_iter().collect()
    }

    /// Puts tried, failed ones included.
    pub fn attempts(&self) -> usize {
        lock(&self.store).attempts
    }

    pub fn opens(&self) -> usize {
        lock(&self.store).opens
    }
}

#[async_trait]
impl ObjectSink for FakeBucket {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BucketFault> {
        let mut store = lock(&self.store);
        store.attempts += 1;
        if let Some((which, fault)) = &store.fault {
            if which(key) {
                return Err(fault.clone());
            }
        }
        store.puts.push((key.to_string(), body));
        Ok(())
    }
}

#[async_trait]
impl Sinks for FakeBucket {
    async fn open(&self, _record: &BackupRecord) -> Result<Opened, StoreError> {
        let mut store = lock(&self.store);
        store.opens += 1;
        Ok(match &store.open_fault {
            Some(fault) => Opened::Fault(fault.clone()),
            None => Opened::Sink(Arc::new(self.clone())),
        })
    }
}
