//! The `kv-storage-usage` Lambda (issue 15 §3 and §4; docs/usage.md,
//! decision 51): each database's stored bytes and keys, from the KV data
//! table's stream.
//!
//! The stream carries every item's image before and after each change
//! (`NEW_AND_OLD_IMAGES`): commits, restores, the expiry sweeper's and the
//! purge's deletions alike. A batch becomes one change per database: the bytes
//! its items gained or lost (an item's size as DynamoDB counts it, plus the 100
//! bytes DynamoDB adds to every item it stores) and the keys (an entry item
//! holds one, a bucket its entries). The database's organization is looked up
//! once per instance (`DB#<db>`, kept a week after a purge). Each change is
//! applied exactly once ([`subkv_core::storage`]). Head items (`<db>#head`) are
//! the platform's bookkeeping, not the tenant's data, and are not counted.
//!
//! The reply is a partial batch response: a database whose change could not be
//! applied has its first record reported, so the mapping retries from there;
//! the changes applied meanwhile are not counted twice (their sequence numbers
//! are on their totals).

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use chrono::{DateTime, Utc};
use lambda_http::lambda_runtime::{self, LambdaEvent};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use subkv_core::config::{ConfigError, Env};
use subkv_core::control::{ControlTable, DynamoControl};
use subkv_core::dynamo::{item_size, Item};
use subkv_core::error::StoreError;
use subkv_core::runtime;
use subkv_core::storage::{
    sortable_seq, Applied, DynamoStorage, StorageChange, StorageStore, Stored,
};
use uuid::Uuid;

/// DynamoDB's storage overhead per item (developer guide, "Pricing for
/// storage": 100 bytes of indexing overhead per item).
pub const ITEM_OVERHEAD_BYTES: i64 = 100;

/// Databases whose organization an instance remembers.
const MAX_OWNERS: usize = 100_000;

/// How many times a database's change is re-read and re-sent in one batch
/// before it is reported as failed.
const ATTEMPTS: usize = 3;

/// One stream record's effect on its database.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordChange {
    pub database: Uuid,
    pub seq: String,
    pub at: DateTime<Utc>,
    pub delta: Stored,
}

/// What an image (absent: an empty map) stores: bytes and keys.
fn stored_in(image: &Item) -> Stored {
    if image.is_empty() {
        return Stored::default();
    }
    Stored {
        stored_bytes: item_size(image) as i64 + ITEM_OVERHEAD_BYTES,
        keys: subkv_dynamo_kv::stored_keys(image).map_or(0, |(_, keys)| keys as i64),
    }
}

/// A record's change, if it is one of a database's data items (not a head).
pub fn record_change(record: &EventRecord) -> Option<RecordChange> {
    let database = match record.change.keys.get("pk") {
        Some(serde_dynamo::AttributeValue::S(pk)) => Uuid::parse_str(pk).ok()?,
        _ => return None,
    };
    let seq = record.change.sequence_number.clone()?;
    let old: Item = record.change.old_image.clone().into();
    let new: Item = record.change.new_image.clone().into();
    let (before, after) = (stored_in(&old), stored_in(&new));
    Some(RecordChange {
        database,
        seq,
        at: record.change.approximate_creation_date_time,
        delta: Stored {
            stored_bytes: after.stored_bytes - before.stored_bytes,
            keys: after.keys - before.keys,
        },
    })
}

/// The batch's records by database, each database's in stream order.
pub fn by_database(event: &Event) -> BTreeMap<Uuid, Vec<RecordChange>> {
    let mut out: BTreeMap<Uuid, Vec<RecordChange>> = BTreeMap::new();
    for change in event.records.iter().filter_map(record_change) {
        out.entry(change.database).or_default().push(change);
    }
    for changes in out.values_mut() {
        changes.sort_by_key(|c| sortable_seq(&c.seq));
    }
    out
}

/// The one change of `records` (non-empty, in order) after sequence number
/// `after`, if any record is after it.
fn change_after(records: &[RecordChange], after: Option<&str>) -> Option<StorageChange> {
    let after = after.map(sortable_seq);
    let kept: Vec<&RecordChange> = records
        .iter()
        .filter(|r| after.as_ref().is_none_or(|a| sortable_seq(&r.seq) > *a))
        .collect();
    let (first, last) = (kept.first()?, kept.last()?);
    let mut delta = Stored::default();
    for record in &kept {
        delta.add(&record.delta);
    }
    Some(StorageChange {
        delta,
        first_seq: first.seq.clone(),
        last_seq: last.seq.clone(),
        at: last.at,
    })
}

