//! Metering KV Connect requests for billing (issue 15 §3; docs/usage.md).
//!
//! - **Capacity units.** The KV engine's DynamoDB client carries
//!   [`CapacityMeter`], an SDK interceptor that asks every call for its
//!   consumed capacity (`ReturnConsumedCapacity: TOTAL`, free) and adds what
//!   DynamoDB reports to the request being served ([`metered`], a task-local
//!   tally): the units DynamoDB bills, rounded as it rounds them, for every
//!   item the request read or wrote in every table.
//! - **Aggregation.** [`Meter`] adds each request's counts to the instance's
//!   tally by organization, database and hour, and says when a flush is due:
//!   when [`DEFAULT_FLUSH_SECONDS`] have passed since the last. The request
//!   that finds it due writes the tally (one `UpdateItem` `ADD` per
//!   organization, database and hour in it) before it answers. So counting adds
//!   no DynamoDB write per request, a request after a quiet minute is flushed at
//!   once, and what an instance holds unflushed is at most the last flush
//!   period's requests, lost only if the instance is retired before another
//!   request reaches it.

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation as op;
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subkv_core::usage::{hour_start, month_start, Counts, UsageStore};
use uuid::Uuid;

/// How often an instance flushes its tally unless configured
/// (`SUBKV_USAGE_FLUSH_SECONDS`).
pub const DEFAULT_FLUSH_SECONDS: u64 = 60;

/// Read and write units of one request so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    pub read: f64,
    pub write: f64,
}

tokio::task_local! {
    static UNITS: Arc<Mutex<Units>>;
}

/// Runs `request`, adding up the capacity units its DynamoDB calls (through a
/// client with [`CapacityMeter`]) report.
pub async fn metered<F: Future>(request: F) -> (F::Output, Units) {
    let charges = Charges::default();
    let out = charges.scope(request).await;
    (out, charges.take())
}

/// The capacity units of a long task (a streaming watch), taken as it goes.
#[derive(Debug, Clone, Default)]
pub struct Charges(Arc<Mutex<Units>>);

impl Charges {
    /// Runs `task`, charging its DynamoDB calls here.
    pub async fn scope<F: Future>(&self, task: F) -> F::Output {
        UNITS.scope(self.0.clone(), task).await
    }

    /// The units charged since the last take.
    pub fn take(&self) -> Units {
        self.0
            .lock()
            .map(|mut u| std::mem::take(&mut *u))
            .unwrap_or_default()
    }
}

fn charge(read: bool, capacity: Option<&ConsumedCapacity>) {
    let Some(units) = capacity.and_then(|c| c.capacity_units) else {
        return;
    };
    let _ = UNITS.try_with(|tally| {
        if let Ok(mut tally) = tally.lock() {
            if read {
                tally.read += units;
            } else {
                tally.write += units;
            }
        }
    });
}

fn charge_all(read: bool, capacity: Option<&[ConsumedCapacity]>) {
    for c in capacity.unwrap_or_default() {
        charge(read, Some(c));
    }
}

/// Asks every DynamoDB call for its consumed capacity and charges it to the
/// request being served (if any: calls outside [`metered`] are not counted).
#[derive(Debug, Default)]
pub struct CapacityMeter;

/// Sets `return_consumed_capacity` on whichever of these inputs it is.
macro_rules! ask {
    ($input:expr, $($ty:ty),+) => {
        $(if let Some(input) = $input.downcast_mut::<$ty>() {
            input.return_consumed_capacity = Some(ReturnConsumedCapacity::Total);
            return Ok(());
        })+
    };
}

impl Intercept for CapacityMeter {
    fn name(&self) -> &'static str {
        "CapacityMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        ask!(
            input,
            op::get_item::GetItemInput,
            op::query::QueryInput,
            op::batch_get_item::BatchGetItemInput,
            op::transact_get_items::TransactGetItemsInput,
            op::put_item::PutItemInput,
            op::update_item::UpdateItemInput,
            op::delete_item::DeleteItemInput,
            op::batch_write_item::BatchWriteItemInput,
            op::transact_write_items::TransactWriteItemsInput
        );
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Ok(output) = context.output_or_error() else {
            return Ok(());
        };
        if let Some(o) = output.downcast_ref::<op::get_item::GetItemOutput>() {
            charge(true, o.consumed_capacity.as_ref());
        } else if let Some(o) = output.downcast_ref::<op::query::QueryOutput>() {
            charge(true, o.consumed_capacity.as_ref());
        } else if let Some(o) = output.downcast_ref::<op::batch_get_item::BatchGetItemOutput>() {
            charge_all(true, o.consumed_capacity.as_deref());
        } else if let Some(o) =
            output.downcast_ref::<op::transact_get_items::TransactGetItemsOutput>()
        {
            charge_all(true, o.consumed_capacity.as_deref());
        } else if let Some(o) = output.downcast_ref::<op::put_item::PutItemOutput>() {
            charge(false, o.consumed_capacity.as_ref());
        } else if let Some(o) = output.downcast_ref::<op::update_item::UpdateItemOutput>() {
            charge(false, o.consumed_capacity.as_ref());
        } else if let Some(o) = output.downcast_ref::<op::delete_item::DeleteItemOutput>() {
            charge(false, o.consumed_capacity.as_ref());
        } else if let Some(o) = output.downcast_ref::<op::batch_write_item::BatchWriteItemOutput>()
        {
            charge_all(false, o.consumed_capacity.as_deref());
        } else if let Some(o) =
            output.downcast_ref::<op::transact_write_items::TransactWriteItemsOutput>()
        {
            charge_all(false, o.consumed_capacity.as_deref());
        }
        Ok(())
    }
}

