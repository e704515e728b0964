//! A deleted database's mark on its head in the KV data table (issue 15,
//! `DELETE /v1/databases/{id}`): the one write the management API makes into
//! the data plane's table. The KV engine (`subkv-dynamo-kv`, `purge.rs`) refuses
//! every read of a marked head and every commit onto it with a 404, so a
//! data-path token issued before the deletion stops working at once, and the
//! purge function marks the head again before it removes anything.

use crate::dynamo::{b, n, Item};
use aws_sdk_dynamodb::types::AttributeValue;
use uuid::Uuid;

/// The head item's sort key; its partition key is `<database>#head`.
pub const HEAD_SK: &[u8] = b"head";
/// The mark: when the database was deleted (ms since the Unix epoch).
pub const GONE: &str = "kv_gone";
/// The data table's DynamoDB TTL attribute (Unix seconds).
pub const TTL: &str = "ttl";
/// How long a marked head stays before DynamoDB's TTL removes it: a day, longer
/// than any data-path token issued before the deletion lives (their lifetime,
/// `SUBKV_DATA_TOKEN_TTL_SECONDS`, is capped at [`MAX_DATA_TOKEN_TTL_SECONDS`])
/// and than any function that could still be writing.
pub const MARK_SECONDS: i64 = 24 * 3600;
/// The longest a data-path token may live: the mark outlives every token.
pub const MAX_DATA_TOKEN_TTL_SECONDS: i64 = MARK_SECONDS - 3600;

/// The key of a database's head item in the data table.
pub fn head_key(database: Uuid) -> Item {
    Item::from([
        ("pk".into(), AttributeValue::S(format!("{database}#head"))),
        ("sk".into(), b(HEAD_SK)),
    ])
}

/// Marks the database deleted on its head (creating the head if nothing was
/// ever written): idempotent, a second mark keeps the first's times.
pub async fn mark_deleted(
    client: &aws_sdk_dynamodb::Client,
    data_table: &str,
    database: Uuid,
    deleted_at_ms: i64,
) -> Result<(), crate::error::StoreError> {
    client
        .update_item()
        .table_name(data_table)
        .set_key(Some(head_key(database)))
        .update_expression(
            "SET #gone = if_not_exists(#gone, :at), #ttl = if_not_exists(#ttl, :ttl)",
        )
        .expression_attribute_names("#gone", GONE)
        .expression_attribute_names("#ttl", TTL)
        .expression_attribute_values(":at", n(deleted_at_ms))
        .expression_attribute_values(":ttl", n(deleted_at_ms / 1000 + MARK_SECONDS))
        .send()
        .await
        .map_err(|e| crate::dynamo::store_error("UpdateItem", e))?;
    Ok(())
}

/// Who marks a deleted database's head: the data table ([`DynamoMarks`]), or
/// nothing where there is no data plane (the management API's unit tests).
#[async_trait::async_trait]
pub trait DeletedMarks: Send + Sync {
    async fn mark_deleted(
        &self,
        database: Uuid,
        deleted_at_ms: i64,
    ) -> Result<(), crate::error::StoreError>;
}

/// The marks in the KV data table.
pub struct DynamoMarks {
    pub client: aws_sdk_dynamodb::Client,
    pub data_table: String,
}

#[async_trait::async_trait]
impl DeletedMarks for DynamoMarks {
    async fn mark_deleted(
        &self,
        database: Uuid,
        deleted_at_ms: i64,
    ) -> Result<(), crate::error::StoreError> {
        mark_deleted(&self.client, &self.data_table, database, deleted_at_ms).await
    }
}

/// No data table: nothing to mark.
pub struct NoMarks;

#[async_trait::async_trait]
impl DeletedMarks for NoMarks {
    async fn mark_deleted(&self, _: Uuid, _: i64) -> Result<(), crate::error::StoreError> {
        Ok(())
    }
}
