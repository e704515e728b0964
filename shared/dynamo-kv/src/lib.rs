//! The KV engine on DynamoDB (docs/data-plane.md has the design and its reasons).
//!
//! Tables:
//! - data: `pk` (S) = database id, `sk` (B) = sort key of [`subkv_kv::keys`]; the
//!   database head lives in the same table under `pk` = `<database>#head`.
//! - change log: `pk` (S) = database id, `sk` (B) = the commit's versionstamp
//!   (its last two bytes number the parts of a large record); its stream carries
//!   every commit to the backup engine.
//!
//! Every commit is one TransactWriteItems: the head on condition `ver = V` (set to
//! `V+1`, the versionstamp), the checks as conditions, the items, the change record.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_get_items::TransactGetItemsError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConditionCheck, Get, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification, TransactGetItem, TransactWriteItem,
};
use aws_sdk_dynamodb::Client;
use denokv_proto::backup::{BackupMutationRange, BackupReplicationLogEntry};
use denokv_proto::{AtomicWrite, ReadRange, Versionstamp};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;
use subkv_core::config::{var, ConfigError, Env};
use subkv_core::dynamo::{b, describe, get_b, get_n, is_transient, n, Item};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::keys::{is_point_range, range_bounds, sort_key};
use subkv_kv::limits::MAX_ITEMS_PER_COMMIT;
use subkv_kv::model::{versionstamp, Entry, Slot};
use subkv_kv::plan::{plan, CommitPlan, Cond, PlanOutcome};
use uuid::Uuid;

pub const DEFAULT_DATA_TABLE: &str = "subkv-kv-data";
pub const DEFAULT_LOG_TABLE: &str = "subkv-kv-log";
/// How long change records stay in the change log unless configured: 7 days.
pub const DEFAULT_LOG_RETENTION_SECONDS: i64 = 7 * 24 * 3600;
/// The sparse index of expiring items the sweeper reads.
pub const EXPIRY_INDEX: &str = "expiry";
/// Shards of the expiry index (its partition key is `x0`..`x7`).
pub const EXPIRY_SHARDS: u8 = 8;

const PK: &str = "pk";
const SK: &str = "sk";
const VER: &str = "kv_ver";
const VALUE: &str = "v";
const ENCODING: &str = "enc";
const EXPIRE: &str = "kv_exp";
const SHARD: &str = "kv_xs";
const DELETED: &str = "kv_del";
/// On the head: the commit `kv_ver` is a large commit still being applied.
const PENDING: &str = "kv_pending";
const BUCKET: &str = "b";
const TTL: &str = "ttl";
const HEAD_SK: &[u8] = b"head";
const LOG_TIME: &str = "ts";
const LOG_PARTS: &str = "parts";
const LOG_MUTATIONS: &str = "m";
/// The commit's client request token: tells an ambiguous failure from a commit.
/// On the change record and, for the last commit, on the head.
const LOG_REQUEST: &str = "req";

/// How long a tombstone outlives its deletion. A snapshot read must see the
/// tombstone of any deletion newer than the head it read, and no read lasts this
/// long (the functions time out long before).
const TOMBSTONE_SECONDS: i64 = 3600;
/// A change record item stays below DynamoDB's 400 KB item limit.
const LOG_PART_BYTES: usize = 300 * 1024;
const MAX_ATTEMPTS: u32 = 40;

/// Outcome of an atomic write.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    Committed(Versionstamp),
    CheckFailed(Vec<u32>),
}

/// One commit read back from the change log ([`DynamoKv::change_log`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedCommit {
    pub version: u64,
    /// The commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its mutations with their resulting values, in the backup format (12-byte
    /// versionstamps, the last one ending in `0xffff`).
    pub entries: Vec<BackupReplicationLogEntry>,
}

#[derive(Debug, Clone, Copy)]
struct Head {
    version: u64,
    /// A large commit (`version`) is being applied: finish it before anything else.
    pending: bool,
}

enum CommitResult {
    Committed,
    /// The head is no longer the one the commit was planned on. Carries the head's
    /// version as the failed condition saw it, unless a large commit is pending.
    HeadMoved(Option<u64>),
    ChecksFailed(Vec<u32>),
    Contention,
    /// The transaction may or may not have happened (a timeout or a 5xx after
    /// the SDK's retries); the change record tells.
    Ambiguous(String),
}

pub struct DynamoKv {
    client: Client,
    data_table: String,
    log_table: String,
    log_retention_seconds: i64,
    /// Test hook: fail a large commit right after its first transaction, as a
    /// crash would (tests/tests/kv_protocol.rs proves others finish it).
    crash_after_intent: bool,
    /// Last head version this instance saw per database: a blind write then needs
    /// no read (a stale value costs one failed condition and a re-read).
    heads: Mutex<HashMap<Uuid, u64>>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A failed DynamoDB call as the data plane's error: `Unavailable` (a 503 the
/// client retries) when trying again may succeed, else `Internal`.
fn dynamo<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> KvError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let server_error = err
        .raw_response()
        .is_some_and(|r| r.status().is_server_error());
    if is_transient(&err, server_error) {
        return KvError::Unavailable(format!(
            "storage is busy or did not answer ({operation}); retry"
        ));
    }
    KvError::Internal(format!("{operation}: {}", describe(&err)))
}

fn malformed(what: &str) -> KvError {
    KvError::Internal(format!("malformed data item: {what}"))
}

