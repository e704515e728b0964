//! The backup engine's state in the control table.
//!
//! Each backup item (`ORG#<org>` / `BACKUP#<backup>`, written by the API) carries,
//! besides its configuration and `status`, the engine's progress:
//!
//! | attribute | meaning |
//! |---|---|
//! | `logCursor` (N) | last commit version whose log object is in the bucket |
//! | `snapGen` (N) | snapshot generation (1, then +1 per re-snapshot) |
//! | `snapSeq` (N) | next snapshot chunk index |
//! | `snapAfter` (B) | data-table sort key the snapshot scan continues after |
//! | `snapStart` (N) | the head when the generation began (logs hold what follows) |
//! | `snapEnd` (N) | head version read once the scan finished; the differential waits for `logCursor >= snapEnd` |
//! | `snapLease` (N), `snapLeaseOwner` (S) | who may take snapshot steps, until when (ms) |
//! | `fwdLease` (N), `fwdOwner` (S) | which pass may write log objects, until when (ms) |
//! | `lastVersionstamp`, `lastBackedUpAt`, `lastError` (S) | what `GET` reports |
//! | `errorSince` (N) | when the current run of transient faults began (ms): set by the first `lastError` after a write that landed, removed by the next one that lands (cursor moved, chunk recorded, activation) and on `failed`; the engine gives up once it is older than its budget |
//! | `activeGen` (N) | the snapshot generation whose differential is written (set on activation): a retried `failed` backup resumes `active` if it equals `snapGen`, else `pending` |
//! | `staleGen`, `staleSeq`, `staleBelow` (N) | after a re-snapshot: the earlier generation's objects still to empty (its chunks `0..=staleSeq`, from the highest down: `staleSeq` goes down as they are emptied; its ledgered logs below `staleBelow`) |
//!
//! Ledger items `BKLOG#<backup>` / `<object key>` name every log object written,
//! so that a re-snapshot can empty the earlier generation's (PutObject only: the
//! engine never lists or deletes in the tenant's bucket).
//!
//! Every change is a conditional `UpdateItem`, so concurrent invocations (stream
//! batches, the scheduled catch-up, a retried delivery) cannot move a cursor
//! backwards or skip a chunk, and a deleted backup is never recreated.
//!
//! The engine finds a database's backup through its locator
//! ([`subkv_core::control::locator`]), and sees this store through the
//! [`Progress`] trait: [`DynamoProgress`] is the real one (the unit tests' fake
//! keeps the same conditions).

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

/// Progress of the snapshot of one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotProgress {
    pub generation: u64,
    pub seq: u64,
    pub after: Option<Vec<u8>>,
    pub end: Option<u64>,
    /// The head when the generation began (its logs hold the commits after it);
    /// None for a generation begun before this was recorded.
    pub start: Option<u64>,
}

/// What a re-snapshot leaves of the earlier generation in the bucket: snapshot
/// chunks `0..=chunks` of `generation` and the log objects whose `monoseq` is
/// below `below` (the first commit the new generation's logs hold). `chunks`
/// goes down as the chunks are emptied, from the highest
/// ([`Progress::stale_chunk_emptied`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale {
    pub generation: u64,
    pub chunks: u64,
    pub below: u64,
}

/// A backup as the engine sees it.
#[derive(Clone, Debug)]
pub struct BackupState {
    pub record: BackupRecord,
    /// None: the first snapshot has not begun.
    pub cursor: Option<u64>,
    pub snapshot: SnapshotProgress,
    /// After a re-snapshot, until emptied: the earlier generation's objects.
    pub stale: Option<Stale>,
    pub lease_until_ms: i64,
    pub lease_owner: Option<String>,
    /// When the current run of transient faults began (ms); None since the last
    /// write that landed.
    pub error_since_ms: Option<i64>,
}

/// What a conditional update of a backup did.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    Applied,
    /// Its condition did not hold: someone else moved first, the backup is gone,
    /// or it is no longer in the state the caller saw.
    Lost,
}

impl Update {
    pub fn applied(self) -> bool {
        self == Update::Applied
    }
}

/// Where the snapshot scan stands after a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// It goes on after this data-table sort key.
    After(&'a [u8]),
    /// It is complete; `end` is the head read after its last page.
    Complete { end: u64 },
}

/// Each backup's progress (the table above; every change is conditional and
/// answers [`Update`]).
#[async_trait]
pub trait Progress: Send + Sync {
    /// The backup of a database, if one is enabled.
    async fn locate(&self, database: Uuid) -> Result<Option<Locator>, StoreError>;

    /// Every enabled backup (for the scheduled catch-up).
    async fn all(&self) -> Result<Vec<Locator>, StoreError>;

    /// The backup's configuration and progress (strongly consistent); None once
    /// it is deleted.
    async fn load(&self, at: &Locator) -> Result<Option<BackupState>, StoreError>;

