//! [`FakeProgress`]: the control table's backup items, with `DynamoProgress`'s
//! conditions.

use super::lock;
use crate::progress::{BackupState, Breaker, Progress, Scan, SnapshotProgress, Stale, Update};
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};
use subkv_core::control::locator::Locator;
use subkv_core::control::records::{BackupRecord, BackupStatus};
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
                    start: item.snap_start,
                },
                stale: item.stale,
                lease_until_ms: item.lease.unwrap_or(0),
                lease_owner: item.lease_owner.clone(),
                error_since_ms: item.error_since,
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
                } else {
                    item.record.last_error = Some(message.to_string());
                }
                Ok(())
            },
        )
    }
}

/// The fake's conditions, one by one (they are what the engine's tests rely on).
mod tests {
    use super::*;
    use subkv_core::control::records::now_rfc3339;

    fn fake() -> (FakeProgress, Locator) {
        let progress = FakeProgress::default();
        let db = Uuid::new_v4();
        let at = progress.add(BackupRecord {
            id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            database_id: db,
            kind: "s3".into(),
            endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
            bucket_name: "b".into(),
            bucket_region: "eu-west-1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key_ciphertext: vec![],
            prefix: String::new(),
            status: BackupStatus::Pending,
            created_at: now_rfc3339(),
            last_backed_up_at: None,
            last_versionstamp: None,
            last_error: None,
        });
        (progress, at)
    }

    fn ok(update: Result<Update, StoreError>) -> Update {
        match update {
            Ok(update) => update,
            Err(e) => panic!("{e}"),
        }
    }

    use Update::{Applied, Lost};

    #[tokio::test]
    async fn the_first_snapshot_begins_once_and_the_cursor_moves_only_from_where_it_is() {
        let (p, at) = fake();
        assert_eq!(ok(p.begin_snapshot(&at, None, 7, 1).await), Applied);
        assert_eq!(ok(p.begin_snapshot(&at, None, 9, 1).await), Lost);
        assert_eq!(ok(p.advance(&at, 6, 8, None, "t").await), Lost);
        assert_eq!(ok(p.advance(&at, 7, 8, Some("vs"), "t").await), Applied);
        assert_eq!(ok(p.advance(&at, 7, 9, None, "t").await), Lost);
        let item = p.item(&at).expect("item");
        assert_eq!(item.cursor, Some(8));
        assert_eq!(item.record.last_versionstamp.as_deref(), Some("vs"));
    }

