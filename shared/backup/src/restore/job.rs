//! A restore from start to end, across invocations: the restore function's loop,
//! free of Lambda and of the control table. A [`Job`] is what is stored between
//! steps; [`advance`] takes it as far as its time allows, storing every change
//! through a [`JobStore`] (conditioned on the job it read, so two invocations
//! never both advance one restore) after the [`RestoreSink`] acknowledged the
//! writes it stands for.
//!
//! Why a crash or a timeout anywhere neither loses nor duplicates: a step's
//! writes are idempotent (see `apply.rs`), and the job naming the next step is
//! stored only after they landed; an invocation that stops before storing it
//! leaves the previous job, whose step the next invocation redoes with the same
//! writes. The head is raised (idempotent, never lowered) before `Done` is
//! stored.

use super::ReadBucket;
use super::{plan::Scan, step, Cursor, Plan, RestoreError, RestorePoint, StepLimits, Target};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use subkv_dynamo_kv::{head_after, RestoreWrite};

/// Pages of names listed per scan step (1000 names each).
const SCAN_PAGES: usize = 10;

/// A restore, as stored between steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Job {
    /// Not begun: the bucket is read from the root for the target.
    New { root: String, target: Target },
    /// Checking every name (a large bucket takes several steps).
    Scanning { scan: Box<Scan>, now_ms: i64 },
    /// Writing the state at the plan's point, from the cursor on. `keys`: puts
    /// applied so far (progress; a key rewritten by a later step counts again),
    /// `head`: the head the restored entries need so far.
    Restoring {
        plan: Box<Plan>,
        cursor: Cursor,
        keys: u64,
        head: u64,
    },
    /// The database holds the state at `point`; its head is raised.
    Done { point: RestorePoint, keys: u64 },
}

impl Job {
    pub fn new(root: &str, target: Target) -> Self {
        Job::New {
            root: root.to_string(),
            target,
        }
    }

    /// The point being restored, once planned.
    pub fn point(&self) -> Option<RestorePoint> {
        match self {
            Job::Restoring { plan, .. } => Some(plan.point),
            Job::Done { point, .. } => Some(*point),
            _ => None,
        }
    }

    /// Puts applied so far.
    pub fn keys(&self) -> u64 {
        match self {
            Job::Restoring { keys, .. } | Job::Done { keys, .. } => *keys,
            _ => 0,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Job::Done { .. })
    }
}

/// The new database, as the restore writes it (the KV engine's restore path).
#[async_trait]
pub trait RestoreSink: Send + Sync {
    /// Applies one step's writes (idempotent).
    async fn apply(&self, writes: Vec<RestoreWrite>) -> Result<(), SinkFault>;
    /// Raises the database's head to at least `version` (never lowers it).
    async fn raise_head(&self, version: u64) -> Result<(), SinkFault>;
}

/// Where the job is kept between steps.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Replaces `previous` with `next`; `Err(Superseded)` if the stored job is no
    /// longer `previous` (another invocation advanced it, or the restore was
    /// cancelled): this invocation must stop.
    async fn save(&self, previous: &Job, next: &Job) -> Result<(), StoreFault>;
}

/// Why the new database refused or failed a write.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SinkFault {
    /// Trying again later may succeed (throttling, a timeout).
    #[error("{0}")]
    Transient(String),
    /// The backup cannot be restored into this store (an item too large).
    #[error("{0}")]
    Refused(String),
}

/// Why a job could not be stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreFault {
    #[error("the restore was advanced or cancelled elsewhere")]
    Superseded,
    #[error("{0}")]
    Transient(String),
}

/// Why [`advance`] stopped before the job was done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Stopped {
    /// The restore cannot succeed: the message is the tenant's (`failed`).
    #[error("{0}")]
    Failed(String),
    /// A fault worth retrying from the stored job later.
    #[error("{0}")]
    Transient(String),
    /// Another invocation has the job (or it was cancelled): nothing to do.
    #[error("superseded")]
    Superseded,
}

impl From<RestoreError> for Stopped {
    fn from(err: RestoreError) -> Self {
        if err.is_transient() {
            Stopped::Transient(err.to_string())
        } else {
            Stopped::Failed(err.to_string())
        }
    }
}

impl From<SinkFault> for Stopped {
    fn from(fault: SinkFault) -> Self {
        match fault {
            SinkFault::Transient(m) => Stopped::Transient(m),
            SinkFault::Refused(m) => Stopped::Failed(m),
        }
    }
}

impl From<StoreFault> for Stopped {
    fn from(fault: StoreFault) -> Self {
        match fault {
            StoreFault::Superseded => Stopped::Superseded,
            StoreFault::Transient(m) => Stopped::Transient(m),
        }
    }
}

/// Takes `job` one stored change at a time while `more()` says there is time
/// for another step (checked before each), and returns the job as stored last.
/// `now_ms`: the clock, read when the plan is begun (keys expired by then are
/// restored as absent).
pub async fn advance(
    mut job: Job,
    bucket: &dyn ReadBucket,
    sink: &dyn RestoreSink,
    store: &dyn JobStore,
    limits: StepLimits,
    now_ms: i64,
    more: &mut (dyn FnMut() -> bool + Send),
) -> Result<Job, Stopped> {
    while !job.is_done() && more() {
        let next = next_job(&job, bucket, sink, limits, now_ms).await?;
        store.save(&job, &next).await?;
        job = next;
    }
    Ok(job)
}

/// The job after one step; the step's writes (or the head) applied first.
async fn next_job(
    job: &Job,
    bucket: &dyn ReadBucket,
    sink: &dyn RestoreSink,
    limits: StepLimits,
    now_ms: i64,
) -> Result<Job, Stopped> {
    Ok(match job {
        Job::New { root, target } => Job::Scanning {
            scan: Box::new(Scan::start(bucket, root, *target).await?),
            now_ms,
        },
        Job::Scanning { scan, now_ms } => {
            let mut scan = scan.clone();
            if scan.run(bucket, SCAN_PAGES).await? {
                Job::Restoring {
                    plan: Box::new((*scan).finish(bucket, *now_ms).await?),
                    cursor: Cursor::start(),
                    keys: 0,
                    head: 0,
                }
            } else {
                Job::Scanning {
                    scan,
                    now_ms: *now_ms,
                }
            }
        }
        Job::Restoring {
            plan,
            cursor,
            keys,
            head,
        } if cursor.is_done() => {
            let point = subkv_kv::model::split_stamp(&plan.point.versionstamp);
            sink.raise_head((*head).max(head_after([point]))).await?;
            Job::Done {
                point: plan.point,
                keys: *keys,
            }
        }
        Job::Restoring {
            plan,
            cursor,
            keys,
            head,
        } => {
            let step = step(bucket, plan, cursor, limits).await?;
            let writes: Vec<RestoreWrite> = step.writes.into_iter().map(Into::into).collect();
            let puts: Vec<(u64, u16)> = writes
                .iter()
                .filter_map(|w| match w {
                    RestoreWrite::Put(e) => Some((e.version, e.seq)),
                    RestoreWrite::Delete(_) => None,
                })
                .collect();
            if !writes.is_empty() {
                sink.apply(writes).await?;
            }
            Job::Restoring {
                plan: plan.clone(),
                cursor: step.next,
                keys: keys + puts.len() as u64,
                head: (*head).max(head_after(puts)),
            }
        }
        Job::Done { .. } => job.clone(),
    })
}
