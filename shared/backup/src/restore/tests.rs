//! The restore against [`MemoryBucket`], with objects made by the real format code
//! (`subkv_kv::backup_format`) and, for Deno Deploy's shape, by hand with
//! `denokv_proto`. A model history says what each point's state must be.

use super::*;
use crate::fakes::MemoryBucket;
use crate::format::{self, versionstamp12, Commit, COMMIT_END};
use denokv_proto::backup::{
    BackupKvMutationKind, BackupKvPair, BackupMutationRange, BackupReplicationLogEntry,
    BackupSnapshotRange,
};
use prost::Message;
use std::collections::BTreeMap;
use subkv_kv::model::{versionstamp, Entry};
use uuid::Uuid;

pub(super) const DB: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
pub(super) const PREFIX: &str = "tenant/";
/// "Now" for the plans: deadlines at or before it are expired.
pub(super) const NOW: i64 = 5_000_000;

pub(super) fn root() -> String {
    format::root(PREFIX, DB)
}

/// A mutation of the model history.
#[derive(Clone, Debug)]
pub(super) enum Mut {
    Set(&'static str, &'static str, Option<i64>),
    Delete(&'static str),
}

pub(super) fn key(k: &str) -> Vec<u8> {
    let mut out = vec![2];
    out.extend_from_slice(k.as_bytes());
    out.push(0);
    out
}

/// A commit's time in the model.
pub(super) fn time_of(version: u64) -> u64 {
    1_000_000 + version * 1_000
}

pub(super) fn commit(version: u64, muts: &[Mut]) -> Commit {
    let n = muts.len();
    let entries = muts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let index = if i + 1 == n { COMMIT_END } else { i as u16 };
            let vs = versionstamp12(version, index).to_vec();
            match m {
                Mut::Set(k, v, exp) => BackupReplicationLogEntry {
                    versionstamp: vs,
                    kind: BackupKvMutationKind::MkSet as i32,
                    key: key(k),
                    value: v.as_bytes().to_vec(),
                    value_encoding: 3,
                    expire_at_ms: exp.map_or(0, |at| at as u64),
                },
                Mut::Delete(k) => BackupReplicationLogEntry {
                    versionstamp: vs,
                    kind: BackupKvMutationKind::MkClear as i32,
                    key: key(k),
                    value: vec![],
                    value_encoding: 0,
                    expire_at_ms: 0,
                },
            }
        })
        .collect();
    Commit {
        version,
        timestamp_ms: time_of(version),
        entries,
    }
}

/// The database as the model says: key → (value, versionstamp, deadline).
pub(super) type State = BTreeMap<Vec<u8>, (Vec<u8>, [u8; 10], Option<i64>)>;

/// A history: commits 1..=N, each with its mutations (empty: checks only).
pub(super) struct History {
    pub commits: Vec<(u64, Vec<Mut>)>,
}

impl History {
    /// The state right after `version`, as the restore must produce it (keys
    /// expired at [`NOW`] absent).
    pub fn state_at(&self, version: u64) -> State {
        let mut state = State::new();
        for (v, muts) in self.commits.iter().filter(|(v, _)| *v <= version) {
            for m in muts {
                match m {
                    Mut::Set(k, val, exp) => {
                        state.insert(key(k), (val.as_bytes().to_vec(), versionstamp(*v), *exp));
                    }
                    Mut::Delete(k) => {
                        state.remove(&key(k));
                    }
                }
            }
        }
        state.retain(|_, (_, _, exp)| exp.is_none_or(|at| at > NOW));
        state
    }

    /// The snapshot entries at `version`, unexpired filter aside (as the engine
    /// takes live entries; expiry decided by the restore).
    pub fn entries_at(&self, version: u64) -> Vec<Entry> {
        let mut state: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        for (v, muts) in self.commits.iter().filter(|(v, _)| *v <= version) {
            for m in muts {
                match m {
                    Mut::Set(k, val, exp) => {
                        state.insert(
                            key(k),
                            Entry {
                                key: key(k),
                                value: val.as_bytes().to_vec(),
                                encoding: 3,
                                version: *v,
                                seq: 0,
                                expire_at_ms: *exp,
                            },
                        );
                    }
                    Mut::Delete(k) => {
                        state.remove(&key(k));
                    }
                }
            }
        }
        state.into_values().collect()
    }

    pub fn commits(&self, from: u64, to: u64) -> Vec<Commit> {
        self.commits
            .iter()
            .filter(|(v, _)| (from..=to).contains(v))
            .map(|(v, muts)| commit(*v, muts))
            .collect()
    }
}

