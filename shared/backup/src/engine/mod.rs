//! The backup engine: moves each backup forward from its own cursor.
//!
//! One function (`backup-forward`) runs it two ways:
//! - on the change-log stream (event source mapping, partial batch responses): the
//!   stream only says *which* databases changed; for each, the engine reads what to
//!   write next from the change log after the backup's cursor (ordered, complete,
//!   idempotent), so duplicate or out-of-order deliveries change nothing;
//! - on a schedule (the catch-up): the backups *due* a visit (pending, retrying a
//!   store fault, or left with work by their last pass), so that pending backups
//!   take their snapshot steps and one that fell behind (a tenant bucket that was
//!   down, a batch that timed out) catches up by itself; and one sixtieth of all
//!   backups (the sweep), so that every backup is looked at once an hour whatever
//!   happened to its stream deliveries. A pass that finds an `active` backup caught
//!   up and without fault takes it off the due list ([`Progress::settle`]): an
//!   idle backup costs one visit an hour.
//!
//! A backup's life: `pending` with no cursor → the first snapshot begins (cursor =
//! the head then) → snapshot chunks, resumable, under a lease → once the scan is
//! complete and the logs reach the head read after it, the `differential` →
//! `active`. Meanwhile, and then for good, every commit after the cursor goes into
//! `logs/` objects: one object per pass over a database, never a commit split.
//!
//! A tenant's store problems never fail an invocation (which would hold the stream
//! shard, hence every other tenant, behind it): a refusal marks that backup
//! `failed`; anything transient is noted on the backup (`lastError`) and retried by
//! the next delivery or catch-up, until a run of transient faults with no write
//! landing has lasted [`EngineConfig::transient_budget`] (24 h): then the backup
//! is `failed` too, with a message saying so. A `failed` backup is left alone
//! until its tenant asks for a retry through the API. Only the engine's own
//! infrastructure errors (DynamoDB, KMS) are reported as batch item failures.

//!
//! The engine reads through a [`ChangeSource`], keeps its state through a
//! [`Progress`] store and writes through the [`ObjectSink`] its [`Sinks`] open
//! for each backup: [`crate::function`] wires the real ones (DynamoDB, KMS, the
//! tenants' buckets), the unit tests in-memory fakes.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Engine`], a pass over a backup, log objects |
//! | `snapshot.rs` | the first snapshot's beginning (over what a deleted backup left in the same root, if anything), snapshot chunks, re-snapshots and emptying the earlier generation |
//! | `faults.rs` | a store's faults, and what keeps one backup's trouble from the others: the circuit breaker, the stream's limit per put, parking errors no retry fixes |
//! | `tests.rs` | the rules, against the fakes of `crate::fakes` |
//! | `due_tests.rs` | the due list, the negative cache and stuck states (fleet scale) |

#[cfg(test)]
mod due_tests;
mod faults;
mod snapshot;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_isolation;

use crate::bucket::BucketFault;
use crate::progress::{BackupState, Progress, Update};
use crate::sink::{ObjectSink, Opened, Sinks};
use crate::source::ChangeSource;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subkv_core::control::locator::Locator;
use subkv_core::control::records::{now_rfc3339, BackupStatus};
use subkv_core::error::{Recovery, StoreError};
use subkv_core::usage::{this_hour, Counts, UsageStore};
use subkv_dynamo_kv::{now_ms, LoggedCommit};
use subkv_kv::backup_format::{self as format, FormatError};
use subkv_kv::error::KvError;
use subkv_kv::model::versionstamp;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("KV store: {}", .0.detail())]
    Kv(#[from] KvError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

impl EngineError {
    /// Whether the pass can succeed if run again: only then is it an error of
    /// the pass (a stream batch item failure); anything else is parked on the
    /// backup ([`Engine::pass`]).
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Store(e) => e.recovery(),
            Self::Kv(KvError::Unavailable(_)) => Recovery::Retry,
            Self::Kv(KvError::Malformed(_)) | Self::Format(_) => Recovery::Never,
            Self::Kv(_) => Recovery::Operator,
        }
    }
}

