//! The KV data plane against the DynamoDB emulator: DynamoDB round trips and
//! handler CPU per operation.
//!
//! Every operation is a KV Connect request (protobuf body, data-path token,
//! `x-denokv-*` headers) handled by `subkv_connect::protocol::handle`, the code a
//! data-plane function runs per request: token check, protobuf decode, the
//! `DynamoKv` engine with its real DynamoDB client, protobuf encode, the JSON log
//! line (formatted, written to `io::sink`). Only the `lambda_http` runtime around
//! it (the Runtime API long poll, event JSON) is not included.
//!
//! 1. **Round trips.** The DynamoDB client carries an SDK interceptor that counts
//!    every request attempt it transmits (`read_before_transmit`), by operation name
//!    (the `Metadata` entry of the config bag). Each operation runs in steady state
//!    (after warm-up requests: the instance's head cache is warm, connections are
//!    open), and the count of **every** timed request must equal the expected one:
//!    a regression (or an improvement: then update the expectation and the docs)
//!    makes this benchmark exit non-zero.
//! 2. **CPU.** Process CPU time (`getrusage(RUSAGE_SELF)`, user + system, every
//!    thread) over the timed requests of each operation, divided by their number:
//!    subkv's handler plus the SDK client (request signing, JSON, HTTP, the tokio
//!    runtime). The emulator runs in another process, so its time is not included;
//!    wall time per request (which is mostly the emulator) is printed beside it. A
//!    last row, one bare SDK `GetItem` per request, is the floor any DynamoDB round
//!    trip costs this process.
//!
//! Needs the local stack's emulator and tables: run it with `make bench-kv`, or
//! `infra/local/stack.sh run -- cargo bench -p subkv-connect --bench kv_round_trips`
//! (the stack sets `AWS_ENDPOINT_URL`, the credentials and `SUBKV_KV_DATA_TABLE` /
//! `SUBKV_KV_LOG_TABLE`). Each run uses a fresh random database id.
//! `SUBKV_KV_BENCH_OPS` sets the timed requests per operation (default 200).
//! Under `cargo test --benches` (no `--bench` argument), or without
//! `AWS_ENDPOINT_URL` (no emulator, e.g. a plain `cargo bench`), it prints that it
//! skipped and does nothing; `make bench-kv` always runs it inside a stack.

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use denokv_proto::datapath as pb;
use denokv_proto::{encode_key, Key, KeyPart};
use lambda_http::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use lambda_http::{Body, Request, RequestExt, Response};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subkv_connect::protocol::{handle, Op};
use subkv_connect::state::{ConnectState, WatchConfig};
use subkv_core::control::MemoryControl;
use subkv_core::routes::{Route, KV_ATOMIC_WRITE, KV_SNAPSHOT_READ};
use subkv_dynamo_kv::{DynamoKv, DEFAULT_DATA_TABLE, DEFAULT_LOG_TABLE};
use subkv_kv::token::TokenSigner;
use uuid::Uuid;

const DEFAULT_OPS: usize = 200;
const WARMUP_OPS: usize = 20;
const HOST_NAME: &str = "abcdef1234.execute-api.us-east-1.amazonaws.com";
/// Values of the benchmark's entries (Deno would send V8-serialized bytes).
const VALUE_BYTES: usize = 100;
const LIST_ENTRIES: usize = 150;
const LIST_PAGE: i32 = 100;
const MANY_KEYS: usize = 10;
/// Of the second listed prefix's LIST_ENTRIES keys, the first ones are deleted.
const DELETED_ENTRIES: usize = 100;

/// Counts the HTTP requests the DynamoDB client sends, per operation name.
#[derive(Debug, Default)]
struct RoundTrips {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl RoundTrips {
    fn take(&self) -> BTreeMap<String, u64> {
        std::mem::take(&mut *self.counts.lock().unwrap())
    }
}

#[derive(Debug, Clone)]
struct Counter(Arc<RoundTrips>);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "RoundTripCounter"
    }

    /// Called once per attempt, right before it goes on the wire (so a retry
    /// counts as a round trip of its own).
    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let operation = cfg
            .load::<Metadata>()
            .map_or_else(|| "unknown".to_string(), |m| m.name().to_string());
        *self.0.counts.lock().unwrap().entry(operation).or_default() += 1;
        Ok(())
    }
}

