//! KV Connect at the wire level against the local stack: the metadata exchange,
//! every way a data-path request can be wrong (each a 4xx with a plain-text body,
//! never a 5xx), and the change log that every commit, and every expiry, writes.

use denokv_proto::datapath as pb;
use prost::Message;
use serde_json::{json, Value};
use subkv_e2e::kv_wire::*;
use subkv_e2e::*;
use uuid::Uuid;

#[tokio::test]
async fn metadata_exchange_negotiates_and_authorizes() {
    let org = create_org("kv-connect").await;
    let other = create_org("kv-connect-other").await;
    let db = create_db(&org, "connect").await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let reply = connect(&db, &org.token, r#"{"supportedVersions":[1,2,3]}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.content_type, "application/json");
    let meta: Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(meta["version"], 3);
    assert_eq!(meta["databaseId"], db.as_str());
    assert_eq!(
        meta["endpoints"],
        json!([{"url": format!("../{db}"), "consistency": "strong"}])
    );
    assert!(meta["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(!meta["token"].as_str().unwrap().contains(&org.token));

    // No body: version 1, with an absolute endpoint.
    let v1: Value = serde_json::from_slice(&connect(&db, &org.token, "").await.body).unwrap();
    assert_eq!(v1["version"], 1);
    assert_eq!(
        v1["endpoints"][0]["url"],
        format!("{}/databases/{db}", api_url())
    );
    let v2: Value = serde_json::from_slice(
        &connect(&db, &org.token, r#"{"supportedVersions":[2]}"#)
            .await
            .body,
    )
    .unwrap();
    assert_eq!(v2["version"], 2);

    connect(&db, &org.token, r#"{"supportedVersions":[7]}"#)
        .await
        .assert_plain_error(400, "no protocol version in common");
    connect(&db, &org.token, r#"{"supportedVersions":"x"}"#)
        .await
        .assert_plain_error(400, "invalid metadata exchange request");
    connect(&db, &org.token, "{")
        .await
        .assert_plain_error(400, "invalid metadata exchange request");
    raw_post(&format!("/databases/{db}/connect"), &[], vec![])
        .await
        .assert_plain_error(401, "access token");
    connect(&db, "skv_not_a_real_token", "")
        .await
        .assert_plain_error(401, "invalid access token");
    // Another organization's token, an unknown id, a malformed id: the same 404.
    connect(&db, &other.token, "")
        .await
        .assert_plain_error(404, "not found");
    connect(&unknown_id(), &org.token, "")
        .await
        .assert_plain_error(404, "not found");
    connect("not-a-uuid", &org.token, "")
        .await
        .assert_plain_error(404, "not found");
    // The admin token owns no database.
    connect(&db, &admin_token(), "")
        .await
        .assert_plain_error(401, "invalid access token");
}

#[tokio::test]
async fn bad_data_path_requests_are_4xx_plain_text() {
    let s = Session::open().await;
    let other = Session::open().await;
    let read = pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key("a"),
            end: key("b"),
            limit: 10,
            reverse: false,
        }],
    }
    .encode_to_vec();

    let ok = s.call("snapshot_read", read.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.content_type, "application/x-protobuf");
    let out = pb::SnapshotReadOutput::decode(ok.body.as_slice()).unwrap();
    assert_eq!(out.status, pb::SnapshotReadStatus::SrSuccess as i32);
    assert!(out.read_is_strongly_consistent);

    for op in ["snapshot_read", "atomic_write", "watch"] {
        s.call_with(op, &s.db, &[("authorization", "")], read.clone())
            .await
            .assert_plain_error(401, "missing bearer token");
        s.call_with(
            op,
            &s.db,
            &[("authorization", "Bearer skvd1.x.1.y")],
            read.clone(),
        )
        .await
        .assert_plain_error(401, "invalid or expired");
        // A valid token of one database on another database's path.
        s.call_with(op, &other.db, &[], read.clone())
            .await
            .assert_plain_error(404, "not found for this token");
        s.call_with(
            op,
            &s.db,
            &[("x-denokv-database-id", &other.db)],
            read.clone(),
        )
        .await
        .assert_plain_error(400, "does not name the database");
        s.call_with(op, &s.db, &[("x-denokv-database-id", "")], read.clone())
            .await
            .assert_plain_error(400, "missing x-denokv-database-id");
        s.call_with(op, &s.db, &[("x-denokv-version", "9")], read.clone())
            .await
            .assert_plain_error(400, "unsupported x-denokv-version");
        s.call_with(
            op,
            &s.db,
            &[("content-type", "application/json")],
            read.clone(),
        )
        .await
        .assert_plain_error(415, "content-type");
        s.call_with(op, &s.db, &[], vec![0xff, 0xff, 0xff])
            .await
            .assert_plain_error(400, "invalid");
    }
    // Version 1 names the database in x-transaction-domain-id.
    let v1 = s
        .call_with(
            "snapshot_read",
            &s.db,
            &[
                ("x-denokv-version", ""),
                ("x-denokv-database-id", ""),
                ("x-transaction-domain-id", &s.db),
            ],
            read.clone(),
        )
        .await;
    assert_eq!(v1.status, 200, "{}", v1.text());
    s.call_with(
        "watch",
        &s.db,
        &[("x-denokv-version", "2")],
        pb::Watch::default().encode_to_vec(),
    )
    .await
    .assert_plain_error(400, "version 3");

    // Deno's limits, named.
    let too_many = pb::SnapshotRead {
        ranges: vec![
            pb::ReadRange {
                start: key("a"),
                end: key("b"),
                limit: 1,
                reverse: false
            };
            11
        ],
    };
    s.call("snapshot_read", too_many.encode_to_vec())
        .await
        .assert_plain_error(400, "the limit is 10");
    let zero = pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: key("a"),
            end: key("b"),
            limit: 0,
            reverse: false,
        }],
    };
    s.call("snapshot_read", zero.encode_to_vec())
        .await
        .assert_plain_error(400, "limit");
    let big_key = pb::AtomicWrite {
        mutations: vec![set(&vec![2u8; 2049], b"x", 0)],
        ..Default::default()
    };
    s.call("atomic_write", big_key.encode_to_vec())
        .await
        .assert_plain_error(400, "key too large");
    let enqueue = pb::AtomicWrite {
        enqueues: vec![pb::Enqueue {
            payload: vec![1],
            deadline_ms: 0,
            ..Default::default()
        }],
        ..Default::default()
    };
    s.call("atomic_write", enqueue.encode_to_vec())
        .await
        .assert_plain_error(400, "enqueue is not supported");
    let no_value = pb::AtomicWrite {
        mutations: vec![pb::Mutation {
            key: key("k"),
            mutation_type: pb::MutationType::MSet as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    s.call("atomic_write", no_value.encode_to_vec())
        .await
        .assert_plain_error(400, "invalid mutation");
    let many: Vec<pb::Mutation> = (0..1001)
        .map(|i| set(&key(&format!("k{i}")), b"x", 0))
        .collect();
    let many = pb::AtomicWrite {
        mutations: many,
        ..Default::default()
    };
    s.call("atomic_write", many.encode_to_vec())
        .await
        .assert_plain_error(400, "the limit is 1000");
    let bad_vs = pb::AtomicWrite {
        checks: vec![pb::Check {
            key: key("k"),
            versionstamp: vec![1, 2, 3],
        }],
        ..Default::default()
    };
    s.call("atomic_write", bad_vs.encode_to_vec())
        .await
        .assert_plain_error(400, "versionstamp");
    // A KvU64 (LE64) value that is not 8 bytes: denokv_proto would panic on it.
    for mutation_type in [pb::MutationType::MSet, pb::MutationType::MSum] {
        let short_u64 = pb::AtomicWrite {
            mutations: vec![pb::Mutation {
                key: key("k"),
                value: Some(pb::KvValue {
                    data: b"a0".to_vec(),
                    encoding: pb::ValueEncoding::VeLe64 as i32,
                }),
                mutation_type: mutation_type as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        s.call("atomic_write", short_u64.encode_to_vec())
            .await
            .assert_plain_error(400, "must be 8 bytes");
    }
}

#[tokio::test]
async fn failed_checks_are_reported_by_index() {
    let s = Session::open().await;
    let first = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("c"), b"1", 0)],
            ..Default::default()
        })
        .await;
    assert_eq!(first.status, pb::AtomicWriteStatus::AwSuccess as i32);
    let write = pb::AtomicWrite {
        checks: vec![
            pb::Check {
                key: key("c"),
                versionstamp: first.versionstamp.clone(),
            },
            pb::Check {
                key: key("c2"),
                versionstamp: vec![],
            },
            pb::Check {
                key: key("c"),
                versionstamp: vec![],
            },
        ],
        mutations: vec![set(&key("c"), b"2", 0)],
        ..Default::default()
    };
    let out = s.write(write).await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwCheckFailure as i32);
    // Only the check that fails, as denokv answers: check 0, on the same key,
    // holds (issue 12, item 9).
    assert_eq!(out.failed_checks, vec![2]);
    let ok = pb::AtomicWrite {
        checks: vec![
            pb::Check {
                key: key("c"),
                versionstamp: first.versionstamp.clone(),
            },
            pb::Check {
                key: key("c2"),
                versionstamp: vec![],
            },
        ],
        mutations: vec![set(&key("c"), b"2", 0)],
        ..Default::default()
    };
    let out = s.write(ok).await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    assert!(out.versionstamp > first.versionstamp);
}

#[tokio::test]
async fn every_commit_and_every_expiry_reaches_the_change_log() {
    let s = Session::open().await;
    let db = Uuid::parse_str(&s.db).unwrap();
    let sum = pb::Mutation {
        key: key("n"),
        value: Some(pb::KvValue {
            data: 7u64.to_le_bytes().to_vec(),
            encoding: pb::ValueEncoding::VeLe64 as i32,
        }),
        mutation_type: pb::MutationType::MSum as i32,
        ..Default::default()
    };
    // The sums first, then the commit with a key about to expire: the sweeper's
    // deletion of it can only come after both, however slow the machine.
    let b = s
        .write(pb::AtomicWrite {
            mutations: vec![sum.clone(), sum],
            ..Default::default()
        })
        .await;
    let soon = now_ms() + 1500;
    let a = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("a"), b"A", 0), set(&key("gone"), b"G", soon)],
            ..Default::default()
        })
        .await;
    let log = store().await;
    // The first two records (the sweeper may already have written a third).
    let records = log.change_records(db, 0, 2).await.unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(
        &records[1].1.entries[0].versionstamp[..10],
        a.versionstamp.as_slice()
    );
    assert_eq!(&records[1].1.entries[0].versionstamp[10..], &[0, 0]);
    assert_eq!(&records[1].1.entries[1].versionstamp[10..], &[0xff, 0xff]);
    assert_eq!(records[1].1.entries[1].expire_at_ms as i64, soon);
    // sum is recorded as a set of the resulting value.
    let sums = &records[0].1.entries;
    assert_eq!(&sums[1].versionstamp[..10], b.versionstamp.as_slice());
    assert_eq!(sums[0].value, 7u64.to_le_bytes().to_vec());
    assert_eq!(sums[1].value, 14u64.to_le_bytes().to_vec());
    assert!(sums
        .iter()
        .all(|e| e.kind == denokv_proto::backup::BackupKvMutationKind::MkSet as i32));

    // The sweeper (every 2 s in the local stack) deletes the expired key through a
    // commit of its own: wait for that record, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let clear = loop {
        let records = log.change_records(db, records[1].0, 10).await.unwrap();
        if let Some((_, range)) = records.first() {
            break range.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no deletion of the expired key reached the change log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(clear.entries.len(), 1);
    assert_eq!(
        clear.entries[0].kind,
        denokv_proto::backup::BackupKvMutationKind::MkClear as i32
    );
    assert_eq!(clear.entries[0].key, key("gone"));
    assert!(clear.timestamp_ms as i64 >= soon);
}

