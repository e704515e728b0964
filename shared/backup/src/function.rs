//! The `backup-forward` Lambda: change-log stream batches and the scheduled
//! catch-up, both driving [`Engine`].
//!
//! - A DynamoDB stream event (`{"Records": [...]}`): the distinct databases in the
//!   batch are synced concurrently, each within its own time budget and the
//!   stream's limits (a limit per put, backups whose breaker is open skipped:
//!   `engine::Trigger::Stream`). The reply is a partial batch response: only a
//!   database whose sync hit an infrastructure error that may succeed if retried
//!   (DynamoDB, KMS busy or not answering) has its first record reported, so the
//!   event source mapping retries from there. Tenant store problems are never
//!   reported (they would hold the shard, and every tenant behind it): the
//!   catch-up retries them; nor are errors no retry fixes (the engine parks them
//!   on the backup).
//! - Anything else (the EventBridge schedule, the local scheduler): the catch-up,
//!   over the backups due a visit and this minute's sweep slot (see
//!   [`crate::engine`]), a few at a time.
//!
//! Metrics go to the log in CloudWatch Embedded Metric Format, in namespace
//! `subkv/backup` and without dimensions, so that their number and cost do not
//! grow with the fleet: one line per backup pass that did something
//! (`RecordsForwarded`, `ObjectsWritten`, `LagMs`, `Failures`; the backup and
//! database ids ride along as plain properties, for Logs Insights), and one per
//! catch-up (`Visited`, `Retrying`, `PendingOverdue`).

use crate::bucket::Connector;
use crate::engine::{DatabaseSync, Engine, EngineConfig, EngineError, Report};
use crate::metrics::{emf, print};
use crate::progress::DynamoProgress;
use crate::sink::TenantBuckets;
use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_http::lambda_runtime::{self, LambdaEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkv_core::config::{var, Env};
use subkv_core::control::locator::{Locator, SWEEP_SLOTS};
use subkv_core::runtime;
use subkv_core::secrets::KmsOpener;
use subkv_dynamo_kv::{now_ms, DynamoKv};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Time one stream batch may spend on one database; the catch-up gets more.
const STREAM_BUDGET: Duration = Duration::from_secs(20);
const CATCH_UP_BUDGET: Duration = Duration::from_secs(45);
/// A database that holds a stream batch this long is logged (warn).
const SLOW_STREAM_PASS: Duration = Duration::from_millis(2500);
/// Backups the catch-up syncs at once.
const CATCH_UP_PARALLEL: usize = 16;
/// Longest one backup's pass may take within the catch-up: a slow one (a big
/// snapshot, a slow store) keeps one slot for this long, not the whole budget.
const CATCH_UP_PER_BACKUP: Duration = Duration::from_secs(15);

/// Builds the engine from the environment, once per cold start.
pub async fn engine_from_env() -> Result<Engine, lambda_runtime::Error> {
    let env = Env::process();
    let sdk = runtime::aws_config().await;
    let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
    let key_id = env.required(
        var::BACKUP_KMS_KEY_ID,
        "it names the KMS key of backup secrets",
    )?;
    let kv = DynamoKv::from_env(dynamo.clone(), &env)?;
    let usage = Arc::new(subkv_core::usage::DynamoUsage::new(
        dynamo.clone(),
        env.control_table(),
    ));
    let progress = DynamoProgress::new(dynamo, env.control_table());
    let opener = Arc::new(KmsOpener::new(aws_sdk_kms::Client::new(&sdk), key_id));
    let defaults = EngineConfig::default();
    let config = EngineConfig {
        snapshot_items_per_chunk: env.number_in(
            var::BACKUP_SNAPSHOT_ITEMS,
            1..=1000,
            defaults.snapshot_items_per_chunk,
        )?,
        absent_ttl: Duration::from_secs(env.number_in(
            var::BACKUP_ABSENT_TTL_SECONDS,
            0..=600,
            defaults.absent_ttl.as_secs(),
        )?),
        ..defaults
    };
    let buckets = TenantBuckets::new(opener, Connector::from_env(&env)?);
    Ok(Engine::new(Arc::new(kv), Arc::new(progress), Arc::new(buckets), config).with_usage(usage))
}

/// The databases of a stream batch, each with the sequence number of its first
/// record (what a partial batch response names).
pub fn databases_of(event: &Event) -> BTreeMap<Uuid, String> {
    let mut out = BTreeMap::new();
    for record in &event.records {
        let db = match record.change.keys.get("pk") {
            Some(serde_dynamo::AttributeValue::S(pk)) => Uuid::parse_str(pk).ok(),
            _ => None,
        };
        if let (Some(db), Some(seq)) = (db, record.change.sequence_number.clone()) {
            out.entry(db).or_insert(seq);
        }
    }
    out
}

/// One pass's metrics line (None for a pass that found nothing to do).
fn pass_metrics(at: &Locator, report: &Report) -> Option<serde_json::Value> {
    let quiet = Report {
        overdue: false,
        retrying: false,
        ..report.clone()
    };
    if quiet == Report::default() {
        return None; // an idle pass: nothing to count
    }
    Some(emf(
        &[
            ("RecordsForwarded", "Count"),
            ("ObjectsWritten", "Count"),
            ("LagMs", "Milliseconds"),
            ("Failures", "Count"),
        ],
        serde_json::json!({
            "BackupId": at.backup_id.to_string(),
            "DatabaseId": at.database_id.to_string(),
            "RecordsForwarded": report.records_forwarded,
            "ObjectsWritten": report.objects_written,
            "LagMs": report.lag_ms.unwrap_or(0),
            "Failures": u64::from(report.problem.is_some()),
            "SnapshotChunks": report.snapshot_chunks,
            "Activated": report.activated,
        }),
    ))
}

fn emit(at: &Locator, report: &Report) {
    if let Some(line) = pass_metrics(at, report) {
        print(line);
    }
}

/// Handles one stream batch; returns the partial batch response.
pub async fn on_stream(engine: Arc<Engine>, event: Event) -> DynamoDbEventResponse {
    let mut tasks = JoinSet::new();
    for (db, first_seq) in databases_of(&event) {
        let engine = engine.clone();
        tasks.spawn(async move {
            let started = Instant::now();
            let synced = engine.sync_database(db, started + STREAM_BUDGET).await;
            let took = started.elapsed();
            if took >= SLOW_STREAM_PASS {
                // The batch, and the shard behind it, waited this long for it.
                tracing::warn!(database = %db, elapsed_ms = took.as_millis() as u64, "slow database in a stream batch");
            }
            (first_seq, db, synced)
        });
    }
    let mut response = DynamoDbEventResponse::default();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((_, _, Ok(DatabaseSync::Synced(at, report)))) => emit(&at, &report),
            Ok((_, _, Ok(DatabaseSync::NoBackup))) => {}
            Ok((seq, db, Err(error))) => {
                tracing::error!(database = %db, error = %error, "backup sync failed; the batch is retried from this database's first record");
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(seq);
                response.batch_item_failures.push(failure);
            }
            Err(join) => tracing::error!(error = %join, "backup sync task failed"),
        }
    }
    response
}

