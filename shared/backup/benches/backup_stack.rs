//! The backup engine on the local stack (issues 4 and 11): what it costs in S3
//! requests, how far behind the commits it runs, how long `denokv` takes to restore
//! a backup of 100,000 keys, and how long the backup of a database under
//! continuous writes takes to become `active`.
//!
//! Everything goes through the running stack: databases and backups through the
//! management API, commits with `subkv_dynamo_kv::DynamoKv::atomic_write` on the
//! emulator's tables (what the `kv-atomic-write` function runs), and the
//! `backup-forward` function woken by the stream pump (the change-log stream,
//! polled every 0.25 s) and by the scheduled catch-up (every 2 s), as
//! `infra/local/stack.sh` runs them. Buckets are in the emulator's S3 (moto).
//!
//! 1. **S3 requests per 1,000 commits.** A backup whose endpoint is a counting
//!    pass-through proxy in front of moto's S3; once it is active, 1,000 commits
//!    (one 100-byte value each) by 1 writer, then by 8 concurrent writers (each
//!    its own `DynamoKv`, as separate function instances are), until the backup's
//!    `GET` status has the last commit as `lastVersionstamp`. Counted: every
//!    request the proxy passed (`PutObject`s of `logs/` objects; the engine sends
//!    nothing else), the commits per object (from the names), objects written
//!    again (same `monoseq`). Meanwhile a bystander, another database with a
//!    backup, commits once a second: its commit-to-object lag (as in 2) shows what
//!    a busy database does to the others' backups.
//! 2. **Commit-to-object lag.** 50 commits, one every 200 ms; meanwhile the
//!    bucket is listed (`ListObjectsV2`, `start-after` the last name seen) every
//!    20 ms. A commit's lag: from its acknowledgement (`atomic_write` returned) to
//!    the first listing that shows a `logs/` object whose last commit is at or
//!    past it. Beside it, the engine's own `LagMs` metric (its EMF log lines in
//!    `$SUBKV_STACK_LOG_DIR/api.log`: commit time to object written, per pass).
//! 3. **`denokv pitr sync` of 100,000 keys.** 100 commits of 1,000 `set`s (keys
//!    of about 25 bytes, 100-byte values); a backup enabled on it (timed: enable
//!    to `active`, the snapshot); then `denokv --sqlite-path <tmp> pitr sync`
//!    against moto, timed, and a second (incremental, nothing new) sync; the
//!    restored copy's key count (with Python's sqlite3, if `python3` is there).
//! 4. **A busy database becomes `active`.** (The API functions warmed first by a
//!    backup of an empty database.) 10,000 keys written as in 3; then 3
//!    concurrent writers (each its own `DynamoKv`) commit one 100-byte `set` each as
//!    fast as they can, sending an `Unavailable` answer again as Deno's client
//!    does; after their first 100 commits a backup is enabled and its `GET` status
//!    polled every 250 ms until `active` (timed: enable to `active`; the
//!    `snapshotChunks` it showed meanwhile; the writers' commits/s while it was
//!    `pending`); the writers go on for 5 s more, then stop, and the time until
//!    `lastVersionstamp` is their last commit is the catch-up. Counted: snapshot
//!    objects and log objects in the bucket, the `Unavailable` answers retried, the
//!    commits' latency, the `backup-forward` invocations meanwhile.
//!
//! Run by `make bench-backup` (a fresh stack on its own ports), or inside any
//! local stack: `infra/local/stack.sh run -- cargo bench -p subkv-backup --bench
//! backup_stack`. Needs `SUBKV_API_URL`, `SUBKV_ADMIN_TOKEN`, `AWS_ENDPOINT_URL`
//! (the stack's) and the `denokv` binary (`DENOKV`, default
//! `target/denokv/bin/denokv`; `make denokv`; without it part 3 stops after the
//! snapshot). `SUBKV_BACKUP_BENCH_KEYS` changes part 3's key count (default
//! 100000), `SUBKV_BACKUP_BENCH_BUSY_KEYS` and `SUBKV_BACKUP_BENCH_BUSY_WRITERS`
//! part 4's keys and writers (default 10000 and 3); `SUBKV_BACKUP_BENCH_PARTS` runs
//! only some parts (default `requests,lag,restore,busy`). Under `cargo test
//! --benches`, or without a stack, it prints that it skipped. docs/performance.md,
//! "Backup engine", has the figures.

use aws_sdk_s3::primitives::ByteStream;
use denokv_proto::{encode_key, AtomicWrite, Key, KeyPart, KvValue, Mutation, MutationKind};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Method;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subkv_dynamo_kv::{DynamoKv, WriteOutcome, DEFAULT_DATA_TABLE, DEFAULT_LOG_TABLE};
use subkv_kv::error::KvError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

