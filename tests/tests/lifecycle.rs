//! Deleting a database (issue 15, `DELETE /v1/databases/{id}`; docs/data-plane.md,
//! "Deleted databases"), end to end: gone at once for the API, for KV Connect (a
//! new session and a data-path token issued before), and for a Deno session that
//! was open; its backup deleted with the bucket's objects left; its items removed
//! from the data table and the change log by the purge function, in several steps;
//! the purge finished and taken off its list.

use aws_sdk_dynamodb::types::AttributeValue;
use denokv_proto::datapath as pb;
use prost::Message;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};
use subkv_e2e::backup::{
    deno_script, enable_backup, fresh_bucket, get_backup, get_object, kv_database, list_keys, poll,
    wait_backed_up,
};
use subkv_e2e::kv_wire::{connect, key, set, Session};
use subkv_e2e::{delete, get};

async fn dynamo() -> aws_sdk_dynamodb::Client {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_dynamodb::Client::new(&sdk)
}

fn table(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

/// Every item of partition `pk` of `table`.
async fn partition(table: &str, pk: AttributeValue) -> Vec<AttributeValue> {
    let client = dynamo().await;
    let mut pages = client
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", pk)
        .consistent_read(true)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        for item in page.expect("query").items.unwrap_or_default() {
            keys.push(item["sk"].clone());
        }
    }
    keys
}

fn data_table() -> String {
    table("SUBKV_KV_DATA_TABLE", subkv_dynamo_kv::DEFAULT_DATA_TABLE)
}

fn log_table() -> String {
    table("SUBKV_KV_LOG_TABLE", subkv_dynamo_kv::DEFAULT_LOG_TABLE)
}

fn control_table() -> String {
    table("SUBKV_CONTROL_TABLE", "subkv-control")
}

/// How many items of the database remain: (data items, change records, control
/// items in its `DB#<id>` partition).
async fn remaining(db: &str) -> (usize, usize, Vec<String>) {
    let data = partition(&data_table(), AttributeValue::S(db.into()))
        .await
        .len();
    let log = partition(&log_table(), AttributeValue::S(db.into()))
        .await
        .len();
    let control = partition(&control_table(), AttributeValue::S(format!("DB#{db}")))
        .await
        .into_iter()
        .map(|sk| sk.as_s().cloned().unwrap_or_default())
        .collect();
    (data, log, control)
}