/// CPU time of the whole process (every thread) so far: (user, system).
fn process_cpu() -> (Duration, Duration) {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) failed");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (time(usage.ru_utime), time(usage.ru_stime))
}

fn key(parts: &[&str]) -> Vec<u8> {
    let key = Key(parts
        .iter()
        .map(|p| KeyPart::String(p.to_string()))
        .collect());
    encode_key(&key).expect("encodable key")
}

fn indexed(prefix: &str, i: usize) -> Vec<u8> {
    key(&["bench", prefix, &format!("{i:06}")])
}

fn value(i: usize) -> pb::KvValue {
    let mut data = format!("value {i} ").into_bytes();
    data.resize(VALUE_BYTES, b'.');
    pb::KvValue {
        data,
        encoding: pb::ValueEncoding::VeBytes as i32,
    }
}

fn set(key: Vec<u8>, i: usize) -> pb::Mutation {
    pb::Mutation {
        key,
        value: Some(value(i)),
        mutation_type: pb::MutationType::MSet as i32,
        ..Default::default()
    }
}

fn point(key: Vec<u8>) -> pb::ReadRange {
    let mut end = key.clone();
    end.push(0);
    pb::ReadRange {
        start: key,
        end,
        limit: 1,
        reverse: false,
    }
}

/// One data-plane instance: what a warm function holds.
struct Instance {
    app: ConnectState,
    /// The same client the store has (for the baseline).
    client: aws_sdk_dynamodb::Client,
    data_table: String,
}

impl Instance {
    async fn new(counter: &Counter) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let config = aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            // As deployed: every call asks for its consumed capacity (usage).
            .interceptor(subkv_connect::usage::CapacityMeter)
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let table = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let data_table = table("SUBKV_KV_DATA_TABLE", DEFAULT_DATA_TABLE);
        Self {
            client: client.clone(),
            data_table: data_table.clone(),
            app: ConnectState {
                kv: DynamoKv::new(
                    client,
                    data_table,
                    table("SUBKV_KV_LOG_TABLE", DEFAULT_LOG_TABLE),
                    7 * 24 * 3600,
                ),
                signer: TokenSigner::new([7; 32], 3600),
                control: Arc::new(MemoryControl::new()),
                live_tokens: subkv_connect::state::LiveTokens::new(Duration::from_secs(50)),
                meter: Arc::new(subkv_connect::usage::Meter::new(Duration::from_secs(60))),
                quotas: subkv_connect::quota::Quotas::new(Duration::from_secs(60)),
                usage: Arc::new(subkv_core::usage::MemoryUsage::default()),
                storage: Arc::new(subkv_core::storage::MemoryStorage::default()),
                watch: WatchConfig {
                    max_seconds: 600,
                    poll_ms: 250,
                    keepalive_seconds: 5,
                    caps: subkv_dynamo_kv::WatchCaps {
                        per_database: 50,
                        per_deployment: 500,
                    },
                },
            },
        }
    }

    /// A KV Connect (version 3) data-path request, as `lambda_http` builds it.
    fn request(&self, database: Uuid, route: &Route, body: Vec<u8>) -> Request {
        // No organization token behind it: the round trips counted are the
        // operation's own (an instance checks a live token once per 50 s).
        let grant = subkv_kv::token::Grant {
            database,
            read_only: false,
            holder: None,
        };
        let (token, _) = self
            .app
            .signer
            .issue(&grant, chrono::Utc::now().timestamp(), None);
        let path = route.path.replace("{databaseId}", &database.to_string());
        lambda_http::http::Request::builder()
            .method("POST")
            .uri(format!("https://{HOST_NAME}{path}"))
            .header(HOST, HOST_NAME)
            .header("x-forwarded-proto", "https")
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header("x-denokv-version", "3")
            .header("x-denokv-database-id", database.to_string())
            .body(Body::Binary(body))
            .expect("valid request")
            .with_path_parameters(HashMap::from([(
                "databaseId".to_string(),
                database.to_string(),
            )]))
    }

    async fn write(&self, database: Uuid, write: &pb::AtomicWrite) -> pb::AtomicWriteOutput {
        let request = self.request(database, &KV_ATOMIC_WRITE, write.encode_to_vec());
        let response = handle(&self.app, &KV_ATOMIC_WRITE, Op::AtomicWrite, request).await;
        let out: pb::AtomicWriteOutput = decode(response, "atomic_write");
        assert_eq!(
            out.status,
            pb::AtomicWriteStatus::AwSuccess as i32,
            "atomic_write did not commit: {out:?}"
        );
        out
    }

    async fn read(&self, database: Uuid, read: &pb::SnapshotRead) -> pb::SnapshotReadOutput {
        let request = self.request(database, &KV_SNAPSHOT_READ, read.encode_to_vec());
        let response = handle(&self.app, &KV_SNAPSHOT_READ, Op::SnapshotRead, request).await;
        decode(response, "snapshot_read")
    }
}

