//! Helpers for the end-to-end tests. They talk HTTP to a running local stack
//! (`infra/local/stack.sh run -- cargo test -p subkv-e2e`, which `make test` does):
//! `SUBKV_API_URL` and `SUBKV_ADMIN_TOKEN` come from the stack script.

pub mod backup;
pub mod fault_proxy;
pub mod kv_wire;
pub mod restore;

use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the end-to-end tests through `make test` (infra/local/stack.sh run -- ...)")
    })
}

/// The API's base URL, e.g. `http://127.0.0.1:9100`.
pub fn api_url() -> String {
    required_env("SUBKV_API_URL")
}

pub fn admin_token() -> String {
    required_env("SUBKV_ADMIN_TOKEN")
}

/// Where the stack writes the functions' logs.
pub fn api_log_path() -> String {
    required_env("SUBKV_STACK_LOG_DIR") + "/api.log"
}

/// The emulator's log (`moto.log`): among others, one `iam:` line per function
/// naming the role it calls as, and one per refused call (infra/local/iam.py).
pub fn emulator_log_path() -> String {
    required_env("SUBKV_STACK_LOG_DIR") + "/moto.log"
}

/// The last `n` runs of the scheduled function `name` in the stack's
/// scheduler log (infra/local/scheduler.py): when each began, how long it
/// took, what it answered. For a test's message when it times out waiting for
/// one.
pub fn scheduled_runs(name: &str, n: usize) -> String {
    let log = std::fs::read_to_string(required_env("SUBKV_STACK_LOG_DIR") + "/scheduler.log")
        .unwrap_or_else(|e| format!("(no scheduler log: {e})"));
    let runs: Vec<&str> = log
        .lines()
        .filter(|line| line.split(' ').nth(1) == Some(name))
        .collect();
    runs[runs.len().saturating_sub(n)..].join("\n")
}

/// Where the stack's stream pump writes one line per delivered batch
/// (`<shard>: <n> record(s) <first>..<last>: ok (<ms> ms)`).
pub fn stream_pump_log_path() -> String {
    required_env("SUBKV_STACK_LOG_DIR") + "/stream-pump.log"
}

/// A client per request: every `#[tokio::test]` has its own runtime, and a
/// pooled connection must not outlive the runtime that opened it.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// One HTTP exchange, with the body both raw and parsed.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    /// Asserts an error reply: the status, the `code`, and a non-empty `message`.
    pub fn assert_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status.as_u16(), status, "{self:#?}");
        assert_eq!(self.json["code"], code, "{self:#?}");
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without message: {self:#?}"
        );
        assert_eq!(
            self.json.as_object().map(|o| o.len()),
            Some(2),
            "error body must be exactly {{code, message}}: {self:#?}"
        );
        self
    }

    pub fn assert_ok(&self) -> &Value {
        assert_eq!(self.status.as_u16(), 200, "{self:#?}");
        &self.json
    }
}

/// Sends a request. `body` is sent as-is (no Content-Type, like the announcement's samples).
pub async fn send_raw(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Reply {
    let mut request = client().request(method, format!("{}{path}", api_url()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request reaches the stack");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

pub async fn send(method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    send_raw(method, path, token, body.map(|b| b.to_string())).await
}

pub async fn get(path: &str, token: &str) -> Reply {
    send(Method::GET, path, Some(token), None).await
}

pub async fn post(path: &str, token: &str, body: Value) -> Reply {
    send(Method::POST, path, Some(token), Some(body)).await
}

pub async fn patch(path: &str, token: &str, body: Value) -> Reply {
    send(Method::PATCH, path, Some(token), Some(body)).await
}

pub async fn delete(path: &str, token: &str) -> Reply {
    send(Method::DELETE, path, Some(token), None).await
}

/// A fresh organization and its first token.
#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub token: String,
    pub token_id: String,
}

pub async fn create_org(name: &str) -> Org {
    let reply = post("/v1/organizations", &admin_token(), json!({ "name": name })).await;
    let body = reply.assert_ok();
    Org {
        id: body["id"].as_str().expect("id").to_string(),
        token: body["token"].as_str().expect("token").to_string(),
        token_id: body["tokenId"].as_str().expect("tokenId").to_string(),
    }
}

pub async fn create_db(org: &Org, description: &str) -> Value {
    post(
        &format!("/v1/organizations/{}/databases", org.id),
        &org.token,
        json!({ "description": description }),
    )
    .await
    .assert_ok()
    .clone()
}

/// A valid `EnableBackup` body.
pub fn backup_body(secret: &str) -> Value {
    json!({
        "kind": "s3",
        "endpoint": "https://storage.googleapis.com",
        "bucketName": "test-kv-backup",
        "bucketRegion": "us-central1",
        "accessKeyId": "GOOG1EXAMPLEACCESSKEY",
        "secretAccessKey": secret,
        "prefix": "backup/",
    })
}

pub fn is_uuid(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.len() == 36 && Uuid::parse_str(s).is_ok())
}

/// A random id nobody has.
pub fn unknown_id() -> String {
    Uuid::new_v4().to_string()
}
