//! Tests of [`super`]: the commit planner.

use super::*;
use denokv_proto::{Check, Mutation};

fn k(s: &str) -> Vec<u8> {
    [vec![0x02], s.as_bytes().to_vec(), vec![0x00]].concat()
}

fn m(key: &str, kind: MutationKind) -> Mutation {
    Mutation {
        key: k(key),
        kind,
        expire_at: None,
    }
}

fn write(checks: Vec<Check>, mutations: Vec<Mutation>) -> AtomicWrite {
    AtomicWrite {
        checks,
        mutations,
        enqueues: vec![],
    }
}

fn u64_slot(key: &str, n: u64, version: u64) -> (Vec<u8>, Slot) {
    let mut slot = Slot::empty(k(key));
    slot.version = version;
    slot.put(Entry {
        key: k(key),
        value: n.to_le_bytes().to_vec(),
        encoding: ENCODING_LE64,
        version,
        seq: 0,
        expire_at_ms: None,
    });
    (k(key), slot)
}

fn ready(outcome: PlanOutcome) -> CommitPlan {
    match outcome {
        PlanOutcome::Ready(plan) => plan,
        other => panic!("expected a plan, got {other:?}"),
    }
}

#[test]
fn a_blind_set_needs_no_read_and_logs_a_recovery_point() {
    let w = write(
        vec![],
        vec![m("a", MutationKind::Set(KvValue::Bytes(vec![1])))],
    );
    let plan = ready(plan(&w, &BTreeMap::new(), 7, 0).unwrap());
    assert_eq!(plan.puts.len(), 1);
    assert_eq!(plan.puts[0].slot.version, 7);
    assert_eq!(plan.puts[0].slot.entries[0].value, vec![1]);
    assert_eq!(plan.log.len(), 1);
    assert_eq!(&plan.log[0].versionstamp[..10], &versionstamp(7));
    assert_eq!(&plan.log[0].versionstamp[10..], &[0xff, 0xff]);
}

#[test]
fn log_entries_are_indexed_in_order_and_the_last_is_ffff() {
    let w = write(
        vec![],
        vec![
            m("a", MutationKind::Set(KvValue::Bytes(vec![1]))),
            m("b", MutationKind::Delete),
            m("c", MutationKind::Set(KvValue::Bytes(vec![3]))),
        ],
    );
    let plan = ready(plan(&w, &BTreeMap::new(), 1, 0).unwrap());
    let idx: Vec<_> = plan
        .log
        .iter()
        .map(|e| e.versionstamp[10..].to_vec())
        .collect();
    assert_eq!(idx, vec![vec![0, 0], vec![0, 1], vec![0xff, 0xff]]);
    assert_eq!(plan.log[1].kind, BackupKvMutationKind::MkClear as i32);
    assert!(plan
        .puts
        .iter()
        .any(|p| p.slot.sk == k("b") && p.slot.entries.is_empty()));
}

#[test]
fn sum_needs_the_current_value_and_wraps_around() {
    let w = write(
        vec![],
        vec![m(
            "n",
            MutationKind::Sum {
                value: KvValue::U64(2),
                min_v8: vec![],
                max_v8: vec![],
                clamp: false,
            },
        )],
    );
    match plan(&w, &BTreeMap::new(), 1, 0).unwrap() {
        PlanOutcome::NeedRead(sks) => assert!(sks.contains(&k("n"))),
        other => panic!("{other:?}"),
    }
    let snapshot = BTreeMap::from([u64_slot("n", u64::MAX, 3)]);
    let plan = ready(plan(&w, &snapshot, 4, 0).unwrap());
    assert_eq!(
        plan.puts[0].slot.entries[0].value,
        1u64.to_le_bytes().to_vec()
    );
    assert_eq!(plan.log[0].value, 1u64.to_le_bytes().to_vec());
    assert_eq!(plan.log[0].kind, BackupKvMutationKind::MkSet as i32);
}

