//! `restore-database`: runs the pending restores (issue 14, docs/restore.md).
//!
//! A schedule invokes it every minute (the local stack's scheduler, every few
//! seconds). Each invocation reads the work list (the control table's `due`
//! index, partition `restore`), and takes the restores one at a time: it leases
//! one (so a later invocation passes it by while this one works), opens its
//! source bucket, advances its job until the invocation's time is up, records how
//! the restore stands on the database, and gives the lease back, or, once the
//! restore is active or failed, takes it off the list and deletes the sealed
//! secret. A crash or a timeout loses at most the step in flight: the lease
//! runs out and the next invocation resumes from the stored job.

use crate::run::{self, Ran, STEP_MARGIN};
use crate::store::{self, DynamoJobStore, KvSink};
use crate::Buckets;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subkv_backup::bucket::{Bucket, Target as BucketTarget};
use subkv_backup::format::root;
use subkv_backup::restore::{Job, StepLimits, Target};
use subkv_core::config::{var, ConfigError, Env};
use subkv_core::control::records::{RestorePointRequest, RestoreRequest};
use subkv_core::control::{ControlTable, DynamoControl};
use subkv_core::error::StoreError;
use subkv_core::runtime;
use subkv_core::secrets::restore_context;
use subkv_dynamo_kv::{now_ms, DynamoKv};
use uuid::Uuid;

/// How long one invocation restores when the runtime gives no deadline (the
/// local stack's `cargo lambda watch`), and at most otherwise: the function's
/// timeout (900 s) less the step margin and some.
pub const DEFAULT_BUDGET_SECONDS: u64 = 840;

/// What one invocation needs, built once per cold start.
pub struct Restorer {
    pub control: Arc<dyn ControlTable>,
    pub dynamo: aws_sdk_dynamodb::Client,
    pub table: String,
    pub kv: Arc<DynamoKv>,
    pub buckets: Buckets,
    pub limits: StepLimits,
    pub budget: Duration,
}

/// What an invocation did (its answer, and its log line).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Restores on the work list.
    pub pending: usize,
    /// Restores this invocation worked on.
    pub worked: usize,
    /// Of those, now active.
    pub active: usize,
    /// Of those, now failed.
    pub failed: usize,
    /// Held by another invocation, or left for lack of time.
    pub skipped: usize,
    /// Stopped by a fault worth retrying (the next invocation resumes).
    pub retrying: usize,
}

/// How one restore stands after an invocation's work on it.
enum Outcome {
    Ended { active: bool },
    Continues { retrying: bool },
    Gone,
}

impl Restorer {
    /// From the environment: the tables, the backup secrets key, the step size
    /// (`SUBKV_RESTORE_STEP_WRITES`) and the budget (`SUBKV_RESTORE_BUDGET_SECONDS`).
    pub async fn from_env() -> Result<Self, ConfigError> {
        let env = Env::process();
        let sdk = runtime::aws_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let table = env.control_table();
        let kv = DynamoKv::from_env(dynamo.clone(), &env)?;
        Ok(Self {
            control: Arc::new(DynamoControl::new(dynamo.clone(), table.clone())),
            dynamo,
            table,
            kv: Arc::new(kv),
            buckets: Buckets::from_env().await?,
            limits: StepLimits {
                max_writes: env.number_in(var::RESTORE_STEP_WRITES, 1..=1000, 1000)?,
                ..StepLimits::default()
            },
            budget: Duration::from_secs(env.number_in(
                var::RESTORE_BUDGET_SECONDS,
                1..=DEFAULT_BUDGET_SECONDS,
                DEFAULT_BUDGET_SECONDS,
            )?),
        })
    }