/// What one catch-up did (logged, and emitted as metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Backups visited (due, or in this minute's sweep slot).
    pub visited: usize,
    /// Of those, synced without an infrastructure error.
    pub synced: usize,
    /// Visited backups retrying a run of transient store faults.
    pub retrying: usize,
    /// Visited backups `pending` for longer than the engine's bound.
    pub overdue: usize,
}

impl CatchUp {
    fn metrics(&self) -> serde_json::Value {
        emf(
            &[
                ("Visited", "Count"),
                ("Retrying", "Count"),
                ("PendingOverdue", "Count"),
            ],
            serde_json::json!({
                "Visited": self.visited,
                "Retrying": self.retrying,
                "PendingOverdue": self.overdue,
            }),
        )
    }
}

/// The scheduled catch-up: the backups due a visit, and this minute's sweep slot.
///
/// The walk starts at a random backup: when the budget runs out before the end,
/// a different tail waits each time, never the same one every minute.
pub async fn catch_up(engine: Arc<Engine>) -> Result<CatchUp, lambda_runtime::Error> {
    let start = Uuid::new_v4().as_u128() as usize;
    let slot = (now_ms() / 60_000).rem_euclid(i64::from(SWEEP_SLOTS)) as u32;
    let done = catch_up_from(engine, slot, start).await?;
    print(done.metrics());
    Ok(done)
}

/// The backups one catch-up visits: those due, then those of sweep slot `slot`,
/// each once.
async fn to_visit(engine: &Engine, slot: u32) -> Result<Vec<Locator>, lambda_runtime::Error> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for at in engine
        .progress()
        .due()
        .await?
        .into_iter()
        .chain(engine.progress().sweep(slot).await?)
    {
        if seen.insert(at.backup_id) {
            out.push(at);
        }
    }
    Ok(out)
}

