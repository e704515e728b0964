//! A commit's outcome is exact (issue 12, item 6), on the local stack's tables
//! with the engine's test hooks for what no emulator does:
//! - an attempt whose answer is lost (a timeout) and which lands only after the
//!   engine has retried is recognised as the same write: a `sum` applies once;
//! - a large commit whose items fail to be written after its first step (the
//!   step that decides it) is answered as committed, not with a 5xx that Deno's
//!   client would answer by sending the same write again.

use denokv_proto::{AtomicWrite, KvValue, Mutation, MutationKind};
use subkv_dynamo_kv::WriteOutcome;
use subkv_e2e::kv_wire::*;

fn sum(k: &[u8], by: u64) -> Mutation {
    Mutation {
        key: k.to_vec(),
        kind: MutationKind::Sum {
            value: KvValue::U64(by),
            min_v8: vec![],
            max_v8: vec![],
            clamp: false,
        },
        expire_at: None,
    }
}

fn write(mutations: Vec<Mutation>) -> AtomicWrite {
    AtomicWrite {
        checks: vec![],
        mutations,
        enqueues: vec![],
    }
}

fn committed(outcome: WriteOutcome) -> u64 {
    match outcome {
        WriteOutcome::Committed(vs) => u64::from_be_bytes(vs[..8].try_into().unwrap()),
        other => panic!("not committed: {other:?}"),
    }
}

/// The counter's value, read back through the engine.
async fn counter(db: uuid::Uuid, k: &[u8]) -> u64 {
    let entry = store().await.get_many(db, &[k.to_vec()]).await.unwrap()[0]
        .clone()
        .expect("the counter exists");
    u64::from_le_bytes(entry.value.as_slice().try_into().unwrap())
}

#[tokio::test]
async fn an_attempt_that_lands_after_its_answer_was_lost_is_one_commit() {
    let s = Session::open().await;
    let db = s.id();
    let k = key("counter");
    let before = committed(
        store()
            .await
            .atomic_write(db, &write(vec![sum(&k, 5)]))
            .await
            .unwrap(),
    );

    // The first attempt's answer is lost and the engine retries; the original
    // lands just before the retry (a delayed transaction).
    let flaky = store().await.lose_first_answer();
    let version = committed(
        flaky
            .atomic_write(db, &write(vec![sum(&k, 1)]))
            .await
            .unwrap(),
    );

    assert_eq!(counter(db, &k).await, 6, "the sum applied once");
    assert_eq!(version, before + 1, "the commit of the original attempt");
    let log = store()
        .await
        .change_log(db, before, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(log.len(), 1, "one commit after the first: {log:?}");
}

#[tokio::test]
async fn a_large_commit_whose_items_fail_after_it_is_decided_is_answered_as_committed() {
    let s = Session::open().await;
    let db = s.id();
    let k = key("total");
    committed(
        store()
            .await
            .atomic_write(db, &write(vec![sum(&k, 10)]))
            .await
            .unwrap(),
    );

    // 250 keys and the counter: three transactions of items after the decision;
    // the second fails as throttling would.
    let mut mutations: Vec<Mutation> = (0..250)
        .map(|i| Mutation {
            key: key(&format!("k{i:04}")),
            kind: MutationKind::Set(KvValue::Bytes(vec![1])),
            expire_at: None,
        })
        .collect();
    mutations.push(sum(&k, 1));
    let throttled = store().await.fail_items_after(1);
    let version = committed(throttled.atomic_write(db, &write(mutations)).await.unwrap());

    // The next reader finishes it: all of it, once.
    let entries = s.list(key("k"), key("l")).await;
    assert_eq!(entries.len(), 250);
    assert!(entries
        .iter()
        .all(|e| u64::from_be_bytes(e.versionstamp[..8].try_into().unwrap()) == version));
    assert_eq!(counter(db, &k).await, 11, "the sum applied once");
}