fn decode<M: Message + Default>(response: Response<Body>, what: &str) -> M {
    let status = response.status();
    let body = response.into_body();
    assert_eq!(status, 200, "{what} answered {status}: {body:?}");
    M::decode(body.as_ref()).expect("protobuf response")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Set,
    Get,
    GetMany,
    List,
    ListAfterDeletes,
    Sum,
    CheckedSet,
    SetTwoInstances,
    RawGetItem,
}

impl Operation {
    const ALL: [Operation; 9] = [
        Operation::Set,
        Operation::Get,
        Operation::GetMany,
        Operation::List,
        Operation::ListAfterDeletes,
        Operation::Sum,
        Operation::CheckedSet,
        Operation::SetTwoInstances,
        Operation::RawGetItem,
    ];

    fn label(self) -> &'static str {
        match self {
            Operation::Set => "`set` (one key, single writer)",
            Operation::Get => "`get` (one point key)",
            Operation::GetMany => "`getMany` (10 point keys)",
            Operation::List => "`list` (one page of 100 entries)",
            Operation::ListAfterDeletes => "`list` (limit 100) of 150 keys, 100 of them deleted",
            Operation::Sum => "atomic `sum` (one `Deno.KvU64` key)",
            Operation::CheckedSet => "checked set (`check` + `set`, same key)",
            Operation::SetTwoInstances => "`set`, two instances taking turns",
            Operation::RawGetItem => "baseline: one bare SDK `GetItem`, no subkv code",
        }
    }

    /// The DynamoDB requests each operation may cost, in steady state: one of
    /// these (a read starts from the head this instance saw within 250 ms, else
    /// it reads the head first).
    fn expected(self) -> Vec<BTreeMap<String, u64>> {
        let of = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
            pairs
                .iter()
                .map(|(name, n)| (name.to_string(), *n))
                .collect()
        };
        // A read: the items, then the change log after its head (decision 31);
        // the head first unless the instance's is fresh.
        let read = |items: &[(&str, u64)]| {
            let mut fresh = of(items);
            *fresh.entry("Query".into()).or_default() += 1;
            let mut stale = fresh.clone();
            stale.insert("GetItem".into(), 1);
            vec![fresh, stale]
        };
        match self {
            // The cached head: no read, one transaction.
            Operation::Set | Operation::CheckedSet => vec![of(&[("TransactWriteItems", 1)])],
            // The keys in one BatchGetItem.
            Operation::Get | Operation::GetMany => read(&[("BatchGetItem", 1)]),
            // The range: one Query page.
            Operation::List => read(&[("Query", 1)]),
            // Deleted keys leave no item: the 50 live keys come in the first
            // page (it was 2 pages over 100 tombstones).
            Operation::ListAfterDeletes => read(&[("Query", 1)]),
            // The operand (BatchGetItem) after the cached head, then the commit.
            Operation::Sum => vec![of(&[("BatchGetItem", 1), ("TransactWriteItems", 1)])],
            // The other instance moved the head: the commit fails on the head's
            // condition, whose cancellation reason carries the current head
            // (ALL_OLD), and the commit is sent again on it: no head read.
            Operation::SetTwoInstances => vec![of(&[("TransactWriteItems", 2)])],
            Operation::RawGetItem => vec![of(&[("GetItem", 1)])],
        }
    }
}

struct Bench {
    counter: Counter,
    a: Instance,
    b: Instance,
    database: Uuid,
    /// Versionstamp of the checked key's last write.
    checked_vs: Vec<u8>,
}

