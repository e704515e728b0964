//! Where a restore runs to and from: the [`Job`] in the control table and the
//! new database through the KV engine's restore write path.
//!
//! The restore item is `pk = DB#<database>`, `sk = RESTORE` (beside the
//! database's owner item): the API's [`RestoreRequest`] (written with the
//! database), `dueIndex = restore` while the restore is pending (the work list),
//! `leaseUntil` while an invocation holds it, and attribute `job`: the [`Job`] as
//! JSON. Every change is one
//! `UpdateItem` on condition that `job` is still the JSON the invocation read
//! (serializing a job always gives the same text), so of two invocations only
//! one advances a restore, and a restore whose item is gone (cancelled) stops.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use std::sync::Arc;
use subkv_backup::restore::{Job, JobStore, RestoreSink, SinkFault, StoreFault};
use subkv_core::control::locator::{DUE_INDEX_PK, DUE_INDEX_RESTORE, RESTORE_SK};
use subkv_core::control::records::RestoreRequest;
use subkv_core::control::{due_items, PK, SK};
use subkv_core::dynamo::{describe, get_s, is_condition_failure, s, store_error, Item};
use subkv_core::error::StoreError;
use subkv_dynamo_kv::{DynamoKv, RestoreWrite};
use subkv_kv::error::KvError;
use uuid::Uuid;

/// The job's attribute.
const JOB: &str = "job";
/// Until when (ms since the epoch) an invocation holds the restore.
const LEASE: &str = "leaseUntil";
/// `RestoreRequest::secret_access_key_ciphertext`'s attribute.
const SECRET: &str = "secretAccessKeyCiphertext";

/// The databases whose restore is pending: the restore items on the control
/// table's `due` index under [`DUE_INDEX_RESTORE`] (removed when a restore ends).
pub async fn pending(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(due_items(client, table, DUE_INDEX_RESTORE)
        .await?
        .iter()
        .filter_map(|item| get_s(item, "databaseId").and_then(|id| Uuid::parse_str(id).ok()))
        .collect())
}

/// The restore job of one database, in the control table.
pub struct DynamoJobStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    database: Uuid,
}

impl DynamoJobStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String, database: Uuid) -> Self {
        Self {
            client,
            table,
            database,
        }
    }

    fn key(&self) -> Item {
        Item::from([
            (PK.into(), s(format!("DB#{}", self.database))),
            (SK.into(), s(RESTORE_SK)),
        ])
    }

    fn text(job: &Job) -> Result<String, StoreFault> {
        serde_json::to_string(job)
            .map_err(|e| StoreFault::Transient(format!("encoding the job: {e}")))
    }

    /// Stores a new job; false if the database already has one.
    pub async fn create(&self, job: &Job) -> Result<bool, StoreError> {
        let mut item = self.key();
        let text = serde_json::to_string(job)
            .map_err(|e| StoreError::Malformed(format!("encoding the job: {e}")))?;
        item.insert(JOB.into(), s(text));
        match self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(store_error("PutItem", e)),
        }
    }

    async fn item(&self) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item)
    }

    fn job_of(item: &Item) -> Result<Option<Job>, StoreError> {
        get_s(item, JOB)
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|e| StoreError::Malformed(format!("restore job: {e}")))
            })
            .transpose()
    }

    /// The stored job, if any.
    pub async fn load(&self) -> Result<Option<Job>, StoreError> {
        match self.item().await? {
            Some(item) => Self::job_of(&item),
            None => Ok(None),
        }
    }

    /// The restore as the API asked for it, and its job once begun.
    pub async fn load_restore(&self) -> Result<Option<(RestoreRequest, Option<Job>)>, StoreError> {
        let Some(item) = self.item().await? else {
            return Ok(None);
        };
        let job = Self::job_of(&item)?;
        let request = serde_dynamo::from_item(item)
            .map_err(|e| StoreError::Malformed(format!("restore request: {e}")))?;
        Ok(Some((request, job)))
    }

    /// Takes the restore for one invocation, until `until_ms`: false if another
    /// invocation holds it (its lease not yet run out) or it is gone. The lease
    /// only saves duplicate work: the job's conditional saves keep two
    /// invocations from both advancing it.
    pub async fn claim(&self, now_ms: i64, until_ms: i64) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression("SET #lease = :until")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#lease) OR #lease < :now)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#lease", LEASE)
            .expression_attribute_values(":until", AttributeValue::N(until_ms.to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }

    /// Gives the restore back for the next invocation (`ended`: false), or takes
    /// it off the work list for good and deletes the sealed secret (`ended`:
    /// true, the restore is active or failed). The job stays, so the item shows
    /// how the restore ended.
    pub async fn release(&self, ended: bool) -> Result<(), StoreError> {
        let update = if ended {
            "REMOVE #lease, #due, #secret"
        } else {
            "REMOVE #lease"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression(update)
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#lease", LEASE);
        if ended {
            request = request
                .expression_attribute_names("#due", DUE_INDEX_PK)
                .expression_attribute_names("#secret", SECRET);
        }
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn save(&self, previous: &Job, next: &Job) -> Result<(), StoreFault> {
        // A restore asked for by the API has no job until its first change: the
        // request item stands for `New`.
        let condition = if matches!(previous, Job::New { .. }) {
            "attribute_exists(#pk) AND (attribute_not_exists(#job) OR #job = :previous)"
        } else {
            "#job = :previous"
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression("SET #job = :next")
            .condition_expression(condition)
            .expression_attribute_names("#job", JOB);
        if matches!(previous, Job::New { .. }) {
            update = update.expression_attribute_names("#pk", PK);
        }
        let result = update
            .expression_attribute_values(":next", AttributeValue::S(Self::text(next)?))
            .expression_attribute_values(":previous", AttributeValue::S(Self::text(previous)?))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreFault::Superseded),
            Err(e) => Err(StoreFault::Transient(format!(
                "UpdateItem: {}",
                describe(&e)
            ))),
        }
    }
}

/// The new database, written by the KV engine's restore path.
pub struct KvSink {
    kv: Arc<DynamoKv>,
    database: Uuid,
}

impl KvSink {
    pub fn new(kv: impl Into<Arc<DynamoKv>>, database: Uuid) -> Self {
        Self {
            kv: kv.into(),
            database,
        }
    }
}

/// What the engine's error means for the restore: only what DynamoDB refuses
/// for what it is (an item too large) fails it; the rest is retried later.
fn sink_fault(err: KvError) -> SinkFault {
    match err {
        KvError::BadRequest(message) => SinkFault::Refused(message),
        other => SinkFault::Transient(match other {
            KvError::Internal(detail) | KvError::Malformed(detail) => detail,
            other => other.to_string(),
        }),
    }
}

#[async_trait]
impl RestoreSink for KvSink {
    async fn apply(&self, writes: Vec<RestoreWrite>) -> Result<(), SinkFault> {
        self.kv
            .restore_writes(self.database, &writes)
            .await
            .map_err(sink_fault)
    }

    async fn raise_head(&self, version: u64) -> Result<(), SinkFault> {
        self.kv
            .raise_head(self.database, version)
            .await
            .map_err(sink_fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_dynamodb_refuses_fails_a_restore() {
        assert_eq!(
            sink_fault(KvError::bad("an entry too large")),
            SinkFault::Refused("an entry too large".into())
        );
        assert_eq!(
            sink_fault(KvError::Unavailable("busy".into())),
            SinkFault::Transient("busy".into())
        );
        assert_eq!(
            sink_fault(KvError::Internal("BatchWriteItem: timeout".into())),
            SinkFault::Transient("BatchWriteItem: timeout".into())
        );
    }
}