#[test]
fn min_max_take_the_operand_when_absent() {
    let w = write(
        vec![],
        vec![
            m("a", MutationKind::Min(KvValue::U64(5))),
            m("b", MutationKind::Max(KvValue::U64(5))),
        ],
    );
    let snapshot = BTreeMap::from([u64_slot("b", 9, 1), (k("a"), Slot::empty(k("a")))]);
    let plan = ready(plan(&w, &snapshot, 2, 0).unwrap());
    let value = |key: &str| {
        plan.puts
            .iter()
            .find(|p| p.slot.sk == k(key))
            .unwrap()
            .slot
            .entries[0]
            .value
            .clone()
    };
    assert_eq!(value("a"), 5u64.to_le_bytes().to_vec());
    assert_eq!(value("b"), 9u64.to_le_bytes().to_vec());
}

#[test]
fn u64_operations_on_other_values_are_type_errors() {
    let mut slot = Slot::empty(k("s"));
    slot.put(Entry {
        key: k("s"),
        value: vec![1, 2],
        encoding: 1,
        version: 1,
        seq: 0,
        expire_at_ms: None,
    });
    let snapshot = BTreeMap::from([(k("s"), slot)]);
    for (kind, name) in [
        (MutationKind::Min(KvValue::U64(1)), "min"),
        (MutationKind::Max(KvValue::U64(1)), "max"),
        (
            MutationKind::Sum {
                value: KvValue::U64(1),
                min_v8: vec![],
                max_v8: vec![],
                clamp: false,
            },
            "sum",
        ),
    ] {
        let err = plan(&write(vec![], vec![m("s", kind)]), &snapshot, 2, 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Failed to perform '{name}' mutation on a non-U64 value in the database")
        );
    }
    let err = plan(
        &write(
            vec![],
            vec![m("s", MutationKind::Min(KvValue::V8(vec![1])))],
        ),
        &snapshot,
        2,
        0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Failed to perform 'min' mutation on a non-U64 operand"
    );
}

#[test]
fn checks_without_a_snapshot_become_conditions_merged_with_puts() {
    let w = write(
        vec![
            Check {
                key: k("a"),
                versionstamp: Some(versionstamp(3)),
            },
            Check {
                key: k("b"),
                versionstamp: None,
            },
        ],
        vec![m("a", MutationKind::Set(KvValue::Bytes(vec![])))],
    );
    let plan = ready(plan(&w, &BTreeMap::new(), 9, 0).unwrap());
    assert_eq!(
        plan.puts[0].conds,
        vec![Cond {
            check_index: 0,
            expect: Some(versionstamp(3))
        }]
    );
    assert_eq!(
        plan.checks,
        vec![PlannedCheck {
            sk: k("b"),
            conds: vec![Cond {
                check_index: 1,
                expect: None
            }]
        }]
    );
}