/// The function's state, built once per cold start.
pub struct Meter {
    control: Arc<dyn ControlTable>,
    storage: Arc<dyn StorageStore>,
    owners: Mutex<HashMap<Uuid, Uuid>>,
}

/// What became of one database's records.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Applied, or already applied before.
    Counted,
    /// Its organization is unknown: nothing to count it against (logged).
    NoOwner,
}

impl Meter {
    pub fn new(control: Arc<dyn ControlTable>, storage: Arc<dyn StorageStore>) -> Self {
        Self {
            control,
            storage,
            owners: Mutex::default(),
        }
    }

    async fn owner(&self, database: Uuid) -> Result<Option<Uuid>, StoreError> {
        if let Some(org) = self
            .owners
            .lock()
            .ok()
            .and_then(|o| o.get(&database).copied())
        {
            return Ok(Some(org));
        }
        let found = self.control.database_organization(database).await?;
        if let (Some(org), Ok(mut owners)) = (found, self.owners.lock()) {
            if owners.len() >= MAX_OWNERS {
                owners.clear();
            }
            owners.insert(database, org);
        }
        Ok(found)
    }

    async fn count(&self, database: Uuid, records: &[RecordChange]) -> Result<Outcome, StoreError> {
        let Some(organization) = self.owner(database).await? else {
            return Ok(Outcome::NoOwner);
        };
        let mut after: Option<String> = None;
        for _ in 0..ATTEMPTS {
            let Some(change) = change_after(records, after.as_deref()) else {
                return Ok(Outcome::Counted);
            };
            match self.storage.apply(organization, database, &change).await? {
                Applied::Now(_) => return Ok(Outcome::Counted),
                Applied::Through(seq) => after = Some(seq),
            }
        }
        Err(StoreError::Conflict)
    }

    /// Counts a stream batch; the reply names the first record of every
    /// database that could not be counted.
    pub async fn on_stream(&self, event: &Event) -> DynamoDbEventResponse {
        let mut response = DynamoDbEventResponse::default();
        let databases = by_database(event);
        let counted = futures_util::future::join_all(databases.iter().map(
            |(database, records)| async move {
                (*database, records, self.count(*database, records).await)
            },
        ))
        .await;
        for (database, records, outcome) in counted {
            match outcome {
                Ok(Outcome::Counted) => {}
                Ok(Outcome::NoOwner) => tracing::warn!(
                    %database,
                    records = records.len(),
                    "storage change of a database with no known organization: not counted"
                ),
                Err(error) => {
                    tracing::error!(%database, %error, "storage change not counted: retried");
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = records.first().map(|r| r.seq.clone());
                    response.batch_item_failures.push(failure);
                }
            }
        }
        response
    }
}

