//! Usage for billing (issue 15 §3, docs/usage.md), end to end: a scripted KV
//! Connect workload is counted in the database's and the organization's usage,
//! requests exactly and capacity units as DynamoDB's documented rounding makes
//! them (the emulator reports them so: infra/local/capacity.py).

use denokv_proto::datapath as pb;
use prost::Message;
use serde_json::Value;
use std::time::Duration;
use subkv_e2e::backup::poll;
use subkv_e2e::kv_wire::{key, set, Session};
use subkv_e2e::{admin_token, create_db, create_org, get};

/// Keys written, each in its own commit, and the size of each value.
const WRITES: usize = 10;
const VALUE_BYTES: usize = 3000;
/// Reads of every key.
const READS: usize = 5;

fn read_all() -> Vec<u8> {
    pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key(""),
            end: vec![0xff],
            limit: 100,
            reverse: false,
        }],
    }
    .encode_to_vec()
}

fn id(value: &Value) -> String {
    value["id"].as_str().expect("id").to_string()
}

fn units(counts: &Value, name: &str) -> f64 {
    counts[name]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} in {counts}"))
}

#[tokio::test]
async fn a_scripted_workload_is_counted_for_its_database_and_organization() {
    let org = create_org("usage").await;
    let db = id(&create_db(&org, "metered").await);
    let probe = id(&create_db(&org, "probe").await);

    // The workload: a metadata exchange, WRITES commits of one VALUE_BYTES value
    // each, READS reads of every key. 1 + WRITES + READS requests.
    let session = Session::of(&db, &org.token).await;
    for i in 0..WRITES {
        session
            .write(pb::AtomicWrite {
                mutations: vec![set(&key(&format!("k{i:02}")), &[b'v'; VALUE_BYTES], 0)],
                ..Default::default()
            })
            .await;
    }
    for _ in 0..READS {
        let read = session.call("snapshot_read", read_all()).await;
        assert_eq!(read.status, 200);
        let out = pb::SnapshotReadOutput::decode(read.body.as_slice()).expect("read");
        assert_eq!(out.ranges[0].values.len(), WRITES);
    }
    let requests = (1 + WRITES + READS) as u64;

    // Each instance flushes its tally on the first request a flush period (1 s
    // on the local stack) after its last: requests to another database of the
    // organization (a metadata exchange, a read, a write) flush the workload's.
    let path = format!("/v1/databases/{db}/usage");
    let probe_session = Session::of(&probe, &org.token).await;
    let usage = poll(
        "the workload's requests counted",
        Duration::from_secs(60),
        Duration::from_millis(1100),
        || async {
            let _ = Session::of(&probe, &org.token).await;
            let _ = probe_session.call("snapshot_read", read_all()).await;
            probe_session
                .write(pb::AtomicWrite {
                    mutations: vec![set(&key("probe"), b"p", 0)],
                    ..Default::default()
                })
                .await;
            let reply = get(&path, &org.token).await;
            let usage = reply.assert_ok().clone();
            match usage["total"]["requests"].as_u64() {
                Some(n) if n >= requests => Ok(usage),
                _ => Err(usage.to_string()),
            }
        },
    )
    .await;
    let total = &usage["total"];
    eprintln!("usage of the workload: {total}");
    // Requests: exactly the workload's.
    assert_eq!(total["requests"], requests, "{usage}");
    // Writes: every commit puts its entry (3,000 bytes of value, its key and
    // attributes: 3 KB) and its change record (the same value, with the key, the
    // mutation's encoding and the versionstamp: past 3 KB, so 4 KB), and updates
    // its head (1 KB), each twice (a transaction): 6 + 8 + 2 = 16 units.
    let writes = units(total, "writeUnits");
    assert_eq!(writes, (WRITES * 16) as f64, "{usage}");
    // Reads: every read a strongly consistent Query of the 10 entries (30 KB:
    // 8 units) and the head's read, if not trusted from the last 250 ms.
    let reads = units(total, "readUnits");
    assert!(
        reads >= (READS * 8) as f64 && reads <= (READS * 8 + (READS + WRITES) * 2) as f64,
        "{usage}"
    );
    // One period (the hour, unless the workload straddled two) holds it all.
    let periods = usage["periods"].as_array().expect("periods");
    let sum: u64 = periods
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, requests);

    // The organization's usage: the database's line equals its own usage, the
    // probe database has its line, and the total adds both. The admin may read it.
    let org_usage = get(
        &format!("/v1/organizations/{}/usage", org.id),
        &admin_token(),
    )
    .await;
    let org_usage = org_usage.assert_ok();
    let databases = org_usage["databases"].as_array().expect("databases");
    let line = |id: &str| {
        databases
            .iter()
            .find(|d| d["databaseId"] == id)
            .unwrap_or_else(|| panic!("{id} in {org_usage}"))
            .clone()
    };
    let of_db = line(&db);
    assert_eq!(of_db["requests"], total["requests"]);
    assert_eq!(of_db["writeUnits"], total["writeUnits"]);
    let of_probe = line(&probe);
    assert!(of_probe["requests"].as_u64().unwrap() >= 3, "{of_probe}");
    assert!(
        org_usage["total"]["requests"].as_u64().unwrap()
            >= requests + of_probe["requests"].as_u64().unwrap()
    );

    // Days: the same total.
    let daily = get(&format!("{path}?granularity=day"), &org.token).await;
    assert_eq!(daily.assert_ok()["total"]["requests"], requests);

    // Stored bytes and keys, from the data table's stream (kv-storage-usage):
    // WRITES keys, each item its VALUE_BYTES value, its key and attributes
    // (~70 bytes) and DynamoDB's 100 bytes of overhead.
    let stored = |keys: i64| {
        let path = path.clone();
        let token = org.token.clone();
        async move {
            poll(
                "the stored keys counted",
                Duration::from_secs(240),
                Duration::from_millis(250),
                || async {
                    let usage = get(&path, &token).await.assert_ok().clone();
                    match usage["total"]["keys"].as_i64() {
                        Some(n) if n == keys => Ok(usage),
                        _ => Err(usage.to_string()),
                    }
                },
            )
            .await
        }
    };
    let full = stored(WRITES as i64).await;
    let full_bytes = full["total"]["storedBytes"].as_i64().expect("storedBytes");
    let per_key = (VALUE_BYTES + 100) as i64;
    assert!(
        full_bytes >= WRITES as i64 * (per_key + 40)
            && full_bytes <= WRITES as i64 * (per_key + 150),
        "{full}"
    );
    // The hour's period ends with the same value as the window.
    let last = full["periods"].as_array().and_then(|p| p.last()).cloned();
    assert_eq!(
        last.map(|p| p["storedBytes"].clone()),
        Some(full["total"]["storedBytes"].clone())
    );
    // Half the keys deleted: half the bytes (the items differ by a digit at most).
    session
        .write(pb::AtomicWrite {
            mutations: (0..WRITES / 2)
                .map(|i| pb::Mutation {
                    key: key(&format!("k{i:02}")),
                    mutation_type: pb::MutationType::MDelete as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await;
    let half = stored((WRITES / 2) as i64).await;
    let half_bytes = half["total"]["storedBytes"].as_i64().expect("storedBytes");
    assert!(
        (half_bytes * 2 - full_bytes).abs() <= WRITES as i64,
        "{full_bytes} then {half}"
    );
    // The organization's line for the database says the same.
    let org_usage = get(&format!("/v1/organizations/{}/usage", org.id), &org.token).await;
    let org_usage = org_usage.assert_ok();
    let line = org_usage["databases"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["databaseId"] == db.as_str()))
        .cloned()
        .unwrap_or_default();
    assert_eq!(line["storedBytes"], half_bytes, "{org_usage}");
    assert_eq!(line["keys"], (WRITES / 2) as i64, "{org_usage}");
    eprintln!("stored: {full_bytes} bytes for {WRITES} keys, {half_bytes} for half");
}

#[tokio::test]
async fn usage_is_refused_to_other_organizations_and_bad_windows() {
    let org = create_org("usage-owner").await;
    let db = id(&create_db(&org, "private").await);
    let stranger = create_org("usage-stranger").await;
    get(&format!("/v1/databases/{db}/usage"), &stranger.token)
        .await
        .assert_error(404, "databaseNotFound");
    get(
        &format!("/v1/organizations/{}/usage", org.id),
        &stranger.token,
    )
    .await
    .assert_error(404, "organizationNotFound");
    get(
        &format!("/v1/databases/{db}/usage?granularity=week"),
        &org.token,
    )
    .await
    .assert_error(400, "invalidQueryParameter");
    get(
        &format!("/v1/databases/{db}/usage?from=2026-01-01T00:00:00Z&to=2026-12-01T00:00:00Z"),
        &org.token,
    )
    .await
    .assert_error(400, "invalidQueryParameter");
    // A database nobody used: every hour of today so far, all zero.
    let quiet = get(&format!("/v1/databases/{db}/usage"), &org.token).await;
    let quiet = quiet.assert_ok();
    assert_eq!(quiet["total"]["requests"], 0);
    assert!(!quiet["periods"].as_array().unwrap().is_empty());
}