const PREFIX: &str = "bench/";
/// Longest wait for a backup to become active or catch up.
const DEADLINE: Duration = Duration::from_secs(600);
const COMMITS: usize = 1000;
const CONCURRENT_WRITERS: usize = 8;
const LAG_COMMITS: usize = 50;
const LAG_SPACING: Duration = Duration::from_millis(200);
const LIST_INTERVAL: Duration = Duration::from_millis(20);
/// The bystander database of part 1 commits this often.
const BYSTANDER_SPACING: Duration = Duration::from_secs(1);
const DEFAULT_RESTORE_KEYS: usize = 100_000;
const MUTATIONS_PER_COMMIT: usize = 1000;
/// Part 4: the busy database's keys before the backup is enabled (several snapshot
/// chunks of 1,000), and its concurrent writers.
const DEFAULT_BUSY_KEYS: usize = 10_000;
const DEFAULT_BUSY_WRITERS: usize = 3;
/// Commits the busy writers make between them before the backup is enabled.
const BUSY_WARM_UP: u64 = 100;
/// How long the busy writers go on once the backup is active.
const BUSY_AFTER_ACTIVE: Duration = Duration::from_secs(5);
/// How often part 4 polls the backup's status while it is pending.
const BUSY_POLL: Duration = Duration::from_millis(250);

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------
// The management API (HTTP/1.1 through hyper's client; the stack serves http).

struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    admin: String,
}

impl Api {
    fn new(base: String, admin: String) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base,
            admin,
        }
    }

    async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let request = hyper::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .expect("request");
        let response = tokio::time::timeout(Duration::from_secs(120), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in 120 s"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }

    async fn org(&self, name: &str) -> (String, String) {
        let org = self
            .call(
                Method::POST,
                "/v1/organizations",
                &self.admin,
                Some(json!({ "name": name })),
            )
            .await;
        (text(&org["id"]), text(&org["token"]))
    }

    async fn database(&self, org: &(String, String), description: &str) -> Uuid {
        let db = self
            .call(
                Method::POST,
                &format!("/v1/organizations/{}/databases", org.0),
                &org.1,
                Some(json!({ "description": description })),
            )
            .await;
        Uuid::parse_str(&text(&db["id"])).expect("database id")
    }

    async fn enable(&self, token: &str, db: Uuid, endpoint: &str, bucket: &str) -> String {
        let body = json!({
            "kind": "s3", "endpoint": endpoint, "bucketName": bucket, "bucketRegion": "us-east-1",
            "accessKeyId": env("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "subkv-local".into()),
            "secretAccessKey": env("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "subkv-local".into()),
            "prefix": PREFIX,
        });
        let reply = self
            .call(
                Method::POST,
                &format!("/v1/databases/{db}/database_backups"),
                token,
                Some(body),
            )
            .await;
        text(&reply["id"])
    }

    async fn status(&self, token: &str, backup: &str) -> Value {
        self.call(
            Method::GET,
            &format!("/v1/database_backups/{backup}"),
            token,
            None,
        )
        .await["status"]
            .clone()
    }

    async fn disable(&self, token: &str, backup: &str) {
        self.call(
            Method::DELETE,
            &format!("/v1/database_backups/{backup}"),
            token,
            None,
        )
        .await;
    }

    /// Polls the backup's status every `every` until it is `active` with a
    /// `lastVersionstamp` at or past `through` (any, if None); returns when.
    async fn wait_active(
        &self,
        token: &str,
        backup: &str,
        through: Option<&str>,
        every: Duration,
    ) -> Instant {
        let limit = Instant::now() + DEADLINE;
        loop {
            let status = self.status(token, backup).await;
            let code = status["code"].as_str().unwrap_or_default();
            assert_ne!(code, "failed", "backup {backup} failed: {status}");
            let last = status["lastVersionstamp"].as_str().unwrap_or_default();
            if code == "active" && through.is_none_or(|t| last >= t) {
                return Instant::now();
            }
            assert!(
                Instant::now() < limit,
                "backup {backup} not active through {through:?} after {DEADLINE:?}: {status}"
            );
            tokio::time::sleep(every).await;
        }
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string: {v}"))
        .to_string()
}

// ---------------------------------------------------------------------------------
// A counting pass-through proxy in front of the emulator's S3 (the backup's
// endpoint), after tests/src/fault_proxy.rs: HTTP/1.1, a head then a
// `Content-Length` body, relayed upstream with `Connection: close`.

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    body_bytes: usize,
}

#[derive(Clone)]
struct Proxy {
    endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (log, upstream) = (log.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = relay(socket, &upstream, &log).await;
                });
            }
        });
        Self { endpoint, seen }
    }

    /// Requests seen so far under `/<bucket>/` (path-style).
    fn requests(&self, bucket: &str) -> Vec<Seen> {
        let prefix = format!("/{bucket}/");
        let seen = self.seen.lock().expect("proxy log");
        seen.iter()
            .filter(|s| s.path.starts_with(&prefix))
            .cloned()
            .collect()
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn relay(
    mut socket: TcpStream,
    upstream: &str,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf.split_off(head_end);
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    log.lock().expect("proxy log").push(Seen {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
        body_bytes: body.len(),
    });
    let mut up = TcpStream::connect(upstream).await?;
    let mut request: String = head
        .trim_end_matches("\r\n")
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    request.push_str("connection: close\r\n\r\n");
    up.write_all(request.as_bytes()).await?;
    up.write_all(&body).await?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await?;
    socket.write_all(&answer).await?;
    socket.shutdown().await
}

// ---------------------------------------------------------------------------------
// The emulator: tables and S3.

async fn kv_store() -> DynamoKv {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    DynamoKv::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        env("SUBKV_KV_DATA_TABLE").unwrap_or_else(|| DEFAULT_DATA_TABLE.into()),
        env("SUBKV_KV_LOG_TABLE").unwrap_or_else(|| DEFAULT_LOG_TABLE.into()),
        7 * 24 * 3600,
    )
}

