//! The backup engine's own work on one batch, without the network (issue 4):
//! change-log commits turned into a `logs/` object and put to a bucket.
//!
//! 1. **Records per second** (criterion, throughput in elements = records):
//!    - `encode`: `subkv_backup::format::log_object` on a batch of commits (the
//!      checks, the object name, the protobuf `BackupMutationRange`), as
//!      `Engine::forward` calls it;
//!    - `encode+put`: the same, then `subkv_backup::bucket::Bucket::put` of the object
//!      (the real S3 client: SigV4 signing with the payload's SHA-256, HTTP/1.1)
//!      to an in-process server on 127.0.0.1 that reads and discards the body and
//!      answers 200. No network, no store: the engine's CPU per object.
//!
//!    The commits are cloned outside the timed part (`iter_batched`): in the
//!    engine they come from the change-log query, which is not measured here.
//! 2. **Peak memory per batch.** A counting global allocator tracks the bytes
//!    live in this process and their high-water mark. Around one batch (build the
//!    `Vec<Commit>` from nothing, `log_object`, `put`) it reports the peak above
//!    the live bytes before, and the body's size. Allocations of the discarding
//!    server's thread are not counted (it stands for the store). Beside it, the
//!    kernel's view: `VmHWM` (peak RSS, reset through `/proc/self/clear_refs`
//!    before the batch) minus `VmRSS` before it.
//!
//! Batches (keys of 100 bytes, like a few-part Deno KV key; 12-byte entry
//! versionstamps as the planner writes them):
//! - `1000 records (500 commits x 2, 200 B values)`: the realistic batch;
//! - `1000 records (1000 commits x 1, 200 B values)`: the most commits an object
//!   holds (`EngineConfig::max_commits_per_object`);
//! - `1000 records (500 commits x 2, 8 KiB values)` and
//!   `1000 records (84 commits x 12, 64 KiB values)`: large values (64 KiB is
//!   Deno KV's limit; 12 of them are about the 800 KiB a commit may carry).
//!
//! `cargo bench -p subkv-backup --bench backup_pure` (criterion options after
//! `--`, e.g. `-- encode`); `make bench` runs it. docs/performance.md, "Backup
//! engine", has the figures. Under `cargo test --benches` each criterion bench
//! runs once and the memory table is printed as usual.

use criterion::{BatchSize, Criterion, Throughput};
use denokv_proto::backup::{BackupKvMutationKind, BackupReplicationLogEntry};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use subkv_backup::bucket::{Bucket, Connector, Target};
use subkv_backup::format::{log_object, versionstamp12, Commit, COMMIT_END};
use subkv_core::secrets::SecretString;
use uuid::Uuid;

// ---------------------------------------------------------------------------------
// The counting allocator.

/// Bytes currently allocated (outside ignored threads) and their high-water mark.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Set on the discarding server's thread: its allocations are the store's.
    static IGNORED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    !IGNORED.try_with(Cell::get).unwrap_or(false)
}

