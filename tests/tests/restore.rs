//! Restore through the management API (issue 14, docs/restore.md): `POST
//! /v1/organizations/{org}/databases` with `restoreFrom`, run by the scheduled
//! `restore-database` function in steps of 100 writes and invocations of 2 s (the
//! local stack's settings), then read back through KV Connect by Deno and by the
//! protocol, and compared with what Deno saw at each point, or with what the real
//! `denokv` restores from the same bucket.

use serde_json::{json, Value};
use std::time::Duration;
use subkv_e2e::backup::*;
use subkv_e2e::fault_proxy::{Fault, FaultProxy};
use subkv_e2e::kv_wire::{connect, now_ms};
use subkv_e2e::restore::*;
use subkv_e2e::{api_url, create_org, get, post, Org};

const PREFIX: &str = "restore/";

/// How long a restore of the tests' sizes may take on the local stack (a few
/// hundred keys, scheduler ticks of a second).
const RESTORE_DEADLINE: Duration = Duration::from_secs(120);

fn kv_database_of(org: &Org, db: &Value) -> KvDatabase {
    let id = db["id"].as_str().expect("database id").to_string();
    KvDatabase {
        org: org.clone(),
        url: format!("{}/databases/{id}/connect", api_url()),
        id,
    }
}

/// Every restore point of the backup through the API: (versionstamp, timestamp),
/// newest first.
async fn restore_points(org: &Org, backup_id: &str) -> Vec<(String, String)> {
    let reply = get(
        &format!("/v1/database_backups/{backup_id}/restore_points?limit=100"),
        &org.token,
    )
    .await;
    assert!(reply.headers.get("link").is_none(), "one page holds them");
    reply
        .assert_ok()
        .as_array()
        .expect("a list")
        .iter()
        .map(|p| {
            (
                p["versionstamp"]
                    .as_str()
                    .expect("versionstamp")
                    .to_string(),
                p["timestamp"].as_str().expect("timestamp").to_string(),
            )
        })
        .collect()
}

/// The `s3` source of a restore from `bucket` at `endpoint`.
fn s3_source(endpoint: &str, bucket: &str, access_key_id: &str, prefix: &str) -> Value {
    json!({
        "endpoint": endpoint, "bucketName": bucket, "bucketRegion": "us-east-1",
        "accessKeyId": access_key_id, "secretAccessKey": "restore-secret-9f8e", "prefix": prefix,
    })
}

/// The restore's item in the control table (`DB#<db>` / `RESTORE`): whether it
/// still holds the sealed secret, and whether it is still on the work list.
async fn restore_item(database: &str) -> (bool, bool) {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = std::env::var("SUBKV_CONTROL_TABLE").unwrap_or_else(|_| "subkv-control".into());
    let item = aws_sdk_dynamodb::Client::new(&sdk)
        .get_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(format!("DB#{database}")),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("RESTORE".into()),
        )
        .consistent_read(true)
        .send()
        .await
        .expect("GetItem")
        .item
        .expect("the restore's item stays (its job)");
    (
        item.contains_key("secretAccessKeyCiphertext"),
        item.contains_key("dueIndex"),
    )
}

