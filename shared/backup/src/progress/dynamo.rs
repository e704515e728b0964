//! [`DynamoProgress`]: the [`Progress`] of backups in the control table, every
//! change a conditional `UpdateItem` (the attributes are listed in `super`).

use super::{BackupState, Breaker, Progress, Scan, SnapshotProgress, Stale, Update};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use subkv_core::control::locator::{
    locator_of, sweep_slot_value, Locator, BACKUPS_INDEX, BACKUPS_INDEX_PK, DUE_INDEX,
    DUE_INDEX_PK, DUE_INDEX_VALUE, LOCATOR_SK,
};
use subkv_core::control::records::{BackupRecord, BackupStatus};
use subkv_core::control::retired::{retired_of, RetiredRoot};
use subkv_core::dynamo::{b, get_n, get_s, is_condition_failure, n, s, store_error, Item};
use subkv_core::error::StoreError;
use uuid::Uuid;

/// The backup's two leases: who takes snapshot steps, who writes log objects.
#[derive(Clone, Copy)]
enum Lease {
    Snapshot,
    Forwarding,
}

impl Lease {
    /// Its attributes: until when (ms), and whose.
    fn attributes(self) -> (&'static str, &'static str) {
        match self {
            Lease::Snapshot => ("snapLease", "snapLeaseOwner"),
            Lease::Forwarding => ("fwdLease", "fwdOwner"),
        }
    }
}

pub struct DynamoProgress {
    client: Client,
    table: String,
}

/// The partition of a backup's ledger.
fn ledger_pk(backup: Uuid) -> String {
    format!("BKLOG#{backup}")
}

fn status_value(status: &BackupStatus) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(status).map_err(|e| StoreError::Malformed(e.to_string()))
}

impl DynamoProgress {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn backup_key(org: Uuid, backup: Uuid) -> Item {
        Item::from([
            ("pk".into(), s(format!("ORG#{org}"))),
            ("sk".into(), s(format!("BACKUP#{backup}"))),
        ])
    }

    /// Every item of one partition of a sparse index (eventually consistent, as
    /// index reads are: an item just added shows up a moment later).
    async fn query_index(
        &self,
        index: &str,
        key: &str,
        value: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression("#i = :v")
                .expression_attribute_names("#i", key)
                .expression_attribute_values(":v", s(value))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("Query", e))?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(out),
            }
        }
    }

    /// Takes (or renews) one of the backup's leases until `until_ms`: only if
    /// nobody holds it, it ran out before `now_ms`, or `owner` holds it.
    async fn take(
        &self,
        at: &Locator,
        lease: Lease,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError> {
        let (until, holder) = lease.attributes();
        self.update(
            at,
            &format!("SET {until} = :until, {holder} = :o"),
            &format!(
                "attribute_exists(pk) AND (attribute_not_exists({until}) \
                 OR {until} < :now OR {holder} = :o)"
            ),
            vec![
                (":until", n(until_ms)),
                (":o", s(owner)),
                (":now", n(now_ms)),
            ],
        )
        .await
    }

    /// One conditional update of the backup item.
    async fn update(
        &self,
        at: &Locator,
        expression: &str,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Update, StoreError> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::backup_key(at.organization_id, at.backup_id)))
            .update_expression(expression)
            .condition_expression(condition);
        if expression.contains("#st") || condition.contains("#st") {
            request = request.expression_attribute_names("#st", "status");
        }
        if expression.contains("#code") || condition.contains("#code") {
            request = request.expression_attribute_names("#code", "code");
        }
        for (name, value) in values {
            request = request.expression_attribute_values(name, value);
        }
        match request.send().await {
            Ok(_) => Ok(Update::Applied),
            Err(err) if is_condition_failure(&err) => Ok(Update::Lost),
            Err(err) => Err(store_error("UpdateItem", err)),
        }
    }
}