    #[tokio::test]
    async fn the_lease_is_its_owners_until_it_runs_out() {
        let (p, at) = fake();
        let _ = ok(p.begin_snapshot(&at, None, 0, 1).await);
        assert_eq!(ok(p.take_lease(&at, "a", 100, 200).await), Applied);
        assert_eq!(ok(p.take_lease(&at, "b", 150, 250).await), Lost);
        assert_eq!(ok(p.take_lease(&at, "a", 150, 250).await), Applied);
        assert_eq!(ok(p.take_lease(&at, "b", 251, 300).await), Applied);
        // Only the owner records a chunk, at its generation and index.
        let step = |owner: &'static str, generation, seq| {
            let (p, at) = (&p, at);
            async move {
                ok(
                    p.snapshot_step(&at, owner, generation, seq, Scan::After(b"k"))
                        .await,
                )
            }
        };
        assert_eq!(step("a", 1, 0).await, Lost);
        assert_eq!(step("b", 2, 0).await, Lost);
        assert_eq!(step("b", 1, 1).await, Lost);
        assert_eq!(step("b", 1, 0).await, Applied);
        assert_eq!(step("b", 1, 0).await, Lost, "chunk 0 is recorded");
        assert_eq!(p.item(&at).and_then(|i| i.snap_seq), Some(1));
    }

    #[tokio::test]
    async fn a_re_snapshot_marks_the_earlier_generation_stale_until_cleared() {
        let (p, at) = fake();
        let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
        let _ = ok(p.take_lease(&at, "a", 0, i64::MAX).await);
        let _ = ok(p
            .snapshot_step(&at, "a", 1, 0, Scan::Complete { end: 3 })
            .await);
        assert_eq!(ok(p.activate(&at, 2, "vs", "t").await), Lost);
        assert_eq!(ok(p.activate(&at, 1, "vs", "t").await), Applied);
        let item = p.item(&at).expect("item");
        assert_eq!(
            item.active_gen, item.snap_gen,
            "its differential is written"
        );
        assert_eq!(ok(p.begin_snapshot(&at, Some(2), 9, 2).await), Lost);
        assert_eq!(ok(p.begin_snapshot(&at, Some(3), 9, 2).await), Applied);
        let item = p.item(&at).expect("item");
        assert_eq!((item.active_gen, item.snap_gen), (Some(1), Some(2)));
        assert_eq!(
            item.stale,
            Some(Stale {
                generation: 1,
                chunks: 1,
                below: 10
            })
        );
        assert_eq!(item.record.status, BackupStatus::Pending);
        assert_eq!((item.snap_end, item.record.last_versionstamp), (None, None));
        // No third generation while the second's predecessor is not emptied.
        assert_eq!(ok(p.begin_snapshot(&at, Some(9), 12, 3).await), Lost);
        // Its chunks are emptied from the highest down, one recorded step each.
        assert_eq!(ok(p.stale_chunk_emptied(&at, 1, 1, 1).await), Lost);
        assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 2, 1).await), Lost);
        assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 1, 0).await), Lost);
        assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 1, 1).await), Applied);
        assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 1, 1).await), Lost, "done");
        let stale = p.item(&at).and_then(|i| i.stale);
        assert_eq!(stale.map(|s| (s.generation, s.chunks)), Some((1, 0)));
        assert_eq!(ok(p.stale_cleared(&at, 1).await), Lost);
        assert_eq!(ok(p.stale_cleared(&at, 2).await), Applied);
        assert_eq!(ok(p.begin_snapshot(&at, Some(9), 12, 3).await), Applied);
    }

    #[tokio::test]
    async fn failed_is_final_and_a_deleted_backup_is_never_recreated() {
        let (p, at) = fake();
        let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
        assert_eq!(ok(p.fail(&at, "refused").await), Applied);
        assert_eq!(ok(p.begin_snapshot(&at, Some(3), 4, 2).await), Lost);
        assert_eq!(ok(p.activate(&at, 1, "vs", "t").await), Lost);
        p.delete(&at);
        assert_eq!(ok(p.note_error(&at, "m").await), Lost);
        assert_eq!(ok(p.note_fault(&at, "m", 0).await), Lost);
        assert_eq!(ok(p.fail(&at, "m").await), Lost);
        assert_eq!(ok(p.advance(&at, 3, 4, None, "t").await), Lost);
        assert!(p.item(&at).is_none());
        assert!(matches!(p.load(&at).await, Ok(None)));
        assert!(matches!(p.locate(at.database_id).await, Ok(None)));
    }

    #[tokio::test]
    async fn the_breaker_opens_with_a_timeout_and_closes_with_a_write_that_lands() {
        let open = Breaker {
            faults: 2,
            until_ms: 500,
        };
        let (p, at) = fake();
        let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
        assert_eq!(
            ok(p.open_breaker(&at, "timed out", 100, open).await),
            Applied
        );
        let item = p.item(&at).expect("item");
        assert_eq!(item.breaker, open);
        assert_eq!(item.record.last_error.as_deref(), Some("timed out"));
        assert_eq!(item.error_since, Some(100));
        // The cursor moving closes it (DynamoProgress: REMOVE breakerFaults, breakerUntil).
        assert_eq!(ok(p.advance(&at, 3, 4, None, "t").await), Applied);
        assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
        // So do a snapshot chunk recorded, the activation, and failed.
        let _ = ok(p.take_lease(&at, "a", 0, i64::MAX).await);
        let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
        let _ = ok(p
            .snapshot_step(&at, "a", 1, 0, Scan::Complete { end: 4 })
            .await);
        assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
        let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
        assert_eq!(ok(p.activate(&at, 1, "vs", "t").await), Applied);
        assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
        let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
        assert_eq!(ok(p.fail(&at, "refused").await), Applied);
        assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
        // A note of another fault leaves it as it is.
        let (p, at) = fake();
        let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
        let _ = ok(p.note_fault(&at, "SlowDown", 200).await);
        assert_eq!(p.item(&at).map(|i| i.breaker), Some(open));
        p.delete(&at);
        assert_eq!(ok(p.open_breaker(&at, "m", 0, open).await), Lost);
    }

    #[tokio::test]
    async fn a_parked_error_is_counted_and_fails_the_backup_only_when_asked() {
        let (p, at) = fake();
        let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
        assert_eq!(ok(p.park(&at, "ours", false).await), Applied);
        let item = p.item(&at).expect("item");
        assert_eq!(
            (item.parked, item.record.status),
            (1, BackupStatus::Pending)
        );
        assert_eq!(item.record.last_error.as_deref(), Some("ours"));
        assert_eq!(item.parked_reason.as_deref(), Some("ours"));
        assert_eq!(ok(p.park(&at, "malformed", true).await), Applied);
        let item = p.item(&at).expect("item");
        assert_eq!(item.parked, 2);
        assert_eq!(
            item.record.status,
            BackupStatus::Failed {
                message: "malformed".into()
            }
        );
        assert_eq!(item.parked_reason.as_deref(), Some("malformed"));
        // A racing pass that met the same error: parked once.
        assert_eq!(ok(p.park(&at, "malformed", true).await), Lost);
        assert_eq!(p.item(&at).map(|i| i.parked), Some(2));
        p.delete(&at);
        assert_eq!(ok(p.park(&at, "m", true).await), Lost);
    }

    #[tokio::test]
    async fn the_ledger_lists_keys_below_a_bound_in_order() {
        let (p, at) = fake();
        for key in ["logs/3", "logs/1", "logs/2", "logs/9"] {
            let _ = p.ledger_put(&at, key).await;
        }
        let below = p.ledger_before(&at, "logs/9", 2).await.ok();
        assert_eq!(below, Some(vec!["logs/1".into(), "logs/2".into()]));
        let _ = p.ledger_delete(&at, "logs/1").await;
        assert_eq!(p.ledger(&at), ["logs/2", "logs/3", "logs/9"]);
    }
}