/// Entries of a bucket item, as stored in its `b` attribute.
#[derive(Clone, PartialEq, prost::Message)]
struct BucketBlob {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<BucketEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BucketEntry {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
    #[prost(int64, tag = "3")]
    encoding: i64,
    #[prost(uint64, tag = "4")]
    version: u64,
    /// 0: never expires.
    #[prost(int64, tag = "5")]
    expire_at_ms: i64,
}

fn slot_from_item(item: &Item) -> KvResult<Slot> {
    let sk = get_b(item, SK).ok_or_else(|| malformed("no sk"))?.to_vec();
    let version: u64 = get_n(item, VER).ok_or_else(|| malformed("no ver"))?;
    let mut slot = Slot {
        sk,
        version,
        entries: Vec::new(),
    };
    if item.contains_key(DELETED) {
        return Ok(slot);
    }
    if let Some(blob) = get_b(item, BUCKET) {
        let blob = BucketBlob::decode(blob).map_err(|_| malformed("bucket"))?;
        slot.entries = blob
            .entries
            .into_iter()
            .map(|e| Entry {
                key: e.key,
                value: e.value,
                encoding: e.encoding,
                version: e.version,
                expire_at_ms: (e.expire_at_ms > 0).then_some(e.expire_at_ms),
            })
            .collect();
        return Ok(slot);
    }
    slot.entries.push(Entry {
        key: slot.sk.clone(),
        value: get_b(item, VALUE)
            .ok_or_else(|| malformed("no value"))?
            .to_vec(),
        encoding: get_n(item, ENCODING).ok_or_else(|| malformed("no encoding"))?,
        version,
        expire_at_ms: get_n(item, EXPIRE),
    });
    Ok(slot)
}

fn expiry_shard(database: Uuid, sk: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(database.as_bytes())
        .chain_update(sk)
        .finalize();
    format!("x{}", digest[0] % EXPIRY_SHARDS)
}

fn item_from_slot(database: Uuid, slot: &Slot, now_ms: i64) -> Item {
    let mut item = Item::from([
        (PK.into(), AttributeValue::S(database.to_string())),
        (SK.into(), b(slot.sk.clone())),
        (VER.into(), n(slot.version)),
    ]);
    if slot.entries.is_empty() {
        item.insert(DELETED.into(), AttributeValue::Bool(true));
        item.insert(TTL.into(), n(now_ms / 1000 + TOMBSTONE_SECONDS));
        return item;
    }
    if slot.is_bucket() {
        let blob = BucketBlob {
            entries: slot
                .entries
                .iter()
                .map(|e| BucketEntry {
                    key: e.key.clone(),
                    value: e.value.clone(),
                    encoding: e.encoding,
                    version: e.version,
                    expire_at_ms: e.expire_at_ms.unwrap_or(0),
                })
                .collect(),
        };
        item.insert(BUCKET.into(), b(blob.encode_to_vec()));
    } else {
        let entry = &slot.entries[0];
        item.insert(VALUE.into(), b(entry.value.clone()));
        item.insert(ENCODING.into(), n(entry.encoding));
    }
    if let Some(at) = slot.earliest_expiry() {
        item.insert(EXPIRE.into(), n(at));
        item.insert(
            SHARD.into(),
            AttributeValue::S(expiry_shard(database, &slot.sk)),
        );
    }
    item
}

/// The condition a set of checks puts on one (short-key) item.
fn condition(conds: &[Cond], values: &mut Item, now_ms: i64) -> String {
    values.insert(":now".into(), n(now_ms));
    conds
        .iter()
        .map(|cond| match cond.expect {
            Some(version) => {
                let name = format!(":c{}", cond.check_index);
                values.insert(name.clone(), n(version));
                format!("({VER} = {name} AND attribute_not_exists({DELETED}) AND (attribute_not_exists({EXPIRE}) OR {EXPIRE} > :now))")
            }
            None => format!(
                "(attribute_not_exists({VER}) OR attribute_exists({DELETED}) OR {EXPIRE} <= :now)"
            ),
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The change record of a commit, split into parts that each fit in an item.
fn log_parts(plan_log: &[BackupReplicationLogEntry], timestamp_ms: u64) -> Vec<Vec<u8>> {
    let mut parts = Vec::new();
    let mut current = BackupMutationRange {
        entries: Vec::new(),
        timestamp_ms,
    };
    let mut size = 0;
    for entry in plan_log {
        let len = entry.encoded_len() + 8;
        if size + len > LOG_PART_BYTES && !current.entries.is_empty() {
            parts.push(current.encode_to_vec());
            current.entries.clear();
            size = 0;
        }
        size += len;
        current.entries.push(entry.clone());
    }
    parts.push(current.encode_to_vec());
    parts
}

/// A change-log item: its commit version and (part of) its mutations.
fn log_item(item: &Item) -> KvResult<(u64, BackupMutationRange)> {
    let sk = get_b(item, SK).ok_or_else(|| malformed("log sk"))?;
    let version = subkv_kv::model::version_of(&[sk.get(..8).unwrap_or_default(), &[0, 0]].concat())
        .ok_or_else(|| malformed("log sk"))?;
    let body = get_b(item, LOG_MUTATIONS).ok_or_else(|| malformed("log body"))?;
    let range = BackupMutationRange::decode(body).map_err(|_| malformed("log body"))?;
    Ok((version, range))
}

fn log_sk(version: u64, part: u16) -> Vec<u8> {
    let mut sk = versionstamp(version).to_vec();
    sk[8..].copy_from_slice(&part.to_be_bytes());
    sk
}

/// Sort an entry into a range read: inside `[start, end)`, live.
fn in_range(entry: &Entry, range: &ReadRange, now_ms: i64) -> bool {
    entry.key.as_slice() >= range.start.as_slice()
        && entry.key.as_slice() < range.end.as_slice()
        && entry.is_live(now_ms)
}

async fn backoff(attempt: u32) {
    let base = 5u64 << attempt.min(6);
    let jitter = rand::random::<u64>() % base.max(1);
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
}

impl DynamoKv {
    pub fn new(
        client: Client,
        data_table: String,
        log_table: String,
        log_retention_seconds: i64,
    ) -> Self {
        Self {
            client,
            data_table,
            log_table,
            log_retention_seconds,
            crash_after_intent: false,
            heads: Mutex::new(HashMap::new()),
        }
    }

    /// The store as the environment configures it (tables, change-log retention):
    /// the same for the data-path functions, the sweeper and the backup engine.
    pub fn from_env(client: Client, env: &Env) -> Result<Self, ConfigError> {
        Ok(Self::new(
            client,
            env.string_or(var::KV_DATA_TABLE, DEFAULT_DATA_TABLE),
            env.string_or(var::KV_LOG_TABLE, DEFAULT_LOG_TABLE),
            env.number(var::KV_LOG_RETENTION_SECONDS, DEFAULT_LOG_RETENTION_SECONDS)?,
        ))
    }

    /// For tests only: every large commit stops after its first transaction.
    #[doc(hidden)]
    pub fn crash_after_intent(mut self) -> Self {
        self.crash_after_intent = true;
        self
    }

    fn head_key(database: Uuid) -> Item {
        Item::from([
            (PK.into(), AttributeValue::S(format!("{database}#head"))),
            (SK.into(), b(HEAD_SK)),
        ])
    }

    fn item_key(database: Uuid, sk: &[u8]) -> Item {
        Item::from([
            (PK.into(), AttributeValue::S(database.to_string())),
            (SK.into(), b(sk)),
        ])
    }

    fn cached_head(&self, database: Uuid) -> Option<u64> {
        self.heads.lock().ok()?.get(&database).copied()
    }

    fn remember_head(&self, database: Uuid, version: Option<u64>) {
        if let Ok(mut heads) = self.heads.lock() {
            match version {
                Some(v) => {
                    let known = heads.entry(database).or_insert(v);
                    *known = (*known).max(v);
                }
                None => {
                    heads.remove(&database);
                }
            }
        }
    }

    /// The last committed version of a database (0: nothing was ever written),
    /// after finishing a large commit that is still being applied, if any.
    pub async fn head(&self, database: Uuid) -> KvResult<u64> {
        loop {
            let out = self
                .client
                .get_item()
                .table_name(&self.data_table)
                .set_key(Some(Self::head_key(database)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo("GetItem", e))?;
            let version = out.item.as_ref().and_then(|i| get_n(i, VER)).unwrap_or(0);
            if out.item.as_ref().is_some_and(|i| i.contains_key(PENDING)) {
                self.roll_forward(database, version).await?;
                continue;
            }
            self.remember_head(database, Some(version));
            return Ok(version);
        }
    }

    /// The head and these items in one serializable read (TransactGetItems).
    /// `Ok(None)`: the read lost against a concurrent transaction; try again.
    async fn read_with_head(
        &self,
        database: Uuid,
        sks: &BTreeSet<Vec<u8>>,
        with_head: bool,
    ) -> KvResult<Option<(u64, BTreeMap<Vec<u8>, Slot>)>> {
        loop {
            match self.read_once(database, sks, with_head).await? {
                Some((
                    Head {
                        version,
                        pending: true,
                    },
                    _,
                )) => self.roll_forward(database, version).await?,
                Some((head, slots)) => return Ok(Some((head.version, slots))),
                None => return Ok(None),
            }
        }
    }

    async fn read_once(
        &self,
        database: Uuid,
        sks: &BTreeSet<Vec<u8>>,
        with_head: bool,
    ) -> KvResult<Option<(Head, BTreeMap<Vec<u8>, Slot>)>> {
        let mut keys: Vec<Item> = Vec::new();
        if with_head {
            keys.push(Self::head_key(database));
        }
        keys.extend(sks.iter().map(|sk| Self::item_key(database, sk)));
        if keys.len() > MAX_ITEMS_PER_COMMIT {
            // More than one TransactGetItems holds (a large commit's operands):
            // the head first, then the items in chunks. Not one snapshot, but it
            // need not be: the commit is conditioned on the head being unchanged,
            // and every item is read after the head.
            let head = self.head(database).await?;
            let mut slots = BTreeMap::new();
            let list: Vec<Vec<u8>> = sks.iter().cloned().collect();
            for chunk in list.chunks(MAX_ITEMS_PER_COMMIT) {
                let chunk: BTreeSet<Vec<u8>> = chunk.iter().cloned().collect();
                match Box::pin(self.read_once(database, &chunk, false)).await? {
                    Some((_, part)) => slots.extend(part),
                    None => return Ok(None),
                }
            }
            return Ok(Some((
                Head {
                    version: head,
                    pending: false,
                },
                slots,
            )));
        }
        let items: Vec<Option<Item>> = if keys.len() == 1 {
            let key = keys.pop().unwrap_or_default();
            let table = &self.data_table;
            let out = self
                .client
                .get_item()
                .table_name(table)
                .set_key(Some(key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo("GetItem", e))?;
            vec![out.item]
        } else {
            let gets = keys
                .into_iter()
                .map(|key| {
                    Get::builder()
                        .table_name(&self.data_table)
                        .set_key(Some(key))
                        .build()
                        .map(|get| TransactGetItem::builder().get(get).build())
                        .map_err(|e| KvError::Internal(format!("TransactGetItems request: {e}")))
                })
                .collect::<KvResult<Vec<_>>>()?;
            match self
                .client
                .transact_get_items()
                .set_transact_items(Some(gets))
                .send()
                .await
            {
                Ok(out) => out
                    .responses
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.item)
                    .collect(),
                Err(err) => {
                    if let Some(TransactGetItemsError::TransactionCanceledException(_)) =
                        err.as_service_error()
                    {
                        return Ok(None);
                    }
                    return Err(dynamo("TransactGetItems", err));
                }
            }
        };
        let mut items = items.into_iter();
        let head = if with_head {
            let item = items.next().flatten();
            Head {
                version: item.as_ref().and_then(|i| get_n(i, VER)).unwrap_or(0),
                pending: item.as_ref().is_some_and(|i| i.contains_key(PENDING)),
            }
        } else {
            Head {
                version: 0,
                pending: false,
            }
        };
        let mut slots = BTreeMap::new();
        for (sk, item) in sks.iter().zip(items) {
            let slot = match item {
                Some(item) => slot_from_item(&item)?,
                None => Slot::empty(sk.clone()),
            };
            slots.insert(sk.clone(), slot);
        }
        Ok(Some((head, slots)))
    }

    /// Reads point keys in one serializable read: the live entry of each, in order.
    pub async fn get_many(&self, database: Uuid, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Entry>>> {
        let sks: BTreeSet<Vec<u8>> = keys.iter().map(|k| sort_key(k)).collect();
        for attempt in 0..MAX_ATTEMPTS {
            let now = now_ms();
            if let Some((_, slots)) = self.read_with_head(database, &sks, true).await? {
                return Ok(keys
                    .iter()
                    .map(|k| slots.get(&sort_key(k)).and_then(|s| s.get(k, now)).cloned())
                    .collect());
            }
            backoff(attempt).await;
        }
        Err(KvError::Unavailable(
            "reads keep conflicting with writes; retry".into(),
        ))
    }

    /// A consistent snapshot across every range.
    pub async fn snapshot_read(
        &self,
        database: Uuid,
        ranges: &[ReadRange],
    ) -> KvResult<Vec<Vec<Entry>>> {
        if ranges.iter().all(|r| is_point_range(&r.start, &r.end)) {
            let keys: Vec<Vec<u8>> = ranges.iter().map(|r| r.start.clone()).collect();
            let entries = self.get_many(database, &keys).await?;
            return Ok(entries
                .into_iter()
                .map(|e| e.into_iter().collect())
                .collect());
        }
        for attempt in 0..MAX_ATTEMPTS {
            let head = self.head(database).await?;
            let now = now_ms();
            let reads = ranges
                .iter()
                .map(|range| self.read_range(database, range, head, now));
            let results = futures_util::future::try_join_all(reads).await?;
            if results.iter().all(Option::is_some) {
                return Ok(results.into_iter().flatten().collect());
            }
            backoff(attempt.min(3)).await;
        }
        Err(KvError::Unavailable(
            "reads keep conflicting with writes; retry".into(),
        ))
    }

    /// One range as of version `head`; None if an item newer than `head` was seen.
    async fn read_range(
        &self,
        database: Uuid,
        range: &ReadRange,
        head: u64,
        now: i64,
    ) -> KvResult<Option<Vec<Entry>>> {
        let limit = range.limit.get() as usize;
        let mut out = Vec::new();
        if range.start.as_slice() >= range.end.as_slice() {
            return Ok(Some(out));
        }
        let (lower, upper) = range_bounds(&range.start, &range.end);
        let mut values = Item::from([(":pk".to_string(), AttributeValue::S(database.to_string()))]);
        let condition = match (lower, upper) {
            (Some(lo), Some(hi)) => {
                values.insert(":lo".into(), b(lo));
                values.insert(":hi".into(), b(hi));
                "pk = :pk AND sk BETWEEN :lo AND :hi"
            }
            (None, Some(hi)) => {
                values.insert(":hi".into(), b(hi));
                "pk = :pk AND sk <= :hi"
            }
            (Some(lo), None) => {
                values.insert(":lo".into(), b(lo));
                "pk = :pk AND sk >= :lo"
            }
            (None, None) => "pk = :pk",
        };
        let mut start_key: Option<Item> = None;
        loop {
            let page_limit = (limit - out.len() + 4).min(1000) as i32;
            let page = self
                .client
                .query()
                .table_name(&self.data_table)
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .scan_index_forward(!range.reverse)
                .limit(page_limit)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                let slot = slot_from_item(item)?;
                if slot.version > head {
                    return Ok(None);
                }
                let mut entries: Vec<Entry> = slot
                    .entries
                    .into_iter()
                    .filter(|e| in_range(e, range, now))
                    .collect();
                if range.reverse {
                    entries.reverse();
                }
                for entry in entries {
                    out.push(entry);
                    if out.len() == limit {
                        return Ok(Some(out));
                    }
                }
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => return Ok(Some(out)),
            }
        }
    }

    /// Commits an atomic write: all or nothing, with a strictly increasing versionstamp.
    pub async fn atomic_write(
        &self,
        database: Uuid,
        write: &AtomicWrite,
    ) -> KvResult<WriteOutcome> {
        let mut read_set: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut cached = self.cached_head(database);
        for attempt in 0..MAX_ATTEMPTS {
            let (head, snapshot) = match cached.take() {
                Some(head) if read_set.is_empty() => (head, BTreeMap::new()),
                _ => {
                    if read_set.is_empty() {
                        (self.head(database).await?, BTreeMap::new())
                    } else {
                        match self.read_with_head(database, &read_set, true).await? {
                            Some(read) => read,
                            None => {
                                backoff(attempt).await;
                                continue;
                            }
                        }
                    }
                }
            };
            let now = now_ms();
            let plan = match plan(write, &snapshot, head + 1, now)? {
                PlanOutcome::NeedRead(more) => {
                    read_set.extend(more);
                    continue;
                }
                PlanOutcome::CheckFailed(failed) => return Ok(WriteOutcome::CheckFailed(failed)),
                PlanOutcome::Ready(plan) => plan,
            };
            match self.commit(database, head, &plan, now).await? {
                CommitResult::Committed => {
                    self.remember_head(database, Some(plan.version));
                    return Ok(WriteOutcome::Committed(versionstamp(plan.version)));
                }
                CommitResult::ChecksFailed(failed) => return Ok(WriteOutcome::CheckFailed(failed)),
                CommitResult::HeadMoved(current) => {
                    self.remember_head(database, None);
                    if attempt > 0 {
                        backoff(attempt.min(4)).await;
                    }
                    // The next attempt plans on the head the failed condition saw.
                    if let Some(version) = current {
                        self.remember_head(database, Some(version));
                        cached = Some(version);
                    }
                }
                CommitResult::Contention => {
                    self.remember_head(database, None);
                    backoff(attempt).await;
                }
                CommitResult::Ambiguous(request) => {
                    self.remember_head(database, None);
                    if self.committed_by(database, plan.version, &request).await? {
                        // Ours. A large one may still need its items: head() finishes it.
                        self.head(database).await?;
                        return Ok(WriteOutcome::Committed(versionstamp(plan.version)));
                    }
                    backoff(attempt).await;
                }
            }
        }
        Err(KvError::Unavailable(
            "too many concurrent writes to this database; retry".into(),
        ))
    }

    async fn commit(
        &self,
        database: Uuid,
        head: u64,
        plan: &CommitPlan,
        now: i64,
    ) -> KvResult<CommitResult> {
        let parts = log_parts(&plan.log, now.max(0) as u64);
        let items = 1 + parts.len() + plan.puts.len() + plan.checks.len();
        // Too many items for one transaction: a large commit. The transaction then
        // holds the head (marked pending), the change record and the checks only;
        // the items follow in further transactions (`apply`), and whoever meets the
        // pending head first finishes them (`roll_forward`).
        let large = items > MAX_ITEMS_PER_COMMIT;
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            KvError::Internal(format!("TransactWriteItems request: {e}"))
        };
        let mut actions = Vec::with_capacity(items.min(MAX_ITEMS_PER_COMMIT));
        // 0: the head, on condition that no commit came in between.
        let request = Uuid::new_v4().to_string();
        let mut head_item = Self::head_key(database);
        head_item.insert(VER.into(), n(plan.version));
        head_item.insert(LOG_TIME.into(), n(now));
        head_item.insert(LOG_REQUEST.into(), AttributeValue::S(request.clone()));
        if large {
            head_item.insert(PENDING.into(), AttributeValue::Bool(true));
        }
        // On a failed condition the head comes back: its version spares the retry a
        // read, and its request token recognises this very commit, applied by an
        // earlier attempt of the same request (the SDK retries 5xx answers).
        let mut head_put = Put::builder()
            .table_name(&self.data_table)
            .set_item(Some(head_item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        head_put = if head == 0 {
            head_put.condition_expression(format!("attribute_not_exists({VER})"))
        } else {
            head_put
                .condition_expression(format!("{VER} = :head AND attribute_not_exists({PENDING})"))
                .expression_attribute_values(":head", n(head))
        };
        actions.push(
            TransactWriteItem::builder()
                .put(head_put.build().map_err(build)?)
                .build(),
        );
        // The change record (its stream feeds the backups).
        let total = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            let item = Item::from([
                (PK.into(), AttributeValue::S(database.to_string())),
                (SK.into(), b(log_sk(plan.version, i as u16))),
                (LOG_TIME.into(), n(now)),
                (LOG_PARTS.into(), n(total)),
                (LOG_MUTATIONS.into(), b(part)),
                (LOG_REQUEST.into(), AttributeValue::S(request.clone())),
                (TTL.into(), n(now / 1000 + self.log_retention_seconds)),
            ]);
            let put = Put::builder()
                .table_name(&self.log_table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(build)?;
            actions.push(TransactWriteItem::builder().put(put).build());
        }
        // The items, with the checks on them; then checks on items not written.
        let mut check_owner: Vec<Vec<u32>> = vec![Vec::new(); actions.len()];
        for put in plan.puts.iter().filter(|_| !large) {
            let mut builder = Put::builder()
                .table_name(&self.data_table)
                .set_item(Some(item_from_slot(database, &put.slot, now)));
            if !put.conds.is_empty() {
                let mut values = Item::new();
                let expr = condition(&put.conds, &mut values, now);
                builder = builder
                    .condition_expression(expr)
                    .set_expression_attribute_values(Some(values));
            }
            actions.push(
                TransactWriteItem::builder()
                    .put(builder.build().map_err(build)?)
                    .build(),
            );
            check_owner.push(put.conds.iter().map(|c| c.check_index).collect());
        }
        let checked_puts = plan
            .puts
            .iter()
            .filter(|p| large && !p.conds.is_empty())
            .map(|p| (&p.slot.sk, &p.conds));
        let checks = plan.checks.iter().map(|c| (&c.sk, &c.conds));
        for (sk, conds) in checked_puts.chain(checks) {
            let mut values = Item::new();
            let expr = condition(conds, &mut values, now);
            let cc = ConditionCheck::builder()
                .table_name(&self.data_table)
                .set_key(Some(Self::item_key(database, sk)))
                .condition_expression(expr)
                .set_expression_attribute_values(Some(values))
                .build()
                .map_err(build)?;
            actions.push(TransactWriteItem::builder().condition_check(cc).build());
            check_owner.push(conds.iter().map(|c| c.check_index).collect());
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .client_request_token(request.clone())
            .send()
            .await;
        let err = match result {
            Ok(_) if large && self.crash_after_intent => {
                return Err(KvError::Internal("simulated crash after the intent".into()))
            }
            Ok(_) if large => {
                let slots: Vec<Slot> = plan.puts.iter().map(|p| p.slot.clone()).collect();
                self.apply(database, plan.version, &slots, now).await?;
                return Ok(CommitResult::Committed);
            }
            Ok(_) => return Ok(CommitResult::Committed),
            Err(err) => err,
        };
        let (reasons, current_head): (Vec<String>, Option<&Item>) = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(e)) => (
                e.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_string())
                    .collect(),
                e.cancellation_reasons()
                    .first()
                    .and_then(|r| r.item.as_ref()),
            ),
            Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                return Ok(CommitResult::Contention)
            }
            _ => {
                let err = dynamo("TransactWriteItems", err);
                return match err {
                    KvError::Unavailable(_) => Ok(CommitResult::Ambiguous(request)),
                    other => Err(other),
                };
            }
        };
        let failed = |i: usize| {
            reasons
                .get(i)
                .is_some_and(|c| c == "ConditionalCheckFailed")
        };
        if failed(0) {
            let version = current_head.and_then(|h| get_n(h, VER));
            let ours = current_head
                .and_then(|h| h.get(LOG_REQUEST))
                .and_then(|r| r.as_s().ok())
                .is_some_and(|r| *r == request);
            if ours && version == Some(plan.version) {
                // An earlier attempt of this request committed. If it is a large
                // commit, its items may still be missing: head() finishes them.
                if large {
                    self.head(database).await?;
                }
                return Ok(CommitResult::Committed);
            }
            let pending = current_head.is_some_and(|h| h.contains_key(PENDING));
            return Ok(CommitResult::HeadMoved(version.filter(|_| !pending)));
        }
        let mut checks: Vec<u32> = (0..check_owner.len())
            .filter(|&i| failed(i))
            .flat_map(|i| check_owner[i].clone())
            .collect();
        if !checks.is_empty() {
            checks.sort_unstable();
            return Ok(CommitResult::ChecksFailed(checks));
        }
        if reasons.iter().any(|c| {
            c == "TransactionConflict"
                || c == "ThrottlingError"
                || c == "ProvisionedThroughputExceeded"
        }) {
            return Ok(CommitResult::Contention);
        }
        if (1..=total).any(failed) {
            // A change record with this version exists: the head and the log disagree.
            return Err(KvError::Internal(format!(
                "change record {} of database {database} already exists",
                plan.version
            )));
        }
        Err(KvError::Internal(format!(
            "transaction cancelled: {reasons:?}"
        )))
    }

    /// Whether the commit `version` exists and was sent with this request token
    /// (after an ambiguous failure). Retries its own read for a while: giving up
    /// here would leave the client unsure whether its write happened.
    async fn committed_by(&self, database: Uuid, version: u64, request: &str) -> KvResult<bool> {
        let mut last = None;
        for attempt in 0..8 {
            let read = self
                .client
                .get_item()
                .table_name(&self.log_table)
                .key(PK, AttributeValue::S(database.to_string()))
                .key(SK, b(log_sk(version, 0)))
                .consistent_read(true)
                .send()
                .await;
            match read {
                Ok(out) => {
                    return Ok(out
                        .item
                        .as_ref()
                        .and_then(|i| i.get(LOG_REQUEST))
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|r| r == request))
                }
                Err(e) => last = Some(dynamo("GetItem", e)),
            }
            backoff(attempt).await;
        }
        Err(last.unwrap_or_else(|| KvError::Unavailable("storage unavailable; retry".into())))
    }

    /// Writes the items of the large commit `version` (at most 100 per
    /// transaction; puts of fully determined content, so repeating them is
    /// harmless), then clears the pending mark on the head.
    async fn apply(&self, database: Uuid, version: u64, slots: &[Slot], now: i64) -> KvResult<()> {
        for chunk in slots.chunks(MAX_ITEMS_PER_COMMIT) {
            let actions = chunk
                .iter()
                .map(|slot| {
                    Put::builder()
                        .table_name(&self.data_table)
                        .set_item(Some(item_from_slot(database, slot, now)))
                        // Never over a later commit: if another process finished
                        // this commit and the database moved on, stop.
                        .condition_expression(format!("attribute_not_exists({VER}) OR {VER} <= :v"))
                        .expression_attribute_values(":v", n(version))
                        .build()
                        .map(|put| TransactWriteItem::builder().put(put).build())
                        .map_err(|e| KvError::Internal(format!("TransactWriteItems request: {e}")))
                })
                .collect::<KvResult<Vec<_>>>()?;
            // Idempotent, so transient failures are simply retried.
            let mut attempt = 0;
            loop {
                let sent = self
                    .client
                    .transact_write_items()
                    .set_transact_items(Some(actions.clone()))
                    .send()
                    .await;
                let Err(err) = sent else { break };
                let moved_on = matches!(
                    err.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(e))
                        if e.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
                );
                if moved_on {
                    return Ok(());
                }
                let conflict = matches!(
                    err.as_service_error(),
                    Some(TransactWriteItemsError::TransactionCanceledException(_))
                        | Some(TransactWriteItemsError::TransactionInProgressException(_))
                );
                if conflict && attempt < MAX_ATTEMPTS {
                    attempt += 1;
                    backoff(attempt.min(6)).await;
                    continue;
                }
                match dynamo("TransactWriteItems", err) {
                    KvError::Unavailable(_) if attempt < MAX_ATTEMPTS => attempt += 1,
                    other => return Err(other),
                }
                backoff(attempt.min(6)).await;
            }
        }
        let mut head_item = Self::head_key(database);
        head_item.insert(VER.into(), n(version));
        head_item.insert(LOG_TIME.into(), n(now));
        let done = self
            .client
            .put_item()
            .table_name(&self.data_table)
            .set_item(Some(head_item))
            .condition_expression(format!("{VER} = :v AND attribute_exists({PENDING})"))
            .expression_attribute_values(":v", n(version))
            .send()
            .await;
        match done {
            Ok(_) => Ok(()),
            // Someone else finished it first.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo("PutItem", e)),
        }
    }

    /// Finishes the large commit `version` that the head marks pending (its
    /// committer may have crashed): rebuilds every item it writes from its change
    /// record and applies them. Nothing else can commit meanwhile (the head is
    /// pending), so reading buckets now reads them as the commit found them, or
    /// already applied (`kv_ver = version`).
    async fn roll_forward(&self, database: Uuid, version: u64) -> KvResult<()> {
        tracing::info!(%database, version, "finishing a pending large commit");
        let parts = self.change_record(database, version).await?;
        let mut slots: BTreeMap<Vec<u8>, Slot> = BTreeMap::new();
        let buckets: BTreeSet<Vec<u8>> = parts
            .iter()
            .map(|e| sort_key(&e.key))
            .filter(|sk| subkv_kv::keys::is_bucket(sk))
            .collect();
        for sk in &buckets {
            let out = self
                .client
                .get_item()
                .table_name(&self.data_table)
                .set_key(Some(Self::item_key(database, sk)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo("GetItem", e))?;
            let slot = match out.item {
                Some(item) => slot_from_item(&item)?,
                None => Slot::empty(sk.clone()),
            };
            slots.insert(sk.clone(), slot);
        }
        let now = now_ms();
        for entry in &parts {
            let sk = sort_key(&entry.key);
            let slot = slots.entry(sk.clone()).or_insert_with(|| Slot::empty(sk));
            if slot.version == version {
                continue; // this bucket is already applied
            }
            if entry.kind == denokv_proto::backup::BackupKvMutationKind::MkClear as i32 {
                slot.remove(&entry.key);
            } else {
                slot.put(Entry {
                    key: entry.key.clone(),
                    value: entry.value.clone(),
                    encoding: entry.value_encoding as i64,
                    version,
                    expire_at_ms: (entry.expire_at_ms > 0).then_some(entry.expire_at_ms as i64),
                });
            }
        }
        let slots: Vec<Slot> = slots
            .into_values()
            .filter(|s| s.version != version)
            .map(|mut s| {
                s.version = version;
                s
            })
            .collect();
        self.apply(database, version, &slots, now).await
    }

    /// Every entry of the change record of `version`, in order.
    async fn change_record(
        &self,
        database: Uuid,
        version: u64,
    ) -> KvResult<Vec<BackupReplicationLogEntry>> {
        let mut entries = Vec::new();
        let mut start_key = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.log_table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :lo AND :hi")
                .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
                .expression_attribute_values(":lo", b(log_sk(version, 0)))
                .expression_attribute_values(":hi", b(log_sk(version, u16::MAX)))
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                let body = get_b(item, LOG_MUTATIONS).ok_or_else(|| malformed("log body"))?;
                let range = BackupMutationRange::decode(body).map_err(|_| malformed("log body"))?;
                entries.extend(range.entries);
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => break,
            }
        }
        if entries.is_empty() {
            return Err(KvError::Internal(format!(
                "database {database}: pending commit {version} has no change record"
            )));
        }
        Ok(entries)
    }

