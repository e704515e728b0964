//! `kv-purge-deleted`: removes the storage of deleted databases (issue 15,
//! `DELETE /v1/databases/{id}`; docs/data-plane.md, "Deleted databases").
//!
//! A schedule invokes it every minute. A run reads the purge's work list (the
//! control table's `due` index, partition `purge`, put there by the deletion)
//! and takes the databases in turns, oldest deletion first, one step each (up
//! to [`STEP_ITEMS`] items of its data partition, of its change log and of its
//! watch leases, deleted with `BatchWriteItem`; once those are gone, the
//! retired roots its deleted backups left in the control table and their
//! ledgers), until every one is empty or the run's budget is spent. Before a
//! database's first step in a run its head is marked deleted again (the API
//! marked it; should that have failed, this is what stops its data-path
//! tokens). A run always takes at least one step that succeeds, whatever its
//! budget: on a slow store the list and the marks alone may spend it, and runs
//! that never step would leave every purge where it was. A
//! database is taken off the list once a step finds nothing left and the
//! deletion is older than the settling time (`SUBKV_PURGE_SETTLE_SECONDS`,
//! 900 s deployed: the longest a function that began before the deletion can
//! go on writing, a restore's invocation); until then each run looks again.
//! Every step is idempotent, so a run that crashes or times out loses nothing:
//! the next one starts over on what is left.

use async_trait::async_trait;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkv_core::config::{var, ConfigError, Env};
use subkv_core::control::{ControlTable, DynamoControl, Purge};
use subkv_core::{metrics, runtime};
use subkv_dynamo_kv::{now_ms, DynamoKv};
use uuid::Uuid;

/// Items of each kind one step deletes (a query page each, then 25 items a
/// `BatchWriteItem`, 4 at a time).
pub const STEP_ITEMS: usize = 1000;
/// How long a run purges unless configured: under the schedule's minute.
pub const DEFAULT_BUDGET_SECONDS: u64 = 50;
/// How long after a deletion its database stays on the list unless configured.
pub const DEFAULT_SETTLE_SECONDS: u64 = 900;

/// How a run purges (`SUBKV_PURGE_BUDGET_SECONDS`, `SUBKV_PURGE_SETTLE_SECONDS`).
#[derive(Debug, Clone)]
pub struct PurgeConfig {
    pub budget: Duration,
    pub settle: Duration,
    pub step_items: usize,
}

impl PurgeConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            budget: Duration::from_secs(env.number_in(
                var::PURGE_BUDGET_SECONDS,
                1..=840,
                DEFAULT_BUDGET_SECONDS,
            )?),
            settle: Duration::from_secs(
                env.number(var::PURGE_SETTLE_SECONDS, DEFAULT_SETTLE_SECONDS)?,
            ),
            step_items: STEP_ITEMS,
        })
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    /// Deleted databases on the list when the run began.
    pub pending: usize,
    /// Items deleted (data items, change records, watch leases).
    pub purged: usize,
    /// Databases taken off the list: nothing left, settled.
    pub finished: usize,
    /// Databases found empty but deleted too recently to be taken off.
    pub settling: usize,
    /// Databases whose step failed (left for the next run).
    pub failed: usize,
    /// Every database on the list was found empty.
    pub caught_up: bool,
}

/// The data tables' side of a purge ([`DynamoKv`]; a fake in the tests).
#[async_trait]
pub trait PurgeData: Send + Sync {
    /// Marks the database's head deleted (idempotent).
    async fn mark_deleted(&self, database: Uuid, deleted_at_ms: i64) -> Result<(), String>;
    /// Deletes up to `max` items of each of the database's kinds; how many.
    async fn purge_step(&self, database: Uuid, max: usize) -> Result<usize, String>;
}

#[async_trait]
impl PurgeData for DynamoKv {
    async fn mark_deleted(&self, database: Uuid, deleted_at_ms: i64) -> Result<(), String> {
        DynamoKv::mark_deleted(self, database, deleted_at_ms)
            .await
            .map_err(|e| e.detail())
    }

    async fn purge_step(&self, database: Uuid, max: usize) -> Result<usize, String> {
        DynamoKv::purge_step(self, database, max)
            .await
            .map(|step| step.total())
            .map_err(|e| e.detail())
    }
}