fn grow(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

fn shrink(bytes: usize) {
    // Saturating: memory freed here that an ignored thread allocated.
    let _ = LIVE.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
        Some(l.saturating_sub(bytes))
    });
}

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; the counters
// are only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() && counted() {
            grow(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() && counted() {
            grow(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        if counted() {
            shrink(layout.size());
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() && counted() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`), if readable.
fn proc_status_bytes(field: &str) -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets `VmHWM` to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------
// The batches.

const DB: Uuid = Uuid::from_u128(0x6a1c_7d2e_4b5f_4c60_8d71_9e82_a3b4_c5d6);
const PREFIX: &str = "backups/";
/// The version of the batch's first commit (a database well into its life).
const FIRST_VERSION: u64 = 1_234_567;
const KEY_BYTES: usize = 100;

#[derive(Clone, Copy)]
struct Shape {
    name: &'static str,
    commits: usize,
    per_commit: usize,
    value_bytes: usize,
}

impl Shape {
    fn records(&self) -> usize {
        self.commits * self.per_commit
    }
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "1000 records (500 commits x 2, 200 B values)",
        commits: 500,
        per_commit: 2,
        value_bytes: 200,
    },
    Shape {
        name: "1000 records (1000 commits x 1, 200 B values)",
        commits: 1000,
        per_commit: 1,
        value_bytes: 200,
    },
    Shape {
        name: "1000 records (500 commits x 2, 8 KiB values)",
        commits: 500,
        per_commit: 2,
        value_bytes: 8 * 1024,
    },
    // 1008 records: 12 of Deno KV's largest values fill a commit (800 KiB).
    Shape {
        name: "1008 records (84 commits x 12, 64 KiB values)",
        commits: 84,
        per_commit: 12,
        value_bytes: 64 * 1024,
    },
];

/// A key in denokv's encoding: a string part then bytes, `KEY_BYTES` long.
fn key(commit: usize, i: usize) -> Vec<u8> {
    let mut k = vec![0x02];
    k.extend_from_slice(format!("users/{commit:08}/{i:02}").as_bytes());
    k.push(0x00);
    k.push(0x01);
    k.resize(KEY_BYTES - 1, b'k');
    k.push(0x00);
    k
}

/// The commits of one batch, as `DynamoKv::change_log` returns them: consecutive
/// versions, entries indexed 0, 1, ... with the last one `0xffff`.
fn batch(shape: Shape) -> Vec<Commit> {
    (0..shape.commits)
        .map(|c| {
            let version = FIRST_VERSION + c as u64;
            let entries = (0..shape.per_commit)
                .map(|i| {
                    let index = if i + 1 == shape.per_commit {
                        COMMIT_END
                    } else {
                        i as u16
                    };
                    let mut value = vec![0xff, 0x0f, 0x22];
                    value.resize(shape.value_bytes, (c + i) as u8);
                    BackupReplicationLogEntry {
                        versionstamp: versionstamp12(version, index).to_vec(),
                        kind: BackupKvMutationKind::MkSet as i32,
                        key: key(c, i),
                        value,
                        value_encoding: 1,
                        expire_at_ms: 0,
                    }
                })
                .collect();
            Commit {
                version,
                timestamp_ms: 1_764_000_000_000 + c as u64,
                entries,
            }
        })
        .collect()
}

fn encode(commits: Vec<Commit>) -> subkv_backup::format::Object {
    log_object(PREFIX, DB, commits)
        .expect("a valid batch")
        .expect("a batch with entries")
}

// ---------------------------------------------------------------------------------
// The discarding store.

/// Answers every request 200 after reading (and dropping) its body. Runs on a
/// thread of its own, whose allocations the counting allocator ignores.
fn discarding_server() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        IGNORED.with(|i| i.set(true));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("address"))
                .expect("send address");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service_fn(|request: Request<Incoming>| async move {
                    let mut body = request.into_body();
                    while let Some(frame) = body.frame().await {
                        if frame.is_err() {
                            break;
                        }
                    }
                    let mut response = Response::new(Empty::<Bytes>::new());
                    response
                        .headers_mut()
                        .insert("etag", "\"0\"".parse().expect("header"));
                    Ok::<_, Infallible>(response)
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
    });
    rx.recv().expect("server address")
}

fn bucket(addr: SocketAddr) -> Bucket {
    let target = Target {
        endpoint: format!("http://{addr}"),
        bucket: "bench-bucket".into(),
        region: "us-east-1".into(),
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: SecretString::new("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    };
    // `true`: a loopback endpoint over http is allowed (development setting).
    Bucket::new(&Connector::new(true), &target).expect("bucket")
}

// ---------------------------------------------------------------------------------
// Peak memory.

struct Memory {
    body: usize,
    payload: usize,
    peak_heap: usize,
    /// The put's own high-water mark above the bytes live when it started (the
    /// body among them).
    put_extra: usize,
    peak_rss: Option<usize>,
}

/// One batch from nothing to a stored object, measured.
fn measure(runtime: &tokio::runtime::Runtime, bucket: &Bucket, shape: Shape) -> Memory {
    let rss_before = proc_status_bytes("VmRSS");
    let hwm_reset = reset_peak_rss();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let commits = batch(shape);
    let payload: usize = commits
        .iter()
        .flat_map(|c| &c.entries)
        .map(|e| e.key.len() + e.value.len() + e.versionstamp.len())
        .sum();
    let object = encode(commits);
    let body = object.body.len();
    let peak_encode = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    // The put on its own: what the S3 client holds beyond the body.
    let before_put = LIVE.load(Ordering::Relaxed);
    PEAK.store(before_put, Ordering::Relaxed);
    runtime
        .block_on(bucket.put(&object.key, object.body))
        .expect("put");
    let put_extra = PEAK.load(Ordering::Relaxed).saturating_sub(before_put);
    let peak_heap = peak_encode.max(before_put - before + put_extra);
    let peak_rss = match (hwm_reset, rss_before, proc_status_bytes("VmHWM")) {
        (true, Some(before), Some(hwm)) => Some(hwm.saturating_sub(before)),
        _ => None,
    };
    Memory {
        body,
        payload,
        peak_heap,
        put_extra,
        peak_rss,
    }
}

fn mib(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn memory_table(runtime: &tokio::runtime::Runtime, bucket: &Bucket) {
    // A warm bucket (the engine keeps one per backup): the client's first-use
    // allocations (connection pool, endpoint resolution) are not the batch's.
    runtime
        .block_on(bucket.put("warm-up", vec![0; 16]))
        .expect("warm-up put");
    println!("== backup_pure: peak memory of one batch (build the commits, log_object, put)");
    println!(
        "{:<48} {:>12} {:>12} {:>14} {:>8} {:>12} {:>16}",
        "batch", "payload", "object", "peak heap", "/object", "put adds", "peak RSS growth"
    );
    for shape in SHAPES {
        // Twice: the first run of a shape may grow the allocator's arenas.
        let _ = measure(runtime, bucket, shape);
        let m = measure(runtime, bucket, shape);
        println!(
            "{:<48} {:>12} {:>12} {:>14} {:>7.2}x {:>12} {:>16}",
            shape.name,
            mib(m.payload),
            mib(m.body),
            format!("{} B", m.peak_heap),
            m.peak_heap as f64 / m.body as f64,
            mib(m.put_extra),
            m.peak_rss.map_or("n/a".into(), mib),
        );
    }
    println!(
        "payload: keys + values + entry versionstamps; peak heap: the allocator's high-water \
         mark above the live bytes before the batch (this process, the discarding server's \
         thread excluded); put adds: the put's high-water mark above the bytes live when it \
         began (the body, already counted); peak RSS growth: VmHWM after minus VmRSS before"
    );
    println!();
}

// ---------------------------------------------------------------------------------
// Throughput.

fn throughput(c: &mut Criterion, runtime: &tokio::runtime::Runtime, bucket: &Bucket) {
    for shape in SHAPES {
        let commits = batch(shape);
        let mut group = c.benchmark_group(format!("backup {}", shape.name));
        group.throughput(Throughput::Elements(shape.records() as u64));
        if shape.value_bytes > 1024 {
            group.sample_size(20);
            group.measurement_time(Duration::from_secs(10));
        }
        group.bench_function("encode", |b| {
            b.iter_batched(
                || commits.clone(),
                |commits| encode(black_box(commits)),
                BatchSize::LargeInput,
            )
        });
        group.bench_function("encode+put", |b| {
            b.to_async(runtime).iter_batched(
                || commits.clone(),
                |commits| async move {
                    let object = encode(black_box(commits));
                    bucket.put(&object.key, object.body).await.expect("put");
                },
                BatchSize::LargeInput,
            )
        });
        group.finish();
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bucket = bucket(discarding_server());
    memory_table(&runtime, &bucket);
    let mut criterion = Criterion::default().configure_from_args();
    throughput(&mut criterion, &runtime, &bucket);
    criterion.final_summary();
}
