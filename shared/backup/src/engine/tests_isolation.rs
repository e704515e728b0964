//! One backup's trouble kept from the others (issue 11, item 5), against the
//! fakes: the stream's limit per put, the circuit breaker, parking errors no
//! retry fixes. Time is tokio's paused clock: a hanging put takes exact virtual
//! time.

use super::*;
use crate::fakes::{FakeBucket, FakeKv, FakeProgress};
use crate::function::on_stream;
use crate::progress::Breaker;
use aws_lambda_events::event::dynamodb::Event;

/// What the S3 client's operation timeout makes of a put to a store that never
/// answers.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(25);

/// Several databases with a backup each, one bucket (keys tell them apart), and
/// the engine with the default limits.
struct Fleet {
    kv: Arc<FakeKv>,
    progress: Arc<FakeProgress>,
    bucket: FakeBucket,
    engine: Arc<Engine>,
    backups: Vec<Locator>,
}

fn fleet(databases: usize) -> Fleet {
    let kv = Arc::new(FakeKv::default());
    let progress = Arc::new(FakeProgress::default());
    let bucket = FakeBucket::default();
    let backups = (0..databases)
        .map(|_| {
            progress.add(crate::fakes::backup_record(
                Uuid::new_v4(),
                Uuid::new_v4(),
                "backup/",
            ))
        })
        .collect();
    let engine = Arc::new(Engine::new(
        kv.clone(),
        progress.clone(),
        Arc::new(bucket.clone()),
        EngineConfig::default(),
    ));
    Fleet {
        kv,
        progress,
        bucket,
        engine,
        backups,
    }
}

fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Fleet {
    fn commit(&self, i: usize, key: &str) -> u64 {
        self.kv
            .commit(self.backups[i].database_id, &[(key, Some("v"))])
    }

    fn item(&self, i: usize) -> crate::fakes::Item {
        self.progress.item(&self.backups[i]).expect("the backup")
    }

    /// One pass over backup `i` run by `trigger`, with time enough.
    async fn pass(&self, i: usize, trigger: Trigger) -> Report {
        let deadline = clock() + Duration::from_secs(60);
        match self.engine.pass(&self.backups[i], deadline, trigger).await {
            Ok(report) => report,
            Err(e) => panic!("the pass failed: {e}"),
        }
    }

    /// Every backup made active (a catch-up pass each).
    async fn all_active(&self) {
        for i in 0..self.backups.len() {
            self.commit(i, "first");
            let report = self.pass(i, Trigger::CatchUp).await;
            assert!(report.activated, "{report:?}");
        }
    }

    /// Puts under backup `i`'s root hang from now on.
    fn hang(&self, i: usize) {
        let root = format!("backup/{}/", self.backups[i].database_id);
        self.bucket
            .hang_puts(move |key| key.starts_with(&root), CLIENT_TIMEOUT);
    }

    /// A stream delivery naming these backups' databases, one record each.
    fn delivery(&self, which: &[usize]) -> Event {
        let records: Vec<serde_json::Value> = which
            .iter()
            .enumerate()
            .map(|(n, i)| {
                serde_json::json!({
                    "eventID": n.to_string(), "eventName": "INSERT", "eventVersion": "1.1",
                    "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
                    "dynamodb": {
                        "ApproximateCreationDateTime": 1_764_000_000,
                        "Keys": {
                            "pk": {"S": self.backups[*i].database_id.to_string()},
                            "sk": {"B": "AAAAAAAAAAEAAA=="}
                        },
                        "SequenceNumber": format!("{}", 100 + n), "SizeBytes": 10,
                        "StreamViewType": "KEYS_ONLY"
                    },
                    "eventSourceARN": "arn:aws:dynamodb:us-east-1:1:table/subkv-kv-log/stream/x"
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "Records": records })).expect("an event")
    }
}

// ---------------------------------------------------------------------------------
// The stream's limit per put and the circuit breaker.

#[tokio::test(start_paused = true)]
async fn a_hanging_store_costs_a_stream_batch_one_limited_put_then_nothing() {
    let f = fleet(2);
    f.all_active().await;
    f.hang(0);
    f.commit(0, "a1");
    let b1 = f.commit(1, "b1");

    // The first batch meets the hang: it waits for the stream's limit on that
    // put, not for the client's 25 s, and the other database is written.
    let started = clock();
    let response = on_stream(f.engine.clone(), f.delivery(&[0, 1])).await;
    let took = clock() - started;
    assert!(response.batch_item_failures.is_empty(), "a tenant's store");
    assert!(
        took <= EngineConfig::default().stream_put_base + Duration::from_millis(100),
        "the batch took {took:?}"
    );
    assert_eq!(f.item(1).cursor, Some(b1));
    let a = f.item(0);
    assert_eq!(a.breaker.faults, 1, "the breaker opened");
    let backoff = a.breaker.until_ms - now_ms();
    assert!((29_000..=30_000).contains(&backoff), "{backoff} ms");
    let error = a.record.last_error.expect("lastError");
    assert!(error.contains("did not complete within 2.0 s"), "{error}");
    assert!(
        error.contains("stream deliveries skip this backup"),
        "{error}"
    );
    assert!(a.error_since.is_some(), "a run of transient faults began");

    // Later batches skip it: no put to its store, no time spent on it.
    let attempts = f.bucket.attempts();
    f.commit(0, "a2");
    let b2 = f.commit(1, "b2");
    let started = clock();
    let response = on_stream(f.engine.clone(), f.delivery(&[0, 1])).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(clock() - started, Duration::ZERO, "nothing waited");
    assert_eq!(f.item(1).cursor, Some(b2));
    assert_eq!(f.bucket.attempts(), attempts + 1, "only the other's put");
    assert_eq!(f.item(0).breaker.faults, 1);
}

#[tokio::test(start_paused = true)]
async fn the_catch_up_probes_an_open_breaker_once_its_backoff_has_passed() {
    let f = fleet(1);
    f.all_active().await;
    f.hang(0);
    let last = f.commit(0, "a1");
    f.pass(0, Trigger::Stream).await;
    let opened = f.item(0).breaker;
    assert_eq!(opened.faults, 1);

    // Before the backoff has passed, the catch-up leaves it alone.
    let attempts = f.bucket.attempts();
    let report = f.pass(0, Trigger::CatchUp).await;
    assert_eq!(report, Report::default());
    assert_eq!(
        f.bucket.attempts(),
        attempts,
        "no put while the breaker waits"
    );

    // Passed, still hanging: one pass with the client's own timeout, and the
    // backoff doubles.
    f.progress.set_breaker(
        &f.backups[0],
        Breaker {
            until_ms: now_ms() - 1,
            ..opened
        },
    );
    let started = clock();
    let report = f.pass(0, Trigger::CatchUp).await;
    assert_eq!(
        clock() - started,
        CLIENT_TIMEOUT,
        "the catch-up has no stream limit"
    );
    assert!(report.problem.is_some(), "{report:?}");
    assert_eq!(f.bucket.attempts(), attempts + 1, "one probe");
    let again = f.item(0).breaker;
    assert_eq!(again.faults, 2);
    let backoff = again.until_ms - now_ms();
    assert!((59_000..=60_000).contains(&backoff), "{backoff} ms");

    // The store answers again: the next probe writes, which closes the breaker.
    f.bucket.heal();
    f.progress.set_breaker(
        &f.backups[0],
        Breaker {
            until_ms: now_ms() - 1,
            ..again
        },
    );
    let report = f.pass(0, Trigger::CatchUp).await;
    assert_eq!(report.commits_forwarded, 1, "{report:?}");
    let item = f.item(0);
    assert_eq!(item.breaker, Breaker::default(), "closed");
    assert_eq!(item.cursor, Some(last));
    assert_eq!(item.record.last_error, None);
    assert_eq!(item.error_since, None);

    // And stream deliveries write it again.
    let next = f.commit(0, "a2");
    let report = f.pass(0, Trigger::Stream).await;
    assert_eq!(report.commits_forwarded, 1, "{report:?}");
    assert_eq!(f.item(0).cursor, Some(next));
}

#[tokio::test(start_paused = true)]
async fn a_stream_pass_skips_an_open_breaker_even_once_its_backoff_has_passed() {
    // Only the catch-up probes: a stream batch never waits on that store again
    // until a write has landed.
    let f = fleet(1);
    f.all_active().await;
    f.progress.set_breaker(
        &f.backups[0],
        Breaker {
            faults: 3,
            until_ms: now_ms() - 1,
        },
    );
    f.commit(0, "a1");
    let attempts = f.bucket.attempts();
    let report = f.pass(0, Trigger::Stream).await;
    assert_eq!(report, Report::default());
    assert_eq!(f.bucket.attempts(), attempts);
}

#[tokio::test(start_paused = true)]
async fn a_slow_put_within_the_limit_is_not_a_timeout() {
    let f = fleet(1);
    f.all_active().await;
    f.bucket.slow_puts(Duration::from_millis(1500));
    let last = f.commit(0, "a1");
    let report = f.pass(0, Trigger::Stream).await;
    assert_eq!(report.problem, None, "{report:?}");
    assert_eq!(f.item(0).cursor, Some(last));
    assert_eq!(f.item(0).breaker, Breaker::default());
    // A store that answers, just later than the stream's limit: a timeout there,
    // and the catch-up (no such limit) writes it.
    f.bucket.slow_puts(Duration::from_secs(5));
    let last = f.commit(0, "a2");
    let report = f.pass(0, Trigger::Stream).await;
    assert!(report.problem.is_some(), "{report:?}");
    assert_eq!(f.item(0).breaker.faults, 1);
    f.progress.set_breaker(
        &f.backups[0],
        Breaker {
            faults: 1,
            until_ms: 0,
        },
    );
    let report = f.pass(0, Trigger::CatchUp).await;
    assert_eq!(report.problem, None, "{report:?}");
    assert_eq!(f.item(0).cursor, Some(last));
    assert_eq!(f.item(0).breaker, Breaker::default());
}

#[test]
fn the_stream_limit_grows_with_the_body_and_the_backoff_doubles_to_its_cap() {
    let config = EngineConfig::default();
    let bucket = FakeBucket::default();
    let limited = faults::StreamPut::new(&bucket, &config);
    assert_eq!(limited.limit(0), Duration::from_secs(2));
    assert_eq!(limited.limit(4 << 20), Duration::from_secs(6));
    assert_eq!(limited.limit(8 << 20), Duration::from_secs(10));

    let f = fleet(0);
    let mut breaker = Breaker::default();
    let mut backoffs = Vec::new();
    for _ in 0..8 {
        breaker = f.engine.breaker_after_timeout(breaker, 1_000);
        backoffs.push((breaker.until_ms - 1_000) / 1_000);
    }
    assert_eq!(backoffs, [30, 60, 120, 240, 480, 900, 900, 900]);
    assert_eq!(breaker.faults, 8);
    let far = Breaker {
        faults: u32::MAX,
        until_ms: 0,
    };
    let capped = f.engine.breaker_after_timeout(far, 0);
    assert_eq!(capped.until_ms, 900_000, "no overflow");
}

#[tokio::test(start_paused = true)]
async fn a_refusal_while_the_breaker_is_open_fails_the_backup_and_closes_it() {
    let f = fleet(1);
    f.all_active().await;
    f.progress.set_breaker(
        &f.backups[0],
        Breaker {
            faults: 2,
            until_ms: 0,
        },
    );
    f.bucket
        .fail_every_put(BucketFault::Refused("AccessDenied".into()));
    f.commit(0, "a1");
    let report = f.pass(0, Trigger::CatchUp).await;
    assert!(report.failed, "{report:?}");
    assert_eq!(f.item(0).breaker, Breaker::default());
}

// ---------------------------------------------------------------------------------
// Parking: errors no retry fixes.

#[tokio::test]
async fn a_malformed_change_record_fails_its_backup_with_a_message_not_the_batch() {
    let f = fleet(2);
    f.all_active().await;
    let good = f.commit(0, "a1");
    f.pass(0, Trigger::Stream).await;
    let bad = f.commit(0, "a2");
    f.commit(0, "a3");
    f.kv.malform(f.backups[0].database_id, bad);
    let b1 = f.commit(1, "b1");

    let response = on_stream(f.engine.clone(), f.delivery(&[0, 1])).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "parked, not a batch item failure: {response:?}"
    );
    assert_eq!(f.item(1).cursor, Some(b1), "the other database is written");
    let a = f.item(0);
    assert_eq!(
        a.cursor,
        Some(good),
        "nothing after the bad record is skipped"
    );
    assert_eq!(a.parked, 1);
    let BackupStatus::Failed { message } = &a.record.status else {
        panic!("not failed: {:?}", a.record.status);
    };
    assert!(
        message.contains(&format!("after commit {good}")),
        "{message}"
    );
    assert!(message.contains("malformed data item"), "{message}");
    assert!(message.contains("rather than skip it"), "{message}");
    assert!(
        message.contains(&format!(
            "/v1/database_backups/{}/retry",
            f.backups[0].backup_id
        )),
        "{message}"
    );
    assert_eq!(a.parked_reason.as_deref(), Some(message.as_str()));

    // A failed backup is left alone: the next deliveries read nothing of it.
    let reads = f.kv.calls().len();
    let response = on_stream(f.engine.clone(), f.delivery(&[0])).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.kv.calls().len(), reads, "no read of its change log");
    assert_eq!(f.item(0).parked, 1);
}

