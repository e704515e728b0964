//! A pending large commit that cannot be written whole: an item over DynamoDB's
//! size limit (only a commit decided by a build that did not size items has one:
//! planning refuses them now), or a transaction DynamoDB refuses for what it is.
//! Retrying cannot help, and a pending head blocks every reader and writer of the
//! database, so the commit is resolved at once, by whoever meets it:
//!
//! - **abandoned** if none of its items was written yet: its change record becomes
//!   a commit that changes nothing (the deletion of the empty key, as the backup
//!   format's marker commits are), and the head's pending mark is cleared. The
//!   commit did not happen; its version number is used up. All or nothing holds.
//! - **trimmed** otherwise: the items that can be written are, and the change
//!   record is rewritten without the mutations of those that cannot. Not all or
//!   nothing (that was lost when part of it was written), but the database, its
//!   change record and so its backups agree, and the database is usable.
//!
//! Both rewrite the change record and clear the head in one transaction, on
//! condition that the head is still pending with this commit. Backups never see
//! the record before (`change_log` stops before a pending commit), and no late
//! writer adds items after (each transaction of items checks the head).

use crate::items::{dynamo, log_sk, validation_refusal, GONE, LOG_TIME, PENDING, PK, SK, VER};
use crate::large::{request_error, Finished, PendingRecord, Written};
use crate::{backoff, DynamoKv, MAX_ATTEMPTS};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use denokv_proto::backup::BackupReplicationLogEntry;
use futures_util::{StreamExt, TryStreamExt};
use std::collections::BTreeSet;
use subkv_core::dynamo::{b, get_n, n, Item};
use subkv_kv::backup_format::{no_op_entry, COMMIT_END};
use subkv_kv::budget::log_parts;
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::keys::sort_key;
use subkv_kv::model::Slot;
use uuid::Uuid;

/// How many items' versions are read at once to find what a commit applied.
const PARALLEL_READS: usize = 16;

/// The entries of a change record without those of the items `refused`, the last
/// one kept marking the commit's end (`0xffff`), as the backup format wants.
pub(crate) fn trimmed(
    entries: &[BackupReplicationLogEntry],
    refused: &BTreeSet<Vec<u8>>,
) -> Vec<BackupReplicationLogEntry> {
    let mut kept: Vec<BackupReplicationLogEntry> = entries
        .iter()
        .filter(|e| !refused.contains(&sort_key(&e.key)))
        .cloned()
        .collect();
    if let Some(last) = kept.last_mut() {
        if let Some(index) = last.versionstamp.get_mut(10..12) {
            index.copy_from_slice(&COMMIT_END.to_be_bytes());
        }
    }
    kept
}

impl DynamoKv {
    /// Resolves the pending commit `version`, some of whose items cannot be
    /// written (`why`; see the module doc). `slots`: its items not written yet.
    pub(crate) async fn resolve(
        &self,
        database: Uuid,
        version: u64,
        record: &PendingRecord,
        slots: Vec<Slot>,
        why: String,
        now: i64,
    ) -> KvResult<Finished> {
        let sks: BTreeSet<Vec<u8>> = record.entries.iter().map(|e| sort_key(&e.key)).collect();
        let applied = self.applied_items(database, version, sks).await?;
        if applied.is_empty() {
            self.replace_record(database, version, record, vec![no_op_entry(version)], now)
                .await?;
            tracing::error!(%database, version, %why, "abandoned a pending commit that cannot be stored: nothing of it was applied");
            return Ok(Finished::Abandoned(why));
        }
        // Part of it is visible already: write every item that can be written
        // (an item DynamoDB already holds was storable, whatever its size bound).
        let mut rest: Vec<Slot> = slots
            .into_iter()
            .filter(|s| !applied.contains(&s.sk))
            .collect();
        let mut refused: BTreeSet<Vec<u8>> = rest
            .iter()
            .filter(|s| self.budget.refuse_item(s).is_some())
            .map(|s| s.sk.clone())
            .collect();
        rest.retain(|s| !refused.contains(&s.sk));
        loop {
            let group = match self.write_items(database, version, &rest, None).await? {
                Written::Done => break,
                // (Never Deferred: resolving has no deadline.)
                Written::MovedOn | Written::Deferred => return Ok(Finished::Trimmed(why)),
                Written::Refused(group, _) => group,
            };
            // A transaction of several items was refused: find which, one at a
            // time (all or nothing was lost already; keep all that can be kept).
            for slot in rest.iter().filter(|s| group.contains(&s.sk)) {
                let alone = std::slice::from_ref(slot);
                match self.write_items(database, version, alone, None).await? {
                    Written::Done => {}
                    Written::MovedOn | Written::Deferred => return Ok(Finished::Trimmed(why)),
                    Written::Refused(..) => {
                        refused.insert(slot.sk.clone());
                    }
                }
            }
            rest.retain(|s| !group.contains(&s.sk));
        }
        let kept = trimmed(&record.entries, &refused);
        self.replace_record(database, version, record, kept, now)
            .await?;
        tracing::error!(%database, version, %why, refused = refused.len(), "finished a pending commit without the items that cannot be stored");
        Ok(Finished::Trimmed(why))
    }