/// Time a snapshot step, or a put emptying an earlier generation's object, needs
/// to be worth starting.
const MIN_STEP_TIME: Duration = Duration::from_secs(2);

/// Transient store faults become `failed` once they have gone on this long with no
/// write landing: a day covers a store's outage or maintenance window, a proxy
/// or clock problem being fixed, and still tells the tenant within a day that
/// their backup is not being written.
pub const TRANSIENT_BUDGET: Duration = Duration::from_secs(24 * 60 * 60);

/// The clock deadlines are checked against: tokio's, which is the system's but
/// for a test's paused clock (its puts then take exact, virtual time).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Whether a step that may take [`MIN_STEP_TIME`] can start before `deadline`.
fn time_for_a_step(deadline: Instant) -> bool {
    deadline.saturating_duration_since(now()) >= MIN_STEP_TIME
}

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
    /// How long a pass that holds the forwarding lease goes on forwarding a
    /// database that keeps committing (other deliveries for it end at once
    /// meanwhile) before it hands over to the next delivery. Short: the other
    /// databases of a stream batch wait for the slowest.
    pub hot_pass: Duration,
    /// How long transient store faults may go on, with no write landing, before
    /// the backup is marked `failed` (the tenant can then ask for a retry).
    pub transient_budget: Duration,
    /// How long a stream pass trusts that a database has no backup without
    /// looking again (a per-instance negative cache: most databases have none).
    /// A backup stays due for the catch-up at least this long after its snapshot
    /// began, so the commits an instance skipped meanwhile are still forwarded.
    pub absent_ttl: Duration,
    /// A backup `pending` longer than this is reported as overdue (a metric and
    /// an alarm: a snapshot of a million keys takes minutes).
    pub pending_bound: Duration,
    /// The longest a stream delivery waits for one put: this, plus
    /// [`Self::stream_put_per_mib`] per MiB of the body. Beyond it the put counts
    /// as a timeout (the other databases of the batch wait for the slowest).
    pub stream_put_base: Duration,
    pub stream_put_per_mib: Duration,
    /// How long the catch-up leaves a backup alone after its store timed out:
    /// this after the first timeout, doubling with each timeout in a row, at
    /// most [`Self::breaker_max`]. Stream deliveries skip it until a write lands.
    pub breaker_base: Duration,
    pub breaker_max: Duration,
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
            hot_pass: Duration::from_secs(2),
            transient_budget: TRANSIENT_BUDGET,
            absent_ttl: Duration::from_secs(60),
            pending_bound: Duration::from_secs(60 * 60),
            stream_put_base: Duration::from_secs(2),
            stream_put_per_mib: Duration::from_secs(1),
            breaker_base: Duration::from_secs(30),
            breaker_max: Duration::from_secs(15 * 60),
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
    /// Bytes of every object the pass put in the tenant's bucket (issue 15 §3:
    /// the database's `backupBytes`).
    pub bytes_written: u64,
    /// Milliseconds from the newest forwarded commit to its object being written.
    pub lag_ms: Option<u64>,
    /// The backup is now `active` (this pass wrote the differential).
    pub activated: bool,
    /// A transient store problem (retried later) or a refusal (now `failed`).
    pub problem: Option<String>,
    pub failed: bool,
    /// The backup has been `pending` longer than [`EngineConfig::pending_bound`].
    pub overdue: bool,
    /// A run of transient store faults is under way (the backup is retrying).
    pub retrying: bool,
    /// An error no retry fixes, parked on the backup (what it was told).
    pub parked: Option<String>,
}

/// What runs a pass: it sets the limits ([`Engine::pass`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// A change-log stream delivery: the other databases of its batch wait for
    /// this one, so each put is limited ([`EngineConfig::stream_put_base`]) and a
    /// backup whose breaker is open is skipped.
    Stream,
    /// The scheduled catch-up: puts have the S3 client's own timeouts, and a
    /// backup whose breaker is open is tried once its backoff has passed.
    CatchUp,
}

/// What [`Engine::sync_database`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseSync {
    /// The database has no enabled backup.
    NoBackup,
    /// Its backup, and what the pass over it did.
    Synced(Locator, Report),
}

