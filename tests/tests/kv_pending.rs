//! Pending large commits that cannot be written whole (issue 12, item 1): what a
//! build without size checks left behind, or a transaction DynamoDB refuses. The
//! next reader resolves them at once instead of retrying forever; the database
//! keeps working, and its change log (what backups copy) says what it holds.
//! Planning refuses such commits now, so a store `without_size_checks` (as builds
//! before the checks wrote) makes them, on the local stack's tables.

use denokv_proto::backup::BackupKvMutationKind;
use denokv_proto::datapath as pb;
use denokv_proto::{AtomicWrite, KvValue, Mutation, MutationKind};
use subkv_dynamo_kv::{DynamoKv, LoggedCommit, WriteOutcome};
use subkv_e2e::kv_wire::*;
use uuid::Uuid;

const VALUE: usize = 62 * 1024;

fn put(key: Vec<u8>, len: usize) -> Mutation {
    Mutation {
        key,
        kind: MutationKind::Set(KvValue::Bytes(vec![7; len])),
        expire_at: None,
    }
}

/// 150 short keys `k0000`.., then 7 keys of 1150 bytes sharing their first 1000
/// bytes (`l`...) with 62 KiB values: one item of about 450 KB, over DynamoDB's
/// 400 KB. The short keys sort first.
fn the_issues_commit() -> AtomicWrite {
    let mut mutations: Vec<Mutation> = (0..150).map(|i| put(key(&format!("k{i:04}")), 1)).collect();
    mutations.extend((0..7).map(|i| put(key(&format!("l{}{i}", "x".repeat(1140))), VALUE)));
    AtomicWrite {
        checks: vec![],
        mutations,
        enqueues: vec![],
    }
}

fn version(vs: &[u8]) -> u64 {
    u64::from_be_bytes(vs[..8].try_into().unwrap())
}

/// A first commit, so that the database has a head; its version.
async fn first_commit(s: &Session) -> u64 {
    let out = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("a"), b"1", 0)],
            ..Default::default()
        })
        .await;
    version(&out.versionstamp)
}

async fn log_after(db: Uuid, after: u64) -> Vec<LoggedCommit> {
    store()
        .await
        .change_log(db, after, 10, usize::MAX)
        .await
        .unwrap()
}

/// The database still answers reads and writes: a commit right after `version`.
async fn keeps_working(s: &Session, version_before: u64) {
    let out = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("z"), b"after", 0)],
            ..Default::default()
        })
        .await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    assert_eq!(version(&out.versionstamp), version_before + 1);
    assert_eq!(s.list(key("z"), key("zz")).await.len(), 1);
}

#[tokio::test]
async fn a_pending_commit_nothing_of_which_was_written_is_abandoned_by_the_next_reader() {
    let s = Session::open().await;
    let before = first_commit(&s).await;
    let old_build: DynamoKv = store().await.without_size_checks().crash_after_intent();
    let err = old_build
        .atomic_write(s.id(), &the_issues_commit())
        .await
        .unwrap_err();
    assert!(err.detail().contains("simulated crash"), "{}", err.detail());
    // Decided and pending: backups do not see it yet.
    assert!(log_after(s.id(), before).await.is_empty());

    // The next reader finishes it: the item is over the limit and nothing was
    // written, so the commit is abandoned, all of it.
    assert!(s.list(key("k"), key("m")).await.is_empty());
    let log = log_after(s.id(), before).await;
    assert_eq!(
        log.len(),
        1,
        "the abandoned commit, as a commit that changes nothing"
    );
    assert_eq!(log[0].version, before + 1);
    assert_eq!(log[0].entries.len(), 1);
    assert!(log[0].entries[0].key.is_empty());
    assert_eq!(log[0].entries[0].kind, BackupKvMutationKind::MkClear as i32);
    keeps_working(&s, before + 1).await;
}

#[tokio::test]
async fn a_pending_commit_written_in_part_is_finished_without_what_cannot_be_stored() {
    let s = Session::open().await;
    let before = first_commit(&s).await;
    // As the issue describes: the first 99 items written, then the transaction
    // with the oversized item failed (here: stopped before it).
    let old_build = store().await.without_size_checks().crash_after_items(1);
    old_build
        .atomic_write(s.id(), &the_issues_commit())
        .await
        .unwrap_err();
    // The next reader writes what can be written and rewrites the change record
    // without the keys that cannot be stored.
    let entries = s.list(key("k"), key("m")).await;
    assert_eq!(entries.len(), 150);
    assert!(entries
        .iter()
        .all(|e| version(&e.versionstamp) == before + 1));
    let log = log_after(s.id(), before).await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].entries.len(), 150);
    let last = log[0].entries.last().unwrap();
    assert_eq!(&last.versionstamp[10..], &[0xff, 0xff]);
    keeps_working(&s, before + 1).await;
}

#[tokio::test]
async fn a_large_commit_dynamodb_refuses_midway_is_trimmed_and_answered_with_a_400() {
    let s = Session::open().await;
    let before = first_commit(&s).await;
    // Without size checks, the item reaches DynamoDB, which refuses the second
    // transaction of items: the committer keeps what it can and says so.
    let old_build = store().await.without_size_checks();
    let err = old_build
        .atomic_write(s.id(), &the_issues_commit())
        .await
        .unwrap_err();
    assert_eq!(err.status().as_u16(), 400, "{}", err.detail());
    assert!(err.to_string().contains("only in part"), "{err}");
    assert_eq!(s.list(key("k"), key("m")).await.len(), 150);
    assert_eq!(log_after(s.id(), before).await[0].entries.len(), 150);
    keeps_working(&s, before + 1).await;
}

#[tokio::test]
async fn a_small_commit_dynamodb_refuses_is_a_400_and_writes_nothing() {
    let s = Session::open().await;
    let before = first_commit(&s).await;
    let mut write = the_issues_commit();
    write.mutations.drain(..150);
    let old_build = store().await.without_size_checks();
    let err = match old_build.atomic_write(s.id(), &write).await {
        Err(err) => err,
        Ok(WriteOutcome::Committed(_)) => panic!("an item over 400 KB was stored"),
        Ok(other) => panic!("{other:?}"),
    };
    assert_eq!(err.status().as_u16(), 400, "{}", err.detail());
    assert!(err.to_string().contains("nothing was written"), "{err}");
    assert!(s.list(key("l"), key("m")).await.is_empty());
    keeps_working(&s, before).await;
}
