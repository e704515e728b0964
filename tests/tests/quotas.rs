//! An organization's limits (issue 15 §4, docs/quotas.md), end to end: the
//! admin sets them with `PATCH /v1/organizations/{id}`; a database past
//! `limits.databases` is refused; KV writes past `limits.writeUnitsPerMonth` are
//! refused with a 4xx Deno shows as an error, reads go on, and writes come back
//! once the limit is raised.

use denokv_proto::datapath as pb;
use serde_json::{json, Value};
use std::time::Duration;
use subkv_e2e::backup::{
    deno_script, describe, kv_database, output_within, poll, try_ops, KvDatabase,
};
use subkv_e2e::kv_wire::{key, set, Session};
use subkv_e2e::{admin_token, create_org, get, patch, post};

/// How often a watch without news sends a keep-alive (`ConnectState::watch`).
const KEEPALIVE_SECONDS: f64 = 5.0;

fn limits_path(org: &str) -> String {
    format!("/v1/organizations/{org}")
}

#[tokio::test]
async fn the_admin_limits_the_databases_an_organization_may_have() {
    let org = create_org("quota-databases").await;
    let path = limits_path(&org.id);
    // Only the admin sets limits; only limits subkv knows are accepted.
    patch(&path, &org.token, json!({"limits": {"databases": 1}}))
        .await
        .assert_error(403, "forbidden");
    patch(&path, &admin_token(), json!({"limits": {"keys": 1}}))
        .await
        .assert_error(400, "invalidRequestBody");
    let set = patch(&path, &admin_token(), json!({"limits": {"databases": 1}})).await;
    assert_eq!(set.assert_ok()["limits"], json!({"databases": 1}));
    assert_eq!(
        get(&path, &admin_token()).await.assert_ok()["limits"],
        json!({"databases": 1})
    );

    let databases = format!("/v1/organizations/{}/databases", org.id);
    post(&databases, &org.token, json!({"description": "first"}))
        .await
        .assert_ok();
    let refused = post(&databases, &org.token, json!({"description": "second"})).await;
    refused.assert_error(403, "limitExceeded");
    let message = refused.json["message"].as_str().unwrap_or_default();
    assert!(message.contains("limits.databases"), "{message}");
    let listed = get(&databases, &org.token).await;
    assert_eq!(listed.assert_ok().as_array().unwrap().len(), 1);

    // No limit again: the second database is made.
    let cleared = patch(
        &path,
        &admin_token(),
        json!({"limits": {"databases": null}}),
    )
    .await;
    assert_eq!(cleared.assert_ok().get("limits"), None);
    post(&databases, &org.token, json!({"description": "second"}))
        .await
        .assert_ok();
}

/// A commit of one key with a 3,000-byte value: 16 write units (docs/usage.md).
fn write_of(name: &str) -> pb::AtomicWrite {
    pb::AtomicWrite {
        mutations: vec![set(&key(name), &[b'v'; 3000], 0)],
        ..Default::default()
    }
}

/// Commits of [`write_of`] (keys `<prefix><n>`) until one is refused, at most
/// `most`, awaiting `after(n)` once `n` have passed; how many passed. The
/// refusal must be a 403 naming `limit`.
async fn commits_until_refused<F, Fut>(
    session: &Session,
    prefix: &str,
    most: usize,
    limit: &str,
    after: F,
) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut accepted = 0;
    let refusal = loop {
        let reply = session
            .call(
                "atomic_write",
                prost::Message::encode_to_vec(&write_of(&format!("{prefix}{accepted}"))),
            )
            .await;
        if reply.status != 200 {
            break reply;
        }
        accepted += 1;
        assert!(accepted <= most, "{accepted} commits passed {limit}");
        after(accepted).await;
    };
    assert_eq!(refusal.status, 403, "{}", refusal.text());
    assert!(refusal.text().contains(limit), "{}", refusal.text());
    accepted
}

/// Commits until one goes through (after a limit was raised, or room made:
/// within the instances' cache of a second).
async fn a_commit_passes_again(session: &Session, what: &str) {
    poll(
        what,
        Duration::from_secs(240),
        Duration::from_millis(500),
        || async {
            let reply = session
                .call(
                    "atomic_write",
                    prost::Message::encode_to_vec(&write_of("after")),
                )
                .await;
            match reply.status.as_u16() {
                200 => Ok(()),
                _ => Err(reply.text()),
            }
        },
    )
    .await;
}

/// Deno's `set` refused with an error naming `limit` while its `get` works,
/// tried until the instance it reaches knows the limit is reached.
async fn deno_write_refused(db: &KvDatabase, limit: &str) {
    let seen = poll(
        &format!("Deno's write refused by {limit}"),
        Duration::from_secs(60),
        Duration::from_millis(100),
        || async {
            let seen: Value = try_ops(&db.url, &db.org.token);
            match seen["set"]["error"].as_str() {
                Some(error) if error.contains(limit) => Ok(seen),
                _ => Err(seen.to_string()),
            }
        },
    )
    .await;
    assert_eq!(seen["get"]["ok"], Value::Null, "{seen}");
}

