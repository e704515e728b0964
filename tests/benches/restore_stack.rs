//! Large restores through the API (issue 14), on a running local stack
//! (`make bench-restore` starts one): for each size given (default 100,000 and
//! 1,000,000 keys; `SUBKV_RESTORE_BENCH_KEYS=100000,1000000`), a subkv backup of
//! that many keys of 64-byte values written to the emulator's S3, restored by the
//! scheduled `restore-database` function in steps of `SUBKV_RESTORE_STEP_WRITES`
//! and invocations of `SUBKV_RESTORE_BUDGET_SECONDS`, progress seen while pending,
//! then every key counted in the table and every key, value and versionstamp read
//! back through KV Connect. docs/restore.md has the figures.

use std::time::{Duration, Instant};
use subkv_e2e::backup::*;
use subkv_e2e::create_org;
use subkv_e2e::kv_wire::data_items;
use subkv_e2e::restore::*;

#[tokio::main]
async fn main() {
    let sizes = std::env::var("SUBKV_RESTORE_BENCH_KEYS").unwrap_or("100000,1000000".into());
    for keys in sizes.split(',') {
        restore(
            keys.trim()
                .parse()
                .expect("SUBKV_RESTORE_BENCH_KEYS: numbers"),
        )
        .await;
    }
}

async fn restore(keys: usize) {
    eprintln!("restore of {keys} keys");
    let org = create_org("restore-large").await;
    let bucket = fresh_bucket("restore-large").await;
    let source = uuid::Uuid::new_v4();
    let (objects, rows) = subkv_format_backup("large/", source, keys, 64);
    let started = Instant::now();
    put_objects(&bucket, &objects).await;
    eprintln!(
        "{keys} keys in {} objects written in {:?}",
        objects.len(),
        started.elapsed()
    );

    let s3 = serde_json::json!({
        "endpoint": emulator_url(), "bucketName": bucket, "bucketRegion": "us-east-1",
        "accessKeyId": "subkv-local", "secretAccessKey": "subkv-local",
        "prefix": format!("large/{source}/"),
    });
    let started = Instant::now();
    let db = create_restored(&org, "large", serde_json::json!({ "s3": s3 })).await;
    let id = db["id"].as_str().unwrap().to_string();
    // Progress is visible while pending, and grows.
    let seen = wait_restore(&org, &id, Duration::from_secs(3600), |r| {
        let so_far = r["status"]["keysRestored"].as_u64().unwrap_or(0);
        if r["status"]["code"] == "pending" && so_far > 0 && so_far < keys as u64 {
            Ok(())
        } else if r["status"]["code"] == "pending" {
            Err("no progress shown yet".into())
        } else {
            panic!("the restore ended before its progress was seen: {r}")
        }
    })
    .await;
    let restore = wait_active(&org, &id, Duration::from_secs(4 * 3600)).await;
    let took = started.elapsed();
    assert_eq!(restore["status"]["keysRestored"], keys as u64, "{restore}");
    eprintln!(
        "restored {keys} keys in {took:?} ({:.0} keys/s); progress seen at {}",
        keys as f64 / took.as_secs_f64(),
        seen["status"]["keysRestored"]
    );
    assert_eq!(data_items(id.parse().unwrap()).await, keys);
    // The emulator's Query sorts the whole partition on every page, so past
    // 100,000 keys only pages spread over the key space are read back.
    let started = Instant::now();
    if keys <= 100_000 {
        let read = kv_connect_rows(&id, &org.token).await;
        assert!(
            read == rows,
            "{} rows read, {} expected",
            read.len(),
            rows.len()
        );
    } else {
        let session = kv_connect_session(&id, &org.token).await;
        for at in [0, keys / 3, keys * 2 / 3, keys - 1000] {
            let from = hex::encode(subkv_e2e::backup::key(&format!("k{at:07}")));
            let read = kv_connect_page(&session, hex::decode(&from).unwrap()).await;
            let expected: Rows = rows
                .range(from..)
                .take(1000)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert!(read == expected, "page at {at}: {} rows read", read.len());
        }
    }
    eprintln!("read back through KV Connect in {:?}", started.elapsed());
}
