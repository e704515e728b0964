//! Large commits: more items than one transaction holds. The commit's
//! transaction marks the head pending; the items follow here (`apply`), and
//! whoever meets a pending head finishes the commit from its change record
//! (`roll_forward`).

use crate::items::{
    dynamo, item_from_slot, log_sk, malformed, slot_from_item, LOG_MUTATIONS, LOG_TIME, PENDING,
    VER,
};
use crate::{backoff, now_ms, DynamoKv, MAX_ATTEMPTS};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use denokv_proto::backup::{BackupMutationRange, BackupReplicationLogEntry};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use subkv_core::dynamo::{b, get_b, n};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::keys::sort_key;
use subkv_kv::limits::MAX_ITEMS_PER_COMMIT;
use subkv_kv::model::{Entry, Slot};
use uuid::Uuid;

impl DynamoKv {
    /// Writes the items of the large commit `version` (at most 100 per
    /// transaction; puts of fully determined content, so repeating them is
    /// harmless), then clears the pending mark on the head.
    pub(crate) async fn apply(
        &self,
        database: Uuid,
        version: u64,
        slots: &[Slot],
        now: i64,
    ) -> KvResult<()> {
        for chunk in slots.chunks(MAX_ITEMS_PER_COMMIT) {
            let actions = chunk
                .iter()
                .map(|slot| {
                    Put::builder()
                        .table_name(&self.data_table)
                        .set_item(Some(item_from_slot(database, slot, now)))
                        // Never over a later commit: if another process finished
                        // this commit and the database moved on, stop.
                        .condition_expression(format!("attribute_not_exists({VER}) OR {VER} <= :v"))
                        .expression_attribute_values(":v", n(version))
                        .build()
                        .map(|put| TransactWriteItem::builder().put(put).build())
                        .map_err(|e| KvError::Internal(format!("TransactWriteItems request: {e}")))
                })
                .collect::<KvResult<Vec<_>>>()?;
            // Idempotent, so transient failures are simply retried.
            let mut attempt = 0;
            loop {
                let sent = self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(actions.clone()))
                    .send()
                    .await;
                let Err(err) = sent else { break };
                let moved_on = matches!(
                    err.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(e))
                        if e.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
                );
                if moved_on {
                    return Ok(());
                }
                let conflict = matches!(
                    err.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(_))
                        | Some(TransactWriteItemsError::TransactionInProgressException(_))
                );
                if conflict && attempt < MAX_ATTEMPTS {
                    attempt += 1;
                    backoff(attempt.min(6)).await;
                    continue;
                }
                match dynamo("TransactWriteItems", err) {
                    KvError::Unavailable(_) if attempt < MAX_ATTEMPTS => attempt += 1,
                    other => return Err(other),
                }
                backoff(attempt.min(6)).await;
            }
        }
        let mut head_item = Self::head_key(database);
        head_item.insert(VER.into(), n(version));
        head_item.insert(LOG_TIME.into(), n(now));
        let done = self
            .client
            .put_item()
            .table_name(&self.data_table)
            .set_item(Some(head_item))
            .condition_expression(format!("{VER} = :v AND attribute_exists({PENDING})"))
            .expression_attribute_values(":v", n(version))
            .send()
            .await;
        match done {
            Ok(_) => Ok(()),
            // Someone else finished it first.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo("PutItem", e)),
        }
    }

    /// Finishes the large commit `version` that the head marks pending (its
    /// committer may have crashed): rebuilds every item it writes from its change
    /// record and applies them. Nothing else can commit meanwhile (the head is
    /// pending), so reading buckets now reads them as the commit found them, or
    /// already applied (`kv_ver = version`).
    pub(crate) async fn roll_forward(&self, database: Uuid, version: u64) -> KvResult<()> {
        tracing::info!(%database, version, "finishing a pending large commit");
        let parts = self.change_record(database, version).await?;
        let mut slots: BTreeMap<Vec<u8>, Slot> = BTreeMap::new();
        let buckets: BTreeSet<Vec<u8>> = parts
            .iter()
            .map(|e| sort_key(&e.key))
            .filter(|sk| subkv_kv::keys::is_bucket(sk))
            .collect();
        for sk in &buckets {
            let out = self
                .client
                .get_item()
                .table_name(&self.data_table)
                .set_key(Some(Self::item_key(database, sk)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo("GetItem", e))?;
            let slot = match out.item {
                Some(item) => slot_from_item(&item)?,
                None => Slot::empty(sk.clone()),
            };
            slots.insert(sk.clone(), slot);
        }
        let now = now_ms();
        for entry in &parts {
            let sk = sort_key(&entry.key);
            let slot = slots.entry(sk.clone()).or_insert_with(|| Slot::empty(sk));
            if slot.version == version {
                continue; // this bucket is already applied
            }
            if entry.kind == denokv_proto::backup::BackupKvMutationKind::MkClear as i32 {
                slot.remove(&entry.key);
            } else {
                slot.put(Entry {
                    key: entry.key.clone(),
                    value: entry.value.clone(),
                    encoding: entry.value_encoding as i64,
                    version,
                    expire_at_ms: (entry.expire_at_ms > 0).then_some(entry.expire_at_ms as i64),
                });
            }
        }
        let slots: Vec<Slot> = slots
            .into_values()
            .filter(|s| s.version != version)
            .map(|mut s| {
                s.version = version;
                s
            })
            .collect();
        self.apply(database, version, &slots, now).await
    }

    /// Every entry of the change record of `version`, in order.
    async fn change_record(
        &self,
        database: Uuid,
        version: u64,
    ) -> KvResult<Vec<BackupReplicationLogEntry>> {
        let mut entries = Vec::new();
        let mut start_key = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.log_table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
                .expression_attribute_values(":lo", b(log_sk(version, 0)))
                .expression_attribute_values(":hi", b(log_sk(version, u16::MAX)))
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                let body = get_b(item, LOG_MUTATIONS).ok_or_else(|| malformed("log body"))?;
                let range = BackupMutationRange::decode(body).map_err(|_| malformed("log body"))?;
                entries.extend(range.entries);
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => break,
            }
        }
        if entries.is_empty() {
            return Err(KvError::Internal(format!(
                "database {database}: pending commit {version} has no change record"
            )));
        }
        Ok(entries)
    }
}
