//! Commits: the retry loop of an atomic write, the one TransactWriteItems that
//! makes a commit (head, change record, items, checks), and what its failure
//! means ([`crate::cancellation`] reads a cancellation).

use crate::cancellation::{classify_cancellation, ActionLayout, Cancellation, Reason};
use crate::items::{
    condition, dynamo, log_sk, slot_write, validation_refusal, GONE, LOG_MUTATIONS, LOG_PARTS,
    LOG_REQUEST, LOG_TIME, PENDING, PK, SK, TTL, VER,
};
use crate::large::{request_error as build_error, Finished, PendingRecord};
use crate::{backoff, now_ms, DynamoKv, WriteOutcome, MAX_ATTEMPTS};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use denokv_proto::AtomicWrite;
use std::collections::{BTreeMap, BTreeSet};
use subkv_core::dynamo::{b, n, Item};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::model::{versionstamp, Slot};
use subkv_kv::plan::{plan_within, CommitPlan, Cond, PlanOutcome};
use uuid::Uuid;

pub(crate) enum CommitResult {
    Committed,
    /// The head is no longer the one the commit was planned on. Carries the head's
    /// version as the failed condition saw it, unless a large commit is pending.
    HeadMoved(Option<u64>),
    ChecksFailed(Vec<u32>),
    Contention,
    /// The transaction may or may not have happened (a timeout or a 5xx after
    /// the SDK's retries); the change record tells.
    Ambiguous,
}

/// A commit's TransactWriteItems, ready to send.
struct Transaction {
    actions: Vec<TransactWriteItem>,
    layout: ActionLayout,
    /// Too much for one transaction: a large commit (see
    /// [`DynamoKv::transaction`]).
    large: bool,
}

/// A refusal by DynamoDB of a commit that was not applied, as the client's error:
/// a 400, since sending it again cannot succeed (a 5xx would be retried forever).
/// How long the function that decided a large commit spends writing its items
/// before answering that it committed (the next reader or writer finishes it):
/// well inside the data-path functions' 10 s timeout, so the client always
/// gets the answer.
const APPLY_BUDGET: std::time::Duration = std::time::Duration::from_secs(4);

fn refused(why: &str) -> KvError {
    KvError::bad(format!(
        "the commit cannot be stored ({why}); nothing was written"
    ))
}

