//! The engine's rules against the in-memory fakes of `crate::fakes`.

use super::*;
use crate::fakes::{backup_record, FakeBucket, FakeKv, FakeProgress, Op};
use denokv_proto::backup::{BackupKvMutationKind, BackupMutationRange, BackupSnapshotRange};
use std::collections::BTreeMap;
use subkv_kv::backup_format::{versionstamp12, KeyMetadata, COMMIT_END};

const PREFIX: &str = "backup/";
const REFUSAL: &str = "PutObject refused by the store: AccessDenied: Access Denied";
const OUTAGE: &str = "PutObject failed at the store: SlowDown: Please reduce your request rate.";

/// A database, its backup, and the engine over the fakes.
pub(super) struct World {
    pub(super) kv: Arc<FakeKv>,
    pub(super) progress: Arc<FakeProgress>,
    pub(super) bucket: FakeBucket,
    pub(super) engine: Engine,
    pub(super) db: Uuid,
    pub(super) at: Locator,
}

pub(super) fn world() -> World {
    world_with(EngineConfig {
        snapshot_items_per_chunk: 2,
        hot_pass: Duration::from_millis(200),
        ..EngineConfig::default()
    })
}

pub(super) fn world_with(config: EngineConfig) -> World {
    let db = Uuid::new_v4();
    let kv = Arc::new(FakeKv::default());
    let progress = Arc::new(FakeProgress::default());
    let bucket = FakeBucket::default();
    let at = progress.add(backup_record(db, Uuid::new_v4(), PREFIX));
    let engine = Engine::new(
        kv.clone(),
        progress.clone(),
        Arc::new(bucket.clone()),
        config,
    );
    World {
        kv,
        progress,
        bucket,
        engine,
        db,
        at,
    }
}

impl World {
    pub(super) fn commit(&self, ops: &[Op<'_>]) -> u64 {
        self.kv.commit(self.db, ops)
    }

    /// One pass, with time enough for every step.
    pub(super) async fn pass(&self) -> Report {
        let deadline = Instant::now() + Duration::from_secs(30);
        match self.engine.sync(&self.at, deadline).await {
            Ok(report) => report,
            Err(e) => panic!("the pass failed: {e}"),
        }
    }

    fn root(&self) -> String {
        format::root(PREFIX, self.db)
    }

    pub(super) fn item(&self) -> crate::fakes::Item {
        self.progress.item(&self.at).expect("the backup exists")
    }

    pub(super) fn status(&self) -> BackupStatus {
        self.item().record.status
    }

    pub(super) fn cursor(&self) -> Option<u64> {
        self.item().cursor
    }

    /// Puts made since `since` puts, as keys relative to the backup's root.
    fn keys_since(&self, since: usize) -> Vec<String> {
        let root = self.root();
        self.bucket.keys()[since..]
            .iter()
            .map(|k| k.strip_prefix(&root).expect("under the root").to_string())
            .collect()
    }

    fn body(&self, relative: &str) -> Vec<u8> {
        self.bucket
            .objects()
            .remove(&format!("{}{relative}", self.root()))
            .unwrap_or_else(|| panic!("{relative} was never written"))
    }

    /// A pending backup with `keys` in its database, brought to `active`.
    pub(super) async fn active(&self, keys: &[Op<'_>]) {
        if !keys.is_empty() {
            self.commit(keys);
        }
        let report = self.pass().await;
        assert!(report.activated, "{report:?}");
        assert_eq!(self.status(), BackupStatus::Active);
    }
}

fn snapshot_key(generation: u64, seq: u64) -> String {
    format!("snapshots/0001_{generation:016x}_{seq:016x}.bin")
}

fn differential(version: u64) -> Vec<u8> {
    hex::encode(versionstamp(version)).into_bytes()
}

fn decode_snapshot(body: &[u8]) -> Vec<(String, String, KeyMetadata)> {
    let range = BackupSnapshotRange::decode(body).expect("a snapshot range");
    assert_eq!(range.data_list.len(), range.metadata_list.len());
    range
        .data_list
        .iter()
        .zip(&range.metadata_list)
        .map(|(data, meta)| {
            assert_eq!(data.key[0], b'd');
            assert_eq!(meta.key[0], b'm');
            assert_eq!(data.key[1..], meta.key[1..]);
            (
                String::from_utf8_lossy(&data.key[1..]).into_owned(),
                String::from_utf8_lossy(&data.value).into_owned(),
                KeyMetadata::decode(&meta.value).expect("19 bytes of metadata"),
            )
        })
        .collect()
}

fn decode_log(body: &[u8]) -> BackupMutationRange {
    BackupMutationRange::decode(body).expect("a mutation range")
}

fn is_log(key: &str) -> bool {
    key.contains("/logs/")
}

#[tokio::test]
async fn a_pending_backup_goes_snapshot_chunks_then_differential_then_active() {
    let w = world();
    let head = w.commit(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))]);
    w.commit(&[("d", Some("4")), ("e", Some("5")), ("b", None)]);
    let head = head + 1;

    let report = w.pass().await;

    // a c d e in pages of 2: [a c] [d e] (the limit reached) [] (complete).
    assert_eq!(
        w.keys_since(0),
        [
            snapshot_key(1, 0),
            snapshot_key(1, 1),
            snapshot_key(1, 2),
            marker_key(head),
            "differential".into()
        ]
    );
    // The marker: one commit end at the differential, deleting the empty key.
    let marker = decode_log(&w.body(&marker_key(head)));
    assert_eq!(marker.entries.len(), 1);
    assert_eq!(
        marker.entries[0].versionstamp,
        versionstamp12(head, COMMIT_END)
    );
    assert!(marker.entries[0].key.is_empty());
    assert_eq!(marker.entries[0].kind, BackupKvMutationKind::MkClear as i32);
    let mut snapshot: Vec<_> = (0..3)
        .flat_map(|seq| decode_snapshot(&w.body(&snapshot_key(1, seq))))
        .collect();
    snapshot.sort_by(|x, y| x.0.cmp(&y.0));
    let summary: Vec<(&str, &str)> = snapshot
        .iter()
        .map(|(k, v, _)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(summary, [("a", "1"), ("c", "3"), ("d", "4"), ("e", "5")]);
    assert_eq!(snapshot[0].2.versionstamp, versionstamp(1));
    assert_eq!(snapshot[3].2.versionstamp, versionstamp(2));
    assert_eq!(w.body("differential"), differential(head));

    assert_eq!(
        report,
        Report {
            snapshot_chunks: 3,
            activated: true,
            // The pass wrote everything the bucket holds: the snapshot's
            // chunks, its marker and the differential.
            bytes_written: w.bucket.objects().values().map(|b| b.len() as u64).sum(),
            ..Report::default()
        }
    );
    let item = w.item();
    assert_eq!(item.record.status, BackupStatus::Active);
    assert_eq!(item.cursor, Some(head));
    assert_eq!(item.snap_gen, Some(1));
    assert_eq!(item.snap_end, Some(head));
    assert_eq!(
        item.record.last_versionstamp.as_deref(),
        Some(hex::encode(versionstamp(head)).as_str())
    );
    assert_eq!(item.lease_owner, None, "activation releases the lease");
    assert_eq!(
        w.progress.ledger(&w.at),
        [format!("{}{}", w.root(), marker_key(head))],
        "only the marker, ledgered like any log object"
    );
}

