//! What DynamoDB can store, decided while a commit is planned, before anything is
//! written: the size of every item a commit writes, and how its items group into
//! transactions (at most 100 actions and 4 MB each). A commit that cannot be
//! stored is refused with a 400 naming the limit: Deno's client retries every 5xx
//! forever, so a refusal discovered while writing would hang it, and one
//! discovered after a large commit's first step would block the database.
//!
//! Sizes are upper bounds of DynamoDB's item size (the lengths of the attribute
//! names plus the values; a number takes at most 21 bytes) of the items
//! `subkv-dynamo-kv` writes (its `items.rs` tests check the bound against the
//! items it builds).
//!
//! Why a bucket's size is known at planning: a write to a long key is a
//! read-modify-write of its bucket inside the commit. The bucket is read in the
//! same serializable read as the head, and the commit is conditioned on that head,
//! so the content [`crate::plan::plan`] computes (the bucket's current entries
//! with the commit's mutations applied) is exactly what the item will hold when it
//! is written. No second read at write time is needed, and none could do better.

use crate::error::{KvError, KvResult};
use crate::keys::{is_bucket, SHORT_KEY_MAX};
use crate::limits::{
    DYNAMODB_MAX_ITEM_BYTES, DYNAMODB_MAX_TRANSACTION_BYTES, MAX_ITEMS_PER_COMMIT, MAX_ITEM_BYTES,
    MAX_VALUE_BYTES,
};
use crate::model::Slot;
use crate::plan::{PlannedCheck, PlannedPut};
use denokv_proto::backup::{BackupMutationRange, BackupReplicationLogEntry};
use prost::Message;
use std::ops::Range;

/// Attribute names and every fixed-size value of a data item, with room to
/// spare: `pk` (a database id), `kv_ver`, `enc`, `kv_exp`, `kv_xs`, `kv_del`,
/// `ttl` (about 160 bytes); the sort key and the value or bucket come on top.
const ITEM_OVERHEAD: usize = 256;
/// Per entry of a bucket's protobuf blob: the entry's tag and length, and the
/// tags, lengths and varints of its key, value, encoding, version, expiry and seq.
const BUCKET_ENTRY_OVERHEAD: usize = 48;
/// The head item (`pk`, `sk`, `kv_ver`, `ts`, `req`, `kv_pending`), bounded.
pub const HEAD_ITEM_BYTES: usize = 256;
/// A change-record item besides its part of the record (`pk`, `sk`, `ts`,
/// `parts`, `req`, `ttl`), bounded.
pub const LOG_ITEM_OVERHEAD: usize = 256;
/// A change-record item holds at most this much of the record, or one entry
/// (at most 2 KiB of key and 64 KiB of value): well inside an item.
pub const LOG_PART_BYTES: usize = 300 * 1024;

/// Upper bound of the size of the data item that stores `slot`.
pub fn item_bytes(slot: &Slot) -> usize {
    let content: usize = if slot.is_bucket() {
        slot.entries
            .iter()
            .map(|e| e.key.len() + e.value.len() + BUCKET_ENTRY_OVERHEAD)
            .sum()
    } else {
        slot.entries.iter().map(|e| e.value.len()).sum()
    };
    ITEM_OVERHEAD + slot.sk.len() + content
}

/// The most the item under `sk` can hold, before it is read: a bucket up to
/// DynamoDB's limit (one written before subkv sized them may be that large), a
/// short key's item its key and one value.
pub fn max_item_bytes_under(sk: &[u8]) -> usize {
    if is_bucket(sk) {
        DYNAMODB_MAX_ITEM_BYTES
    } else {
        ITEM_OVERHEAD + sk.len() + MAX_VALUE_BYTES
    }
}

/// A commit's change record, split into parts that each fit in an item.
pub fn log_parts(log: &[BackupReplicationLogEntry], timestamp_ms: u64) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut current = BackupMutationRange {
        entries: Vec::new(),
        timestamp_ms,
    };
    let mut size = 0;
    for entry in log {
        let len = entry.encoded_len() + 8;
        if size + len > LOG_PART_BYTES && !current.entries.is_empty() {
            parts.push(current.encode_to_vec());
            current.entries.clear();
            size = 0;
        }
        size += len;
        current.entries.push(entry.clone());
    }
    parts.push(current.encode_to_vec());
    parts
}

/// Consecutive runs of `sizes` that each fit one transaction of at most
/// `max_actions` actions and `max_bytes` bytes beside `reserved` (actions,
/// bytes) taken by every transaction. A size too large for any transaction gets
/// one of its own (its item was refused earlier, or DynamoDB refuses it).
fn group(
    sizes: &[usize],
    max_actions: usize,
    max_bytes: usize,
    reserved: (usize, usize),
) -> Vec<Range<usize>> {
    let (max_actions, max_bytes) = (
        max_actions.saturating_sub(reserved.0).max(1),
        max_bytes.saturating_sub(reserved.1),
    );
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && (i - start == max_actions || bytes + size > max_bytes) {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        runs.push(start..sizes.len());
    }
    runs
}