pub struct Engine {
    source: Arc<dyn ChangeSource>,
    progress: Arc<dyn Progress>,
    sinks: Arc<dyn Sinks>,
    config: EngineConfig,
    /// This instance's name as a lease holder.
    owner: String,
    /// Databases found without a backup, and when (see [`EngineConfig::absent_ttl`]).
    absent: Mutex<HashMap<Uuid, Instant>>,
    /// Where each pass's bytes written are counted, if anywhere.
    usage: Option<Arc<dyn UsageStore>>,
}

/// Most databases the negative cache remembers (about 5 MB): past it, it starts
/// again empty.
const ABSENT_MAX: usize = 100_000;

/// How a pass over a backup ended, with the state it last read.
struct Ended {
    state: Option<BackupState>,
    /// Caught up: an `active` backup with nothing after its cursor.
    idle: bool,
    /// The deadline came while there was work left.
    out_of_time: bool,
}

/// What one step of a pass came to.
enum Step {
    /// Look again (state changed).
    Again,
    /// Nothing more to do now.
    Done,
    /// An `active` backup with nothing after its cursor: caught up.
    Idle,
    /// The tenant's store failed a write: the pass ends (see [`Engine::fault`]).
    Fault(BucketFault),
}

impl Engine {
    pub fn new(
        source: Arc<dyn ChangeSource>,
        progress: Arc<dyn Progress>,
        sinks: Arc<dyn Sinks>,
        config: EngineConfig,
    ) -> Self {
        Self {
            source,
            progress,
            sinks,
            config,
            owner: Uuid::new_v4().to_string(),
            absent: Mutex::new(HashMap::new()),
            usage: None,
        }
    }

    /// The backups' progress store (the catch-up lists every enabled backup).
    pub fn progress(&self) -> &dyn Progress {
        self.progress.as_ref()
    }

    /// A stream delivery's pass ([`Trigger::Stream`]) over the backup of
    /// `database`, if it has one, until `deadline`.
    /// Counts the bytes each pass writes in the database's usage.
    pub fn with_usage(mut self, usage: Arc<dyn UsageStore>) -> Self {
        self.usage = Some(usage);
        self
    }

    /// Adds a pass's bytes to its database's usage of this hour: one
    /// `UpdateItem`, beside the pass's own ledger and cursor writes. A failed
    /// write is logged and its bytes are not counted (the pass is not redone
    /// for it).
    async fn count_bytes(&self, at: &Locator, report: &Report) {
        let Some(usage) = &self.usage else {
            return;
        };
        if report.bytes_written == 0 {
            return;
        }
        let counts = Counts {
            backup_bytes: report.bytes_written,
            ..Counts::default()
        };
        let hour = this_hour();
        if let Err(error) = usage
            .add(at.organization_id, at.database_id, hour, &counts)
            .await
        {
            tracing::warn!(backup = %at.backup_id, %error, bytes = report.bytes_written, "counting backup bytes failed");
        }
    }

    pub async fn sync_database(
        &self,
        database: Uuid,
        deadline: Instant,
    ) -> Result<DatabaseSync, EngineError> {
        if self.known_absent(database) {
            return Ok(DatabaseSync::NoBackup);
        }
        let Some(at) = self.progress.locate(database).await? else {
            let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
            if absent.len() >= ABSENT_MAX {
                absent.clear();
            }
            absent.insert(database, now());
            return Ok(DatabaseSync::NoBackup);
        };
        let report = self.pass(&at, deadline, Trigger::Stream).await?;
        Ok(DatabaseSync::Synced(at, report))
    }

    /// Whether `database` was found without a backup less than
    /// [`EngineConfig::absent_ttl`] ago.
    fn known_absent(&self, database: Uuid) -> bool {
        let absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        absent
            .get(&database)
            .is_some_and(|seen| now().saturating_duration_since(*seen) < self.config.absent_ttl)
    }

    /// The catch-up's pass ([`Trigger::CatchUp`]) over one backup.
    pub async fn sync(&self, at: &Locator, deadline: Instant) -> Result<Report, EngineError> {
        self.pass(at, deadline, Trigger::CatchUp).await
    }