#[tokio::test]
async fn an_empty_database_gets_one_empty_chunk_and_its_differential() {
    let w = world();
    w.pass().await;
    assert_eq!(
        w.keys_since(0),
        [
            snapshot_key(1, 0),
            marker_key(0),
            "differential".to_string()
        ]
    );
    assert!(decode_snapshot(&w.body(&snapshot_key(1, 0))).is_empty());
    assert_eq!(w.body("differential"), differential(0));
    assert_eq!(w.status(), BackupStatus::Active);
}

#[tokio::test]
async fn the_differential_waits_until_the_cursor_reaches_the_snapshots_end() {
    let w = world();
    w.commit(&[("a", Some("1"))]);
    // A commit lands while the scan runs: the snapshot's end is past the cursor.
    w.kv.commit_during_scan(w.db, &[("b", Some("2"))]);
    // ...and its log object cannot be written yet.
    w.bucket
        .fail_puts(is_log, BucketFault::Transient(OUTAGE.into()));

    let report = w.pass().await;
    assert_eq!(report.problem.as_deref(), Some(OUTAGE));
    let item = w.item();
    assert_eq!(
        item.cursor,
        Some(1),
        "logs begin after the head at the start"
    );
    assert_eq!(item.snap_end, Some(2), "the head read after the scan");
    assert_eq!(item.record.status, BackupStatus::Pending);
    assert_eq!(w.keys_since(0), [snapshot_key(1, 0)]);
    assert!(
        !w.bucket.keys().iter().any(|k| k.ends_with("differential")),
        "no differential before the logs reach the snapshot's end"
    );

    w.bucket.heal();
    let report = w.pass().await;
    let log = format!(
        "logs/0001_{:016x}_{}_{}.bin",
        2,
        hex::encode(versionstamp12(2, COMMIT_END)),
        hex::encode(versionstamp12(2, COMMIT_END))
    );
    assert_eq!(w.keys_since(1), [log.clone(), "differential".into()]);
    assert_eq!(w.body("differential"), differential(2));
    assert_eq!(decode_log(&w.body(&log)).entries[0].key, b"b");
    assert!(report.activated);
    assert_eq!(report.commits_forwarded, 1);
    assert_eq!(w.item().record.last_error, None, "cleared by the progress");
}

#[tokio::test]
async fn commits_after_the_cursor_become_one_log_object_per_pass() {
    let w = world();
    w.active(&[("a", Some("0"))]).await;
    let written = w.bucket.keys().len();

    let first = w.commit(&[("a", Some("1")), ("b", Some("2"))]);
    w.commit(&[]); // checks only: no entries
    let last = w.commit(&[("a", None)]);
    let report = w.pass().await;

    let keys = w.keys_since(written);
    let expected = format!(
        "logs/0001_{first:016x}_{}_{}.bin",
        hex::encode(versionstamp12(first, 0)),
        hex::encode(versionstamp12(last, COMMIT_END))
    );
    assert_eq!(keys, std::slice::from_ref(&expected));
    let range = decode_log(&w.body(&expected));
    let entries: Vec<(Vec<u8>, Vec<u8>, i32)> = range
        .entries
        .iter()
        .map(|e| (e.versionstamp.clone(), e.key.clone(), e.kind))
        .collect();
    assert_eq!(
        entries,
        [
            (
                versionstamp12(first, 0).to_vec(),
                b"a".to_vec(),
                BackupKvMutationKind::MkSet as i32
            ),
            (
                versionstamp12(first, COMMIT_END).to_vec(),
                b"b".to_vec(),
                BackupKvMutationKind::MkSet as i32
            ),
            (
                versionstamp12(last, COMMIT_END).to_vec(),
                b"a".to_vec(),
                BackupKvMutationKind::MkClear as i32
            ),
        ]
    );
    assert_eq!(report.commits_forwarded, 3);
    assert_eq!(report.records_forwarded, 3);
    assert_eq!(report.objects_written, 1);
    assert!(report.lag_ms.is_some());
    let item = w.item();
    assert_eq!(item.cursor, Some(last));
    assert_eq!(
        item.record.last_versionstamp,
        Some(hex::encode(versionstamp(last)))
    );
    // The activation's marker (no commit had been forwarded then), then the object.
    assert_eq!(
        w.progress.ledger(&w.at),
        [
            format!("{}{}", w.root(), marker_key(1)),
            format!("{}{expected}", w.root())
        ],
        "every log object is ledgered"
    );
}

#[tokio::test]
async fn a_second_pass_with_nothing_new_writes_nothing() {
    let w = world();
    w.active(&[("a", Some("0"))]).await;
    w.commit(&[("a", Some("1"))]);
    w.pass().await;
    let (written, attempts) = (w.bucket.keys().len(), w.bucket.attempts());
    let (kv_calls, progress_calls) = (w.kv.calls().len(), w.progress.calls().len());

    let report = w.pass().await;

    assert_eq!(report, Report::default());
    assert_eq!(w.bucket.keys().len(), written);
    assert_eq!(w.bucket.attempts(), attempts);
    // An idle pass reads its progress, the change log and the head: nothing else.
    assert_eq!(w.progress.calls()[progress_calls..], ["load"]);
    assert_eq!(w.kv.calls()[kv_calls..], ["change_log", "head"]);
}

#[tokio::test]
async fn a_busy_database_is_split_into_objects_at_commit_boundaries() {
    let w = world_with(EngineConfig {
        max_commits_per_object: 2,
        ..EngineConfig::default()
    });
    w.active(&[]).await;
    let written = w.bucket.keys().len();
    for i in 0..5 {
        let value = i.to_string();
        w.commit(&[("k", Some(value.as_str())), ("l", Some("x"))]);
    }

    let report = w.pass().await;

    // Pages that stop at the limit have more behind them: one pass takes them all.
    let keys = w.keys_since(written);
    assert_eq!(keys.len(), 3, "{keys:?}");
    let firsts: Vec<&str> = keys.iter().map(|k| &k[10..26]).collect();
    assert_eq!(
        firsts,
        [
            format!("{:016x}", 1),
            format!("{:016x}", 3),
            format!("{:016x}", 5)
        ]
    );
    for key in &keys {
        let range = decode_log(&w.body(key));
        let last = range.entries.last().expect("entries");
        assert_eq!(last.versionstamp[10..], COMMIT_END.to_be_bytes(), "{key}");
    }
    assert_eq!(report.objects_written, 3);
    assert_eq!(report.commits_forwarded, 5);
    assert_eq!(w.cursor(), Some(5));
}

