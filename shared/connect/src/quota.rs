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

use crate::usage::Meter;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkv_core::control::records::Limits;
use subkv_core::control::ControlTable;
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
    read_at: Instant,
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

    /// The organization's limits and flushed month, from the cache or read.
    async fn known(
        &self,
        organization: Uuid,
        now: DateTime<Utc>,
        control: &dyn ControlTable,
        usage: &dyn UsageStore,
    ) -> KvResult<(Limits, f64)> {
        let month = month_start(now);
        if let Ok(known) = self.known.lock() {
            if let Some(k) = known.get(&organization) {
                if k.read_at.elapsed() < self.ttl && k.month == month {
                    return Ok((k.limits, k.written));
                }
            }
        }
        let unavailable = |e: subkv_core::error::StoreError| {
            KvError::Unavailable(format!("reading the organization's limits: {e}"))
        };
        let limits = control
            .get_organization(organization)
            .await
            .map_err(unavailable)?
            .map(|org| org.limits)
            .unwrap_or_default();
        let written = match limits.write_units_per_month {
            Some(_) => {
                usage
                    .month(organization, month)
                    .await
                    .map_err(unavailable)?
                    .write_units
            }
            None => 0.0,
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
                    read_at: Instant::now(),
                },
            );
        }
        Ok((limits, written))
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

    /// Whether the organization may write now: a 403 naming the limit if its
    /// write units this month have reached `limits.writeUnitsPerMonth`.
    pub async fn check_write(
        &self,
        organization: Uuid,
        now: DateTime<Utc>,
        control: &dyn ControlTable,
        usage: &dyn UsageStore,
        meter: &Meter,
    ) -> KvResult<()> {
        let (limits, written) = self.known(organization, now, control, usage).await?;
        let Some(limit) = limits.write_units_per_month else {
            return Ok(());
        };
        let used = written + meter.pending_write_units(organization, month_start(now));
        if used >= limit as f64 {
            return Err(KvError::Forbidden(format!(
                "write refused: the organization has used {used} of its {limit} write units this \
                 month (limits.writeUnitsPerMonth); reads still work, and writes again once the \
                 operator raises the limit or the month ends"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_core::control::records::{Organization, TokenRecord};
    use subkv_core::control::MemoryControl;
    use subkv_core::usage::{Counts, MemoryUsage};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    async fn org(control: &MemoryControl, limit: Option<u64>) -> Uuid {
        let org = Organization {
            id: Uuid::new_v4(),
            name: "q".into(),
            created_at: String::new(),
            limits: Limits {
                databases: None,
                write_units_per_month: limit,
            },
        };
        let token = TokenRecord {
            id: Uuid::new_v4(),
            organization_id: org.id,
            token_sha256: Uuid::new_v4().to_string(),
            description: String::new(),
            created_at: String::new(),
            databases: None,
            access: Default::default(),
            expires_at: None,
            last_used_at: None,
        };
        control.create_organization(&org, &token).await.unwrap();
        org.id
    }

    fn writes(units: f64) -> Counts {
        Counts {
            read_units: 0.0,
            write_units: units,
            requests: 1,
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
            .check_write(id, now, &control, &usage, &meter)
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
            .check_write(id, now, &control, &usage, &meter)
            .await
            .unwrap();
        // ... and 40 this instance has not flushed: the limit is reached.
        meter.record(id, Uuid::new_v4(), now, writes(40.0));
        let err = quotas
            .check_write(id, now, &control, &usage, &meter)
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 403);
        assert!(
            err.to_string().contains("limits.writeUnitsPerMonth"),
            "{err}"
        );
        // A new month starts from nothing.
        quotas
            .check_write(id, at("2027-01-01T00:00:00Z"), &control, &usage, &meter)
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
            .check_write(unlimited, now, &control, &usage, &meter)
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
                },
            )
            .await
            .unwrap();
        quotas
            .check_write(unlimited, now, &control, &usage, &meter)
            .await
            .unwrap();
        let fresh = Quotas::new(Duration::from_secs(3600));
        assert!(fresh
            .check_write(unlimited, now, &control, &usage, &meter)
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
            .check_write(id, now, &control, &usage, &meter)
            .await
            .unwrap();
        meter.record(id, Uuid::new_v4(), now, writes(100.0));
        assert!(quotas
            .check_write(id, now, &control, &usage, &meter)
            .await
            .is_err());
        // Flushed: no longer pending, not read again yet, still counted.
        for (org, month, counts) in meter.flush_if_due(&usage).await {
            quotas.note_flushed(org, month, counts.write_units);
        }
        assert_eq!(meter.pending_write_units(id, month_start(now)), 0.0);
        assert!(quotas
            .check_write(id, now, &control, &usage, &meter)
            .await
            .is_err());
    }
}
