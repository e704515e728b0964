//! The write quota on the data path (issue 15 §4; docs/quotas.md): an
//! organization's `limits.writeUnitsPerMonth`.
//!
//! Before a commit, `kv-atomic-write` asks [`Quotas::check_write`] whether the
//! organization still has write units this month. The answer comes from what
//! this instance knows: the organization's limits and its month's write units
//! (the flushed usage, docs/usage.md), read at most once per
//! [`DEFAULT_CACHE_SECONDS`] per organization and instance (two `GetItem`s,
//! never one per request), plus what this instance counted and has not flushed
//! yet. Over the limit, the write is refused with a 403 before anything is
//! written; reads are never refused. Other instances' writes since their last
//! flush and since the cache was filled are not seen: the organization may go
//! over by what it writes in about two minutes (the flush period plus the
//! cache's), never more.
//!
//! `limits.storageBytes` is checked the same way: the organization's stored
//! bytes (the sum of its databases' `STORAGE#` items, which `kv-storage-usage`
//! keeps from the data table's stream: [`crate::storage`]), read with the
//! limits, plus what this instance's commits added since. A commit that adds
//! bytes is refused if they would take the organization past its limit; a
//! commit that only deletes is never refused, so a tenant over its limit can
//! always make room.

use crate::usage::Meter;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkv_core::control::records::Limits;
use subkv_core::control::ControlTable;
use subkv_core::storage::{organization_total, StorageStore};
use subkv_core::usage::{month_start, UsageStore};
use subkv_kv::error::{KvError, KvResult};
use uuid::Uuid;

/// How long an instance trusts an organization's limits and month unless
/// configured (`SUBKV_QUOTA_CACHE_SECONDS`).
pub const DEFAULT_CACHE_SECONDS: u64 = 60;

/// Organizations with more entries than this are forgotten at once.
const MAX_CACHED: usize = 10_000;

struct Known {
    limits: Limits,
    month: DateTime<Utc>,
    /// Write units flushed for the month when read.
    written: f64,
    /// Stored bytes when read, plus what this instance's commits added since.
    stored: i64,
    read_at: Instant,
}

/// Where the quotas' figures are read.
pub struct Sources<'a> {
    pub control: &'a dyn ControlTable,
    pub usage: &'a dyn UsageStore,
    pub storage: &'a dyn StorageStore,
}

/// An instance's view of its organizations' quotas.
pub struct Quotas {
    ttl: Duration,
    known: Mutex<HashMap<Uuid, Known>>,
}