    /// Brings one backup as far forward as it can go before `deadline`.
    ///
    /// Log objects are written under the backup's forwarding lease, so that
    /// racing passes (a stream delivery and the catch-up, or two deliveries) do
    /// not write the same commits twice: a pass that finds the lease taken ends
    /// at once. The holder gives it back when it has caught up, then looks at the
    /// change log once more — the commits of a delivery that ended at once are
    /// there — and goes on while there are more, for at most
    /// [`EngineConfig::hot_pass`].
    ///
    /// A pass that leaves work behind (out of time, or a database still
    /// committing when its hot pass ends) marks the backup due, so that the
    /// catch-up goes on with it even if no delivery comes; one that finds it
    /// caught up takes it off the due list.
    ///
    /// `Err` only for what running the pass again may fix (DynamoDB or KMS busy
    /// or not answering: [`Recovery::Retry`]); an error no retry fixes is parked
    /// on the backup and the pass ends `Ok` (`report.parked`).
    pub async fn pass(
        &self,
        at: &Locator,
        deadline: Instant,
        trigger: Trigger,
    ) -> Result<Report, EngineError> {
        let mut report = Report::default();
        let passed = self.passes(at, deadline, trigger, &mut report).await;
        self.count_bytes(at, &report).await;
        if let Err(error) = passed {
            self.park(at, error, &mut report).await?;
        }
        Ok(report)
    }

    async fn passes(
        &self,
        at: &Locator,
        deadline: Instant,
        trigger: Trigger,
        report: &mut Report,
    ) -> Result<(), EngineError> {
        let started = now();
        loop {
            let mut forwarding = false;
            let result = self
                .run(at, deadline, trigger, started, report, &mut forwarding)
                .await;
            if forwarding {
                // Lost only if it ran out meanwhile; either way it is not ours now.
                let _: Update = self.progress.release_forwarding(at, &self.owner).await?;
            }
            let mut ended = result?;
            if forwarding {
                let more = self.more_to_forward(at).await?;
                let hot = now().saturating_duration_since(started) >= self.config.hot_pass;
                if more && !hot && now() < deadline {
                    continue;
                }
                ended.out_of_time |= more;
            }
            return self.settle(at, &ended, report).await;
        }
    }

    /// Keeps the due list right after a pass, and reports stuck states.
    async fn settle(
        &self,
        at: &Locator,
        ended: &Ended,
        report: &mut Report,
    ) -> Result<(), EngineError> {
        let Some(state) = &ended.state else {
            return Ok(());
        };
        let now_ms = now_ms();
        let since = |ms: i64| Duration::from_millis(now_ms.saturating_sub(ms).max(0) as u64);
        // This pass met a transient fault (the last state read may be older than
        // a write that landed since, so it is not asked).
        report.retrying = report.problem.is_some() && !report.failed;
        report.overdue = state.record.status == BackupStatus::Pending
            && state
                .pending_since_ms
                .is_some_and(|ms| since(ms) >= self.config.pending_bound);
        if ended.out_of_time && !state.due {
            let _: Update = self.progress.mark_due(at).await?;
        } else if ended.idle
            && state.due
            && state.error_since_ms.is_none()
            && state
                .pending_since_ms
                .is_none_or(|ms| since(ms) >= self.config.absent_ttl)
        {
            if let Some(cursor) = state.cursor {
                // Lost: it moved or faulted meanwhile; the next visit looks again.
                let _: Update = self.progress.settle(at, cursor).await?;
            }
        }
        Ok(())
    }