#[tokio::test]
async fn a_deleted_database_is_gone_at_once_and_its_storage_purged_in_steps() {
    let db = kv_database("lifecycle").await;
    let bucket = fresh_bucket("lifecycle").await;
    let backup = enable_backup(&db, &bucket, "tenant/").await;
    // Active first, on the empty database (a one-chunk snapshot): the writes
    // below then reach the bucket as log objects, not as a snapshot of hundreds
    // of chunks that a loaded machine takes minutes to write.
    poll(
        "the backup of the empty database active",
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async {
            let status = get_backup(&db.org.token, &backup).await["status"].clone();
            match status["code"].as_str() {
                Some("active") => Ok(()),
                _ => Err(status.to_string()),
            }
        },
    )
    .await;

    // 2,600 keys (3 purge steps of 1,000), 20 of them long (bucket items), in
    // 3 commits: data items and change records to purge.
    let session = Session::of(&db.id, &db.org.token).await;
    let mut mutations: Vec<pb::Mutation> = (0..2580)
        .map(|i| {
            set(
                &key(&format!("k{i:05}")),
                format!("value {i}").as_bytes(),
                0,
            )
        })
        .collect();
    mutations
        .extend((0..20).map(|i| set(&key(&format!("{}{i:02}", "l".repeat(1500))), b"long", 0)));
    session.write_all(mutations).await;
    let last = session
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("last"), b"1", 0)],
            ..Default::default()
        })
        .await;
    let last = hex::encode(&last.versionstamp);
    wait_backed_up(&db.org.token, &backup, &last, Duration::from_secs(120)).await;
    let objects = list_keys(&bucket, "tenant/").await;
    assert!(!objects.is_empty(), "the backup wrote nothing");
    // Every byte the backup put in the bucket is in the database's usage
    // (`backupBytes`, counted as each pass ends; a rewritten object counts again).
    let mut in_bucket = 0;
    for object in &objects {
        in_bucket += get_object(&bucket, object)
            .await
            .map_or(0, |b| b.len() as u64);
    }
    let usage_path = format!("/v1/databases/{}/usage", db.id);
    let counted = poll(
        "the backup's bytes counted",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let usage = get(&usage_path, &db.org.token).await.assert_ok().clone();
            match usage["total"]["backupBytes"].as_u64() {
                Some(bytes) if bytes >= in_bucket => Ok(bytes),
                _ => Err(format!("{in_bucket} bytes in the bucket; {usage}")),
            }
        },
    )
    .await;
    eprintln!("backupBytes {counted} for {in_bucket} bytes in the bucket");
    let (data, log, _) = remaining(&db.id).await;
    assert!(
        data >= 2581 && log >= 4,
        "{data} data items, {log} change records"
    );

    // Another organization cannot delete it; its own can.
    let stranger = subkv_e2e::create_org("lifecycle-stranger").await;
    let path = format!("/v1/databases/{}", db.id);
    delete(&path, &stranger.token)
        .await
        .assert_error(404, "databaseNotFound");
    let started = Instant::now();
    assert_eq!(delete(&path, &db.org.token).await.assert_ok(), &json!({}));

    // Gone at once: the API, the backup, the metadata exchange, and the
    // data-path token issued before the deletion (a write, then a read).
    get(&path, &db.org.token)
        .await
        .assert_error(404, "databaseNotFound");
    let listed = get(
        &format!("/v1/organizations/{}/databases", db.org.id),
        &db.org.token,
    )
    .await;
    assert_eq!(listed.assert_ok(), &json!([]));
    get(&format!("/v1/database_backups/{backup}"), &db.org.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    connect(&db.id, &db.org.token, r#"{"supportedVersions":[1,2,3]}"#)
        .await
        .assert_plain_error(404, "not found");
    let write = pb::AtomicWrite {
        mutations: vec![set(&key("after"), b"x", 0)],
        ..Default::default()
    };
    session
        .call("atomic_write", write.encode_to_vec())
        .await
        .assert_plain_error(404, "deleted");
    let read = pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key("k"),
            end: key("l"),
            limit: 10,
            reverse: false,
        }],
    };
    session
        .call("snapshot_read", read.encode_to_vec())
        .await
        .assert_plain_error(404, "deleted");
    delete(&path, &db.org.token)
        .await
        .assert_error(404, "databaseNotFound");

    // The storage: purged by kv-purge-deleted (steps of 1,000 items), the
    // purge then taken off its list once settled (5 s on the local stack).
    let (data, log, control) = poll(
        "the deleted database's items purged and its purge finished",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let left = remaining(&db.id).await;
            match left {
                // What stays: the record of its organization (a week), for the
                // storage meter's count of the purge's deletions.
                (0, 0, ref control) if *control == ["GONE"] => Ok(left),
                _ => Err(format!("{left:?}; {}", purge_runs())),
            }
        },
    )
    .await;
    eprintln!(
        "purged in {:?}: {data} {log} {control:?}",
        started.elapsed()
    );
    // Its stored bytes and keys, counted from the data table's stream, fall to
    // zero with the purge; the organization's usage still lists it.
    let usage_path = format!("/v1/organizations/{}/usage", db.org.id);
    poll(
        "the purged database's stored bytes counted down to 0",
        Duration::from_secs(240),
        Duration::from_millis(250),
        || async {
            let usage = get(&usage_path, &db.org.token).await.assert_ok().clone();
            let line = usage["databases"]
                .as_array()
                .and_then(|d| d.iter().find(|d| d["databaseId"] == db.id.as_str()))
                .cloned();
            match line {
                Some(line) if line["keys"] == 0 && line["storedBytes"] == 0 => Ok(()),
                _ => Err(usage.to_string()),
            }
        },
    )
    .await;
    // The head stays, marked, with a TTL a day out (no data-path token outlives it).
    let head = dynamo()
        .await
        .get_item()
        .table_name(data_table())
        .key("pk", AttributeValue::S(format!("{}#head", db.id)))
        .key("sk", AttributeValue::B(b"head".to_vec().into()))
        .consistent_read(true)
        .send()
        .await
        .expect("head")
        .item
        .expect("the marked head stays");
    let ttl: i64 = head["ttl"].as_n().unwrap().parse().unwrap();
    let gone: i64 = head["kv_gone"].as_n().unwrap().parse().unwrap();
    assert_eq!(ttl, gone / 1000 + 24 * 3600, "{head:?}");
    // The tenant's bucket keeps what the backup wrote.
    let after = list_keys(&bucket, "tenant/").await;
    assert!(
        objects.iter().all(|o| after.contains(o)),
        "objects removed from the bucket"
    );
}

