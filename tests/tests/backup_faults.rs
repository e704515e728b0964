//! Backup engine under faults, on the local stack (moto S3 behind a fault proxy,
//! the stream pump and the scheduled catch-up of `backup-forward`):
//! - one tenant's store refusing and another's failing never hold back a third;
//!   the refused backup is `failed` and never tried again; the failing one catches
//!   up by itself once its store is back;
//! - duplicate stream deliveries and a crash between an object's write and the
//!   cursor update leave the backup exactly the database (restored with `denokv`);
//! - a disabled backup gets nothing more.

use serde_json::{json, Value};
use std::time::Duration;
use subkv_e2e::api_url;
use subkv_e2e::backup::{
    assert_same_state, commit, dump, emulator_url, enable_backup, expire_change_records_after,
    fresh_bucket, get_backup, kv, kv_database, list_keys, poll, wait_backed_up, KvDatabase,
    Restore, DEADLINE,
};
use subkv_e2e::fault_proxy::{Fault, FaultProxy};

const PREFIX: &str = "faults/";

/// Enables a backup of `db` whose endpoint is `endpoint`, signed with `access_key_id`.
async fn enable_at(db: &KvDatabase, endpoint: &str, access_key_id: &str, bucket: &str) -> String {
    subkv_e2e::backup::enable_backup_at(db, endpoint, access_key_id, bucket, PREFIX).await
}

async fn status(db: &KvDatabase, backup: &str) -> Value {
    get_backup(&db.org.token, backup).await["status"].clone()
}

fn root(db: &KvDatabase) -> String {
    format!("{PREFIX}{}/", db.id)
}

