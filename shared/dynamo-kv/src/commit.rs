//! Commits: the retry loop of an atomic write, the one TransactWriteItems that
//! makes a commit (head, change record, items, checks), and what its failure
//! means ([`crate::cancellation`] reads a cancellation).

use crate::cancellation::{classify_cancellation, ActionLayout, Cancellation, HeadSeen};
use crate::items::{
    condition, dynamo, item_from_slot, log_parts, log_sk, LOG_MUTATIONS, LOG_PARTS, LOG_REQUEST,
    LOG_TIME, PENDING, PK, SK, TTL, VER,
};
use crate::{backoff, now_ms, DynamoKv, WriteOutcome, MAX_ATTEMPTS};
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use denokv_proto::AtomicWrite;
use std::collections::{BTreeMap, BTreeSet};
use subkv_core::dynamo::{b, n, Item};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::limits::MAX_ITEMS_PER_COMMIT;
use subkv_kv::model::{versionstamp, Slot};
use subkv_kv::plan::{plan, CommitPlan, PlanOutcome};
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
    Ambiguous(String),
}

/// A commit's TransactWriteItems, ready to send.
struct Transaction {
    actions: Vec<TransactWriteItem>,
    layout: ActionLayout,
    /// Too many items for one transaction: a large commit (see
    /// [`DynamoKv::transaction`]).
    large: bool,
}

