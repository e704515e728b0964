//! [`DynamoProgress`]: the [`Progress`] of backups in the control table, every
//! change a conditional `UpdateItem` (the attributes are listed in `super`).

use super::{BackupState, Breaker, Progress, Scan, SnapshotProgress, Stale, Update};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use subkv_core::control::locator::{
    locator_of, Locator, BACKUPS_INDEX, BACKUPS_INDEX_PK, BACKUPS_INDEX_VALUE, LOCATOR_SK,
};
use subkv_core::control::records::{BackupRecord, BackupStatus};
use subkv_core::dynamo::{b, get_n, get_s, is_condition_failure, n, s, store_error, Item};
use subkv_core::error::StoreError;
use uuid::Uuid;

pub struct DynamoProgress {
    client: Client,
    table: String,
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

    async fn all(&self) -> Result<Vec<Locator>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BACKUPS_INDEX)
                .key_condition_expression("#i = :v")
                .expression_attribute_names("#i", BACKUPS_INDEX_PK)
                .expression_attribute_values(":v", s(BACKUPS_INDEX_VALUE))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error("Query", e))?;
            for item in page.items() {
                let db = get_s(item, "pk")
                    .and_then(|pk| pk.strip_prefix("DB#"))
                    .and_then(|id| Uuid::parse_str(id).ok());
                if let Some(locator) = db.and_then(|db| locator_of(db, item)) {
                    out.push(locator);
                }
            }
            match page.last_evaluated_key {
                Some(key) => start = Some(key),
                None => return Ok(out),
            }
        }
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
                }),
                _ => None,
            },
            lease_until_ms: get_n::<u64>(&item, "snapLease").map_or(0, |v| v as i64),
            lease_owner: get_s(&item, "snapLeaseOwner").map(str::to_owned),
            error_since_ms: get_n::<i64>(&item, "errorSince"),
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
        ];
        let mut expression = String::from(
            "SET logCursor = :h, snapStart = :h, snapGen = :g, snapSeq = :zero, #st = :pending",
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

    async fn ledger_put(&self, at: &Locator, object_key: &str) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("BKLOG#{}", at.backup_id)))
            .item("sk", s(object_key))
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(())
    }

    async fn ledger_before(
        &self,
        at: &Locator,
        below: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError> {
        let page = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk < :below")
            .expression_attribute_values(":pk", s(format!("BKLOG#{}", at.backup_id)))
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

    async fn ledger_delete(&self, at: &Locator, object_key: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(format!("BKLOG#{}", at.backup_id)))
            .key("sk", s(object_key))
            .send()
            .await
            .map_err(|e| store_error("DeleteItem", e))?;
        Ok(())
    }

    async fn stale_cleared(&self, at: &Locator, generation: u64) -> Result<Update, StoreError> {
        self.update(
            at,
            "REMOVE staleGen, staleSeq, staleBelow",
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
        self.update(
            at,
            "SET snapLease = :until, snapLeaseOwner = :o",
            "attribute_exists(pk) AND (attribute_not_exists(snapLease) OR snapLease < :now OR snapLeaseOwner = :o)",
            vec![(":until", n(until_ms)), (":o", s(owner)), (":now", n(now_ms))],
        )
        .await
    }

    async fn take_forwarding(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError> {
        self.update(
            at,
            "SET fwdLease = :until, fwdOwner = :o",
            "attribute_exists(pk) AND (attribute_not_exists(fwdLease) OR fwdLease < :now OR fwdOwner = :o)",
            vec![(":until", n(until_ms)), (":o", s(owner)), (":now", n(now_ms))],
        )
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
             REMOVE snapLease, snapLeaseOwner, errorSince, breakerFaults, breakerUntil",
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
            "SET lastError = :m",
            "attribute_exists(pk)",
            vec![(":m", s(message))],
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
            "SET lastError = :m, errorSince = if_not_exists(errorSince, :now)",
            "attribute_exists(pk)",
            vec![(":m", s(message)), (":now", n(now_ms))],
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
             breakerFaults = :f, breakerUntil = :u",
            "attribute_exists(pk)",
            vec![
                (":m", s(message)),
                (":now", n(now_ms)),
                (":f", n(breaker.faults)),
                (":u", n(breaker.until_ms)),
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
                 REMOVE snapLease, snapLeaseOwner, errorSince, breakerFaults, breakerUntil",
                // Racing passes that met the same error park it once.
                "attribute_exists(pk) AND #st.#code <> :fcode",
            )
        } else {
            (
                "SET lastError = :m, parkedReason = :m ADD parked :one",
                "attribute_exists(pk)",
            )
        };
        self.update(at, expression, condition, values).await
    }
}