#[tokio::test]
async fn a_refused_and_a_failing_store_never_hold_back_another_tenant() {
    let upstream = emulator_url().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(upstream).await;
    proxy.set("refused-key", Fault::Refuse);
    proxy.set("failing-key", Fault::Fail);
    let store = kv().await;
    let (refused, failing, healthy) = (
        kv_database("faults-refused").await,
        kv_database("faults-failing").await,
        kv_database("faults-healthy").await,
    );
    let (b_refused, b_failing, b_healthy) = (
        fresh_bucket("refused").await,
        fresh_bucket("failing").await,
        fresh_bucket("healthy").await,
    );
    for (db, n) in [(&refused, 3), (&failing, 3), (&healthy, 3)] {
        for i in 0..n {
            commit(&store, db, &format!("k{i}"), Some(b"v")).await;
        }
    }
    let id_refused = enable_at(&refused, &proxy.endpoint(), "refused-key", &b_refused).await;
    let id_failing = enable_at(&failing, &proxy.endpoint(), "failing-key", &b_failing).await;
    let id_healthy = enable_backup(&healthy, &b_healthy, PREFIX).await;
    let last_failing = commit(&store, &failing, "after-enable", Some(b"f")).await;
    let last = commit(&store, &healthy, "after-enable", Some(b"h")).await;

    // The healthy tenant is backed up while the others are refused / failing.
    wait_backed_up(&healthy.org.token, &id_healthy, &last, DEADLINE).await;
    let failed = poll(
        "refused backup failed",
        DEADLINE,
        Duration::from_millis(300),
        || async {
            let s = status(&refused, &id_refused).await;
            match s["code"].as_str() {
                Some("failed") => Ok(s),
                _ => Err(s.to_string()),
            }
        },
    )
    .await;
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("InvalidAccessKeyId"), "{failed}");
    assert!(!message.contains("fault-secret"), "{failed}");
    let pending = poll(
        "failing backup reports its error",
        DEADLINE,
        Duration::from_millis(300),
        || async {
            let s = status(&failing, &id_failing).await;
            match (s["code"].as_str(), s["lastError"].as_str()) {
                (Some("pending"), Some(e)) if e.contains("SlowDown") => Ok(s),
                _ => Err(s.to_string()),
            }
        },
    )
    .await;
    assert!(pending.get("message").is_none(), "{pending}");

    // Nothing more is attempted for the failed backup, while the engine keeps
    // passing over the others (the failing store sees new attempts).
    let refused_seen = proxy.seen("refused-key");
    let failing_seen = proxy.seen("failing-key");
    commit(&store, &refused, "after-failure", Some(b"r")).await;
    let last = commit(&store, &healthy, "after-failure", Some(b"h2")).await;
    wait_backed_up(&healthy.org.token, &id_healthy, &last, DEADLINE).await;
    poll(
        "more attempts on the failing store",
        DEADLINE,
        Duration::from_millis(300),
        || async {
            let now = proxy.seen("failing-key");
            if now >= failing_seen + 2 {
                Ok(())
            } else {
                Err(format!("{now} requests"))
            }
        },
    )
    .await;
    assert_eq!(
        proxy.seen("refused-key"),
        refused_seen,
        "a failed backup was tried again"
    );
    assert_eq!(status(&refused, &id_refused).await["code"], "failed");

    // Metrics per backup (CloudWatch Embedded Metric Format lines in the log).
    let log = std::fs::read_to_string(subkv_e2e::api_log_path()).unwrap_or_default();
    let metric = |backup: &str, needle: &str| {
        log.lines().any(|l| {
            l.contains("\"CloudWatchMetrics\"") && l.contains(backup) && l.contains(needle)
        })
    };
    assert!(
        metric(&id_refused, "\"Failures\":1"),
        "no failure metric for the refused backup"
    );
    assert!(
        metric(&id_failing, "\"Failures\":1"),
        "no failure metric for the failing backup"
    );
    assert!(
        log.lines().any(|l| l.contains("\"CloudWatchMetrics\"")
            && l.contains(&id_healthy)
            && l.contains("\"RecordsForwarded\":")
            && !l.contains("\"RecordsForwarded\":0")),
        "no forwarded-records metric for the healthy backup"
    );

    // The failing store comes back: that backup catches up by itself, complete.
    proxy.set("failing-key", Fault::Pass);
    let caught_up = wait_backed_up(&failing.org.token, &id_failing, &last_failing, DEADLINE).await;
    assert!(caught_up.get("lastError").is_none(), "{caught_up}");
    let restore = Restore::new(&b_failing, &root(&failing));
    restore.sync();
    assert_eq!(restore.current(), last_failing);
    assert_same_state(
        "caught-up backup",
        &dump(&failing.url, &failing.org.token),
        &restore.dump(),
    );
}

/// Sets a backup's cursor back to `version`: the state a crash between a log
/// object's write and the cursor update leaves (the object is in the bucket, the
/// cursor says it is not).
async fn rewind_cursor(db: &KvDatabase, backup: &str, version: u64) {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = std::env::var("SUBKV_CONTROL_TABLE").unwrap_or_else(|_| "subkv-control".into());
    aws_sdk_dynamodb::Client::new(&sdk)
        .update_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("ORG#{}", db.org.id)),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("BACKUP#{backup}")),
        )
        .update_expression("SET logCursor = :v")
        .expression_attribute_values(
            ":v",
            aws_sdk_dynamodb::types::AttributeValue::N(version.to_string()),
        )
        .send()
        .await
        .expect("rewind the cursor");
}

/// The stream event Lambda would deliver again for one of `db`'s change records.
fn stream_event(db: &KvDatabase, seq: &str) -> Value {
    json!({"Records": [{
        "eventID": "duplicate", "eventName": "INSERT", "eventVersion": "1.1",
        "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_764_000_000,
            "Keys": {"pk": {"S": db.id}, "sk": {"B": "AAAAAAAAAAEAAA=="}},
            "SequenceNumber": seq, "SizeBytes": 10, "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/subkv-kv-log/stream/x"
    }]})
}

