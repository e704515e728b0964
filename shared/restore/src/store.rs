//! Where a restore runs to and from: the [`Job`] in the control table and the
//! new database through the KV engine's restore write path.
//!
//! The job item is `pk = DB#<database>`, `sk = RESTORE` (beside the database's
//! owner item), attribute `job`: the [`Job`] as JSON. Every change is one
//! `UpdateItem` on condition that `job` is still the JSON the invocation read
//! (serializing a job always gives the same text), so of two invocations only
//! one advances a restore, and a restore whose item is gone (cancelled) stops.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use subkv_backup::restore::{Job, JobStore, RestoreSink, SinkFault, StoreFault};
use subkv_core::control::{PK, SK};
use subkv_core::dynamo::{describe, get_s, is_condition_failure, s, store_error, Item};
use subkv_core::error::StoreError;
use subkv_dynamo_kv::{DynamoKv, RestoreWrite};
use subkv_kv::error::KvError;
use uuid::Uuid;

/// The job's attribute.
const JOB: &str = "job";

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
            (SK.into(), s("RESTORE")),
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

    /// The stored job, if any.
    pub async fn load(&self) -> Result<Option<Job>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let text =
            get_s(&item, JOB).ok_or_else(|| StoreError::Malformed("restore job: no job".into()))?;
        serde_json::from_str(text)
            .map(Some)
            .map_err(|e| StoreError::Malformed(format!("restore job: {e}")))
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn save(&self, previous: &Job, next: &Job) -> Result<(), StoreFault> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key()))
            .update_expression("SET #job = :next")
            .condition_expression("#job = :previous")
            .expression_attribute_names("#job", JOB)
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
    kv: DynamoKv,
    database: Uuid,
}

impl KvSink {
    pub fn new(kv: DynamoKv, database: Uuid) -> Self {
        Self { kv, database }
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