#[tokio::test]
async fn checkpoints_restore_by_versionstamp_by_time_and_the_newest_exactly() {
    let db = kv_database("restore-api").await;
    let mut history = run_workload(&db, 0, 16);
    let bucket = fresh_bucket("restore").await;
    let backup_id = enable_backup(&db, &bucket, PREFIX).await;
    history.extend(run_workload(&db, 16, 32));
    let last = history
        .iter()
        .rev()
        .find(|c| c.recovery_point)
        .unwrap()
        .clone();
    wait_backed_up(&db.org.token, &backup_id, &last.versionstamp, DEADLINE).await;
    history.extend(run_workload(&db, 32, 44));
    let newest = history
        .iter()
        .rev()
        .find(|c| c.recovery_point)
        .unwrap()
        .clone();
    wait_backed_up(&db.org.token, &backup_id, &newest.versionstamp, DEADLINE).await;

    let points = restore_points(&db.org, &backup_id).await;
    let n = points.len();
    assert!(n >= 10, "{points:?}");
    assert_eq!(points[0].0, newest.versionstamp);

    // Every restore asked for at once: (what, database, the point expected).
    let mut asked: Vec<(String, Value, String)> = Vec::new();
    for i in [n - 1, n / 2, 1] {
        let vs = &points[i].0;
        let restored = create_restored(
            &db.org,
            "by versionstamp",
            json!({"databaseBackupId": backup_id, "versionstamp": vs.to_uppercase()}),
        )
        .await;
        assert_eq!(
            restored["restore"]["source"],
            json!({"databaseBackupId": backup_id}),
            "{restored}"
        );
        asked.push((
            format!("point {i} of {n} by versionstamp"),
            restored,
            vs.clone(),
        ));
    }
    // A time: the last point stamped at or before it (points of one log object
    // share its time).
    let time = points[n / 3].1.clone();
    let at_time = points.iter().find(|p| p.1 <= time).unwrap().0.clone();
    asked.push((
        format!("time {time}"),
        create_restored(
            &db.org,
            "by time",
            json!({"databaseBackupId": backup_id, "timestamp": time}),
        )
        .await,
        at_time,
    ));
    asked.push((
        "the newest".into(),
        create_restored(&db.org, "newest", json!({"databaseBackupId": backup_id})).await,
        newest.versionstamp.clone(),
    ));

    for (what, restored, point) in &asked {
        let id = restored["id"].as_str().unwrap();
        let restore = wait_active(&db.org, id, RESTORE_DEADLINE).await;
        assert_eq!(restore["versionstamp"], point.as_str(), "{what}: {restore}");
        assert!(
            restore["status"]["keysRestored"].as_u64().unwrap() > 0,
            "{what}: {restore}"
        );
        // Every key, value and versionstamp as Deno saw it at that point.
        let copy = kv_database_of(&db.org, restored);
        assert_same_state(
            what,
            &at(&history, point).state,
            &dump(&copy.url, &db.org.token),
        );
        // Ended: the sealed secret (none here) and the work-list entry are gone.
        assert_eq!(restore_item(id).await, (false, false), "{what}");
    }

    // The newest copy is an ordinary database: its own backup, new commits after
    // every restored versionstamp, and a restore of its backup gives it again.
    let copy = kv_database_of(&db.org, &asked[asked.len() - 1].1);
    let copy_backup = enable_backup(&copy, &bucket, "again/").await;
    let more = run_workload(&copy, 44, 48);
    assert!(
        more[0].versionstamp > newest.versionstamp,
        "the next commit sorts after the restored entries: {} vs {}",
        more[0].versionstamp,
        newest.versionstamp
    );
    let copy_newest = more.iter().rev().find(|c| c.recovery_point).unwrap();
    wait_backed_up(
        &db.org.token,
        &copy_backup,
        &copy_newest.versionstamp,
        DEADLINE,
    )
    .await;
    let again = create_restored(&db.org, "again", json!({"databaseBackupId": copy_backup})).await;
    let restore = wait_active(&db.org, again["id"].as_str().unwrap(), RESTORE_DEADLINE).await;
    assert_eq!(restore["versionstamp"], copy_newest.versionstamp.as_str());
    let again = kv_database_of(&db.org, &again);
    assert_same_state(
        "a restore of the restored database's backup",
        &dump(&copy.url, &db.org.token),
        &dump(&again.url, &db.org.token),
    );
    assert_same_state(
        "the copy",
        &copy_newest.state,
        &dump(&again.url, &db.org.token),
    );
}