    /// Keys of expiring items whose deadline has passed (from the expiry index).
    pub async fn expired_items(&self, now: i64, limit: usize) -> KvResult<Vec<(Uuid, Vec<u8>)>> {
        let mut out = Vec::new();
        for shard in 0..EXPIRY_SHARDS {
            let mut start_key = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(&self.data_table)
                    .index_name(EXPIRY_INDEX)
                    .key_condition_expression(format!("{SHARD} = :s AND #exp <= :now"))
                    .expression_attribute_names("#exp", EXPIRE)
                    .expression_attribute_values(":s", AttributeValue::S(format!("x{shard}")))
                    .expression_attribute_values(":now", n(now))
                    .set_exclusive_start_key(start_key.take())
                    .send()
                    .await
                    .map_err(|e| dynamo("Query", e))?;
                for item in page.items() {
                    let db = item
                        .get(PK)
                        .and_then(|v| v.as_s().ok())
                        .and_then(|s| Uuid::parse_str(s).ok());
                    if let (Some(db), Some(sk)) = (db, get_b(item, SK)) {
                        out.push((db, sk.to_vec()));
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
                match page.last_evaluated_key {
                    Some(key) => start_key = Some(key),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Deletes the expired entries of one item through the normal commit path (so
    /// the change log records each as a deletion), on condition that each still
    /// holds the version that expired. Returns how many entries it deleted.
    pub async fn sweep_item(&self, database: Uuid, sk: &[u8]) -> KvResult<usize> {
        let sks = BTreeSet::from([sk.to_vec()]);
        let Some((_, slots)) = self.read_with_head(database, &sks, false).await? else {
            return Ok(0);
        };
        let now = now_ms();
        let expired: Vec<&Entry> = slots
            .values()
            .flat_map(|s| s.entries.iter())
            .filter(|e| !e.is_live(now))
            .collect();
        let mut swept = 0;
        for chunk in expired.chunks(10) {
            let write = AtomicWrite {
                checks: chunk
                    .iter()
                    .map(|e| denokv_proto::Check {
                        key: e.key.clone(),
                        // Checks treat an expired key as absent, so the check names
                        // "absent": a rewrite since would make the key live again.
                        versionstamp: None,
                    })
                    .collect(),
                mutations: chunk
                    .iter()
                    .map(|e| denokv_proto::Mutation {
                        key: e.key.clone(),
                        kind: denokv_proto::MutationKind::Delete,
                        expire_at: None,
                    })
                    .collect(),
                enqueues: Vec::new(),
            };
            if let WriteOutcome::Committed(_) = self.atomic_write(database, &write).await? {
                swept += chunk.len();
            }
        }
        Ok(swept)
    }

    /// A consistent query of a database's change records after commit `after`.
    fn log_after(
        &self,
        database: Uuid,
        after: u64,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.log_table)
            .key_condition_expression("pk = :pk AND sk > :after")
            .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
            .expression_attribute_values(":after", b(log_sk(after, u16::MAX)))
            .consistent_read(true)
    }

    /// The change log of a database after commit `after` (exclusive), oldest first,
    /// one [`LoggedCommit`] per commit with the entries of all its parts, at most
    /// `max_commits` of them, and no commit more once their encoded size reaches
    /// `max_bytes` (the first commit always comes whole). Consistent read. A commit is never returned in
    /// pieces: all parts of a change record are written by one transaction, so the
    /// query either ends after a whole commit or shows where the next one starts.
    pub async fn change_log(
        &self,
        database: Uuid,
        after: u64,
        max_commits: usize,
        max_bytes: usize,
    ) -> KvResult<Vec<LoggedCommit>> {
        let max_commits = max_commits.max(1);
        let mut bytes = 0usize;
        let mut commits: Vec<LoggedCommit> = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let page = self
                .log_after(database, after)
                .limit((max_commits + 1).min(1000) as i32)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                let (version, range) = log_item(item)?;
                if let Some(last) = commits.last_mut().filter(|l| l.version == version) {
                    bytes += range.encoded_len();
                    last.entries.extend(range.entries);
                } else if commits.len() == max_commits
                    || (!commits.is_empty() && bytes >= max_bytes)
                {
                    return Ok(commits);
                } else {
                    bytes += range.encoded_len();
                    commits.push(LoggedCommit {
                        version,
                        timestamp_ms: range.timestamp_ms,
                        entries: range.entries,
                    });
                }
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => return Ok(commits),
            }
        }
    }

    /// One page of a database's live entries in key order, for a backup snapshot:
    /// the entries of the items after sort key `after` (from the start if None),
    /// reading at most `max_items` items, and the sort key to continue after (None
    /// when the scan is complete). Tombstones and expired entries are left out.
    /// Each item is read consistently; the page as a whole is not a snapshot (the
    /// backup's logs cover whatever changes meanwhile).
    pub async fn live_entries_page(
        &self,
        database: Uuid,
        after: Option<&[u8]>,
        max_items: i32,
    ) -> KvResult<(Vec<Entry>, Option<Vec<u8>>)> {
        let mut query = self
            .client
            .query()
            .table_name(&self.data_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
            .consistent_read(true)
            .limit(max_items.clamp(1, 1000));
        if let Some(after) = after {
            query = query.set_exclusive_start_key(Some(Self::item_key(database, after)));
        }
        let page = query.send().await.map_err(|e| dynamo("Query", e))?;
        let now = now_ms();
        let mut entries = Vec::new();
        let mut last_sk = None;
        for item in page.items() {
            let slot = slot_from_item(item)?;
            entries.extend(slot.entries.into_iter().filter(|e| e.is_live(now)));
            last_sk = Some(slot.sk);
        }
        let next = match page.last_evaluated_key {
            Some(_) => last_sk,
            None => None,
        };
        Ok((entries, next))
    }

    /// Change records of a database after `after` (exclusive), oldest first.
    pub async fn change_records(
        &self,
        database: Uuid,
        after: u64,
        limit: i32,
    ) -> KvResult<Vec<(u64, BackupMutationRange)>> {
        let page = self
            .log_after(database, after)
            .limit(limit)
            .send()
            .await
            .map_err(|e| dynamo("Query", e))?;
        page.items().iter().map(log_item).collect()
    }
}

/// Creates the data and change-log tables if they do not exist (local stack).
pub async fn ensure_kv_tables(
    client: &Client,
    data_table: &str,
    log_table: &str,
) -> Result<(), String> {
    let attr = |name: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .map_err(|e| e.to_string())
    };
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .map_err(|e| e.to_string())
    };
    for (table, data) in [(data_table, true), (log_table, false)] {
        if client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .is_ok()
        {
            continue;
        }
        let mut create = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK, ScalarAttributeType::S)?)
            .attribute_definitions(attr(SK, ScalarAttributeType::B)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?);
        if data {
            create = create
                .attribute_definitions(attr(SHARD, ScalarAttributeType::S)?)
                .attribute_definitions(attr(EXPIRE, ScalarAttributeType::N)?)
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(EXPIRY_INDEX)
                        .key_schema(key(SHARD, KeyType::Hash)?)
                        .key_schema(key(EXPIRE, KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::KeysOnly)
                                .build(),
                        )
                        .build()
                        .map_err(|e| e.to_string())?,
                );
        } else {
            create = create.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::NewImage)
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
        create
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_through_items() {
        let db = Uuid::new_v4();
        let mut single = Slot::empty(b"\x02a\x00".to_vec());
        single.version = 5;
        single.put(Entry {
            key: b"\x02a\x00".to_vec(),
            value: vec![9],
            encoding: 3,
            version: 5,
            expire_at_ms: Some(77),
        });
        let item = item_from_slot(db, &single, 0);
        assert_eq!(slot_from_item(&item).unwrap(), single);
        assert!(item.contains_key(SHARD));

        let long = [vec![1u8; 1200], vec![0]].concat();
        let mut bucket = Slot::empty(sort_key(&long));
        bucket.version = 6;
        bucket.put(Entry {
            key: long,
            value: vec![],
            encoding: 1,
            version: 6,
            expire_at_ms: None,
        });
        let item = item_from_slot(db, &bucket, 0);
        assert_eq!(slot_from_item(&item).unwrap(), bucket);
        assert!(!item.contains_key(SHARD));

        let mut tomb = Slot::empty(b"\x02b\x00".to_vec());
        tomb.version = 7;
        let item = item_from_slot(db, &tomb, 1_000_000);
        assert_eq!(slot_from_item(&item).unwrap(), tomb);
        assert_eq!(get_n::<i64>(&item, TTL), Some(1000 + TOMBSTONE_SECONDS));
    }