#[tokio::test]
async fn an_object_that_cannot_be_built_is_parked_and_fails_the_backup() {
    let f = fleet(1);
    f.all_active().await;
    let bad = f.commit(0, "a1");
    f.kv.corrupt(f.backups[0].database_id, bad);
    let report = f.pass(0, Trigger::Stream).await;
    assert!(report.failed && report.parked.is_some(), "{report:?}");
    let a = f.item(0);
    assert_eq!(a.parked, 1);
    let BackupStatus::Failed { message } = &a.record.status else {
        panic!("not failed: {:?}", a.record.status);
    };
    assert!(message.contains("cannot be built"), "{message}");
    assert!(message.contains(&format!("commit {bad}")), "{message}");
}

#[tokio::test]
async fn a_secret_kms_cannot_decrypt_is_parked_and_fails_the_backup() {
    let f = fleet(1);
    f.commit(0, "a1");
    f.bucket.fail_open(
        Recovery::Never,
        "InvalidCiphertextException: invalid ciphertext",
    );
    let response = on_stream(f.engine.clone(), f.delivery(&[0])).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let a = f.item(0);
    assert_eq!(a.parked, 1);
    let BackupStatus::Failed { message } = &a.record.status else {
        panic!("not failed: {:?}", a.record.status);
    };
    assert!(message.contains("cannot be decrypted"), "{message}");
    assert!(message.contains("enable it again"), "{message}");
    assert!(!message.contains("InvalidCiphertextException"), "{message}");
}