/// An active backup at cursor 2 with one log object, then commits 3 to 5.
async fn fell_behind() -> World {
    let w = world();
    w.active(&[("a", Some("1")), ("b", Some("1"))]).await;
    w.commit(&[("a", Some("2"))]);
    w.pass().await;
    assert_eq!(w.cursor(), Some(2));
    w.commit(&[("b", Some("3"))]);
    w.commit(&[("c", Some("4"))]);
    w.commit(&[("a", None)]);
    w
}

/// The marker log object at `version` (written before a differential that no log
/// object reaches), relative to the root.
fn marker_key(version: u64) -> String {
    let vs = hex::encode(versionstamp12(version, COMMIT_END));
    format!("logs/0001_{version:016x}_{vs}_{vs}.bin")
}

/// What a re-snapshot from cursor 2 at head 5 must have written since `since`.
fn check_resnapshot(w: &World, since: usize, report: &Report) {
    let old_log = format!(
        "logs/0001_{:016x}_{}_{}.bin",
        2,
        hex::encode(versionstamp12(2, COMMIT_END)),
        hex::encode(versionstamp12(2, COMMIT_END))
    );
    // Generation 1 wrote chunks 0 ([a b], the limit reached) and 1 (empty): the
    // next index is 2, and chunks 2 down to 0 are emptied.
    assert_eq!(
        w.keys_since(since),
        [
            marker_key(1),
            old_log.clone(),
            snapshot_key(1, 2),
            snapshot_key(1, 1),
            snapshot_key(1, 0),
            snapshot_key(2, 0),
            snapshot_key(2, 1),
            marker_key(5),
            "differential".into(),
        ]
    );
    assert!(decode_log(&w.body(&old_log)).entries.is_empty());
    assert!(decode_log(&w.body(&marker_key(1))).entries.is_empty());
    assert!(decode_snapshot(&w.body(&snapshot_key(1, 0))).is_empty());
    let mut snapshot: Vec<(String, String)> = [0, 1]
        .iter()
        .flat_map(|seq| decode_snapshot(&w.body(&snapshot_key(2, *seq))))
        .map(|(k, v, _)| (k, v))
        .collect();
    snapshot.sort();
    assert_eq!(
        snapshot,
        [("b".into(), "3".into()), ("c".into(), "4".into())]
    );
    assert_eq!(w.body("differential"), differential(5));
    let item = w.item();
    assert_eq!(item.record.status, BackupStatus::Active);
    assert_eq!(item.snap_gen, Some(2));
    assert_eq!(item.stale, None);
    assert_eq!(item.cursor, Some(5));
    assert_eq!(
        w.progress.ledger(&w.at),
        [format!("{}{}", w.root(), marker_key(5))],
        "emptied logs leave it; the new generation's marker is in it"
    );
    assert!(report.activated);
}

const RESNAPSHOT: &str = "the change log expired before it was backed up: taking a new snapshot";

#[tokio::test]
async fn a_hole_after_the_cursor_starts_a_new_generation_and_empties_the_earlier_one() {
    let w = fell_behind().await;
    w.kv.expire_through(w.db, 3); // 4 and 5 remain: 3 is missing
    let since = w.bucket.keys().len();

    // An active backup's pass ends after a page under the limit, here once the
    // new generation has begun (as it always did).
    let report = w.pass().await;
    assert_eq!(report.problem.as_deref(), Some(RESNAPSHOT));
    assert_eq!(w.bucket.keys().len(), since, "nothing written yet");
    let item = w.item();
    assert_eq!(item.record.status, BackupStatus::Pending);
    assert_eq!(item.record.last_error.as_deref(), Some(RESNAPSHOT));
    assert_eq!(item.record.last_versionstamp, None);
    assert_eq!((item.snap_gen, item.cursor), (Some(2), Some(5)));
    assert_eq!(
        item.stale,
        Some(crate::progress::Stale {
            generation: 1,
            chunks: 2,
            below: 6,
            ledger: None
        })
    );

    let report = w.pass().await;
    check_resnapshot(&w, since, &report);
    assert_eq!(w.item().record.last_error, None);
}

#[tokio::test]
async fn a_change_log_expired_past_the_head_starts_a_new_generation_too() {
    let w = fell_behind().await;
    w.kv.expire_through(w.db, 5); // nothing after the cursor, the head moved
    let since = w.bucket.keys().len();
    // Found without a page of commits: the same pass goes on to the end.
    let report = w.pass().await;
    check_resnapshot(&w, since, &report);
    assert_eq!(report.problem.as_deref(), Some(RESNAPSHOT));
}

#[tokio::test]
async fn the_earlier_generation_is_emptied_before_the_new_snapshot_is_taken() {
    let w = fell_behind().await;
    w.kv.expire_through(w.db, 3);
    w.bucket.fail_puts(
        |k| k.contains("/snapshots/"),
        BucketFault::Transient(OUTAGE.into()),
    );
    let since = w.bucket.keys().len();

    w.pass().await; // the new generation begins
    w.pass().await;

    // The old logs (the activation's marker and one object) are emptied; the old
    // chunks cannot be: the stale marker stays and nothing of generation 2 is
    // written.
    assert_eq!(w.keys_since(since).len(), 2);
    let item = w.item();
    assert_eq!(item.snap_gen, Some(2));
    assert!(item.stale.is_some());
    assert_eq!(item.record.status, BackupStatus::Pending);
    assert_eq!(item.record.last_error.as_deref(), Some(OUTAGE));

    w.bucket.heal();
    let report = w.pass().await;
    assert!(report.activated);
    assert_eq!(
        w.keys_since(since + 2),
        [
            snapshot_key(1, 2),
            snapshot_key(1, 1),
            snapshot_key(1, 0),
            snapshot_key(2, 0),
            snapshot_key(2, 1),
            marker_key(5),
            "differential".to_string(),
        ]
    );
}

#[tokio::test]
async fn a_lease_held_by_another_instance_ends_the_pass_without_a_chunk() {
    let w = world();
    w.commit(&[("a", Some("1"))]);
    // The first snapshot began (cursor set) elsewhere, which holds the lease.
    let _ = w.progress.begin_snapshot(&w.at, None, 1, 1).await;
    w.progress
        .hold_lease(&w.at, "another-instance", now_ms() + 60_000);

    let report = w.pass().await;

    assert!(w.bucket.keys().is_empty());
    assert_eq!(w.bucket.attempts(), 0);
    assert_eq!(report, Report::default());
    let item = w.item();
    assert_eq!(item.snap_seq, Some(0));
    assert_eq!(item.lease_owner.as_deref(), Some("another-instance"));
    assert!(!w.kv.calls().contains(&"live_entries_page"));

    // Once its lease ran out, this instance takes the steps.
    w.progress
        .hold_lease(&w.at, "another-instance", now_ms() - 1);
    let report = w.pass().await;
    assert!(report.activated);
    assert_eq!(
        w.keys_since(0),
        [
            snapshot_key(1, 0),
            marker_key(1),
            "differential".to_string()
        ]
    );
}

