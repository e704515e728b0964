//! Cold start of a function: process start to first response, with its real
//! clients built.
//!
//! A minimal AWS Lambda Runtime API listens on 127.0.0.1 (a random port). The
//! function's release binary is spawned with the environment Lambda gives it and
//! `AWS_LAMBDA_RUNTIME_API` pointing there; it builds its configuration and AWS
//! clients exactly as in production (`App::from_env`), polls for an event, and
//! gets one API Gateway HTTP API request without an `Authorization` header. The
//! 401 it answers needs no AWS call (`AWS_ENDPOINT_URL` points at a closed port
//! that is never contacted), so the time measured is the function's own init
//! plus one request: from just before `spawn` to the moment the response is
//! posted back. The process is then killed, and the whole is repeated.
//!
//! Run by `cargo bench -p subkv-api --bench cold_start`, after
//! `cargo build --release -p get-database` (`make bench` does both).
//! - `SUBKV_COLD_START_BINARY`: binary (or comma-separated binaries) to measure;
//!   relative paths are taken from the workspace root. Default:
//!   `target/release/get-database` (under `CARGO_TARGET_DIR` when that is set).
//! - `SUBKV_COLD_START_RUNS`: timed runs per binary (default 30), after one
//!   untimed warm-up run (its time is printed, not counted). Every run finds the
//!   binary in the page cache: caches are not dropped.
//!
//! It exits non-zero if a function does not post a 401 response in time.

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

const DEFAULT_RUNS: usize = 30;
const REQUEST_ID: &str = "8476a536-e9f4-11e8-9739-2dfe598c3fcd";
const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
/// Longest a function may take to answer before the benchmark gives up.
const TIMEOUT: Duration = Duration::from_secs(10);
const API_HOST: &str = "abcdef1234.execute-api.us-east-1.amazonaws.com";

/// What the function posted back.
enum Outcome {
    Response { at: Instant, body: Bytes },
    Error { path: String, body: Bytes },
    Unexpected { method: Method, path: String },
}

/// The Runtime API of one run: serves one event, then waits for its result.
struct RuntimeApi {
    event: String,
    function_name: String,
    event_served: AtomicBool,
    first_poll: Mutex<Option<Instant>>,
    outcome: Mutex<Option<oneshot::Sender<Outcome>>>,
}

impl RuntimeApi {
    fn finish(&self, outcome: Outcome) {
        let sender = self.outcome.lock().ok().and_then(|mut s| s.take());
        if let Some(sender) = sender {
            let _ = sender.send(outcome);
        }
    }