impl Quotas {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            known: Mutex::default(),
        }
    }

    /// The organization's limits, flushed month and stored bytes, from the
    /// cache or read.
    async fn known(
        &self,
        organization: Uuid,
        now: DateTime<Utc>,
        sources: &Sources<'_>,
    ) -> KvResult<(Limits, f64, i64)> {
        let month = month_start(now);
        if let Ok(known) = self.known.lock() {
            if let Some(k) = known.get(&organization) {
                if k.read_at.elapsed() < self.ttl && k.month == month {
                    return Ok((k.limits, k.written, k.stored));
                }
            }
        }
        let unavailable = |e: subkv_core::error::StoreError| {
            KvError::Unavailable(format!("reading the organization's limits: {e}"))
        };
        let limits = sources
            .control
            .get_organization(organization)
            .await
            .map_err(unavailable)?
            .map(|org| org.limits)
            .unwrap_or_default();
        let written = match limits.write_units_per_month {
            Some(_) => {
                sources
                    .usage
                    .month(organization, month)
                    .await
                    .map_err(unavailable)?
                    .write_units
            }
            None => 0.0,
        };
        let stored = match limits.storage_bytes {
            Some(_) => {
                organization_total(sources.storage, organization)
                    .await
                    .map_err(unavailable)?
                    .stored_bytes
            }
            None => 0,
        };
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= MAX_CACHED {
                known.clear();
            }
            known.insert(
                organization,
                Known {
                    limits,
                    month,
                    written,
                    stored,
                    read_at: Instant::now(),
                },
            );
        }
        Ok((limits, written, stored))
    }

    /// The organization's `limits.watches` (from the cache or read), for
    /// kv-watch, which counts the organization's open watches itself.
    pub async fn watch_limit(
        &self,
        organization: Uuid,
        now: DateTime<Utc>,
        sources: &Sources<'_>,
    ) -> KvResult<Option<u64>> {
        Ok(self.known(organization, now, sources).await?.0.watches)
    }

    /// Adds what this instance just flushed to the organization's month as last
    /// read, so its own writes count from their flush until the next read.
    pub fn note_flushed(&self, organization: Uuid, month: DateTime<Utc>, write_units: f64) {
        if let Ok(mut known) = self.known.lock() {
            if let Some(k) = known.get_mut(&organization) {
                if k.month == month {
                    k.written += write_units;
                }
            }
        }
    }

    /// Whether the organization may make a commit that adds `adds_bytes` now: a
    /// 403 naming the limit if its write units this month have reached
    /// `limits.writeUnitsPerMonth`, or if the commit adds bytes that would take
    /// it past `limits.storageBytes`.
    pub async fn check_write(
        &self,
        organization: Uuid,
        now: DateTime<Utc>,
        sources: &Sources<'_>,
        meter: &Meter,
        adds_bytes: u64,
    ) -> KvResult<()> {
        let (limits, written, stored) = self.known(organization, now, sources).await?;
        if let Some(limit) = limits.write_units_per_month {
            let used = written + meter.pending_write_units(organization, month_start(now));
            if used >= limit as f64 {
                return Err(KvError::Forbidden(format!(
                    "write refused: the organization has used {used} of its {limit} write units \
                     this month (limits.writeUnitsPerMonth); reads still work, and writes again \
                     once the operator raises the limit or the month ends"
                )));
            }
        }
        if let Some(limit) = limits.storage_bytes {
            let after = stored.saturating_add(adds_bytes as i64);
            if adds_bytes > 0 && after > limit as i64 {
                return Err(KvError::Forbidden(format!(
                    "write refused: the organization stores {stored} bytes and this commit adds \
                     about {adds_bytes}, past its {limit} (limits.storageBytes); reads and \
                     deletions still work, and writes again once data is deleted or the operator \
                     raises the limit"
                )));
            }
            if let Ok(mut known) = self.known.lock() {
                if let Some(k) = known.get_mut(&organization) {
                    k.stored = k.stored.saturating_add(adds_bytes as i64);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_core::control::MemoryControl;
    use subkv_core::storage::MemoryStorage;
    use subkv_core::usage::{Counts, MemoryUsage};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    async fn org(control: &MemoryControl, limit: Option<u64>) -> Uuid {
        let limits = Limits {
            write_units_per_month: limit,
            ..Limits::default()
        };
        control.add_organization(limits, false).await.unwrap().0
    }

    fn sources<'a>(control: &'a MemoryControl, usage: &'a MemoryUsage) -> Sources<'a> {
        Sources {
            control,
            usage,
            storage: &*NO_STORAGE,
        }
    }

    static NO_STORAGE: std::sync::LazyLock<MemoryStorage> =
        std::sync::LazyLock::new(MemoryStorage::default);

    fn writes(units: f64) -> Counts {
        Counts {
            read_units: 0.0,
            write_units: units,
            requests: 1,
            watch_seconds: 0.0,
            backup_bytes: 0,
        }
    }

    #[tokio::test]
    async fn writes_stop_at_the_limit_counting_flushed_and_unflushed_units() {
        let (control, usage) = (MemoryControl::new(), MemoryUsage::default());
        let meter = Meter::new(Duration::from_secs(3600));
        let quotas = Quotas::new(Duration::ZERO);
        let now = at("2026-12-03T10:00:00Z");
        let id = org(&control, Some(100)).await;
        quotas
            .check_write(id, now, &sources(&control, &usage), &meter, 0)
            .await
            .unwrap();
        // 60 flushed this month (and 500 last month, which does not count) ...
        usage
            .add_month(id, at("2026-12-01T00:00:00Z"), &writes(60.0))
            .await
            .unwrap();
        usage
            .add_month(id, at("2026-11-01T00:00:00Z"), &writes(500.0))
            .await
            .unwrap();
        quotas
            .check_write(id, now, &sources(&control, &usage), &meter, 0)
            .await
            .unwrap();
        // ... and 40 this instance has not flushed: the limit is reached.
        meter.record(id, Uuid::new_v4(), now, writes(40.0));
        let err = quotas
            .check_write(id, now, &sources(&control, &usage), &meter, 0)
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 403);
        assert!(
            err.to_string().contains("limits.writeUnitsPerMonth"),
            "{err}"
        );
        // A new month starts from nothing.
        quotas
            .check_write(
                id,
                at("2027-01-01T00:00:00Z"),
                &sources(&control, &usage),
                &meter,
                0,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn limits_are_read_once_a_period_and_none_means_none() {
        let (control, usage) = (MemoryControl::new(), MemoryUsage::default());
        let meter = Meter::new(Duration::from_secs(3600));
        let now = at("2026-12-03T10:00:00Z");
        let unlimited = org(&control, None).await;
        meter.record(unlimited, Uuid::new_v4(), now, writes(1e9));
        let quotas = Quotas::new(Duration::from_secs(3600));
        quotas
            .check_write(unlimited, now, &sources(&control, &usage), &meter, 0)
            .await
            .unwrap();
        // A limit set after the instance read the organization applies once
        // its cache expires, not before.
        control
            .set_organization_limits(
                unlimited,
                &Limits {
                    databases: None,
                    write_units_per_month: Some(1),
                    storage_bytes: None,
                    watches: None,
                },
            )
            .await
            .unwrap();
        quotas
            .check_write(unlimited, now, &sources(&control, &usage), &meter, 0)
            .await
            .unwrap();
        let fresh = Quotas::new(Duration::from_secs(3600));
        assert!(fresh
            .check_write(unlimited, now, &sources(&control, &usage), &meter, 0)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn an_instance_counts_its_own_flushed_writes_before_it_reads_again() {
        let (control, usage) = (MemoryControl::new(), MemoryUsage::default());
        let meter = Meter::new(Duration::ZERO);
        let quotas = Quotas::new(Duration::from_secs(3600));
        let now = chrono::Utc::now();
        let id = org(&control, Some(100)).await;
        quotas
            .check_write(id, now, &sources(&control, &usage), &meter, 0)
            .await
            .unwrap();
        meter.record(id, Uuid::new_v4(), now, writes(100.0));
        assert!(quotas
            .check_write(id, now, &sources(&control, &usage), &meter, 0)
            .await
            .is_err());
        // Flushed: no longer pending, not read again yet, still counted.
        for (org, month, counts) in meter.flush_if_due(&usage).await {
            quotas.note_flushed(org, month, counts.write_units);
        }
        assert_eq!(meter.pending_write_units(id, month_start(now)), 0.0);
        assert!(quotas
            .check_write(id, now, &sources(&control, &usage), &meter, 0)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_commit_that_adds_bytes_past_the_storage_limit_is_refused_deletions_are_not() {
        use subkv_core::storage::{StorageChange, Stored};
        let (control, usage, storage) = (
            MemoryControl::new(),
            MemoryUsage::default(),
            MemoryStorage::default(),
        );
        let meter = Meter::new(Duration::from_secs(3600));
        let now = chrono::Utc::now();
        let id = org(&control, None).await;
        control
            .set_organization_limits(
                id,
                &Limits {
                    storage_bytes: Some(10_000),
                    ..Limits::default()
                },
            )
            .await
            .unwrap();
        let stored = |bytes: i64, seq: &str| StorageChange {
            delta: Stored {
                stored_bytes: bytes,
                keys: 1,
            },
            first_seq: seq.into(),
            last_seq: seq.into(),
            at: now,
        };
        storage
            .apply(id, Uuid::new_v4(), &stored(6_000, "1"))
            .await
            .unwrap();
        let sources = Sources {
            control: &control,
            usage: &usage,
            storage: &storage,
        };
        let quotas = Quotas::new(Duration::from_secs(3600));
        // 6,000 stored: 3,000 more fit; the instance remembers them ...
        quotas
            .check_write(id, now, &sources, &meter, 3_000)
            .await
            .unwrap();
        // ... so another 3,000 (9,000 + 3,000 > 10,000) is refused, naming the limit.
        let err = quotas
            .check_write(id, now, &sources, &meter, 3_000)
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 403);
        assert!(err.to_string().contains("limits.storageBytes"), "{err}");
        // A commit that only deletes is never refused.
        quotas
            .check_write(id, now, &sources, &meter, 0)
            .await
            .unwrap();
        // Deletions counted and read again: room for it.
        let db = storage.current(id).await.unwrap()[0].0;
        storage.apply(id, db, &stored(-5_000, "2")).await.unwrap();
        let fresh = Quotas::new(Duration::from_secs(3600));
        fresh
            .check_write(id, now, &sources, &meter, 3_000)
            .await
            .unwrap();
    }
}