#[tokio::test]
async fn a_deno_deploy_shaped_backup_imports_exactly_and_a_store_failing_mid_restore_resumes() {
    let org = create_org("restore-import").await;
    let bucket = fresh_bucket("deploy").await;
    let root = format!("kv-backups/{}/", uuid::Uuid::new_v4());
    let backup = deploy_shaped_backup(&root, now_ms() as u64);
    put_objects(&bucket, &backup.objects).await;

    // What the real denokv restores from it: the expected rows at each point.
    let copy = Restore::new(&bucket, &root);
    copy.sync();
    let listed = copy.list();
    assert_eq!(listed[0].versionstamp, backup.newest, "{listed:?}");
    let newest_rows = sqlite_rows(&copy);
    assert!(newest_rows.len() > 290, "{}", newest_rows.len());
    copy.checkout(&backup.middle.0);
    let middle_rows = sqlite_rows(&copy);
    // A time half a second after the middle commit's object: that object's last commit.
    let after_middle = listed
        .iter()
        .rev()
        .find(|p| p.versionstamp.as_str() > backup.middle.0.as_str())
        .unwrap()
        .versionstamp
        .clone();
    copy.checkout(&after_middle);
    let after_middle_rows = sqlite_rows(&copy);
    let time = chrono_free_rfc3339(backup.middle.1 + 500);

    // Through a store that fails every read of the second snapshot range: the first
    // range lands, then the restore stops and retries each invocation.
    let upstream = emulator_url().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(upstream).await;
    let second: &'static str = Box::leak(backup.second_range.clone().into_boxed_str());
    proxy.set("import-key", Fault::FailReads(second));
    let endpoint = proxy.endpoint();
    let reply = post(
        &format!("/v1/organizations/{}/databases", org.id),
        &org.token,
        json!({"restoreFrom": {"s3": s3_source(&endpoint, &bucket, "import-key", &root)}}),
    )
    .await;
    let text = serde_json::to_string(reply.assert_ok()).unwrap();
    assert!(!text.contains("restore-secret-9f8e"), "{text}");
    let newest_db = reply.assert_ok().clone();
    assert_eq!(
        newest_db["restore"]["source"],
        json!({"s3": {"endpoint": endpoint, "bucketName": bucket, "bucketRegion": "us-east-1",
                      "accessKeyId": "import-key", "prefix": root}}),
        "{newest_db}"
    );
    let id = newest_db["id"].as_str().unwrap().to_string();
    assert_eq!(
        restore_item(&id).await,
        (true, true),
        "sealed secret kept while pending"
    );
    let stuck = wait_restore(&org, &id, RESTORE_DEADLINE, |r| {
        let retrying = r["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("retrying") && m.contains("SlowDown"));
        if r["status"]["code"] == "pending" && retrying && r["status"]["keysRestored"] == 150 {
            Ok(())
        } else {
            Err("not stopped at the second range yet".into())
        }
    })
    .await;
    assert!(stuck["versionstamp"] == backup.newest.as_str(), "{stuck}");

    // While pending: KV Connect refuses with a 4xx Deno reports (never a 5xx it
    // would retry forever), and a backup cannot be enabled.
    let refused = connect(&id, &org.token, r#"{"supportedVersions":[3]}"#).await;
    refused.assert_plain_error(409, "is being restored");
    post(
        &format!("/v1/databases/{id}/database_backups"),
        &org.token,
        emulator_backup_body(&bucket, "never/"),
    )
    .await
    .assert_error(409, "databaseRestoring");

    // Two more, straight to the emulator: the middle commit, and a time.
    let s3 = s3_source(&emulator_url(), &bucket, "subkv-local", &root);
    let middle_db = create_restored(
        &org,
        "middle",
        json!({"s3": s3, "versionstamp": backup.middle.0}),
    )
    .await;
    let time_db = create_restored(&org, "time", json!({"s3": s3, "timestamp": time})).await;

    // The store recovers: the restore resumes where it stopped.
    proxy.set("import-key", Fault::Pass);
    let restore = wait_active(&org, &id, RESTORE_DEADLINE).await;
    assert_eq!(restore["versionstamp"], backup.newest.as_str());
    assert_eq!(
        kv_connect_rows(&id, &org.token).await,
        newest_rows,
        "newest vs denokv"
    );
    assert_eq!(
        restore_item(&id).await,
        (false, false),
        "secret deleted once active"
    );

    for (db, point, rows) in [
        (&middle_db, &backup.middle.0, &middle_rows),
        (&time_db, &after_middle, &after_middle_rows),
    ] {
        let id = db["id"].as_str().unwrap();
        let restore = wait_active(&org, id, RESTORE_DEADLINE).await;
        assert_eq!(restore["versionstamp"], point.as_str(), "{restore}");
        assert_eq!(
            &kv_connect_rows(id, &org.token).await,
            rows,
            "{point} vs denokv"
        );
    }
}

/// RFC 3339 in UTC with milliseconds.
fn chrono_free_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        ms % 1000
    )
}

