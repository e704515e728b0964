//! KV Connect at the wire level: raw protobuf requests to a database of the local
//! stack (tests/tests/kv_protocol.rs, kv_limits.rs, kv_pending.rs), and the KV
//! engine itself on the stack's tables, for what no client can do (a commit
//! interrupted half-way, a store without subkv's size checks).

use crate::{api_url, create_db, create_org};
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use denokv_proto::datapath as pb;
use prost::Message;
use reqwest::StatusCode;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// One reply, raw.
pub struct Raw {
    pub status: StatusCode,
    pub content_type: String,
    /// The `Content-Length` header; `None` for a chunked (streamed) body.
    pub content_length: Option<u64>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// A KV Connect error: this status and a plain-text message containing `needle`.
    pub fn assert_plain_error(&self, status: u16, needle: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert!(
            self.content_type.starts_with("text/plain"),
            "{}",
            self.content_type
        );
        assert!(
            self.text().contains(needle),
            "{:?} lacks {needle:?}",
            self.text()
        );
    }
}

pub async fn raw_post(path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Raw {
    let mut request = client().post(format!("{}{path}", api_url())).body(body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await.expect("request reaches the stack");
    Raw {
        status: response.status(),
        content_type: response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        content_length: response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok()?.parse().ok()),
        body: response.bytes().await.expect("body").to_vec(),
    }
}

/// The metadata exchange.
pub async fn connect(db: &str, token: &str, body: &str) -> Raw {
    let auth = format!("Bearer {token}");
    raw_post(
        &format!("/databases/{db}/connect"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body.as_bytes().to_vec(),
    )
    .await
}

/// A fresh database and a data-path token for it (protocol version 3).
pub struct Session {
    pub db: String,
    pub token: String,
}

impl Session {
    pub async fn open() -> Self {
        let org = create_org("kv-protocol").await;
        let db = create_db(&org, "kv protocol").await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let reply = connect(&db, &org.token, r#"{"supportedVersions":[1,2,3]}"#).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let meta: Value = serde_json::from_slice(&reply.body).unwrap();
        Self {
            db,
            token: meta["token"].as_str().unwrap().to_string(),
        }
    }

    /// A data-path token for an existing database, from its organization's token.
    pub async fn of(db: &str, org_token: &str) -> Self {
        let reply = connect(db, org_token, r#"{"supportedVersions":[1,2,3]}"#).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        let meta: Value = serde_json::from_slice(&reply.body).unwrap();
        Self {
            db: db.to_string(),
            token: meta["token"].as_str().unwrap().to_string(),
        }
    }

    pub fn id(&self) -> uuid::Uuid {
        uuid::Uuid::parse_str(&self.db).unwrap()
    }

    pub async fn call(&self, op: &str, body: Vec<u8>) -> Raw {
        self.call_with(op, &self.db.clone(), &[], body).await
    }

    /// A data-path call with headers replaced (an empty value removes one).
    pub async fn call_with(
        &self,
        op: &str,
        path_db: &str,
        extra: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Raw {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("x-denokv-version", "3"),
            ("x-denokv-database-id", self.db.as_str()),
            ("content-type", "application/x-protobuf"),
        ];
        for (k, v) in extra {
            headers.retain(|(h, _)| h != k);
            if !v.is_empty() {
                headers.push((k, v));
            }
        }
        raw_post(&format!("/databases/{path_db}/{op}"), &headers, body).await
    }

    /// An atomic write that must be answered 200.
    pub async fn write(&self, write: pb::AtomicWrite) -> pb::AtomicWriteOutput {
        let reply = self.call("atomic_write", write.encode_to_vec()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        pb::AtomicWriteOutput::decode(reply.body.as_slice()).unwrap()
    }

    /// Writes these mutations in commits of 1000 (Deno's limit), each answered
    /// with success.
    pub async fn write_all(&self, mutations: Vec<pb::Mutation>) {
        for chunk in mutations.chunks(1000) {
            let out = self
                .write(pb::AtomicWrite {
                    mutations: chunk.to_vec(),
                    ..Default::default()
                })
                .await;
            assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
        }
    }

    /// Every entry in `[start, end)`, one page of up to 1000.
    pub async fn list(&self, start: Vec<u8>, end: Vec<u8>) -> Vec<pb::KvEntry> {
        let read = pb::SnapshotRead {
            ranges: vec![pb::ReadRange {
                start,
                end,
                limit: 1000,
                reverse: false,
            }],
        };
        let reply = self.call("snapshot_read", read.encode_to_vec()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        pb::SnapshotReadOutput::decode(reply.body.as_slice())
            .unwrap()
            .ranges
            .remove(0)
            .values
    }
}

/// The encoded key `[s]`.
pub fn key(s: &str) -> Vec<u8> {
    denokv_proto::encode_key(&denokv_proto::Key(vec![denokv_proto::KeyPart::String(
        s.into(),
    )]))
    .unwrap()
}

/// A set of a bytes value.
pub fn set(k: &[u8], value: &[u8], expire_at_ms: i64) -> pb::Mutation {
    pb::Mutation {
        key: k.to_vec(),
        value: Some(pb::KvValue {
            data: value.to_vec(),
            encoding: pb::ValueEncoding::VeBytes as i32,
        }),
        mutation_type: pb::MutationType::MSet as i32,
        expire_at_ms,
        ..Default::default()
    }
}

/// The KV engine on the stack's tables.
pub async fn store() -> subkv_dynamo_kv::DynamoKv {
    store_with(aws_sdk_dynamodb::Client::new(&sdk().await))
}

async fn sdk() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

fn store_with(client: aws_sdk_dynamodb::Client) -> subkv_dynamo_kv::DynamoKv {
    let env =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_string());
    subkv_dynamo_kv::DynamoKv::new(
        client,
        env("SUBKV_KV_DATA_TABLE", subkv_dynamo_kv::DEFAULT_DATA_TABLE),
        env("SUBKV_KV_LOG_TABLE", subkv_dynamo_kv::DEFAULT_LOG_TABLE),
        3600,
    )
}

/// The DynamoDB requests a [`counting_store`] sent, by operation (`Query`,
/// `GetItem`, `TransactGetItems`...), every attempt counted.
#[derive(Clone, Debug, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<String, usize>>>);

impl Requests {
    pub fn of(&self, operation: &str) -> usize {
        self.0.lock().unwrap().get(operation).copied().unwrap_or(0)
    }

    pub fn all(&self) -> BTreeMap<String, usize> {
        self.0.lock().unwrap().clone()
    }

    pub fn reset(&self) {
        self.0.lock().unwrap().clear();
    }
}

#[derive(Debug)]
struct Counter(Requests);

impl Intercept for Counter {
    fn name(&self) -> &'static str {
        "subkv-e2e request counter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let target = context.request().headers().get("x-amz-target");
        let operation = target.and_then(|t| t.rsplit('.').next()).unwrap_or("?");
        *(self.0)
            .0
            .lock()
            .unwrap()
            .entry(operation.to_string())
            .or_default() += 1;
        Ok(())
    }
}

/// The KV engine on the stack's tables, counting the requests it sends.
pub async fn counting_store() -> (subkv_dynamo_kv::DynamoKv, Requests) {
    let requests = Requests::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk().await)
        .interceptor(Counter(requests.clone()))
        .build();
    (
        store_with(aws_sdk_dynamodb::Client::from_conf(config)),
        requests,
    )
}

/// Deletes every data item of `database` directly (25 at a time), for a test that
/// leaves expired entries behind: the sweeper takes the oldest first, so a backlog
/// left by one test would delay the expiry tests that run after it.
pub async fn remove_data_items(database: uuid::Uuid) {
    use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = std::env::var("SUBKV_KV_DATA_TABLE")
        .unwrap_or_else(|_| subkv_dynamo_kv::DEFAULT_DATA_TABLE.to_string());
    loop {
        let page = client
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
            .projection_expression("pk, sk")
            .limit(25)
            .send()
            .await
            .unwrap();
        let items = page.items.unwrap_or_default();
        if items.is_empty() {
            return;
        }
        let deletes = items
            .into_iter()
            .map(|key| {
                WriteRequest::builder()
                    .delete_request(DeleteRequest::builder().set_key(Some(key)).build().unwrap())
                    .build()
            })
            .collect();
        let out = client
            .batch_write_item()
            .request_items(&table, deletes)
            .send()
            .await
            .unwrap();
        assert!(
            out.unprocessed_items.unwrap_or_default().is_empty(),
            "the emulator left deletes unprocessed"
        );
    }
}

/// How many items the data table holds for a database (its head aside).
pub async fn data_items(database: uuid::Uuid) -> usize {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table = std::env::var("SUBKV_KV_DATA_TABLE")
        .unwrap_or_else(|_| subkv_dynamo_kv::DEFAULT_DATA_TABLE.to_string());
    let mut count = 0;
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(&table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(
                ":pk",
                aws_sdk_dynamodb::types::AttributeValue::S(database.to_string()),
            )
            .select(aws_sdk_dynamodb::types::Select::Count)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        count += page.count as usize;
        match page.last_evaluated_key {
            Some(key) => start = Some(key),
            None => return count,
        }
    }
}

/// How many items the control table holds in partition `pk` (e.g. `DB#<id>`).
pub async fn control_items(pk: &str) -> usize {
    let client = aws_sdk_dynamodb::Client::new(&sdk().await);
    let table =
        std::env::var("SUBKV_CONTROL_TABLE").unwrap_or_else(|_| "subkv-control".to_string());
    let page = client
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
        .select(aws_sdk_dynamodb::types::Select::Count)
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    page.count as usize
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
