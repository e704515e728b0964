//! Faults: a tenant's store failing a write, and what keeps one backup's
//! trouble from the others (issue 11, item 5).
//!
//! - **A store's fault** ([`Engine::fault`]): a refusal marks the backup
//!   `failed`; a transient fault is noted (`lastError`) and retried, within a
//!   budget of [`EngineConfig::transient_budget`] with no write landing.
//! - **The stream's limit per put** ([`StreamPut`]): a stream delivery's batch
//!   waits for its slowest database, so on the stream a put may take at most
//!   [`EngineConfig::stream_put_base`] plus [`EngineConfig::stream_put_per_mib`]
//!   per MiB of its body (the catch-up keeps the S3 client's own timeouts).
//!   Beyond it the put is dropped and counts as a [`BucketFault::Timeout`].
//! - **The circuit breaker**: a timeout opens the backup's breaker (`breakerFaults`,
//!   `breakerUntil` in the control table, so every instance sees it). Stream
//!   deliveries skip a backup whose breaker is open; the catch-up leaves it alone
//!   until its backoff has passed ([`EngineConfig::breaker_base`] doubling to
//!   [`EngineConfig::breaker_max`]), then makes one pass: a write that lands
//!   closes the breaker, another timeout doubles the backoff. So a hanging store
//!   costs a stream batch one limited put, once per instance that meets it before
//!   the breaker is recorded, and then nothing until it answers again.
//! - **Parking** ([`Engine::park`]): an error no retry fixes ([`Recovery::Never`]:
//!   a malformed record, an object that cannot be built, a secret KMS cannot
//!   decrypt; [`Recovery::Operator`]: our configuration) is recorded on the
//!   backup and counted (`parked`, `parkedReason`, the fleet-wide metric
//!   `Parked`) instead of failing the stream batch, which would be retried with
//!   the shard held behind it. A `Never` error also marks the backup `failed`
//!   with a message saying where it stopped: nothing is skipped silently.
use super::{Engine, EngineConfig, EngineError, Report, Trigger};
use crate::bucket::BucketFault;
use crate::progress::{BackupState, Breaker, Update};
use crate::sink::ObjectSink;
use async_trait::async_trait;
use std::time::Duration;
use subkv_core::control::locator::Locator;
use subkv_core::error::{Recovery, StoreError};
use subkv_dynamo_kv::now_ms;
use subkv_kv::error::KvError;

/// A stream delivery's sink: each put limited in time.
pub(super) struct StreamPut<'a> {
    sink: &'a dyn ObjectSink,
    base: Duration,
    per_mib: Duration,
}

impl<'a> StreamPut<'a> {
    pub(super) fn new(sink: &'a dyn ObjectSink, config: &EngineConfig) -> Self {
        Self {
            sink,
            base: config.stream_put_base,
            per_mib: config.stream_put_per_mib,
        }
    }

    /// The longest a put of `bytes` may take.
    pub(super) fn limit(&self, bytes: usize) -> Duration {
        self.base + self.per_mib.mul_f64(bytes as f64 / (1u64 << 20) as f64)
    }
}

#[async_trait]
impl ObjectSink for StreamPut<'_> {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BucketFault> {
        let limit = self.limit(body.len());
        match tokio::time::timeout(limit, self.sink.put(key, body)).await {
            Ok(done) => done,
            // Dropped: the request may still land, which the format tolerates (the
            // same object is written again by the next pass).
            Err(_) => Err(BucketFault::Timeout(format!(
                "PutObject did not complete within {:.1} s: the store is slow or not answering",
                limit.as_secs_f64()
            ))),
        }
    }
}

/// A sink that counts the bytes of the puts that succeeded.
pub(super) struct Counted<'a> {
    sink: &'a dyn ObjectSink,
    bytes: std::sync::atomic::AtomicU64,
}

