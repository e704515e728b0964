//! Large commits: more items than one transaction holds. The commit's first
//! transaction marks the head pending; the items follow here ([`DynamoKv::finish`]),
//! and whoever meets a pending head finishes the commit from its change record
//! ([`DynamoKv::roll_forward`]). A commit that cannot be written whole is never
//! left pending: `resolve.rs` abandons or trims it.

use crate::cancellation::is_refusal;
use crate::items::{
    dynamo, log_sk, malformed, slot_from_item, slot_write, validation_refusal, GONE, LOG_MUTATIONS,
    LOG_REQUEST, LOG_TIME, PENDING, VER,
};
use crate::{backoff, now_ms, DynamoKv, MAX_ATTEMPTS};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, TransactWriteItem};
use denokv_proto::backup::{BackupKvMutationKind, BackupMutationRange, BackupReplicationLogEntry};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};
use subkv_core::dynamo::{b, get_b, get_s, n, Item};
use subkv_kv::budget::item_bytes;
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::keys::{is_bucket, sort_key};
use subkv_kv::model::{Entry, Slot};
use uuid::Uuid;

/// The change record of a pending commit, as finishing or resolving it needs it.
#[derive(Debug, Clone)]
pub(crate) struct PendingRecord {
    /// Every entry, in order.
    pub(crate) entries: Vec<BackupReplicationLogEntry>,
    pub(crate) timestamp_ms: u64,
    /// The request token of the commit.
    pub(crate) request: Option<String>,
    /// How many change-log items hold it.
    pub(crate) parts: usize,
}

/// How a pending commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Applied whole (here or by someone else).
    Applied,
    /// Nothing of it was applied and it cannot be: it did not happen (its version
    /// is a commit that changes nothing). Why.
    Abandoned(String),
    /// Part of it was applied (by a build that did not size items) and the rest
    /// cannot be: it stands without the mutations of the items that cannot be
    /// stored, and its change record says so. Why.
    Trimmed(String),
    /// Writing its items outlasted the deadline given: still pending, the next
    /// reader or writer finishes it.
    Deferred,
}

/// What writing some of a pending commit's items came to.
#[derive(Debug)]
pub(crate) enum Written {
    Done,
    /// The commit is no longer pending (finished or resolved by someone else).
    MovedOn,
    /// DynamoDB refused the transaction that holds these items (nothing of it
    /// was written, nor any after it). Why.
    Refused(BTreeSet<Vec<u8>>, String),
    /// The deadline passed before all were written (none is half-written).
    Deferred,
}

impl DynamoKv {
    /// Writes the items of the pending large commit `version`, then clears the
    /// pending mark. Items over the size limit (only a commit planned without the
    /// limit has them) or a transaction DynamoDB refuses end in `resolve`, never in
    /// a commit left pending: a pending head blocks every reader and writer.
    pub(crate) async fn finish(
        &self,
        database: Uuid,
        version: u64,
        record: &PendingRecord,
        slots: Vec<Slot>,
        now: i64,
        deadline: Option<std::time::Instant>,
    ) -> KvResult<Finished> {
        let why = match slots.iter().find_map(|s| self.budget.refuse_item(s)) {
            Some(refusal) => refusal.to_string(),
            None => match self
                .write_items(database, version, &slots, deadline)
                .await?
            {
                Written::Done => {
                    self.clear_pending(database, version, now).await?;
                    return Ok(Finished::Applied);
                }
                Written::MovedOn => return Ok(Finished::Applied),
                Written::Deferred => return Ok(Finished::Deferred),
                Written::Refused(_, why) => why,
            },
        };
        self.resolve(database, version, record, slots, why, now)
            .await
    }