/// What one database's commits may write, per item and per transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub max_item_bytes: usize,
    pub max_transaction_bytes: usize,
    pub max_actions: usize,
}

impl Budget {
    /// DynamoDB's limits, as subkv applies them.
    pub const DYNAMODB: Budget = Budget {
        max_item_bytes: MAX_ITEM_BYTES,
        max_transaction_bytes: DYNAMODB_MAX_TRANSACTION_BYTES,
        max_actions: MAX_ITEMS_PER_COMMIT,
    };

    /// The items of a large commit (their sizes, in order) grouped into the
    /// transactions that write them; each also checks the head.
    pub fn item_transactions(&self, sizes: &[usize]) -> Vec<Range<usize>> {
        group(
            sizes,
            self.max_actions,
            self.max_transaction_bytes,
            (1, HEAD_ITEM_BYTES),
        )
    }

    /// The refusal of `slot` if its item would be over the item limit.
    pub fn refuse_item(&self, slot: &Slot) -> Option<KvError> {
        let bytes = item_bytes(slot);
        if bytes <= self.max_item_bytes {
            return None;
        }
        let limit = self.max_item_bytes;
        Some(KvError::bad(if slot.is_bucket() {
            format!(
                "too much data under one key prefix: keys longer than {SHORT_KEY_MAX} bytes that share \
                 their first {SHORT_KEY_MAX} bytes are stored together, and this commit would make them \
                 {bytes} bytes (the limit is {limit} bytes per shared {SHORT_KEY_MAX}-byte prefix)"
            )
        } else {
            format!("an entry of this commit would take {bytes} bytes to store (the limit is {limit} bytes)")
        }))
    }

    /// Whether the commit with these items, checks and change record fits one
    /// transaction (false: a large commit, decided by a first transaction with the
    /// head, the change record and the checks, its items written after). Refuses
    /// a commit with an item over the limit, or whose first transaction would not
    /// fit one transaction either.
    pub fn is_large(
        &self,
        puts: &[PlannedPut],
        checks: &[PlannedCheck],
        log_parts: &[Vec<u8>],
    ) -> KvResult<bool> {
        if let Some(err) = puts.iter().find_map(|p| self.refuse_item(&p.slot)) {
            return Err(err);
        }
        let check_bytes = |sk: &[u8]| ITEM_OVERHEAD + sk.len();
        let decision_actions = 1 + log_parts.len() + checks.len();
        let decision_bytes = HEAD_ITEM_BYTES
            + log_parts
                .iter()
                .map(|p| p.len() + LOG_ITEM_OVERHEAD)
                .sum::<usize>()
            + checks.iter().map(|c| check_bytes(&c.sk)).sum::<usize>();
        let single_actions = decision_actions + puts.len();
        let single_bytes = decision_bytes + puts.iter().map(|p| item_bytes(&p.slot)).sum::<usize>();
        if single_actions <= self.max_actions && single_bytes <= self.max_transaction_bytes {
            return Ok(false);
        }
        // A large commit's first transaction checks the written keys' checks too.
        let checked: Vec<&PlannedPut> = puts.iter().filter(|p| !p.conds.is_empty()).collect();
        let actions = decision_actions + checked.len();
        let bytes = decision_bytes
            + checked
                .iter()
                .map(|p| check_bytes(&p.slot.sk))
                .sum::<usize>();
        if actions > self.max_actions || bytes > self.max_transaction_bytes {
            return Err(KvError::bad(format!(
                "commit too large to store: its change record and checks need {actions} actions \
                 and {bytes} bytes in one transaction (the limits are {} actions and {} bytes)",
                self.max_actions, self.max_transaction_bytes
            )));
        }
        Ok(true)
    }
}

/// The sort keys (in order) grouped into the `TransactGetItems` that read them,
/// whatever their items hold: at most 100 items and 4 MB each, beside the head
/// if `with_head`. One group: one serializable read.
pub fn read_batches(sks: &[Vec<u8>], with_head: bool) -> Vec<Range<usize>> {
    let sizes: Vec<usize> = sks.iter().map(|sk| max_item_bytes_under(sk)).collect();
    let reserved = if with_head {
        (1, HEAD_ITEM_BYTES)
    } else {
        (0, 0)
    };
    group(
        &sizes,
        MAX_ITEMS_PER_COMMIT,
        DYNAMODB_MAX_TRANSACTION_BYTES,
        reserved,
    )
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
