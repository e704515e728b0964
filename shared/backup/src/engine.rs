//! The backup engine: moves each backup forward from its own cursor.
//!
//! One function (`backup-forward`) runs it two ways:
//! - on the change-log stream (event source mapping, partial batch responses): the
//!   stream only says *which* databases changed; for each, the engine reads what to
//!   write next from the change log after the backup's cursor (ordered, complete,
//!   idempotent), so duplicate or out-of-order deliveries change nothing;
//! - on a schedule (the catch-up): every enabled backup, so one that fell behind
//!   (a tenant bucket that was down, a batch that timed out) catches up by itself,
//!   and pending backups take their snapshot steps.
//!
//! A backup's life: `pending` with no cursor → the first snapshot begins (cursor =
//! the head then) → snapshot chunks, resumable, under a lease → once the scan is
//! complete and the logs reach the head read after it, the `differential` →
//! `active`. Meanwhile, and then for good, every commit after the cursor goes into
//! `logs/` objects: one object per pass over a database, never a commit split.
//!
//! A tenant's store problems never fail an invocation (which would hold the stream
//! shard, hence every other tenant, behind it): a refusal marks that backup
//! `failed`; anything transient is noted on the backup and retried by the next
//! delivery or catch-up. Only the engine's own infrastructure errors (DynamoDB,
//! KMS) are reported as batch item failures.

use crate::bucket::{Bucket, BucketFault, Connector, Target};
use crate::progress::{BackupState, DynamoProgress, Lost, Stale};
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subkv_core::control::locator::Locator;
use subkv_core::control::records::{now_rfc3339, BackupStatus};
use subkv_core::error::StoreError;
use subkv_core::secrets::{backup_context, SecretOpener};
use subkv_dynamo_kv::{now_ms, DynamoKv, LoggedCommit};
use subkv_kv::backup_format::{self as format, FormatError};
use subkv_kv::error::KvError;
use subkv_kv::model::versionstamp;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("KV store: {0}")]
    Kv(String),
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl From<KvError> for EngineError {
    fn from(e: KvError) -> Self {
        Self::Kv(e.detail())
    }
}

/// Time a snapshot step needs to be worth starting.
const MIN_STEP_TIME: Duration = Duration::from_secs(2);

/// Tunables (defaults suit Lambda; tests and benchmarks shrink them).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Most commits in one log object.
    pub max_commits_per_object: usize,
    /// No commit more is added to a log object once it holds this many bytes (a
    /// single commit is at most Deno's 800 KiB): peak memory is about twice it.
    pub max_object_bytes: usize,
    /// Data-table items read per snapshot chunk.
    pub snapshot_items_per_chunk: i32,
    /// How long a snapshot lease lasts; a step never starts a write in its last
    /// [`Self::lease_margin`].
    pub lease: Duration,
    pub lease_margin: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_commits_per_object: 1000,
            max_object_bytes: 8 << 20,
            snapshot_items_per_chunk: 1000,
            lease: Duration::from_secs(120),
            // Longer than a put may take (the S3 client's operation timeout).
            lease_margin: Duration::from_secs(40),
        }
    }
}

/// What one pass over a backup did (logged, and emitted as metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub commits_forwarded: u64,
    pub records_forwarded: u64,
    pub objects_written: u64,
    pub snapshot_chunks: u64,
    /// Milliseconds from the newest forwarded commit to its object being written.
    pub lag_ms: Option<u64>,
    /// The backup is now `active` (this pass wrote the differential).
    pub activated: bool,
    /// A transient store problem (retried later) or a refusal (now `failed`).
    pub problem: Option<String>,
    pub failed: bool,
}

pub struct Engine {
    kv: DynamoKv,
    control: DynamoProgress,
    opener: Arc<dyn SecretOpener>,
    connector: Connector,
    config: EngineConfig,
    /// Tenant buckets, built once per backup per cold start.
    buckets: Mutex<HashMap<Uuid, Arc<Bucket>>>,
    /// This instance's name as a lease holder.
    owner: String,
}

enum Step {
    /// Look again (state changed).
    Again,
    /// Nothing more to do now.
    Done,
}

impl Engine {
    pub fn new(
        kv: DynamoKv,
        control: DynamoProgress,
        opener: Arc<dyn SecretOpener>,
        connector: Connector,
        config: EngineConfig,
    ) -> Self {
        Self {
            kv,
            control,
            opener,
            connector,
            config,
            buckets: Mutex::new(HashMap::new()),
            owner: Uuid::new_v4().to_string(),
        }
    }

