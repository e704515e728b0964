//! Reads whose answers are large (issue 12, item 4), against the local stack. A
//! buffered Lambda response is capped at 6 MB (base64 included), and Deno's `list`
//! asks for 100 entries per read, which with 64 KiB values is about 6.6 MB: it must
//! still be answered whole (a shorter batch would end the user's list early), so
//! `snapshot_read` streams its answer. A read past the largest answer subkv gives
//! (19 MiB of protobuf, under Lambda's 20 MB streamed limit) is a 400 naming the
//! limit, decided before any byte is sent; a 5xx would be a hang (Deno's client
//! retries it forever).

use denokv_proto::datapath as pb;
use prost::Message;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use subkv_e2e::backup::output_within;
use subkv_e2e::kv_wire::*;
use subkv_e2e::*;
use subkv_kv::limits::{MAX_READ_RESPONSE_BYTES, MAX_VALUE_BYTES};

/// Deno's own limit on what one commit may carry (800 KiB): 12 values of 64 KiB fit.
const PER_COMMIT: usize = 12;
/// How long the Deno suite may take before it is killed and the test fails (a hang
/// would otherwise block the run).
const DENO_SUITE_TIMEOUT: Duration = Duration::from_secs(600);

fn tool(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} must point at the binary (make test sets it)"))
}

/// The value of entry `i`: 64 KiB that differ from every other entry's.
fn value(i: usize) -> Vec<u8> {
    (0..MAX_VALUE_BYTES)
        .map(|j| (i * 131 + j * 7 + (j >> 8)) as u8)
        .collect()
}

fn entry_key(i: usize) -> Vec<u8> {
    key(&format!("big{i:04}"))
}

/// Writes entries `0..n` of 64 KiB each, through the data path.
async fn fill(s: &Session, n: usize) {
    for first in (0..n).step_by(PER_COMMIT) {
        let out = s
            .write(pb::AtomicWrite {
                mutations: (first..n.min(first + PER_COMMIT))
                    .map(|i| set(&entry_key(i), &value(i), 0))
                    .collect(),
                ..Default::default()
            })
            .await;
        assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    }
}

fn range(limit: i32) -> pb::ReadRange {
    pb::ReadRange {
        start: key("big"),
        end: key("bih"),
        limit,
        reverse: false,
    }
}

async fn read(s: &Session, ranges: Vec<pb::ReadRange>) -> (Raw, Duration) {
    let started = Instant::now();
    let reply = s
        .call("snapshot_read", pb::SnapshotRead { ranges }.encode_to_vec())
        .await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn a_read_of_100_entries_of_64_kib_is_answered_whole_and_one_past_the_limit_is_a_400() {
    let s = Session::open().await;
    fill(&s, 100).await;

    // Deno's default batch: 100 entries in one read, about 6.6 MB of protobuf, which
    // a buffered Lambda response could not carry once base64-encoded (8.8 MB).
    let (reply, took) = read(&s, vec![range(100)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    println!(
        "snapshot_read of 100 x 64 KiB: {} bytes in {took:?} (content-length: {:?})",
        reply.body.len(),
        reply.content_length
    );
    assert!(reply.body.len() > 6 * 1024 * 1024, "{}", reply.body.len());
    assert_eq!(
        reply.content_length, None,
        "the answer is streamed (chunked), as Lambda response streaming sends it"
    );
    let out = pb::SnapshotReadOutput::decode(reply.body.as_slice()).expect("a whole answer");
    let values = &out.ranges[0].values;
    assert_eq!(values.len(), 100);
    for (i, entry) in values.iter().enumerate() {
        assert_eq!(entry.key, entry_key(i));
        assert!(entry.value == value(i), "entry {i}'s value");
    }

    // Deno's largest read: 10 ranges, 1000 entries, here about 65.6 MB. Past the
    // largest answer: a 400 naming the limit, with nothing streamed before it.
    let (reply, took) = read(&s, (0..10).map(|_| range(100)).collect()).await;
    println!(
        "snapshot_read of 1000 x 64 KiB: {} in {took:?}",
        reply.status
    );
    reply.assert_plain_error(
        400,
        &format!("the limit is {MAX_READ_RESPONSE_BYTES} bytes"),
    );
    assert!(
        reply.text().contains("read fewer entries at once"),
        "{}",
        reply.text()
    );

    // The largest answer that fits: 3 ranges of 100 (300 entries, about 19.7 MB).
    let (reply, took) = read(&s, (0..3).map(|_| range(100)).collect()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    println!(
        "snapshot_read of 300 x 64 KiB: {} bytes in {took:?}",
        reply.body.len()
    );
    assert!(reply.body.len() <= MAX_READ_RESPONSE_BYTES);
    let out = pb::SnapshotReadOutput::decode(reply.body.as_slice()).expect("a whole answer");
    assert_eq!(out.ranges.len(), 3);
    assert!(out.ranges.iter().all(|r| r.values.len() == 100));
}

/// The real Deno runtime lists 100 entries of 64 KiB with its default batch and gets
/// them all, and sees a read past the largest answer refused with the limit, within
/// bounded time (tests/kv/payload_test.ts).
#[tokio::test]
async fn deno_lists_entries_of_64_kib_whole_and_sees_a_read_past_the_limit_refused() {
    let org = create_org("kv-payload").await;
    let db = create_db(&org, "kv payload").await;
    let url = format!(
        "{}/databases/{}/connect",
        api_url(),
        db["id"].as_str().expect("database id")
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kv");
    let started = Instant::now();
    let output = output_within(
        "deno test payload_test.ts",
        Command::new(tool("DENO"))
            .current_dir(dir)
            .args([
                "test",
                "--unstable-kv",
                "--allow-env",
                "--allow-net",
                "--no-prompt",
                "payload_test.ts",
            ])
            .env("SUBKV_KV_URL", url)
            .env("DENO_KV_ACCESS_TOKEN", &org.token)
            .env("NO_COLOR", "1"),
        DENO_SUITE_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let report = format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    println!("deno payload suite: {:?}\n{report}", started.elapsed());
    assert!(output.status.success(), "payload_test.ts failed:\n{report}");
    assert!(report.contains("ok | 1 passed | 0 failed"), "{report}");
}