    fn next_event(&self) -> Response<Full<Bytes>> {
        if let Ok(mut first) = self.first_poll.lock() {
            first.get_or_insert_with(Instant::now);
        }
        let deadline = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            + Duration::from_secs(900);
        let arn = format!(
            "arn:aws:lambda:us-east-1:123456789012:function:{}",
            self.function_name
        );
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", REQUEST_ID)
            .header(
                "lambda-runtime-deadline-ms",
                deadline.as_millis().to_string(),
            )
            .header("lambda-runtime-invoked-function-arn", arn)
            .header(
                "lambda-runtime-trace-id",
                "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c;Parent=53995c3f42cd8ad8;Sampled=0",
            )
            .body(Full::new(Bytes::from(self.event.clone())))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    async fn serve(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Infallible> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        if method == Method::GET && path == NEXT_PATH {
            if self.event_served.swap(true, Ordering::SeqCst) {
                // The function polls again once it has answered: hold that poll
                // until the process is killed.
                std::future::pending::<()>().await;
            }
            return Ok(self.next_event());
        }
        let body = match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let response_path = format!("/2018-06-01/runtime/invocation/{REQUEST_ID}/response");
        let (outcome, status) = if method == Method::POST && path == response_path {
            let at = Instant::now();
            (Outcome::Response { at, body }, StatusCode::ACCEPTED)
        } else if method == Method::POST && path.ends_with("/error") {
            (Outcome::Error { path, body }, StatusCode::ACCEPTED)
        } else {
            (Outcome::Unexpected { method, path }, StatusCode::NOT_FOUND)
        };
        self.finish(outcome);
        let mut response = Response::new(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")));
        *response.status_mut() = status;
        Ok(response)
    }
}

/// Accepts connections until aborted; dropping it drops every connection.
async fn accept_loop(listener: TcpListener, api: Arc<RuntimeApi>) {
    let mut connections = JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| api.clone().serve(request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The route a function serves, from its file name; get-database's otherwise.
fn route_of(binary: &Path) -> &'static subkv_core::routes::Route {
    let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or("");
    subkv_core::routes::ALL
        .iter()
        .find(|r| r.function == name)
        .unwrap_or(&subkv_core::routes::GET_DATABASE)
}

/// An API Gateway HTTP API (payload 2.0) event for the function's route, without
/// an `Authorization` header.
fn event_for(route: &subkv_core::routes::Route) -> String {
    let id = "0b7c5d2e-3f4a-4b5c-8d6e-7f8091a2b3c4";
    let path = route
        .path
        .split('/')
        .map(|seg| if seg.starts_with('{') { id } else { seg })
        .collect::<Vec<_>>()
        .join("/");
    let parameters: serde_json::Map<String, serde_json::Value> = route
        .parameters()
        .map(|name| (name.to_string(), serde_json::Value::from(id)))
        .collect();
    let route_key = format!("{} {}", route.method, route.path);
    let body = match route.method {
        "POST" | "PATCH" => serde_json::Value::from("{}"),
        _ => serde_json::Value::Null,
    };
    serde_json::json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "application/json",
            "content-type": "application/json",
            "host": API_HOST,
            "user-agent": "subkv-bench",
            "x-amzn-trace-id": "Root=1-5e9f0c65-1de4d666d4dd26aced652b6c",
            "x-forwarded-for": "192.0.2.10",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": API_HOST,
            "domainPrefix": "abcdef1234",
            "http": {
                "method": route.method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.10",
                "userAgent": "subkv-bench"
            },
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": route_key,
            "stage": "$default",
            "time": "10/Mar/2025:12:00:00 +0000",
            "timeEpoch": 1741608000000u64
        },
        "pathParameters": parameters,
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

/// The environment Lambda gives a function, with dummy credentials and an AWS
/// endpoint that is never contacted. Nothing is inherited from this process.
fn function_env(binary: &Path, runtime_api: SocketAddr) -> Vec<(String, String)> {
    let name = route_of(binary).function;
    let mut env: Vec<(&str, String)> = vec![
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_string()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1".into()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2025/03/10/[1]0123456789abcdef".into(),
        ),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        ),
        ("AWS_SESSION_TOKEN", "bench-session-token".into()),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".into()),
        // No profile files, as on Lambda.
        ("AWS_CONFIG_FILE", "/nonexistent/subkv-bench/config".into()),
        (
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/subkv-bench/credentials".into(),
        ),
        ("SUBKV_ADMIN_TOKEN", "bench".into()),
        ("SUBKV_CONTROL_TABLE", "subkv-control".into()),
        ("TZ", ":UTC".into()),
    ];
    // Only enable-backup gets the KMS key in infra/template.yaml (and so builds a KMS client).
    if name == "enable-backup" {
        env.push((
            "SUBKV_BACKUP_KMS_KEY_ID",
            "alias/subkv-backup-secrets".into(),
        ));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

struct Sample {
    /// Spawn to the first poll for an event: the function's init.
    init: Duration,
    /// Spawn to the response posted: init and the first request.
    total: Duration,
}

/// One cold start: a fresh Runtime API, a fresh process, one event.
async fn cold_start(binary: &Path) -> Result<Sample, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    let (sender, receiver) = oneshot::channel();
    let route = route_of(binary);
    let api = Arc::new(RuntimeApi {
        event: event_for(route),
        function_name: route.function.to_string(),
        event_served: AtomicBool::new(false),
        first_poll: Mutex::new(None),
        outcome: Mutex::new(Some(sender)),
    });
    let server = tokio::spawn(accept_loop(listener, api.clone()));

    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs(function_env(binary, addr))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()));
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            server.abort();
            return Err(e);
        }
    };
    let outcome = tokio::time::timeout(TIMEOUT, receiver).await;
    let _ = child.kill();
    let output = child.wait_with_output();
    server.abort();
    let _ = server.await;

    let logs = || match &output {
        Ok(out) => format!(
            "\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("\n(no output: {e})"),
    };
    let (at, body) = match outcome {
        Ok(Ok(Outcome::Response { at, body })) => (at, body),
        Ok(Ok(Outcome::Error { path, body })) => {
            return Err(format!(
                "the function reported an error to {path}: {}{}",
                String::from_utf8_lossy(&body),
                logs()
            ))
        }
        Ok(Ok(Outcome::Unexpected { method, path })) => {
            return Err(format!(
                "unexpected Runtime API call {method} {path}{}",
                logs()
            ))
        }
        Ok(Err(_)) | Err(_) => {
            return Err(format!(
                "no response within {} s{}",
                TIMEOUT.as_secs(),
                logs()
            ))
        }
    };
    check_unauthorized(&body).map_err(|e| format!("{e}{}", logs()))?;
    let first_poll = api.first_poll.lock().ok().and_then(|t| *t).unwrap_or(at);
    Ok(Sample {
        init: first_poll.duration_since(started),
        total: at.duration_since(started),
    })
}