async fn s3(emulator: &str) -> aws_sdk_s3::Client {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .endpoint_url(emulator)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn fresh_bucket(s3: &aws_sdk_s3::Client, tag: &str) -> String {
    let name = format!(
        "subkv-bench-{tag}-{}",
        &Uuid::new_v4().simple().to_string()[..10]
    );
    s3.create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    name
}

/// The keys under `prefix` after `after`, in name order.
async fn list(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
    after: Option<&str>,
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(after.map(String::from))
            .set_continuation_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list {bucket}/{prefix}: {e:?}"));
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        token = page.next_continuation_token().map(String::from);
        if token.is_none() {
            return keys;
        }
    }
}

/// `logs/0001_<monoseq:016x>_<first:024x>_<last:024x>.bin`: (monoseq, first commit,
/// last commit).
fn log_name(key: &str) -> Option<(u64, u64, u64)> {
    let name = key.rsplit('/').next()?.strip_suffix(".bin")?;
    let mut parts = name.split('_');
    let (_, monoseq, first, last) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let version = |vs12: &str| u64::from_str_radix(vs12.get(..16)?, 16).ok();
    Some((
        u64::from_str_radix(monoseq, 16).ok()?,
        version(first)?,
        version(last)?,
    ))
}

fn key(parts: &[&str]) -> Vec<u8> {
    encode_key(&Key(parts
        .iter()
        .map(|p| KeyPart::String(p.to_string()))
        .collect()))
    .expect("encodable key")
}

fn set(key: Vec<u8>, value_bytes: usize, seed: usize) -> Mutation {
    let mut value = format!("value {seed} ").into_bytes();
    value.resize(value_bytes, b'.');
    Mutation {
        key,
        kind: MutationKind::Set(KvValue::Bytes(value)),
        expire_at: None,
    }
}

/// Commits `mutations`; returns the commit's version (retries a commit that lost
/// to too many concurrent writers).
async fn commit(store: &DynamoKv, db: Uuid, mutations: Vec<Mutation>) -> u64 {
    let write = AtomicWrite {
        checks: vec![],
        mutations,
        enqueues: vec![],
    };
    for _ in 0..10 {
        match store.atomic_write(db, &write).await {
            Ok(WriteOutcome::Committed(vs)) => {
                return u64::from_be_bytes(vs[..8].try_into().expect("8 bytes"))
            }
            Ok(other) => panic!("commit refused: {other:?}"),
            Err(e) => eprintln!("commit failed, again: {}", e.detail()),
        }
    }
    panic!("commit failed 10 times");
}

/// Writes `keys` keys to `db` in commits of [`MUTATIONS_PER_COMMIT`] `set`s (keys of
/// about 25 bytes under `bench/<tag>/`, 100-byte values) and says how long it took;
/// returns the last commit's version.
async fn fill(store: &DynamoKv, db: Uuid, tag: &str, keys: usize) -> u64 {
    let started = Instant::now();
    let mut last = 0;
    let mut written = 0;
    while written < keys {
        let n = MUTATIONS_PER_COMMIT.min(keys - written);
        let mutations = (written..written + n)
            .map(|i| set(key(&["bench", tag, &format!("{i:07}")]), 100, i))
            .collect();
        last = commit(store, db, mutations).await;
        written += n;
    }
    println!(
        "-- {keys} keys ({} commits of up to {MUTATIONS_PER_COMMIT} sets, ~25-byte keys, 100-byte values) written in {:.1} s",
        keys.div_ceil(MUTATIONS_PER_COMMIT),
        started.elapsed().as_secs_f64()
    );
    last
}

/// Commits `write` as Deno's client does: an `Unavailable` answer (503: contention
/// on the database's head that outlasted the store's own retries, or throttling)
/// is sent again at once, for up to [`DEADLINE`]. Returns the commit's version and
/// the number of answers retried.
async fn commit_as_client(store: &DynamoKv, db: Uuid, write: &AtomicWrite) -> (u64, u64) {
    let limit = Instant::now() + DEADLINE;
    let mut retries = 0;
    loop {
        match store.atomic_write(db, write).await {
            Ok(WriteOutcome::Committed(vs)) => {
                return (
                    u64::from_be_bytes(vs[..8].try_into().expect("8 bytes")),
                    retries,
                )
            }
            Ok(other) => panic!("commit refused: {other:?}"),
            Err(KvError::Unavailable(_)) if Instant::now() < limit => retries += 1,
            Err(e) => panic!("commit failed: {e:?}"),
        }
    }
}

/// The commit of a `lastVersionstamp` (20 hex: the version is the first 16).
fn version_of(versionstamp: &str) -> Option<u64> {
    u64::from_str_radix(versionstamp.get(..16)?, 16).ok()
}

/// The 20-hex versionstamp of commit `version`.
fn vs(version: u64) -> String {
    hex::encode(subkv_kv::model::versionstamp(version))
}

// ---------------------------------------------------------------------------------
// Figures.

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut values: Vec<f64>, unit: &str) -> String {
    values.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    let v = |x: f64| format!("{x:.0}{unit}");
    format!(
        "n {}, min {}, p50 {}, p95 {}, max {}, mean {}",
        values.len(),
        v(values.first().copied().unwrap_or(f64::NAN)),
        v(percentile(&values, 50.0)),
        v(percentile(&values, 95.0)),
        v(values.last().copied().unwrap_or(f64::NAN)),
        v(mean)
    )
}