#[tokio::test]
async fn an_error_of_our_configuration_is_parked_without_failing_the_backup() {
    // KMS access denied (say): no retry of the batch fixes it, nor is it the
    // tenant's to fix. Noted and counted; the catch-up tries again.
    let f = fleet(1);
    f.all_active().await;
    f.bucket
        .fail_open(Recovery::Operator, "AccessDeniedException: not allowed");
    let last = f.commit(0, "a1");
    let response = on_stream(f.engine.clone(), f.delivery(&[0])).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let a = f.item(0);
    assert_eq!(a.record.status, BackupStatus::Active);
    assert_eq!(a.parked, 1);
    let error = a.record.last_error.expect("lastError");
    assert!(error.contains("an error on our side"), "{error}");
    assert!(!error.contains("AccessDenied"), "{error}");

    // Fixed: the next pass writes and clears lastError; the count stays.
    f.bucket.heal();
    let report = f.pass(0, Trigger::CatchUp).await;
    assert_eq!(report.commits_forwarded, 1, "{report:?}");
    let a = f.item(0);
    assert_eq!(
        (a.cursor, a.record.last_error, a.parked),
        (Some(last), None, 1)
    );
}

#[tokio::test]
async fn a_busy_store_of_ours_stays_a_batch_item_failure() {
    // DynamoDB throttling: retrying the batch soon may work, and it is our outage.
    let f = fleet(2);
    f.all_active().await;
    let a1 = f.commit(0, "a1");
    let b1 = f.commit(1, "b1");
    f.kv.throttle_reads(f.backups[0].database_id, 1);
    let response = on_stream(f.engine.clone(), f.delivery(&[0, 1])).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|r| r.item_identifier.clone())
        .collect();
    assert_eq!(
        failed,
        [Some("100".to_string())],
        "the first record of database 0"
    );
    assert_eq!(f.item(1).cursor, Some(b1));
    let a = f.item(0);
    assert_eq!(
        (a.parked, a.record.status.clone()),
        (0, BackupStatus::Active)
    );
    // The retry of the batch goes through.
    let response = on_stream(f.engine.clone(), f.delivery(&[0])).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(f.item(0).cursor, Some(a1));
}

#[test]
fn errors_are_classified_by_whether_a_retry_can_fix_them() {
    use subkv_kv::backup_format::FormatError;
    let never = [
        EngineError::Kv(KvError::Malformed("malformed data item: log body".into())),
        EngineError::Format(FormatError::OutOfOrder {
            previous: 2,
            version: 1,
        }),
        EngineError::Store(StoreError::Malformed("backup item".into())),
        EngineError::Store(StoreError::kms(
            "Decrypt",
            Recovery::Never,
            std::io::Error::other("InvalidCiphertextException"),
        )),
    ];
    for e in never {
        assert_eq!(e.recovery(), Recovery::Never, "{e}");
    }
    let retry = [
        EngineError::Kv(KvError::Unavailable("busy".into())),
        EngineError::Store(StoreError::Conflict),
        EngineError::Store(StoreError::dynamo(
            "Query",
            Recovery::Retry,
            std::io::Error::other("ProvisionedThroughputExceededException"),
        )),
    ];
    for e in retry {
        assert_eq!(e.recovery(), Recovery::Retry, "{e}");
    }
    let operator = [
        EngineError::Kv(KvError::Internal("Query: AccessDeniedException".into())),
        EngineError::Store(StoreError::kms(
            "Decrypt",
            Recovery::Operator,
            std::io::Error::other("DisabledException"),
        )),
    ];
    for e in operator {
        assert_eq!(e.recovery(), Recovery::Operator, "{e}");
    }
}
