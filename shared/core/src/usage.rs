//! Usage for billing (issue 15 §3; docs/usage.md): what each database's KV
//! Connect requests cost, by the hour.
//!
//! A data-plane instance adds up its requests in memory and flushes them with
//! one `UpdateItem` (`ADD`) per organization, database and hour it saw, at most
//! once a flush period: counting adds no DynamoDB write per request. The items
//! live in the control table:
//!
//! | item | pk | sk |
//! |---|---|---|
//! | one database's usage in one hour | `USAGE#<org>` | `<yyyy-mm-ddThh>#<db>` (UTC) |
//!
//! | one organization's usage in one calendar month (for its quota) | `USAGE#<org>` | `MONTH#<yyyy-mm>` |
//!
//! An organization's usage over a window is one `Query` of its partition
//! between two hours; a database's, the same with its rows kept. The rows stay
//! after the database is deleted (it is billed for what it used) and expire
//! [`RETENTION_DAYS`] after their hour (`ttl`).

use crate::dynamo::{get_n, get_s, n, s, store_error, Item};
use crate::error::StoreError;
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use uuid::Uuid;

/// How long usage rows are kept after their hour.
pub const RETENTION_DAYS: i64 = 400;

const PK_PREFIX: &str = "USAGE#";

/// What requests used: DynamoDB's capacity units (as DynamoDB reports them,
/// rounded as it bills them) and KV Connect requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub read_units: f64,
    pub write_units: f64,
    pub requests: u64,
    /// Seconds KV watches were open (kv-watch).
    #[serde(default)]
    pub watch_seconds: f64,
    /// Bytes the backup engine wrote to the tenant's bucket (backup-forward).
    #[serde(default)]
    pub backup_bytes: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.read_units += other.read_units;
        self.write_units += other.write_units;
        self.requests += other.requests;
        self.watch_seconds += other.watch_seconds;
        self.backup_bytes += other.backup_bytes;
    }

    pub fn is_empty(&self) -> bool {
        *self == Counts::default()
    }
}

/// An hour, UTC, as the rows name it: `2026-12-03T11`.
pub fn hour_name(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H").to_string()
}

/// The start of the hour holding `at`.
pub fn hour_start(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(Duration::hours(1)).unwrap_or(at)
}

/// The start of the current hour.
pub fn this_hour() -> DateTime<Utc> {
    hour_start(Utc::now())
}

/// The start of an hour named by [`hour_name`].
pub fn parse_hour(name: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(&format!("{name}:00:00"), "%Y-%m-%dT%H:%M:%S")
        .ok()
        .map(|t| t.and_utc())
}

/// The start of the calendar month (UTC) holding `at`.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::{Datelike, TimeZone};
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(at)
}

fn month_sk(month: DateTime<Utc>) -> String {
    format!("MONTH#{}", month.format("%Y-%m"))
}

/// One database's usage in one hour.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub database_id: Uuid,
    /// The hour's start.
    pub hour: DateTime<Utc>,
    pub counts: Counts,
}

/// Where usage is kept.
#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds `counts` to a database's hour.
    async fn add(
        &self,
        organization: Uuid,
        database: Uuid,
        hour: DateTime<Utc>,
        counts: &Counts,
    ) -> Result<(), StoreError>;
    /// Every row of the organization whose hour is in `[from, to)` (hour starts),
    /// oldest first.
    async fn rows(
        &self,
        organization: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Row>, StoreError>;
    /// Adds `counts` to the organization's month (starting `month`).
    async fn add_month(
        &self,
        organization: Uuid,
        month: DateTime<Utc>,
        counts: &Counts,
    ) -> Result<(), StoreError>;
    /// The organization's month so far (one strongly consistent read).
    async fn month(&self, organization: Uuid, month: DateTime<Utc>) -> Result<Counts, StoreError>;
}

/// Usage in the control table.
pub struct DynamoUsage {
    client: Client,
    table: String,
}

impl DynamoUsage {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// `ADD`s `counts` to the organization's item `sk` (kept until `expires`),
    /// naming its database if it is one database's.
    async fn add_to(
        &self,
        organization: Uuid,
        sk: String,
        database: Option<Uuid>,
        expires: DateTime<Utc>,
        counts: &Counts,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("{PK_PREFIX}{organization}")))
            .key("sk", s(sk))
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":r", n(counts.read_units))
            .expression_attribute_values(":w", n(counts.write_units))
            .expression_attribute_values(":q", n(counts.requests))
            .expression_attribute_values(":s", n(counts.watch_seconds))
            .expression_attribute_values(":b", n(counts.backup_bytes))
            .expression_attribute_values(":ttl", n(expires.timestamp()));
        update = match database {
            Some(db) => update
                .update_expression(
                    "ADD readUnits :r, writeUnits :w, requests :q, watchSeconds :s, backupBytes :b \
                     SET databaseId = :db, #ttl = :ttl",
                )
                .expression_attribute_values(":db", s(db.to_string())),
            None => update.update_expression(
                "ADD readUnits :r, writeUnits :w, requests :q, watchSeconds :s, backupBytes :b SET #ttl = :ttl",
            ),
        };
        update
            .send()
            .await
            .map_err(|e| store_error("UpdateItem", e))?;
        Ok(())
    }
}

#[async_trait]
impl UsageStore for DynamoUsage {
    async fn add(
        &self,
        organization: Uuid,
        database: Uuid,
        hour: DateTime<Utc>,
        counts: &Counts,
    ) -> Result<(), StoreError> {
        self.add_to(
            organization,
            format!("{}#{database}", hour_name(hour)),
            Some(database),
            hour + Duration::days(RETENTION_DAYS),
            counts,
        )
        .await
    }

