//! Warm per-request overhead of the request pipeline, excluding DynamoDB time.
//!
//! Each request goes through `subkv_api::pipeline::handle` end to end (body limit, bearer
//! auth, path ids, access control, the handler, JSON encoding, the JSON log line)
//! against an `ApiState` whose store is the in-memory one: the memory store stands in
//! for DynamoDB, so what is measured is everything subkv's pipeline spends on a
//! request except DynamoDB (and KMS: backups are sealed by `FakeSealer`). The
//! `lambda_http` runtime's own work per event (Runtime API round trip, event and
//! response JSON) is not included.
//!
//! Two measurements, both by `cargo bench -p subkv-api --bench warm`:
//! 1. percentiles: a plain loop that times every request of each route with
//!    `Instant` and prints p50/p99/p99.9/max (criterion reports means only);
//!    `SUBKV_BENCH_SAMPLES` sets the number of timed requests per route (10000);
//! 2. criterion: the mean per request of each route, with its confidence interval.
//!
//! Logging: as in a function, one JSON log line per request is formatted, written
//! here to `io::sink` instead of stdout so it does not flood the report.

use criterion::{BenchmarkId, Criterion};
use lambda_http::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use lambda_http::{Body, Request, RequestExt, Response};
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkv_api::error::ApiResult;
use subkv_api::http::Reply;
use subkv_api::pipeline::{handle, Ctx};
use subkv_api::state::ApiState;
use subkv_core::auth::mint_token;
use subkv_core::config::{Config, Env};
use subkv_core::control::records::{now_rfc3339, KvDatabase, Organization, TokenRecord};
use subkv_core::control::ControlTable;
use subkv_core::control::MemoryControl;
use subkv_core::routes::{self, Route};
use subkv_core::secrets::FakeSealer;
use uuid::Uuid;

const API_HOST: &str = "abcdef1234.execute-api.us-east-1.amazonaws.com";
/// Databases of the organization the list and get routes read.
const LISTED_DATABASES: usize = 100;
/// Requests per route before the timed ones of the percentile loop.
const WARMUP_REQUESTS: usize = 1_000;
const DEFAULT_SAMPLES: usize = 10_000;

const CREATE_BODY: &str = r#"{"description":"benchmark database"}"#;
const ENABLE_BODY: &str = r#"{"kind":"s3","endpoint":"https://s3.us-east-1.amazonaws.com","bucketName":"subkv-bench-backups","bucketRegion":"us-east-1","accessKeyId":"AKIAIOSFODNN7EXAMPLE","secretAccessKey":"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY","prefix":"backups/"}"#;

/// An organization with one token and some databases, in a fresh memory store.
struct Fixture {
    app: Arc<ApiState>,
    token: String,
    organization_id: Uuid,
    databases: Vec<Uuid>,
}

impl Fixture {
    async fn new(databases: usize) -> Self {
        let config = Config::read(&Env::from_pairs(&[
            ("SUBKV_ADMIN_TOKEN", "bench-admin"),
            ("SUBKV_BACKUP_KMS_KEY_ID", "alias/subkv-bench"),
        ]))
        .expect("benchmark configuration is valid");
        let store = Arc::new(MemoryControl::new());
        let now = now_rfc3339();
        let organization = Organization {
            id: Uuid::new_v4(),
            name: "bench".into(),
            created_at: now.clone(),
            limits: Default::default(),
        };
        let token = mint_token();
        let record = TokenRecord {
            id: Uuid::new_v4(),
            organization_id: organization.id,
            token_sha256: token.sha256_hex.clone(),
            description: "bench".into(),
            created_at: now.clone(),
            databases: None,
            access: Default::default(),
            expires_at: None,
            last_used_at: None,
        };
        store
            .create_organization(&organization, &record)
            .await
            .expect("seed organization");
        let mut ids = Vec::with_capacity(databases);
        for i in 0..databases {
            let db = KvDatabase {
                id: Uuid::new_v4(),
                organization_id: organization.id,
                description: format!("database {i}"),
                created_at: now.clone(),
                updated_at: now.clone(),
                restore: None,
            };
            store.create_database(&db).await.expect("seed database");
            ids.push(db.id);
        }
        Self {
            app: Arc::new(ApiState::new(config, store, Arc::new(FakeSealer))),
            token: token.plaintext,
            organization_id: organization.id,
            databases: ids,
        }
    }