    pub fn control(&self) -> &DynamoProgress {
        &self.control
    }

    /// Brings the backup of `database` (if it has one) up to date, until `deadline`.
    pub async fn sync_database(
        &self,
        database: Uuid,
        deadline: Instant,
    ) -> Result<Option<(Locator, Report)>, EngineError> {
        let Some(at) = self.control.locate(database).await? else {
            return Ok(None);
        };
        Ok(Some((at, self.sync(&at, deadline).await?)))
    }

    /// Brings one backup as far forward as it can go before `deadline`.
    pub async fn sync(&self, at: &Locator, deadline: Instant) -> Result<Report, EngineError> {
        let mut report = Report::default();
        while Instant::now() < deadline {
            let Some(state) = self.control.load(at).await? else {
                break; // disabled: nothing more is written
            };
            if matches!(state.record.status, BackupStatus::Failed { .. }) {
                break;
            }
            let bucket = match self.bucket(&state).await? {
                Ok(bucket) => bucket,
                Err(fault) => {
                    self.fault(at, fault, &mut report).await?;
                    break;
                }
            };
            match self
                .step(at, &state, &bucket, deadline, &mut report)
                .await?
            {
                Ok(Step::Again) => continue,
                Ok(Step::Done) => break,
                Err(fault) => {
                    self.fault(at, fault, &mut report).await?;
                    break;
                }
            }
        }
        Ok(report)
    }

    async fn step(
        &self,
        at: &Locator,
        state: &BackupState,
        bucket: &Bucket,
        deadline: Instant,
        report: &mut Report,
    ) -> Result<Result<Step, BucketFault>, EngineError> {
        let Some(cursor) = state.cursor else {
            // The first snapshot begins: logs start after the head as it is now,
            // before the scan reads anything, so they leave no gap.
            let head = self.kv.head(at.database_id).await?;
            self.control.begin_snapshot(at, None, head, 1).await?.ok();
            return Ok(Ok(Step::Again));
        };
        let commits = self
            .kv
            .change_log(
                at.database_id,
                cursor,
                self.config.max_commits_per_object,
                self.config.max_object_bytes,
            )
            .await?;
        if !commits.is_empty() {
            // A page that stopped at a limit has more behind it; otherwise the pass
            // has caught up with what existed when it looked, and an active backup's
            // pass ends there (later commits come with their own deliveries), so a
            // busy database does not keep one invocation, and the tenants behind
            // it on the stream, for its whole budget.
            let bytes: usize = commits
                .iter()
                .flat_map(|c| c.entries.iter())
                .map(|e| e.encoded_len())
                .sum();
            let more = commits.len() >= self.config.max_commits_per_object
                || bytes >= self.config.max_object_bytes
                || state.record.status == BackupStatus::Pending;
            return self
                .forward(at, state, cursor, commits, bucket, report)
                .await
                .map(|step| step.map(|s| if more { s } else { Step::Done }));
        }
        // Nothing after the cursor: either the database did not move, or what it
        // did is no longer in the change log. A commit writes its head and its change
        // record together, so with the head read first, a record missing after it
        // was expired.
        let head = self.kv.head(at.database_id).await?;
        if head > cursor {
            let again = self
                .kv
                .change_log(at.database_id, cursor, 1, usize::MAX)
                .await?;
            return match again.first() {
                Some(c) if c.version == cursor + 1 => Ok(Ok(Step::Again)),
                _ => self.restart_snapshot(at, state, cursor, report).await,
            };
        }
        if state.record.status != BackupStatus::Pending {
            return Ok(Ok(Step::Done));
        }
        if let Some(stale) = state.stale {
            return self.empty_stale(at, state, stale, bucket).await;
        }
        match state.snapshot.end {
            None => {
                self.snapshot_step(at, state, bucket, deadline, report)
                    .await
            }
            Some(end) if cursor >= end => {
                // Snapshot complete and the logs reach past it: the differential,
                // then `active`.
                let object =
                    format::differential_object(&state.record.prefix, at.database_id, cursor);
                if let Err(fault) = bucket.put(&object.key, object.body).await {
                    return Ok(Err(fault));
                }
                let differential = hex::encode(versionstamp(cursor));
                let now = now_rfc3339();
                let activated = self
                    .control
                    .activate(at, state.snapshot.generation, &differential, &now)
                    .await?;
                if activated.is_ok() {
                    report.activated = true;
                    tracing::info!(backup = %at.backup_id, database = %at.database_id, differential = cursor, "backup active");
                }
                Ok(Ok(Step::Again))
            }
            // The change log has nothing between the cursor and the snapshot's end:
            // it expired before it was backed up.
            Some(_) => self.restart_snapshot(at, state, cursor, report).await,
        }
    }

