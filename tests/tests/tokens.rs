//! Limited and expiring organization tokens, and revocation (issue 15 §2), end to
//! end: what Deno can do with a read-only token limited to one database, an
//! expired token refused by the API and KV Connect, and a revoked token's open
//! data-path session ended within a minute.

use denokv_proto::datapath as pb;
use prost::Message;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use subkv_e2e::backup::{kv_database, poll, try_ops};
use subkv_e2e::kv_wire::{connect, key, set, Raw, Session};
use subkv_e2e::{create_db, delete, get, post};

/// A token of `org` made with `body`: (its id, the token).
async fn token(org: &subkv_e2e::Org, body: Value) -> (String, String) {
    let created = post(
        &format!("/v1/organizations/{}/tokens", org.id),
        &org.token,
        body,
    )
    .await;
    let created = created.assert_ok();
    (
        created["id"].as_str().unwrap().to_string(),
        created["token"].as_str().unwrap().to_string(),
    )
}

fn read_all() -> Vec<u8> {
    pb::SnapshotRead {
        ranges: vec![pb::ReadRange {
            start: vec![],
            end: vec![0xff],
            limit: 10,
            reverse: false,
        }],
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_read_only_token_for_one_database_reads_it_and_nothing_more_in_deno() {
    let db = kv_database("tokens-read").await;
    let other = create_db(&db.org, "another").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let writer = Session::of(&db.id, &db.org.token).await;
    writer
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("seen"), b"yes", 0)],
            ..Default::default()
        })
        .await;
    let (_, reader) = token(&db.org, json!({"databases": [db.id], "access": "read"})).await;

    // Its database: the read works, the write is refused with a 4xx Deno raises.
    let seen = try_ops(&db.url, &reader);
    // The bytes "yes" (a Uint8Array, as JSON.stringify writes one).
    assert_eq!(
        seen["get"]["ok"],
        json!({"0": 121, "1": 101, "2": 115}),
        "{seen}"
    );
    let error = seen["set"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("403") && error.contains("may only read"),
        "{seen}"
    );
    // Another database of the organization: not found, for reads and writes.
    let other_url = db.url.replace(&db.id, &other);
    let seen = try_ops(&other_url, &reader);
    let error = seen["open"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("404") && error.contains("not found"),
        "{seen}"
    );
    // The management API: its database only, read only.
    get(&format!("/v1/databases/{}", db.id), &reader)
        .await
        .assert_ok();
    get(&format!("/v1/databases/{other}"), &reader)
        .await
        .assert_error(404, "databaseNotFound");
    delete(&format!("/v1/databases/{}", db.id), &reader)
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn an_expired_token_is_refused_by_the_api_and_kv_connect() {
    let db = kv_database("tokens-expiry").await;
    // Long enough for a cold start of the metadata exchange on a loaded machine.
    let at = std::time::SystemTime::now() + Duration::from_secs(20);
    let at = humantime::format_rfc3339_millis(at).to_string();
    let (_, short) = token(&db.org, json!({"expiresAt": at})).await;
    // Before: it works, and the data-path token it gets lives no longer than it.
    let session = Session::of(&db.id, &short).await;
    assert_eq!(
        session
            .call("snapshot_read", read_all())
            .await
            .status
            .as_u16(),
        200
    );
    poll(
        "the token expired",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            match get(&format!("/v1/databases/{}", db.id), &short)
                .await
                .status
                .as_u16()
            {
                401 => Ok(()),
                status => Err(format!("{status}")),
            }
        },
    )
    .await;
    get(&format!("/v1/databases/{}", db.id), &short)
        .await
        .assert_error(401, "unauthorized");
    connect(&db.id, &short, r#"{"supportedVersions":[3]}"#)
        .await
        .assert_plain_error(401, "expired");
    session
        .call("snapshot_read", read_all())
        .await
        .assert_plain_error(401, "data-path token");
}

#[tokio::test]
async fn revoking_a_token_ends_its_open_sessions_within_a_minute() {
    let db = kv_database("tokens-revoke").await;
    let (id, revoked) = token(&db.org, json!({"description": "to revoke"})).await;
    let session = Session::of(&db.id, &revoked).await;
    assert_eq!(
        session
            .call("snapshot_read", read_all())
            .await
            .status
            .as_u16(),
        200
    );
    let write = pb::AtomicWrite {
        mutations: vec![set(&key("k"), b"v", 0)],
        ..Default::default()
    };
    assert_eq!(
        session
            .call("atomic_write", write.encode_to_vec())
            .await
            .status
            .as_u16(),
        200
    );

    delete(
        &format!("/v1/organizations/{}/tokens/{id}", db.org.id),
        &db.org.token,
    )
    .await
    .assert_ok();
    let revoked_at = Instant::now();
    // A new session: refused at once.
    connect(&db.id, &revoked, r#"{"supportedVersions":[3]}"#)
        .await
        .assert_plain_error(401, "invalid access token");
    // The open one: within a minute, its reads and its writes (each function's
    // instances recheck on their own).
    let mut took = Vec::new();
    for (op, body) in [
        ("snapshot_read", read_all()),
        ("atomic_write", write.encode_to_vec()),
    ] {
        let refused: Raw = poll(
            &format!("the revoked token's {op} refused"),
            Duration::from_secs(75),
            Duration::from_millis(500),
            || async {
                let reply = session.call(op, body.clone()).await;
                match reply.status.as_u16() {
                    401 => Ok(reply),
                    status => Err(format!("{status}")),
                }
            },
        )
        .await;
        refused.assert_plain_error(401, "revoked");
        took.push((op, revoked_at.elapsed()));
    }
    eprintln!("revocation reached the open session's reads and writes after {took:?}");
    for (op, after) in took {
        assert!(after <= Duration::from_secs(60), "{op}: {after:?}");
    }
}