/// The history of the standard backup: commits 1..=10 before it began (only in
/// the snapshot), 11..=22 in its logs; commit 19 has no mutation (checks only).
pub(super) fn history() -> History {
    use Mut::*;
    let mut commits: Vec<(u64, Vec<Mut>)> = vec![
        (1, vec![Set("a", "a1", None), Set("b", "b1", None)]),
        (2, vec![Set("c", "c2", None)]),
        (3, vec![Set("d", "d3", Some(NOW - 1))]), // expired by restore time
        (4, vec![Set("e", "e4", Some(NOW + 1_000))]),
        (5, vec![Set("f", "f5", None), Set("g", "g5", None)]),
        (6, vec![Set("h", "h6", None)]),
        (7, vec![Set("i", "i7", None)]),
        (8, vec![Set("j", "j8", None), Delete("c")]),
        (9, vec![Set("k", "k9", None)]),
        (10, vec![Set("l", "l10", None)]),
    ];
    commits.extend([
        (11, vec![Set("a", "a11", None)]),
        (12, vec![Delete("f"), Set("m", "m12", None)]),
        (
            13,
            vec![Set("b", "b13", Some(NOW + 5)), Set("n", "n13", None)],
        ),
        (14, vec![Delete("a")]),
        (
            15,
            vec![Set("a", "a15", None), Set("o", "o15", Some(NOW - 5))],
        ),
        (16, vec![Set("g", "g16", None)]),
        (
            17,
            vec![Delete("b"), Set("p", "p17", None), Set("q", "q17", None)],
        ),
        (18, vec![Set("h", "h18", None)]),
        (19, vec![]),
        (20, vec![Set("c", "c20", None), Delete("h")]),
        (21, vec![Set("r", "r21", None)]),
        (22, vec![Set("a", "a22", None)]),
    ]);
    History { commits }
}

pub(super) fn log(commits: Vec<Commit>) -> format::Object {
    format::log_object(PREFIX, DB, commits).unwrap().unwrap()
}

/// The standard backup: the snapshot read at 13 (a scan that overlapped commits
/// 11..=13) in three chunks, the differential at 15, logs from 11 through 22 in
/// objects [11,12] [13..15] [16,17] [16..18] (a retry that reached further,
/// overlapping) [19..22] — commit 19 has no entry, so that object's first is 20.
pub(super) fn standard() -> (MemoryBucket, History) {
    let history = history();
    let bucket = MemoryBucket::new();
    let entries = history.entries_at(13);
    for (seq, chunk) in entries.chunks(5).enumerate() {
        bucket.put_object(format::snapshot_object(PREFIX, DB, 1, seq as u64, chunk).unwrap());
    }
    for (from, to) in [(11, 12), (13, 15), (16, 17), (16, 18), (19, 22)] {
        bucket.put_object(log(history.commits(from, to)));
    }
    bucket.put_object(format::differential_object(PREFIX, DB, 15));
    (bucket, history)
}

/// Runs a restore to the end, applying each step to a map; returns the state and
/// the number of steps.
pub(super) async fn restore(
    bucket: &MemoryBucket,
    plan: &Plan,
    limits: StepLimits,
) -> (State, usize) {
    let mut state = State::new();
    let mut cursor = Cursor::start();
    let mut steps = 0;
    while !cursor.is_done() {
        let s = step(bucket, plan, &cursor, limits).await.unwrap();
        apply(&mut state, &s.writes);
        cursor = s.next;
        steps += 1;
        assert!(steps < 10_000, "no progress");
    }
    (state, steps)
}

pub(super) fn apply(state: &mut State, writes: &[Write]) {
    for w in writes {
        match w {
            Write::Put(r) => {
                state.insert(
                    r.key.clone(),
                    (r.value.clone(), r.versionstamp, r.expire_at_ms),
                );
            }
            Write::Delete { key } => {
                state.remove(key);
            }
        }
    }
}

fn vs(version: u64) -> [u8; 10] {
    versionstamp(version)
}