/// The posted response must be API Gateway's shape of the pipeline's 401.
fn check_unauthorized(body: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(body);
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the posted response is not JSON ({e}): {text}"))?;
    let status = value.get("statusCode").and_then(serde_json::Value::as_u64);
    let payload = value
        .get("body")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    if status != Some(401) || !payload.contains("\"unauthorized\"") {
        return Err(format!("expected a 401 unauthorized response, got: {text}"));
    }
    Ok(())
}

/// Nearest-rank percentile of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn stats_line(label: &str, mut times: Vec<Duration>) -> String {
    times.sort_unstable();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    format!(
        "  {label:<22} min {:>10}  p50 {:>10}  p99 {:>10}  max {:>10}  mean {:>10}",
        millis(times[0]),
        millis(percentile(&times, 50.0)),
        millis(percentile(&times, 99.0)),
        millis(times[times.len() - 1]),
        millis(mean),
    )
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn binaries() -> Vec<PathBuf> {
    let root = workspace_root();
    match std::env::var("SUBKV_COLD_START_BINARY") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(p))
            .collect(),
        _ => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(|dir| root.join(dir))
                .unwrap_or_else(|| root.join("target"));
            vec![target.join("release").join("get-database")]
        }
    }
}

async fn measure(binary: &Path, runs: usize) -> Result<(), String> {
    let size = std::fs::metadata(binary)
        .map_err(|e| {
            format!(
                "{}: {e}; build it first: cargo build --release -p {}",
                binary.display(),
                binary
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            )
        })?
        .len();
    println!(
        "cold start of {} ({:.1} MiB), {runs} runs",
        binary.display(),
        size as f64 / (1024.0 * 1024.0)
    );
    let first = cold_start(binary).await?;
    println!(
        "  warm-up run:           {} (not counted)",
        millis(first.total)
    );
    let mut init = Vec::with_capacity(runs);
    let mut total = Vec::with_capacity(runs);
    for _ in 0..runs {
        let sample = cold_start(binary).await?;
        init.push(sample.init);
        total.push(sample.total);
    }
    println!("{}", stats_line("init (to first poll)", init));
    println!("{}", stats_line("first response", total));
    Ok(())
}

fn main() -> ExitCode {
    // `cargo test --benches` runs bench targets without `--bench`: nothing to test here.
    if !std::env::args().any(|a| a == "--bench") {
        println!("cold_start: run with `cargo bench` to measure");
        return ExitCode::SUCCESS;
    }
    let runs = std::env::var("SUBKV_COLD_START_RUNS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_RUNS);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cold_start: cannot build a tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    for binary in binaries() {
        if let Err(e) = rt.block_on(measure(&binary, runs)) {
            eprintln!("cold_start FAILED for {}: {e}", binary.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
