//! Stored bytes and keys per database (issue 15 §3 and §4; docs/usage.md,
//! docs/quotas.md; decision 51).
//!
//! `kv-storage-usage` reads the KV data table's stream (old and new images of
//! every item) and turns each batch into one change per database: the bytes and
//! keys its items gained or lost. It applies that change here, once, to the
//! database's running total, and records the total as the value of the hour:
//!
//! | item | pk | sk |
//! |---|---|---|
//! | a database's stored bytes and keys now | `USAGE#<org>` | `STORAGE#<db>` |
//! | the same at the end of an hour in which they changed | `USAGE#<org>` | `STORAGE-HOUR#<db>#<yyyy-mm-ddThh>` |
//!
//! Exactly once: a change names the stream sequence numbers of its first and
//! last records. The running total keeps the last applied one and takes a change
//! only if its first record comes after it (a conditional `UpdateItem`), so a
//! batch retried after a partial failure is not counted twice: the caller reads
//! what was applied ([`Applied::Through`]) and sends only the records after it.
//! DynamoDB Streams keeps the records of one partition key (here: one database)
//! in order, and their sequence numbers grow.

use crate::dynamo::{get_n, get_s, is_condition_failure, n, s, store_error, Item};
use crate::error::StoreError;
use crate::usage::{hour_name, parse_hour, RETENTION_DAYS};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::ReturnValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use uuid::Uuid;

const PK_PREFIX: &str = "USAGE#";
const CURRENT_PREFIX: &str = "STORAGE#";
const HOUR_PREFIX: &str = "STORAGE-HOUR#";
const BYTES: &str = "storedBytes";
const KEYS: &str = "keys";
const SEQ: &str = "streamSeq";

/// What a database stores: bytes (its items' sizes as DynamoDB counts them,
/// plus DynamoDB's 100 bytes of overhead per item) and keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    pub stored_bytes: i64,
    pub keys: i64,
}

impl Stored {
    pub fn add(&mut self, other: &Stored) {
        self.stored_bytes += other.stored_bytes;
        self.keys += other.keys;
    }
}

/// One database's change from a stream batch.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageChange {
    pub delta: Stored,
    /// Sequence numbers of its first and last stream records.
    pub first_seq: String,
    pub last_seq: String,
    /// When its last record was written (the hour it is recorded in).
    pub at: DateTime<Utc>,
}

/// What applying a change did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Applied: the database's totals now.
    Now(Stored),
    /// Not applied: the records up to this sequence number already were.
    Through(String),
}

/// A stream sequence number in a form that sorts as the number does (they are
/// decimal digits, of varying length).
pub fn sortable_seq(seq: &str) -> String {
    format!("{seq:0>48}")
}

/// Where stored bytes and keys are kept.
#[async_trait]
pub trait StorageStore: Send + Sync {
    /// Applies `change` to the database's total unless records up to its first
    /// were applied already.
    async fn apply(
        &self,
        organization: Uuid,
        database: Uuid,
        change: &StorageChange,
    ) -> Result<Applied, StoreError>;
    /// Every database of the organization with stored data counted, and its totals now.
    async fn current(&self, organization: Uuid) -> Result<Vec<(Uuid, Stored)>, StoreError>;
    /// The database's values at the end of each hour in `[from, to)` in which it
    /// changed, oldest first, preceded by the last such value before `from`
    /// (what it stored at `from`), if there is one.
    async fn hours(
        &self,
        organization: Uuid,
        database: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, Stored)>, StoreError>;
}

/// The organization's stored bytes now: the sum of its databases'.
pub async fn organization_total(
    store: &dyn StorageStore,
    organization: Uuid,
) -> Result<Stored, StoreError> {
    let mut total = Stored::default();
    for (_, stored) in store.current(organization).await? {
        total.add(&stored);
    }
    Ok(total)
}

/// Stored bytes and keys in the control table.
pub struct DynamoStorage {
    client: Client,
    table: String,
}

impl DynamoStorage {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn pk(organization: Uuid) -> String {
        format!("{PK_PREFIX}{organization}")
    }
}

fn stored_of(item: &Item) -> Stored {
    Stored {
        stored_bytes: get_n(item, BYTES).unwrap_or(0),
        keys: get_n(item, KEYS).unwrap_or(0),
    }
}