#[tokio::test]
async fn every_point_restores_the_model_state() {
    let (bucket, history) = standard();
    for version in [15, 16, 17, 18, 20, 21, 22] {
        let plan = super::plan(&bucket, &root(), Target::Versionstamp(vs(version)), NOW)
            .await
            .unwrap();
        assert_eq!(plan.point.versionstamp, vs(version));
        assert_eq!(plan.first.versionstamp, vs(15));
        assert_eq!(plan.newest.versionstamp, vs(22));
        assert_eq!(plan.snapshot_chunks, 3);
        assert_eq!(plan.log_objects, 5);
        for limits in [
            StepLimits::default(),
            StepLimits {
                max_writes: 1,
                max_bytes: 1 << 20,
            },
            StepLimits {
                max_writes: 100,
                max_bytes: 1,
            },
        ] {
            let (state, _) = restore(&bucket, &plan, limits).await;
            assert_eq!(state, history.state_at(version), "at {version}, {limits:?}");
        }
    }
}

#[tokio::test]
async fn latest_is_the_newest_commit_and_keeps_versionstamps_and_deadlines() {
    let (bucket, history) = standard();
    let plan = super::plan(&bucket, &root(), Target::Latest, NOW)
        .await
        .unwrap();
    assert_eq!(plan.point.versionstamp, vs(22));
    assert_eq!(plan.point.time_ms, Some(time_of(22)));
    assert_eq!(plan.first.time_ms, Some(time_of(15)));
    let (state, _) = restore(&bucket, &plan, StepLimits::default()).await;
    assert_eq!(state, history.state_at(22));
    // Original versionstamps: a key from before the backup and one from the logs.
    assert_eq!(state[&key("i")].1, vs(7));
    assert_eq!(state[&key("a")].1, vs(22));
    // Deadlines kept; expired keys absent (d from the snapshot, o from a log).
    assert_eq!(state[&key("e")].2, Some(NOW + 1_000));
    assert!(!state.contains_key(&key("d")));
    assert!(!state.contains_key(&key("o")));
}

#[tokio::test]
async fn resuming_after_any_step_gives_the_identical_result() {
    let (bucket, history) = standard();
    let plan = super::plan(&bucket, &root(), Target::Versionstamp(vs(20)), NOW)
        .await
        .unwrap();
    let limits = StepLimits {
        max_writes: 2,
        max_bytes: 1 << 20,
    };
    let (expected, steps) = restore(&bucket, &plan, limits).await;
    assert_eq!(expected, history.state_at(20));
    assert!(steps > 10, "{steps} steps");
    // A crash during step `crash`: part of its writes land, its cursor is not
    // stored; the function starts again from the last stored cursor.
    for crash in 0..steps {
        let mut state = State::new();
        let mut cursor = Cursor::start();
        let mut i = 0;
        while !cursor.is_done() {
            let s = step(&bucket, &plan, &cursor, limits).await.unwrap();
            if i == crash {
                apply(&mut state, &s.writes[..s.writes.len() / 2]);
                let again = step(&bucket, &plan, &cursor, limits).await.unwrap();
                assert_eq!(again, s, "a step is a function of its cursor");
                // The cursor survives a round trip through storage.
                let stored: Cursor =
                    serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
                assert_eq!(stored, cursor);
            } else {
                apply(&mut state, &s.writes);
                cursor = s.next;
            }
            i += 1;
        }
        assert_eq!(state, expected, "crash in step {crash}");
    }
    // Every write applied twice changes nothing either.
    let mut state = State::new();
    let mut cursor = Cursor::start();
    while !cursor.is_done() {
        let s = step(&bucket, &plan, &cursor, limits).await.unwrap();
        apply(&mut state, &s.writes);
        apply(&mut state, &s.writes);
        cursor = s.next;
    }
    assert_eq!(state, expected);
}

#[tokio::test]
async fn a_plan_survives_storage() {
    let (bucket, _) = standard();
    let plan = super::plan(&bucket, &root(), Target::Timestamp(time_of(17)), NOW)
        .await
        .unwrap();
    let stored: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(stored, plan);
}

#[tokio::test]
async fn duplicate_objects_are_skipped_without_being_fetched() {
    let (bucket, history) = standard();
    // A retry that reached exactly as far as an earlier object, sorting after it.
    bucket.put_object(log(history.commits(16, 17)));
    // One that sorts before [13..15] (same first, shorter), and one after it that
    // holds nothing new (a later first, the same last).
    bucket.put_object(log(history.commits(13, 14)));
    let wholly_seen = log(history.commits(14, 15));
    bucket.put_object(wholly_seen.clone());
    let plan = super::plan(&bucket, &root(), Target::Latest, NOW)
        .await
        .unwrap();
    bucket.reset_counts();
    let (state, _) = restore(&bucket, &plan, StepLimits::default()).await;
    assert_eq!(state, history.state_at(22));
    assert_eq!(plan.log_objects, 7);
    // [13,14] is read (it sorts before [13..15]); [14,15] is not fetched at all.
    let gets = bucket.gets();
    assert_eq!(gets.iter().filter(|k| k.contains("/logs/")).count(), 6);
    assert!(!gets.contains(&wholly_seen.key));
}

