//! The backup engine at fleet scale (issue 11), on the local stack:
//! - a backup that is `active` and caught up leaves the catch-up's due list (the
//!   sparse `due` index), so an idle backup costs the catch-up one visit an hour
//!   (its sweep slot) instead of one a minute, and the stream alone keeps it
//!   current from then on;
//! - a backup that cannot finish is on the due list, and its status shows how far
//!   its snapshot has got (`snapshotChunks`) and why it is stuck (`lastError`).

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use std::time::Duration;
use subkv_core::control::locator::{
    sweep_slot, sweep_slot_value, BACKUPS_INDEX_PK, DUE_INDEX, DUE_INDEX_PK, DUE_INDEX_VALUE,
    LOCATOR_SK,
};
use subkv_e2e::backup::{
    commit, emulator_url, enable_backup, fresh_bucket, get_backup, kv, kv_database, poll,
    wait_backed_up, KvDatabase, DEADLINE,
};
use subkv_e2e::fault_proxy::{Fault, FaultProxy};
use uuid::Uuid;

const PREFIX: &str = "fleet/";

async fn control() -> (aws_sdk_dynamodb::Client, String) {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = std::env::var("SUBKV_CONTROL_TABLE").unwrap_or_else(|_| "subkv-control".into());
    (aws_sdk_dynamodb::Client::new(&sdk), table)
}

/// Whether the backup is in the catch-up's due index.
async fn is_due(backup: &str) -> bool {
    let (client, table) = control().await;
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(&table)
            .index_name(DUE_INDEX)
            .key_condition_expression("#i = :v")
            .expression_attribute_names("#i", DUE_INDEX_PK)
            .expression_attribute_values(":v", AttributeValue::S(DUE_INDEX_VALUE.into()))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("query the due index");
        let sk = format!("BACKUP#{backup}");
        if page
            .items()
            .iter()
            .any(|item| item.get("sk").and_then(|v| v.as_s().ok()) == Some(&sk))
        {
            return true;
        }
        match page.last_evaluated_key {
            Some(key) => start = Some(key),
            None => return false,
        }
    }
}

async fn wait_due(backup: &str, want: bool, timeout: Duration) {
    poll(
        &format!("backup {backup} due = {want}"),
        timeout,
        Duration::from_millis(250),
        || async {
            match is_due(backup).await {
                due if due == want => Ok(()),
                due => Err(format!("due = {due}")),
            }
        },
    )
    .await;
}

#[tokio::test]
async fn an_idle_backup_leaves_the_due_list_and_the_stream_keeps_it_current() {
    let db = kv_database("fleet-idle").await;
    let store = kv().await;
    for i in 0..3 {
        commit(&store, &db, &format!("k{i}"), Some(b"v")).await;
    }
    let last = commit(&store, &db, "k3", Some(b"v")).await;
    let bucket = fresh_bucket("fleet-idle").await;
    let backup = enable_backup(&db, &bucket, PREFIX).await;
    wait_backed_up(&db.org.token, &backup, &last, DEADLINE).await;

    // Its locator is in the sweep slot of its database.
    let (client, table) = control().await;
    let locator = client
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S(format!("DB#{}", db.id)))
        .key("sk", AttributeValue::S(LOCATOR_SK.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get the locator")
        .item
        .expect("the locator exists");
    let slot = sweep_slot(Uuid::parse_str(&db.id).expect("database id"));
    assert_eq!(
        locator.get(BACKUPS_INDEX_PK).and_then(|v| v.as_s().ok()),
        Some(&sweep_slot_value(slot))
    );

    // Active and caught up: a catch-up (every 2 s locally) takes it off the list
    // once the negative cache's time (2 s locally) has passed.
    wait_due(&backup, false, Duration::from_secs(30)).await;

    // The stream alone carries its commits to the bucket; they do not put it back.
    for i in 0..3 {
        let vs = commit(&store, &db, &format!("after{i}"), Some(b"w")).await;
        wait_backed_up(&db.org.token, &backup, &vs, Duration::from_secs(20)).await;
    }
    assert!(
        !is_due(&backup).await,
        "forwarding put the backup back on the due list"
    );
}

#[tokio::test]
async fn a_stuck_pending_backup_is_due_and_shows_its_snapshot_progress() {
    let upstream = emulator_url().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(upstream).await;
    // Every object but the differential is written: the snapshot completes, the
    // backup cannot become active.
    proxy.set("stuck-key", Fault::FailWhere("differential"));
    let db: KvDatabase = kv_database("fleet-stuck").await;
    let store = kv().await;
    for i in 0..30 {
        commit(&store, &db, &format!("k{i:02}"), Some(b"v")).await;
    }
    let bucket = fresh_bucket("fleet-stuck").await;
    let backup =
        subkv_e2e::backup::enable_backup_at(&db, &proxy.endpoint(), "stuck-key", &bucket, PREFIX)
            .await;

    // 30 keys in chunks of 8 (the local stack's): at least 4 chunks.
    let status: Value = poll(
        "a pending backup with its snapshot written and an error",
        DEADLINE,
        Duration::from_millis(250),
        || async {
            let status = get_backup(&db.org.token, &backup).await["status"].clone();
            let chunks = status["snapshotChunks"].as_u64().unwrap_or(0);
            match status["code"].as_str() {
                Some("pending") if chunks >= 4 && status["lastError"].is_string() => Ok(status),
                _ => Err(status.to_string()),
            }
        },
    )
    .await;
    // The store's 503s, or (on a stream delivery, whose puts are limited to 2 s
    // while the S3 client retries them) the time they took.
    assert!(
        status["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("SlowDown") || e.contains("did not complete")),
        "{status}"
    );
    assert!(
        is_due(&backup).await,
        "a stuck backup must be on the due list"
    );

    // Fixed: it becomes active (if its breaker opened, once the catch-up's probe
    // after 30 s lands), its status no longer shows snapshot progress, and it
    // leaves the due list.
    proxy.set("stuck-key", Fault::Pass);
    let status = poll(
        "the backup active",
        DEADLINE,
        Duration::from_millis(250),
        || async {
            let status = get_backup(&db.org.token, &backup).await["status"].clone();
            match status["code"].as_str() {
                Some("active") => Ok(status),
                _ => Err(status.to_string()),
            }
        },
    )
    .await;
    assert!(status.get("snapshotChunks").is_none(), "{status}");
    wait_due(&backup, false, Duration::from_secs(30)).await;
}