    /// Writes these items of the pending commit `version`, grouped into
    /// transactions by count and size, each on condition that the head is still
    /// pending with this commit: once it is resolved, no late writer adds to it.
    /// Puts (and deletes) of fully determined content, so repeating them is harmless.
    pub(crate) async fn write_items(
        &self,
        database: Uuid,
        version: u64,
        slots: &[Slot],
        deadline: Option<std::time::Instant>,
    ) -> KvResult<Written> {
        let sizes: Vec<usize> = slots.iter().map(item_bytes).collect();
        for (sent, run) in self
            .budget
            .item_transactions(&sizes)
            .into_iter()
            .enumerate()
        {
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(Written::Deferred);
            }
            if self.crash_after == Some(sent) {
                return Err(KvError::Internal(format!(
                    "simulated crash after the intent and {sent} transactions of items"
                )));
            }
            if self.hooks.fail_items_after == Some(sent) {
                return Err(KvError::Unavailable(format!(
                    "simulated throttling after the intent and {sent} transactions of items"
                )));
            }
            let mut actions = vec![self.pending_check(database, version)?];
            for slot in &slots[run.clone()] {
                let condition = (
                    format!("attribute_not_exists({VER}) OR {VER} <= :v"),
                    Item::from([(":v".to_string(), n(version))]),
                );
                actions.push(slot_write(
                    &self.data_table,
                    database,
                    slot,
                    Some(condition),
                )?);
            }
            match self.send_items(actions).await? {
                Written::Done => {}
                Written::MovedOn => return Ok(Written::MovedOn),
                Written::Deferred => return Ok(Written::Deferred),
                Written::Refused(_, why) => {
                    let sks = slots[run].iter().map(|s| s.sk.clone()).collect();
                    return Ok(Written::Refused(sks, why));
                }
            }
        }
        Ok(Written::Done)
    }

    /// A condition on the head: the commit `version` is still pending.
    fn pending_check(&self, database: Uuid, version: u64) -> KvResult<TransactWriteItem> {
        let check = ConditionCheck::builder()
            .table_name(&self.data_table)
            .set_key(Some(Self::head_key(database)))
            .condition_expression(format!("{VER} = :v AND attribute_exists({PENDING})"))
            .expression_attribute_values(":v", n(version))
            .build()
            .map_err(request_error)?;
        Ok(TransactWriteItem::builder().condition_check(check).build())
    }

    /// Sends one transaction of a pending commit's items: retries conflicts,
    /// throttling and transient failures, tells a failed condition (the commit
    /// is no longer pending) from a refusal (the same request cannot succeed).
    async fn send_items(&self, actions: Vec<TransactWriteItem>) -> KvResult<Written> {
        let mut attempt = 0;
        loop {
            let sent = self
                .client
                .transact_write_items()
                .set_transact_items(Some(actions.clone()))
                .send()
                .await;
            let Err(err) = sent else {
                return Ok(Written::Done);
            };
            if let Some(why) = validation_refusal(&err) {
                return Ok(Written::Refused(BTreeSet::new(), why));
            }
            match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
                    let reasons = e.cancellation_reasons();
                    if reasons
                        .iter()
                        .any(|r| r.code() == Some("ConditionalCheckFailed"))
                    {
                        return Ok(Written::MovedOn);
                    }
                    if let Some(r) = reasons
                        .iter()
                        .find(|r| is_refusal(r.code().unwrap_or("None")))
                    {
                        let why = format!(
                            "{}: {}",
                            r.code().unwrap_or_default(),
                            r.message().unwrap_or("refused")
                        );
                        return Ok(Written::Refused(BTreeSet::new(), why));
                    }
                }
                Some(TransactWriteItemsError::TransactionInProgressException(_)) => {}
                _ => match dynamo("TransactWriteItems", err) {
                    KvError::Unavailable(_) => {}
                    other => return Err(other),
                },
            }
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(KvError::Unavailable(
                    "a large commit keeps conflicting while it is applied; retry".into(),
                ));
            }
            backoff(attempt.min(6)).await;
        }
    }

    /// Clears the head's pending mark: the commit `version` is applied.
    async fn clear_pending(&self, database: Uuid, version: u64, now: i64) -> KvResult<()> {
        let mut head_item = Self::head_key(database);
        head_item.insert(VER.into(), n(version));
        head_item.insert(LOG_TIME.into(), n(now));
        let done = self
            .client
            .put_item()
            .table_name(&self.data_table)
            .set_item(Some(head_item))
            .condition_expression(format!(
                "{VER} = :v AND attribute_exists({PENDING}) AND attribute_not_exists({GONE})"
            ))
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
    /// record and writes them, or resolves a commit that cannot be written whole.
    pub(crate) async fn roll_forward(&self, database: Uuid, version: u64) -> KvResult<()> {
        tracing::info!(%database, version, "finishing a pending large commit");
        let record = self.pending_record(database, version).await?;
        let slots = self.rebuild(database, version, &record.entries).await?;
        self.finish(database, version, &record, slots, now_ms(), None)
            .await
            .map(|_| ())
    }

    /// The items the commit `version` writes that are not written yet, rebuilt
    /// from its entries. Nothing else can commit while it is pending, so a bucket
    /// read now is as the commit found it, or already applied (`kv_ver = version`).
    async fn rebuild(
        &self,
        database: Uuid,
        version: u64,
        entries: &[BackupReplicationLogEntry],
    ) -> KvResult<Vec<Slot>> {
        let mut slots: BTreeMap<Vec<u8>, Slot> = BTreeMap::new();
        let buckets: BTreeSet<Vec<u8>> = entries
            .iter()
            .map(|e| sort_key(&e.key))
            .filter(|sk| is_bucket(sk))
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
        for entry in entries {
            let sk = sort_key(&entry.key);
            let slot = slots.entry(sk.clone()).or_insert_with(|| Slot::empty(sk));
            if slot.version == version {
                continue; // this bucket is already applied
            }
            if entry.kind == BackupKvMutationKind::MkClear as i32 {
                slot.remove(&entry.key);
            } else {
                slot.put(Entry {
                    key: entry.key.clone(),
                    value: entry.value.clone(),
                    encoding: entry.value_encoding as i64,
                    version,
                    seq: 0,
                    expire_at_ms: (entry.expire_at_ms > 0).then_some(entry.expire_at_ms as i64),
                });
            }
        }
        Ok(slots
            .into_values()
            .filter(|s| s.version != version)
            .map(|mut s| {
                s.version = version;
                s
            })
            .collect())
    }

    /// The change record of `version`, with its time, request token and parts.
    async fn pending_record(&self, database: Uuid, version: u64) -> KvResult<PendingRecord> {
        let mut record = PendingRecord {
            entries: Vec::new(),
            timestamp_ms: 0,
            request: None,
            parts: 0,
        };
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
                if record.parts == 0 {
                    record.timestamp_ms = range.timestamp_ms;
                    record.request = get_s(item, LOG_REQUEST).map(str::to_string);
                }
                record.parts += 1;
                record.entries.extend(range.entries);
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => break,
            }
        }
        if record.entries.is_empty() {
            return Err(KvError::Internal(format!(
                "database {database}: pending commit {version} has no change record"
            )));
        }
        Ok(record)
    }
}

pub(crate) fn request_error(e: aws_sdk_dynamodb::error::BuildError) -> KvError {
    KvError::Internal(format!("TransactWriteItems request: {e}"))
}