#[tokio::test]
async fn writes_stop_at_the_monthly_write_units_and_reads_go_on() {
    let db = kv_database("quota-writes").await;
    let path = limits_path(&db.org.id);
    patch(
        &path,
        &admin_token(),
        json!({"limits": {"writeUnitsPerMonth": 100}}),
    )
    .await
    .assert_ok();

    // Commits of 16 units until one is refused: through one instance the
    // seventh (96 used) goes through and the eighth is refused. Up to four
    // instances of kv-atomic-write serve them on the local stack, each seeing
    // the others' writes only once flushed (every second) and read (every
    // second): a few more may pass, the overshoot docs/quotas.md bounds.
    let session = Session::of(&db.id, &db.org.token).await;
    let accepted =
        commits_until_refused(&session, "k", 30, "limits.writeUnitsPerMonth", |_| async {}).await;
    assert!(accepted >= 7, "refused after {accepted} commits");
    eprintln!("{accepted} commits of 16 write units passed a limit of 100");

    // Deno: the read works, the write is an error (a 4xx: not retried), once
    // the instance it reaches has seen the others' units (flushed on their next
    // request, read within a second).
    deno_write_refused(&db, "writeUnitsPerMonth").await;

    // Raised: writes go through again (within the instances' cache of a second).
    patch(
        &path,
        &admin_token(),
        json!({"limits": {"writeUnitsPerMonth": 1000000}}),
    )
    .await
    .assert_ok();
    a_commit_passes_again(&session, "a write after the limit was raised").await;
}

#[tokio::test]
async fn a_storage_limit_refuses_the_write_that_would_cross_it_until_deletes_make_room() {
    let db = kv_database("quota-storage").await;
    let path = limits_path(&db.org.id);
    patch(
        &path,
        &admin_token(),
        json!({"limits": {"storageBytes": 20000}}),
    )
    .await
    .assert_ok();

    // Commits of one 3,000-byte value (~3,170 stored bytes, counted ~3,165 by
    // the check) until one is refused: the sixth (about 19,000 bytes) goes
    // through and the seventh would cross 20,000. Each commit waits until the
    // stream has counted it (kv-storage-usage): an instance sees the others'
    // bytes only once counted and read again (its cache: a second), so without
    // the wait the overshoot grows with the stream's delay, which a loaded
    // machine stretches to seconds (docs/quotas.md). With it, an instance whose
    // cache predates the last count may pass one more.
    let session = Session::of(&db.id, &db.org.token).await;
    let usage_path = format!("/v1/databases/{}/usage", db.id);
    let counted = |keys: usize| {
        let (path, token) = (usage_path.clone(), db.org.token.clone());
        async move {
            poll(
                "the commit's bytes counted",
                Duration::from_secs(240),
                Duration::from_millis(100),
                || async {
                    let usage = get(&path, &token).await.assert_ok().clone();
                    match usage["total"]["keys"].as_u64() {
                        Some(n) if n as usize >= keys => Ok(()),
                        _ => Err(usage.to_string()),
                    }
                },
            )
            .await
        }
    };
    let accepted = commits_until_refused(&session, "s", 8, "limits.storageBytes", counted).await;
    assert!(accepted >= 6, "refused after {accepted} commits");
    eprintln!("{accepted} commits of 3,000 bytes passed a storage limit of 20,000");

    // Deno: with the limit lowered below what is stored, even its small write
    // is refused (an error, not retried) while its read works.
    let lower = |bytes: u64| {
        let path = path.clone();
        async move {
            patch(
                &path,
                &admin_token(),
                json!({"limits": {"storageBytes": bytes}}),
            )
            .await
            .assert_ok();
        }
    };
    lower(1000).await;
    deno_write_refused(&db, "storageBytes").await;
    lower(20000).await;

    // Deleting is never refused; once the deletions are counted, writes pass.
    let deletes = pb::AtomicWrite {
        mutations: (0..accepted)
            .map(|i| pb::Mutation {
                key: key(&format!("s{i}")),
                mutation_type: pb::MutationType::MDelete as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let deleted = session
        .call("atomic_write", prost::Message::encode_to_vec(&deletes))
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    a_commit_passes_again(&session, "a write after the deletions").await;
}

#[tokio::test]
async fn an_organization_holds_at_most_its_limit_of_watches_and_their_time_is_counted() {
    let db = kv_database("quota-watches").await;
    patch(
        &limits_path(&db.org.id),
        &admin_token(),
        json!({"limits": {"watches": 2}}),
    )
    .await
    .assert_ok();

    // Deno opens watches until one is refused: two open, the third is a 403
    // naming the limit, which Deno raises to the caller.
    let started = std::time::Instant::now();
    let output = output_within(
        "watch_limit.ts",
        deno_script("watch_limit.ts")
            .args([db.url.as_str(), "4"])
            .env("DENO_KV_ACCESS_TOKEN", &db.org.token),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed().as_secs_f64();
    assert!(output.status.success(), "{}", describe(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    let seen: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(seen["opened"], 2, "{seen}");
    let refused = seen["refused"].as_str().unwrap_or_default();
    assert!(refused.contains("limits.watches"), "{seen}");

    // The two watches were open for part of the script's run: their seconds are
    // counted (flushed as each ended). The function holds a watch until it sees
    // its client gone: at the latest when a keep-alive (every 5 s) cannot be
    // written. So each counts at most the script's time and one keep-alive.
    let path = format!("/v1/databases/{}/usage", db.id);
    let usage = poll(
        "the watches' seconds counted",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || async {
            let usage = get(&path, &db.org.token).await.assert_ok().clone();
            match usage["total"]["watchSeconds"].as_f64() {
                Some(s) if s > 0.0 => Ok(usage),
                _ => Err(usage.to_string()),
            }
        },
    )
    .await;
    let seconds = usage["total"]["watchSeconds"].as_f64().unwrap_or_default();
    assert!(
        seconds <= 2.0 * (took + KEEPALIVE_SECONDS + 1.0),
        "{seconds} s of watches in {took} s: {usage}"
    );
    eprintln!("2 watches counted {seconds} s of watching in a run of {took} s");
}