#[tokio::test]
async fn a_thousand_mutations_commit_atomically() {
    let s = Session::open().await;
    // Deno's limit: 1000 mutations, here on 1000 distinct keys, with a check.
    let mutations: Vec<pb::Mutation> = (0..1000)
        .map(|i| set(&key(&format!("k{i:04}")), b"x", 0))
        .collect();
    let write = pb::AtomicWrite {
        checks: vec![pb::Check {
            key: key("k0000"),
            versionstamp: vec![],
        }],
        mutations,
        ..Default::default()
    };
    let out = s.write(write.clone()).await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    let entries = s.list(key("k"), key("l")).await;
    assert_eq!(entries.len(), 1000);
    assert!(entries.iter().all(|e| e.versionstamp == out.versionstamp));
    // The same commit again fails its check and changes nothing.
    let again = s.write(write).await;
    assert_eq!(again.status, pb::AtomicWriteStatus::AwCheckFailure as i32);
    assert_eq!(again.failed_checks, vec![0]);
    // A later small commit gets a higher versionstamp.
    let next = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("k0001"), b"y", 0)],
            ..Default::default()
        })
        .await;
    assert!(next.versionstamp > out.versionstamp);
}

#[tokio::test]
async fn a_large_commit_interrupted_after_its_intent_is_finished_by_the_next_reader() {
    let s = Session::open().await;
    let db = Uuid::parse_str(&s.db).unwrap();
    let crashing = store().await.crash_after_intent();
    let mutations = (0..250)
        .map(|i| denokv_proto::Mutation {
            key: key(&format!("k{i:04}")),
            kind: denokv_proto::MutationKind::Set(denokv_proto::KvValue::Bytes(vec![1])),
            expire_at: None,
        })
        .collect();
    let write = denokv_proto::AtomicWrite {
        checks: vec![],
        mutations,
        enqueues: vec![],
    };
    let err = crashing.atomic_write(db, &write).await.unwrap_err();
    assert!(err.detail().contains("simulated crash"), "{}", err.detail());
    // Nothing applied yet, but the commit is decided: the next read finishes it
    // and sees all of it, never a part.
    let entries = s.list(key("k"), key("l")).await;
    assert_eq!(entries.len(), 250);
    let vs = &entries[0].versionstamp;
    assert!(entries.iter().all(|e| &e.versionstamp == vs));
    // And the next write comes after it.
    let next = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("z"), b"1", 0)],
            ..Default::default()
        })
        .await;
    assert!(&next.versionstamp > vs);
}
