//! Restoring a backup into a new database (issue 14, docs/restore.md): entries
//! written with their source's versionstamps and deadlines, outside the commit
//! path, then the head raised past them.
//!
//! A restore is not a commit: nothing else writes the database while it is being
//! restored (KV Connect refuses it), its entries keep the versions they had in the
//! source instead of taking new ones, and it writes no change record. So every
//! write is a plain idempotent put or delete: a step applied twice, or partly then
//! wholly, leaves each key as the step says.

use crate::items::{dynamo, item_from_slot, GONE};
use crate::purge::{BATCH_WRITE_ITEMS, CONCURRENT_BATCHES};
use crate::DynamoKv;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use futures_util::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, BTreeSet};
use subkv_core::dynamo::n;
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::keys::{is_bucket, sort_key};
use subkv_kv::model::{Entry, Slot};
use uuid::Uuid;

/// What one key of a restored database becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreWrite {
    /// The entry as the source had it: value, encoding, versionstamp
    /// (`version`, `seq`) and deadline.
    Put(Entry),
    /// The key is absent at the restored point (an entry a later step deleted,
    /// or one expired before the restore began).
    Delete(Vec<u8>),
}

impl RestoreWrite {
    fn key(&self) -> &[u8] {
        match self {
            RestoreWrite::Put(entry) => &entry.key,
            RestoreWrite::Delete(key) => key,
        }
    }
}

/// The items a step's writes leave, by sort key (None: no item), from the
/// writes and the current content of the bucket items they touch (`buckets`,
/// read first: long keys sharing a prefix share one item). The last write of a
/// key wins. A slot's version is its newest entry's.
pub(crate) fn restored_slots(
    writes: &[RestoreWrite],
    mut buckets: BTreeMap<Vec<u8>, Slot>,
) -> BTreeMap<Vec<u8>, Slot> {
    let mut slots: BTreeMap<Vec<u8>, Slot> = BTreeMap::new();
    for write in writes {
        let sk = sort_key(write.key());
        let slot = if is_bucket(&sk) {
            buckets
                .entry(sk.clone())
                .or_insert_with(|| Slot::empty(sk.clone()))
        } else {
            slots
                .entry(sk.clone())
                .or_insert_with(|| Slot::empty(sk.clone()))
        };
        match write {
            RestoreWrite::Put(entry) => slot.put(entry.clone()),
            RestoreWrite::Delete(key) => slot.remove(key),
        }
    }
    let touched: BTreeSet<Vec<u8>> = writes
        .iter()
        .map(|w| sort_key(w.key()))
        .filter(|sk| is_bucket(sk))
        .collect();
    slots.extend(buckets.into_iter().filter(|(sk, _)| touched.contains(sk)));
    for slot in slots.values_mut() {
        slot.version = slot.entries.iter().map(|e| e.version).max().unwrap_or(0);
    }
    slots
}

impl DynamoKv {
    /// Applies one restore step's writes to `database`. Idempotent: each key ends
    /// as its last write here says, however often, or however partly before, the
    /// step was applied. Long keys share bucket items, which are read, changed
    /// and written whole. An item DynamoDB could not store is refused (a 4xx:
    /// the backup cannot be restored here) before anything is written.
    ///
    /// Must not run beside commits on the same database: nothing is conditioned.
    pub async fn restore_writes(&self, database: Uuid, writes: &[RestoreWrite]) -> KvResult<()> {
        let bucket_sks: BTreeSet<Vec<u8>> = writes
            .iter()
            .map(|w| sort_key(w.key()))
            .filter(|sk| is_bucket(sk))
            .collect();
        let buckets = if bucket_sks.is_empty() {
            BTreeMap::new()
        } else {
            self.get_slots(database, &bucket_sks).await?
        };
        let slots = restored_slots(writes, buckets);
        if let Some(refusal) = slots.values().find_map(|s| self.budget.refuse_item(s)) {
            return Err(KvError::bad(format!(
                "the backup cannot be restored into DynamoDB: {refusal}"
            )));
        }
        let requests: Vec<WriteRequest> = slots
            .values()
            .map(|slot| {
                if slot.entries.is_empty() {
                    let key = Self::item_key(database, &slot.sk);
                    DeleteRequest::builder()
                        .set_key(Some(key))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                } else {
                    PutRequest::builder()
                        .set_item(Some(item_from_slot(database, slot)))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                }
            })
            .collect::<Result<_, _>>()
            .map_err(|e| KvError::Internal(format!("BatchWriteItem request: {e}")))?;
        // A step's writes are one per item and unconditioned, so their order does
        // not matter: several calls at once, as one partition takes ~1,000 WCU/s
        // and one call at a time (10-25 ms for 25 items) would not reach it.
        let batches: Vec<Vec<WriteRequest>> = requests
            .chunks(BATCH_WRITE_ITEMS)
            .map(<[WriteRequest]>::to_vec)
            .collect();
        futures_util::stream::iter(batches)
            .map(|batch| self.batch_write(&self.data_table, batch))
            .buffer_unordered(CONCURRENT_BATCHES)
            .try_collect::<()>()
            .await
    }

