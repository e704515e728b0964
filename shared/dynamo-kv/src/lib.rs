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
//!
//! | module | what |
//! |---|---|
//! | `lib.rs` | [`DynamoKv`] and its constructors, the head cache, [`WriteOutcome`], [`LoggedCommit`], the constants |
//! | `items` | attribute names; slots as items (single entries, buckets, tombstones); checks as conditions; change-record parts; a failed call as a `KvError` |
//! | `read` | the head, the items a commit plans on, [`DynamoKv::get_many`], [`DynamoKv::snapshot_read`] (checked against the change log) |
//! | `commit` | [`DynamoKv::atomic_write`]: the retry loop, the commit transaction, an ambiguous outcome told from the change log |
//! | `cancellation` | what a cancelled commit transaction means, which checks failed (pure, unit-tested) |
//! | `large` | large commits: their items applied after the commit, a pending commit rolled forward |
//! | `resolve` | a pending commit that cannot be written whole: abandoned, or trimmed |
//! | `restore` | [`DynamoKv::restore_writes`] (a restore step's entries, with their source's versionstamps) and [`DynamoKv::raise_head`] |
//! | `expiry` | [`DynamoKv::expired_page`] (one page of a shard of the expiry index) and [`DynamoKv::sweep_items`] |
//! | `change_log` | [`DynamoKv::change_log`] (its items assembled into commits by [`CommitAssembly`], pure), [`DynamoKv::live_entries_page`], [`DynamoKv::change_records`] |
//! | `watches` | leases of open watches and their caps: [`DynamoKv::open_watch`], [`DynamoKv::close_watch`] |
//! | `tables` | [`ensure_kv_tables`] (local stack) |

mod cancellation;
mod change_log;
mod commit;
mod expiry;
mod items;
mod large;
mod purge;
mod read;
mod resolve;
mod restore;
mod tables;
mod watches;

pub use change_log::{whole_commits, CommitAssembly, LogPart};
pub use expiry::ShardCursor;
pub use items::stored_keys;
pub use purge::{deleted, Purged};
pub use restore::{head_after, RestoreWrite};
pub use tables::ensure_kv_tables;
pub use watches::{OrganizationWatches, WatchCaps};

use aws_sdk_dynamodb::Client;
use denokv_proto::backup::BackupReplicationLogEntry;
use denokv_proto::Versionstamp;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkv_core::config::{var, ConfigError, Env};
use subkv_kv::budget::Budget;
use uuid::Uuid;

pub const DEFAULT_DATA_TABLE: &str = subkv_core::config::DEFAULT_KV_DATA_TABLE;
pub const DEFAULT_LOG_TABLE: &str = "subkv-kv-log";
/// How long change records stay in the change log unless configured: 7 days.
pub const DEFAULT_LOG_RETENTION_SECONDS: i64 = 7 * 24 * 3600;
/// The sparse index of expiring items the sweeper reads.
pub const EXPIRY_INDEX: &str = "expiry";
/// Shards of the expiry index (its partition key is `x0`..`x7`).
pub const EXPIRY_SHARDS: u8 = 8;

/// Attempts of a commit that keeps losing against concurrent writes.
const MAX_ATTEMPTS: u32 = 40;

/// How long a snapshot read may start from a head version this instance saw
/// instead of reading the head: the read then checks the change log after that
/// version (`read.rs`), which holds the commits of at most this long, while a
/// read of the head costs a round trip. Correctness does not depend on it.
const HEAD_TRUST: Duration = Duration::from_millis(250);

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

pub struct DynamoKv {
    client: Client,
    data_table: String,
    log_table: String,
    log_retention_seconds: i64,
    /// What a commit may write (DynamoDB's limits; a test store may lift them).
    budget: Budget,
    /// Test hook: fail a large commit after its first transaction and this many
    /// transactions of items, as a crash would (tests/tests/kv_protocol.rs and
    /// kv_pending.rs prove others finish or resolve it).
    crash_after: Option<usize>,
    /// Other test hooks: failures no emulator produces.
    hooks: Hooks,
    /// Last head version this instance saw per database, and when: a blind write
    /// then needs no read (a stale value costs one failed condition and a
    /// re-read), nor does a snapshot read soon after ([`HEAD_TRUST`]).
    heads: Mutex<HashMap<Uuid, (u64, Instant)>>,
}