impl<'a> Counted<'a> {
    pub(super) fn new(sink: &'a dyn ObjectSink) -> Self {
        Self {
            sink,
            bytes: Default::default(),
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl ObjectSink for Counted<'_> {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BucketFault> {
        let len = body.len() as u64;
        self.sink.put(key, body).await?;
        self.bytes
            .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The fleet-wide metric of a parked error: one Embedded Metric Format line with
/// no dimension (the backup is a property of the line, for Logs Insights).
fn emit_parked(at: &Locator, kind: &str, failed: bool) {
    crate::metrics::print(crate::metrics::emf(
        &[("Parked", "Count")],
        serde_json::json!({
            "Parked": 1,
            "ParkedKind": kind,
            "BackupFailed": failed,
            "BackupId": at.backup_id.to_string(),
            "DatabaseId": at.database_id.to_string(),
        }),
    ));
}

/// What a parked error is, in a word (the metric line's `ParkedKind`).
fn kind(error: &EngineError) -> &'static str {
    match (error, error.recovery()) {
        (EngineError::Kv(KvError::Malformed(_)), _) => "malformed-record",
        (EngineError::Format(_), _) => "format",
        (EngineError::Store(StoreError::Kms { .. }), Recovery::Never) => "secret",
        (EngineError::Store(_), Recovery::Never) => "malformed-backup",
        _ => "operator",
    }
}

/// What the tenant reads (the `failed` message or `lastError`): where the
/// backup stopped and what happens next, no internal detail of our side.
fn tenant_message(at: &Locator, error: &EngineError, cursor: Option<u64>) -> String {
    let after = match cursor {
        Some(c) => format!(" after commit {c}"),
        None => String::new(),
    };
    let stop = format!(
        "the backup stops there rather than skip it; the operator is alerted, and \
         POST /v1/database_backups/{}/retry resumes it once repaired",
        at.backup_id
    );
    match error {
        EngineError::Kv(KvError::Malformed(detail)) => {
            format!("a stored record of this database cannot be read{after} ({detail}): {stop}")
        }
        EngineError::Format(e) => {
            format!("the log object{after} cannot be built ({e}): {stop}")
        }
        EngineError::Store(StoreError::Kms { .. }) if error.recovery() == Recovery::Never => {
            "the backup's secret access key cannot be decrypted (the stored ciphertext is not \
             valid for this backup): delete the backup and enable it again with its credentials"
                .into()
        }
        EngineError::Store(StoreError::Malformed(detail)) => {
            format!("the backup cannot go on: {detail}; the operator is alerted")
        }
        _ => "the backup engine cannot work on this backup for now (an error on our side; \
              the operator is alerted): it is tried again every minute"
            .into(),
    }
}

impl Engine {
    /// Whether this pass leaves the backup alone because its breaker is open:
    /// always on the stream, until the backoff has passed on the catch-up.
    pub(super) fn breaker_skips(
        &self,
        at: &Locator,
        state: &BackupState,
        trigger: Trigger,
    ) -> bool {
        let breaker = state.breaker;
        let skip = breaker.is_open()
            && match trigger {
                Trigger::Stream => true,
                Trigger::CatchUp => now_ms() < breaker.until_ms,
            };
        if skip {
            tracing::debug!(backup = %at.backup_id, ?trigger, faults = breaker.faults,
                until_ms = breaker.until_ms, "breaker open: backup skipped");
        }
        skip
    }

    /// The breaker after one more timeout at `now_ms`.
    pub(super) fn breaker_after_timeout(&self, was: Breaker, now_ms: i64) -> Breaker {
        let faults = was.faults.saturating_add(1);
        let doubled = self
            .config
            .breaker_base
            .saturating_mul(1u32 << (faults - 1).min(20));
        let backoff = doubled.min(self.config.breaker_max);
        Breaker {
            faults,
            until_ms: now_ms + backoff.as_millis() as i64,
        }
    }

    /// A pass that ended with `error`: `Err` again if running it again may fix it
    /// ([`Recovery::Retry`]: a stream batch item failure, retried soon); anything
    /// else is parked on the backup (see the module) and the pass ends `Ok`. If
    /// the backup cannot be told (the control table fails too), `error` is
    /// returned: then it is our outage, and the batch is retried.
    pub(super) async fn park(
        &self,
        at: &Locator,
        error: EngineError,
        report: &mut Report,
    ) -> Result<(), EngineError> {
        let recovery = error.recovery();
        if recovery == Recovery::Retry {
            return Err(error);
        }
        let cursor = match self.progress.load(at).await {
            Ok(Some(state)) => state.cursor,
            Ok(None) => return Ok(()), // deleted meanwhile: nothing to park
            Err(_) => None,            // its item may be what does not parse
        };
        let fail = recovery == Recovery::Never;
        let message = tenant_message(at, &error, cursor);
        match self.progress.park(at, &message, fail).await {
            Ok(Update::Applied) => {}
            Ok(Update::Lost) => return Ok(()), // deleted meanwhile
            Err(record) => {
                tracing::error!(backup = %at.backup_id, error = %error, record = %record,
                    "cannot park the error on the backup");
                return Err(error);
            }
        }
        let kind = kind(&error);
        tracing::error!(backup = %at.backup_id, database = %at.database_id, error = %error,
            kind, failed = fail, "error parked on the backup: no retry fixes it");
        emit_parked(at, kind, fail);
        report.problem = Some(message.clone());
        report.failed |= fail;
        report.parked = Some(message);
        Ok(())
    }

    /// A refusal marks the backup `failed`; a transient fault is noted (and begins
    /// a run of faults, unless one is under way), or marks it `failed` too once the
    /// run has outlasted [`EngineConfig::transient_budget`]; a timeout also opens
    /// the backup's breaker.
    pub(super) async fn fault(
        &self,
        at: &Locator,
        state: &BackupState,
        fault: BucketFault,
        report: &mut Report,
    ) -> Result<(), EngineError> {
        let now = now_ms();
        let budget = self.config.transient_budget;
        let fault = match (fault, state.error_since_ms) {
            (BucketFault::Transient(last) | BucketFault::Timeout(last), Some(since))
                if now.saturating_sub(since) >= budget.as_millis() as i64 =>
            {
                BucketFault::Refused(format!(
                    "gave up after {} of transient store errors with no write landing; the last: {last}",
                    budget_text(budget)
                ))
            }
            (fault, _) => fault,
        };
        match fault {
            BucketFault::Refused(message) => {
                tracing::warn!(backup = %at.backup_id, database = %at.database_id, %message, "backup failed");
                // Lost: the backup is gone, nothing to mark.
                let _: Update = self.progress.fail(at, &message).await?;
                report.failed = true;
                report.problem = Some(message);
            }
            BucketFault::Transient(message) => {
                tracing::warn!(backup = %at.backup_id, database = %at.database_id, %message, "backup will retry");
                let _: Update = self.progress.note_fault(at, &message, now).await?;
                report.problem = Some(message);
            }
            BucketFault::Timeout(message) => {
                let breaker = self.breaker_after_timeout(state.breaker, now);
                let backoff = Duration::from_millis((breaker.until_ms - now).max(0) as u64);
                let message = format!(
                    "{message}; stream deliveries skip this backup until a write lands, \
                     the scheduled catch-up tries it again in {}",
                    budget_text(backoff)
                );
                tracing::warn!(backup = %at.backup_id, database = %at.database_id, %message,
                    faults = breaker.faults, "backup store timed out: breaker open");
                let _: Update = self
                    .progress
                    .open_breaker(at, &message, now, breaker)
                    .await?;
                report.problem = Some(message);
            }
        }
        Ok(())
    }
}

/// "24 h", "15 min", "90 s": a duration as the tenant reads it.
fn budget_text(budget: Duration) -> String {
    let secs = budget.as_secs();
    if secs >= 3600 && secs % 3600 == 0 {
        format!("{} h", secs / 3600)
    } else if secs >= 600 && secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}
