//! One invocation's work on one database's restore: its job advanced while time
//! remains, then how the restore stands recorded on the database, which the
//! management API shows and KV Connect obeys (`pending` and `failed` refused).

use std::sync::Mutex;
use std::time::{Duration, Instant};
use subkv_backup::restore::{
    advance, Job, JobStore, ReadBucket, RestoreSink, StepLimits, Stopped, StoreFault,
};
use subkv_core::control::records::{
    DatabaseRestore, RestoreSource, RestoreStatus, RestoreStatusView,
};
use subkv_core::control::ControlTable;
use subkv_core::error::StoreError;
use uuid::Uuid;

/// Kept back from the invocation's deadline for the last step (one object read,
/// up to 1000 writes) and the status update.
pub const STEP_MARGIN: Duration = Duration::from_secs(30);

/// How often a working invocation records its progress on the database.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The database a restore writes, and where its restore is recorded.
pub struct Target<'a> {
    pub organization_id: Uuid,
    pub database_id: Uuid,
    pub source: RestoreSource,
    pub control: &'a dyn ControlTable,
}

/// What an invocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// The job as this invocation left it (done or not).
    Advanced(Job),
    /// The restore cannot succeed; the database says why (`failed`).
    Failed(String),
    /// A fault worth retrying: the next invocation resumes from the stored job.
    Retry(String),
    /// Another invocation has the job: nothing was done.
    Superseded,
}

/// Advances `job` until `deadline - STEP_MARGIN`, recording the restore's status
/// on the database every [`PROGRESS_EVERY`] and at the end: `pending` with the
/// keys written and the point once known (and why, if a fault worth retrying
/// stopped it), `active` when done, `failed` with the reason.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    target: &Target<'_>,
    job: Job,
    bucket: &dyn ReadBucket,
    sink: &dyn RestoreSink,
    jobs: &dyn JobStore,
    limits: StepLimits,
    now_ms: i64,
    deadline: Instant,
) -> Result<Ran, StoreError> {
    let stop = deadline.checked_sub(STEP_MARGIN).unwrap_or(deadline);
    let saved = Saved {
        inner: jobs,
        last: Mutex::new(job.clone()),
    };
    let mut job = job;
    let (ran, status) = loop {
        // In slices, so that progress shows while a long invocation works.
        let slice = stop.min(Instant::now() + PROGRESS_EVERY);
        let mut more = move || Instant::now() < slice;
        match advance(job, bucket, sink, &saved, limits, now_ms, &mut more).await {
            Ok(next) if next.is_done() => break (Ran::Advanced(next), RestoreStatus::Active),
            Ok(next) if Instant::now() < stop => {
                record(target, RestoreStatus::Pending { message: None }, &next).await?;
                job = next;
            }
            Ok(next) => {
                break (
                    Ran::Advanced(next),
                    RestoreStatus::Pending { message: None },
                )
            }
            Err(Stopped::Failed(message)) => {
                break (
                    Ran::Failed(message.clone()),
                    RestoreStatus::Failed { message },
                )
            }
            // Shown while it lasts, with the progress stored before it.
            Err(Stopped::Transient(message)) => {
                break (
                    Ran::Retry(message.clone()),
                    RestoreStatus::Pending {
                        message: Some(format!(
                            "retrying (the next run resumes where this one stopped): {message}"
                        )),
                    },
                )
            }
            Err(Stopped::Superseded) => return Ok(Ran::Superseded),
        }
    };
    let shown = saved.last.into_inner().unwrap_or_else(|e| e.into_inner());
    record(target, status, &shown).await?;
    Ok(ran)
}

/// The job store, remembering the job last stored: what the database shows
/// when a run stops early.
struct Saved<'a> {
    inner: &'a dyn JobStore,
    last: Mutex<Job>,
}

#[async_trait::async_trait]
impl JobStore for Saved<'_> {
    async fn save(&self, previous: &Job, next: &Job) -> Result<(), StoreFault> {
        self.inner.save(previous, next).await?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
        Ok(())
    }
}

/// Records that the restore cannot run at all (its source cannot be opened,
/// say): `failed` with the message.
pub async fn fail(target: &Target<'_>, message: String) -> Result<(), StoreError> {
    tracing::info!(database = %target.database_id, %message, "restore failed");
    let job = Job::New {
        root: String::new(),
        target: subkv_backup::restore::Target::Latest,
    };
    record(target, RestoreStatus::Failed { message }, &job).await
}

/// How the restore stands, on the database (what the API shows, KV Connect obeys).
async fn record(target: &Target<'_>, status: RestoreStatus, shown: &Job) -> Result<(), StoreError> {
    let restore = DatabaseRestore {
        source: target.source.clone(),
        versionstamp: shown.point().map(|p| hex::encode(p.versionstamp)),
        status: RestoreStatusView {
            status,
            keys_restored: shown.keys(),
        },
    };
    target
        .control
        .set_database_restore(target.organization_id, target.database_id, &restore)
        .await?;
    Ok(())
}
