//! [`FakeProgress`]: the control table's backup items, with `DynamoProgress`'s
//! conditions.

use super::lock;
use crate::progress::{BackupState, Breaker, Progress, Scan, SnapshotProgress, Stale, Update};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use subkv_core::control::locator::{sweep_slot, Locator, SWEEP_SLOTS};
use subkv_core::control::records::{BackupRecord, BackupStatus};
use subkv_core::control::retired::{
    now_ms, retirement, root_of, RetiredRoot, StaleMark, WrittenSoFar,
};
use subkv_core::error::StoreError;
use uuid::Uuid;

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
    pub snap_start: Option<u64>,
    pub lease: Option<i64>,
    pub lease_owner: Option<String>,
    pub stale: Option<Stale>,
    /// The forwarding lease: until when (ms), and whose.
    pub forwarding: Option<(i64, String)>,
    pub error_since: Option<i64>,
    pub active_gen: Option<u64>,
    /// `dueIndex`: in the catch-up's `due` index.
    pub due: bool,
    pub pending_since: Option<i64>,
    /// `breakerFaults` / `breakerUntil` (closed: the default).
    pub breaker: Breaker,
    /// `parked` (errors parked so far) and `parkedReason`.
    pub parked: u64,
    pub parked_reason: Option<String>,
}