#[tokio::test]
async fn a_refused_store_fails_the_backup_and_later_passes_attempt_nothing() {
    let w = world();
    w.commit(&[("a", Some("1"))]);
    w.bucket
        .fail_every_put(BucketFault::Refused(REFUSAL.into()));

    let report = w.pass().await;

    assert!(report.failed);
    assert_eq!(report.problem.as_deref(), Some(REFUSAL));
    assert_eq!(
        w.status(),
        BackupStatus::Failed {
            message: REFUSAL.into()
        }
    );
    assert_eq!(w.bucket.attempts(), 1);
    assert_eq!(w.item().lease_owner, None, "failing releases the lease");

    w.bucket.heal();
    w.commit(&[("b", Some("2"))]);
    let (opens, progress_calls, kv_calls) = (
        w.bucket.opens(),
        w.progress.calls().len(),
        w.kv.calls().len(),
    );
    let report = w.pass().await;
    assert_eq!(report, Report::default());
    assert_eq!(w.bucket.attempts(), 1, "failed is final");
    assert_eq!(w.bucket.opens(), opens);
    assert_eq!(w.progress.calls()[progress_calls..], ["load"]);
    assert_eq!(w.kv.calls().len(), kv_calls);
}

#[tokio::test]
async fn a_refused_endpoint_fails_the_backup_before_any_put() {
    let w = world();
    let message = "endpoint address 10.0.0.1 is not a public address";
    w.bucket.refuse_open(BucketFault::Refused(message.into()));
    let report = w.pass().await;
    assert!(report.failed);
    assert_eq!(
        w.status(),
        BackupStatus::Failed {
            message: message.into()
        }
    );
    assert_eq!(w.bucket.attempts(), 0);
    assert!(
        w.kv.calls().is_empty(),
        "nothing is read for a bucket it cannot open"
    );
}

#[tokio::test]
async fn a_transient_fault_is_noted_and_a_later_pass_catches_up() {
    let w = world();
    w.active(&[("a", Some("1"))]).await;
    let written = w.bucket.keys().len();
    let first = w.commit(&[("a", Some("2"))]);
    let last = w.commit(&[("b", Some("3"))]);
    w.bucket
        .fail_every_put(BucketFault::Transient(OUTAGE.into()));

    let report = w.pass().await;

    assert!(!report.failed);
    assert_eq!(report.problem.as_deref(), Some(OUTAGE));
    assert_eq!(report.commits_forwarded, 0);
    let item = w.item();
    assert_eq!(item.record.status, BackupStatus::Active);
    assert_eq!(item.record.last_error.as_deref(), Some(OUTAGE));
    assert_eq!(
        item.cursor,
        Some(first - 1),
        "the cursor waits for the object"
    );
    assert_eq!(
        w.progress.ledger(&w.at).len(),
        2,
        "ledgered before it was tried (after the activation's marker)"
    );
    assert_eq!(w.bucket.keys().len(), written);

    w.bucket.heal();
    let report = w.pass().await;
    assert_eq!(report.commits_forwarded, 2);
    assert_eq!(report.problem, None);
    assert_eq!(w.keys_since(written).len(), 1);
    let item = w.item();
    assert_eq!(item.cursor, Some(last));
    assert_eq!(item.record.last_error, None);
    assert_eq!(
        w.progress.ledger(&w.at).len(),
        2,
        "the marker and the same object's key"
    );
}

#[tokio::test]
async fn transient_faults_that_outlast_the_budget_fail_the_backup() {
    let w = world();
    w.active(&[("a", Some("1"))]).await;
    w.commit(&[("a", Some("2"))]);
    w.bucket
        .fail_every_put(BucketFault::Transient(OUTAGE.into()));

    // The first fault begins a run; later ones within the budget keep it going.
    assert!(!w.pass().await.failed);
    let began = w.item().error_since.expect("a run of faults began");
    w.progress
        .backdate_fault_run(&w.at, TRANSIENT_BUDGET - Duration::from_secs(60));
    assert!(!w.pass().await.failed);
    assert_eq!(w.status(), BackupStatus::Active);
    assert!(w.item().error_since < Some(began), "the run goes on");

    // A write that lands ends the run: the next fault begins a new one.
    w.bucket.heal();
    assert_eq!(w.pass().await.commits_forwarded, 1);
    assert_eq!(w.item().error_since, None);
    w.commit(&[("b", Some("3"))]);
    w.bucket
        .fail_every_put(BucketFault::Transient(OUTAGE.into()));
    assert!(!w.pass().await.failed);
    assert_eq!(w.status(), BackupStatus::Active);

    // Once the run is older than the budget, the next fault fails the backup.
    w.progress
        .backdate_fault_run(&w.at, TRANSIENT_BUDGET + Duration::from_secs(1));
    let report = w.pass().await;
    let message = format!(
        "gave up after 24 h of transient store errors with no write landing; the last: {OUTAGE}"
    );
    assert!(report.failed, "{report:?}");
    assert_eq!(report.problem.as_deref(), Some(message.as_str()));
    assert_eq!(w.status(), BackupStatus::Failed { message });
    assert_eq!(w.item().error_since, None);

    // Failed: nothing more is attempted, even once the store is back.
    w.bucket.heal();
    let attempts = w.bucket.attempts();
    assert_eq!(w.pass().await, Report::default());
    assert_eq!(w.bucket.attempts(), attempts);
}

#[tokio::test]
async fn a_deleted_backup_writes_nothing_and_is_never_recreated() {
    let w = world();
    w.active(&[("a", Some("1"))]).await;
    let written = w.bucket.attempts();
    w.commit(&[("a", Some("2"))]);
    w.progress.delete(&w.at);

    let deadline = Instant::now() + Duration::from_secs(30);
    assert!(matches!(
        w.engine.sync_database(w.db, deadline).await,
        Ok(DatabaseSync::NoBackup)
    ));
    let report = w.pass().await; // a catch-up that listed it just before
    assert_eq!(report, Report::default());
    assert_eq!(w.bucket.attempts(), written);
    assert!(w.progress.item(&w.at).is_none());

    // Whatever a concurrent invocation still tries is lost, not an insert.
    let at = &w.at;
    let p = &w.progress;
    assert_eq!(
        p.advance(at, 1, 2, None, "t").await.ok(),
        Some(Update::Lost)
    );
    assert_eq!(p.note_error(at, "m").await.ok(), Some(Update::Lost));
    assert_eq!(p.fail(at, "m").await.ok(), Some(Update::Lost));
    assert_eq!(p.take_lease(at, "o", 0, 1).await.ok(), Some(Update::Lost));
    assert!(p.item(at).is_none());
}