/// The `LagMs` of the engine's metric lines for `backup` after byte `from` of the
/// API log, for passes that forwarded something.
fn engine_lags(log: &Option<PathBuf>, from: u64, backup: &str) -> Vec<f64> {
    let Some(text) = log.as_ref().and_then(|p| std::fs::read(p).ok()) else {
        return Vec::new();
    };
    let tail = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
    tail.lines()
        .filter(|l| l.contains("\"LagMs\""))
        .filter_map(|l| serde_json::from_str::<Value>(l.get(l.find('{')?..)?).ok())
        .filter(|v| v["BackupId"] == backup && v["RecordsForwarded"].as_u64() > Some(0))
        .filter_map(|v| v["LagMs"].as_f64())
        .collect()
}

/// What [`paced_commits`] saw.
struct Paced {
    /// Per commit: from its acknowledgement to the first listing showing it (ms).
    lags: Vec<f64>,
    lists: u64,
    list_time: Duration,
    objects: usize,
}

/// Commits to `db` (one 100-byte `set` each) every `spacing`, `count` times or until
/// `stop` turns true, while listing `bucket`'s `logs/` every [`LIST_INTERVAL`]; then
/// waits until the last commit is listed. Each commit's lag: from `atomic_write`
/// returning to the first listing with an object whose last commit is at or past it.
async fn paced_commits(
    s3: &aws_sdk_s3::Client,
    store: &DynamoKv,
    bucket: &str,
    db: Uuid,
    count: usize,
    spacing: Duration,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Paced {
    let root = format!("{PREFIX}{db}/logs/");
    // When each object was first listed, by its last commit.
    let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let watcher = {
        let (s3, bucket, seen) = (s3.clone(), bucket.to_string(), seen.clone());
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            let (mut lists, mut list_time) = (0u64, Duration::ZERO);
            loop {
                let t = Instant::now();
                let keys = list(&s3, &bucket, &root, after.as_deref()).await;
                let at = Instant::now();
                lists += 1;
                list_time += at - t;
                seen.lock().expect("seen").extend(
                    keys.iter()
                        .filter_map(|k| log_name(k))
                        .map(|(_, _, last)| (last, at)),
                );
                if let Some(k) = keys.last() {
                    after = Some(k.clone());
                }
                if *stop_rx.borrow() {
                    return (lists, list_time);
                }
                tokio::select! {
                    _ = tokio::time::sleep(LIST_INTERVAL) => {}
                    _ = stop_rx.changed() => {}
                }
            }
        })
    };
    let mut acks: Vec<(u64, Instant)> = Vec::new();
    let start = Instant::now();
    for i in 0..count {
        if stop.as_ref().is_some_and(|s| *s.borrow()) {
            break;
        }
        tokio::time::sleep_until((start + spacing * i as u32).into()).await;
        let k = key(&["bench", "paced", &format!("{i:06}")]);
        let version = commit(store, db, vec![set(k, 100, i)]).await;
        acks.push((version, Instant::now()));
    }
    let last = acks.last().map_or(0, |a| a.0);
    let limit = Instant::now() + DEADLINE;
    while !seen.lock().expect("seen").iter().any(|(l, _)| *l >= last) {
        assert!(
            Instant::now() < limit,
            "commit {last} not listed after {DEADLINE:?}"
        );
        tokio::time::sleep(LIST_INTERVAL).await;
    }
    stop_tx.send(true).expect("stop the watcher");
    let (lists, list_time) = watcher.await.expect("watcher");
    let seen = seen.lock().expect("seen");
    let lags = acks
        .iter()
        .map(|(version, acked)| {
            let shown = seen
                .iter()
                .filter(|(l, _)| l >= version)
                .map(|(_, at)| *at)
                .min()
                .unwrap_or_else(|| panic!("commit {version} is in no listed object"));
            shown.saturating_duration_since(*acked).as_secs_f64() * 1000.0
        })
        .collect();
    Paced {
        lags,
        lists,
        list_time,
        objects: seen.len(),
    }
}

/// What the proxy saw while `commits` commits were backed up.
fn report_requests(during: &[Seen], commits: usize) {
    let puts: Vec<&Seen> = during.iter().filter(|s| s.method == "PUT").collect();
    let logs: Vec<(u64, u64, u64)> = puts.iter().filter_map(|s| log_name(&s.path)).collect();
    let mut by_monoseq: BTreeMap<u64, usize> = BTreeMap::new();
    for (monoseq, _, _) in &logs {
        *by_monoseq.entry(*monoseq).or_default() += 1;
    }
    let again = logs.len() - by_monoseq.len();
    let per_object: Vec<f64> = logs.iter().map(|(_, f, l)| (l - f + 1) as f64).collect();
    let bytes: usize = puts.iter().map(|s| s.body_bytes).sum();
    println!(
        "S3 requests: {} ({} PutObject, {} other); log objects: {} ({} of them start at the same commit as an earlier one: written twice by racing passes), {:.1} KiB in all",
        during.len(),
        puts.len(),
        during.len() - puts.len(),
        logs.len(),
        again,
        bytes as f64 / 1024.0
    );
    println!(
        "=> {:.1} PutObject per 1,000 commits ({:.1} without the repeats); commits per object: {}",
        puts.len() as f64 * 1000.0 / commits as f64,
        (puts.len() - again) as f64 * 1000.0 / commits as f64,
        summary(per_object, "")
    );
}

