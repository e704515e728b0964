//! The expiry sweeper: a scheduled function that deletes expired entries through
//! the normal commit path, so each expiry reaches the change log (and the backups)
//! as a deletion. Reads never wait for it: they hide expired entries at once.
//!
//! One run sweeps in rounds until its time budget is spent or the expiry index
//! holds nothing expired. A round reads one page of every shard of the index
//! (so no shard starves the others), groups the items by database, takes at most
//! [`SweepConfig::per_database`] items of a database per shard page (so one
//! database's backlog does not hold the others back: the rest wait for the next
//! pass), and sweeps the databases concurrently, at most
//! [`SweepConfig::concurrency`] at a time, each in commits of 10 keys. An error
//! is the database's own: it is logged and the database is left alone for the
//! rest of the run; the others go on.

use crate::state::ConnectState;
use futures_util::stream::{self, StreamExt};
use lambda_http::lambda_runtime::{self, LambdaEvent};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use subkv_core::config::{var, ConfigError, Env};
use subkv_core::{metrics, runtime};
use subkv_dynamo_kv::{now_ms, DynamoKv, ShardCursor, EXPIRY_SHARDS};
use uuid::Uuid;

/// How long a run sweeps unless configured: under the schedule's minute, so
/// runs do not overlap.
pub const DEFAULT_BUDGET_SECONDS: u64 = 50;
/// Databases swept at once unless configured.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Items per page of a shard.
const PAGE: i32 = 200;
/// Items of one database taken from one shard page.
const PER_DATABASE: usize = 50;
/// Time kept back from the invocation's deadline.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// How a run sweeps (`SUBKV_SWEEP_BUDGET_SECONDS`, `SUBKV_SWEEP_CONCURRENCY`).
#[derive(Debug, Clone)]
pub struct SweepConfig {
    pub budget: Duration,
    pub concurrency: usize,
    pub page: i32,
    pub per_database: usize,
}

impl SweepConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            budget: Duration::from_secs(
                env.number(var::SWEEP_BUDGET_SECONDS, DEFAULT_BUDGET_SECONDS)?,
            ),
            concurrency: env
                .number(var::SWEEP_CONCURRENCY, DEFAULT_CONCURRENCY)?
                .max(1),
            page: PAGE,
            per_database: PER_DATABASE,
        })
    }
}

/// What one run did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Expired entries deleted.
    pub swept: usize,
    /// Databases whose sweep failed (left for the next run).
    pub failed_databases: usize,
    /// Shard pages that could not be read.
    pub failed_pages: usize,
    pub rounds: usize,
    /// The index held nothing more to sweep when the run ended.
    pub caught_up: bool,
    /// How long the run could sweep.
    pub budget_ms: u64,
}

/// How long a run may sweep when its invocation has `remaining` before its
/// deadline: all but a margin (5 s, or a quarter of a short deadline).
pub fn run_time(remaining: Duration) -> Duration {
    remaining.saturating_sub(DEADLINE_MARGIN.min(remaining / 4))
}

/// One round's work: the items of each database to sweep, from the pages read,
/// at most `per_database` of a database from each page, none of a database that
/// failed earlier in the run.
pub fn plan_round(
    pages: &[Vec<(Uuid, Vec<u8>)>],
    failed: &BTreeSet<Uuid>,
    per_database: usize,
) -> BTreeMap<Uuid, Vec<Vec<u8>>> {
    let mut work: BTreeMap<Uuid, Vec<Vec<u8>>> = BTreeMap::new();
    for page in pages {
        let mut taken: BTreeMap<Uuid, usize> = BTreeMap::new();
        for (database, sk) in page {
            if failed.contains(database) {
                continue;
            }
            let count = taken.entry(*database).or_default();
            if *count < per_database {
                *count += 1;
                work.entry(*database).or_default().push(sk.clone());
            }
        }
    }
    work
}

/// Sweeps until `deadline` or until nothing expired is left.
pub async fn sweep(kv: &DynamoKv, config: &SweepConfig, deadline: Instant) -> SweepReport {
    let mut report = SweepReport::default();
    let mut failed: BTreeSet<Uuid> = BTreeSet::new();
    // A pass reads every shard from its start; the next pass starts over (it
    // finds what this one left: items over a database's share, failures).
    'passes: loop {
        let mut cursors: Vec<Option<ShardCursor>> = vec![Some(None); EXPIRY_SHARDS as usize];
        let mut found_in_pass = 0;
        while cursors.iter().any(Option::is_some) {
            if Instant::now() >= deadline {
                break 'passes;
            }
            report.rounds += 1;
            let now = now_ms();
            let reads = cursors
                .iter_mut()
                .enumerate()
                .filter_map(|(shard, cursor)| {
                    let start = cursor.as_ref()?.clone();
                    Some(async move {
                        let page = kv.expired_page(shard as u8, now, start, config.page).await;
                        (cursor, page)
                    })
                });
            let mut pages = Vec::new();
            for (cursor, page) in futures_util::future::join_all(reads).await {
                match page {
                    Ok((items, next)) => {
                        *cursor = next.map(Some);
                        pages.push(items);
                    }
                    Err(err) => {
                        report.failed_pages += 1;
                        tracing::error!(error = %err.detail(), "reading the expiry index failed");
                        *cursor = None;
                    }
                }
            }
            found_in_pass += pages.iter().map(Vec::len).sum::<usize>();
            let work = plan_round(&pages, &failed, config.per_database);
            let results: Vec<(Uuid, _)> =
                stream::iter(work)
                    .map(|(database, sks)| async move {
                        (database, kv.sweep_items(database, &sks).await)
                    })
                    .buffer_unordered(config.concurrency)
                    .collect()
                    .await;
            for (database, result) in results {
                match result {
                    Ok(swept) => report.swept += swept,
                    Err(err) => {
                        report.failed_databases += 1;
                        failed.insert(database);
                        tracing::error!(
                            %database,
                            error = %err.detail(),
                            "sweeping a database failed; the others go on"
                        );
                    }
                }
            }
        }
        if found_in_pass == 0 || report.failed_pages > 0 {
            report.caught_up = found_in_pass == 0;
            break;
        }
    }
    report
}