/// An instance's tally of requests not yet flushed.
pub struct Meter {
    period: Duration,
    state: Mutex<Tally>,
}

/// Where a request's counts go: organization, database, hour.
type Slot = (Uuid, Uuid, DateTime<Utc>);

struct Tally {
    pending: BTreeMap<Slot, Counts>,
    last_flush: Instant,
}

impl Meter {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new(Tally {
                pending: BTreeMap::new(),
                // A cold start's first request is flushed at once.
                last_flush: Instant::now()
                    .checked_sub(period)
                    .unwrap_or_else(Instant::now),
            }),
        }
    }

    /// How often the tally is flushed (and a watch reports what it used).
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Adds one request's counts to its organization, database and hour.
    pub fn record(&self, organization: Uuid, database: Uuid, at: DateTime<Utc>, counts: Counts) {
        if let Ok(mut state) = self.state.lock() {
            state
                .pending
                .entry((organization, database, hour_start(at)))
                .or_default()
                .add(&counts);
        }
    }

    /// Takes the tally if a flush is due (a flush period since the last), or
    /// whatever it holds if `now`.
    fn take_due(&self, now: bool) -> Vec<(Slot, Counts)> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        if state.pending.is_empty() || (!now && state.last_flush.elapsed() < self.period) {
            return Vec::new();
        }
        state.last_flush = Instant::now();
        std::mem::take(&mut state.pending).into_iter().collect()
    }

    /// Write units this instance counted for the organization in the month
    /// starting `month` and has not flushed yet.
    pub fn pending_write_units(&self, organization: Uuid, month: DateTime<Utc>) -> f64 {
        self.state
            .lock()
            .map(|state| {
                state
                    .pending
                    .iter()
                    .filter(|((org, _, hour), _)| {
                        *org == organization && month_start(*hour) == month
                    })
                    .map(|(_, counts)| counts.write_units)
                    .sum()
            })
            .unwrap_or(0.0)
    }

    /// Writes the tally if a flush is due: the hours' rows, and each
    /// organization's month (what its quota reads). What fails to be written
    /// to the hours' rows stays in the tally for the next flush; a month that
    /// fails is logged (its quota then counts less, never more). The request is
    /// answered either way. The months written, with their counts (what the
    /// write quota adds to what it last read: [`crate::quota`]).
    pub async fn flush_if_due(&self, store: &dyn UsageStore) -> Vec<(Uuid, DateTime<Utc>, Counts)> {
        self.flush(store, false).await
    }

    /// Writes the tally now, due or not (a watch that was open ends: it
    /// happens at most once per watch, and a watch lives for minutes).
    pub async fn flush_now(&self, store: &dyn UsageStore) -> Vec<(Uuid, DateTime<Utc>, Counts)> {
        self.flush(store, true).await
    }

    async fn flush(&self, store: &dyn UsageStore, now: bool) -> Vec<(Uuid, DateTime<Utc>, Counts)> {
        let due = self.take_due(now);
        if due.is_empty() {
            return Vec::new();
        }
        let mut months: BTreeMap<(Uuid, DateTime<Utc>), Counts> = BTreeMap::new();
        for ((org, _, hour), counts) in &due {
            months
                .entry((*org, month_start(*hour)))
                .or_default()
                .add(counts);
        }
        let month_writes = months.into_iter().map(|((org, month), counts)| async move {
            match store.add_month(org, month, &counts).await {
                Ok(()) => Some((org, month, counts)),
                Err(err) => {
                    tracing::warn!(organization = %org, error = %err, "flushing the month's usage failed");
                    None
                }
            }
        });
        let writes = due.into_iter().map(|(key, counts)| async move {
            let (org, db, hour) = key;
            match store.add(org, db, hour, &counts).await {
                Ok(()) => None,
                Err(err) => {
                    tracing::warn!(database = %db, error = %err, "flushing usage failed; kept for the next flush");
                    Some((key, counts))
                }
            }
        });
        let (failed, months) = futures_util::future::join(
            futures_util::future::join_all(writes),
            futures_util::future::join_all(month_writes),
        )
        .await;
        let failed: Vec<_> = failed.into_iter().flatten().collect();
        if let Ok(mut state) = self.state.lock() {
            for (key, counts) in failed {
                state.pending.entry(key).or_default().add(&counts);
            }
        }
        months.into_iter().flatten().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_core::error::StoreError;
    use subkv_core::usage::{MemoryUsage, Row};

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn request(read: f64, write: f64) -> Counts {
        Counts {
            read_units: read,
            write_units: write,
            requests: 1,
            watch_seconds: 0.0,
            backup_bytes: 0,
        }
    }

    async fn all(store: &dyn UsageStore, org: Uuid) -> Vec<Row> {
        store
            .rows(org, at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn requests_are_added_up_by_database_and_hour_and_flushed_once_a_period() {
        let store = MemoryUsage::default();
        let meter = Meter::new(Duration::from_secs(3600));
        let (org, a, b) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        // The first request of a cold start is flushed at once.
        meter.record(org, a, at("2026-12-03T10:59:59Z"), request(1.0, 0.0));
        meter.flush_if_due(&store).await;
        assert_eq!(all(&store, org).await.len(), 1);
        // Then nothing until the period has passed: no write per request.
        meter.record(org, a, at("2026-12-03T10:59:59Z"), request(0.5, 2.0));
        meter.record(org, a, at("2026-12-03T11:00:00Z"), request(1.0, 4.0));
        meter.record(org, b, at("2026-12-03T11:30:00Z"), request(2.0, 0.0));
        meter.flush_if_due(&store).await;
        assert_eq!(all(&store, org).await.len(), 1);
        assert_eq!(meter.state.lock().unwrap().pending.len(), 3);
        meter.state.lock().unwrap().last_flush -= Duration::from_secs(3600);
        meter.flush_if_due(&store).await;
        let mut rows = all(&store, org).await;
        let hour = |h: &str| at(&format!("2026-12-03T{h}:00:00Z"));
        let row = |database_id, h, counts| Row {
            database_id,
            hour: hour(h),
            counts,
        };
        let mut expected = vec![
            row(
                a,
                "10",
                Counts {
                    read_units: 1.5,
                    write_units: 2.0,
                    requests: 2,
                    watch_seconds: 0.0,
                    backup_bytes: 0,
                },
            ),
            row(a, "11", request(1.0, 4.0)),
            row(b, "11", request(2.0, 0.0)),
        ];
        let order = |r: &Row| (r.hour, r.database_id);
        rows.sort_by_key(order);
        expected.sort_by_key(order);
        assert_eq!(rows, expected);
        assert!(meter.state.lock().unwrap().pending.is_empty());
    }

    /// A store that refuses every write.
    struct Down;

    #[async_trait::async_trait]
    impl UsageStore for Down {
        async fn add(
            &self,
            _: Uuid,
            _: Uuid,
            _: DateTime<Utc>,
            _: &Counts,
        ) -> Result<(), StoreError> {
            Err(StoreError::Malformed("down".into()))
        }
        async fn rows(
            &self,
            _: Uuid,
            _: DateTime<Utc>,
            _: DateTime<Utc>,
        ) -> Result<Vec<Row>, StoreError> {
            Ok(Vec::new())
        }
        async fn add_month(&self, _: Uuid, _: DateTime<Utc>, _: &Counts) -> Result<(), StoreError> {
            Err(StoreError::Malformed("down".into()))
        }
        async fn month(&self, _: Uuid, _: DateTime<Utc>) -> Result<Counts, StoreError> {
            Ok(Counts::default())
        }
    }

    #[tokio::test]
    async fn what_fails_to_flush_is_kept_for_the_next_flush() {
        let meter = Meter::new(Duration::from_secs(60));
        let (org, db) = (Uuid::new_v4(), Uuid::new_v4());
        meter.record(org, db, at("2026-12-03T10:00:00Z"), request(1.0, 1.0));
        meter.flush_if_due(&Down).await;
        meter.record(org, db, at("2026-12-03T10:10:00Z"), request(1.0, 1.0));
        meter.state.lock().unwrap().last_flush -= Duration::from_secs(60);
        let store = MemoryUsage::default();
        meter.flush_if_due(&store).await;
        let rows = all(&store, org).await;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].counts,
            Counts {
                read_units: 2.0,
                write_units: 2.0,
                requests: 2,
                watch_seconds: 0.0,
                backup_bytes: 0,
            }
        );
    }

    #[tokio::test]
    async fn units_are_charged_only_inside_a_metered_request() {
        charge(
            true,
            Some(&ConsumedCapacity::builder().capacity_units(3.0).build()),
        );
        let ((), units) = metered(async {
            charge(
                true,
                Some(&ConsumedCapacity::builder().capacity_units(0.5).build()),
            );
            charge_all(
                false,
                Some(&[
                    ConsumedCapacity::builder().capacity_units(4.0).build(),
                    ConsumedCapacity::builder().capacity_units(2.0).build(),
                ]),
            );
            charge(false, None);
        })
        .await;
        assert_eq!(
            units,
            Units {
                read: 0.5,
                write: 6.0
            }
        );
    }
}