#[async_trait]
impl StorageStore for DynamoStorage {
    async fn apply(
        &self,
        organization: Uuid,
        database: Uuid,
        change: &StorageChange,
    ) -> Result<Applied, StoreError> {
        let pk = Self::pk(organization);
        let applied = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk.clone()))
            .key("sk", s(format!("{CURRENT_PREFIX}{database}")))
            .update_expression(
                "ADD #bytes :bytes, #keys :keys SET #seq = :last, databaseId = :db, updatedAt = :at",
            )
            .condition_expression("attribute_not_exists(#seq) OR #seq < :first")
            .expression_attribute_names("#bytes", BYTES)
            .expression_attribute_names("#keys", KEYS)
            .expression_attribute_names("#seq", SEQ)
            .expression_attribute_values(":bytes", n(change.delta.stored_bytes))
            .expression_attribute_values(":keys", n(change.delta.keys))
            .expression_attribute_values(":last", s(sortable_seq(&change.last_seq)))
            .expression_attribute_values(":first", s(sortable_seq(&change.first_seq)))
            .expression_attribute_values(":db", s(database.to_string()))
            .expression_attribute_values(":at", s(change.at.to_rfc3339()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let now = match applied {
            Ok(out) => out.attributes.as_ref().map(stored_of).unwrap_or_default(),
            Err(e) if is_condition_failure(&e) => {
                let out = self
                    .client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", s(pk))
                    .key("sk", s(format!("{CURRENT_PREFIX}{database}")))
                    .consistent_read(true)
                    .send()
                    .await
                    .map_err(|e| store_error("GetItem", e))?;
                let through = out
                    .item
                    .as_ref()
                    .and_then(|item| get_s(item, SEQ))
                    .unwrap_or_default()
                    .trim_start_matches('0')
                    .to_string();
                return Ok(Applied::Through(through));
            }
            Err(e) => return Err(store_error("UpdateItem", e)),
        };
        // The hour's value: the total after the latest change applied in it
        // (a later change of the same hour may have been recorded first).
        let hour = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(Self::pk(organization)))
            .key(
                "sk",
                s(format!("{HOUR_PREFIX}{database}#{}", hour_name(change.at))),
            )
            .update_expression("SET #bytes = :bytes, #keys = :keys, #seq = :last, #ttl = :ttl")
            .condition_expression("attribute_not_exists(#seq) OR #seq < :last")
            .expression_attribute_names("#bytes", BYTES)
            .expression_attribute_names("#keys", KEYS)
            .expression_attribute_names("#seq", SEQ)
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":bytes", n(now.stored_bytes))
            .expression_attribute_values(":keys", n(now.keys))
            .expression_attribute_values(":last", s(sortable_seq(&change.last_seq)))
            .expression_attribute_values(
                ":ttl",
                n((change.at + Duration::days(RETENTION_DAYS)).timestamp()),
            )
            .send()
            .await;
        match hour {
            Ok(_) => Ok(Applied::Now(now)),
            Err(e) if is_condition_failure(&e) => Ok(Applied::Now(now)),
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }

    async fn current(&self, organization: Uuid) -> Result<Vec<(Uuid, Stored)>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(Self::pk(organization)))
            .expression_attribute_values(":prefix", s(CURRENT_PREFIX))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let database = get_s(&item, "sk")
                    .and_then(|sk| sk.strip_prefix(CURRENT_PREFIX))
                    .and_then(|id| Uuid::parse_str(id).ok())
                    .ok_or_else(|| {
                        StoreError::Malformed(format!("storage item {:?}", get_s(&item, "sk")))
                    })?;
                out.push((database, stored_of(&item)));
            }
        }
        Ok(out)
    }

    async fn hours(
        &self,
        organization: Uuid,
        database: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, Stored)>, StoreError> {
        // Newest first from the window's last hour, down to the first row
        // before the window.
        let prefix = format!("{HOUR_PREFIX}{database}#");
        let last = hour_name(to - Duration::hours(1));
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", s(Self::pk(organization)))
            .expression_attribute_values(":low", s(prefix.clone()))
            .expression_attribute_values(":high", s(format!("{prefix}{last}")))
            .scan_index_forward(false)
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        'pages: while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let hour = get_s(&item, "sk")
                    .and_then(|sk| sk.strip_prefix(&prefix))
                    .and_then(parse_hour)
                    .ok_or_else(|| {
                        StoreError::Malformed(format!("storage item {:?}", get_s(&item, "sk")))
                    })?;
                out.push((hour, stored_of(&item)));
                if hour < from {
                    break 'pages;
                }
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// An hour's place: organization, database, hour.
type HourKey = (Uuid, Uuid, DateTime<Utc>);

/// Stored bytes and keys in memory (unit tests).
#[derive(Default)]
pub struct MemoryStorage {
    /// (organization, database) -> totals and the last applied sequence number.
    current: Mutex<BTreeMap<(Uuid, Uuid), (Stored, String)>>,
    hours: Mutex<BTreeMap<HourKey, Stored>>,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Malformed("storage lock poisoned".into())
}

#[async_trait]
impl StorageStore for MemoryStorage {
    async fn apply(
        &self,
        organization: Uuid,
        database: Uuid,
        change: &StorageChange,
    ) -> Result<Applied, StoreError> {
        let now = {
            let mut current = self.current.lock().map_err(poisoned)?;
            let entry = current.entry((organization, database)).or_default();
            if !entry.1.is_empty() && sortable_seq(&entry.1) >= sortable_seq(&change.first_seq) {
                return Ok(Applied::Through(entry.1.clone()));
            }
            entry.0.add(&change.delta);
            entry.1 = change.last_seq.clone();
            entry.0
        };
        let hour = crate::usage::hour_start(change.at);
        self.hours
            .lock()
            .map_err(poisoned)?
            .insert((organization, database, hour), now);
        Ok(Applied::Now(now))
    }

    async fn current(&self, organization: Uuid) -> Result<Vec<(Uuid, Stored)>, StoreError> {
        Ok(self
            .current
            .lock()
            .map_err(poisoned)?
            .iter()
            .filter(|((org, _), _)| *org == organization)
            .map(|((_, db), (stored, _))| (*db, *stored))
            .collect())
    }

    async fn hours(
        &self,
        organization: Uuid,
        database: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(DateTime<Utc>, Stored)>, StoreError> {
        let hours = self.hours.lock().map_err(poisoned)?;
        let of_db = hours
            .iter()
            .filter(|((org, db, hour), _)| *org == organization && *db == database && *hour < to)
            .map(|((_, _, hour), stored)| (*hour, *stored));
        let before = of_db.clone().rfind(|(hour, _)| *hour < from);
        Ok(before
            .into_iter()
            .chain(of_db.filter(|(hour, _)| *hour >= from))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn change(bytes: i64, keys: i64, first: &str, last: &str, when: &str) -> StorageChange {
        StorageChange {
            delta: Stored {
                stored_bytes: bytes,
                keys,
            },
            first_seq: first.into(),
            last_seq: last.into(),
            at: at(when),
        }
    }

    #[test]
    fn sequence_numbers_sort_as_numbers() {
        assert!(sortable_seq("99") < sortable_seq("100"));
        assert!(sortable_seq("400000000000000499660") > sortable_seq("99999999999"));
    }

    #[tokio::test]
    async fn a_change_is_applied_once_and_hours_carry_the_totals() {
        let store = MemoryStorage::default();
        let (org, db) = (Uuid::new_v4(), Uuid::new_v4());
        let first = change(1000, 2, "5", "9", "2026-12-03T10:15:00Z");
        assert_eq!(
            store.apply(org, db, &first).await.unwrap(),
            Applied::Now(Stored {
                stored_bytes: 1000,
                keys: 2
            })
        );
        // The same records again (a retried batch): refused, naming the last applied.
        assert_eq!(
            store.apply(org, db, &first).await.unwrap(),
            Applied::Through("9".into())
        );
        let later = change(-400, -1, "10", "12", "2026-12-03T12:01:00Z");
        store.apply(org, db, &later).await.unwrap();
        assert_eq!(
            organization_total(&store, org).await.unwrap(),
            Stored {
                stored_bytes: 600,
                keys: 1
            }
        );
        let hours = store
            .hours(
                org,
                db,
                at("2026-12-03T11:00:00Z"),
                at("2026-12-03T13:00:00Z"),
            )
            .await
            .unwrap();
        assert_eq!(
            hours
                .iter()
                .map(|(h, s)| (h.to_rfc3339(), s.keys))
                .collect::<Vec<_>>(),
            vec![
                ("2026-12-03T10:00:00+00:00".to_string(), 2),
                ("2026-12-03T12:00:00+00:00".to_string(), 1)
            ]
        );
        assert!(store.current(Uuid::new_v4()).await.unwrap().is_empty());
    }
}