    /// Writes the commits after the cursor as one log object, then moves the cursor.
    async fn forward(
        &self,
        at: &Locator,
        state: &BackupState,
        cursor: u64,
        commits: Vec<LoggedCommit>,
        bucket: &Bucket,
        report: &mut Report,
    ) -> Result<Result<Step, BucketFault>, EngineError> {
        // Versions are consecutive per database: a hole means the change log
        // expired (retention) before these commits were backed up.
        let contiguous = commits
            .iter()
            .zip(cursor + 1..)
            .take_while(|(c, want)| c.version == *want)
            .count();
        if contiguous == 0 {
            return self.restart_snapshot(at, state, cursor, report).await;
        }
        let commits: Vec<format::Commit> = commits
            .into_iter()
            .take(contiguous)
            .map(|c| format::Commit {
                version: c.version,
                timestamp_ms: c.timestamp_ms,
                entries: c.entries,
            })
            .collect();
        let last = commits.last().map_or(cursor, |c| c.version);
        let newest_ms = commits.iter().map(|c| c.timestamp_ms).max().unwrap_or(0);
        let records: u64 = commits.iter().map(|c| c.entries.len() as u64).sum();
        let count = commits.len() as u64;
        if let Some(object) = format::log_object(&state.record.prefix, at.database_id, commits)? {
            // Ledgered first: whatever happens next, a re-snapshot finds it.
            self.control.ledger_put(at, &object.key).await?;
            if let Err(fault) = bucket.put(&object.key, object.body).await {
                return Ok(Err(fault));
            }
            report.objects_written += 1;
        }
        let vs = hex::encode(versionstamp(last));
        let moved = self
            .control
            .advance(at, cursor, last, Some(&vs), &now_rfc3339())
            .await?;
        if moved.is_ok() {
            report.commits_forwarded += count;
            report.records_forwarded += records;
            report.lag_ms = Some((now_ms() as u64).saturating_sub(newest_ms));
        }
        Ok(Ok(Step::Again))
    }

    /// One resumable snapshot chunk, under the lease.
    async fn snapshot_step(
        &self,
        at: &Locator,
        state: &BackupState,
        bucket: &Bucket,
        deadline: Instant,
        report: &mut Report,
    ) -> Result<Result<Step, BucketFault>, EngineError> {
        // A chunk takes a page read and a put: leave it to the next pass when
        // this one is nearly out of time.
        if deadline.saturating_duration_since(Instant::now()) < MIN_STEP_TIME {
            return Ok(Ok(Step::Done));
        }
        let now = now_ms();
        let until = now + self.config.lease.as_millis() as i64;
        if let Err(Lost) = self.control.take_lease(at, &self.owner, now, until).await? {
            // Another invocation is taking this backup's snapshot steps.
            return Ok(Ok(Step::Done));
        }
        let snap = &state.snapshot;
        let (entries, next) = self
            .kv
            .live_entries_page(
                at.database_id,
                snap.after.as_deref(),
                self.config.snapshot_items_per_chunk,
            )
            .await?;
        // Read after the last page: every entry in the snapshot is at most this.
        let end = match next {
            None => Some(self.kv.head(at.database_id).await?),
            Some(_) => None,
        };
        let object = format::snapshot_object(
            &state.record.prefix,
            at.database_id,
            snap.generation,
            snap.seq,
            &entries,
        )?;
        // A put that could outlast the lease might land after another holder's
        // put of the same chunk: don't start one.
        let margin = self.config.lease_margin.as_millis() as i64;
        if now_ms() + margin > until {
            return Ok(Ok(Step::Again));
        }
        if let Err(fault) = bucket.put(&object.key, object.body).await {
            return Ok(Err(fault));
        }
        let recorded = self
            .control
            .snapshot_step(
                at,
                &self.owner,
                snap.generation,
                snap.seq,
                next.as_deref(),
                end,
            )
            .await?;
        if recorded.is_ok() {
            report.snapshot_chunks += 1;
        }
        Ok(Ok(Step::Again))
    }