impl DynamoKv {
    /// Commits an atomic write: all or nothing, with a strictly increasing versionstamp.
    pub async fn atomic_write(
        &self,
        database: Uuid,
        write: &AtomicWrite,
    ) -> KvResult<WriteOutcome> {
        let mut read_set: BTreeSet<Vec<u8>> = BTreeSet::new();
        let mut cached = self.cached_head(database);
        // One identity for every attempt of this write, on the head and the
        // change record of the commit it makes: an attempt that failed
        // ambiguously may still land later, and is then recognised as this write
        // (each transaction has its own client request token, which DynamoDB
        // ties to its exact parameters).
        let commit_id = Uuid::new_v4().to_string();
        // The head of the first attempt that failed ambiguously: from then on,
        // a commit of ours may be in the log after it.
        let mut ambiguous_after: Option<u64> = None;
        for attempt in 0..MAX_ATTEMPTS {
            // The head, then the items the plan needs (plain reads: a transactional
            // read would cancel other commits). Conditioned on that head, the commit
            // makes them one snapshot: the head came first, and any commit since
            // moved it.
            let head = match cached.take() {
                Some(head) => head,
                None => self.head(database).await?,
            };
            let snapshot = if read_set.is_empty() {
                BTreeMap::new()
            } else {
                self.get_slots(database, &read_set).await?
            };
            let now = now_ms();
            let plan = match plan_within(write, &snapshot, head + 1, now, &self.budget)? {
                PlanOutcome::NeedRead(more) => {
                    // Read them after the same head: the commit is conditioned on it.
                    read_set.extend(more);
                    cached = Some(head);
                    continue;
                }
                // Decided on what it read, without a commit to condition: only if
                // nothing was committed since the head, the items were one snapshot.
                PlanOutcome::CheckFailed(failed) => {
                    if let Some(version) = self
                        .own_commit(database, ambiguous_after, &commit_id)
                        .await?
                    {
                        return Ok(WriteOutcome::Committed(versionstamp(version)));
                    }
                    if read_set.is_empty() || self.head(database).await? == head {
                        return Ok(WriteOutcome::CheckFailed(failed));
                    }
                    continue;
                }
                PlanOutcome::Ready(plan) => plan,
            };
            match self.commit(database, head, &plan, now, &commit_id).await? {
                CommitResult::Committed => {
                    self.remember_head(database, Some(plan.version));
                    return Ok(WriteOutcome::Committed(versionstamp(plan.version)));
                }
                CommitResult::ChecksFailed(failed) => {
                    // Failed because an earlier attempt of ours did commit?
                    if let Some(version) = self
                        .own_commit(database, ambiguous_after, &commit_id)
                        .await?
                    {
                        return Ok(WriteOutcome::Committed(versionstamp(version)));
                    }
                    return Ok(WriteOutcome::CheckFailed(failed));
                }
                CommitResult::HeadMoved(current) => {
                    // Moved by an earlier attempt of ours that landed late?
                    if let Some(version) = self
                        .own_commit(database, ambiguous_after, &commit_id)
                        .await?
                    {
                        return Ok(WriteOutcome::Committed(versionstamp(version)));
                    }
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
                CommitResult::Ambiguous => {
                    self.remember_head(database, None);
                    ambiguous_after.get_or_insert(head);
                    if self
                        .committed_by(database, plan.version, &commit_id)
                        .await?
                    {
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

    /// One attempt at the commit `plan` on the head `head`: builds and sends its
    /// transaction (then applies a large commit's items), and tells what a
    /// failure means.
    async fn commit(
        &self,
        database: Uuid,
        head: u64,
        plan: &CommitPlan,
        now: i64,
        commit_id: &str,
    ) -> KvResult<CommitResult> {
        let Transaction {
            actions,
            layout,
            large,
        } = self.transaction(database, head, plan, now, commit_id)?;
        // Test hook: an earlier attempt whose answer was lost lands now.
        if let Some(late) = self.hooks.late_original() {
            // Its outcome was never known; whatever it is, it is in the table.
            let _ = self.send(late).await;
        } else if self.hooks.lose_this_answer(&actions) {
            return Ok(CommitResult::Ambiguous);
        }
        let result = self.send(actions).await;
        let err = match result {
            Ok(_) if large => {
                return self
                    .finish_own(database, plan, now, commit_id.to_string())
                    .await
            }
            Ok(_) => return Ok(CommitResult::Committed),
            Err(err) => err,
        };
        if let Some(why) = validation_refusal(&err) {
            return Err(refused(&why));
        }
        let reasons: Vec<Reason> = match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(e)) => e
                .cancellation_reasons()
                .iter()
                .map(|r| Reason {
                    code: r.code().unwrap_or("None").to_string(),
                    message: r.message().map(str::to_string),
                    item: r.item.clone(),
                })
                .collect(),
            Some(TransactWriteItemsError::TransactionInProgressException(_)) => {
                return Ok(CommitResult::Contention)
            }
            _ => {
                let err = dynamo("TransactWriteItems", err);
                return match err {
                    KvError::Unavailable(_) => Ok(CommitResult::Ambiguous),
                    other => Err(other),
                };
            }
        };
        // The head came back marked: the database was deleted meanwhile.
        if reasons
            .first()
            .and_then(|r| r.item.as_ref())
            .is_some_and(|head| head.contains_key(GONE))
        {
            self.remember_head(database, None);
            return Err(crate::purge::deleted(database));
        }
        match classify_cancellation(&reasons, commit_id, plan.version, &layout, now) {
            Cancellation::AlreadyCommitted => {
                // An earlier attempt of this write committed. If it is a large
                // commit, its items may still be missing: head() finishes them.
                if large {
                    self.head(database).await?;
                }
                Ok(CommitResult::Committed)
            }
            Cancellation::HeadMoved(version) => Ok(CommitResult::HeadMoved(version)),
            Cancellation::ChecksFailed(checks) => Ok(CommitResult::ChecksFailed(checks)),
            Cancellation::Contention => Ok(CommitResult::Contention),
            // A change record with this version exists: the head and the log disagree.
            Cancellation::ChangeRecordExists => Err(KvError::Internal(format!(
                "change record {} of database {database} already exists",
                plan.version
            ))),
            Cancellation::Refused(why) => Err(refused(&why)),
            Cancellation::Unknown => Err(KvError::Internal(format!(
                "transaction cancelled: {:?}",
                reasons.iter().map(|r| &r.code).collect::<Vec<_>>()
            ))),
        }
    }

    /// After its first transaction: writes the items of this instance's own large
    /// commit. One that cannot be written whole was resolved instead (see
    /// `resolve.rs`); the client learns how, with a 400 (it must not send it again).
    async fn finish_own(
        &self,
        database: Uuid,
        plan: &CommitPlan,
        now: i64,
        request: String,
    ) -> KvResult<CommitResult> {
        let record = PendingRecord {
            entries: plan.log.clone(),
            timestamp_ms: now.max(0) as u64,
            request: Some(request),
            parts: plan.log_parts.len(),
        };
        let slots: Vec<Slot> = plan.puts.iter().map(|p| p.slot.clone()).collect();
        // The commit is decided: from here the client must learn that it
        // happened (a 5xx would make it send the same write again, and a sum
        // would apply twice). So writing its items gets a time budget, checked
        // between transactions, and an error or the end of the budget leaves
        // them to the next reader or writer, which finishes the commit before
        // anything else. A commit DynamoDB refuses is resolved to the end
        // (`resolve.rs`) and answered with what became of it.
        let deadline = std::time::Instant::now() + APPLY_BUDGET;
        let finished = self
            .finish(database, plan.version, &record, slots, now, Some(deadline))
            .await;
        let outcome = match finished {
            Ok(outcome) => outcome,
            Err(err) if self.crash_after.is_some() => return Err(err),
            Err(err) => {
                tracing::warn!(
                    %database,
                    version = plan.version,
                    error = %err.detail(),
                    "a large commit is decided but not all its items are written; \
                     the next reader or writer finishes it"
                );
                return Ok(CommitResult::Committed);
            }
        };
        match outcome {
            Finished::Applied => Ok(CommitResult::Committed),
            Finished::Deferred => {
                tracing::warn!(
                    %database,
                    version = plan.version,
                    "a large commit is decided but writing its items outlasted its \
                     budget; the next reader or writer finishes it"
                );
                Ok(CommitResult::Committed)
            }
            Finished::Abandoned(why) => Err(refused(&why)),
            Finished::Trimmed(why) => Err(KvError::bad(format!(
                "the commit could be stored only in part ({why}): it was applied without the \
                 mutations of the keys that cannot be stored"
            ))),
        }
    }

    /// The TransactWriteItems of the commit `plan.version` on the head `head`:
    /// the head, the change record, then the items with the checks on them and
    /// the checks on items not written (the layout [`crate::cancellation`]
    /// reads a cancellation by).
    ///
    /// Too many items for one transaction: a large commit. The transaction then
    /// holds the head (marked pending), the change record and the checks only;
    /// the items follow in further transactions (`apply`), and whoever meets the
    /// pending head first finishes them (`roll_forward`).
    fn transaction(
        &self,
        database: Uuid,
        head: u64,
        plan: &CommitPlan,
        now: i64,
        request: &str,
    ) -> KvResult<Transaction> {
        let parts = plan.log_parts.clone();
        let large = plan.large;
        let mut actions = Vec::new();
        actions.push(self.head_put(database, head, plan.version, now, request, large)?);
        let change_record_parts = parts.len();
        actions.extend(self.change_record_puts(
            database,
            plan.version,
            now,
            Some(request),
            parts,
            true,
        )?);
        // The items, with the checks on them; then checks on items not written.
        // A failed condition returns the item it saw: it tells which checks failed.
        let mut checks: Vec<Vec<Cond>> = vec![Vec::new(); actions.len()];
        for put in plan.puts.iter().filter(|_| !large) {
            let conds = (!put.conds.is_empty()).then(|| {
                let mut values = Item::new();
                let expr = condition(&put.conds, &mut values, now);
                (expr, values)
            });
            actions.push(slot_write(&self.data_table, database, &put.slot, conds)?);
            checks.push(put.conds.clone());
        }
        let checked_puts = plan
            .puts
            .iter()
            .filter(|p| large && !p.conds.is_empty())
            .map(|p| (&p.slot.sk, &p.conds));
        let standalone = plan.checks.iter().map(|c| (&c.sk, &c.conds));
        for (sk, conds) in checked_puts.chain(standalone) {
            let mut values = Item::new();
            let expr = condition(conds, &mut values, now);
            let cc = ConditionCheck::builder()
                .table_name(&self.data_table)
                .set_key(Some(Self::item_key(database, sk)))
                .condition_expression(expr)
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .build()
                .map_err(build_error)?;
            actions.push(TransactWriteItem::builder().condition_check(cc).build());
            checks.push(conds.clone());
        }
        Ok(Transaction {
            actions,
            layout: ActionLayout {
                change_record_parts,
                checks,
            },
            large,
        })
    }

    /// Action 0: the head, on condition that no commit came in between.
    fn head_put(
        &self,
        database: Uuid,
        head: u64,
        version: u64,
        now: i64,
        commit_id: &str,
        large: bool,
    ) -> KvResult<TransactWriteItem> {
        let mut head_item = Self::head_key(database);
        head_item.insert(VER.into(), n(version));
        head_item.insert(LOG_TIME.into(), n(now));
        head_item.insert(LOG_REQUEST.into(), AttributeValue::S(commit_id.to_string()));
        if large {
            head_item.insert(PENDING.into(), AttributeValue::Bool(true));
        }
        // On a failed condition the head comes back: its version spares the retry a
        // read, and its commit id recognises this very commit, applied by an
        // earlier attempt of the same write whose answer was lost.
        let mut head_put = Put::builder()
            .table_name(&self.data_table)
            .set_item(Some(head_item))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        // Never onto a deleted database's head (`purge.rs`): the put would also
        // erase its mark.
        head_put = if head == 0 {
            head_put.condition_expression(format!(
                "attribute_not_exists({VER}) AND attribute_not_exists({GONE})"
            ))
        } else {
            head_put
                .condition_expression(format!(
                    "{VER} = :head AND attribute_not_exists({PENDING}) AND attribute_not_exists({GONE})"
                ))
                .expression_attribute_values(":head", n(head))
        };
        Ok(TransactWriteItem::builder()
            .put(head_put.build().map_err(build_error)?)
            .build())
    }

    /// The change record (its stream feeds the backups), one put per part; `fresh`:
    /// on condition that none exists (a commit's), else over the existing one
    /// (a pending commit resolved, `resolve.rs`).
    pub(crate) fn change_record_puts(
        &self,
        database: Uuid,
        version: u64,
        now: i64,
        request: Option<&str>,
        parts: Vec<Vec<u8>>,
        fresh: bool,
    ) -> KvResult<Vec<TransactWriteItem>> {
        let total = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let mut item = Item::from([
                    (PK.into(), AttributeValue::S(database.to_string())),
                    (SK.into(), b(log_sk(version, i as u16))),
                    (LOG_TIME.into(), n(now)),
                    (LOG_PARTS.into(), n(total)),
                    (LOG_MUTATIONS.into(), b(part)),
                    (TTL.into(), n(now / 1000 + self.log_retention_seconds)),
                ]);
                if let Some(request) = request {
                    item.insert(LOG_REQUEST.into(), AttributeValue::S(request.to_string()));
                }
                let mut put = Put::builder()
                    .table_name(&self.log_table)
                    .set_item(Some(item));
                if fresh {
                    put = put.condition_expression("attribute_not_exists(pk)");
                }
                Ok(TransactWriteItem::builder()
                    .put(put.build().map_err(build_error)?)
                    .build())
            })
            .collect()
    }

    /// Sends a commit's transaction with its own client request token (the SDK
    /// reuses it for its retries, so they are idempotent).
    pub(crate) async fn send(
        &self,
        actions: Vec<TransactWriteItem>,
    ) -> Result<
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput,
        aws_sdk_dynamodb::error::SdkError<
            TransactWriteItemsError,
            aws_sdk_dynamodb::config::http::HttpResponse,
        >,
    > {
        self.client
            .transact_write_items()
            .set_transact_items(Some(actions))
            .client_request_token(Uuid::new_v4().to_string())
            .send()
            .await
    }

    /// After an attempt failed ambiguously (`after`: the head it was planned
    /// on), the version of a commit of this write (`commit_id`) in the change
    /// log after that head, if one landed. None when no attempt was ambiguous.
    async fn own_commit(
        &self,
        database: Uuid,
        after: Option<u64>,
        commit_id: &str,
    ) -> KvResult<Option<u64>> {
        let Some(after) = after else {
            return Ok(None);
        };
        let found = self.commit_by_request(database, after, commit_id).await?;
        if found.is_some() {
            // A large one may still need its items: head() finishes them.
            self.head(database).await?;
        }
        Ok(found)
    }

    /// The version of the commit made by `commit_id` among the change records
    /// after commit `after` (a consistent query; first parts only hold it, but
    /// every part carries it).
    async fn commit_by_request(
        &self,
        database: Uuid,
        after: u64,
        commit_id: &str,
    ) -> KvResult<Option<u64>> {
        let mut start_key = None;
        loop {
            let page = self
                .log_after(database, after)
                .projection_expression("sk, #req")
                .expression_attribute_names("#req", LOG_REQUEST)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                if item
                    .get(LOG_REQUEST)
                    .and_then(|v| v.as_s().ok())
                    .map(String::as_str)
                    == Some(commit_id)
                {
                    let sk = subkv_core::dynamo::get_b(item, SK).unwrap_or_default();
                    let version = subkv_kv::model::version_of(
                        &[sk.get(..8).unwrap_or_default(), &[0, 0]].concat(),
                    );
                    return Ok(version);
                }
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => return Ok(None),
            }
        }
    }

    /// Whether the commit `version` exists and was made by this write
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
}

#[cfg(test)]
#[path = "commit_tests.rs"]
mod tests;