    /// Works on the pending restores until `stop` (no step begins after it).
    pub async fn tick(&self, stop: Instant) -> Result<Report, StoreError> {
        let pending = store::pending(&self.dynamo, &self.table).await?;
        let mut report = Report {
            pending: pending.len(),
            ..Report::default()
        };
        for database in pending {
            let left = stop.saturating_duration_since(Instant::now());
            if left.is_zero() {
                report.skipped += 1;
                continue;
            }
            let jobs = DynamoJobStore::new(self.dynamo.clone(), self.table.clone(), database);
            let now = now_ms();
            let until = now + (left + 2 * STEP_MARGIN).as_millis() as i64;
            if !jobs.claim(now, until).await? {
                report.skipped += 1;
                continue;
            }
            let outcome = self.restore(database, &jobs, stop).await;
            jobs.release(matches!(outcome, Ok(Outcome::Ended { .. })))
                .await?;
            match outcome? {
                Outcome::Ended { active } => {
                    report.worked += 1;
                    if active {
                        report.active += 1;
                    } else {
                        report.failed += 1;
                    }
                }
                Outcome::Continues { retrying } => {
                    report.worked += 1;
                    report.retrying += usize::from(retrying);
                }
                Outcome::Gone => {}
            }
        }
        Ok(report)
    }

    /// One invocation's work on one restore.
    async fn restore(
        &self,
        database: Uuid,
        jobs: &DynamoJobStore,
        stop: Instant,
    ) -> Result<Outcome, StoreError> {
        let Some((request, job)) = jobs.load_restore().await? else {
            return Ok(Outcome::Gone);
        };
        let target = run::Target {
            organization_id: request.organization_id,
            database_id: database,
            source: request.source.clone(),
            control: self.control.as_ref(),
        };
        let (bucket, root) = match self.open(&request).await? {
            Ok(opened) => opened,
            Err(message) => {
                run::fail(&target, message).await?;
                return Ok(Outcome::Ended { active: false });
            }
        };
        let job = match job {
            Some(job) => job,
            None => match point_of(&request.point) {
                Ok(point) => Job::new(&root, point),
                Err(message) => {
                    run::fail(&target, message).await?;
                    return Ok(Outcome::Ended { active: false });
                }
            },
        };
        let sink = KvSink::new(self.kv.clone(), database);
        let ran = run::run(
            &target,
            job,
            &bucket,
            &sink,
            jobs,
            self.limits,
            now_ms(),
            stop + STEP_MARGIN,
        )
        .await?;
        Ok(match ran {
            Ran::Advanced(job) if job.is_done() => Outcome::Ended { active: true },
            Ran::Advanced(_) | Ran::Superseded => Outcome::Continues { retrying: false },
            Ran::Failed(_) => Outcome::Ended { active: false },
            Ran::Retry(why) => {
                tracing::warn!(%database, error = %why, "restore step failed; the next invocation resumes");
                Outcome::Continues { retrying: true }
            }
        })
    }

    /// The restore's source bucket and the root of the database in it. `Ok(Err)`:
    /// the restore cannot run (the message says why, for the tenant).
    async fn open(
        &self,
        request: &RestoreRequest,
    ) -> Result<Result<(Bucket, String), String>, StoreError> {
        if let Some(id) = request.source.database_backup_id {
            let Some(backup) = self.control.get_backup(request.organization_id, id).await? else {
                return Ok(Err(format!(
                    "database backup {id} was deleted before it was restored"
                )));
            };
            let root = root(&backup.prefix, backup.database_id);
            return Ok(self
                .buckets
                .open(&backup)
                .await?
                .map(|bucket| (bucket, root))
                .map_err(|fault| fault.to_string()));
        }
        let (Some(s3), Some(ciphertext)) =
            (&request.source.s3, &request.secret_access_key_ciphertext)
        else {
            return Err(StoreError::Malformed(format!(
                "restore of database {}: no source",
                request.database_id
            )));
        };
        let secret = self
            .buckets
            .opener
            .open(
                ciphertext,
                &restore_context(&request.database_id.to_string()),
            )
            .await?;
        let target = BucketTarget {
            endpoint: s3.endpoint.clone(),
            bucket: s3.bucket_name.clone(),
            region: s3.bucket_region.clone(),
            access_key_id: s3.access_key_id.clone(),
            secret_access_key: secret,
        };
        Ok(Bucket::new(&self.buckets.connector, &target)
            .map(|bucket| (bucket, s3.prefix.clone()))
            .map_err(|fault| fault.to_string()))
    }
}

