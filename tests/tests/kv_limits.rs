//! Inputs legal for Deno KV (or merely unusual) that DynamoDB cannot store as they
//! are, at the wire level against the local stack (issue 12, items 1, 5 and 9):
//! each is a 4xx naming the limit, decided before anything is written, and the
//! database and the instance keep working after it. A 5xx would be a hang: Deno's
//! client retries every 5xx forever.

use denokv_proto::datapath as pb;
use prost::Message;
use subkv_e2e::kv_wire::*;
use subkv_kv::limits::MAX_EXPIRE_AT_MS;

/// A key of 1150 bytes whose first 1000 bytes are shared by every `long(_, i)`
/// with the same `prefix`.
fn long(prefix: &str, i: usize) -> Vec<u8> {
    key(&format!("{prefix}{}{i:04}", "x".repeat(1140)))
}

fn versionstamp_number(vs: &[u8]) -> u64 {
    u64::from_be_bytes(vs[..8].try_into().unwrap())
}

#[tokio::test]
async fn a_commit_whose_long_keys_outgrow_their_item_is_a_400_before_anything_is_written() {
    let s = Session::open().await;
    let first = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("before"), b"1", 0)],
            ..Default::default()
        })
        .await;
    // The commit: 150 short keys, and 7 keys of 1150 bytes sharing their
    // first 1000 bytes with 62 KB values (one item of about 450 KB): a large
    // commit, legal for Deno.
    let mut mutations: Vec<pb::Mutation> = (0..150)
        .map(|i| set(&key(&format!("k{i:04}")), b"v", 0))
        .collect();
    mutations.extend((0..7).map(|i| set(&long("l", i), &[7; 62 * 1024], 0)));
    let big = pb::AtomicWrite {
        mutations,
        ..Default::default()
    };
    s.call("atomic_write", big.encode_to_vec())
        .await
        .assert_plain_error(400, "the limit is 400000 bytes");
    // The same bucket in a small commit.
    let small = pb::AtomicWrite {
        mutations: (0..7)
            .map(|i| set(&long("m", i), &[7; 62 * 1024], 0))
            .collect(),
        ..Default::default()
    };
    s.call("atomic_write", small.encode_to_vec())
        .await
        .assert_plain_error(400, "share their first 1000 bytes");
    // Nothing of either was written, and no version was used up: the next commit
    // follows the first one directly.
    assert!(s.list(key("k"), key("n")).await.is_empty());
    let next = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("after"), b"2", 0)],
            ..Default::default()
        })
        .await;
    assert_eq!(next.status, pb::AtomicWriteStatus::AwSuccess as i32);
    assert_eq!(
        versionstamp_number(&next.versionstamp),
        versionstamp_number(&first.versionstamp) + 1
    );
    // Six such keys fit: the limit is the item's, not a lower one.
    let six = pb::AtomicWrite {
        mutations: (0..6)
            .map(|i| set(&long("l", i), &[7; 62 * 1024], 0))
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        s.write(six).await.status,
        pb::AtomicWriteStatus::AwSuccess as i32
    );
    assert_eq!(s.list(key("l"), key("m")).await.len(), 6);
}

#[tokio::test]
async fn an_expiry_out_of_range_is_a_400_and_the_instance_keeps_serving() {
    let s = Session::open().await;
    let at = |ms: i64| pb::AtomicWrite {
        mutations: vec![set(&key("e"), b"1", ms)],
        ..Default::default()
    };
    // 10^16 ms: past what denokv_proto's conversion can add to the epoch (it
    // panics there, and a release build aborts the instance).
    for ms in [10_i64.pow(16), MAX_EXPIRE_AT_MS + 1, i64::MAX] {
        s.call("atomic_write", at(ms).encode_to_vec())
            .await
            .assert_plain_error(400, &format!("{MAX_EXPIRE_AT_MS}"));
    }
    s.call("atomic_write", at(-2).encode_to_vec())
        .await
        .assert_plain_error(400, "expireAt");
    // The latest expiry itself is stored, and the instance still answers.
    let out = s.write(at(MAX_EXPIRE_AT_MS)).await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    let entries = s.list(key("e"), key("f")).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].versionstamp, out.versionstamp);
}

#[tokio::test]
async fn a_large_commits_failed_checks_are_only_those_that_fail() {
    let s = Session::open().await;
    let first = s
        .write(pb::AtomicWrite {
            mutations: vec![set(&key("a"), b"1", 0), set(&key("b"), b"1", 0)],
            ..Default::default()
        })
        .await;
    let check = |k: &str, vs: &[u8]| pb::Check {
        key: key(k),
        versionstamp: vs.to_vec(),
    };
    // 150 mutations: a large commit, whose first transaction holds the checks.
    // Checks 0 and 2 hold; 1 and 3 fail, on the same items (a written one and
    // one only checked).
    let mut mutations: Vec<pb::Mutation> = (0..149)
        .map(|i| set(&key(&format!("k{i:04}")), b"v", 0))
        .collect();
    mutations.push(set(&key("a"), b"2", 0));
    let write = pb::AtomicWrite {
        checks: vec![
            check("a", &first.versionstamp),
            check("a", &[]),
            check("b", &first.versionstamp),
            check("b", &[]),
        ],
        mutations,
        ..Default::default()
    };
    let out = s.write(write).await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwCheckFailure as i32);
    assert_eq!(out.failed_checks, vec![1, 3]);
    assert!(s.list(key("k"), key("l")).await.is_empty());
}
