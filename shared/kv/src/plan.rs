//! Turning an atomic write into the items one TransactWriteItems writes: pure
//! logic, no I/O, so every rule of Deno KV's mutations is unit-tested here.
//!
//! The engine reads the database head (version `V`) and, in the same serializable
//! read, every item whose current content the commit needs (sum/min/max operands,
//! buckets of long keys). [`plan`] then decides the commit `V+1`: the new content
//! of every touched item, the checks DynamoDB must evaluate as conditions, and the
//! change record with each mutation's resulting value.

use crate::error::{KvError, KvResult};
use crate::keys::{is_bucket, sort_key};
use crate::model::{version_of, versionstamp, Entry, Slot};
use denokv_proto::backup::{BackupKvMutationKind, BackupReplicationLogEntry};
use denokv_proto::{AtomicWrite, KvValue, MutationKind};
use std::collections::{BTreeMap, BTreeSet};

/// Value encoding of `Deno.KvU64` (little-endian u64).
pub const ENCODING_LE64: i64 = 2;

/// A check that DynamoDB evaluates as a condition on the key's item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Index of the check in the request, for `failed_checks`.
    pub check_index: u32,
    /// The version the key must have; None: the key must not exist.
    pub expect: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedPut {
    /// The item's new content (no entries: a tombstone).
    pub slot: Slot,
    pub conds: Vec<Cond>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedCheck {
    pub sk: Vec<u8>,
    pub conds: Vec<Cond>,
}

#[derive(Debug)]
pub struct CommitPlan {
    pub version: u64,
    pub puts: Vec<PlannedPut>,
    pub checks: Vec<PlannedCheck>,
    /// The change record: one entry per mutation, with its resulting value.
    pub log: Vec<BackupReplicationLogEntry>,
}

#[derive(Debug)]
pub enum PlanOutcome {
    /// These items must be read (with the head) before the commit can be planned.
    NeedRead(BTreeSet<Vec<u8>>),
    /// Checks that already failed against the snapshot.
    CheckFailed(Vec<u32>),
    Ready(CommitPlan),
}

/// The key `setSuffixVersionstampedKey` writes: the key, then the versionstamp as
/// a string key part (tag 0x02, 20 lower-case hex digits, terminator 0x00).
pub fn suffixed_key(key: &[u8], version: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 22);
    out.extend_from_slice(key);
    out.push(0x02);
    out.extend_from_slice(hex::encode(versionstamp(version)).as_bytes());
    out.push(0x00);
    out
}

fn mutation_key(kind: &MutationKind, key: &[u8], version: u64) -> Vec<u8> {
    match kind {
        MutationKind::SetSuffixVersionstampedKey(_) => suffixed_key(key, version),
        _ => key.to_vec(),
    }
}

fn needs_current_value(kind: &MutationKind) -> bool {
    matches!(
        kind,
        MutationKind::Sum { .. } | MutationKind::Min(_) | MutationKind::Max(_)
    )
}

fn encoded(value: &KvValue) -> (Vec<u8>, i64) {
    let (bytes, encoding) = denokv_proto::encode_value(value);
    (bytes.into_owned(), encoding)
}

fn type_mismatch(op: &str, what: &str) -> KvError {
    KvError::bad(format!(
        "Failed to perform '{op}' mutation on a non-U64 {what}"
    ))
}

/// Applies sum/min/max to the current value, as Deno's own backends do: the operand
/// must be a `Deno.KvU64`, an absent key takes the operand, and sum wraps at 2^64.
fn mutate_u64(
    op: &str,
    current: Option<&Entry>,
    operand: &KvValue,
    apply: impl FnOnce(u64, u64) -> u64,
) -> KvResult<u64> {
    let KvValue::U64(operand) = *operand else {
        return Err(if op == "sum" {
            KvError::bad("sum on non-KvU64 values is not supported: use Deno.KvU64 operands")
        } else {
            type_mismatch(op, "operand")
        });
    };
    match current {
        None => Ok(operand),
        Some(entry) if entry.encoding == ENCODING_LE64 && entry.value.len() == 8 => {
            let mut le = [0u8; 8];
            le.copy_from_slice(&entry.value);
            Ok(apply(u64::from_le_bytes(le), operand))
        }
        Some(_) => Err(type_mismatch(op, "value in the database")),
    }
}