#[tokio::test]
async fn a_target_outside_the_backup_names_the_range_it_holds() {
    let (bucket, _) = standard();
    for (target, why) in [
        (
            Target::Versionstamp(vs(14)),
            "before the first restore point",
        ),
        (
            Target::Versionstamp(vs(11)),
            "before the first restore point",
        ),
        (Target::Versionstamp(vs(23)), "after the newest"),
        (Target::Versionstamp(vs(19)), "no commit ends there"),
        (
            Target::Versionstamp({
                let mut v = vs(16);
                v[9] = 1;
                v
            }),
            "no commit ends there",
        ),
        (
            Target::Timestamp(time_of(15) - 1),
            "before the first restore point's time",
        ),
    ] {
        let err = super::plan(&bucket, &root(), target, NOW)
            .await
            .unwrap_err();
        let RestoreError::NotInBackup(e) = &err else {
            panic!("{target}: {err:?}");
        };
        assert_eq!(e.first.versionstamp, vs(15));
        assert_eq!(e.newest.versionstamp, vs(22));
        let message = err.to_string();
        assert!(message.contains(why), "{message}");
        assert!(
            message.contains("0000000000000000000f0000")
                || message.contains("000000000000000f0000"),
            "{message}"
        );
    }
    let message = super::plan(&bucket, &root(), Target::Versionstamp(vs(23)), NOW)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        message,
        format!(
            "versionstamp 00000000000000170000 is not in this backup: it is after the newest \
             restore point; it holds restore points from 000000000000000f0000 ({}) to \
             00000000000000160000 ({})",
            time(time_of(15)),
            time(time_of(22))
        )
    );
}

#[tokio::test]
async fn a_time_resolves_to_the_last_point_at_or_before_it() {
    let (bucket, history) = standard();
    // Object times: [13..15] → 15, [16,17] → 17, [16..18] → 18, [19..22] → 22.
    for (at, expected) in [
        (time_of(15), 15),
        (time_of(16), 15),
        (time_of(17), 17),
        (time_of(18) - 1, 17),
        (time_of(18), 18),
        (time_of(21), 18),
        (time_of(22), 22),
        (time_of(99), 22),
    ] {
        let plan = super::plan(&bucket, &root(), Target::Timestamp(at), NOW)
            .await
            .unwrap();
        assert_eq!(plan.point.versionstamp, vs(expected), "at {at}");
        let (state, _) = restore(&bucket, &plan, StepLimits::default()).await;
        assert_eq!(state, history.state_at(expected));
    }
}

#[tokio::test]
async fn a_time_search_reads_few_objects_of_a_long_backup() {
    // 2000 commits, one log object each: a binary search, not a scan of bodies.
    let bucket = MemoryBucket::new();
    let mut commits = Vec::new();
    for v in 1..=2000u64 {
        commits.push((v, vec![Mut::Set("k", "v", None)]));
    }
    let history = History { commits };
    bucket.put_object(format::snapshot_object(PREFIX, DB, 1, 0, &[]).unwrap());
    for v in 1..=2000u64 {
        bucket.put_object(log(history.commits(v, v)));
    }
    bucket.put_object(format::differential_object(PREFIX, DB, 1));
    bucket.reset_counts();
    let plan = super::plan(&bucket, &root(), Target::Timestamp(time_of(1234) + 5), NOW)
        .await
        .unwrap();
    assert_eq!(plan.point.versionstamp, vs(1234));
    assert_eq!(plan.log_objects, 2000);
    let gets = bucket.gets().len();
    assert!(gets < 30, "{gets} objects read");
}

fn layout(err: RestoreError) -> LayoutError {
    match err {
        RestoreError::Layout(e) => e,
        other => panic!("{other:?}"),
    }
}

/// Why planning the latest state of [`root`] fails: a layout error.
async fn layout_error(bucket: &MemoryBucket) -> LayoutError {
    layout(
        super::plan(bucket, &root(), Target::Latest, NOW)
            .await
            .unwrap_err(),
    )
}