/// The whole of the sweeper's `main`.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    runtime::serve_events(
        "kv-sweep-expired",
        async {
            let config = SweepConfig::from_env(&Env::process())
                .map_err(|e| lambda_http::Error::from(e.to_string()))?;
            Ok::<_, lambda_http::Error>((ConnectState::from_env().await?, config))
        },
        |state, event: LambdaEvent<serde_json::Value>| async move {
            let (state, config) = &*state;
            let started = Instant::now();
            let remaining =
                Duration::from_millis((event.context.deadline as i64 - now_ms()).max(0) as u64);
            // No deadline ahead (`cargo lambda watch` sends none that is): the
            // configured budget alone.
            let budget = match run_time(remaining) {
                left if left.is_zero() => config.budget,
                left => config.budget.min(left),
            };
            let mut report = sweep(&state.kv, config, started + budget).await;
            report.budget_ms = budget.as_millis() as u64;
            // Metrics (namespace subkv/kv): the template alarms on failed
            // databases and on a backlog left at the end of run after run.
            metrics::print(metrics::emf(
                "subkv/kv",
                &[
                    ("Swept", "Count"),
                    ("SweepFailedDatabases", "Count"),
                    ("SweepBacklog", "Count"),
                ],
                serde_json::json!({
                    "Swept": report.swept,
                    "SweepFailedDatabases": report.failed_databases + report.failed_pages,
                    "SweepBacklog": u8::from(!report.caught_up),
                }),
            ));
            tracing::info!(
                swept = report.swept,
                failed_databases = report.failed_databases,
                failed_pages = report.failed_pages,
                rounds = report.rounds,
                caught_up = report.caught_up,
                budget_ms = report.budget_ms,
                elapsed_us = started.elapsed().as_micros() as u64,
                "sweep"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&report)?)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn page(items: &[(u128, &str)]) -> Vec<(Uuid, Vec<u8>)> {
        items
            .iter()
            .map(|(d, k)| (db(*d), k.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn every_shard_page_and_every_database_gets_its_share() {
        // Database 1 has a backlog filling every page; 2 and 3 come behind it.
        let pages = vec![
            page(&[(1, "a"), (1, "b"), (1, "c"), (2, "x")]),
            page(&[(1, "d"), (1, "e"), (3, "y")]),
        ];
        let work = plan_round(&pages, &BTreeSet::new(), 2);
        assert_eq!(
            work[&db(1)],
            [b"a".to_vec(), b"b".to_vec(), b"d".to_vec(), b"e".to_vec()]
        );
        assert_eq!(work[&db(2)], [b"x".to_vec()]);
        assert_eq!(work[&db(3)], [b"y".to_vec()]);
    }

    #[test]
    fn a_database_that_failed_is_left_alone_for_the_rest_of_the_run() {
        let pages = vec![page(&[(1, "a"), (2, "b")])];
        let work = plan_round(&pages, &BTreeSet::from([db(1)]), 10);
        assert_eq!(work.keys().copied().collect::<Vec<_>>(), [db(2)]);
    }

    #[test]
    fn a_run_keeps_a_margin_before_its_deadline() {
        assert_eq!(run_time(Duration::from_secs(60)), Duration::from_secs(55));
        assert_eq!(run_time(Duration::from_secs(4)), Duration::from_secs(3));
        assert_eq!(run_time(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn the_budget_and_concurrency_come_from_the_environment() {
        let env = Env::from_lookup(|name| match name {
            "SUBKV_SWEEP_BUDGET_SECONDS" => Some("3".into()),
            "SUBKV_SWEEP_CONCURRENCY" => Some("0".into()),
            _ => None,
        });
        let config = SweepConfig::from_env(&env).unwrap();
        assert_eq!(config.budget, Duration::from_secs(3));
        assert_eq!(config.concurrency, 1);
        let config = SweepConfig::from_env(&Env::from_lookup(|_| None)).unwrap();
        assert_eq!(config.budget, Duration::from_secs(DEFAULT_BUDGET_SECONDS));
        assert!(SweepConfig::from_env(&Env::from_lookup(|name| {
            (name == "SUBKV_SWEEP_CONCURRENCY").then(|| "many".into())
        }))
        .is_err());
    }
}
