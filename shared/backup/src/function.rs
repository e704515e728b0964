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
//! - Anything else (the EventBridge schedule, the local scheduler): every enabled
//!   backup is synced, a few at a time.
//!
//! Metrics go to the log in CloudWatch Embedded Metric Format, one line per backup
//! pass: `RecordsForwarded`, `ObjectsWritten`, `LagMs`, `Failures` (dimension
//! `BackupId`), in namespace `subkv/backup`.

use crate::bucket::Connector;
use crate::engine::{DatabaseSync, Engine, EngineConfig, EngineError, Report};
use crate::progress::DynamoProgress;
use crate::sink::TenantBuckets;
use aws_lambda_events::event::dynamodb::Event;
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_http::lambda_runtime::{self, LambdaEvent};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkv_core::config::{var, Env};
use subkv_core::control::locator::Locator;
use subkv_core::runtime;
use subkv_core::secrets::KmsOpener;
use subkv_dynamo_kv::{now_ms, DynamoKv};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Time one stream batch may spend on one database; the catch-up gets more.
const STREAM_BUDGET: Duration = Duration::from_secs(20);
const CATCH_UP_BUDGET: Duration = Duration::from_secs(45);
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
    let progress = DynamoProgress::new(dynamo, env.control_table());
    let opener = Arc::new(KmsOpener::new(aws_sdk_kms::Client::new(&sdk), key_id));
    let config = EngineConfig {
        snapshot_items_per_chunk: env.number_in(
            var::BACKUP_SNAPSHOT_ITEMS,
            1..=1000,
            EngineConfig::default().snapshot_items_per_chunk,
        )?,
        ..EngineConfig::default()
    };
    let buckets = TenantBuckets::new(opener, Connector::from_env(&env)?);
    Ok(Engine::new(
        Arc::new(kv),
        Arc::new(progress),
        Arc::new(buckets),
        config,
    ))
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

/// One pass's metrics, as a CloudWatch Embedded Metric Format log line (none for
/// a pass that found nothing to do).
fn emit(at: &Locator, report: &Report) {
    if *report == Report::default() {
        return; // an idle pass: nothing to count
    }
    let line = serde_json::json!({
        "_aws": {
            "Timestamp": now_ms(),
            "CloudWatchMetrics": [{
                "Namespace": "subkv/backup",
                "Dimensions": [["BackupId"]],
                "Metrics": [
                    {"Name": "RecordsForwarded", "Unit": "Count"},
                    {"Name": "ObjectsWritten", "Unit": "Count"},
                    {"Name": "LagMs", "Unit": "Milliseconds"},
                    {"Name": "Failures", "Unit": "Count"},
                ],
            }],
        },
        "BackupId": at.backup_id.to_string(),
        "DatabaseId": at.database_id.to_string(),
        "RecordsForwarded": report.records_forwarded,
        "ObjectsWritten": report.objects_written,
        "LagMs": report.lag_ms.unwrap_or(0),
        "Failures": u64::from(report.problem.is_some()),
        "SnapshotChunks": report.snapshot_chunks,
        "Activated": report.activated,
    });
    // Not through tracing: EMF wants the object as the whole log line.
    println!("{line}");
}

/// Handles one stream batch; returns the partial batch response.
pub async fn on_stream(engine: Arc<Engine>, event: Event) -> DynamoDbEventResponse {
    let mut tasks = JoinSet::new();
    for (db, first_seq) in databases_of(&event) {
        let engine = engine.clone();
        tasks.spawn(async move {
            let deadline = Instant::now() + STREAM_BUDGET;
            (first_seq, db, engine.sync_database(db, deadline).await)
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

/// The scheduled catch-up: every enabled backup. Returns how many were synced.
///
/// The walk starts at a random backup: when the budget runs out before the end,
/// a different tail waits each time, never the same one every minute.
pub async fn catch_up(engine: Arc<Engine>) -> Result<usize, lambda_runtime::Error> {
    let start = Uuid::new_v4().as_u128() as usize;
    catch_up_from(engine, start).await
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

/// [`catch_up`] from the backup at `start` of the list.
async fn catch_up_from(engine: Arc<Engine>, start: usize) -> Result<usize, lambda_runtime::Error> {
    let backups = rotated(engine.progress().all().await?, start);
    let deadline = Instant::now() + CATCH_UP_BUDGET;
    let mut tasks = JoinSet::new();
    let mut synced = 0;
    for at in backups {
        while tasks.len() >= CATCH_UP_PARALLEL {
            if let Some(done) = tasks.join_next().await {
                synced += finish(done);
            }
        }
        let engine = engine.clone();
        let own = backup_deadline(deadline, Instant::now());
        tasks.spawn(async move { (at, engine.sync(&at, own).await) });
    }
    while let Some(done) = tasks.join_next().await {
        synced += finish(done);
    }
    Ok(synced)
}

type Synced = (Locator, Result<Report, EngineError>);

fn finish(done: Result<Synced, tokio::task::JoinError>) -> usize {
    match done {
        Ok((at, Ok(report))) => {
            emit(&at, &report);
            1
        }
        Ok((at, Err(error))) => {
            tracing::error!(backup = %at.backup_id, error = %error, "catch-up failed for this backup");
            0
        }
        Err(join) => {
            tracing::error!(error = %join, "catch-up task failed");
            0
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
                let synced = catch_up(engine).await?;
                tracing::info!(
                    synced,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "catch-up"
                );
                Ok(serde_json::json!({ "synced": synced }))
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
        use subkv_core::control::records::{now_rfc3339, BackupRecord, BackupStatus};
        let kv = Arc::new(FakeKv::default());
        let progress = Arc::new(FakeProgress::default());
        let bucket = FakeBucket::default();
        let backups: Vec<Locator> = (0..5)
            .map(|i| {
                let db = Uuid::new_v4();
                kv.commit(db, &[("k", Some("v"))]);
                progress.add(BackupRecord {
                    id: Uuid::new_v4(),
                    organization_id: Uuid::new_v4(),
                    database_id: db,
                    kind: "s3".into(),
                    endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
                    bucket_name: format!("bucket-{i}"),
                    bucket_region: "eu-west-1".into(),
                    access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                    secret_access_key_ciphertext: vec![1],
                    prefix: "backup/".into(),
                    status: BackupStatus::Pending,
                    created_at: now_rfc3339(),
                    last_backed_up_at: None,
                    last_versionstamp: None,
                    last_error: None,
                })
            })
            .collect();
        let engine = Arc::new(Engine::new(
            kv,
            progress.clone(),
            Arc::new(bucket),
            EngineConfig::default(),
        ));
        let synced = catch_up_from(engine, 3).await.expect("catch-up");
        assert_eq!(synced, 5);
        for at in &backups {
            let item = progress.item(at).expect("backup");
            assert_eq!(item.record.status, BackupStatus::Active, "{at:?}");
        }
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
                    "SequenceNumber": seq, "SizeBytes": 10, "StreamViewType": "NEW_IMAGE"
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