async fn invoke_backup_forward(event: &Value) -> Value {
    let url = format!(
        "{}/2015-03-31/functions/backup-forward/invocations",
        api_url()
    );
    let reply = reqwest::Client::new()
        .post(url)
        .json(event)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("invoke backup-forward");
    assert!(reply.status().is_success(), "{}", reply.status());
    reply.json().await.expect("invocation result")
}

#[tokio::test]
async fn duplicate_deliveries_and_a_crash_before_the_cursor_moves_leave_the_backup_exact() {
    let store = kv().await;
    let db = kv_database("faults-replay").await;
    let bucket = fresh_bucket("replay").await;
    for i in 0..4 {
        commit(
            &store,
            &db,
            &format!("k{i}"),
            Some(format!("v{i}").as_bytes()),
        )
        .await;
    }
    let backup = enable_backup(&db, &bucket, PREFIX).await;
    let mut last = String::new();
    for i in 0..4 {
        last = commit(&store, &db, &format!("live{i}"), Some(b"x")).await;
    }
    wait_backed_up(&db.org.token, &backup, &last, DEADLINE).await;
    let objects = list_keys(&bucket, &root(&db)).await;

    // Duplicate deliveries: the engine reads from the cursor, so nothing changes.
    for _ in 0..2 {
        let reply = invoke_backup_forward(&stream_event(&db, "1")).await;
        assert_eq!(reply["batchItemFailures"], json!([]), "{reply}");
    }
    assert_eq!(list_keys(&bucket, &root(&db)).await, objects);
    assert_eq!(
        status(&db, &backup).await["lastVersionstamp"],
        last.as_str()
    );

    // A crash after writing the objects of the last 3 commits, before the cursor
    // moved: the engine writes them again (same first commit, so the same monoseq)
    // with what came since.
    let head = u64::from_str_radix(&last[..16], 16).expect("versionstamp");
    rewind_cursor(&db, &backup, head - 3).await;
    commit(&store, &db, "k1", None).await;
    let last = commit(&store, &db, "after-crash", Some(b"y")).await;
    wait_backed_up(&db.org.token, &backup, &last, DEADLINE).await;
    let logs: Vec<String> = list_keys(&bucket, &format!("{}logs/", root(&db))).await;
    let monoseq = |k: &String| k.rsplit('/').next().unwrap_or_default()[..21].to_string();
    let replayed = format!("0001_{:016x}", head - 2);
    assert!(
        logs.iter().any(|k| monoseq(k) == replayed),
        "after the crash the engine should write again from commit {}: {logs:?}",
        head - 2
    );

    // Restored with denokv: exactly the database, and at every recovery point
    // offered, the versionstamps strictly decreasing.
    let restore = Restore::new(&bucket, &root(&db));
    restore.sync();
    assert_eq!(restore.current(), last);
    assert_same_state(
        "after duplicates and a crash",
        &dump(&db.url, &db.org.token),
        &restore.dump(),
    );
    let points = restore.list();
    assert!(
        points
            .windows(2)
            .all(|w| w[0].versionstamp > w[1].versionstamp),
        "{points:?}"
    );
    // Nothing here outgrew the change log: one snapshot generation, never a second.
    let snapshots = list_keys(&bucket, &format!("{}snapshots/", root(&db))).await;
    assert!(
        snapshots
            .iter()
            .all(|k| k.contains("/0001_0000000000000001_")),
        "a needless re-snapshot: {snapshots:?}"
    );
}