#[tokio::test]
async fn restores_that_cannot_succeed_fail_with_a_message_and_bad_requests_are_refused() {
    let org = create_org("restore-faults").await;
    let bucket = fresh_bucket("restore-faults").await;
    let root = format!("kv-backups/{}/", uuid::Uuid::new_v4());
    let backup = deploy_shaped_backup(&root, now_ms() as u64);
    put_objects(&bucket, &backup.objects).await;
    let garbage = format!("garbage/{}/", uuid::Uuid::new_v4());
    put_objects(
        &bucket,
        &[
            subkv_kv::backup_format::Object {
                key: format!("{garbage}differential"),
                body: b"00000000000007d00001".to_vec(),
            },
            subkv_kv::backup_format::Object {
                key: format!("{garbage}logs/notes.txt"),
                body: b"not a backup".to_vec(),
            },
        ],
    )
    .await;
    let upstream = emulator_url().trim_start_matches("http://").to_string();
    let proxy = FaultProxy::start(upstream).await;
    proxy.set("denied-key", Fault::Refuse);
    let emulator = emulator_url();

    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "wrong prefix",
            json!({"s3": s3_source(&emulator, &bucket, "subkv-local", "kv-backups/nothing-here/")}),
            "no backup at",
        ),
        (
            "a versionstamp after the newest point",
            json!({"s3": s3_source(&emulator, &bucket, "subkv-local", &root),
                   "versionstamp": "00000000000027100001"}),
            "is not in this backup",
        ),
        (
            "a time before the first point",
            json!({"s3": s3_source(&emulator, &bucket, "subkv-local", &root),
                   "timestamp": "2001-01-01T00:00:00Z"}),
            "is not in this backup",
        ),
        (
            "garbage objects",
            json!({"s3": s3_source(&emulator, &bucket, "subkv-local", &garbage)}),
            "is not an object of the denokv backup format",
        ),
        (
            "bad credentials",
            json!({"s3": s3_source(&proxy.endpoint(), &bucket, "denied-key", &root)}),
            "InvalidAccessKeyId",
        ),
    ];
    let mut asked = Vec::new();
    for (what, restore_from, needle) in &cases {
        asked.push((
            what,
            create_restored(&org, what, restore_from.clone()).await,
            needle,
        ));
    }
    for (what, db, needle) in asked {
        let id = db["id"].as_str().unwrap();
        let message = wait_failed(&org, id, RESTORE_DEADLINE).await;
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        assert!(
            !message.contains("restore-secret-9f8e"),
            "{what}: {message}"
        );
        // A failed restore stays refused by KV Connect, with the reason.
        connect(id, &org.token, r#"{"supportedVersions":[3]}"#)
            .await
            .assert_plain_error(409, "could not be restored");
        assert_eq!(
            restore_item(id).await,
            (false, false),
            "{what}: secret deleted"
        );
    }

    // Another organization's backup is not found, as an unknown id.
    let other = kv_database("restore-faults-other").await;
    let others = enable_backup(&other, &bucket, "other/").await;
    for id in [others.as_str(), &subkv_e2e::unknown_id()] {
        post(
            &format!("/v1/organizations/{}/databases", org.id),
            &org.token,
            json!({"restoreFrom": {"databaseBackupId": id}}),
        )
        .await
        .assert_error(404, "databaseBackupNotFound");
    }

    // What can be known at once is a 400 with a message, and creates nothing.
    let s3 = s3_source(&emulator, &bucket, "subkv-local", &root);
    let before = get(
        &format!("/v1/organizations/{}/databases", org.id),
        &org.token,
    )
    .await
    .assert_ok()
    .as_array()
    .unwrap()
    .len();
    for (what, restore_from) in [
        ("two sources", json!({"databaseBackupId": others, "s3": s3})),
        ("no source", json!({"versionstamp": backup.newest})),
        (
            "a versionstamp and a time",
            json!({"s3": s3, "versionstamp": backup.newest, "timestamp": "2026-12-01T10:00:00Z"}),
        ),
        (
            "a bad versionstamp",
            json!({"s3": s3, "versionstamp": "12345"}),
        ),
        ("a bad time", json!({"s3": s3, "timestamp": "yesterday"})),
        (
            "instance metadata",
            json!({"s3": s3_source("http://169.254.169.254", &bucket, "k", &root)}),
        ),
        ("an unknown field", json!({"s3": s3, "point": "newest"})),
    ] {
        let reply = post(
            &format!("/v1/organizations/{}/databases", org.id),
            &org.token,
            json!({"restoreFrom": restore_from}),
        )
        .await;
        reply.assert_error(400, "invalidRequestBody");
        let body = reply.text.clone();
        assert!(body.contains("restoreFrom"), "{what}: {body}");
        assert!(!body.contains("restore-secret-9f8e"), "{what}: {body}");
    }
    let after = get(
        &format!("/v1/organizations/{}/databases", org.id),
        &org.token,
    )
    .await
    .assert_ok()
    .as_array()
    .unwrap()
    .len();
    assert_eq!(after, before, "a refused request creates no database");
}
