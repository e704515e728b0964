//! Turning an atomic write into the items one TransactWriteItems writes: pure
//! logic, no I/O, so every rule of Deno KV's mutations is unit-tested here.
//!
//! The engine reads the database head (version `V`) and, in the same serializable
//! read, every item whose current content the commit needs (sum/min/max operands,
//! buckets of long keys). [`plan`] then decides the commit `V+1`: the new content
//! of every touched item, the checks DynamoDB must evaluate as conditions, and the
//! change record with each mutation's resulting value.

use crate::budget::{log_parts, Budget};
use crate::error::{KvError, KvResult};
use crate::keys::{is_bucket, sort_key};
use crate::model::{versionstamp, Entry, Slot};
use denokv_proto::backup::{BackupKvMutationKind, BackupReplicationLogEntry};
use denokv_proto::{AtomicWrite, KvValue, MutationKind, Versionstamp};
use std::collections::{BTreeMap, BTreeSet};

/// Value encoding of `Deno.KvU64` (little-endian u64).
pub const ENCODING_LE64: i64 = 2;

/// A check that DynamoDB evaluates as a condition on the key's item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    /// Index of the check in the request, for `failed_checks`.
    pub check_index: u32,
    /// The versionstamp the key's entry must have; None: the key must not exist.
    pub expect: Option<Versionstamp>,
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
    /// The change record as stored: parts that each fit an item.
    pub log_parts: Vec<Vec<u8>>,
    /// Too much for one transaction: a large commit ([`Budget::is_large`]).
    pub large: bool,
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

/// Plans the commit `version` on top of `snapshot` (the items read at `version - 1`),
/// within DynamoDB's limits ([`Budget::DYNAMODB`]).
pub fn plan(
    write: &AtomicWrite,
    snapshot: &BTreeMap<Vec<u8>, Slot>,
    version: u64,
    now_ms: i64,
) -> KvResult<PlanOutcome> {
    plan_within(write, snapshot, version, now_ms, &Budget::DYNAMODB)
}

/// [`plan`] within `budget`: a commit with an item or a first transaction that
/// does not fit is refused (400) before anything is written.
pub fn plan_within(
    write: &AtomicWrite,
    snapshot: &BTreeMap<Vec<u8>, Slot>,
    version: u64,
    now_ms: i64,
    budget: &Budget,
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
        // Every 10 bytes may be an entry's: a restored entry keeps its source's
        // versionstamp, whose last two bytes need not be zero.
        let expect = check.versionstamp;
        let sk = sort_key(&check.key);
        match snapshot.get(&sk) {
            Some(slot) => {
                if slot.get(&check.key, now_ms).map(Entry::versionstamp) != expect {
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

    // Mutations, in order, on the items' new content. Checks come first: a
    // mutation that fails (sum/min/max on another type) fails the commit only if
    // every check holds, as in denokv. So with checks still to be decided by
    // conditions, such an error asks for their items instead, and the next plan
    // decides the checks on the snapshot first.
    let unless_a_check_fails = |error: KvError| -> KvResult<PlanOutcome> {
        if deferred.is_empty() {
            Err(error)
        } else {
            Ok(PlanOutcome::NeedRead(deferred.keys().cloned().collect()))
        }
    };
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
                match mutate_u64("sum", current, value, u64::wrapping_add) {
                    Ok(n) => Some((n.to_le_bytes().to_vec(), ENCODING_LE64, None)),
                    Err(error) => return unless_a_check_fails(error),
                }
            }
            MutationKind::Min(value) => {
                match mutate_u64("min", slot.get(&key, now_ms), value, u64::min) {
                    Ok(n) => Some((n.to_le_bytes().to_vec(), ENCODING_LE64, None)),
                    Err(error) => return unless_a_check_fails(error),
                }
            }
            MutationKind::Max(value) => {
                match mutate_u64("max", slot.get(&key, now_ms), value, u64::max) {
                    Ok(n) => Some((n.to_le_bytes().to_vec(), ENCODING_LE64, None)),
                    Err(error) => return unless_a_check_fails(error),
                }
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
                    seq: 0,
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

    let puts: Vec<PlannedPut> = touched
        .into_values()
        .map(|mut slot| {
            slot.version = version;
            let conds = deferred.remove(&slot.sk).unwrap_or_default();
            PlannedPut { slot, conds }
        })
        .collect();
    let checks: Vec<PlannedCheck> = deferred
        .into_iter()
        .map(|(sk, conds)| PlannedCheck { sk, conds })
        .collect();
    let log_parts = log_parts(&log, now_ms.max(0) as u64);
    let large = budget.is_large(&puts, &checks, &log_parts)?;
    Ok(PlanOutcome::Ready(CommitPlan {
        version,
        puts,
        checks,
        log,
        log_parts,
        large,
    }))
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
