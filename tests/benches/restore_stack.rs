//! Large restores (issue 14), on a running local stack (`make bench-restore`
//! starts one). Two parts:
//!
//! - **Through the API**, for each size in `SUBKV_RESTORE_BENCH_KEYS` (default
//!   100,000 and 1,000,000): a subkv backup of that many keys of 64-byte values written to the
//!   emulator's S3, restored by the scheduled `restore-database` function in steps
//!   of `SUBKV_RESTORE_STEP_WRITES` and invocations of
//!   `SUBKV_RESTORE_BUDGET_SECONDS`, progress seen while pending, then every key
//!   counted in the table and read back through KV Connect (key, value,
//!   versionstamp). The emulator bounds it: one Python process serving every call.
//! - **The restore side alone**, for each size in `SUBKV_RESTORE_BENCH_CORE_KEYS`
//!   (default 1,000,000): the same kind of backup, planned and stepped by the
//!   restore core through the engine's own S3 client, writes counted and dropped
//!   instead of sent to DynamoDB: the function's own time and memory, to which
//!   DynamoDB's write time is added on paper (docs/restore.md).

use std::time::{Duration, Instant};
use subkv_e2e::backup::*;
use subkv_e2e::create_org;
use subkv_e2e::kv_wire::data_items;
use subkv_e2e::restore::*;

fn sizes(var: &str, default: &str) -> Vec<usize> {
    std::env::var(var)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{var}: numbers"))
        })
        .collect()
}

#[tokio::main]
async fn main() {
    for keys in sizes("SUBKV_RESTORE_BENCH_KEYS", "100000,1000000") {
        restore(keys).await;
    }
    for keys in sizes("SUBKV_RESTORE_BENCH_CORE_KEYS", "1000000") {
        core(keys).await;
    }
}

/// Peak resident memory of this process so far, in MiB (`VmHWM`).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The restore core on a backup of `keys` keys in the emulator's S3, writes dropped.
async fn core(keys: usize) {
    use subkv_backup::bucket::{Bucket, Connector, Target as BucketTarget};
    use subkv_backup::restore::{self, StepLimits, Target};
    eprintln!("restore core on {keys} keys (writes counted, not sent)");
    let bucket_name = fresh_bucket("restore-core-bench").await;
    let source = uuid::Uuid::new_v4();
    let (objects, rows) = subkv_format_backup("large/", source, keys, 64);
    drop(rows);
    put_objects(&bucket_name, &objects).await;
    let objects = objects.len();
    let bucket = Bucket::new(
        &Connector::new(true),
        &BucketTarget {
            endpoint: emulator_url(),
            bucket: bucket_name,
            region: "us-east-1".into(),
            access_key_id: "subkv-local".into(),
            secret_access_key: subkv_core::secrets::SecretString::new("subkv-local"),
        },
    )
    .expect("a client for the emulator");
    // The backup built above is gone; start the peak from here (Linux: writing 5 to
    // clear_refs resets VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss_mib();
    let started = Instant::now();
    let root = format!("large/{source}/");
    let plan = restore::plan(&bucket, &root, Target::Latest, 0)
        .await
        .expect("plan");
    let planned = started.elapsed();
    let (mut cursor, mut steps, mut writes) = (restore::Cursor::start(), 0usize, 0usize);
    while !cursor.is_done() {
        let step = restore::step(&bucket, &plan, &cursor, StepLimits::default())
            .await
            .expect("step");
        writes += step.writes.len();
        cursor = step.next;
        steps += 1;
    }
    let took = started.elapsed();
    assert!(writes >= keys, "every key: {writes} writes for {keys} keys");
    eprintln!(
        "restore core: {keys} keys from {objects} objects: plan {planned:?}, all {took:?} \
         ({:.0} keys/s), {steps} steps; peak RSS {:.0} MiB (before: {before:.0} MiB)",
        keys as f64 / took.as_secs_f64(),
        peak_rss_mib()
    );
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
    // The emulator's Query sorts the whole partition on every page, so past
    // 100,000 keys only pages spread over the key space are read back (and the
    // items are not counted: `keysRestored` says how many were written).
    let started = Instant::now();
    if keys <= 100_000 {
        assert_eq!(data_items(id.parse().unwrap()).await, keys);
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