#[tokio::test]
async fn a_disabled_backup_gets_nothing_more() {
    let store = kv().await;
    let db = kv_database("faults-disable").await;
    let other = kv_database("faults-disable-other").await;
    let (bucket, other_bucket) = (
        fresh_bucket("disable").await,
        fresh_bucket("disable-o").await,
    );
    let backup = enable_backup(&db, &bucket, PREFIX).await;
    let other_backup = enable_backup(&other, &other_bucket, PREFIX).await;
    let last = commit(&store, &db, "a", Some(b"1")).await;
    wait_backed_up(&db.org.token, &backup, &last, DEADLINE).await;

    let reply = subkv_e2e::delete(&format!("/v1/database_backups/{backup}"), &db.org.token).await;
    assert!(reply.status.is_success(), "{}", reply.text);
    let objects = list_keys(&bucket, &root(&db)).await;
    commit(&store, &db, "b", Some(b"2")).await;
    // The engine has passed over every database since: the other backup has the
    // commit made after this one.
    let other_last = commit(&store, &other, "x", Some(b"1")).await;
    wait_backed_up(&other.org.token, &other_backup, &other_last, DEADLINE).await;
    assert_eq!(list_keys(&bucket, &root(&db)).await, objects);
}

#[tokio::test]
async fn a_backup_that_fell_behind_the_change_log_re_snapshots_and_restores_exactly() {
    let upstream = emulator_url().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(upstream).await;
    let store = kv().await;
    let db = kv_database("faults-gap").await;
    let bucket = fresh_bucket("gap").await;
    let backup = enable_at(&db, &proxy.endpoint(), "gap-key", &bucket).await;
    // Active on the empty database first, so these commits reach the bucket as logs.
    wait_backed_up(&db.org.token, &backup, "00000000000000000000", DEADLINE).await;
    commit(&store, &db, "gone", Some(b"1")).await;
    commit(&store, &db, "kept", Some(b"1")).await;
    let backed_up = commit(&store, &db, "stable", Some(b"1")).await;
    wait_backed_up(&db.org.token, &backup, &backed_up, DEADLINE).await;

    // The object of the next commits cannot be written (the store fails it) for
    // longer than the change log keeps records: the commits made meanwhile (a
    // deletion among them) are gone from the change log.
    let cursor = u64::from_str_radix(&backed_up[..16], 16).expect("versionstamp");
    let next_object: &'static str = Box::leak(format!("_{:016x}_", cursor + 1).into_boxed_str());
    proxy.set("gap-key", Fault::FailWhere(next_object));
    commit(&store, &db, "gone", None).await;
    commit(&store, &db, "kept", Some(b"2")).await;
    commit(&store, &db, "new", Some(b"1")).await;
    poll(
        "the failing store is noticed",
        DEADLINE,
        Duration::from_millis(300),
        || async {
            let s = status(&db, &backup).await;
            match s["lastError"].as_str() {
                Some(e) if e.contains("SlowDown") => Ok(()),
                _ => Err(s.to_string()),
            }
        },
    )
    .await;
    assert_eq!(expire_change_records_after(&db, cursor).await, 3);
    // The engine notices the hole, takes a new snapshot (its differential is the
    // head), empties what the bucket held of the old generation, and goes on.
    let head = cursor + 3;
    let differential = hex::encode(subkv_kv::model::versionstamp(head));
    wait_backed_up(&db.org.token, &backup, &differential, DEADLINE).await;
    let last = commit(&store, &db, "after", Some(b"1")).await;
    wait_backed_up(&db.org.token, &backup, &last, DEADLINE).await;
    let snapshots = list_keys(&bucket, &format!("{}snapshots/", root(&db))).await;
    assert!(
        snapshots
            .iter()
            .any(|k| k.contains("/0001_0000000000000002_")),
        "no second snapshot generation: {snapshots:?}"
    );

    // A fresh restore is exactly the database: the deleted key stays deleted and
    // the changed one has its new value, though their commits never reached the
    // bucket as logs (the old logs that set them are emptied).
    let restore = Restore::new(&bucket, &root(&db));
    restore.sync();
    assert_eq!(restore.current(), last);
    let restored = restore.dump();
    assert_same_state(
        "after a re-snapshot",
        &dump(&db.url, &db.org.token),
        &restored,
    );
    assert!(!restored.to_string().contains("\"gone\""), "{restored}");
}