#[tokio::test]
async fn a_deno_session_open_across_the_deletion_gets_errors_not_a_hang() {
    let db = kv_database("lifecycle-deno").await;
    let mut child = deno_script("deleted_session.ts")
        .arg(&db.url)
        .env("DENO_KV_ACCESS_TOKEN", &db.org.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("deno starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("deno says ready");
    assert_eq!(line.trim(), "ready");

    let reply = delete(&format!("/v1/databases/{}", db.id), &db.org.token).await;
    assert_eq!(reply.assert_ok(), &json!({}));
    writeln!(child.stdin.take().expect("stdin"), "deleted").expect("tell deno");

    // Deno's client retries a 5xx forever: an answer at all shows these were 4xx.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("deno answered within 60 s (a 5xx would be retried forever)");
    let _ = child.wait();
    let outcome: Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    for op in ["set", "get"] {
        let message = outcome[op].as_str().unwrap_or_default();
        assert!(
            message.contains("404") && message.contains("deleted"),
            "{op}: {outcome}"
        );
    }
    // A new session cannot open it either.
    let dump = deno_script("dump.ts")
        .arg(&db.url)
        .env("DENO_KV_ACCESS_TOKEN", &db.org.token)
        .output()
        .expect("deno runs");
    assert!(!dump.status.success());
    let stderr = String::from_utf8_lossy(&dump.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
}

#[tokio::test]
async fn an_organization_is_deleted_with_its_databases_only_when_forced() {
    let db = kv_database("lifecycle-org").await;
    let session = Session::of(&db.id, &db.org.token).await;
    let mutations = (0..50)
        .map(|i| set(&key(&format!("k{i}")), b"v", 0))
        .collect();
    session.write_all(mutations).await;
    let admin = subkv_e2e::admin_token();
    let path = format!("/v1/organizations/{}", db.org.id);

    delete(&path, &db.org.token)
        .await
        .assert_error(403, "forbidden");
    let refused = delete(&path, &admin).await;
    refused.assert_error(409, "organizationHasDatabases");
    assert!(refused.json["message"]
        .as_str()
        .unwrap()
        .contains("force=true"));
    get(&format!("/v1/databases/{}", db.id), &db.org.token)
        .await
        .assert_ok();

    assert_eq!(
        delete(&format!("{path}?force=true"), &admin)
            .await
            .assert_ok(),
        &json!({})
    );
    get(&path, &admin)
        .await
        .assert_error(404, "organizationNotFound");
    let listed = get(&format!("/v1/organizations?q={}", db.org.id), &admin).await;
    assert_eq!(listed.assert_ok(), &json!([]));
    // Its token is gone: 401 for the API and the metadata exchange; the data
    // path refuses the database (deleted: 404, or the token revoked: 401).
    get(&format!("/v1/databases/{}", db.id), &db.org.token)
        .await
        .assert_error(401, "unauthorized");
    connect(&db.id, &db.org.token, r#"{"supportedVersions":[3]}"#)
        .await
        .assert_plain_error(401, "invalid access token");
    let status = session
        .call(
            "snapshot_read",
            pb::SnapshotRead {
                ranges: vec![pb::ReadRange {
                    start: key("k"),
                    end: key("l"),
                    limit: 10,
                    reverse: false,
                }],
            }
            .encode_to_vec(),
        )
        .await
        .status
        .as_u16();
    assert!(status == 404 || status == 401, "{status}");
    // Its database's storage is purged.
    poll(
        "the organization's database purged",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            match remaining(&db.id).await {
                (0, 0, control) if control == ["GONE"] => Ok(()),
                left => Err(format!("{left:?}; {}", purge_runs())),
            }
        },
    )
    .await;
    delete(&path, &admin)
        .await
        .assert_error(404, "organizationNotFound");
}

/// The purge function's last runs, for a message when a purge is not seen.
fn purge_runs() -> String {
    format!(
        "the last runs of kv-purge-deleted:\n{}",
        subkv_e2e::scheduled_runs("kv-purge-deleted", 5)
    )
}