    /// Raises the head of `database` to at least `version`, never lowering it:
    /// after a restore, so that the next commit's versionstamp is greater than
    /// every restored one (an entry restored at `version` with a non-zero `seq`
    /// needs `version + 1`). Idempotent.
    pub async fn raise_head(&self, database: Uuid, version: u64) -> KvResult<()> {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        let result = self
            .client
            .update_item()
            .table_name(&self.data_table)
            .set_key(Some(Self::head_key(database)))
            .update_expression("SET #ver = :v")
            // Never onto a deleted database's head (`purge.rs`).
            .condition_expression(
                "(attribute_not_exists(#ver) OR #ver < :v) AND attribute_not_exists(#gone)",
            )
            .expression_attribute_names("#ver", crate::items::VER)
            .expression_attribute_names("#gone", GONE)
            .expression_attribute_values(":v", n(version))
            .send()
            .await;
        self.remember_head(database, None);
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo("UpdateItem", e)),
        }
    }
}

/// The head version a restore must leave so the next commit sorts after every
/// restored entry: the newest version, plus one if a restored versionstamp at
/// that version has a non-zero `seq` (the next commit is `head + 1`, `seq` 0).
pub fn head_after(entries: impl IntoIterator<Item = (u64, u16)>) -> u64 {
    entries
        .into_iter()
        .map(|(version, seq)| version + u64::from(seq != 0))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], version: u64, seq: u16) -> RestoreWrite {
        RestoreWrite::Put(Entry {
            key: key.to_vec(),
            value: vec![version as u8],
            encoding: 3,
            version,
            seq,
            expire_at_ms: None,
        })
    }

    fn long(tail: u8) -> Vec<u8> {
        [vec![2u8; 1000], vec![tail]].concat()
    }

    #[test]
    fn the_last_write_of_a_key_wins_and_deletes_leave_no_item() {
        let writes = vec![
            put(b"\x02a", 5, 0),
            put(b"\x02b", 6, 3),
            RestoreWrite::Delete(b"\x02a".to_vec()),
            put(b"\x02b", 7, 1),
        ];
        let slots = restored_slots(&writes, BTreeMap::new());
        assert_eq!(slots.len(), 2);
        assert!(slots[&b"\x02a".to_vec()].entries.is_empty(), "a delete");
        let b = &slots[&b"\x02b".to_vec()];
        assert_eq!((b.version, b.entries[0].seq), (7, 1));
        assert_eq!(b.entries.len(), 1);
    }

    #[test]
    fn long_keys_merge_into_their_bucket_as_read() {
        let sk = sort_key(&long(1));
        let mut current = Slot::empty(sk.clone());
        for (tail, version) in [(1u8, 3u64), (2, 9)] {
            if let RestoreWrite::Put(e) = put(&long(tail), version, 0) {
                current.put(e);
            }
        }
        let writes = vec![
            put(&long(3), 4, 2),
            RestoreWrite::Delete(long(2)),
            RestoreWrite::Delete(long(7)),
        ];
        let slots = restored_slots(&writes, BTreeMap::from([(sk.clone(), current)]));
        let bucket = &slots[&sk];
        let keys: Vec<&[u8]> = bucket.entries.iter().map(|e| e.key.as_slice()).collect();
        assert_eq!(keys, vec![long(1).as_slice(), long(3).as_slice()]);
        assert_eq!(
            bucket.version, 4,
            "the newest entry left, not the deleted one"
        );
        // Applying the same writes to what they left changes nothing.
        let again = restored_slots(&writes, slots.clone());
        assert_eq!(again, slots);
    }

    #[test]
    fn a_bucket_emptied_by_the_step_is_deleted() {
        let sk = sort_key(&long(1));
        let mut current = Slot::empty(sk.clone());
        if let RestoreWrite::Put(e) = put(&long(1), 3, 0) {
            current.put(e);
        }
        let slots = restored_slots(
            &[RestoreWrite::Delete(long(1))],
            BTreeMap::from([(sk.clone(), current)]),
        );
        assert!(slots[&sk].entries.is_empty());
        assert_eq!(slots[&sk].version, 0);
    }

    #[test]
    fn the_head_passes_every_restored_versionstamp() {
        assert_eq!(head_after([]), 0);
        assert_eq!(head_after([(5, 0), (3, 0)]), 5);
        assert_eq!(head_after([(5, 1), (3, 0)]), 6);
        assert_eq!(head_after([(5, 0), (5, 9)]), 6);
    }
}