/// The durations (`elapsed_ms`) of `backup-forward`'s stream-batch and catch-up
/// invocations logged after byte `from` of the API log (every database's).
fn invocations(log: &Option<PathBuf>, from: u64) -> Vec<(&'static str, Vec<f64>)> {
    let Some(text) = log.as_ref().and_then(|p| std::fs::read(p).ok()) else {
        return Vec::new();
    };
    let tail = String::from_utf8_lossy(text.get(from as usize..).unwrap_or_default()).into_owned();
    let lines: Vec<Value> = tail
        .lines()
        .filter(|l| l.contains("elapsed_ms"))
        .filter_map(|l| serde_json::from_str::<Value>(l.get(l.find('{')?..)?).ok())
        .collect();
    ["stream batch", "catch-up"]
        .into_iter()
        .map(|what| {
            let times = lines
                .iter()
                .filter(|v| v["message"] == what)
                .filter_map(|v| v["elapsed_ms"].as_f64())
                .collect();
            (what, times)
        })
        .collect()
}

fn log_len(log: &Option<PathBuf>) -> u64 {
    log.as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len())
}

/// The busy writers' progress so far, between them.
#[derive(Clone, Copy, Default)]
struct Written {
    commits: u64,
    /// The newest version committed.
    newest: u64,
}

/// One busy writer's tally.
#[derive(Default)]
struct Tally {
    commits: u64,
    /// `Unavailable` answers sent again.
    retries: u64,
    newest: u64,
    /// Per commit, from its first attempt to its acknowledgement (ms).
    latencies: Vec<f64>,
}

/// `writers` writers committing to `db` as fast as they can (one 100-byte `set` of
/// a new key per commit, each writer with its own `DynamoKv` as separate function
/// instances would have) until `stop`; each commit is counted in `progress`.
fn busy_writers(
    db: Uuid,
    writers: usize,
    stop: &Arc<AtomicBool>,
    progress: &Arc<tokio::sync::watch::Sender<Written>>,
) -> tokio::task::JoinSet<Tally> {
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (stop, progress) = (stop.clone(), progress.clone());
        tasks.spawn(async move {
            let store = kv_store().await;
            let mut tally = Tally::default();
            while !stop.load(Ordering::Relaxed) {
                let n = tally.commits as usize;
                let write = AtomicWrite {
                    checks: vec![],
                    mutations: vec![set(
                        key(&["bench", "busy", &format!("w{w}"), &format!("{n:07}")]),
                        100,
                        n,
                    )],
                    enqueues: vec![],
                };
                let t = Instant::now();
                let (version, retries) = commit_as_client(&store, db, &write).await;
                tally.latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                tally.commits += 1;
                tally.retries += retries;
                tally.newest = tally.newest.max(version);
                progress.send_modify(|p| {
                    p.commits += 1;
                    p.newest = p.newest.max(version);
                });
            }
            tally
        });
    }
    tasks
}

struct Bench {
    api: Api,
    org: (String, String),
    s3: aws_sdk_s3::Client,
    emulator: String,
    proxy: Proxy,
    api_log: Option<PathBuf>,
}

impl Bench {
    /// A new database with a backup to a new bucket at `endpoint`, once it is
    /// active: (database, bucket, backup, time from enable to active).
    async fn active_backup(&self, tag: &str, endpoint: &str) -> (Uuid, String, String, Duration) {
        let db = self
            .api
            .database(&self.org, &format!("backup bench: {tag}"))
            .await;
        let bucket = fresh_bucket(&self.s3, tag).await;
        let enabled = Instant::now();
        let backup = self.api.enable(&self.org.1, db, endpoint, &bucket).await;
        let active = self
            .api
            .wait_active(&self.org.1, &backup, None, Duration::from_millis(100))
            .await;
        (db, bucket, backup, active - enabled)
    }

    /// Part 1: `writers` writers make `COMMITS` commits between them.
    async fn requests_per_commits(&self, writers: usize) {
        let (db, bucket, backup, activation_time) =
            self.active_backup("requests", &self.proxy.endpoint).await;
        let activation = self.proxy.requests(&bucket);
        println!(
            "-- {writers} writer(s): backup {backup} active {:.2} s after enable (empty database: {} PutObject)",
            activation_time.as_secs_f64(),
            activation.len()
        );
        // Nothing is written while the catch-up may still be passing over it.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = self.proxy.requests(&bucket).len();
        let log_from = log_len(&self.api_log);

        // A bystander: another tenant's database with a backup, one commit a second
        // while the busy one is written.
        let (bystander_db, bystander_bucket, bystander, _) =
            self.active_backup("bystander", &self.emulator).await;
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        let watch_bystander = {
            let (s3, bucket) = (self.s3.clone(), bystander_bucket.clone());
            tokio::spawn(async move {
                let store = kv_store().await;
                paced_commits(
                    &s3,
                    &store,
                    &bucket,
                    bystander_db,
                    usize::MAX,
                    BYSTANDER_SPACING,
                    Some(done_rx),
                )
                .await
            })
        };

        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..writers {
            tasks.spawn(async move {
                let store = kv_store().await;
                let mut last = 0;
                for i in (w..COMMITS).step_by(writers) {
                    let k = key(&["bench", &format!("w{w}"), &format!("{i:06}")]);
                    last = last.max(commit(&store, db, vec![set(k, 100, i)]).await);
                }
                last
            });
        }
        let mut last = 0;
        while let Some(done) = tasks.join_next().await {
            last = last.max(done.expect("writer"));
        }
        let wrote = started.elapsed();
        done_tx.send(true).expect("stop the bystander");
        let backed_up = self
            .api
            .wait_active(
                &self.org.1,
                &backup,
                Some(&vs(last)),
                Duration::from_millis(100),
            )
            .await;
        let caught_up = backed_up - started;
        // Anything still in flight (a pass that raced another) lands now.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during: Vec<Seen> = self.proxy.requests(&bucket).split_off(before);
        self.api.disable(&self.org.1, &backup).await;

        println!(
            "{COMMITS} commits in {:.2} s ({:.0} commits/s); last one backed up (GET status) {:.2} s after the first write, {:.2} s after the last",
            wrote.as_secs_f64(),
            COMMITS as f64 / wrote.as_secs_f64(),
            caught_up.as_secs_f64(),
            (caught_up - wrote).as_secs_f64()
        );
        report_requests(&during, COMMITS);
        let bystander_lags = watch_bystander.await.expect("bystander").lags;
        self.api.disable(&self.org.1, &bystander).await;
        println!(
            "meanwhile another database's commits (one every {} s), acknowledged -> log object listed: {}",
            BYSTANDER_SPACING.as_secs(),
            summary(bystander_lags, " ms")
        );
        for (what, times) in invocations(&self.api_log, log_from) {
            println!(
                "backup-forward {what} invocations meanwhile: {}",
                summary(times, " ms")
            );
        }
        println!();
    }