fn build_error(e: BuildError) -> KvError {
    KvError::Internal(format!("TransactWriteItems request: {e}"))
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

    /// One attempt at the commit `plan` on the head `head`: builds and sends its
    /// transaction (then applies a large commit's items), and tells what a
    /// failure means.
    async fn commit(
        &self,
        database: Uuid,
        head: u64,
        plan: &CommitPlan,
        now: i64,
    ) -> KvResult<CommitResult> {
        let request = Uuid::new_v4().to_string();
        let Transaction {
            actions,
            layout,
            large,
        } = self.transaction(database, head, plan, now, &request)?;
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
        let seen = HeadSeen::of(current_head);
        match classify_cancellation(&reasons, &seen, &request, plan.version, &layout) {
            Cancellation::AlreadyCommitted => {
                // An earlier attempt of this request committed. If it is a large
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
            Cancellation::Unknown => Err(KvError::Internal(format!(
                "transaction cancelled: {reasons:?}"
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
        let parts = log_parts(&plan.log, now.max(0) as u64);
        let items = 1 + parts.len() + plan.puts.len() + plan.checks.len();
        let large = items > MAX_ITEMS_PER_COMMIT;
        let mut actions = Vec::with_capacity(items.min(MAX_ITEMS_PER_COMMIT));
        actions.push(self.head_put(database, head, plan.version, now, request, large)?);
        let change_record_parts = parts.len();
        actions.extend(self.change_record_puts(database, plan.version, now, request, parts)?);
        // The items, with the checks on them; then checks on items not written.
        let mut checks: Vec<Vec<u32>> = vec![Vec::new(); actions.len()];
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
                    .put(builder.build().map_err(build_error)?)
                    .build(),
            );
            checks.push(put.conds.iter().map(|c| c.check_index).collect());
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
                .build()
                .map_err(build_error)?;
            actions.push(TransactWriteItem::builder().condition_check(cc).build());
            checks.push(conds.iter().map(|c| c.check_index).collect());
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
        request: &str,
        large: bool,
    ) -> KvResult<TransactWriteItem> {
        let mut head_item = Self::head_key(database);
        head_item.insert(VER.into(), n(version));
        head_item.insert(LOG_TIME.into(), n(now));
        head_item.insert(LOG_REQUEST.into(), AttributeValue::S(request.to_string()));
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
        Ok(TransactWriteItem::builder()
            .put(head_put.build().map_err(build_error)?)
            .build())
    }

    /// The change record (its stream feeds the backups), one put per part.
    fn change_record_puts(
        &self,
        database: Uuid,
        version: u64,
        now: i64,
        request: &str,
        parts: Vec<Vec<u8>>,
    ) -> KvResult<Vec<TransactWriteItem>> {
        let total = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let item = Item::from([
                    (PK.into(), AttributeValue::S(database.to_string())),
                    (SK.into(), b(log_sk(version, i as u16))),
                    (LOG_TIME.into(), n(now)),
                    (LOG_PARTS.into(), n(total)),
                    (LOG_MUTATIONS.into(), b(part)),
                    (LOG_REQUEST.into(), AttributeValue::S(request.to_string())),
                    (TTL.into(), n(now / 1000 + self.log_retention_seconds)),
                ]);
                let put = Put::builder()
                    .table_name(&self.log_table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .map_err(build_error)?;
                Ok(TransactWriteItem::builder().put(put).build())
            })
            .collect()
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_kv::model::Entry;
    use subkv_kv::plan::{Cond, PlannedCheck, PlannedPut};

    /// A store whose client is never called (building requests needs no network).
    fn store() -> DynamoKv {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .build();
        DynamoKv::new(
            aws_sdk_dynamodb::Client::from_conf(config),
            "data".into(),
            "log".into(),
            60,
        )
    }

    fn put(i: u32, conds: Vec<Cond>) -> PlannedPut {
        let key = vec![2, b'k', i as u8, 0];
        let mut slot = Slot::empty(key.clone());
        slot.version = 8;
        slot.put(Entry {
            key,
            value: vec![1],
            encoding: 1,
            version: 8,
            expire_at_ms: None,
        });
        PlannedPut { slot, conds }
    }

    fn cond(check_index: u32) -> Cond {
        Cond {
            check_index,
            expect: Some(3),
        }
    }

    fn plan(puts: Vec<PlannedPut>, checks: Vec<PlannedCheck>) -> CommitPlan {
        CommitPlan {
            version: 8,
            puts,
            checks,
            log: Vec::new(),
        }
    }

    /// Per action: the table and what it is (head, log, put or check).
    fn kinds(actions: &[TransactWriteItem]) -> Vec<(String, &'static str)> {
        actions
            .iter()
            .map(|a| match (a.put(), a.condition_check()) {
                (Some(p), _) if p.item().contains_key(LOG_MUTATIONS) => {
                    (p.table_name().to_string(), "log")
                }
                (Some(p), _)
                    if p.item()
                        .get(PK)
                        .and_then(|v| v.as_s().ok())
                        .is_some_and(|pk| pk.ends_with("#head")) =>
                {
                    (p.table_name().to_string(), "head")
                }
                (Some(p), _) => (p.table_name().to_string(), "put"),
                (None, Some(c)) => (c.table_name().to_string(), "check"),
                (None, None) => (String::new(), "?"),
            })
            .collect()
    }

    #[test]
    fn a_commit_transaction_matches_its_layout() {
        let db = Uuid::new_v4();
        let plan = plan(
            vec![put(0, vec![cond(2), cond(0)]), put(1, vec![])],
            vec![PlannedCheck {
                sk: vec![2, b'c', 0],
                conds: vec![cond(1)],
            }],
        );
        let tx = store().transaction(db, 7, &plan, 1_000, "req-1").unwrap();
        assert!(!tx.large);
        let kinds: Vec<_> = kinds(&tx.actions).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, ["head", "log", "put", "put", "check"]);
        assert_eq!(
            tx.layout,
            ActionLayout {
                change_record_parts: 1,
                checks: vec![vec![], vec![], vec![2, 0], vec![], vec![1]],
            }
        );
        let head = tx.actions[0].put().unwrap();
        assert_eq!(head.table_name(), "data");
        assert_eq!(head.item().get(VER), Some(&n(8)));
        assert_eq!(
            head.item().get(LOG_REQUEST),
            Some(&AttributeValue::S("req-1".into()))
        );
        assert!(!head.item().contains_key(PENDING));
        assert_eq!(
            head.expression_attribute_values()
                .and_then(|v| v.get(":head")),
            Some(&n(7))
        );
        assert_eq!(tx.actions[1].put().unwrap().table_name(), "log");
    }

    #[test]
    fn a_large_commit_transaction_holds_head_log_and_checks_only() {
        let db = Uuid::new_v4();
        let mut puts: Vec<PlannedPut> = (0..MAX_ITEMS_PER_COMMIT as u32)
            .map(|i| put(i, vec![]))
            .collect();
        puts[5].conds = vec![cond(0)];
        let plan = plan(
            puts,
            vec![PlannedCheck {
                sk: vec![2, b'c', 0],
                conds: vec![cond(1)],
            }],
        );
        let tx = store().transaction(db, 0, &plan, 1_000, "req-2").unwrap();
        assert!(tx.large);
        let kinds: Vec<_> = kinds(&tx.actions).into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, ["head", "log", "check", "check"]);
        assert_eq!(
            tx.layout,
            ActionLayout {
                change_record_parts: 1,
                checks: vec![vec![], vec![], vec![0], vec![1]],
            }
        );
        let head = tx.actions[0].put().unwrap();
        assert_eq!(head.item().get(PENDING), Some(&AttributeValue::Bool(true)));
        assert_eq!(
            head.condition_expression(),
            Some("attribute_not_exists(kv_ver)")
        );
    }
}