#[tokio::test]
async fn sync_database_finds_the_backup_through_its_locator() {
    let w = world();
    let deadline = Instant::now() + Duration::from_secs(30);
    match w.engine.sync_database(w.db, deadline).await {
        Ok(DatabaseSync::Synced(at, report)) => {
            assert_eq!(at, w.at);
            assert!(report.activated);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        w.engine.sync_database(Uuid::new_v4(), deadline).await,
        Ok(DatabaseSync::NoBackup)
    ));
    assert_eq!(w.engine.progress().due().await.ok(), Some(vec![w.at]));
}

#[tokio::test]
async fn no_snapshot_step_is_started_without_time_for_it() {
    let w = world();
    let deadline = Instant::now() + MIN_STEP_TIME / 2;
    let report = w.engine.sync(&w.at, deadline).await.ok();
    assert_eq!(report, Some(Report::default()));
    assert_eq!(w.cursor(), Some(0), "the snapshot began");
    assert_eq!(w.bucket.attempts(), 0);
    assert!(!w.progress.calls().contains(&"take_lease"));
}

/// A pass that may last `seconds`.
async fn pass_within(w: &World, seconds: u64) -> Report {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    match w.engine.sync(&w.at, deadline).await {
        Ok(report) => report,
        Err(e) => panic!("the pass failed: {e}"),
    }
}

#[tokio::test]
async fn a_busy_database_becomes_active_while_writes_continue() {
    // Issue 11, item 1: commits keep arriving faster than a pass drains them. The
    // snapshot must still make progress and the backup become active.
    let w = world();
    w.commit(&[("a", Some("1")), ("b", Some("2")), ("c", Some("3"))]);
    w.kv.keep_busy(w.db);
    let mut activated = false;
    for _ in 0..3 {
        if pass_within(&w, 3).await.activated {
            activated = true;
            break;
        }
    }
    assert!(activated, "still {:?} after 3 passes", w.status());
    assert_eq!(w.status(), BackupStatus::Active);
    // Every commit up to the cursor is in a log object and the differential
    // names a commit the logs reach.
    let cursor = w.cursor().expect("a cursor");
    let differential = String::from_utf8(w.body("differential")).expect("hex");
    let at = u64::from_str_radix(&differential[..16], 16).expect("a version");
    assert!(at <= cursor, "differential {at} beyond the cursor {cursor}");
    w.kv.stop_busy(w.db);
    // Once the writer stops, a pass drains the rest.
    pass_within(&w, 3).await;
    let head = w.kv.head(w.db).await.expect("head");
    assert_eq!(w.cursor(), Some(head));
}

#[tokio::test]
async fn no_log_is_written_while_another_pass_holds_the_forwarding_lease() {
    // Issue 11, item 8: racing passes wrote the same commits twice.
    let w = world();
    w.active(&[("a", Some("1"))]).await;
    let v = w.commit(&[("b", Some("2"))]);
    let before = w.bucket.keys().len();
    w.progress
        .hold_forwarding(&w.at, "another pass", now_ms() + 60_000);
    let report = w.pass().await;
    assert_eq!(report, Report::default());
    assert_eq!(w.bucket.keys().len(), before, "{:?}", w.keys_since(before));
    assert!(w.cursor() < Some(v));
    // Once that lease has run out, the next pass writes the commit, once.
    w.progress
        .hold_forwarding(&w.at, "another pass", now_ms() - 1);
    let report = w.pass().await;
    assert_eq!(report.objects_written, 1, "{report:?}");
    assert_eq!(w.cursor(), Some(v));
    assert_eq!(w.keys_since(before).len(), 1);
    // ... and gives the lease back.
    assert!(w.item().forwarding.is_none(), "{:?}", w.item().forwarding);
}

