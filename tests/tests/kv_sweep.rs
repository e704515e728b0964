//! The expiry sweeper under a backlog and a broken tenant (issue 12, item 2), on
//! the local stack's sweeper (every 2 s, 1 s of sweeping per run):
//! - a database whose expired items cannot be swept (here: items that do not
//!   parse, first in every shard of the expiry index) does not stop expiry for
//!   the others;
//! - a backlog is swept in commits of 10 keys, each a change record, and the
//!   rate is printed (docs/data-plane.md, "Expiry", cites it).

use aws_sdk_dynamodb::types::AttributeValue;
use denokv_proto::backup::BackupKvMutationKind;
use denokv_proto::datapath as pb;
use std::time::{Duration, Instant};
use subkv_e2e::backup::poll;
use subkv_e2e::kv_wire::*;
use uuid::Uuid;

fn table() -> String {
    std::env::var("SUBKV_KV_DATA_TABLE").unwrap_or_else(|_| "subkv-kv-data".into())
}

async fn dynamo() -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::new(
        &aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await,
    )
}

/// Writes `count` entries of `prefix` that are already expired, and one that
/// never expires, in commits of 1000.
async fn expired_backlog(s: &Session, prefix: &str, count: usize) {
    let expired = now_ms() - 1_000;
    let mut mutations: Vec<pb::Mutation> = (0..count)
        .map(|i| set(&key(&format!("{prefix}{i:05}")), b"gone", expired))
        .collect();
    mutations.push(set(&key(&format!("{prefix}zzzz")), b"stays", 0));
    s.write_all(mutations).await;
}

/// Waits until the database holds one item (the entry that never expires).
async fn swept(s: &Session, what: &str, timeout: Duration) {
    let id = s.id();
    poll(what, timeout, Duration::from_millis(250), || async move {
        match data_items(id).await {
            1 => Ok(()),
            n => Err(format!("{n} items stored")),
        }
    })
    .await;
}

#[tokio::test]
async fn a_database_that_cannot_be_swept_does_not_stop_expiry_for_the_others() {
    // A wedged tenant: an expired item in every shard, due before anything
    // else, that does not parse (no value).
    let wedged = Uuid::new_v4();
    let client = dynamo().await;
    let keys: Vec<Vec<u8>> = (0..8).map(|i| key(&format!("wedged{i}"))).collect();
    for (shard, sk) in keys.iter().enumerate() {
        client
            .put_item()
            .table_name(table())
            .item("pk", AttributeValue::S(wedged.to_string()))
            .item("sk", AttributeValue::B(sk.clone().into()))
            .item("kv_ver", AttributeValue::N("1".into()))
            .item("kv_exp", AttributeValue::N("1".into()))
            .item("kv_xs", AttributeValue::S(format!("x{shard}")))
            .send()
            .await
            .unwrap();
    }

    let s = Session::open().await;
    expired_backlog(&s, "e/", 40).await;
    swept(
        &s,
        "the healthy database's expired entries swept",
        Duration::from_secs(60),
    )
    .await;

    // The wedged items are still there (the sweeper cannot read them), and are
    // removed so the stack's later tests do not meet them.
    assert_eq!(data_items(wedged).await, 8);
    for sk in keys {
        client
            .delete_item()
            .table_name(table())
            .key("pk", AttributeValue::S(wedged.to_string()))
            .key("sk", AttributeValue::B(sk.into()))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_backlog_is_swept_in_commits_of_ten_keys() {
    let s = Session::open().await;
    expired_backlog(&s, "b/", 2000).await;
    let started = Instant::now();
    swept(
        &s,
        "a backlog of 2000 expired entries swept",
        Duration::from_secs(180),
    )
    .await;
    let elapsed = started.elapsed();
    println!(
        "2000 expired entries swept {:.1} s after the last was written, on the local stack: \
         {:.0} expirations/min",
        elapsed.as_secs_f64(),
        2000.0 * 60.0 / elapsed.as_secs_f64()
    );
    // The sweeper's commits: deletions only (the writes are sets).
    let log = store()
        .await
        .change_log(s.id(), 0, 10_000, usize::MAX)
        .await
        .unwrap();
    let clear = BackupKvMutationKind::MkClear as i32;
    let sweeps: Vec<_> = log
        .iter()
        .filter(|c| c.entries.iter().all(|e| e.kind == clear))
        .collect();
    let deleted: usize = sweeps.iter().map(|c| c.entries.len()).sum();
    assert_eq!(
        deleted, 2000,
        "every expiry is a deletion in the change log"
    );
    assert!(
        sweeps.iter().all(|c| c.entries.len() <= 10),
        "commits of at most 10 keys"
    );
    println!("{} sweeping commits", sweeps.len());
}
