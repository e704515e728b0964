//! The work of one read is bounded (issue 12, items 3 and 7), measured in the
//! DynamoDB requests the KV engine sends on the local stack's tables:
//! - deleting keys leaves nothing in the ranges reads scan (no tombstones), and
//!   deleting a key that never existed writes nothing;
//! - expired entries the sweeper has not deleted yet cost a few queries, not one
//!   per handful of entries;
//! - reads use no transactions (on DynamoDB a transactional read cancels the
//!   commits it meets), and a read under constant writes answers at once, with
//!   a consistent snapshot, instead of retrying.

use denokv_proto::datapath as pb;
use denokv_proto::{AtomicWrite, KvValue, Mutation, MutationKind, ReadRange};
use std::num::NonZeroU32;
use subkv_dynamo_kv::WriteOutcome;
use subkv_e2e::kv_wire::*;

/// The encoded key `[prefix + i (4 digits)]`.
fn numbered(prefix: &str, i: usize) -> Vec<u8> {
    key(&format!("{prefix}{i:04}"))
}

/// Every key that starts with the string `prefix`, as one range.
fn prefix_range(prefix: &str, limit: u32) -> ReadRange {
    let start = key(prefix);
    let mut end = start.clone();
    // The string's terminating zero byte: keys that continue it sort after.
    end.pop();
    end.push(0xff);
    ReadRange {
        start: start[..start.len() - 1].to_vec(),
        end,
        limit: NonZeroU32::new(limit).unwrap(),
        reverse: false,
    }
}

