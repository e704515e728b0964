//! `kv-purge-deleted`: removes the storage of deleted databases (issue 15,
//! `DELETE /v1/databases/{id}`; docs/data-plane.md, "Deleted databases").
//!
//! A schedule invokes it every minute. A run reads the purge's work list (the
//! control table's `due` index, partition `purge`, put there by the deletion),
//! marks each database's head deleted again (the API marked it; should that
//! have failed, this is what stops its data-path tokens), then takes the
//! databases in turns, one step each (up to [`STEP_ITEMS`] items of its data
//! partition, of its change log and of its watch leases, deleted with
//! `BatchWriteItem`; once those are gone, the retired roots its deleted backups
//! left in the control table and their ledgers), until every one is empty or
//! the run's budget is spent. A
//! database is taken off the list once a step finds nothing left and the
//! deletion is older than the settling time (`SUBKV_PURGE_SETTLE_SECONDS`,
//! 900 s deployed: the longest a function that began before the deletion can
//! go on writing, a restore's invocation); until then each run looks again.
//! Every step is idempotent, so a run that crashes or times out loses nothing:
//! the next one starts over on what is left.

use lambda_http::lambda_runtime::{self, LambdaEvent};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkv_core::config::{var, ConfigError, Env};
use subkv_core::control::{ControlTable, DynamoControl, Purge};
use subkv_core::{metrics, runtime};
use subkv_dynamo_kv::{now_ms, DynamoKv};

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

/// Purges until `deadline` or until every deleted database is empty.
pub async fn purge(
    kv: &DynamoKv,
    control: &dyn ControlTable,
    config: &PurgeConfig,
    deadline: Instant,
) -> Result<PurgeReport, subkv_core::error::StoreError> {
    let list = control.purges().await?;
    let mut report = PurgeReport {
        pending: list.len(),
        ..PurgeReport::default()
    };
    let mut open: Vec<Purge> = Vec::new();
    for purge in list {
        match kv
            .mark_deleted(purge.database_id, purge.deleted_at_ms)
            .await
        {
            Ok(()) => open.push(purge),
            Err(err) => failed(&mut report, &purge, &err.detail()),
        }
    }
    let settle_ms = config.settle.as_millis() as i64;
    let mut left = open.len();
    while !open.is_empty() && Instant::now() < deadline {
        let mut next = Vec::new();
        for purge in open {
            if Instant::now() >= deadline {
                next.push(purge);
                continue;
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
                Err(err) => failed(&mut report, &purge, &err),
            }
        }
        open = next;
        left = open.len();
    }
    report.caught_up = left == 0 && report.failed == 0;
    Ok(report)
}

/// One step of one database: its data-plane items first, then what its deleted
/// backups left in the control table. How many items it removed.
async fn purge_step(
    kv: &DynamoKv,
    control: &dyn ControlTable,
    purge: &Purge,
    max: usize,
) -> Result<usize, String> {
    let step = kv
        .purge_step(purge.database_id, max)
        .await
        .map_err(|e| e.detail())?;
    if step.total() > 0 {
        return Ok(step.total());
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