    async fn rows(
        &self,
        organization: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Row>, StoreError> {
        if to <= from {
            return Ok(Vec::new());
        }
        // Hours sort as their names do; the last hour's rows all sort before "~".
        let last = to - Duration::hours(1);
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(format!("{PK_PREFIX}{organization}")))
            .expression_attribute_values(":from", s(hour_name(from)))
            .expression_attribute_values(":to", s(format!("{}#~", hour_name(last))))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut rows = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error("Query", e))?;
            for item in page.items.unwrap_or_default() {
                rows.push(row(&item)?);
            }
        }
        Ok(rows)
    }

    async fn add_month(
        &self,
        organization: Uuid,
        month: DateTime<Utc>,
        counts: &Counts,
    ) -> Result<(), StoreError> {
        self.add_to(
            organization,
            month_sk(month),
            None,
            month + Duration::days(RETENTION_DAYS),
            counts,
        )
        .await
    }

    async fn month(&self, organization: Uuid, month: DateTime<Utc>) -> Result<Counts, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("{PK_PREFIX}{organization}")))
            .key("sk", s(month_sk(month)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item.as_ref().map(counts).unwrap_or_default())
    }
}

fn counts(item: &Item) -> Counts {
    Counts {
        read_units: get_n(item, "readUnits").unwrap_or(0.0),
        write_units: get_n(item, "writeUnits").unwrap_or(0.0),
        requests: get_n(item, "requests").unwrap_or(0),
        watch_seconds: get_n(item, "watchSeconds").unwrap_or(0.0),
        backup_bytes: get_n(item, "backupBytes").unwrap_or(0),
    }
}

fn row(item: &Item) -> Result<Row, StoreError> {
    let malformed = || StoreError::Malformed(format!("usage item {:?}", get_s(item, "sk")));
    let sk = get_s(item, "sk").ok_or_else(malformed)?;
    let (hour, database) = sk.split_once('#').ok_or_else(malformed)?;
    Ok(Row {
        database_id: Uuid::parse_str(database).map_err(|_| malformed())?,
        hour: parse_hour(hour).ok_or_else(malformed)?,
        counts: counts(item),
    })
}

/// A row's place: organization, hour, database.
type RowKey = (Uuid, DateTime<Utc>, Uuid);

/// Usage in memory (unit tests).
#[derive(Default)]
pub struct MemoryUsage {
    rows: Mutex<BTreeMap<RowKey, Counts>>,
    months: Mutex<BTreeMap<(Uuid, DateTime<Utc>), Counts>>,
}

#[async_trait]
impl UsageStore for MemoryUsage {
    async fn add(
        &self,
        organization: Uuid,
        database: Uuid,
        hour: DateTime<Utc>,
        counts: &Counts,
    ) -> Result<(), StoreError> {
        let mut rows = self
            .rows
            .lock()
            .map_err(|_| StoreError::Malformed("usage lock poisoned".into()))?;
        rows.entry((organization, hour, database))
            .or_default()
            .add(counts);
        Ok(())
    }

    async fn rows(
        &self,
        organization: Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Row>, StoreError> {
        let rows = self
            .rows
            .lock()
            .map_err(|_| StoreError::Malformed("usage lock poisoned".into()))?;
        Ok(rows
            .iter()
            .filter(|((org, hour, _), _)| *org == organization && *hour >= from && *hour < to)
            .map(|((_, hour, database), counts)| Row {
                database_id: *database,
                hour: *hour,
                counts: *counts,
            })
            .collect())
    }

    async fn add_month(
        &self,
        organization: Uuid,
        month: DateTime<Utc>,
        counts: &Counts,
    ) -> Result<(), StoreError> {
        self.months
            .lock()
            .map_err(|_| StoreError::Malformed("usage lock poisoned".into()))?
            .entry((organization, month))
            .or_default()
            .add(counts);
        Ok(())
    }

    async fn month(&self, organization: Uuid, month: DateTime<Utc>) -> Result<Counts, StoreError> {
        Ok(self
            .months
            .lock()
            .map_err(|_| StoreError::Malformed("usage lock poisoned".into()))?
            .get(&(organization, month))
            .copied()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_are_named_and_parsed_in_utc() {
        let at = DateTime::parse_from_rfc3339("2026-12-03T11:42:07.5+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(hour_name(at), "2026-12-03T10");
        assert_eq!(hour_start(at).to_rfc3339(), "2026-12-03T10:00:00+00:00");
        assert_eq!(parse_hour("2026-12-03T10"), Some(hour_start(at)));
        assert_eq!(parse_hour("2026-12-03"), None);
    }

    #[test]
    fn counts_add_up() {
        let mut c = Counts::default();
        assert!(c.is_empty());
        c.add(&Counts {
            read_units: 0.5,
            write_units: 4.0,
            requests: 1,
            watch_seconds: 2.5,
            backup_bytes: 0,
        });
        c.add(&Counts {
            read_units: 1.0,
            write_units: 0.0,
            requests: 2,
            watch_seconds: 0.5,
            backup_bytes: 0,
        });
        assert_eq!(
            c,
            Counts {
                read_units: 1.5,
                write_units: 4.0,
                requests: 3,
                watch_seconds: 3.0,
                backup_bytes: 0,
            }
        );
    }
}
