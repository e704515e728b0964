//! Tests of [`super`]: item sizes, transactions, and commits refused at planning.

use super::*;
use crate::keys::sort_key;
use crate::model::Entry;
use crate::plan::{plan, plan_within, CommitPlan, Cond, PlanOutcome};
use denokv_proto::{AtomicWrite, Check, KvValue, Mutation, MutationKind};
use std::collections::BTreeMap;

const VALUE: usize = 62 * 1024;

fn short(i: usize) -> Vec<u8> {
    [vec![0x02], format!("k{i:04}").into_bytes(), vec![0]].concat()
}

/// A long key (1150 bytes) whose first 1000 bytes are shared by every `long(i)`.
fn long(i: u8) -> Vec<u8> {
    [vec![0x01], vec![7u8; 1140], vec![i, 0, 0, 0, 0, 0, 0, 0, 0]].concat()
}

fn set(key: Vec<u8>, len: usize) -> Mutation {
    Mutation {
        key,
        kind: MutationKind::Set(KvValue::Bytes(vec![1; len])),
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

/// The bucket of the long keys as a snapshot holds it, with these entries.
fn bucket(entries: impl IntoIterator<Item = u8>) -> BTreeMap<Vec<u8>, Slot> {
    let sk = sort_key(&long(0));
    let mut slot = Slot::empty(sk.clone());
    for i in entries {
        slot.version = 1;
        slot.put(Entry {
            key: long(i),
            value: vec![2; VALUE],
            encoding: 3,
            version: 1,
            seq: 0,
            expire_at_ms: None,
        });
    }
    BTreeMap::from([(sk, slot)])
}

fn ready(outcome: KvResult<PlanOutcome>) -> CommitPlan {
    match outcome {
        Ok(PlanOutcome::Ready(plan)) => plan,
        Ok(other) => panic!("expected a plan, got {other:?}"),
        Err(err) => panic!("expected a plan, got {err}"),
    }
}

fn refused(outcome: KvResult<PlanOutcome>) -> String {
    match outcome {
        Err(KvError::BadRequest(message)) => message,
        Err(other) => panic!("expected a 400, got {other:?}"),
        Ok(other) => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_issues_commit_is_refused_at_planning_naming_the_limit() {
    // 150 short keys and 7 long keys sharing their first 1000 bytes, 62 KiB
    // values: legal for Deno (under 800 KiB and 1000 mutations), but the 7 long
    // keys would make one item of about 442 KB.
    let mut mutations: Vec<Mutation> = (0..150).map(|i| set(short(i), 10)).collect();
    mutations.extend((0..7).map(|i| set(long(i), VALUE)));
    let message = refused(plan(&write(mutations), &bucket([]), 9, 0));
    assert!(message.contains("the limit is 400000 bytes"), "{message}");
    assert!(
        message.contains("share their first 1000 bytes"),
        "{message}"
    );
}

#[test]
fn the_same_bucket_in_a_small_commit_is_refused_too() {
    let mutations = (0..7).map(|i| set(long(i), VALUE)).collect();
    let message = refused(plan(&write(mutations), &bucket([]), 9, 0));
    assert!(message.contains("the limit is 400000 bytes"), "{message}");
}

#[test]
fn a_bucket_is_sized_with_what_it_already_holds() {
    // Four entries are stored; two more fit, three do not.
    let two = (4..6).map(|i| set(long(i), VALUE)).collect();
    let plan2 = ready(plan(&write(two), &bucket(0..4), 9, 0));
    assert_eq!(plan2.puts[0].slot.entries.len(), 6);
    assert!(item_bytes(&plan2.puts[0].slot) <= MAX_ITEM_BYTES);
    let three = (4..7).map(|i| set(long(i), VALUE)).collect();
    refused(plan(&write(three), &bucket(0..4), 9, 0));
    // Overwriting an entry replaces it: the size does not grow.
    let overwrite = (0..2).map(|i| set(long(i), VALUE)).collect();
    ready(plan(&write(overwrite), &bucket(0..6), 9, 0));
    // A commit that shrinks a bucket over the limit (written before subkv sized
    // them) is accepted as soon as the result fits.
    let shrink = vec![Mutation {
        key: long(6),
        kind: MutationKind::Delete,
        expire_at: None,
    }];
    ready(plan(&write(shrink), &bucket(0..7), 9, 0));
}

#[test]
fn item_sizes_bound_keys_values_and_bucket_entries() {
    let mut single = Slot::empty(short(1));
    assert_eq!(item_bytes(&single), ITEM_OVERHEAD + short(1).len());
    single.put(Entry {
        key: short(1),
        value: vec![0; 100],
        encoding: 1,
        version: 1,
        seq: 0,
        expire_at_ms: Some(5),
    });
    assert_eq!(item_bytes(&single), ITEM_OVERHEAD + short(1).len() + 100);
    let b = &bucket(0..2)[&sort_key(&long(0))];
    assert_eq!(
        item_bytes(b),
        ITEM_OVERHEAD + SHORT_KEY_MAX + 1 + 2 * (long(0).len() + VALUE + BUCKET_ENTRY_OVERHEAD)
    );
}

#[test]
fn a_commit_fits_one_transaction_by_actions_and_by_bytes() {
    // Head + one change-record part + 98 items: 100 actions.
    let small = |n: usize| (0..n).map(|i| set(short(i), 10)).collect::<Vec<_>>();
    assert!(!ready(plan(&write(small(98)), &BTreeMap::new(), 2, 0)).large);
    assert!(ready(plan(&write(small(99)), &BTreeMap::new(), 2, 0)).large);
    // Eleven buckets of six 62 KiB values, each given one more small entry: 11
    // items of about 390 KB, over 4 MB together.
    let prefixed = |p: u8, i: u8| [vec![0x01], vec![p; 1140], vec![i, 0]].concat();
    let mut snapshot = BTreeMap::new();
    let mutations = |n: u8| (0..n).map(|p| set(prefixed(p, 9), 10)).collect();
    for p in 0..11u8 {
        let sk = sort_key(&prefixed(p, 0));
        let mut slot = Slot::empty(sk.clone());
        for i in 0..6 {
            slot.put(Entry {
                key: prefixed(p, i),
                value: vec![2; VALUE],
                encoding: 3,
                version: 1,
                seq: 0,
                expire_at_ms: None,
            });
        }
        snapshot.insert(sk, slot);
    }
    let ten = ready(plan(&write(mutations(10)), &snapshot, 2, 0));
    assert!(!ten.large, "ten such buckets fit one transaction");
    let eleven = ready(plan(&write(mutations(11)), &snapshot, 2, 0));
    assert_eq!(eleven.puts.len(), 11);
    assert!(eleven.large, "eleven do not: over 4 MB");
}

#[test]
fn a_large_commit_keeps_its_checks_in_its_first_transaction() {
    let mut w = write((0..200).map(|i| set(short(i), 10)).collect());
    w.checks = (0..10)
        .map(|i| Check {
            key: short(i),
            versionstamp: None,
        })
        .collect();
    let planned = ready(plan(&w, &BTreeMap::new(), 2, 0));
    assert!(planned.large);
    assert_eq!(
        planned.puts[3].conds,
        vec![Cond {
            check_index: 3,
            expect: None
        }]
    );
    // A budget whose transactions cannot hold the head, the record and ten
    // checks refuses the commit before anything is written.
    let tight = Budget {
        max_actions: 10,
        ..Budget::DYNAMODB
    };
    let message = refused(plan_within(&w, &BTreeMap::new(), 2, 0, &tight));
    assert!(message.contains("the limits are 10 actions"), "{message}");
}

#[test]
fn large_commit_items_are_grouped_by_actions_and_bytes() {
    let budget = Budget::DYNAMODB;
    // 250 small items: 99, 99 and 52 (each transaction also checks the head).
    let runs = budget.item_transactions(&[300; 250]);
    assert_eq!(runs, vec![0..99, 99..198, 198..250]);
    // Items near the limit: ten fit 4 MB beside the head, the eleventh does not.
    let runs = budget.item_transactions(&[MAX_ITEM_BYTES; 25]);
    assert_eq!(runs, vec![0..10, 10..20, 20..25]);
    let total: usize = runs[0].clone().map(|_| MAX_ITEM_BYTES).sum();
    assert!(total + HEAD_ITEM_BYTES <= DYNAMODB_MAX_TRANSACTION_BYTES);
    // An item larger than a transaction goes alone (DynamoDB then refuses it).
    let runs = budget.item_transactions(&[10, DYNAMODB_MAX_TRANSACTION_BYTES, 10]);
    assert_eq!(runs, vec![0..1, 1..2, 2..3]);
    assert!(budget.item_transactions(&[]).is_empty());
}

#[test]
fn reads_are_batched_so_that_any_content_fits() {
    // getMany's ten keys in ten full buckets and the head: one serializable read.
    let buckets: Vec<Vec<u8>> = (0..10u8)
        .map(|p| sort_key(&[vec![p; 1001]].concat()))
        .collect();
    assert_eq!(read_batches(&buckets, true), vec![0..10]);
    let eleven: Vec<Vec<u8>> = (0..11u8)
        .map(|p| sort_key(&[vec![p; 1001]].concat()))
        .collect();
    assert_eq!(read_batches(&eleven, true).len(), 2);
    // Short keys with 64 KiB values: about 62 per 4 MB.
    let shorts: Vec<Vec<u8>> = (0..99).map(short).collect();
    let batches = read_batches(&shorts, false);
    assert_eq!(batches.len(), 2);
    let bytes: usize = shorts[batches[0].clone()]
        .iter()
        .map(|sk| max_item_bytes_under(sk))
        .sum();
    assert!(bytes <= DYNAMODB_MAX_TRANSACTION_BYTES);
    assert_eq!(read_batches(&shorts[..40], true).len(), 1);
}

#[test]
fn change_records_split_into_parts_that_fit_an_item() {
    let entry = |i: u8| BackupReplicationLogEntry {
        versionstamp: vec![i; 12],
        kind: 1,
        key: vec![i; 2000],
        value: vec![i; 65536],
        value_encoding: 3,
        expire_at_ms: 0,
    };
    let log: Vec<_> = (0..12).map(entry).collect();
    let parts = log_parts(&log, 5);
    assert!(parts.len() >= 3);
    let mut all = Vec::new();
    for part in &parts {
        assert!(part.len() + LOG_ITEM_OVERHEAD <= MAX_ITEM_BYTES);
        all.extend(
            BackupMutationRange::decode(part.as_slice())
                .unwrap()
                .entries,
        );
    }
    assert_eq!(all, log);
    assert_eq!(log_parts(&[], 1).len(), 1);
}