/// Plans the commit `version` on top of `snapshot` (the items read at `version - 1`).
pub fn plan(
    write: &AtomicWrite,
    snapshot: &BTreeMap<Vec<u8>, Slot>,
    version: u64,
    now_ms: i64,
) -> KvResult<PlanOutcome> {
    if !write.enqueues.is_empty() {
        return Err(KvError::bad(crate::error::ENQUEUE_UNSUPPORTED));
    }
    let keys: Vec<Vec<u8>> = write
        .mutations
        .iter()
        .map(|m| mutation_key(&m.kind, &m.key, version))
        .collect();
    if keys.iter().any(|k| k.is_empty()) || write.checks.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::bad("key cannot be empty"));
    }

    // Items whose content the plan needs.
    let mut missing = BTreeSet::new();
    let check_sks = write.checks.iter().map(|c| sort_key(&c.key));
    let mutation_sks = write
        .mutations
        .iter()
        .zip(&keys)
        .filter(|(m, k)| needs_current_value(&m.kind) || is_bucket(&sort_key(k)))
        .map(|(_, k)| sort_key(k));
    for sk in check_sks.filter(|sk| is_bucket(sk)).chain(mutation_sks) {
        if !snapshot.contains_key(&sk) {
            missing.insert(sk);
        }
    }
    if !missing.is_empty() {
        return Ok(PlanOutcome::NeedRead(missing));
    }

    // Checks: against the snapshot where it holds the item, else as conditions.
    let mut failed = Vec::new();
    let mut deferred: BTreeMap<Vec<u8>, Vec<Cond>> = BTreeMap::new();
    for (i, check) in write.checks.iter().enumerate() {
        let index = i as u32;
        let expect = match check.versionstamp {
            None => None,
            Some(vs) => match version_of(&vs) {
                Some(v) => Some(v),
                // Not a versionstamp subkv issues: no key can have it.
                None => {
                    failed.push(index);
                    continue;
                }
            },
        };
        let sk = sort_key(&check.key);
        match snapshot.get(&sk) {
            Some(slot) => {
                if slot.get(&check.key, now_ms).map(|e| e.version) != expect {
                    failed.push(index);
                }
            }
            None => deferred.entry(sk).or_default().push(Cond {
                check_index: index,
                expect,
            }),
        }
    }
    if !failed.is_empty() {
        return Ok(PlanOutcome::CheckFailed(failed));
    }

    // Mutations, in order, on the items' new content.
    let vs = versionstamp(version);
    let mut touched: BTreeMap<Vec<u8>, Slot> = BTreeMap::new();
    let mut log = Vec::with_capacity(write.mutations.len());
    for (mutation, key) in write.mutations.iter().zip(keys) {
        let sk = sort_key(&key);
        let slot = touched.entry(sk.clone()).or_insert_with(|| {
            snapshot
                .get(&sk)
                .cloned()
                .unwrap_or_else(|| Slot::empty(sk.clone()))
        });
        let expire_at_ms = mutation.expire_at.map(|t| t.timestamp_millis().max(1));
        let written = match &mutation.kind {
            MutationKind::Set(value) | MutationKind::SetSuffixVersionstampedKey(value) => {
                let (value, encoding) = encoded(value);
                Some((value, encoding, expire_at_ms))
            }
            MutationKind::Delete => None,
            MutationKind::Sum {
                value,
                min_v8,
                max_v8,
                clamp,
            } => {
                if matches!(value, KvValue::U64(_))
                    && (!min_v8.is_empty() || !max_v8.is_empty() || *clamp)
                {
                    return Err(KvError::bad(
                        "Cannot use min/max parameters with KvU64 operands",
                    ));
                }
                let current = slot.get(&key, now_ms);
                let n = mutate_u64("sum", current, value, u64::wrapping_add)?;
                Some((n.to_le_bytes().to_vec(), ENCODING_LE64, None))
            }
            MutationKind::Min(value) => {
                let n = mutate_u64("min", slot.get(&key, now_ms), value, u64::min)?;
                Some((n.to_le_bytes().to_vec(), ENCODING_LE64, None))
            }
            MutationKind::Max(value) => {
                let n = mutate_u64("max", slot.get(&key, now_ms), value, u64::max)?;
                Some((n.to_le_bytes().to_vec(), ENCODING_LE64, None))
            }
        };
        let index = log.len() as u16;
        let mut entry_vs = vs.to_vec();
        entry_vs.extend_from_slice(&index.to_be_bytes());
        match written {
            Some((value, encoding, expire_at_ms)) => {
                log.push(BackupReplicationLogEntry {
                    versionstamp: entry_vs,
                    kind: BackupKvMutationKind::MkSet as i32,
                    key: key.clone(),
                    value: value.clone(),
                    value_encoding: encoding as i32,
                    expire_at_ms: expire_at_ms.unwrap_or(0) as u64,
                });
                slot.put(Entry {
                    key,
                    value,
                    encoding,
                    version,
                    expire_at_ms,
                });
            }
            None => {
                log.push(BackupReplicationLogEntry {
                    versionstamp: entry_vs,
                    kind: BackupKvMutationKind::MkClear as i32,
                    key: key.clone(),
                    value: Vec::new(),
                    value_encoding: 0,
                    expire_at_ms: 0,
                });
                slot.remove(&key);
            }
        }
    }
    // Only a commit's last entry is a recovery point (backup format).
    if let Some(last) = log.last_mut() {
        last.versionstamp[10..].copy_from_slice(&[0xff, 0xff]);
    }

    let puts = touched
        .into_values()
        .map(|mut slot| {
            slot.version = version;
            let conds = deferred.remove(&slot.sk).unwrap_or_default();
            PlannedPut { slot, conds }
        })
        .collect();
    let checks = deferred
        .into_iter()
        .map(|(sk, conds)| PlannedCheck { sk, conds })
        .collect();
    Ok(PlanOutcome::Ready(CommitPlan {
        version,
        puts,
        checks,
        log,
    }))
}

#[cfg(test)]
mod tests {
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
                expect: Some(3)
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
}