#[tokio::test]
async fn the_lease_holder_looks_again_after_giving_it_back() {
    // A delivery that found the lease taken ended at once: its commit must be
    // forwarded by the holder, not wait for the next catch-up.
    let w = world();
    w.active(&[("a", Some("1"))]).await;
    w.commit(&[("b", Some("2"))]);
    let reads = w.kv.calls().iter().filter(|c| **c == "change_log").count() as u64;
    // The holder reads (1) and takes the lease, reads again under it and
    // forwards (2), gives the lease back and looks again (3): the other
    // delivery's commit lands just before that last look.
    let late = reads + 3;
    w.kv.commit_on_read(w.db, late, &[("c", Some("3"))]);
    let report = w.pass().await;
    let head = w.kv.head(w.db).await.expect("head");
    assert_eq!(w.cursor(), Some(head), "{report:?}");
    assert_eq!(report.commits_forwarded, 2, "{report:?}");
    assert_eq!(report.objects_written, 2, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_large_earlier_generation_is_emptied_over_passes_that_each_keep_their_deadline() {
    // Issue 11, item 2. Under a paused clock each put takes exactly `PUT` of virtual
    // time, and a pass has the margin and 3 puts' time: it can start 4 puts.
    const PUT: Duration = Duration::from_secs(1);
    let w = world_with(EngineConfig {
        snapshot_items_per_chunk: 1,
        max_commits_per_object: 1,
        ..EngineConfig::default()
    });
    // Generation 1: 50 keys, one per chunk: chunks 0 to 50 (and 51, next).
    let keys: Vec<String> = (0..50).map(|i| format!("k{i:02}")).collect();
    let ops: Vec<Op<'_>> = keys.iter().map(|k| (k.as_str(), Some("1"))).collect();
    w.active(&ops).await;
    // 20 log objects of one commit each.
    for (i, key) in keys.iter().take(20).enumerate() {
        let value = i.to_string();
        w.commit(&[(key.as_str(), Some(value.as_str()))]);
    }
    w.pass().await;
    // The 20 objects and the marker the activation wrote (nothing was forwarded
    // in generation 1 before its differential).
    let old_logs = w.progress.ledger(&w.at);
    assert_eq!(old_logs.len(), 21);
    assert_eq!(w.item().snap_seq, Some(51));
    // A hole after the cursor: the next pass begins generation 2.
    let hole = w.commit(&[("k00", None)]);
    w.commit(&[("k01", None)]);
    w.kv.expire_through(w.db, hole);
    let since = w.bucket.keys().len();

    let root = w.root();
    let old_chunks: Vec<String> = (0..=51)
        .map(|seq| format!("{root}{}", snapshot_key(1, seq)))
        .collect();
    let is_old = |key: &String| old_chunks.contains(key) || old_logs.contains(key);
    w.bucket.slow_puts(PUT);
    let mut passes = 0;
    loop {
        passes += 1;
        assert!(passes <= 100, "still {:?} after 100 passes", w.status());
        let before = w.bucket.keys().len();
        let deadline = tokio::time::Instant::now().into_std() + MIN_STEP_TIME + 3 * PUT;
        if let Err(e) = w.engine.sync(&w.at, deadline).await {
            panic!("pass {passes} failed: {e}");
        }
        let written = &w.bucket.keys()[before..];
        assert!(!written.is_empty(), "pass {passes} made no progress");
        let emptied = written.iter().filter(|k| is_old(k)).count();
        assert!(
            emptied <= 4,
            "pass {passes} emptied {emptied} objects: more than its deadline allows"
        );
        if w.status() == BackupStatus::Active {
            break;
        }
    }
    assert!(passes > 18, "73 objects at most 4 a pass: {passes} passes");

    // Every object of the earlier generation emptied once, nothing written twice.
    let written = w.bucket.keys()[since..].to_vec();
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for key in &written {
        *counts.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "written more than once: {twice:?}");
    let objects = w.bucket.objects();
    for key in &old_chunks {
        assert_eq!(counts.get(key), Some(&1), "{key} emptied");
        assert!(decode_snapshot(&objects[key]).is_empty(), "{key}");
    }
    for key in &old_logs {
        assert_eq!(counts.get(key), Some(&1), "{key} emptied");
        assert!(decode_log(&objects[key]).entries.is_empty(), "{key}");
    }
    // ...before anything of generation 2; the differential last.
    let last_old = written.iter().rposition(is_old).expect("emptied objects");
    let first_new = written
        .iter()
        .position(|k| k.starts_with(&format!("{root}snapshots/0001_{:016x}_", 2)))
        .expect("generation 2 chunks");
    assert!(last_old < first_new, "{last_old} < {first_new}");
    assert_eq!(written.last(), Some(&format!("{root}differential")));
    let head = w.kv.head(w.db).await.expect("head");
    assert_eq!(
        written.len(),
        73 + 49 + 1 + 1,
        "generation 2: 48 keys, chunks 0..=48, its marker and its differential"
    );
    let item = w.item();
    assert_eq!((item.snap_gen, item.stale), (Some(2), None));
    assert_eq!(
        w.progress.ledger(&w.at),
        [format!("{root}{}", marker_key(head))],
        "only generation 2's marker"
    );
    assert_eq!(
        w.body("differential"),
        differential(w.kv.head(w.db).await.expect("head"))
    );
}

/// What a fresh restore (denokv's first sync) makes of the bucket: every snapshot
/// range, then every log entry in name order up to the differential.
fn restore(w: &World) -> BTreeMap<String, String> {
    let root = w.root();
    let objects = w.bucket.objects();
    let differential = hex::decode(w.body("differential")).expect("hex");
    let mut state = BTreeMap::new();
    for (key, body) in &objects {
        if key.starts_with(&format!("{root}snapshots/")) {
            for (k, v, _) in decode_snapshot(body) {
                state.insert(k, v);
            }
        }
    }
    for (key, body) in &objects {
        if !key.starts_with(&format!("{root}logs/")) {
            continue;
        }
        for e in decode_log(body).entries {
            if e.versionstamp[..10] > differential[..] {
                break;
            }
            let k = String::from_utf8_lossy(&e.key).into_owned();
            if e.kind == BackupKvMutationKind::MkClear as i32 {
                state.remove(&k);
            } else {
                state.insert(k, String::from_utf8_lossy(&e.value).into_owned());
            }
        }
    }
    state
}

#[tokio::test]
async fn a_commit_missing_a_part_of_its_change_record_is_a_hole_and_re_snapshots() {
    // Issue 11, item 6: TTL expires the parts of a large change record one by one;
    // a commit missing one is a hole, never shipped in part.
    let w = world();
    w.active(&[("a", Some("1")), ("b", Some("1"))]).await;
    w.commit(&[("a", Some("2"))]);
    let partial = w.commit(&[("b", Some("3")), ("c", Some("3")), ("d", Some("3"))]);
    w.commit(&[("e", Some("4"))]);
    w.kv.lose_part(w.db, partial, 1); // c's part, in the middle

    let mut problems = Vec::new();
    for _ in 0..3 {
        let report = w.pass().await;
        problems.extend(report.problem);
        if w.status() == BackupStatus::Active && w.item().snap_gen == Some(2) {
            break;
        }
    }
    assert_eq!(problems, [RESNAPSHOT]);
    let item = w.item();
    assert_eq!(item.record.status, BackupStatus::Active);
    assert_eq!((item.snap_gen, item.stale), (Some(2), None));
    assert_eq!(item.cursor, Some(partial + 1));

    // No log object holds any of the partial commit...
    for (key, body) in w.bucket.objects() {
        if is_log(&key) {
            for e in decode_log(&body).entries {
                assert_ne!(e.versionstamp[..8], partial.to_be_bytes(), "{key}");
            }
        }
    }
    // ...and a fresh restore is the database.
    let live =
        w.kv.live_entries_page(w.db, None, 1000)
            .await
            .expect("live");
    let live: BTreeMap<String, String> = live
        .entries
        .iter()
        .map(|e| {
            (
                String::from_utf8_lossy(&e.key).into_owned(),
                String::from_utf8_lossy(&e.value).into_owned(),
            )
        })
        .collect();
    assert_eq!(restore(&w), live);
    assert_eq!(live.get("c").map(String::as_str), Some("3"));
}

// ---------------------------------------------------------------------------------
// Issue 11, item 3: a backup deleted, then enabled again into the same root (what
// the announcement tells tenants to do once they fixed their credentials).

impl World {
    /// The API enables a new backup of the database into `prefix` (the same
    /// bucket and endpoint).
    fn enable_again(&self, prefix: &str) -> Locator {
        self.progress
            .add(backup_record(self.db, self.at.organization_id, prefix))
    }

    /// A pass over another backup of the database, with time enough.
    async fn pass_over(&self, at: &Locator) -> Report {
        let deadline = Instant::now() + Duration::from_secs(30);
        match self.engine.sync(at, deadline).await {
            Ok(report) => report,
            Err(e) => panic!("the pass failed: {e}"),
        }
    }

    /// Puts made since `since` puts, as full keys.
    fn written_since(&self, since: usize) -> Vec<String> {
        self.bucket.keys()[since..].to_vec()
    }

    /// The database's live keys and values.
    async fn live(&self) -> BTreeMap<String, String> {
        let page = self.kv.live_entries_page(self.db, None, 1000).await;
        page.expect("live entries")
            .entries
            .iter()
            .map(|e| {
                (
                    String::from_utf8_lossy(&e.key).into_owned(),
                    String::from_utf8_lossy(&e.value).into_owned(),
                )
            })
            .collect()
    }

    /// What the backup at `at` has under the root, as full keys: its ledgered
    /// log objects and its snapshot chunks `0..=snapSeq` of its generation (the
    /// next index too: a step may have been putting it).
    fn objects_of(&self, at: &Locator) -> (Vec<String>, Vec<String>) {
        let item = self.progress.item(at).expect("the backup exists");
        let generation = item.snap_gen.expect("a generation");
        let chunks = (0..=item.snap_seq.expect("a chunk index"))
            .map(|seq| format!("{}{}", self.root(), snapshot_key(generation, seq)))
            .collect();
        (self.progress.ledger(at), chunks)
    }
}

/// The settling time a re-enabled backup waits after the delete, as passed.
fn settled(w: &World) {
    w.progress
        .backdate_retired(w.db, EngineConfig::default().lease_margin);
}

/// Checks that `written` begins with every one of `old` emptied, each once, and
/// holds nothing else of them; then chunks of `generation` only, and the
/// differential last.
fn check_emptied_first(w: &World, written: &[String], old: &[String], generation: u64) {
    let objects = w.bucket.objects();
    let (emptied, rest) = written.split_at(old.len().min(written.len()));
    let mut emptied = emptied.to_vec();
    emptied.sort();
    let mut expected = old.to_vec();
    expected.sort();
    assert_eq!(emptied, expected, "the old objects first: {written:?}");
    for key in old {
        if is_log(key) {
            assert!(decode_log(&objects[key]).entries.is_empty(), "{key}");
        } else {
            assert!(decode_snapshot(&objects[key]).is_empty(), "{key}");
        }
        assert!(
            !rest.contains(key),
            "{key} written again after the emptying"
        );
    }
    let chunks = format!("{}snapshots/", w.root());
    let new_chunks = format!("{chunks}0001_{generation:016x}_");
    for key in rest.iter().filter(|k| k.starts_with(&chunks)) {
        assert!(
            key.starts_with(&new_chunks),
            "{key}: not generation {generation}"
        );
    }
    assert_eq!(rest.last(), Some(&format!("{}differential", w.root())));
}

#[tokio::test]
async fn a_backup_enabled_again_into_the_same_root_empties_the_deleted_ones_objects_first() {
    let w = world();
    w.active(&[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))])
        .await;
    w.commit(&[("a", Some("2"))]);
    w.commit(&[("d", Some("2"))]);
    w.pass().await;
    let (logs, chunks) = w.objects_of(&w.at);
    assert_eq!(logs.len(), 2, "the activation's marker and one object");
    assert_eq!(chunks.len(), 3, "chunks [a b] and [c], and the next index");
    let old: Vec<String> = logs.iter().chain(&chunks).cloned().collect();

    w.progress.delete(&w.at);
    // The delete keeps the ledger and records what the backup left.
    let retired = w.progress.retired_roots(w.db);
    assert_eq!(retired.len(), 1, "{retired:?}");
    let (_, root) = retired[0];
    assert_eq!(root.backup_id, w.at.backup_id);
    assert_eq!(
        (root.generation, root.chunks, root.next_generation),
        (1, 2, 2)
    );
    assert_eq!(w.progress.ledger_of(w.at.backup_id), logs);

    // While no backup runs: a is deleted, b changed.
    w.commit(&[("a", None)]);
    w.commit(&[("b", Some("3"))]);
    let again = w.enable_again(PREFIX);
    settled(&w);
    let since = w.bucket.keys().len();
    let report = w.pass_over(&again).await;

    assert!(report.activated, "{report:?}");
    // A fresh restore (every chunk, every log from the first) is the database:
    // without the emptying the old log would bring a back.
    let live = w.live().await;
    assert_eq!(restore(&w), live);
    assert!(!live.contains_key("a"));
    check_emptied_first(&w, &w.written_since(since), &old, 2);
    // The retired root and the deleted backup's ledger are gone; the new
    // backup's ledger holds its own marker only.
    assert!(w.progress.retired_roots(w.db).is_empty());
    assert!(w.progress.ledger_of(w.at.backup_id).is_empty());
    let item = w.progress.item(&again).expect("the new backup");
    assert_eq!((item.snap_gen, item.stale), (Some(2), None));
    assert_eq!(item.record.status, BackupStatus::Active);
    assert_eq!(w.progress.ledger(&again).len(), 1);
}