    /// Steps until the backup is done for now, faulted, or out of time.
    ///
    /// A stream delivery gives a pending backup's own work (snapshot chunks,
    /// emptying an earlier generation) at most [`EngineConfig::hot_pass`] from
    /// the pass's `started`: the other databases of its batch wait for it. The
    /// catch-up, which visits a pending backup every minute, does the rest.
    async fn run(
        &self,
        at: &Locator,
        deadline: Instant,
        trigger: Trigger,
        started: Instant,
        report: &mut Report,
        forwarding: &mut bool,
    ) -> Result<Ended, EngineError> {
        let mut ended = Ended {
            state: None,
            idle: false,
            out_of_time: false,
        };
        loop {
            if now() >= deadline {
                ended.out_of_time = true;
                break;
            }
            let Some(state) = self.progress.load(at).await? else {
                ended.state = None;
                break; // disabled: nothing more is written
            };
            if matches!(state.record.status, BackupStatus::Failed { .. })
                || self.breaker_skips(at, &state, trigger)
            {
                // Left alone: until the tenant asks for a retry, or until the
                // breaker's backoff has passed (the catch-up then tries it).
                ended.state = None;
                break;
            }
            let state = ended.state.insert(state);
            if trigger == Trigger::Stream
                && state.record.status == BackupStatus::Pending
                && now().saturating_duration_since(started) >= self.config.hot_pass
            {
                ended.out_of_time = true;
                break;
            }
            let opened = match self.sinks.open(&state.record).await? {
                Opened::Sink(sink) => sink,
                Opened::Fault(fault) => {
                    self.fault(at, state, fault, report).await?;
                    break;
                }
            };
            let limited = faults::StreamPut::new(opened.as_ref(), &self.config);
            let sink = faults::Counted::new(match trigger {
                Trigger::Stream => &limited,
                Trigger::CatchUp => opened.as_ref(),
            });
            let stepped = self
                .step(at, state, &sink, deadline, report, forwarding)
                .await;
            report.bytes_written += sink.bytes();
            match stepped? {
                Step::Again => continue,
                Step::Done => break,
                Step::Idle => {
                    ended.idle = true;
                    break;
                }
                Step::Fault(fault) => {
                    self.fault(at, state, fault, report).await?;
                    break;
                }
            }
        }
        Ok(ended)
    }

    /// Whether the change log holds commits after the backup's cursor.
    async fn more_to_forward(&self, at: &Locator) -> Result<bool, EngineError> {
        let Some(state) = self.progress.load(at).await? else {
            return Ok(false);
        };
        if matches!(state.record.status, BackupStatus::Failed { .. }) {
            return Ok(false);
        }
        let Some(cursor) = state.cursor else {
            return Ok(false);
        };
        let next = self
            .source
            .change_log(at.database_id, cursor, 1, usize::MAX)
            .await?;
        Ok(!next.is_empty())
    }

    async fn step(
        &self,
        at: &Locator,
        state: &BackupState,
        sink: &dyn ObjectSink,
        deadline: Instant,
        report: &mut Report,
        forwarding: &mut bool,
    ) -> Result<Step, EngineError> {
        let Some(cursor) = state.cursor else {
            return self.begin(at, state).await;
        };
        // A pending backup's own work comes first, so that it makes progress however
        // fast commits arrive (they wait in the change log meanwhile): emptying an
        // earlier generation, the snapshot's chunks, then, once the logs reach the
        // snapshot's end, the differential.
        if state.record.status == BackupStatus::Pending {
            if let Some(stale) = state.stale {
                return self.empty_stale(at, state, stale, sink, deadline).await;
            }
            match state.snapshot.end {
                None => return self.snapshot_step(at, state, sink, deadline, report).await,
                Some(end) if cursor >= end => {
                    return self.differential(at, state, cursor, sink, report).await
                }
                // The logs must reach the snapshot's end first: forward them.
                Some(_) => {}
            }
        }
        let commits = self
            .source
            .change_log(
                at.database_id,
                cursor,
                self.config.max_commits_per_object,
                self.config.max_object_bytes,
            )
            .await?;
        if !commits.is_empty() {
            if !*forwarding {
                let at_ms = now_ms();
                let left = deadline.saturating_duration_since(now());
                let until = at_ms + (left + self.config.lease_margin).as_millis() as i64;
                match self
                    .progress
                    .take_forwarding(at, &self.owner, at_ms, until)
                    .await?
                {
                    // Read again under the lease: the last holder may have
                    // written these commits already.
                    Update::Applied => {
                        *forwarding = true;
                        return Ok(Step::Again);
                    }
                    // Another pass is writing this backup's logs; it looks again
                    // once it has caught up.
                    Update::Lost => {
                        tracing::debug!(backup = %at.backup_id, "another pass holds the forwarding lease");
                        return Ok(Step::Done);
                    }
                }
            }
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
                .forward(at, state, cursor, commits, sink, report)
                .await
                .map(|step| match step {
                    Step::Again if !more => Step::Done,
                    step => step,
                });
        }
        // Nothing after the cursor: either the database did not move, or what it
        // did is no longer in the change log. A commit writes its head and its change
        // record together, so with the head read first, a record missing after it
        // was expired.
        let head = self.source.head(at.database_id).await?;
        if head > cursor {
            let again = self
                .source
                .change_log(at.database_id, cursor, 1, usize::MAX)
                .await?;
            return match again.first() {
                Some(c) if c.version == cursor + 1 => Ok(Step::Again),
                _ => self.restart_snapshot(at, state, cursor, report).await,
            };
        }
        match (
            state.record.status == BackupStatus::Pending,
            state.snapshot.end,
        ) {
            // The change log has nothing between the cursor and the snapshot's end:
            // it expired before it was backed up.
            (true, Some(end)) if cursor < end => {
                self.restart_snapshot(at, state, cursor, report).await
            }
            (false, _) if state.record.status == BackupStatus::Active => Ok(Step::Idle),
            _ => Ok(Step::Done),
        }
    }