/// The whole of `kv-storage-usage`'s `main`.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    runtime::serve_events(
        "kv-storage-usage",
        async {
            let env = Env::process();
            let sdk = runtime::aws_config().await;
            let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
            Ok::<_, ConfigError>(Meter::new(
                Arc::new(DynamoControl::new(dynamo.clone(), env.control_table())),
                Arc::new(DynamoStorage::new(dynamo, env.control_table())),
            ))
        },
        |meter, event: LambdaEvent<Event>| async move {
            let started = Instant::now();
            let response = meter.on_stream(&event.payload).await;
            tracing::info!(
                records = event.payload.records.len(),
                failures = response.batch_item_failures.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "stream batch"
            );
            Ok::<_, lambda_runtime::Error>(response)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_core::control::MemoryControl;
    use subkv_core::storage::MemoryStorage;

    /// A stream record of the data table, as Lambda delivers it.
    fn record(
        pk: &str,
        seq: u64,
        old: Option<serde_json::Value>,
        new: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let key = serde_json::json!({"pk": {"S": pk}, "sk": {"B": "AWEA"}});
        let mut change = serde_json::json!({
            "Keys": key,
            "SequenceNumber": seq.to_string(),
            "SizeBytes": 100,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
            "ApproximateCreationDateTime": 1764756000.0,
        });
        if let Some(old) = old {
            change["OldImage"] = old;
        }
        if let Some(new) = new {
            change["NewImage"] = new;
        }
        serde_json::json!({
            "eventID": seq.to_string(),
            "eventName": "MODIFY",
            "eventSource": "aws:dynamodb",
            "awsRegion": "eu-west-1",
            "dynamodb": change,
        })
    }

    /// A single entry's item with a value of `len` bytes.
    fn entry(pk: &str, len: usize) -> serde_json::Value {
        use base64::Engine;
        let value = base64::engine::general_purpose::STANDARD.encode(vec![7u8; len]);
        serde_json::json!({
            "pk": {"S": pk}, "sk": {"B": "AWEA"}, "kv_ver": {"N": "12"},
            "v": {"B": value}, "enc": {"N": "1"},
        })
    }

    fn batch(records: Vec<serde_json::Value>) -> Event {
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
    }

    async fn database(control: &MemoryControl) -> (Uuid, Uuid) {
        let (org, db) = control
            .add_organization(Default::default(), true)
            .await
            .unwrap();
        (org, db.unwrap())
    }

    #[tokio::test]
    async fn a_batch_counts_bytes_and_keys_once_per_database_and_skips_heads() {
        let control = Arc::new(MemoryControl::new());
        let storage = Arc::new(MemoryStorage::default());
        let (org, db) = database(&control).await;
        let pk = db.to_string();
        let meter = Meter::new(control.clone(), storage.clone());
        // Two keys written, one rewritten larger, one deleted; a head write.
        let one = entry(&pk, 1000);
        let size = item_size(&Item::from(serde_dynamo::Item::from(
            serde_json::from_value::<HashMap<String, serde_dynamo::AttributeValue>>(one.clone())
                .unwrap(),
        ))) as i64;
        let events = batch(vec![
            record(&pk, 10, None, Some(one.clone())),
            record(&pk, 11, None, Some(one.clone())),
            record(
                &format!("{pk}#head"),
                12,
                None,
                Some(serde_json::json!({"pk": {"S": "x"}})),
            ),
            record(&pk, 13, Some(one.clone()), Some(entry(&pk, 3000))),
            record(&pk, 14, Some(one.clone()), None),
        ]);
        let response = meter.on_stream(&events).await;
        assert!(response.batch_item_failures.is_empty());
        let now = storage.current(org).await.unwrap();
        assert_eq!(now.len(), 1);
        assert_eq!(
            now[0].1,
            Stored {
                stored_bytes: size + 2000 + ITEM_OVERHEAD_BYTES,
                keys: 1
            }
        );
        // The batch again (a retry after another database failed): nothing added.
        meter.on_stream(&events).await;
        assert_eq!(storage.current(org).await.unwrap()[0].1.keys, 1);
        // A retry that starts inside what was applied adds only the new records.
        let retried = batch(vec![
            record(&pk, 14, Some(one.clone()), None),
            record(&pk, 15, None, Some(one.clone())),
        ]);
        meter.on_stream(&retried).await;
        assert_eq!(storage.current(org).await.unwrap()[0].1.keys, 2);
    }

    #[tokio::test]
    async fn a_purged_database_is_still_counted_and_an_unknown_one_is_skipped() {
        let control = Arc::new(MemoryControl::new());
        let storage = Arc::new(MemoryStorage::default());
        let (org, db) = database(&control).await;
        let meter = Meter::new(control.clone(), storage.clone());
        let pk = db.to_string();
        meter
            .on_stream(&batch(vec![record(&pk, 1, None, Some(entry(&pk, 10)))]))
            .await;
        // Deleted and purged: a fresh instance still finds its organization.
        control.delete_database(org, db, 1).await.unwrap();
        let purge = control.purges().await.unwrap()[0];
        control.finish_purge(&purge).await.unwrap();
        let fresh = Meter::new(control.clone(), storage.clone());
        fresh
            .on_stream(&batch(vec![record(&pk, 2, Some(entry(&pk, 10)), None)]))
            .await;
        assert_eq!(storage.current(org).await.unwrap()[0].1, Stored::default());

        let stranger = Uuid::new_v4().to_string();
        let response = fresh
            .on_stream(&batch(vec![record(
                &stranger,
                3,
                None,
                Some(entry(&stranger, 10)),
            )]))
            .await;
        assert!(response.batch_item_failures.is_empty());
    }
}