impl Bench {
    /// Runs the `i`th request of `op`.
    async fn run(&mut self, op: Operation, i: usize) {
        let db = self.database;
        match op {
            Operation::Set => {
                let write = pb::AtomicWrite {
                    mutations: vec![set(indexed("set", i % 100), i)],
                    ..Default::default()
                };
                self.a.write(db, &write).await;
            }
            Operation::Get => {
                let read = pb::SnapshotRead {
                    ranges: vec![point(indexed("many", i % MANY_KEYS))],
                };
                let out = self.a.read(db, &read).await;
                assert_eq!(out.ranges[0].values.len(), 1, "get found nothing");
            }
            Operation::GetMany => {
                let read = pb::SnapshotRead {
                    ranges: (0..MANY_KEYS).map(|k| point(indexed("many", k))).collect(),
                };
                let out = self.a.read(db, &read).await;
                assert!(
                    out.ranges.iter().all(|r| r.values.len() == 1),
                    "getMany missed a key"
                );
            }
            Operation::List | Operation::ListAfterDeletes => {
                let (name, live) = match op {
                    Operation::List => ("list", LIST_PAGE as usize),
                    _ => ("gone", LIST_ENTRIES - DELETED_ENTRIES),
                };
                let prefix = key(&["bench", name]);
                let read = pb::SnapshotRead {
                    ranges: vec![pb::ReadRange {
                        start: [prefix.clone(), vec![0x00]].concat(),
                        end: [prefix, vec![0xff]].concat(),
                        limit: LIST_PAGE,
                        reverse: false,
                    }],
                };
                let out = self.a.read(db, &read).await;
                assert_eq!(out.ranges[0].values.len(), live);
            }
            Operation::Sum => {
                let write = pb::AtomicWrite {
                    mutations: vec![pb::Mutation {
                        key: key(&["bench", "counter"]),
                        value: Some(pb::KvValue {
                            data: 1u64.to_le_bytes().to_vec(),
                            encoding: pb::ValueEncoding::VeLe64 as i32,
                        }),
                        mutation_type: pb::MutationType::MSum as i32,
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                self.a.write(db, &write).await;
            }
            Operation::CheckedSet => {
                let k = key(&["bench", "checked"]);
                let write = pb::AtomicWrite {
                    checks: vec![pb::Check {
                        key: k.clone(),
                        versionstamp: self.checked_vs.clone(),
                    }],
                    mutations: vec![set(k, i)],
                    ..Default::default()
                };
                self.checked_vs = self.a.write(db, &write).await.versionstamp;
            }
            Operation::SetTwoInstances => {
                let write = pb::AtomicWrite {
                    mutations: vec![set(indexed("turns", i % 100), i)],
                    ..Default::default()
                };
                let instance = if i % 2 == 0 { &self.a } else { &self.b };
                instance.write(db, &write).await;
            }
            Operation::RawGetItem => {
                let out = self
                    .a
                    .client
                    .get_item()
                    .table_name(&self.a.data_table)
                    .key("pk", AttributeValue::S(db.to_string()))
                    .key("sk", AttributeValue::B(Blob::new(indexed("many", 0))))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("GetItem");
                assert!(out.item.is_some(), "GetItem found nothing");
            }
        }
    }

    /// The entries the reads read, and the checked key's first version.
    async fn seed(&mut self) {
        let db = self.database;
        let mut mutations: Vec<pb::Mutation> =
            (0..MANY_KEYS).map(|k| set(indexed("many", k), k)).collect();
        mutations.extend((0..LIST_ENTRIES).map(|k| set(indexed("list", k), k)));
        mutations.extend((0..LIST_ENTRIES).map(|k| set(indexed("gone", k), k)));
        mutations.extend((0..DELETED_ENTRIES).map(|k| pb::Mutation {
            key: indexed("gone", k),
            mutation_type: pb::MutationType::MDelete as i32,
            ..Default::default()
        }));
        for chunk in mutations.chunks(10) {
            let write = pb::AtomicWrite {
                mutations: chunk.to_vec(),
                ..Default::default()
            };
            self.a.write(db, &write).await;
        }
        let write = pb::AtomicWrite {
            mutations: vec![set(key(&["bench", "checked"]), 0)],
            ..Default::default()
        };
        self.checked_vs = self.a.write(db, &write).await.versionstamp;
    }
}

struct Row {
    op: Operation,
    /// Per request: operation name -> requests.
    counts: BTreeMap<String, (u64, u64)>,
    total: (u64, u64),
    cpu_us: f64,
    user_us: f64,
    sys_us: f64,
    wall_p50_ms: f64,
    wall_mean_ms: f64,
}

fn fmt_counts(counts: &BTreeMap<String, (u64, u64)>) -> String {
    counts
        .iter()
        .map(|(name, (lo, hi))| {
            if lo == hi {
                format!("{name} ×{lo}")
            } else {
                format!("{name} ×{lo}–{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_range((lo, hi): (u64, u64)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    }
}

async fn measure(bench: &mut Bench, op: Operation, ops: usize) -> (Row, Vec<String>) {
    for i in 0..WARMUP_OPS {
        bench.run(op, i).await;
    }
    bench.counter.0.take();
    let expected = op.expected();
    let mut failures = Vec::new();
    let mut counts: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut total = (u64::MAX, 0);
    let mut walls = Vec::with_capacity(ops);
    let cpu_start = process_cpu();
    for i in WARMUP_OPS..WARMUP_OPS + ops {
        let started = Instant::now();
        bench.run(op, i).await;
        walls.push(started.elapsed());
        let seen = bench.counter.0.take();
        if !expected.contains(&seen) {
            failures.push(format!(
                "{}: request {} cost {seen:?}, expected {expected:?}",
                op.label(),
                i - WARMUP_OPS
            ));
        }
        for name in expected.iter().flat_map(|e| e.keys()).chain(seen.keys()) {
            let n = seen.get(name).copied().unwrap_or(0);
            let entry = counts.entry(name.clone()).or_insert((u64::MAX, 0));
            entry.0 = entry.0.min(n);
            entry.1 = entry.1.max(n);
        }
        let sum: u64 = seen.values().sum();
        total = (total.0.min(sum), total.1.max(sum));
    }
    let cpu_end = process_cpu();
    let (user, sys) = (cpu_end.0 - cpu_start.0, cpu_end.1 - cpu_start.1);
    walls.sort();
    let wall_mean = walls.iter().sum::<Duration>() / ops as u32;
    let row = Row {
        op,
        counts,
        total,
        cpu_us: (user + sys).as_secs_f64() * 1e6 / ops as f64,
        user_us: user.as_secs_f64() * 1e6 / ops as f64,
        sys_us: sys.as_secs_f64() * 1e6 / ops as f64,
        wall_p50_ms: walls[ops / 2].as_secs_f64() * 1e3,
        wall_mean_ms: wall_mean.as_secs_f64() * 1e3,
    };
    (row, failures)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("kv_round_trips: skipped (not run by `cargo bench`)");
        return;
    }
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        println!(
            "kv_round_trips: SKIPPED, no emulator (AWS_ENDPOINT_URL is not set): run `make \
             bench-kv`, or `infra/local/stack.sh run -- cargo bench -p subkv-connect --bench \
             kv_round_trips`"
        );
        return;
    }
    let ops: usize = std::env::var("SUBKV_KV_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_OPS);
    subkv_core::runtime::init_with(Some("info"), std::io::sink);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let failures = runtime.block_on(async {
        let counter = Counter(Arc::new(RoundTrips::default()));
        let mut bench = Bench {
            a: Instance::new(&counter).await,
            b: Instance::new(&counter).await,
            counter,
            database: Uuid::new_v4(),
            checked_vs: Vec::new(),
        };
        bench.seed().await;
        println!(
            "database {}; {ops} timed requests per operation after {WARMUP_OPS} warm-up requests\n",
            bench.database
        );
        println!("| operation | DynamoDB requests per op | total | expected | CPU per op (user + sys) | wall p50 | wall mean |");
        println!("|---|---|---|---|---|---|---|");
        let mut failures = Vec::new();
        for op in Operation::ALL {
            let (row, mut failed) = measure(&mut bench, op, ops).await;
            let totals: Vec<u64> = row.op.expected().iter().map(|e| e.values().sum()).collect();
            let expected = (
                totals.iter().copied().min().unwrap_or(0),
                totals.iter().copied().max().unwrap_or(0),
            );
            println!(
                "| {} | {} | {} | {} | {:.0} µs ({:.0} + {:.0}) | {:.2} ms | {:.2} ms |",
                row.op.label(),
                fmt_counts(&row.counts),
                fmt_range(row.total),
                fmt_range(expected),
                row.cpu_us,
                row.user_us,
                row.sys_us,
                row.wall_p50_ms,
                row.wall_mean_ms
            );
            failed.truncate(5);
            failures.extend(failed);
        }
        failures
    });
    if !failures.is_empty() {
        eprintln!("\nround-trip counts differ from the expected ones:");
        for failure in &failures {
            eprintln!("  {failure}");
        }
        std::process::exit(1);
    }
    println!("\nevery request cost exactly the expected DynamoDB round trips");
}