/// The point asked for, as the restore core takes it.
fn point_of(point: &RestorePointRequest) -> Result<Target, String> {
    Ok(match point {
        RestorePointRequest::Latest => Target::Latest,
        RestorePointRequest::Timestamp { ms } => Target::Timestamp(*ms),
        RestorePointRequest::Versionstamp { versionstamp } => {
            let mut bytes = [0u8; 10];
            hex::decode_to_slice(versionstamp, &mut bytes)
                .map_err(|_| format!("versionstamp {versionstamp:?} is not 20 hex digits"))?;
            Target::Versionstamp(bytes)
        }
    })
}

/// When an invocation stops beginning steps: its budget, or the runtime's
/// deadline less the step margin, whichever comes first.
pub fn stop_at(started: Instant, budget: Duration, deadline_ms: i64, now_ms: i64) -> Instant {
    let remaining = Duration::from_millis((deadline_ms - now_ms).max(0) as u64);
    match remaining.checked_sub(STEP_MARGIN) {
        // No deadline ahead (`cargo lambda watch` sends none that is): the budget.
        _ if remaining.is_zero() => started + budget,
        Some(left) => started + budget.min(left),
        None => started,
    }
}

/// The whole of `restore-database`'s `main`.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    runtime::serve_events(
        "restore-database",
        Restorer::from_env(),
        |restorer, event: LambdaEvent<serde_json::Value>| async move {
            let started = Instant::now();
            let stop = stop_at(
                started,
                restorer.budget,
                event.context.deadline as i64,
                now_ms(),
            );
            let report = restorer.tick(stop).await.map_err(|e| {
                tracing::error!(error = %e, "restore run failed");
                lambda_runtime::Error::from(e.to_string())
            })?;
            tracing::info!(
                pending = report.pending,
                worked = report.worked,
                active = report.active,
                failed = report.failed,
                skipped = report.skipped,
                retrying = report.retrying,
                elapsed_us = started.elapsed().as_micros() as u64,
                "restore run"
            );
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(&report)?)
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_stops_at_its_budget_or_before_its_deadline() {
        let started = Instant::now();
        let budget = Duration::from_secs(840);
        let now = 1_000_000;
        // No deadline (cargo lambda watch): the budget.
        assert_eq!(stop_at(started, budget, 0, now), started + budget);
        // 900 s left: the budget (840 s) comes first.
        assert_eq!(
            stop_at(started, budget, now + 900_000, now),
            started + budget
        );
        // 100 s left: 70 s of steps, then the margin.
        assert_eq!(
            stop_at(started, budget, now + 100_000, now),
            started + Duration::from_secs(70)
        );
        // Less than the margin left: no step.
        assert_eq!(stop_at(started, budget, now + 10_000, now), started);
    }

    #[test]
    fn the_point_asked_for_is_the_cores_target() {
        assert_eq!(point_of(&RestorePointRequest::Latest), Ok(Target::Latest));
        assert_eq!(
            point_of(&RestorePointRequest::Timestamp { ms: 7 }),
            Ok(Target::Timestamp(7))
        );
        assert_eq!(
            point_of(&RestorePointRequest::Versionstamp {
                versionstamp: "000000000000000a0001".into()
            }),
            Ok(Target::Versionstamp([0, 0, 0, 0, 0, 0, 0, 0x0a, 0, 1]))
        );
        assert!(point_of(&RestorePointRequest::Versionstamp {
            versionstamp: "xyz".into()
        })
        .is_err());
    }
}