    /// Starts snapshot `generation` of a backup whose logs are to begin after
    /// `head`: the cursor moves to `head` (or is set, the first time). `expected`
    /// is the cursor the caller saw (None: never started). Applies only to a
    /// `pending` backup without a cursor (None), or to a `pending` or `active` one
    /// still at cursor `expected` with no stale generation left to empty; then
    /// the earlier generation becomes stale (its chunks, its logs below
    /// `head + 1`) and the backup `pending`.
    async fn begin_snapshot(
        &self,
        at: &Locator,
        expected: Option<u64>,
        head: u64,
        generation: u64,
    ) -> Result<Update, StoreError>;

    /// Records, before it is written, that a log object is in the bucket: a
    /// re-snapshot empties every such object of the earlier generation.
    async fn ledger_put(&self, at: &Locator, object_key: &str) -> Result<(), StoreError>;

    /// Up to `limit` ledgered log objects whose key sorts before `below`, in key
    /// order.
    async fn ledger_before(
        &self,
        at: &Locator,
        below: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError>;

    async fn ledger_delete(&self, at: &Locator, object_key: &str) -> Result<(), StoreError>;

    /// The earlier generation's objects are all emptied (applies if the backup is
    /// still at snapshot `generation`).
    async fn stale_cleared(&self, at: &Locator, generation: u64) -> Result<Update, StoreError>;

    /// Chunk `seq` (at least 1) of the stale generation `stale_generation` is
    /// emptied: the chunks still to empty become `0..seq` (`staleSeq = seq - 1`).
    /// Applies only if the backup is still at snapshot `generation` and its stale
    /// marker still at that generation and chunk. (Chunk 0, the last, ends with
    /// [`Self::stale_cleared`].)
    async fn stale_chunk_emptied(
        &self,
        at: &Locator,
        generation: u64,
        stale_generation: u64,
        seq: u64,
    ) -> Result<Update, StoreError>;

    /// Takes (or renews) the snapshot lease until `until_ms`: only if nobody holds
    /// it, it ran out before `now_ms`, or `owner` holds it.
    async fn take_lease(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError>;

    /// Takes (or renews) the forwarding lease: one pass at a time writes a
    /// backup's log objects, so racing passes (a stream delivery and the
    /// catch-up) do not write the same commits twice. Lost while another owner
    /// holds it and it has not run out.
    async fn take_forwarding(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError>;

    /// Gives the forwarding lease back (only its owner can).
    async fn release_forwarding(&self, at: &Locator, owner: &str) -> Result<Update, StoreError>;

    /// Records that chunk `seq` of `generation` is in the bucket and where the
    /// scan stands: only by the lease's owner, at that generation and chunk. Ends a
    /// run of transient faults (a write landed).
    async fn snapshot_step(
        &self,
        at: &Locator,
        owner: &str,
        generation: u64,
        seq: u64,
        scan: Scan<'_>,
    ) -> Result<Update, StoreError>;

    /// Moves the cursor from `from` to `to` after the log object up to `to` was
    /// written (only if it is still at `from`); `last_versionstamp` (20 hex) is
    /// what `GET` shows. Clears the last error and ends a run of transient faults.
    async fn advance(
        &self,
        at: &Locator,
        from: u64,
        to: u64,
        last_versionstamp: Option<&str>,
        at_time: &str,
    ) -> Result<Update, StoreError>;

    /// `pending` → `active`, once the differential (versionstamp `differential`, 20
    /// hex) is written: the bucket holds the database through it from then on.
    /// Applies only to a `pending` backup still at snapshot `generation`; records
    /// `generation` as the one whose differential is written (`activeGen`).
    async fn activate(
        &self,
        at: &Locator,
        generation: u64,
        differential: &str,
        at_time: &str,
    ) -> Result<Update, StoreError>;

    /// The store refused, or transient faults outlasted the budget. Nothing more
    /// is attempted for this backup until the tenant asks for a retry (the API
    /// sets it back to `pending` or `active`).
    async fn fail(&self, at: &Locator, message: &str) -> Result<Update, StoreError>;

    /// A problem being dealt with (e.g. a re-snapshot), shown by `GET` until the
    /// next success.
    async fn note_error(&self, at: &Locator, message: &str) -> Result<Update, StoreError>;

    /// A transient store fault, shown by `GET` until the next success, as
    /// [`Self::note_error`]; the first one since a write landed starts a run of
    /// faults at `now_ms` (`errorSince`).
    async fn note_fault(
        &self,
        at: &Locator,
        message: &str,
        now_ms: i64,
    ) -> Result<Update, StoreError>;
}

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
                "SET snapSeq = :next, snapAfter = :a REMOVE errorSince"
            }
            Scan::Complete { end } => {
                values.push((":e", n(end)));
                "SET snapSeq = :next, snapEnd = :e REMOVE snapAfter, errorSince"
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
        expression.push_str(" REMOVE lastError, errorSince");
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
             REMOVE snapLease, snapLeaseOwner, lastError, errorSince",
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
            "SET #st = :failed REMOVE snapLease, snapLeaseOwner, errorSince",
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
}