/// Purges until `deadline` or until every deleted database is empty.
pub async fn purge(
    kv: &dyn PurgeData,
    control: &dyn ControlTable,
    config: &PurgeConfig,
    deadline: Instant,
) -> Result<PurgeReport, subkv_core::error::StoreError> {
    let list = control.purges().await?;
    let mut report = PurgeReport {
        pending: list.len(),
        ..PurgeReport::default()
    };
    let settle_ms = config.settle.as_millis() as i64;
    // Rounds over the list, oldest deletion first, one step of each database a
    // round. A database is marked just before its first step, and the first
    // step that succeeds is taken whatever the budget says: on a slow store
    // the marks alone could spend it, and a run that never steps would leave
    // every purge where it was, run after run.
    let mut open = list;
    let mut marked = std::collections::HashSet::new();
    let mut stepped = false;
    let mut left = 0;
    while !open.is_empty() {
        let mut next = Vec::new();
        for purge in open {
            if stepped && Instant::now() >= deadline {
                next.push(purge);
                continue;
            }
            if marked.insert(purge.database_id) {
                if let Err(err) = kv
                    .mark_deleted(purge.database_id, purge.deleted_at_ms)
                    .await
                {
                    failed(&mut report, &purge, &err);
                    continue;
                }
            }
            match purge_step(kv, control, &purge, config.step_items).await {
                Ok(removed) if removed > 0 => {
                    report.purged += removed;
                    next.push(purge);
                }
                Ok(_) if now_ms() >= purge.deleted_at_ms + settle_ms => {
                    match control.finish_purge(&purge).await {
                        Ok(()) => report.finished += 1,
                        Err(err) => failed(&mut report, &purge, &err.to_string()),
                    }
                }
                Ok(_) => report.settling += 1,
                Err(err) => {
                    failed(&mut report, &purge, &err);
                    continue;
                }
            }
            stepped = true;
        }
        if stepped && Instant::now() >= deadline {
            left = next.len();
            break;
        }
        open = next;
    }
    report.caught_up = left == 0 && report.failed == 0;
    Ok(report)
}

/// One step of one database: its data-plane items first, then what its deleted
/// backups left in the control table. How many items it removed.
async fn purge_step(
    kv: &dyn PurgeData,
    control: &dyn ControlTable,
    purge: &Purge,
    max: usize,
) -> Result<usize, String> {
    let removed = kv.purge_step(purge.database_id, max).await?;
    if removed > 0 {
        return Ok(removed);
    }
    control
        .purge_leftovers(purge.database_id, max)
        .await
        .map_err(|e| e.to_string())
}

fn failed(report: &mut PurgeReport, purge: &Purge, error: &str) {
    report.failed += 1;
    tracing::error!(
        database = %purge.database_id,
        error,
        "purging a deleted database failed; the next run goes on"
    );
}

/// What the function builds once per cold start.
struct Purger {
    kv: DynamoKv,
    control: Arc<dyn ControlTable>,
    config: PurgeConfig,
}