    /// A request as `lambda_http` builds it from an API Gateway HTTP API event.
    fn request(
        &self,
        method: &str,
        path: &str,
        query: &str,
        parameters: &[(&str, Uuid)],
        body: Option<&str>,
    ) -> Request {
        let uri = if query.is_empty() {
            format!("https://{API_HOST}{path}")
        } else {
            format!("https://{API_HOST}{path}?{query}")
        };
        let mut builder = lambda_http::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(HOST, API_HOST)
            .header("x-forwarded-proto", "https")
            .header(USER_AGENT, "subkv-bench")
            .header(AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map_or(Body::Empty, |b| Body::from(b.to_string()));
        let parameters: HashMap<String, String> = parameters
            .iter()
            .map(|(name, id)| (name.to_string(), id.to_string()))
            .collect();
        builder
            .body(body)
            .expect("valid request")
            .with_path_parameters(parameters)
    }

    fn get_database(&self, i: usize) -> Request {
        let id = self.databases[i % self.databases.len()];
        let path = format!("/v1/databases/{id}");
        self.request("GET", &path, "", &[("databaseId", id)], None)
    }

    fn list_databases(&self) -> Request {
        let org = self.organization_id;
        let path = format!("/v1/organizations/{org}/databases");
        self.request(
            "GET",
            &path,
            "page=2&limit=20",
            &[("organizationId", org)],
            None,
        )
    }

    fn create_database(&self) -> Request {
        let org = self.organization_id;
        let path = format!("/v1/organizations/{org}/databases");
        let params = [("organizationId", org)];
        self.request("POST", &path, "", &params, Some(CREATE_BODY))
    }

    /// Enables the backup of the `i`th database: each database only once.
    fn enable_backup(&self, i: usize) -> Request {
        let id = self.databases[i];
        let path = format!("/v1/databases/{id}/database_backups");
        let params = [("databaseId", id)];
        self.request("POST", &path, "", &params, Some(ENABLE_BODY))
    }
}

/// The response must be the success one, or the benchmark measures an error path.
fn expect_ok(route: &Route, response: &Response<Body>) {
    assert_eq!(
        response.status(),
        200,
        "{} answered {}: {:?}",
        route.function,
        response.status(),
        response.body()
    );
}

async fn call<F, Fut>(app: &Arc<ApiState>, route: &'static Route, handler: &F, request: Request)
where
    F: Fn(Ctx) -> Fut,
    Fut: Future<Output = ApiResult<Reply>>,
{
    let response = handle(app.clone(), route, handler, request).await;
    expect_ok(route, &response);
    black_box(response);
}

/// The four benchmarked routes. Each run gets what it needs: get and list read a
/// shared organization of 100 databases; create and enable write into a fresh
/// store (enable needs a database without a backup for every request).
#[derive(Clone, Copy)]
enum Bench {
    GetDatabase,
    CreateDatabase,
    ListDatabases,
    EnableBackup,
}

const BENCHES: [Bench; 4] = [
    Bench::GetDatabase,
    Bench::CreateDatabase,
    Bench::ListDatabases,
    Bench::EnableBackup,
];

impl Bench {
    fn route(self) -> &'static Route {
        match self {
            Bench::GetDatabase => &routes::GET_DATABASE,
            Bench::CreateDatabase => &routes::CREATE_DATABASE,
            Bench::ListDatabases => &routes::LIST_DATABASES,
            Bench::EnableBackup => &routes::ENABLE_BACKUP,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Bench::ListDatabases => "list-databases (100 databases, page 2 of 20)",
            other => other.route().function,
        }
    }

    /// A fixture that serves `requests` requests of this route.
    async fn fixture(self, shared: &Arc<Fixture>, requests: usize) -> Arc<Fixture> {
        match self {
            Bench::GetDatabase | Bench::ListDatabases => shared.clone(),
            Bench::CreateDatabase => Arc::new(Fixture::new(0).await),
            Bench::EnableBackup => Arc::new(Fixture::new(requests).await),
        }
    }

    fn request(self, fixture: &Fixture, i: usize) -> Request {
        match self {
            Bench::GetDatabase => fixture.get_database(i),
            Bench::CreateDatabase => fixture.create_database(),
            Bench::ListDatabases => fixture.list_databases(),
            Bench::EnableBackup => fixture.enable_backup(i),
        }
    }

    /// Runs one request through the pipeline with this route's handler.
    async fn call(self, fixture: &Fixture, request: Request) {
        let app = &fixture.app;
        let route = self.route();
        match self {
            Bench::GetDatabase => {
                call(app, route, &subkv_api::handlers::databases::get, request).await
            }
            Bench::CreateDatabase => {
                call(app, route, &subkv_api::handlers::databases::create, request).await
            }
            Bench::ListDatabases => {
                call(app, route, &subkv_api::handlers::databases::list, request).await
            }
            Bench::EnableBackup => {
                call(app, route, &subkv_api::handlers::backups::enable, request).await
            }
        }
    }

    /// `iters` requests, each built beforehand; the time of the requests alone.
    async fn timed_batch(self, shared: &Arc<Fixture>, iters: u64) -> Duration {
        let n = usize::try_from(iters).expect("iteration count fits in usize");
        let fixture = self.fixture(shared, n).await;
        let requests: Vec<Request> = (0..n).map(|i| self.request(&fixture, i)).collect();
        let started = Instant::now();
        for request in requests {
            self.call(&fixture, request).await;
        }
        started.elapsed()
    }
}

/// Same subscriber as the functions at the default level, writing to `io::sink`.
fn init_logging() {
    subkv_core::runtime::init_with(None, std::io::sink);
}

fn runtime() -> tokio::runtime::Runtime {
    // What `#[tokio::main]` builds in every function.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// Times every request of each route and prints the distribution.
fn percentiles(rt: &tokio::runtime::Runtime, shared: &Arc<Fixture>) {
    let samples = std::env::var("SUBKV_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_SAMPLES);
    println!(
        "warm per-request overhead, {samples} timed requests per route after {WARMUP_REQUESTS} warm-up ones"
    );
    println!(
        "{:<46} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "route", "mean", "p50", "p99", "p99.9", "max"
    );
    for bench in BENCHES {
        let total = WARMUP_REQUESTS + samples;
        let times = rt.block_on(async {
            let fixture = bench.fixture(shared, total).await;
            let mut times = Vec::with_capacity(samples);
            for i in 0..total {
                let request = bench.request(&fixture, i);
                let started = Instant::now();
                bench.call(&fixture, request).await;
                let elapsed = started.elapsed();
                if i >= WARMUP_REQUESTS {
                    times.push(elapsed);
                }
            }
            times
        });
        let mut sorted = times;
        sorted.sort_unstable();
        let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
        println!(
            "{:<46} {:>10} {:>10} {:>10} {:>10} {:>10}",
            bench.label(),
            micros(mean),
            micros(percentile(&sorted, 50.0)),
            micros(percentile(&sorted, 99.0)),
            micros(percentile(&sorted, 99.9)),
            micros(sorted[sorted.len() - 1]),
        );
    }
    println!();
}

fn criterion_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, shared: &Arc<Fixture>) {
    let mut group = c.benchmark_group("warm");
    for bench in BENCHES {
        group.bench_function(BenchmarkId::from_parameter(bench.route().function), |b| {
            b.to_async(rt)
                .iter_custom(|iters| bench.timed_batch(shared, iters));
        });
    }
    group.finish();
}

fn main() {
    init_logging();
    let rt = runtime();
    let shared = Arc::new(rt.block_on(Fixture::new(LISTED_DATABASES)));
    // Only when benchmarking: not under `cargo test --benches`, `--test` or `--list`.
    let args: Vec<String> = std::env::args().collect();
    let benchmarking = args.iter().any(|a| a == "--bench")
        && !args
            .iter()
            .any(|a| a == "--test" || a == "--list" || a.starts_with("--profile-time"));
    if benchmarking {
        percentiles(&rt, &shared);
    }
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &rt, &shared);
    c.final_summary();
}