#[tokio::test]
async fn a_bucket_not_in_the_format_is_refused_with_what_is_wrong() {
    // The wrong prefix: nothing there.
    let (bucket, _) = standard();
    let wrong = format::root("other/", DB);
    let err = super::plan(&bucket, &wrong, Target::Latest, NOW)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no backup at `other/"), "{err}");
    assert_eq!(layout(err), LayoutError::NoDifferential { root: wrong });
    // No differential (a backup still taking its first snapshot).
    let (bucket, _) = standard();
    bucket.remove(&format!("{}differential", root()));
    assert!(matches!(
        layout_error(&bucket).await,
        LayoutError::NoDifferential { .. }
    ));
    // A differential that is not 20 hex characters.
    for body in [
        &b"hello"[..],
        b"000000000000000f0000\n",
        b"000000000000000f000g",
        b"",
    ] {
        bucket.put(&format!("{}differential", root()), body.to_vec());
        let err = super::plan(&bucket, &root(), Target::Latest, NOW)
            .await
            .unwrap_err();
        assert!(
            matches!(layout(err.clone()), LayoutError::BadDifferential { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("20 hex characters"));
    }
    // Upper case is what the reader accepts too.
    bucket.put(
        &format!("{}differential", root()),
        b"000000000000000F0000".to_vec(),
    );
    assert!(super::plan(&bucket, &root(), Target::Latest, NOW)
        .await
        .is_ok());

    // Garbage under logs/ or snapshots/: the reader's listing would fail too.
    for garbage in [
        "logs/notes.txt",
        "logs/",
        "snapshots/0001_01_02.bin",
        "snapshots/x.bin",
    ] {
        let (bucket, _) = standard();
        let key = format!("{}{garbage}", root());
        bucket.put(&key, b"junk".to_vec());
        let err = super::plan(&bucket, &root(), Target::Latest, NOW)
            .await
            .unwrap_err();
        let LayoutError::BadName { key: named, .. } = layout(err.clone()) else {
            panic!("{err:?}");
        };
        assert_eq!(named, key);
        assert!(err
            .to_string()
            .contains("is not an object of the denokv backup format"));
    }
    // Other objects under the root are none of the reader's business, nor ours.
    let (bucket, history) = standard();
    bucket.put(&format!("{}README", root()), b"hi".to_vec());
    let plan_ok = super::plan(&bucket, &root(), Target::Latest, NOW)
        .await
        .unwrap();
    assert_eq!(
        restore(&bucket, &plan_ok, StepLimits::default()).await.0,
        history.state_at(22)
    );

    // Both formats in logs/.
    let (bucket, _) = standard();
    let zero = format!(
        "{}logs/0000000000000000_0000000000000001_{}_{}.bin",
        root(),
        hex::encode(versionstamp12(1, 0)),
        hex::encode(versionstamp12(1, COMMIT_END))
    );
    bucket.put(&zero, BackupMutationRange::default().encode_to_vec());
    assert!(matches!(
        layout_error(&bucket).await,
        LayoutError::MixedFormats { .. }
    ));
    // Log names out of versionstamp order.
    let (bucket, history) = standard();
    let mut late = log(history.commits(12, 12));
    late.key = late
        .key
        .replace("0001_000000000000000c", "0001_00000000000000ff");
    bucket.put_object(late);
    assert!(matches!(
        layout_error(&bucket).await,
        LayoutError::OutOfOrder { .. }
    ));
}

#[tokio::test]
async fn corrupt_bodies_fail_the_step_that_reads_them() {
    let (bucket, _) = standard();
    let plan = super::plan(&bucket, &root(), Target::Versionstamp(vs(17)), NOW)
        .await
        .unwrap();
    let chunk = format!(
        "{}snapshots/0001_0000000000000001_0000000000000001.bin",
        root()
    );
    bucket.put(&chunk, vec![0xff, 0xff, 0xff]);
    let err = run_to_error(&bucket, &plan).await;
    assert!(
        matches!(&err, RestoreError::Corrupt { key, .. } if *key == chunk),
        "{err:?}"
    );

    // Mismatched pairs, as the reader would panic on.
    let range = BackupSnapshotRange {
        data_list: vec![BackupKvPair {
            key: b"dk".to_vec(),
            value: vec![],
        }],
        metadata_list: vec![BackupKvPair {
            key: b"mj".to_vec(),
            value: vec![0; 19],
        }],
    };
    bucket.put(&chunk, range.encode_to_vec());
    let err = run_to_error(&bucket, &plan).await;
    assert!(err.to_string().contains("keys differ"), "{err}");

    // A log entry outside the range its name claims.
    let (bucket, history) = standard();
    let plan = plan_for(&bucket, Target::Versionstamp(vs(17))).await;
    let mut object = log(history.commits(16, 17));
    let mut range = BackupMutationRange::decode(object.body.as_slice()).unwrap();
    range.entries[0].versionstamp = versionstamp12(30, 0).to_vec();
    object.body = range.encode_to_vec();
    bucket.put_object(object);
    let err = run_to_error(&bucket, &plan).await;
    assert!(
        err.to_string()
            .contains("outside the range its name claims"),
        "{err}"
    );
}

async fn plan_for(bucket: &MemoryBucket, target: Target) -> Plan {
    plan(bucket, &root(), target, NOW).await.unwrap()
}

async fn run_to_error(bucket: &MemoryBucket, plan: &Plan) -> RestoreError {
    let mut cursor = Cursor::start();
    loop {
        match step(bucket, plan, &cursor, StepLimits::default()).await {
            Ok(s) if s.next.is_done() => panic!("no error"),
            Ok(s) => cursor = s.next,
            Err(e) => return e,
        }
    }
}

#[tokio::test]
async fn store_faults_are_told_apart() {
    let (bucket, _) = standard();
    bucket.fail_gets(
        |_| true,
        ReadFault::Denied("AccessDenied: no GetObject".into()),
    );
    let err = super::plan(&bucket, &root(), Target::Latest, NOW)
        .await
        .unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(
        err.to_string(),
        "reading the backup failed: AccessDenied: no GetObject (check the bucket, its region \
         and endpoint, and that the credentials allow s3:ListBucket and s3:GetObject: a \
         restore reads the bucket)"
    );

    let (bucket, _) = standard();
    let plan = plan_for(&bucket, Target::Latest).await;
    bucket.fail_gets(
        |k| k.contains("/logs/"),
        ReadFault::Transient("SlowDown".into()),
    );
    let err = run_to_error(&bucket, &plan).await;
    assert!(err.is_transient(), "{err:?}");
    bucket.heal();
    bucket.fail_lists(Some(ReadFault::Denied(
        "AccessDenied: no ListBucket".into(),
    )));
    assert!(matches!(
        step(&bucket, &plan, &Cursor::start(), StepLimits::default()).await,
        Err(RestoreError::Read(ReadFault::Denied(_)))
    ));
}

#[tokio::test]
async fn a_backup_that_changes_under_the_restore_fails_rather_than_guess() {
    let (bucket, history) = standard();
    let plan = plan_for(&bucket, Target::Versionstamp(vs(20))).await;
    bucket.remove(&log(history.commits(19, 22)).key);
    let err = run_to_error(&bucket, &plan).await;
    assert!(matches!(err, RestoreError::Changed(_)), "{err:?}");
    assert!(err.to_string().contains("00000000000000140000"), "{err}");

    let (bucket, history) = standard();
    let plan = plan_for(&bucket, Target::Latest).await;
    bucket.put_object(format::snapshot_object(PREFIX, DB, 2, 0, &history.entries_at(1)).unwrap());
    let err = run_to_error(&bucket, &plan).await;
    assert!(
        err.to_string()
            .contains("the snapshot has 4 ranges, the plan saw 3"),
        "{err}"
    );
}

#[tokio::test]
async fn a_backup_without_logs_is_its_snapshot_at_the_differential() {
    let history = history();
    let bucket = MemoryBucket::new();
    bucket.put_object(format::snapshot_object(PREFIX, DB, 1, 0, &history.entries_at(10)).unwrap());
    bucket.put_object(format::differential_object(PREFIX, DB, 10));
    let plan = plan_for(&bucket, Target::Latest).await;
    assert_eq!(
        plan.point,
        RestorePoint {
            versionstamp: vs(10),
            time_ms: None
        }
    );
    assert!(!plan.replay_logs);
    assert_eq!(
        restore(&bucket, &plan, StepLimits::default()).await.0,
        history.state_at(10)
    );
    assert_eq!(
        plan_for(&bucket, Target::Versionstamp(vs(10))).await.point,
        plan.point
    );
    let err = super::plan(&bucket, &root(), Target::Timestamp(1), NOW)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no logs, so no times"), "{err}");
    // An empty database: no snapshot range either.
    let empty = MemoryBucket::new();
    empty.put_object(format::differential_object(PREFIX, DB, 3));
    let plan = plan_for(&empty, Target::Latest).await;
    assert_eq!(
        restore(&empty, &plan, StepLimits::default()).await,
        (State::new(), 1)
    );
}

#[tokio::test]
async fn logs_ending_before_the_differential_name_their_last_commit() {
    // As the reader: it replays every log and stops at their last commit end.
    let history = history();
    let bucket = MemoryBucket::new();
    bucket.put_object(format::snapshot_object(PREFIX, DB, 1, 0, &history.entries_at(13)).unwrap());
    bucket.put_object(log(history.commits(11, 13)));
    bucket.put_object(format::differential_object(PREFIX, DB, 14));
    let plan = plan_for(&bucket, Target::Latest).await;
    assert_eq!(plan.point.versionstamp, vs(13));
    assert_eq!(plan.first, plan.newest);
    assert_eq!(
        restore(&bucket, &plan, StepLimits::default()).await.0,
        history.state_at(13)
    );
}

#[tokio::test]
async fn subkvs_differential_marker_is_a_point_that_changes_nothing() {
    // An idle database's (re-)snapshot: the engine writes a marker commit at the
    // differential (the deletion of the empty key).
    let history = history();
    let bucket = MemoryBucket::new();
    bucket.put_object(format::snapshot_object(PREFIX, DB, 1, 0, &history.entries_at(10)).unwrap());
    bucket.put_object(format::differential_marker(PREFIX, DB, 10, 77).unwrap());
    bucket.put_object(format::differential_object(PREFIX, DB, 10));
    let plan = plan_for(&bucket, Target::Latest).await;
    assert_eq!(
        plan.point,
        RestorePoint {
            versionstamp: vs(10),
            time_ms: Some(77)
        }
    );
    let (state, _) = restore(&bucket, &plan, StepLimits::default()).await;
    assert_eq!(state, history.state_at(10));
    assert!(!state.contains_key(&Vec::new()));
}

#[tokio::test]
async fn emptied_objects_of_an_earlier_generation_change_nothing() {
    // A re-snapshot empties the earlier generation's logs and chunks in place.
    let (bucket, history) = standard();
    let old = log(vec![commit(3, &[Mut::Set("zz", "old", None)])]);
    bucket.put(&old.key, format::emptied_log_body());
    bucket.put(
        &format::snapshot_object(PREFIX, DB, 0, 0, &[]).unwrap().key,
        BackupSnapshotRange::default().encode_to_vec(),
    );
    let plan = plan_for(&bucket, Target::Latest).await;
    assert_eq!(plan.snapshot_chunks, 4);
    assert_eq!(
        restore(&bucket, &plan, StepLimits::default()).await.0,
        history.state_at(22)
    );
}

/// A log object as Deno Deploy's writer names it (format 0, `<epoch>_<tsn>`),
/// with full 10-byte versionstamps (the last two bytes are not zero).
fn deploy_log(
    epoch: u64,
    tsn: u64,
    commits: &[([u8; 10], Vec<Mut>)],
    time: u64,
) -> (String, Vec<u8>) {
    let mut entries = Vec::new();
    for (vs, muts) in commits {
        let commit = commit(0, muts);
        for (i, mut e) in commit.entries.into_iter().enumerate() {
            let index = if i + 1 == muts.len() {
                COMMIT_END
            } else {
                i as u16
            };
            e.versionstamp = vs12(*vs, index).to_vec();
            e.value_encoding = 1;
            entries.push(e);
        }
    }
    let first = hex::encode(&entries[0].versionstamp);
    let last = hex::encode(&entries[entries.len() - 1].versionstamp);
    let key = format!("{}logs/{epoch:016x}_{tsn:016x}_{first}_{last}.bin", root());
    let body = BackupMutationRange {
        entries,
        timestamp_ms: time,
    }
    .encode_to_vec();
    (key, body)
}

fn fdb(version: u64, batch: u16) -> [u8; 10] {
    let mut vs = [0u8; 10];
    vs[..8].copy_from_slice(&version.to_be_bytes());
    vs[8..].copy_from_slice(&batch.to_be_bytes());
    vs
}

#[tokio::test]
async fn a_deno_deploy_shaped_bucket_restores_exactly() {
    use Mut::*;
    let bucket = MemoryBucket::new();
    // Snapshot in format 0 with versionstamps using all 10 bytes, expiry -1.
    let snap = |k: &str, v: &str, vs: [u8; 10]| {
        let mut meta = vs.to_vec();
        meta.push(1);
        meta.extend_from_slice(&(-1i64).to_le_bytes());
        (
            BackupKvPair {
                key: [b"d".as_slice(), &key(k)].concat(),
                value: v.as_bytes().to_vec(),
            },
            BackupKvPair {
                key: [b"m".as_slice(), &key(k)].concat(),
                value: meta,
            },
        )
    };
    let pairs = [snap("x", "x0", fdb(500, 3)), snap("y", "y0", fdb(501, 0))];
    bucket.put(
        &format!(
            "{}snapshots/0000000000000001_0000000000000000_0000000000000000.bin",
            root()
        ),
        BackupSnapshotRange {
            data_list: pairs.iter().map(|p| p.0.clone()).collect(),
            metadata_list: pairs.iter().map(|p| p.1.clone()).collect(),
        }
        .encode_to_vec(),
    );
    let (k1, b1) = deploy_log(
        1,
        7,
        &[
            (fdb(501, 0), vec![Set("y", "y0", None)]),
            (fdb(502, 9), vec![Set("x", "x1", None), Delete("y")]),
        ],
        50,
    );
    let (k2, b2) = deploy_log(
        1,
        8,
        &[(fdb(600, 1), vec![Set("z", "z1", Some(NOW + 9))])],
        60,
    );
    bucket.put(&k1, b1);
    bucket.put(&k2, b2);
    bucket.put(
        &format!("{}differential", root()),
        hex::encode(fdb(502, 0)).into_bytes(),
    );

    let plan = plan_for(&bucket, Target::Latest).await;
    assert_eq!(plan.first.versionstamp, fdb(502, 9));
    assert_eq!(plan.point.versionstamp, fdb(600, 1));
    let (state, _) = restore(&bucket, &plan, StepLimits::default()).await;
    let expected: State = [
        (key("x"), (b"x1".to_vec(), fdb(502, 9), None)),
        (key("z"), (b"z1".to_vec(), fdb(600, 1), Some(NOW + 9))),
    ]
    .into_iter()
    .collect();
    assert_eq!(state, expected);
    let at_first = plan_for(&bucket, Target::Timestamp(55)).await;
    assert_eq!(at_first.point.versionstamp, fdb(502, 9));
    let encodings = step(&bucket, &plan, &Cursor::start(), StepLimits::default())
        .await
        .unwrap();
    assert!(encodings
        .writes
        .iter()
        .all(|w| matches!(w, Write::Put(r) if r.encoding == 1)));
}

#[tokio::test]
async fn a_long_scan_is_resumable_and_a_large_snapshot_is_bounded_per_step() {
    // 5,000 keys in 5 chunks, 2,500 one-commit log objects: the scan in pages,
    // stored between them; each step at most the limits.
    let bucket = MemoryBucket::new();
    let keys: Vec<Entry> = (0..5_000u64)
        .map(|i| Entry {
            key: format!("k{i:05}").into_bytes(),
            value: vec![7; 10],
            encoding: 3,
            version: 1 + i % 7,
            seq: 0,
            expire_at_ms: None,
        })
        .collect();
    for (seq, chunk) in keys.chunks(1_000).enumerate() {
        bucket.put_object(format::snapshot_object(PREFIX, DB, 1, seq as u64, chunk).unwrap());
    }
    let mut commits = Vec::new();
    for v in 10..2_510u64 {
        commits.push((v, vec![Mut::Set("hot", "v", None)]));
    }
    let history = History { commits };
    for v in 10..2_510u64 {
        bucket.put_object(log(history.commits(v, v)));
    }
    bucket.put_object(format::differential_object(PREFIX, DB, 10));

    let mut scan = Scan::start(&bucket, &root(), Target::Latest).await.unwrap();
    let mut runs = 0;
    while !scan.run(&bucket, 1).await.unwrap() {
        scan = serde_json::from_str(&serde_json::to_string(&scan).unwrap()).unwrap();
        runs += 1;
    }
    assert_eq!(runs, 3, "1 page of snapshot names, 3 of log names");
    let plan = scan.finish(&bucket, NOW).await.unwrap();
    assert_eq!(plan.point.versionstamp, vs(2_509));
    let limits = StepLimits {
        max_writes: 400,
        max_bytes: 1 << 20,
    };
    let mut cursor = Cursor::start();
    let mut state = State::new();
    let mut steps = 0;
    while !cursor.is_done() {
        let s = step(&bucket, &plan, &cursor, limits).await.unwrap();
        assert!(s.writes.len() <= 400);
        apply(&mut state, &s.writes);
        cursor = s.next;
        steps += 1;
    }
    assert_eq!(state.len(), 5_001);
    assert_eq!(state[&key("hot")].1, vs(2_509));
    assert!(steps >= 5 * 3 + 2_500, "{steps}");
}