/// The whole of the purge function's `main`.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    runtime::serve_events(
        "kv-purge-deleted",
        async {
            let env = Env::process();
            let sdk = runtime::aws_config().await;
            let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
            Ok::<_, ConfigError>(Purger {
                kv: DynamoKv::from_env(dynamo.clone(), &env)?,
                control: Arc::new(DynamoControl::new(dynamo, env.control_table())),
                config: PurgeConfig::from_env(&env)?,
            })
        },
        |state, event: LambdaEvent<serde_json::Value>| async move {
            let started = Instant::now();
            let remaining =
                Duration::from_millis((event.context.deadline as i64 - now_ms()).max(0) as u64);
            let budget = match crate::sweep::run_time(remaining) {
                left if left.is_zero() => state.config.budget,
                left => state.config.budget.min(left),
            };
            // Boxed: the purge's future is deep enough to overflow the compiler's
            // layout recursion limit inside the runtime's.
            let report = Box::pin(purge(
                &state.kv,
                state.control.as_ref(),
                &state.config,
                started + budget,
            ))
            .await?;
            // Metrics (namespace subkv/kv): the template alarms on failures.
            metrics::print(metrics::emf(
                "subkv/kv",
                &[
                    ("Purged", "Count"),
                    ("PurgeFailedDatabases", "Count"),
                    ("PurgeBacklog", "Count"),
                ],
                serde_json::json!({
                    "Purged": report.purged,
                    "PurgeFailedDatabases": report.failed,
                    "PurgeBacklog": u8::from(!report.caught_up),
                }),
            ));
            tracing::info!(
                pending = report.pending,
                purged = report.purged,
                finished = report.finished,
                settling = report.settling,
                failed = report.failed,
                caught_up = report.caught_up,
                elapsed_us = started.elapsed().as_micros() as u64,
                "purge"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&report)?)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use subkv_core::control::records::KvDatabase;
    use subkv_core::control::MemoryControl;

    /// The data tables of some deleted databases: items left per database, and
    /// the calls made, in order.
    #[derive(Default)]
    struct FakeData {
        items: Mutex<BTreeMap<Uuid, usize>>,
        calls: Mutex<Vec<String>>,
        /// Databases whose steps fail.
        failing: Vec<Uuid>,
    }

    #[async_trait]
    impl PurgeData for FakeData {
        async fn mark_deleted(&self, database: Uuid, _: i64) -> Result<(), String> {
            self.calls.lock().unwrap().push(format!("mark {database}"));
            Ok(())
        }

        async fn purge_step(&self, database: Uuid, max: usize) -> Result<usize, String> {
            self.calls.lock().unwrap().push(format!("step {database}"));
            if self.failing.contains(&database) {
                return Err("storage refused".into());
            }
            let mut items = self.items.lock().unwrap();
            let left = items.entry(database).or_default();
            let removed = max.min(*left);
            *left -= removed;
            Ok(removed)
        }
    }

    /// `n` databases deleted one after the other, each with `items` items.
    async fn deleted(n: usize, items: usize) -> (MemoryControl, FakeData, Vec<Uuid>) {
        let control = MemoryControl::new();
        let data = FakeData::default();
        let org = Uuid::new_v4();
        let mut ids = Vec::new();
        for i in 0..n {
            let db = KvDatabase {
                id: Uuid::new_v4(),
                organization_id: org,
                description: String::new(),
                created_at: String::new(),
                updated_at: String::new(),
                restore: None,
            };
            control.create_database(&db).await.unwrap();
            control
                .delete_database(org, db.id, 1_000 + i as i64)
                .await
                .unwrap();
            data.items.lock().unwrap().insert(db.id, items);
            ids.push(db.id);
        }
        (control, data, ids)
    }

    fn config(step_items: usize) -> PurgeConfig {
        PurgeConfig {
            budget: Duration::from_secs(1),
            settle: Duration::ZERO,
            step_items,
        }
    }

    #[tokio::test]
    async fn a_run_whose_budget_is_gone_before_its_first_step_still_takes_one() {
        // A loaded store: marking every database on the list took the whole
        // budget. Without a step each run, the purge never moves (it did not in
        // CI: 120 s without one item removed).
        let (control, data, ids) = deleted(3, 2_500).await;
        let report = purge(&data, &control, &config(1_000), Instant::now())
            .await
            .unwrap();
        assert_eq!(report.purged, 1_000, "{report:?}");
        assert!(!report.caught_up);
        // The oldest database's step, right after its mark.
        let calls = data.calls.lock().unwrap().clone();
        assert_eq!(
            calls[..2],
            [format!("mark {}", ids[0]), format!("step {}", ids[0])]
        );
        assert_eq!(data.items.lock().unwrap()[&ids[0]], 1_500);
    }

    #[tokio::test]
    async fn a_database_whose_step_fails_does_not_stop_the_next_from_moving() {
        let (control, mut data, ids) = deleted(2, 10).await;
        data.failing = vec![ids[0]];
        let report = purge(&data, &control, &config(1_000), Instant::now())
            .await
            .unwrap();
        assert_eq!(report.failed, 1, "{report:?}");
        assert_eq!(report.purged, 10, "{report:?}");
        assert_eq!(data.items.lock().unwrap()[&ids[1]], 0);
    }

    #[tokio::test]
    async fn a_run_with_budget_empties_every_database_and_finishes_them() {
        let (control, data, _) = deleted(3, 2_500).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let report = purge(&data, &control, &config(1_000), deadline)
            .await
            .unwrap();
        assert_eq!(report.purged, 7_500, "{report:?}");
        assert_eq!(report.finished, 3, "{report:?}");
        assert!(report.caught_up);
        assert!(control.purges().await.unwrap().is_empty());
    }
}