#[derive(Default)]
struct Control {
    items: HashMap<Uuid, Item>,
    locators: HashMap<Uuid, Locator>,
    ledger: HashMap<Uuid, BTreeSet<String>>,
    /// Retired roots by database and sort key.
    retired: BTreeMap<(Uuid, String), RetiredRoot>,
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
                snap_start: None,
                lease: None,
                lease_owner: None,
                stale: None,
                forwarding: None,
                error_since: None,
                active_gen: None,
                // The API enables a backup due.
                due: true,
                pending_since: None,
                breaker: Breaker::default(),
                parked: 0,
                parked_reason: None,
            },
        );
        at
    }

    /// The backup's breaker, as another instance would have left it.
    pub fn set_breaker(&self, at: &Locator, breaker: Breaker) {
        if let Some(item) = lock(&self.control).items.get_mut(&at.backup_id) {
            item.breaker = breaker;
        }
    }

    /// The API deletes the backup (its item and its locator), as
    /// `DynamoControl::delete_backup` does: its ledger stays, and what it may have
    /// written is recorded as its root's retired item. Panics where that call
    /// refuses (another backup's retired item at the root).
    pub fn delete(&self, at: &Locator) {
        let mut control = lock(&self.control);
        let Some(item) = control.items.remove(&at.backup_id) else {
            return;
        };
        control.locators.remove(&at.database_id);
        let written = WrittenSoFar {
            began: item.cursor.is_some(),
            generation: item.snap_gen,
            seq: item.snap_seq,
            stale: item.stale.map(|s| StaleMark {
                generation: s.generation,
                chunks: s.chunks,
                ledger: s.ledger,
            }),
        };
        let retired = match retirement(at.backup_id, &written, now_ms()) {
            Ok(retired) => retired,
            Err(e) => panic!("{e}"),
        };
        if let Some(retired) = retired {
            let key = (at.database_id, root_of(&item.record));
            if let Some(there) = control.retired.get(&key) {
                assert_eq!(
                    there.backup_id, at.backup_id,
                    "another backup's retired root"
                );
            }
            control.retired.insert(key, retired);
        }
    }

    /// The retired roots of `database`, by sort key.
    pub fn retired_roots(&self, database: Uuid) -> Vec<(String, RetiredRoot)> {
        lock(&self.control)
            .retired
            .iter()
            .filter(|((db, _), _)| *db == database)
            .map(|((_, root), retired)| (root.clone(), *retired))
            .collect()
    }

    /// The retired roots of `database` were retired `ago` earlier than recorded.
    pub fn backdate_retired(&self, database: Uuid, ago: std::time::Duration) {
        for ((db, _), retired) in lock(&self.control).retired.iter_mut() {
            if *db == database {
                retired.retired_at_ms -= ago.as_millis() as i64;
            }
        }
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

    /// Another pass holds the forwarding lease until `until_ms`.
    pub fn hold_forwarding(&self, at: &Locator, owner: &str, until_ms: i64) {
        if let Some(item) = lock(&self.control).items.get_mut(&at.backup_id) {
            item.forwarding = Some((until_ms, owner.to_string()));
        }
    }

    /// The backup's run of transient faults began `ago` earlier than recorded.
    pub fn backdate_fault_run(&self, at: &Locator, ago: std::time::Duration) {
        if let Some(item) = lock(&self.control).items.get_mut(&at.backup_id) {
            if let Some(since) = item.error_since.as_mut() {
                *since -= ago.as_millis() as i64;
            }
        }
    }

    /// The backup's snapshot generation began `ago` earlier than recorded.
    pub fn backdate_pending(&self, at: &Locator, ago: std::time::Duration) {
        if let Some(item) = lock(&self.control).items.get_mut(&at.backup_id) {
            if let Some(since) = item.pending_since.as_mut() {
                *since -= ago.as_millis() as i64;
            }
        }
    }

    pub fn ledger(&self, at: &Locator) -> Vec<String> {
        self.ledger_of(at.backup_id)
    }

    /// The ledger of a backup, deleted or not.
    pub fn ledger_of(&self, backup: Uuid) -> Vec<String> {
        lock(&self.control)
            .ledger
            .get(&backup)
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

    async fn due(&self) -> Result<Vec<Locator>, StoreError> {
        let control = self.called("due");
        let mut due: Vec<Locator> = control
            .locators
            .values()
            .filter(|at| control.items.get(&at.backup_id).is_some_and(|i| i.due))
            .copied()
            .collect();
        due.sort_by_key(|at| at.backup_id);
        Ok(due)
    }

    async fn sweep(&self, slot: u32) -> Result<Vec<Locator>, StoreError> {
        let mut all: Vec<Locator> = self
            .called("sweep")
            .locators
            .values()
            .filter(|at| sweep_slot(at.database_id) == slot % SWEEP_SLOTS)
            .copied()
            .collect();
        all.sort_by_key(|at| at.backup_id);
        Ok(all)
    }

    async fn mark_due(&self, at: &Locator) -> Result<Update, StoreError> {
        self.update(
            "mark_due",
            at,
            |_| true,
            |item| {
                item.due = true;
                Ok(())
            },
        )
    }

    async fn settle(&self, at: &Locator, cursor: u64) -> Result<Update, StoreError> {
        self.update(
            "settle",
            at,
            |item| {
                item.cursor == Some(cursor)
                    && item.record.status == BackupStatus::Active
                    && item.error_since.is_none()
                    && item.stale.is_none()
            },
            |item| {
                item.due = false;
                Ok(())
            },
        )
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
                    start: item.snap_start,
                },
                stale: item.stale,
                lease_until_ms: item.lease.unwrap_or(0),
                lease_owner: item.lease_owner.clone(),
                error_since_ms: item.error_since,
                due: item.due,
                pending_since_ms: item.pending_since,
                breaker: item.breaker,
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
                        ledger: None,
                    });
                    item.record.last_versionstamp = None;
                }
                item.cursor = Some(head);
                item.snap_start = Some(head);
                item.snap_gen = Some(generation);
                item.snap_seq = Some(0);
                item.record.status = BackupStatus::Pending;
                item.snap_after = None;
                item.snap_end = None;
                item.due = true;
                item.pending_since = Some(subkv_dynamo_kv::now_ms());
                Ok(())
            },
        )
    }

    async fn retired(&self, database: Uuid, root: &str) -> Result<Option<RetiredRoot>, StoreError> {
        Ok(self
            .called("retired")
            .retired
            .get(&(database, root.to_string()))
            .copied())
    }

    async fn begin_over_retired(
        &self,
        at: &Locator,
        head: u64,
        retired: &RetiredRoot,
    ) -> Result<Update, StoreError> {
        self.update(
            "begin_over_retired",
            at,
            |item| item.cursor.is_none() && is_pending(&item.record),
            |item| {
                item.cursor = Some(head);
                item.snap_start = Some(head);
                item.snap_gen = Some(retired.next_generation);
                item.snap_seq = Some(0);
                item.record.status = BackupStatus::Pending;
                item.stale = Some(Stale::retired(retired));
                item.snap_after = None;
                item.snap_end = None;
                item.due = true;
                item.pending_since = Some(subkv_dynamo_kv::now_ms());
                Ok(())
            },
        )
    }

    async fn retired_emptied(
        &self,
        database: Uuid,
        root: &str,
        backup: Uuid,
    ) -> Result<Update, StoreError> {
        let mut control = self.called("retired_emptied");
        let key = (database, root.to_string());
        match control.retired.get(&key) {
            Some(retired) if retired.backup_id == backup => {
                control.retired.remove(&key);
                Ok(Update::Applied)
            }
            _ => Ok(Update::Lost),
        }
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
        ledger: Uuid,
        below: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError> {
        let control = self.called("ledger_before");
        let Some(ledger) = control.ledger.get(&ledger) else {
            return Ok(Vec::new());
        };
        Ok(ledger
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(below)))
            .take(limit.max(0) as usize)
            .cloned()
            .collect())
    }

    async fn ledger_delete(&self, ledger: Uuid, object_key: &str) -> Result<(), StoreError> {
        if let Some(ledger) = self.called("ledger_delete").ledger.get_mut(&ledger) {
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

    async fn stale_chunk_emptied(
        &self,
        at: &Locator,
        generation: u64,
        stale_generation: u64,
        seq: u64,
    ) -> Result<Update, StoreError> {
        self.update(
            "stale_chunk_emptied",
            at,
            |item| {
                item.snap_gen == Some(generation)
                    && item
                        .stale
                        .is_some_and(|s| s.generation == stale_generation && s.chunks == seq)
            },
            |item| {
                if let Some(stale) = item.stale.as_mut() {
                    stale.chunks = seq.saturating_sub(1);
                }
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

    async fn take_forwarding(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError> {
        self.update(
            "take_forwarding",
            at,
            |item| match &item.forwarding {
                None => true,
                Some((until, holder)) => *until < now_ms || holder == owner,
            },
            |item| {
                item.forwarding = Some((until_ms, owner.to_string()));
                Ok(())
            },
        )
    }

    async fn release_forwarding(&self, at: &Locator, owner: &str) -> Result<Update, StoreError> {
        self.update(
            "release_forwarding",
            at,
            |item| {
                item.forwarding
                    .as_ref()
                    .is_some_and(|(_, holder)| holder == owner)
            },
            |item| {
                item.forwarding = None;
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
                item.error_since = None;
                item.breaker = Breaker::default();
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
                item.error_since = None;
                item.breaker = Breaker::default();
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
                item.error_since = None;
                item.breaker = Breaker::default();
                item.active_gen = Some(generation);
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
                item.error_since = None;
                item.due = false;
                item.breaker = Breaker::default();
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
                item.due = true;
                Ok(())
            },
        )
    }

    async fn note_fault(
        &self,
        at: &Locator,
        message: &str,
        now_ms: i64,
    ) -> Result<Update, StoreError> {
        self.update(
            "note_fault",
            at,
            |_| true,
            |item| {
                item.record.last_error = Some(message.to_string());
                item.error_since.get_or_insert(now_ms);
                item.due = true;
                Ok(())
            },
        )
    }

    async fn open_breaker(
        &self,
        at: &Locator,
        message: &str,
        now_ms: i64,
        breaker: Breaker,
    ) -> Result<Update, StoreError> {
        self.update(
            "open_breaker",
            at,
            |_| true,
            |item| {
                item.record.last_error = Some(message.to_string());
                item.error_since.get_or_insert(now_ms);
                item.breaker = breaker;
                item.due = true;
                Ok(())
            },
        )
    }

    async fn park(&self, at: &Locator, message: &str, fail: bool) -> Result<Update, StoreError> {
        self.update(
            "park",
            at,
            |item| !(fail && matches!(item.record.status, BackupStatus::Failed { .. })),
            |item| {
                item.parked += 1;
                item.parked_reason = Some(message.to_string());
                if fail {
                    item.record.status = BackupStatus::Failed {
                        message: message.to_string(),
                    };
                    item.lease = None;
                    item.lease_owner = None;
                    item.error_since = None;
                    item.breaker = Breaker::default();
                    item.due = false;
                } else {
                    item.record.last_error = Some(message.to_string());
                    item.due = true;
                }
                Ok(())
            },
        )
    }
}

/// The fake's conditions, one by one (they are what the engine's tests rely on).
#[path = "progress_tests.rs"]
mod tests;