#[tokio::test]
async fn a_backup_enabled_into_another_root_leaves_the_retired_one_for_later() {
    let w = world();
    w.active(&[("a", Some("1")), ("b", Some("1"))]).await;
    w.commit(&[("a", Some("2"))]);
    w.pass().await;
    let (logs, chunks) = w.objects_of(&w.at);
    let old: Vec<String> = logs.iter().chain(&chunks).cloned().collect();
    w.progress.delete(&w.at);
    w.commit(&[("a", None)]);

    // Into another prefix: nothing under the first root is touched.
    let moved = w.enable_again("moved/");
    settled(&w);
    let since = w.bucket.keys().len();
    let report = w.pass_over(&moved).await;
    assert!(report.activated, "{report:?}");
    let moved_root = format::root("moved/", w.db);
    for key in w.written_since(since) {
        assert!(key.starts_with(&moved_root), "{key} outside {moved_root}");
    }
    let item = w.progress.item(&moved).expect("the moved backup");
    assert_eq!((item.snap_gen, item.stale), (Some(1), None));
    let retired = w.progress.retired_roots(w.db);
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0].1.backup_id, w.at.backup_id);
    assert_eq!(w.progress.ledger_of(w.at.backup_id), logs);

    // Deleted in turn: two retired roots. Back into the first: its objects are
    // emptied then, and its restore is exact.
    w.progress.delete(&moved);
    assert_eq!(w.progress.retired_roots(w.db).len(), 2);
    w.commit(&[("b", Some("3"))]);
    let back = w.enable_again(PREFIX);
    settled(&w);
    let since = w.bucket.keys().len();
    assert!(w.pass_over(&back).await.activated);
    check_emptied_first(&w, &w.written_since(since), &old, 2);
    assert_eq!(restore(&w), w.live().await);
    let retired = w.progress.retired_roots(w.db);
    assert_eq!(retired.len(), 1, "the moved root's stays: {retired:?}");
    assert_eq!(retired[0].1.backup_id, moved.backup_id);
}

#[tokio::test]
async fn a_backup_enabled_again_waits_for_the_deleted_ones_last_puts() {
    let w = world();
    w.active(&[("a", Some("1"))]).await;
    w.progress.delete(&w.at);
    let again = w.enable_again(PREFIX);
    let since = w.bucket.attempts();

    // Just deleted: a pass over it may still be putting an object.
    let report = w.pass_over(&again).await;
    assert_eq!(report, Report::default());
    assert_eq!(w.bucket.attempts(), since);
    let item = w.progress.item(&again).expect("the new backup");
    assert_eq!((item.cursor, item.stale), (None, None));

    settled(&w);
    assert!(w.pass_over(&again).await.activated);
    assert!(w.progress.retired_roots(w.db).is_empty());
}

