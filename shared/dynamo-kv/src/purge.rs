//! A deleted database (issue 15, `DELETE /v1/databases/{id}`, docs/data-plane.md
//! "Deleted databases"): refused at once, then its storage removed in steps.
//!
//! Deleting marks the head (`kv_gone`): from then on every read of the head and
//! every commit (whose transaction is conditioned on the head having no mark)
//! answers 404, so a data-path token issued before the deletion can neither
//! read nor write, and nothing can recreate the database under its id. Reads
//! trust a head seen in the last [`crate::HEAD_TRUST`] (250 ms) without reading
//! it again, so a read may still be answered that long.
//!
//! The purge then deletes the database's items from the data table, its change
//! records and its watch leases, a page at a time, each page with plain
//! `BatchWriteItem` deletes: idempotent, so a step applied twice, or cut off and
//! run again, removes the same. The head stays, marked, for a day
//! ([`subkv_core::deleted::MARK_SECONDS`]: longer than any data-path token issued
//! before the deletion lives); its `ttl` then lets DynamoDB remove it.

use crate::items::{dynamo, PK, SK};
use crate::{backoff, DynamoKv};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
use futures_util::{StreamExt, TryStreamExt};
use subkv_core::dynamo::{b, Item};
use subkv_kv::error::{KvError, KvResult};
use uuid::Uuid;

/// Items per `BatchWriteItem` (DynamoDB's limit).
pub(crate) const BATCH_WRITE_ITEMS: usize = 25;
/// `BatchWriteItem` calls in flight at once.
pub(crate) const CONCURRENT_BATCHES: usize = 4;
/// Attempts at a batch DynamoDB leaves partly unprocessed (throttling).
const BATCH_WRITE_ATTEMPTS: u32 = 10;
/// The data table's partition of watch leases (`watches.rs`).
const WATCHES: &str = "#watches";

/// The error every request to a deleted database gets: a 404, as for a
/// database that never existed.
pub fn deleted(database: Uuid) -> KvError {
    KvError::NotFound(format!("database {database} not found (it was deleted)"))
}

/// What one purge step removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Data items (entries, buckets of long keys).
    pub data: usize,
    /// Change records.
    pub log: usize,
    /// Watch leases.
    pub leases: usize,
}

impl Purged {
    pub fn total(&self) -> usize {
        self.data + self.log + self.leases
    }
}

impl DynamoKv {
    /// Marks `database` deleted on its head ([`subkv_core::deleted`]).
    pub async fn mark_deleted(&self, database: Uuid, deleted_at_ms: i64) -> KvResult<()> {
        subkv_core::deleted::mark_deleted(&self.client, &self.data_table, database, deleted_at_ms)
            .await
            .map_err(|e| KvError::Unavailable(e.to_string()))?;
        self.remember_head(database, None);
        Ok(())
    }

    /// One step of a deleted database's purge: up to `max` items of each of its
    /// data partition, change log and watch leases deleted. Nothing left once a
    /// step removes nothing. Must follow [`Self::mark_deleted`]: the mark is what
    /// keeps commits from writing more.
    pub async fn purge_step(&self, database: Uuid, max: usize) -> KvResult<Purged> {
        let id = AttributeValue::S(database.to_string());
        let data = self
            .page_keys(&self.data_table, id.clone(), None, max)
            .await?;
        let log = self.page_keys(&self.log_table, id, None, max).await?;
        let leases = self
            .page_keys(
                &self.data_table,
                AttributeValue::S(WATCHES.into()),
                Some(b(database.as_bytes())),
                max,
            )
            .await?;
        let purged = Purged {
            data: data.len(),
            log: log.len(),
            leases: leases.len(),
        };
        // Owned table names: a stream of futures borrowing them would not be Send.
        let mut batches: Vec<(String, Vec<WriteRequest>)> = Vec::new();
        for (table, keys) in [
            (&self.data_table, data),
            (&self.log_table, log),
            (&self.data_table, leases),
        ] {
            let requests = keys
                .into_iter()
                .map(|key| {
                    DeleteRequest::builder()
                        .set_key(Some(key))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| KvError::Internal(format!("BatchWriteItem request: {e}")))?;
            batches.extend(
                requests
                    .chunks(BATCH_WRITE_ITEMS)
                    .map(|c| (table.clone(), c.to_vec())),
            );
        }
        futures_util::stream::iter(batches)
            .map(|(table, batch)| async move { self.batch_write(&table, batch).await })
            .buffer_unordered(CONCURRENT_BATCHES)
            .try_collect::<()>()
            .await?;
        Ok(purged)
    }

    /// The keys of up to `max` items of partition `pk` of `table` (whose sort
    /// keys begin with `prefix`, if given), from its start.
    async fn page_keys(
        &self,
        table: &str,
        pk: AttributeValue,
        prefix: Option<AttributeValue>,
        max: usize,
    ) -> KvResult<Vec<Item>> {
        let mut keys = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(table)
                .consistent_read(true)
                .projection_expression("#pk, #sk")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", pk.clone())
                .limit((max - keys.len()).min(1000) as i32)
                .set_exclusive_start_key(start);
            query = match &prefix {
                Some(prefix) => query
                    .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                    .expression_attribute_values(":prefix", prefix.clone()),
                None => query.key_condition_expression("#pk = :pk"),
            };
            let out = query.send().await.map_err(|e| dynamo("Query", e))?;
            keys.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() || keys.len() >= max {
                return Ok(keys);
            }
        }
    }

    /// One `BatchWriteItem` on `table`, its unprocessed items sent again with
    /// backoff.
    pub(crate) async fn batch_write(
        &self,
        table: &str,
        mut requests: Vec<WriteRequest>,
    ) -> KvResult<()> {
        let mut attempt = 0;
        while !requests.is_empty() {
            let out = self
                .client
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .map_err(|e| dynamo("BatchWriteItem", e))?;
            requests = out
                .unprocessed_items
                .and_then(|mut u| u.remove(table))
                .unwrap_or_default();
            if !requests.is_empty() {
                if attempt == BATCH_WRITE_ATTEMPTS {
                    return Err(KvError::Unavailable(
                        "storage is busy (writes left unprocessed); retry".into(),
                    ));
                }
                backoff(attempt).await;
                attempt += 1;
            }
        }
        Ok(())
    }
}
