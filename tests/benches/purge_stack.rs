//! Deleting a large database (issue 15), on a running local stack (`make
//! bench-purge` starts one): for each size in `SUBKV_PURGE_BENCH_KEYS` (default
//! 100,000), a database of that many keys (64-byte values, written straight into
//! the data table by the engine's restore write path, the fastest way in), then
//! `DELETE /v1/databases/{id}` and the time until the scheduled `kv-purge-deleted`
//! has removed every item and taken the database off its list. The emulator
//! bounds it (one Python process serving every call); docs/data-plane.md
//! ("Deleted databases") has the figures and the estimate for DynamoDB.

use std::time::{Duration, Instant};
use subkv_dynamo_kv::RestoreWrite;
use subkv_e2e::backup::{key, kv, kv_database, poll};
use subkv_e2e::kv_wire::data_items;
use subkv_kv::model::Entry;
use uuid::Uuid;

#[tokio::main]
async fn main() {
    let sizes = std::env::var("SUBKV_PURGE_BENCH_KEYS").unwrap_or_else(|_| "100000".into());
    for keys in sizes.split(',').filter(|s| !s.trim().is_empty()) {
        let keys: usize = keys
            .trim()
            .parse()
            .expect("SUBKV_PURGE_BENCH_KEYS: numbers");
        purge(keys).await;
    }
}

async fn purge(keys: usize) {
    eprintln!("purge of {keys} keys");
    let db = kv_database("bench-purge").await;
    let id: Uuid = db.id.parse().expect("uuid");
    let engine = kv().await;
    let started = Instant::now();
    let steps: Vec<Vec<RestoreWrite>> = (0..keys)
        .map(|i| {
            RestoreWrite::Put(Entry {
                key: key(&format!("k{i:07}")),
                value: vec![b'v'; 64],
                encoding: 3,
                version: 1,
                seq: 0,
                expire_at_ms: None,
            })
        })
        .collect::<Vec<_>>()
        .chunks(1000)
        .map(<[RestoreWrite]>::to_vec)
        .collect();
    for step in steps {
        engine
            .restore_writes(id, &step)
            .await
            .expect("keys written");
    }
    engine.raise_head(id, 1).await.expect("head");
    assert_eq!(data_items(id).await, keys);
    eprintln!("{keys} keys written in {:?}", started.elapsed());

    let started = Instant::now();
    subkv_e2e::delete(&format!("/v1/databases/{}", db.id), &db.org.token)
        .await
        .assert_ok();
    let deleted = started.elapsed();
    // Done when the purge took it off its list: every item gone, settled.
    poll(
        "the purge finished",
        Duration::from_secs(4 * 3600),
        Duration::from_secs(2),
        || async {
            match subkv_e2e::kv_wire::control_items(&format!("DB#{}", db.id)).await {
                0 => Ok(()),
                n => Err(format!("{n} control items left")),
            }
        },
    )
    .await;
    let took = started.elapsed();
    assert_eq!(data_items(id).await, 0, "data items left");
    eprintln!(
        "deleted in {deleted:?}; purged {keys} keys in {took:?} ({:.0} keys/s, settling included)",
        keys as f64 / took.as_secs_f64()
    );
}