    /// After a re-snapshot: empties (overwrites with empty bodies) the earlier
    /// generation's log objects, then its snapshot chunks. A fresh restore reads every
    /// object under `snapshots/` and replays every log from the first: without this,
    /// entries from before the gap would be replayed over the new snapshot.
    async fn empty_stale(
        &self,
        at: &Locator,
        state: &BackupState,
        stale: Stale,
        bucket: &Bucket,
    ) -> Result<Result<Step, BucketFault>, EngineError> {
        let prefix = &state.record.prefix;
        let below = format::log_key_prefix(prefix, at.database_id, stale.below);
        let objects = self.control.ledger_before(at, &below, 100).await?;
        if !objects.is_empty() {
            for key in objects {
                if let Err(fault) = bucket.put(&key, format::emptied_log_body()).await {
                    return Ok(Err(fault));
                }
                self.control.ledger_delete(at, &key).await?;
            }
            return Ok(Ok(Step::Again));
        }
        for seq in 0..=stale.chunks {
            let object =
                format::snapshot_object(prefix, at.database_id, stale.generation, seq, &[])?;
            if let Err(fault) = bucket.put(&object.key, object.body).await {
                return Ok(Err(fault));
            }
        }
        self.control
            .stale_cleared(at, state.snapshot.generation)
            .await?
            .ok();
        Ok(Ok(Step::Again))
    }

    /// The change log no longer holds what comes after the cursor: begin a new
    /// snapshot generation (logs from the head as it is now).
    async fn restart_snapshot(
        &self,
        at: &Locator,
        state: &BackupState,
        cursor: u64,
        report: &mut Report,
    ) -> Result<Result<Step, BucketFault>, EngineError> {
        let head = self.kv.head(at.database_id).await?;
        let generation = state.snapshot.generation + 1;
        tracing::warn!(backup = %at.backup_id, database = %at.database_id, cursor, head, generation,
            "change log expired before it was backed up: re-snapshotting");
        if self
            .control
            .begin_snapshot(at, Some(cursor), head, generation)
            .await?
            .is_ok()
        {
            let message = "the change log expired before it was backed up: taking a new snapshot";
            self.control.note_error(at, message).await?.ok();
            report.problem = Some(message.into());
        }
        Ok(Ok(Step::Again))
    }

    async fn fault(
        &self,
        at: &Locator,
        fault: BucketFault,
        report: &mut Report,
    ) -> Result<(), EngineError> {
        match fault {
            BucketFault::Refused(message) => {
                tracing::warn!(backup = %at.backup_id, database = %at.database_id, %message, "backup failed");
                self.control.fail(at, &message).await?.ok();
                report.failed = true;
                report.problem = Some(message);
            }
            BucketFault::Transient(message) => {
                tracing::warn!(backup = %at.backup_id, database = %at.database_id, %message, "backup will retry");
                self.control.note_error(at, &message).await?.ok();
                report.problem = Some(message);
            }
        }
        Ok(())
    }

    /// The tenant's bucket for this backup (built once per cold start).
    async fn bucket(
        &self,
        state: &BackupState,
    ) -> Result<Result<Arc<Bucket>, BucketFault>, EngineError> {
        let id = state.record.id;
        if let Some(bucket) = self.buckets.lock().ok().and_then(|b| b.get(&id).cloned()) {
            return Ok(Ok(bucket));
        }
        let record = &state.record;
        let secret = self
            .opener
            .open(
                &record.secret_access_key_ciphertext,
                &backup_context(&record.id.to_string(), &record.database_id.to_string()),
            )
            .await?;
        let target = Target {
            endpoint: record.endpoint.clone(),
            bucket: record.bucket_name.clone(),
            region: record.bucket_region.clone(),
            access_key_id: record.access_key_id.clone(),
            secret_access_key: secret,
        };
        let bucket = match Bucket::new(&self.connector, &target) {
            Ok(bucket) => Arc::new(bucket),
            Err(fault) => return Ok(Err(fault)),
        };
        if let Ok(mut buckets) = self.buckets.lock() {
            buckets.insert(id, bucket.clone());
        }
        Ok(Ok(bucket))
    }
}