#[test]
fn checks_against_the_snapshot_fail_early_and_expired_keys_do_not_exist() {
    let (sk, mut slot) = u64_slot("n", 1, 3);
    slot.entries[0].expire_at_ms = Some(100);
    let snapshot = BTreeMap::from([(sk, slot)]);
    let sum = MutationKind::Sum {
        value: KvValue::U64(1),
        min_v8: vec![],
        max_v8: vec![],
        clamp: false,
    };
    let checks = || {
        vec![
            Check {
                key: k("n"),
                versionstamp: Some(versionstamp(3)),
            },
            Check {
                key: k("n"),
                versionstamp: None,
            },
        ]
    };
    // Before the deadline the key exists at version 3; after it, it does not.
    match plan(&write(checks(), vec![m("n", sum)]), &snapshot, 4, 50).unwrap() {
        PlanOutcome::CheckFailed(failed) => assert_eq!(failed, vec![1]),
        other => panic!("{other:?}"),
    }
    let sum = MutationKind::Sum {
        value: KvValue::U64(1),
        min_v8: vec![],
        max_v8: vec![],
        clamp: false,
    };
    match plan(&write(checks(), vec![m("n", sum)]), &snapshot, 4, 100).unwrap() {
        PlanOutcome::CheckFailed(failed) => assert_eq!(failed, vec![0]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn versionstamped_keys_get_the_commit_versionstamp_as_a_string_part() {
    let w = write(
        vec![],
        vec![m(
            "q",
            MutationKind::SetSuffixVersionstampedKey(KvValue::Bytes(vec![])),
        )],
    );
    let plan = ready(plan(&w, &BTreeMap::new(), 0x1234, 0).unwrap());
    let key = &plan.puts[0].slot.entries[0].key;
    assert_eq!(
        key,
        &[
            k("q"),
            vec![0x02],
            b"00000000000012340000".to_vec(),
            vec![0]
        ]
        .concat()
    );
}

#[test]
fn long_keys_are_read_modify_write_of_their_bucket() {
    let long = [vec![0x01], vec![7u8; 1500], vec![0]].concat();
    let w = write(
        vec![],
        vec![Mutation {
            key: long.clone(),
            kind: MutationKind::Set(KvValue::Bytes(vec![1])),
            expire_at: None,
        }],
    );
    let sk = sort_key(&long);
    match plan(&w, &BTreeMap::new(), 1, 0).unwrap() {
        PlanOutcome::NeedRead(sks) => assert_eq!(sks, BTreeSet::from([sk.clone()])),
        other => panic!("{other:?}"),
    }
    let mut bucket = Slot::empty(sk.clone());
    let other = [vec![0x01], vec![7u8; 1400], vec![0]].concat();
    bucket.put(Entry {
        key: other.clone(),
        value: vec![2],
        encoding: 3,
        version: 1,
        seq: 0,
        expire_at_ms: None,
    });
    bucket.version = 1;
    let plan = ready(plan(&w, &BTreeMap::from([(sk, bucket)]), 2, 0).unwrap());
    let keys: Vec<_> = plan.puts[0]
        .slot
        .entries
        .iter()
        .map(|e| e.key.clone())
        .collect();
    assert_eq!(keys, vec![other, long]);
}

#[test]
fn enqueue_and_empty_keys_are_rejected() {
    let mut w = write(vec![], vec![]);
    w.enqueues.push(denokv_proto::Enqueue {
        payload: vec![],
        deadline: chrono::Utc::now(),
        keys_if_undelivered: vec![],
        backoff_schedule: None,
    });
    assert!(plan(&w, &BTreeMap::new(), 1, 0)
        .unwrap_err()
        .to_string()
        .contains("enqueue is not supported"));
    let w = write(
        vec![],
        vec![Mutation {
            key: vec![],
            kind: MutationKind::Delete,
            expire_at: None,
        }],
    );
    assert!(plan(&w, &BTreeMap::new(), 1, 0).is_err());
}

/// Checks come before mutations: a sum on a value of another type fails the commit
/// only if every check holds (found by the differential test against denokv).
#[test]
fn a_type_error_waits_for_checks_that_are_still_conditions() {
    let mut text = Slot::empty(k("s"));
    text.put(Entry {
        key: k("s"),
        value: vec![1, 2],
        encoding: 1,
        version: 1,
        seq: 0,
        expire_at_ms: None,
    });
    let sum = || {
        m(
            "s",
            MutationKind::Sum {
                value: KvValue::U64(1),
                min_v8: vec![],
                max_v8: vec![],
                clamp: false,
            },
        )
    };
    let check = |versionstamp| Check {
        key: k("c"),
        versionstamp,
    };
    // The check on "c" would be a condition: the planner asks for its item first.
    let only_s = BTreeMap::from([(k("s"), text.clone())]);
    let w = write(vec![check(Some(versionstamp(5)))], vec![sum()]);
    match plan(&w, &only_s, 2, 0).unwrap() {
        PlanOutcome::NeedRead(sks) => assert_eq!(sks, BTreeSet::from([k("c")])),
        other => panic!("{other:?}"),
    }
    // With it: a failing check is the answer; with every check holding, the type error.
    let with_c = BTreeMap::from([(k("s"), text), (k("c"), Slot::empty(k("c")))]);
    match plan(&w, &with_c, 2, 0).unwrap() {
        PlanOutcome::CheckFailed(failed) => assert_eq!(failed, vec![0]),
        other => panic!("{other:?}"),
    }
    let w = write(vec![check(None)], vec![sum()]);
    let err = plan(&w, &with_c, 2, 0).unwrap_err();
    assert!(err.to_string().contains("non-U64 value"), "{err}");
    // No checks: the type error at once, with no read.
    let err = plan(&write(vec![], vec![sum()]), &only_s, 2, 0).unwrap_err();
    assert!(err.to_string().contains("non-U64 value"), "{err}");
}