    /// The sort keys among `sks` whose item the commit `version` wrote.
    async fn applied_items(
        &self,
        database: Uuid,
        version: u64,
        sks: BTreeSet<Vec<u8>>,
    ) -> KvResult<BTreeSet<Vec<u8>>> {
        let reads = futures_util::stream::iter(sks).map(|sk| async move {
            let out = self
                .client
                .get_item()
                .table_name(&self.data_table)
                .set_key(Some(Self::item_key(database, &sk)))
                .projection_expression(VER)
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo("GetItem", e))?;
            let at: Option<u64> = out.item.as_ref().and_then(|i| get_n(i, VER));
            Ok::<_, KvError>((at == Some(version)).then_some(sk))
        });
        let found: Vec<Option<Vec<u8>>> =
            reads.buffer_unordered(PARALLEL_READS).try_collect().await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// One transaction: the change record of `version` replaced by `entries`
    /// (its surplus parts deleted) and the head's pending mark cleared, on
    /// condition that the commit is still pending (else someone else did it).
    async fn replace_record(
        &self,
        database: Uuid,
        version: u64,
        record: &PendingRecord,
        entries: Vec<BackupReplicationLogEntry>,
        now: i64,
    ) -> KvResult<()> {
        let mut head = Self::head_key(database);
        head.insert(VER.into(), n(version));
        head.insert(LOG_TIME.into(), n(now));
        let head = Put::builder()
            .table_name(&self.data_table)
            .set_item(Some(head))
            .condition_expression(format!(
                "{VER} = :v AND attribute_exists({PENDING}) AND attribute_not_exists({GONE})"
            ))
            .expression_attribute_values(":v", n(version))
            .build()
            .map_err(request_error)?;
        let parts = log_parts(&entries, record.timestamp_ms);
        let mut actions = vec![TransactWriteItem::builder().put(head).build()];
        actions.extend(self.change_record_puts(
            database,
            version,
            now,
            record.request.as_deref(),
            parts.clone(),
            false,
        )?);
        for part in parts.len()..record.parts {
            let key = Item::from([
                (PK.into(), AttributeValue::S(database.to_string())),
                (SK.into(), b(log_sk(version, part as u16))),
            ]);
            let delete = Delete::builder()
                .table_name(&self.log_table)
                .set_key(Some(key))
                .build()
                .map_err(request_error)?;
            actions.push(TransactWriteItem::builder().delete(delete).build());
        }
        for attempt in 0..MAX_ATTEMPTS {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .send()
                .await;
            let Err(err) = sent else { return Ok(()) };
            if let Some(why) = validation_refusal(&err) {
                return Err(KvError::Internal(format!(
                    "rewriting the change record of {version}: {why}"
                )));
            }
            match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e))
                    if e.cancellation_reasons()
                        .first()
                        .is_some_and(|r| r.code() == Some("ConditionalCheckFailed")) =>
                {
                    return Ok(());
                }
                Some(TransactWriteItemsError::TransactionCanceledException(_))
                | Some(TransactWriteItemsError::TransactionInProgressException(_)) => {}
                _ => match dynamo("TransactWriteItems", err) {
                    KvError::Unavailable(_) => {}
                    other => return Err(other),
                },
            }
            backoff(attempt.min(6)).await;
        }
        Err(KvError::Unavailable(
            "resolving a pending commit keeps conflicting; retry".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use denokv_proto::backup::BackupKvMutationKind;
    use subkv_kv::backup_format::versionstamp12;

    fn entry(key: Vec<u8>, index: u16) -> BackupReplicationLogEntry {
        BackupReplicationLogEntry {
            versionstamp: versionstamp12(7, index).to_vec(),
            kind: BackupKvMutationKind::MkSet as i32,
            key,
            value: vec![1],
            value_encoding: 3,
            expire_at_ms: 0,
        }
    }

    #[test]
    fn a_trimmed_record_keeps_the_other_entries_and_ends_its_commit() {
        let long = |i: u8| [vec![9u8; 1000], vec![i]].concat();
        let entries = vec![
            entry(b"\x02a\x00".to_vec(), 0),
            entry(long(1), 1),
            entry(b"\x02b\x00".to_vec(), 2),
            entry(long(2), COMMIT_END),
        ];
        let refused = BTreeSet::from([sort_key(&long(1))]);
        let kept = trimmed(&entries, &refused);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0], entries[0]);
        assert_eq!(kept[1].key, entries[2].key);
        assert_eq!(&kept[1].versionstamp[10..], &COMMIT_END.to_be_bytes());
        // Nothing refused: the record as it was.
        assert_eq!(trimmed(&entries, &BTreeSet::new()), entries);
        // Everything refused: nothing left (such a commit is abandoned instead).
        let all = entries.iter().map(|e| sort_key(&e.key)).collect();
        assert!(trimmed(&entries, &all).is_empty());
    }

    #[test]
    fn an_abandoned_commit_changes_nothing_in_the_backup_format() {
        let entry = no_op_entry(7);
        assert!(entry.key.is_empty());
        assert_eq!(entry.kind, BackupKvMutationKind::MkClear as i32);
        assert_eq!(entry.versionstamp, versionstamp12(7, COMMIT_END).to_vec());
    }
}