/// Test hooks of a [`DynamoKv`]; none is set outside tests.
#[derive(Default)]
struct Hooks {
    lose_first_answer: bool,
    lost_once: std::sync::atomic::AtomicBool,
    /// The transaction whose answer was lost, until it lands.
    lost: Mutex<Option<Vec<aws_sdk_dynamodb::types::TransactWriteItem>>>,
    fail_items_after: Option<usize>,
}

impl Hooks {
    /// Whether to lose this transaction's answer (keeping it to land later).
    fn lose_this_answer(&self, actions: &[aws_sdk_dynamodb::types::TransactWriteItem]) -> bool {
        use std::sync::atomic::Ordering;
        if !self.lose_first_answer || self.lost_once.swap(true, Ordering::SeqCst) {
            return false;
        }
        if let Ok(mut lost) = self.lost.lock() {
            *lost = Some(actions.to_vec());
        }
        true
    }

    /// The transaction whose answer was lost, to land now.
    fn late_original(&self) -> Option<Vec<aws_sdk_dynamodb::types::TransactWriteItem>> {
        self.lost.lock().ok()?.take()
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Waits before attempt `attempt + 1`: exponential, with jitter.
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
            budget: Budget::DYNAMODB,
            crash_after: None,
            hooks: Hooks::default(),
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
    pub fn crash_after_intent(self) -> Self {
        self.crash_after_items(0)
    }

    /// For tests only: every large commit stops after its first transaction and
    /// `transactions` transactions of its items.
    #[doc(hidden)]
    pub fn crash_after_items(mut self, transactions: usize) -> Self {
        self.crash_after = Some(transactions);
        self
    }

    /// For tests only: the first commit transaction is not sent and its answer
    /// is lost (as after a timeout); it lands just before the next one, as a
    /// delayed original would.
    #[doc(hidden)]
    pub fn lose_first_answer(mut self) -> Self {
        self.hooks.lose_first_answer = true;
        self
    }

    /// For tests only: writing a large commit's items fails (as throttling
    /// would) after its first transaction and this many transactions of items.
    #[doc(hidden)]
    pub fn fail_items_after(mut self, transactions: usize) -> Self {
        self.hooks.fail_items_after = Some(transactions);
        self
    }

    /// For tests only: commits are planned and written without sizing their
    /// items, as builds before the size checks did (groups of 100 items), to
    /// leave behind the pending commits such builds could.
    #[doc(hidden)]
    pub fn without_size_checks(mut self) -> Self {
        self.budget = Budget {
            max_item_bytes: usize::MAX,
            max_transaction_bytes: usize::MAX,
            ..Budget::DYNAMODB
        };
        self
    }

    /// The head version last seen for this database, if any.
    fn cached_head(&self, database: Uuid) -> Option<u64> {
        self.heads.lock().ok()?.get(&database).map(|(v, _)| *v)
    }

    /// The head version seen for this database within [`HEAD_TRUST`], if any.
    fn recent_head(&self, database: Uuid) -> Option<u64> {
        let heads = self.heads.lock().ok()?;
        let (version, seen) = heads.get(&database)?;
        (seen.elapsed() < HEAD_TRUST).then_some(*version)
    }

    /// Records a head version seen (never going back), or forgets the database's
    /// head (None). Only versions of finished commits: never a pending one.
    fn remember_head(&self, database: Uuid, version: Option<u64>) {
        if let Ok(mut heads) = self.heads.lock() {
            match version {
                Some(v) => {
                    let known = heads.entry(database).or_insert((v, Instant::now()));
                    if v >= known.0 {
                        *known = (v, Instant::now());
                    }
                }
                None => {
                    heads.remove(&database);
                }
            }
        }
    }
}