fn delete(k: Vec<u8>) -> pb::Mutation {
    pb::Mutation {
        key: k,
        mutation_type: pb::MutationType::MDelete as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn deleted_keys_leave_nothing_for_a_list_to_scan() {
    let s = Session::open().await;
    let keys: Vec<Vec<u8>> = (0..600).map(|i| numbered("t/", i)).collect();
    s.write_all(keys.iter().map(|k| set(k, b"v", 0)).collect())
        .await;
    s.write_all(keys.into_iter().map(delete).collect()).await;
    // Keys that never existed, deleted.
    s.write_all((0..300).map(|i| delete(numbered("n/", i))).collect())
        .await;
    s.write_all(vec![set(&key("t/zzzz"), b"last", 0)]).await;

    assert_eq!(
        data_items(s.id()).await,
        1,
        "only the live key is stored: deletions leave no tombstones"
    );
    let (kv, requests) = counting_store().await;
    let read = kv
        .snapshot_read(s.id(), &[prefix_range("t/", 1)])
        .await
        .unwrap();
    assert_eq!(read[0].len(), 1);
    assert_eq!(read[0][0].key, key("t/zzzz"));
    println!("list(limit 1) after 900 deletions: {:?}", requests.all());
    // One page of the range and one of the change log (with tombstones read a
    // page of 5 at a time, as before: 180).
    assert!(requests.of("Query") <= 2, "{:?}", requests.all());
}

#[tokio::test]
async fn expired_entries_cost_a_list_a_few_queries() {
    let s = Session::open().await;
    // Already expired when written: reads hide them at once, and the sweeper
    // (about 500 per run on the local stack) has not deleted most of them yet
    // when the list comes.
    let expired = now_ms() - 1_000;
    let mut mutations: Vec<pb::Mutation> = (0..3000)
        .map(|i| set(&numbered("e/", i), b"gone", expired))
        .collect();
    mutations.push(set(&key("e/zzzz"), b"stays", 0));
    s.write_all(mutations).await;

    let (kv, requests) = counting_store().await;
    let read = kv
        .snapshot_read(s.id(), &[prefix_range("e/", 1)])
        .await
        .unwrap();
    let stored = data_items(s.id()).await;
    println!(
        "list(limit 1) over at least {stored} stored items, all but one expired: {:?}",
        requests.all()
    );
    assert_eq!(read[0].len(), 1);
    assert_eq!(read[0][0].key, key("e/zzzz"));
    assert!(
        stored >= 500,
        "the sweeper has not deleted most of them yet"
    );
    // Pages of 5, 10, 20... 1000 items: 11 for 3000 items, plus the change log
    // (twice if the sweeper committed meanwhile). One page per 5 items before.
    assert!(requests.of("Query") <= 14, "{:?}", requests.all());
    // Not left to the sweeper: it takes the oldest first, and kv_sweep's tests,
    // which run next on this stack, time their own entries' expiry.
    remove_data_items(s.id()).await;
    assert_eq!(data_items(s.id()).await, 0);
}

#[tokio::test]
async fn reads_use_no_transaction() {
    let s = Session::open().await;
    s.write_all((0..5).map(|i| set(&numbered("r/", i), b"x", 0)).collect())
        .await;
    let (kv, requests) = counting_store().await;
    let keys: Vec<Vec<u8>> = (0..5).map(|i| numbered("r/", i)).collect();
    let got = kv.get_many(s.id(), &keys).await.unwrap();
    assert!(got.iter().all(Option::is_some));
    let listed = kv
        .snapshot_read(s.id(), &[prefix_range("r/", 10)])
        .await
        .unwrap();
    assert_eq!(listed[0].len(), 5);
    println!("getMany(5) and list(5): {:?}", requests.all());
    assert_eq!(requests.of("TransactGetItems"), 0, "{:?}", requests.all());
    assert_eq!(requests.of("TransactWriteItems"), 0, "{:?}", requests.all());
}

/// Ten accounts whose balances always sum to 1000, all rewritten by every commit.
fn balances(round: usize) -> AtomicWrite {
    let mut left = 1000u64;
    let mutations = (0..10)
        .map(|i| {
            let amount = if i == 9 {
                left
            } else {
                ((round * 7 + i * 13) % 150) as u64
            };
            left -= amount;
            Mutation {
                key: numbered("a/", i),
                kind: MutationKind::Set(KvValue::U64(amount)),
                expire_at: None,
            }
        })
        .collect();
    AtomicWrite {
        checks: vec![],
        mutations,
        enqueues: vec![],
    }
}

fn total(entries: &[subkv_kv::model::Entry]) -> u64 {
    entries
        .iter()
        .map(|e| u64::from_le_bytes(e.value.as_slice().try_into().unwrap()))
        .sum()
}

#[tokio::test]
async fn a_read_under_constant_writes_answers_at_once_with_one_snapshot() {
    let s = Session::open().await;
    let db = s.id();
    let writer = store().await;
    assert!(matches!(
        writer.atomic_write(db, &balances(0)).await.unwrap(),
        WriteOutcome::Committed(_)
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut round = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writer.atomic_write(db, &balances(round)).await.unwrap();
                round += 1;
            }
            round
        })
    };

    let (kv, requests) = counting_store().await;
    let keys: Vec<Vec<u8>> = (0..10).map(|i| numbered("a/", i)).collect();
    let mut most = std::collections::BTreeMap::new();
    for _ in 0..30 {
        requests.reset();
        let listed = kv
            .snapshot_read(db, &[prefix_range("a/", 10)])
            .await
            .unwrap()
            .remove(0);
        assert_eq!(listed.len(), 10);
        assert_eq!(total(&listed), 1000, "a list saw two commits at once");
        assert!(
            listed.iter().all(|e| e.version == listed[0].version),
            "a list mixed versions"
        );
        let got: Vec<_> = kv
            .get_many(db, &keys)
            .await
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        assert_eq!(total(&got), 1000, "a getMany saw two commits at once");
        assert!(got.iter().all(|e| e.version == got[0].version));
        for (op, n) in requests.all() {
            let m = most.entry(op).or_insert(0);
            *m = n.max(*m);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rounds = writing.await.unwrap();
    println!("{rounds} commits meanwhile; most requests of one list + getMany: {most:?}");
    assert!(rounds > 10, "the writer kept committing");
    // Each read: at most the head twice, a page (or a BatchGetItem) and the
    // change log twice. No retries.
    assert!(most.get("Query").copied().unwrap_or(0) <= 5, "{most:?}");
    assert!(most.get("GetItem").copied().unwrap_or(0) <= 4, "{most:?}");
}