    /// Part 2: commit-to-object lag.
    async fn lag(&self) {
        let (db, bucket, backup, _) = self.active_backup("lag", &self.proxy.endpoint).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = self.proxy.requests(&bucket).len();
        let log_from = log_len(&self.api_log);
        let store = kv_store().await;
        let paced = paced_commits(
            &self.s3,
            &store,
            &bucket,
            db,
            LAG_COMMITS,
            LAG_SPACING,
            None,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let during: Vec<Seen> = self.proxy.requests(&bucket).split_off(before);
        self.api.disable(&self.org.1, &backup).await;
        let Paced {
            lags,
            lists,
            list_time,
            objects,
        } = paced;
        println!(
            "-- {LAG_COMMITS} commits, one every {} ms; bucket listed every {} ms ({lists} listings, {:.1} ms each on average); {} log objects",
            LAG_SPACING.as_millis(),
            LIST_INTERVAL.as_millis(),
            list_time.as_secs_f64() * 1000.0 / lists.max(1) as f64,
            objects
        );
        println!(
            "commit acknowledged -> its log object listed: {}",
            summary(lags, " ms")
        );
        report_requests(&during, LAG_COMMITS);
        let engine = engine_lags(&self.api_log, log_from, &backup);
        if engine.is_empty() {
            println!("engine LagMs: no metric lines found (SUBKV_STACK_LOG_DIR/api.log)");
        } else {
            println!(
                "engine LagMs (commit time -> object written, per pass that forwarded commits): {}",
                summary(engine, " ms")
            );
        }
        println!();
    }

    /// Part 3: a backup of `keys` keys restored by `denokv pitr sync`.
    async fn restore(&self, keys: usize, denokv: &PathBuf) {
        let db = self.api.database(&self.org, "backup bench: restore").await;
        let store = kv_store().await;
        let last = fill(&store, db, "restore", keys).await;

        // What one snapshot step's page read costs on the emulator.
        let items: i32 = env(subkv_core::config::var::BACKUP_SNAPSHOT_ITEMS)
            .and_then(|v| v.parse().ok())
            .unwrap_or(subkv_backup::engine::EngineConfig::default().snapshot_items_per_chunk);
        let mut reads = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let (entries, _) = store
                .live_entries_page(db, None, items)
                .await
                .expect("page read");
            reads.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(!entries.is_empty());
        }
        println!(
            "one snapshot page read (DynamoKv::live_entries_page, {items} items) on the emulator: {}",
            summary(reads, " ms")
        );

        let bucket = fresh_bucket(&self.s3, "restore").await;
        let enabled = Instant::now();
        let backup = self
            .api
            .enable(&self.org.1, db, &self.emulator, &bucket)
            .await;
        let active = self
            .api
            .wait_active(
                &self.org.1,
                &backup,
                Some(&vs(last)),
                Duration::from_millis(250),
            )
            .await;
        let root = format!("{PREFIX}{db}/");
        let snapshots = list(&self.s3, &bucket, &format!("{root}snapshots/"), None).await;
        let logs = list(&self.s3, &bucket, &format!("{root}logs/"), None).await;
        let mut snapshot_bytes = 0i64;
        for k in &snapshots {
            let head = self
                .s3
                .head_object()
                .bucket(&bucket)
                .key(k)
                .send()
                .await
                .expect("head object");
            snapshot_bytes += head.content_length().unwrap_or(0);
        }
        // The stack passes its SUBKV_BACKUP_SNAPSHOT_ITEMS to the function and here.
        let chunk = match env(subkv_core::config::var::BACKUP_SNAPSHOT_ITEMS) {
            Some(v) => format!("{v} items, SUBKV_BACKUP_SNAPSHOT_ITEMS"),
            None => format!(
                "{} items, the default",
                subkv_backup::engine::EngineConfig::default().snapshot_items_per_chunk
            ),
        };
        println!(
            "snapshot: enable -> active {:.1} s ({:.0} ms per chunk); {} snapshot objects ({:.1} MiB), {} log objects (snapshot chunks of at most {chunk})",
            (active - enabled).as_secs_f64(),
            (active - enabled).as_secs_f64() * 1000.0 / snapshots.len().max(1) as f64,
            snapshots.len(),
            snapshot_bytes as f64 / (1 << 20) as f64,
            logs.len(),
        );

        if !denokv.is_file() {
            println!(
                "denokv pitr sync: SKIPPED ({} is not there: `make denokv`)",
                denokv.display()
            );
            self.api.disable(&self.org.1, &backup).await;
            return;
        }
        let dir = std::env::temp_dir().join(format!("subkv-backup-bench-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let sqlite = dir.join("restore.sqlite");
        let sync = || {
            let started = Instant::now();
            let output = Command::new(denokv)
                .arg("--sqlite-path")
                .arg(&sqlite)
                .args(["pitr", "sync", "--s3-bucket", &bucket, "--s3-prefix", &root])
                .args(["--s3-endpoint", &self.emulator])
                .env_clear()
                .env(
                    "PATH",
                    env("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
                )
                .env(
                    "AWS_ACCESS_KEY_ID",
                    env("AWS_ACCESS_KEY_ID").unwrap_or_else(|| "subkv-local".into()),
                )
                .env(
                    "AWS_SECRET_ACCESS_KEY",
                    env("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| "subkv-local".into()),
                )
                .env(
                    "AWS_REGION",
                    env("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
                )
                .stdin(Stdio::null())
                .output()
                .expect("denokv runs");
            let took = started.elapsed();
            assert!(
                output.status.success(),
                "denokv pitr sync failed: {}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            took
        };
        let first = sync();
        let again = sync();
        let db_bytes = std::fs::metadata(&sqlite).map_or(0, |m| m.len());
        let count = Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from kv').fetchone()[0])",
            ])
            .arg(&sqlite)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "?".into());
        println!(
            "denokv pitr sync (first, into an empty SQLite file): {:.2} s; again (nothing new): {:.2} s; restored keys: {count}; SQLite file {:.1} MiB",
            first.as_secs_f64(),
            again.as_secs_f64(),
            db_bytes as f64 / (1 << 20) as f64
        );
        let _ = std::fs::remove_dir_all(&dir);
        self.api.disable(&self.org.1, &backup).await;
        println!();
    }

    /// Part 4: a backup enabled on a database of `keys` keys while `writers`
    /// writers commit to it as fast as they can, from before the enable until
    /// [`BUSY_AFTER_ACTIVE`] after it is `active`.
    async fn busy(&self, keys: usize, writers: usize) {
        // `cargo lambda watch` starts a function's instances (a `cargo run` each,
        // seconds of CPU on this machine) at its first invocation: a backup of an
        // empty database enabled, polled and deleted first, so that none of that
        // lands in the timed part.
        let (_, _, warm, _) = self.active_backup("busy-warm", &self.emulator).await;
        self.api.disable(&self.org.1, &warm).await;
        let db = self.api.database(&self.org, "backup bench: busy").await;
        fill(&kv_store().await, db, "busy", keys).await;
        let bucket = fresh_bucket(&self.s3, "busy").await;
        let log_from = log_len(&self.api_log);

        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(tokio::sync::watch::channel(Written::default()).0);
        let writing = Instant::now();
        let mut tasks = busy_writers(db, writers, &stop, &progress);
        progress
            .subscribe()
            .wait_for(|p| p.commits >= BUSY_WARM_UP)
            .await
            .expect("the writers run");
        let at_enable = *progress.borrow();
        let enabled = Instant::now();
        let backup = self
            .api
            .enable(&self.org.1, db, &self.emulator, &bucket)
            .await;
        // The most snapshot chunks the status showed, and when it first showed them.
        let mut chunks: Option<(u64, Instant)> = None;
        let (active, status) = loop {
            let status = self.api.status(&self.org.1, &backup).await;
            let code = status["code"].as_str().unwrap_or_default();
            assert_ne!(code, "failed", "backup {backup} failed: {status}");
            if code == "active" {
                break (Instant::now(), status);
            }
            if let Some(c) = status["snapshotChunks"].as_u64() {
                if chunks.is_none_or(|(seen, _)| c > seen) {
                    chunks = Some((c, Instant::now()));
                }
            }
            assert!(
                enabled.elapsed() < DEADLINE,
                "backup {backup} of a busy database not active after {DEADLINE:?}: {status}"
            );
            tokio::time::sleep(BUSY_POLL).await;
        };
        let at_active = *progress.borrow();
        // The writers go on for a while after the backup is active.
        tokio::time::sleep(BUSY_AFTER_ACTIVE).await;
        stop.store(true, Ordering::Relaxed);
        let mut tally = Tally::default();
        let mut per_writer = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let done = done.expect("writer");
            per_writer.push(done.commits);
            tally.commits += done.commits;
            tally.retries += done.retries;
            tally.newest = tally.newest.max(done.newest);
            tally.latencies.extend(done.latencies);
        }
        let stopped = Instant::now();
        let caught_up = self
            .api
            .wait_active(
                &self.org.1,
                &backup,
                Some(&vs(tally.newest)),
                Duration::from_millis(100),
            )
            .await;
        let root = format!("{PREFIX}{db}/");
        let snapshots = list(&self.s3, &bucket, &format!("{root}snapshots/"), None).await;
        let logs: Vec<(u64, u64, u64)> = list(&self.s3, &bucket, &format!("{root}logs/"), None)
            .await
            .iter()
            .filter_map(|k| log_name(k))
            .collect();
        self.api.disable(&self.org.1, &backup).await;

        let secs = |d: Duration| d.as_secs_f64();
        let rate = |commits: u64, d: Duration| commits as f64 / d.as_secs_f64();
        let to_active = active - enabled;
        let backed_up = status["lastVersionstamp"]
            .as_str()
            .and_then(version_of)
            .unwrap_or(0);
        println!(
            "-- {writers} writers (each its own DynamoKv, one 100-byte set of a new key per commit, as fast as they can, Unavailable sent again); backup enabled after their first {} commits",
            at_enable.commits
        );
        println!(
            "enable -> active: {:.1} s (status polled every {} ms); snapshot chunks: {} objects in snapshots/ (status showed snapshotChunks up to {}, reached {:.1} s after enable); at active, lastVersionstamp was {} commits behind the writers' newest",
            secs(to_active),
            BUSY_POLL.as_millis(),
            snapshots.len(),
            chunks.map_or_else(|| "-".into(), |(c, _)| c.to_string()),
            chunks.map_or(f64::NAN, |(_, at)| secs(at - enabled)),
            at_active.newest.saturating_sub(backed_up)
        );
        println!(
            "writers: {:.1} commits/s while pending ({} commits in {:.1} s), {:.1} commits/s after active ({} in {:.1} s), {:.1} commits/s over the whole {:.1} s ({} commits, {} Unavailable answers sent again)",
            rate(at_active.commits - at_enable.commits, to_active),
            at_active.commits - at_enable.commits,
            secs(to_active),
            rate(tally.commits - at_active.commits, stopped - active),
            tally.commits - at_active.commits,
            secs(stopped - active),
            rate(tally.commits, stopped - writing),
            secs(stopped - writing),
            tally.commits,
            tally.retries
        );
        per_writer.sort_unstable();
        println!(
            "commits per writer: {per_writer:?}; commit latency (first attempt -> acknowledged): {}",
            summary(tally.latencies, " ms")
        );
        println!(
            "writers stopped -> lastVersionstamp at their last commit: {:.2} s (status polled every 100 ms); {} log objects in all, commits per object: {}",
            secs(caught_up - stopped),
            logs.len(),
            summary(
                logs.iter().map(|(_, f, l)| (l - f + 1) as f64).collect(),
                ""
            )
        );
        for (what, times) in invocations(&self.api_log, log_from) {
            println!(
                "backup-forward {what} invocations meanwhile: {}",
                summary(times, " ms")
            );
        }
        println!();
    }
}

/// A PutObject to the emulator first: the first S3 request moto serves is slow.
async fn warm_up(s3: &aws_sdk_s3::Client) {
    let bucket = fresh_bucket(s3, "warm").await;
    s3.put_object()
        .bucket(&bucket)
        .key("warm")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .expect("warm-up put");
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("backup_stack: skipped (not run by `cargo bench`)");
        return;
    }
    let (Some(emulator), Some(api), Some(admin)) = (
        env("AWS_ENDPOINT_URL"),
        env("SUBKV_API_URL"),
        env("SUBKV_ADMIN_TOKEN"),
    ) else {
        println!(
            "backup_stack: SKIPPED, no local stack (AWS_ENDPOINT_URL, SUBKV_API_URL, \
             SUBKV_ADMIN_TOKEN): run `make bench-backup`"
        );
        return;
    };
    let keys: usize = env("SUBKV_BACKUP_BENCH_KEYS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RESTORE_KEYS);
    let busy_keys: usize = env("SUBKV_BACKUP_BENCH_BUSY_KEYS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BUSY_KEYS);
    let busy_writers: usize = env("SUBKV_BACKUP_BENCH_BUSY_WRITERS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_BUSY_WRITERS)
        .max(1);
    let parts =
        env("SUBKV_BACKUP_BENCH_PARTS").unwrap_or_else(|| "requests,lag,restore,busy".into());
    let denokv = env("DENOKV").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/denokv/bin/denokv")
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let api = Api::new(api, admin);
        let org = api.org("backup-bench").await;
        let s3 = s3(&emulator).await;
        warm_up(&s3).await;
        let upstream = emulator.trim_start_matches("http://").to_string();
        let bench = Bench {
            api,
            org,
            s3,
            proxy: Proxy::start(upstream).await,
            emulator,
            api_log: env("SUBKV_STACK_LOG_DIR").map(|d| PathBuf::from(d).join("api.log")),
        };
        if parts.contains("requests") {
            println!("== backup_stack: S3 requests per {COMMITS} commits (counting proxy in front of moto's S3)");
            bench.requests_per_commits(1).await;
            bench.requests_per_commits(CONCURRENT_WRITERS).await;
        }
        if parts.contains("lag") {
            println!("== backup_stack: commit-to-object lag");
            bench.lag().await;
        }
        if parts.contains("restore") {
            println!("== backup_stack: denokv pitr sync of a backup of {keys} keys");
            bench.restore(keys, &denokv).await;
        }
        if parts.contains("busy") {
            println!("== backup_stack: a busy database becomes active ({busy_keys} keys, {busy_writers} concurrent writers)");
            bench.busy(busy_keys, busy_writers).await;
        }
    });
}