#[async_trait]
impl Progress for DynamoProgress {
    async fn locate(&self, database: Uuid) -> Result<Option<Locator>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("DB#{database}")))
            .key("sk", s(LOCATOR_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out
            .item
            .as_ref()
            .and_then(|item| locator_of(database, item)))
    }

    async fn due(&self) -> Result<Vec<Locator>, StoreError> {
        let items = self
            .query_index(DUE_INDEX, DUE_INDEX_PK, DUE_INDEX_VALUE)
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let org = get_s(item, "pk")?.strip_prefix("ORG#")?;
                let backup = get_s(item, "sk")?.strip_prefix("BACKUP#")?;
                Some(Locator {
                    database_id: Uuid::parse_str(get_s(item, "databaseId")?).ok()?,
                    organization_id: Uuid::parse_str(org).ok()?,
                    backup_id: Uuid::parse_str(backup).ok()?,
                })
            })
            .collect())
    }

    async fn sweep(&self, slot: u32) -> Result<Vec<Locator>, StoreError> {
        let value = sweep_slot_value(slot);
        let items = self
            .query_index(BACKUPS_INDEX, BACKUPS_INDEX_PK, &value)
            .await?;
        Ok(items
            .iter()
            .filter_map(|item| {
                let db = get_s(item, "pk")?.strip_prefix("DB#")?;
                locator_of(Uuid::parse_str(db).ok()?, item)
            })
            .collect())
    }

    async fn mark_due(&self, at: &Locator) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET dueIndex = :due",
            "attribute_exists(pk)",
            vec![(":due", s(DUE_INDEX_VALUE))],
        )
        .await
    }

    async fn settle(&self, at: &Locator, cursor: u64) -> Result<Update, StoreError> {
        self.update(
            at,
            "REMOVE dueIndex",
            "logCursor = :c AND #st.#code = :acode AND attribute_not_exists(errorSince) \
             AND attribute_not_exists(staleGen)",
            vec![(":c", n(cursor)), (":acode", s("active"))],
        )
        .await
    }

    async fn load(&self, at: &Locator) -> Result<Option<BackupState>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::backup_key(at.organization_id, at.backup_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let record: BackupRecord = serde_dynamo::from_item(item.clone())
            .map_err(|e| StoreError::Malformed(format!("backup item: {e}")))?;
        Ok(Some(BackupState {
            record,
            cursor: get_n(&item, "logCursor"),
            snapshot: SnapshotProgress {
                generation: get_n(&item, "snapGen").unwrap_or(0),
                seq: get_n(&item, "snapSeq").unwrap_or(0),
                after: item
                    .get("snapAfter")
                    .and_then(|v| v.as_b().ok())
                    .map(|b| b.as_ref().to_vec()),
                end: get_n(&item, "snapEnd"),
                start: get_n(&item, "snapStart"),
            },
            stale: match (
                get_n(&item, "staleGen"),
                get_n(&item, "staleSeq"),
                get_n(&item, "staleBelow"),
            ) {
                (Some(generation), Some(chunks), Some(below)) => Some(Stale {
                    generation,
                    chunks,
                    below,
                    ledger: get_s(&item, "staleLedger").and_then(|id| Uuid::parse_str(id).ok()),
                }),
                _ => None,
            },
            lease_until_ms: get_n::<u64>(&item, "snapLease").map_or(0, |v| v as i64),
            lease_owner: get_s(&item, "snapLeaseOwner").map(str::to_owned),
            error_since_ms: get_n::<i64>(&item, "errorSince"),
            due: item.contains_key(DUE_INDEX_PK),
            pending_since_ms: get_n::<i64>(&item, "pendingSince"),
            breaker: Breaker {
                faults: get_n(&item, "breakerFaults").unwrap_or(0),
                until_ms: get_n(&item, "breakerUntil").unwrap_or(0),
            },
        }))
    }

    async fn begin_snapshot(
        &self,
        at: &Locator,
        expected: Option<u64>,
        head: u64,
        generation: u64,
    ) -> Result<Update, StoreError> {
        let mut values = vec![
            (":h", n(head)),
            (":g", n(generation)),
            (":zero", n(0)),
            (":pending", status_value(&BackupStatus::Pending)?),
            (":pcode", s("pending")),
            (":due", s(DUE_INDEX_VALUE)),
            (":now", n(subkv_dynamo_kv::now_ms())),
        ];
        let mut expression = String::from(
            "SET logCursor = :h, snapStart = :h, snapGen = :g, snapSeq = :zero, #st = :pending, \
             dueIndex = :due, pendingSince = :now",
        );
        let condition = match expected {
            None => "attribute_not_exists(logCursor) AND #st.#code = :pcode",
            Some(c) => {
                // A re-snapshot: what the bucket holds of the earlier generation
                // (its snapshot chunks, its log objects up to the cursor) is to be
                // emptied before the new one is complete (see the engine).
                values.push((":c", n(c)));
                values.push((":acode", s("active")));
                values.push((":below", n(head + 1)));
                expression
                    .push_str(", staleGen = snapGen, staleSeq = snapSeq, staleBelow = :below");
                "logCursor = :c AND (#st.#code = :pcode OR #st.#code = :acode) \
                 AND attribute_not_exists(staleGen)"
            }
        };
        expression.push_str(" REMOVE snapAfter, snapEnd");
        if expected.is_some() {
            // Nothing of the new generation is in the bucket yet.
            expression.push_str(", lastVersionstamp");
        }
        self.update(at, &expression, condition, values).await
    }

    async fn retired(&self, database: Uuid, root: &str) -> Result<Option<RetiredRoot>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("DB#{database}")))
            .key("sk", s(root))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        match out.item {
            None => Ok(None),
            Some(item) => retired_of(&item).map(Some).ok_or_else(|| {
                StoreError::Malformed(format!("retired root {root} of database {database}"))
            }),
        }
    }

    async fn begin_over_retired(
        &self,
        at: &Locator,
        head: u64,
        retired: &RetiredRoot,
    ) -> Result<Update, StoreError> {
        let stale = Stale::retired(retired);
        let ledger = stale.ledger.unwrap_or(retired.backup_id);
        self.update(
            at,
            "SET logCursor = :h, snapStart = :h, snapGen = :g, snapSeq = :zero, #st = :pending, \
             staleGen = :sg, staleSeq = :ss, staleBelow = :below, staleLedger = :l, \
             dueIndex = :due, pendingSince = :now \
             REMOVE snapAfter, snapEnd",
            "attribute_not_exists(logCursor) AND #st.#code = :pcode",
            vec![
                (":h", n(head)),
                (":g", n(retired.next_generation)),
                (":zero", n(0)),
                (":pending", status_value(&BackupStatus::Pending)?),
                (":pcode", s("pending")),
                (":sg", n(stale.generation)),
                (":ss", n(stale.chunks)),
                (":below", n(stale.below)),
                (":l", s(ledger.to_string())),
                (":due", s(DUE_INDEX_VALUE)),
                (":now", n(subkv_dynamo_kv::now_ms())),
            ],
        )
        .await
    }

    async fn retired_emptied(
        &self,
        database: Uuid,
        root: &str,
        backup: Uuid,
    ) -> Result<Update, StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("DB#{database}")))
            .key("sk", s(root))
            .condition_expression("backupId = :b")
            .expression_attribute_values(":b", s(backup.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Update::Applied),
            Err(err) if is_condition_failure(&err) => Ok(Update::Lost),
            Err(err) => Err(store_error("DeleteItem", err)),
        }
    }

    async fn ledger_put(&self, at: &Locator, object_key: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(ledger_pk(at.backup_id)))
            .item("sk", s(object_key))
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(())
    }

    async fn ledger_before(
        &self,
        ledger: Uuid,
        below: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk < :below")
            .expression_attribute_values(":pk", s(ledger_pk(ledger)))
            .expression_attribute_values(":below", s(below))
            .consistent_read(true)
            .limit(limit)
            .send()
            .await
            .map_err(|e| store_error("Query", e))?;
        Ok(page
            .items()
            .iter()
            .filter_map(|item| get_s(item, "sk").map(str::to_owned))
            .collect())
    }

    async fn ledger_delete(&self, ledger: Uuid, object_key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(ledger_pk(ledger)))
            .key("sk", s(object_key))
            .send()
            .await
            .map_err(|e| store_error("DeleteItem", e))?;
        Ok(())
    }

    async fn stale_cleared(&self, at: &Locator, generation: u64) -> Result<Update, StoreError> {
        self.update(
            at,
            "REMOVE staleGen, staleSeq, staleBelow, staleLedger",
            "snapGen = :g",
            vec![(":g", n(generation))],
        )
        .await
    }

    async fn stale_chunk_emptied(
        &self,
        at: &Locator,
        generation: u64,
        stale_generation: u64,
        seq: u64,
    ) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET staleSeq = :next",
            "snapGen = :g AND staleGen = :sg AND staleSeq = :seq",
            vec![
                (":g", n(generation)),
                (":sg", n(stale_generation)),
                (":seq", n(seq)),
                (":next", n(seq.saturating_sub(1))),
            ],
        )
        .await
    }

    async fn take_lease(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError> {
        self.take(at, Lease::Snapshot, owner, now_ms, until_ms)
            .await
    }

    async fn take_forwarding(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError> {
        self.take(at, Lease::Forwarding, owner, now_ms, until_ms)
            .await
    }

    async fn release_forwarding(&self, at: &Locator, owner: &str) -> Result<Update, StoreError> {
        self.update(
            at,
            "REMOVE fwdLease, fwdOwner",
            "fwdOwner = :o",
            vec![(":o", s(owner))],
        )
        .await
    }

    async fn snapshot_step(
        &self,
        at: &Locator,
        owner: &str,
        generation: u64,
        seq: u64,
        scan: Scan<'_>,
    ) -> Result<Update, StoreError> {
        let mut values = vec![
            (":o", s(owner)),
            (":g", n(generation)),
            (":seq", n(seq)),
            (":next", n(seq + 1)),
        ];
        let expression = match scan {
            Scan::After(sk) => {
                values.push((":a", b(sk.to_vec())));
                "SET snapSeq = :next, snapAfter = :a REMOVE errorSince, breakerFaults, breakerUntil"
            }
            Scan::Complete { end } => {
                values.push((":e", n(end)));
                "SET snapSeq = :next, snapEnd = :e \
                 REMOVE snapAfter, errorSince, breakerFaults, breakerUntil"
            }
        };
        self.update(
            at,
            expression,
            "snapLeaseOwner = :o AND snapGen = :g AND snapSeq = :seq",
            values,
        )
        .await
    }

    async fn advance(
        &self,
        at: &Locator,
        from: u64,
        to: u64,
        last_versionstamp: Option<&str>,
        at_time: &str,
    ) -> Result<Update, StoreError> {
        let mut values = vec![(":from", n(from)), (":to", n(to)), (":t", s(at_time))];
        let mut expression = String::from("SET logCursor = :to, lastBackedUpAt = :t");
        if let Some(vs) = last_versionstamp {
            expression.push_str(", lastVersionstamp = :vs");
            values.push((":vs", s(vs)));
        }
        expression.push_str(" REMOVE lastError, errorSince, breakerFaults, breakerUntil");
        self.update(at, &expression, "logCursor = :from", values)
            .await
    }

    async fn activate(
        &self,
        at: &Locator,
        generation: u64,
        differential: &str,
        at_time: &str,
    ) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET #st = :active, lastBackedUpAt = :t, activeGen = :g, \
             lastVersionstamp = if_not_exists(lastVersionstamp, :vs) \
             REMOVE snapLease, snapLeaseOwner, lastError, errorSince, breakerFaults, breakerUntil",
            "#st.#code = :pcode AND snapGen = :g",
            vec![
                (":active", status_value(&BackupStatus::Active)?),
                (":pcode", s("pending")),
                (":g", n(generation)),
                (":t", s(at_time)),
                (":vs", s(differential)),
            ],
        )
        .await
    }

    async fn fail(&self, at: &Locator, message: &str) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET #st = :failed \
             REMOVE snapLease, snapLeaseOwner, errorSince, breakerFaults, breakerUntil, dueIndex",
            "attribute_exists(pk)",
            vec![(
                ":failed",
                status_value(&BackupStatus::Failed {
                    message: message.to_owned(),
                })?,
            )],
        )
        .await
    }

    async fn note_error(&self, at: &Locator, message: &str) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET lastError = :m, dueIndex = :due",
            "attribute_exists(pk)",
            vec![(":m", s(message)), (":due", s(DUE_INDEX_VALUE))],
        )
        .await
    }

    async fn note_fault(
        &self,
        at: &Locator,
        message: &str,
        now_ms: i64,
    ) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET lastError = :m, errorSince = if_not_exists(errorSince, :now), dueIndex = :due",
            "attribute_exists(pk)",
            vec![
                (":m", s(message)),
                (":now", n(now_ms)),
                (":due", s(DUE_INDEX_VALUE)),
            ],
        )
        .await
    }

    async fn open_breaker(
        &self,
        at: &Locator,
        message: &str,
        now_ms: i64,
        breaker: Breaker,
    ) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET lastError = :m, errorSince = if_not_exists(errorSince, :now), \
             breakerFaults = :f, breakerUntil = :u, dueIndex = :due",
            "attribute_exists(pk)",
            vec![
                (":m", s(message)),
                (":now", n(now_ms)),
                (":f", n(breaker.faults)),
                (":u", n(breaker.until_ms)),
                (":due", s(DUE_INDEX_VALUE)),
            ],
        )
        .await
    }

    async fn park(&self, at: &Locator, message: &str, fail: bool) -> Result<Update, StoreError> {
        let mut values = vec![(":m", s(message)), (":one", n(1))];
        let (expression, condition) = if fail {
            values.push((
                ":failed",
                status_value(&BackupStatus::Failed {
                    message: message.to_owned(),
                })?,
            ));
            values.push((":fcode", s("failed")));
            (
                "SET #st = :failed, parkedReason = :m ADD parked :one \
                 REMOVE snapLease, snapLeaseOwner, errorSince, breakerFaults, breakerUntil, \
                 dueIndex",
                // Racing passes that met the same error park it once.
                "attribute_exists(pk) AND #st.#code <> :fcode",
            )
        } else {
            values.push((":due", s(DUE_INDEX_VALUE)));
            (
                // Due: the catch-up retries it (the operator may fix the cause).
                "SET lastError = :m, parkedReason = :m, dueIndex = :due ADD parked :one",
                "attribute_exists(pk)",
            )
        };
        self.update(at, expression, condition, values).await
    }
}