    #[test]
    fn large_change_records_split_into_parts_that_fit_an_item() {
        let entry = |i: u8| BackupReplicationLogEntry {
            versionstamp: vec![i; 12],
            kind: 1,
            key: vec![i; 2000],
            value: vec![i; 65536],
            value_encoding: 3,
            expire_at_ms: 0,
        };
        let log: Vec<_> = (0..12).map(entry).collect();
        let parts = log_parts(&log, 5);
        assert!(parts.len() >= 3);
        let mut all = Vec::new();
        for part in &parts {
            assert!(part.len() <= LOG_PART_BYTES + 70_000);
            all.extend(
                BackupMutationRange::decode(part.as_slice())
                    .unwrap()
                    .entries,
            );
        }
        assert_eq!(all, log);
        assert_eq!(log_parts(&[], 1).len(), 1);
        assert!(log_sk(1, 0) < log_sk(1, 1) && log_sk(1, 1) < log_sk(2, 0));
    }

    #[test]
    fn conditions_name_each_check() {
        let mut values = Item::new();
        let expr = condition(
            &[
                Cond {
                    check_index: 3,
                    expect: Some(9),
                },
                Cond {
                    check_index: 4,
                    expect: None,
                },
            ],
            &mut values,
            10,
        );
        assert!(expr.contains("kv_ver = :c3"));
        assert!(expr.contains("attribute_not_exists(kv_ver) OR"));
        assert_eq!(values.get(":c3"), Some(&n(9)));
    }
}