/// `items` in a circle starting at `start` (modulo their number).
fn rotated<T>(mut items: Vec<T>, start: usize) -> Vec<T> {
    if !items.is_empty() {
        let first = start % items.len();
        items.rotate_left(first);
    }
    items
}

/// A backup's own deadline within a catch-up that ends at `deadline`.
fn backup_deadline(deadline: Instant, now: Instant) -> Instant {
    deadline.min(now + CATCH_UP_PER_BACKUP)
}

/// [`catch_up`] over sweep slot `slot` (and the due backups), from the backup at
/// `start` of the list.
async fn catch_up_from(
    engine: Arc<Engine>,
    slot: u32,
    start: usize,
) -> Result<CatchUp, lambda_runtime::Error> {
    let backups = rotated(to_visit(&engine, slot).await?, start);
    let deadline = Instant::now() + CATCH_UP_BUDGET;
    let mut tasks = JoinSet::new();
    let mut done = CatchUp {
        visited: backups.len(),
        ..CatchUp::default()
    };
    for at in backups {
        while tasks.len() >= CATCH_UP_PARALLEL {
            if let Some(joined) = tasks.join_next().await {
                finish(joined, &mut done);
            }
        }
        let engine = engine.clone();
        let own = backup_deadline(deadline, Instant::now());
        tasks.spawn(async move { (at, engine.sync(&at, own).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        finish(joined, &mut done);
    }
    Ok(done)
}

type Synced = (Locator, Result<Report, EngineError>);

fn finish(joined: Result<Synced, tokio::task::JoinError>, done: &mut CatchUp) {
    match joined {
        Ok((at, Ok(report))) => {
            emit(&at, &report);
            done.synced += 1;
            done.retrying += usize::from(report.retrying);
            done.overdue += usize::from(report.overdue);
            if report.overdue {
                tracing::warn!(backup = %at.backup_id, database = %at.database_id, "backup pending for longer than its bound");
            }
        }
        Ok((at, Err(error))) => {
            tracing::error!(backup = %at.backup_id, error = %error, "catch-up failed for this backup");
        }
        Err(join) => {
            tracing::error!(error = %join, "catch-up task failed");
        }
    }
}

/// The whole of `backup-forward`'s `main`.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    runtime::serve_events(
        "backup-forward",
        engine_from_env(),
        |engine, event: LambdaEvent<serde_json::Value>| async move {
            let started = Instant::now();
            if event.payload.get("Records").is_some() {
                let batch: Event = serde_json::from_value(event.payload)?;
                let records = batch.records.len();
                let response = on_stream(engine, batch).await;
                tracing::info!(
                    records,
                    failures = response.batch_item_failures.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "stream batch"
                );
                Ok::<_, lambda_runtime::Error>(serde_json::to_value(response)?)
            } else {
                let done = catch_up(engine).await?;
                tracing::info!(
                    visited = done.visited,
                    synced = done.synced,
                    retrying = done.retrying,
                    overdue = done.overdue,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "catch-up"
                );
                Ok(serde_json::json!({ "visited": done.visited, "synced": done.synced }))
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catch_up_walks_the_backups_in_a_circle_from_anywhere() {
        let backups = vec!['a', 'b', 'c', 'd'];
        assert_eq!(rotated(backups.clone(), 0), ['a', 'b', 'c', 'd']);
        assert_eq!(rotated(backups.clone(), 2), ['c', 'd', 'a', 'b']);
        assert_eq!(rotated(backups.clone(), 7), ['d', 'a', 'b', 'c']);
        // Whatever the start, each backup once.
        for start in 0..8 {
            let mut walk = rotated(backups.clone(), start);
            walk.sort();
            assert_eq!(walk, backups);
        }
        assert!(rotated(Vec::<char>::new(), 3).is_empty());
    }

    #[test]
    fn one_backup_gets_at_most_its_share_of_the_catch_up() {
        let now = Instant::now();
        let deadline = now + CATCH_UP_BUDGET;
        assert_eq!(backup_deadline(deadline, now), now + CATCH_UP_PER_BACKUP);
        // Near the end, the catch-up's own deadline wins.
        let late = deadline - Duration::from_secs(1);
        assert_eq!(backup_deadline(deadline, late), deadline);
    }

    #[tokio::test]
    async fn a_catch_up_syncs_every_backup_whatever_its_start() {
        use crate::engine::EngineConfig;
        use crate::fakes::{FakeBucket, FakeKv, FakeProgress};
        use subkv_core::control::records::BackupStatus;
        let kv = Arc::new(FakeKv::default());
        let progress = Arc::new(FakeProgress::default());
        let bucket = FakeBucket::default();
        let backups: Vec<Locator> = (0..5)
            .map(|_| {
                let db = Uuid::new_v4();
                kv.commit(db, &[("k", Some("v"))]);
                progress.add(crate::fakes::backup_record(db, Uuid::new_v4(), "backup/"))
            })
            .collect();
        let engine = Arc::new(Engine::new(
            kv,
            progress.clone(),
            Arc::new(bucket),
            EngineConfig {
                absent_ttl: Duration::ZERO,
                ..EngineConfig::default()
            },
        ));
        // Pending, hence due: whatever the slot, the catch-up visits each of them.
        let done = catch_up_from(engine.clone(), 17, 3)
            .await
            .expect("catch-up");
        assert_eq!((done.visited, done.synced), (5, 5));
        for at in &backups {
            let item = progress.item(at).expect("backup");
            assert_eq!(item.record.status, BackupStatus::Active, "{at:?}");
            assert!(!item.due, "caught up: off the due list");
        }
        // Idle now: each catch-up visits only its sweep slot's backups, so each
        // backup once over the 60 slots.
        let mut visits = 0;
        for slot in 0..SWEEP_SLOTS {
            let done = catch_up_from(engine.clone(), slot, 0)
                .await
                .expect("catch-up");
            let in_slot = backups
                .iter()
                .filter(|at| subkv_core::control::locator::sweep_slot(at.database_id) == slot)
                .count();
            assert_eq!(done.visited, in_slot, "slot {slot}");
            visits += done.visited;
        }
        assert_eq!(visits, backups.len());
    }

    #[test]
    fn a_stream_batch_names_each_database_once_with_its_first_record() {
        let a = "0b0e0c1d-0000-4000-8000-000000000001";
        let b = "0b0e0c1d-0000-4000-8000-000000000002";
        let record = |db: &str, seq: &str| {
            serde_json::json!({
                "eventID": "1", "eventName": "INSERT", "eventVersion": "1.1",
                "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                "dynamodb": {
                    "ApproximateCreationDateTime": 1_764_000_000,
                    "Keys": {"pk": {"S": db}, "sk": {"B": "AAAAAAAAAAEAAA=="}},
                    "SequenceNumber": seq, "SizeBytes": 10, "StreamViewType": "KEYS_ONLY"
                },
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/subkv-kv-log/stream/x"
            })
        };
        let event: Event = serde_json::from_value(serde_json::json!({"Records": [
            record(a, "100"), record(b, "101"), record(a, "102"), record("not-a-uuid", "103"),
        ]}))
        .unwrap();
        let dbs = databases_of(&event);
        assert_eq!(dbs.len(), 2);
        assert_eq!(dbs[&Uuid::parse_str(a).unwrap()], "100");
        assert_eq!(dbs[&Uuid::parse_str(b).unwrap()], "101");
    }

    #[test]
    fn metrics_have_no_per_backup_dimension_and_idle_passes_none() {
        let at = Locator {
            database_id: Uuid::new_v4(),
            organization_id: Uuid::new_v4(),
            backup_id: Uuid::new_v4(),
        };
        assert_eq!(pass_metrics(&at, &Report::default()), None);
        let report = Report {
            records_forwarded: 3,
            objects_written: 1,
            lag_ms: Some(120),
            ..Report::default()
        };
        let line = pass_metrics(&at, &report).expect("a line");
        let declared = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(declared["Namespace"], "subkv/backup");
        // One fleet-wide series per metric, whatever the number of backups.
        assert_eq!(declared["Dimensions"], serde_json::json!([[]]));
        assert_eq!(line["RecordsForwarded"], 3);
        assert_eq!(line["LagMs"], 120);
        // The backup is still named, as a property for Logs Insights.
        assert_eq!(line["BackupId"], at.backup_id.to_string());
        let done = CatchUp {
            visited: 4,
            synced: 4,
            retrying: 1,
            overdue: 2,
        };
        let line = done.metrics();
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([[]])
        );
        assert_eq!(
            (line["Retrying"].as_u64(), line["PendingOverdue"].as_u64()),
            (Some(1), Some(2))
        );
    }

    #[test]
    fn a_partial_batch_response_names_the_failed_records() {
        let mut response = DynamoDbEventResponse::default();
        let mut failure = DynamoDbBatchItemFailure::default();
        failure.item_identifier = Some("100".into());
        response.batch_item_failures.push(failure);
        assert_eq!(
            serde_json::to_value(response).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "100"}]})
        );
    }
}