    /// Snapshot complete and the logs reach past it: the differential, then `active`.
    async fn differential(
        &self,
        at: &Locator,
        state: &BackupState,
        cursor: u64,
        sink: &dyn ObjectSink,
        report: &mut Report,
    ) -> Result<Step, EngineError> {
        if state.snapshot.start == Some(cursor) {
            // No commit was forwarded in this generation, so no log object holds the
            // differential's own commit (after a re-snapshot, the earlier logs are
            // emptied): denokv's first sync would then replay no entry at all and
            // end at no commit (`pitr info` and `checkout` fail). A marker commit at
            // the differential gives it the end to stop at: one entry, the deletion
            // of the empty key, which no Deno KV key is (issue 11, item 7).
            let marker = format::differential_marker(
                &state.record.prefix,
                at.database_id,
                cursor,
                now_ms() as u64,
            )?;
            self.progress.ledger_put(at, &marker.key).await?;
            if let Err(fault) = sink.put(&marker.key, marker.body).await {
                return Ok(Step::Fault(fault));
            }
        }
        let object = format::differential_object(&state.record.prefix, at.database_id, cursor);
        if let Err(fault) = sink.put(&object.key, object.body).await {
            return Ok(Step::Fault(fault));
        }
        let differential = hex::encode(versionstamp(cursor));
        let now = now_rfc3339();
        let activated = self
            .progress
            .activate(at, state.snapshot.generation, &differential, &now)
            .await?;
        if activated.applied() {
            report.activated = true;
            tracing::info!(backup = %at.backup_id, database = %at.database_id, differential = cursor, "backup active");
        }
        Ok(Step::Again)
    }

    /// Writes the commits after the cursor as one log object, then moves the cursor.
    async fn forward(
        &self,
        at: &Locator,
        state: &BackupState,
        cursor: u64,
        commits: Vec<LoggedCommit>,
        sink: &dyn ObjectSink,
        report: &mut Report,
    ) -> Result<Step, EngineError> {
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
            self.progress.ledger_put(at, &object.key).await?;
            if let Err(fault) = sink.put(&object.key, object.body).await {
                return Ok(Step::Fault(fault));
            }
            report.objects_written += 1;
        }
        let vs = hex::encode(versionstamp(last));
        let moved = self
            .progress
            .advance(at, cursor, last, Some(&vs), &now_rfc3339())
            .await?;
        if moved.applied() {
            report.commits_forwarded += count;
            report.records_forwarded += records;
            report.lag_ms = Some((now_ms() as u64).saturating_sub(newest_ms));
        }
        Ok(Step::Again)
    }
}