#[tokio::test]
async fn a_backup_deleted_while_emptying_leaves_the_rest_to_the_next_one() {
    let w = world();
    w.active(&[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))])
        .await;
    w.commit(&[("a", Some("2"))]);
    w.pass().await;
    let (logs, chunks) = w.objects_of(&w.at);
    let old: Vec<String> = logs.iter().chain(&chunks).cloned().collect();
    w.progress.delete(&w.at);
    w.commit(&[("a", None)]);

    // The second backup empties the logs, then its store refuses the chunks for a
    // while: it is deleted before it wrote anything of its own.
    let second = w.enable_again(PREFIX);
    settled(&w);
    let retired = w.progress.retired_roots(w.db);
    w.bucket.fail_puts(
        |k| k.contains("/snapshots/"),
        BucketFault::Transient(OUTAGE.into()),
    );
    let since = w.bucket.keys().len();
    w.pass_over(&second).await;
    let item = w.progress.item(&second).expect("the second backup");
    let stale = item.stale.expect("still emptying");
    assert_eq!(stale.ledger, Some(w.at.backup_id));
    assert_eq!(w.written_since(since).len(), logs.len());
    w.progress.delete(&second);
    assert_eq!(
        w.progress.retired_roots(w.db),
        retired,
        "the first backup's retired root stays; the second left nothing"
    );

    // A third empties what is left (the chunks), and restores exactly.
    w.bucket.heal();
    w.commit(&[("b", Some("3"))]);
    let third = w.enable_again(PREFIX);
    let since = w.bucket.keys().len();
    assert!(w.pass_over(&third).await.activated);
    check_emptied_first(&w, &w.written_since(since), &chunks, 2);
    assert_eq!(restore(&w), w.live().await);
    assert!(w.progress.retired_roots(w.db).is_empty());
    let every = w.bucket.objects();
    for key in &old {
        let empty = if is_log(key) {
            decode_log(&every[key]).entries.is_empty()
        } else {
            decode_snapshot(&every[key]).is_empty()
        };
        assert!(empty, "{key}");
    }
}

#[tokio::test]
async fn a_backup_deleted_during_its_own_re_snapshot_retires_the_generation_left_to_empty() {
    let w = fell_behind().await;
    w.kv.expire_through(w.db, 3);
    w.bucket.fail_puts(
        |k| k.contains("/snapshots/"),
        BucketFault::Transient(OUTAGE.into()),
    );
    w.pass().await; // generation 2 begins
    w.pass().await; // generation 1's logs are emptied, its chunks cannot be
    let item = w.item();
    let stale = item.stale.expect("generation 1 left to empty");
    assert_eq!((stale.generation, stale.chunks, stale.ledger), (1, 2, None));
    assert_eq!(item.snap_gen, Some(2));
    let chunks: Vec<String> = (0..=2)
        .map(|seq| format!("{}{}", w.root(), snapshot_key(1, seq)))
        .collect();
    w.progress.delete(&w.at);
    let retired = w.progress.retired_roots(w.db);
    assert_eq!(retired.len(), 1);
    let (_, root) = retired[0];
    assert_eq!(
        (root.generation, root.chunks, root.next_generation),
        (1, 2, 3)
    );

    w.bucket.heal();
    w.commit(&[("c", None)]);
    let again = w.enable_again(PREFIX);
    settled(&w);
    let since = w.bucket.keys().len();
    assert!(w.pass_over(&again).await.activated);
    check_emptied_first(&w, &w.written_since(since), &chunks, 3);
    assert_eq!(restore(&w), w.live().await);
    assert!(w.progress.retired_roots(w.db).is_empty());
}

#[tokio::test(start_paused = true)]
async fn emptying_a_deleted_backups_objects_is_resumed_over_passes_within_their_deadline() {
    // As `a_large_earlier_generation_is_emptied_...`: each put takes `PUT` of
    // virtual time, and a pass can start 4 puts.
    const PUT: Duration = Duration::from_secs(1);
    let w = world_with(EngineConfig {
        snapshot_items_per_chunk: 1,
        max_commits_per_object: 1,
        ..EngineConfig::default()
    });
    let keys: Vec<String> = (0..30).map(|i| format!("k{i:02}")).collect();
    let ops: Vec<Op<'_>> = keys.iter().map(|k| (k.as_str(), Some("1"))).collect();
    w.active(&ops).await;
    for (i, key) in keys.iter().take(15).enumerate() {
        let value = i.to_string();
        w.commit(&[(key.as_str(), Some(value.as_str()))]);
    }
    w.pass().await;
    let (logs, chunks) = w.objects_of(&w.at);
    assert_eq!((logs.len(), chunks.len()), (16, 32));
    let old: Vec<String> = logs.iter().chain(&chunks).cloned().collect();
    w.progress.delete(&w.at);
    w.commit(&[("k00", None)]);
    w.commit(&[("k01", Some("changed"))]);
    let again = w.enable_again(PREFIX);
    settled(&w);
    let since = w.bucket.keys().len();

    w.bucket.slow_puts(PUT);
    let mut passes = 0;
    loop {
        passes += 1;
        assert!(passes <= 100, "not active after 100 passes");
        let before = w.bucket.keys().len();
        let deadline = tokio::time::Instant::now().into_std() + MIN_STEP_TIME + 3 * PUT;
        if let Err(e) = w.engine.sync(&again, deadline).await {
            panic!("pass {passes} failed: {e}");
        }
        let written = w.written_since(before);
        assert!(!written.is_empty(), "pass {passes} made no progress");
        let emptied = written.iter().filter(|k| old.contains(k)).count();
        assert!(emptied <= 4, "pass {passes} emptied {emptied} objects");
        let item = w.progress.item(&again).expect("the new backup");
        if item.record.status == BackupStatus::Active {
            break;
        }
    }
    assert!(passes > 12, "48 objects at most 4 a pass: {passes} passes");
    check_emptied_first(&w, &w.written_since(since), &old, 2);
    assert_eq!(restore(&w), w.live().await);
    assert!(w.progress.retired_roots(w.db).is_empty());
    assert!(w.progress.ledger_of(w.at.backup_id).is_empty());
}

#[tokio::test]
async fn a_pass_counts_the_bytes_it_wrote_in_the_databases_usage() {
    use subkv_core::usage::{MemoryUsage, UsageStore};
    let usage = Arc::new(MemoryUsage::default());
    let mut w = world();
    w.engine = Engine::new(
        w.kv.clone(),
        w.progress.clone(),
        Arc::new(w.bucket.clone()),
        EngineConfig {
            snapshot_items_per_chunk: 2,
            hot_pass: Duration::from_millis(200),
            ..EngineConfig::default()
        },
    )
    .with_usage(usage.clone());
    w.active(&[("a", Some("0"))]).await;
    let before: u64 = w.bucket.objects().values().map(|b| b.len() as u64).sum();
    w.commit(&[("a", Some("1")), ("b", Some("2"))]);
    let report = w.pass().await;
    let after: u64 = w.bucket.objects().values().map(|b| b.len() as u64).sum();
    assert_eq!(report.objects_written, 1);
    assert_eq!(report.bytes_written, after - before);
    assert!(report.bytes_written > 0);
    // Every pass's bytes, the activation's included, are in the database's usage.
    let hour = subkv_core::usage::this_hour();
    let rows = usage
        .rows(w.at.organization_id, hour, hour + Duration::from_secs(3600))
        .await
        .unwrap();
    let counted: u64 = rows.iter().map(|r| r.counts.backup_bytes).sum();
    assert_eq!(counted, after);
    assert!(rows.iter().all(|r| r.database_id == w.db));
}
