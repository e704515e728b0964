//! The management plane on one DynamoDB table (`pk`, `sk`, both strings).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | organization | `ORG#<org>` | `ORG` |
//! | token (by hash, the auth lookup) | `TOKEN#<sha256>` | `TOKEN` |
//! | token (by id, to revoke) | `ORG#<org>` | `TOKEN#<token>` |
//! | database | `ORG#<org>` | `DB#<db>` (carries `backupId` while a backup is enabled) |
//! | database owner (immutable) | `DB#<db>` | `DB` |
//! | backup | `ORG#<org>` | `BACKUP#<backup>` (and the engine's progress: `subkv_backup::progress`) |
//! | backup locator (while enabled) | `DB#<db>` | `BACKUP` (in the sparse index `backups`) |
//! | retired root (what a deleted backup left in its bucket) | `DB#<db>` | `RETIRED#<root hash>` (`super::retired`) |
//! | backup ledger (the engine's) | `BKLOG#<backup>` | `<object key>` (kept when the backup is deleted) |
//!
//! A retry (`retry_backup`) is one conditional `UpdateItem` of the backup item
//! per status it may resume with: `active` on condition that it is `failed` and
//! the engine's `activeGen` equals `snapGen` (the differential of the current
//! snapshot generation is written), else `pending` on condition that it is
//! `failed`; then a read tells a missing backup from one that is not `failed`.
//!
//! Deleting a backup reads it, then in one transaction deletes it (on condition
//! that the engine's progress is still what was read, else it reads again),
//! frees its database, removes its locator and puts its root's retired item.
//!
//! Everything an organization owns lives in its partition, so a foreign id is a
//! plain miss (404) and listing is one strongly consistent Query. Writes that touch
//! two items are single TransactWriteItems calls.

use super::locator::{
    locator_item, DUE_INDEX, DUE_INDEX_PK, DUE_INDEX_PURGE, DUE_INDEX_RESTORE, DUE_INDEX_VALUE,
    LOCATOR_SK, PURGE_SK_PREFIX, RESTORE_SK,
};
use super::records::{
    BackupRecord, BackupStatus, DatabaseRestore, KvDatabase, Organization, RestoreRequest,
    TokenRecord,
};
use super::retired::{now_ms, retired_item, retirement, WrittenSoFar, RETIRED_SK_PREFIX};
use super::{ControlTable, DeleteOutcome, EnableOutcome, Purge, RetryOutcome, GONE_OWNER_DAYS};
use crate::dynamo::{cancellation_codes, get_s, is_condition_failure, s, store_error, Item};
use crate::error::StoreError;
use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

use super::table::{PK, SK};
use aws_sdk_dynamodb::types::{
    Delete, DeleteRequest, Put, ReturnValue, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use uuid::Uuid;

/// Partition of the organizations' directory: one item per organization (`sk`
/// `ORG#<id>`: id, name, createdAt), written with it, for the admin's list.
pub const ORGS_PK: &str = "ORGS";

fn org_pk(org: Uuid) -> String {
    format!("ORG#{org}")
}

/// An `UpdateItem`'s outcome: its output, or `None` when its condition did not
/// hold; any other failure is the store's error.
fn unless_condition_failed<O>(
    result: Result<O, SdkError<UpdateItemError, HttpResponse>>,
) -> Result<Option<O>, StoreError> {
    match result {
        Ok(out) => Ok(Some(out)),
        Err(e) if is_condition_failure(&e) => Ok(None),
        Err(e) => Err(store_error("UpdateItem", e)),
    }
}

fn key(pk: String, sk: String) -> Item {
    HashMap::from([(PK.to_string(), s(pk)), (SK.to_string(), s(sk))])
}

/// A stored item: the key plus the record's own fields.
#[derive(Serialize, Deserialize)]
struct Stored<T> {
    pk: String,
    sk: String,
    #[serde(flatten)]
    record: T,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DatabaseFields {
    #[serde(flatten)]
    db: KvDatabase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backup_id: Option<Uuid>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DatabaseOwner {
    organization_id: Uuid,
}

fn to_item<T: Serialize>(pk: String, sk: String, record: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(Stored { pk, sk, record })
        .map_err(|e| StoreError::Malformed(format!("cannot encode item: {e}")))
}

fn from_item<T: for<'de> Deserialize<'de>>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item::<_, Stored<T>>(item)
        .map(|stored| stored.record)
        .map_err(|e| StoreError::Malformed(format!("cannot decode item: {e}")))
}

fn build<T, E: std::fmt::Display>(r: Result<T, E>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Malformed(format!("cannot build request: {e}")))
}

pub struct DynamoControl {
    client: Client,
    table: String,
}

impl DynamoControl {
    /// The `lastUsedAt` of the tokens with these hashes (by-hash items,
    /// `BatchGetItem` of up to 100 keys a call, unprocessed keys asked again).
    async fn last_used(&self, hashes: &[String]) -> Result<HashMap<String, String>, StoreError> {
        use aws_sdk_dynamodb::types::KeysAndAttributes;
        let mut out = HashMap::new();
        for chunk in hashes.chunks(100) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|h| key(format!("TOKEN#{h}"), "TOKEN".into()))
                .collect();
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .projection_expression("tokenSha256, lastUsedAt")
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Malformed(format!("BatchGetItem request: {e}")))?,
            );
            for _ in 0..10 {
                let Some(request) = pending.take() else {
                    break;
                };
                let answer = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| store_error("BatchGetItem", e))?;
                for item in answer
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    if let (Some(hash), Some(at)) =
                        (get_s(&item, "tokenSha256"), get_s(&item, "lastUsedAt"))
                    {
                        out.insert(hash.to_string(), at.to_string());
                    }
                }
                pending = answer
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .filter(|k| !k.keys.is_empty());
            }
            if pending.is_some() {
                return Err(StoreError::dynamo(
                    "BatchGetItem",
                    crate::error::Recovery::Retry,
                    std::io::Error::other("keys left unprocessed ten times (throttled)"),
                ));
            }
        }
        Ok(out)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// Every item of an organization's partition whose sort key starts with
    /// `prefix`.
    async fn org_items(
        &self,
        organization_id: Uuid,
        prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        self.partition(org_pk(organization_id), prefix).await
    }

    /// Every item of partition `pk` whose sort key starts with `prefix`, in one
    /// strongly consistent `Query` (all pages).
    async fn partition(&self, pk: String, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", s(pk))
            .expression_attribute_values(":prefix", s(prefix))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| store_error("Query", e))?;
            out.extend(page.items.unwrap_or_default());
        }
        Ok(out)
    }

    /// The keys of up to `max` items of partition `pk`, from its start.
    async fn page_keys(&self, pk: &str, max: usize) -> Result<Vec<Item>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(pk))
            .projection_expression("pk, sk")
            .consistent_read(true)
            .limit(max.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|e| store_error("Query", e))?;
        Ok(out.items.unwrap_or_default())
    }

    async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item)
    }

    /// The database's items (and `extra`, the restore item) in one transaction.
    async fn create_database_with(
        &self,
        db: &KvDatabase,
        extra: Option<TransactWriteItem>,
    ) -> Result<(), StoreError> {
        let fields = DatabaseFields {
            db: db.clone(),
            backup_id: None,
        };
        let owner = DatabaseOwner {
            organization_id: db.organization_id,
        };
        let mut items = vec![
            self.put(
                to_item(org_pk(db.organization_id), format!("DB#{}", db.id), &fields)?,
                "attribute_not_exists(pk)",
            )?,
            self.put(
                to_item(format!("DB#{}", db.id), "DB".into(), &owner)?,
                "attribute_not_exists(pk)",
            )?,
        ];
        items.extend(extra);
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(codes) => Err(StoreError::Malformed(format!(
                "creating a fresh database was cancelled: {codes:?}"
            ))),
        }
    }

    /// A transaction's delete of item (`pk`, `sk`), on `condition` if given.
    fn delete(
        &self,
        pk: String,
        sk: String,
        condition: Option<&str>,
    ) -> Result<TransactWriteItem, StoreError> {
        let mut delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)));
        if let Some(condition) = condition {
            delete = delete.condition_expression(condition);
        }
        build(delete.build()).map(|d| TransactWriteItem::builder().delete(d).build())
    }

    fn put(&self, item: Item, condition: &str) -> Result<TransactWriteItem, StoreError> {
        let put = build(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition)
                .build(),
        )?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<String>>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(err) => match cancellation_codes(&err) {
                Some(codes) => Ok(Err(codes)),
                None => Err(store_error("TransactWriteItems", err)),
            },
        }
    }

    async fn database_item(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<DatabaseFields>, StoreError> {
        self.get(org_pk(organization_id), format!("DB#{id}"))
            .await?
            .map(from_item)
            .transpose()
    }
}

/// Every item of partition `partition` of the `due` index (a work list: the
/// backups due a visit, pending restores, deleted databases to purge), all pages.
pub async fn due_items(
    client: &Client,
    table: &str,
    partition: &str,
) -> Result<Vec<Item>, StoreError> {
    let mut pages = client
        .query()
        .table_name(table)
        .index_name(DUE_INDEX)
        .key_condition_expression("#due = :partition")
        .expression_attribute_names("#due", DUE_INDEX_PK)
        .expression_attribute_values(":partition", s(partition))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| store_error("Query", e))?;
        out.extend(page.items.unwrap_or_default());
    }
    Ok(out)
}

/// A purge item's sort key: the time of the deletion, 13 digits (ms).
fn purge_sk(deleted_at_ms: i64) -> String {
    format!("{PURGE_SK_PREFIX}{deleted_at_ms:013}")
}

/// Reads of a backup before its delete gives up with a conflict (the engine
/// moved its progress in between each time).
const DELETE_ATTEMPTS: usize = 5;
/// A purged database's record of its organization (`DB#<db>`), kept
/// [`GONE_OWNER_DAYS`].
const GONE_SK: &str = "GONE";

/// What one attempt at deleting a backup came to.
enum Retire {
    Deleted,
    /// Its database no longer names it (a concurrent call won).
    NotDeleted,
    /// It is gone or its progress moved since it was read: read it again.
    Moved,
}

impl DynamoControl {
    /// One transaction: deletes the backup `item` (on condition that the engine's
    /// progress is still what it says), frees its database, removes its locator,
    /// and records what it may have written as its root's retired item (kept
    /// with its ledger for the next backup into that root to empty).
    async fn retire_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
        item: Item,
    ) -> Result<Retire, StoreError> {
        let written = WrittenSoFar::of(&item);
        let (unchanged, values) = WrittenSoFar::unchanged(&item);
        let backup: BackupRecord = from_item(item)?;
        let retired = retirement(id, &written, now_ms()).map_err(StoreError::Malformed)?;
        let mut remove = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(organization_id), format!("BACKUP#{id}"))))
            .condition_expression(format!("attribute_exists(pk) AND {unchanged}"));
        for (name, value) in values {
            remove = remove.expression_attribute_values(name, value);
        }
        let remove = build(remove.build())?;
        let release = build(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(
                    org_pk(organization_id),
                    format!("DB#{}", backup.database_id),
                )))
                .update_expression("REMOVE backupId")
                .condition_expression("backupId = :b")
                .expression_attribute_values(":b", s(id.to_string()))
                .build(),
        )?;
        // The locator goes with it: from then on the engine writes nothing more.
        let unlocate = build(
            Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(
                    format!("DB#{}", backup.database_id),
                    LOCATOR_SK.into(),
                )))
                .build(),
        )?;
        let mut items = vec![
            TransactWriteItem::builder().delete(remove).build(),
            TransactWriteItem::builder().update(release).build(),
            TransactWriteItem::builder().delete(unlocate).build(),
        ];
        if let Some(retired) = &retired {
            // One retired item per root: another backup's there would mean two
            // backups wrote to the root without the later emptying the earlier.
            let put = build(
                Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(retired_item(&backup, retired)))
                    .condition_expression("attribute_not_exists(pk) OR backupId = :b")
                    .expression_attribute_values(":b", s(id.to_string()))
                    .build(),
            )?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        match self.transact(items).await? {
            Ok(()) => Ok(Retire::Deleted),
            Err(codes) if conflict(&codes) => Err(StoreError::Conflict),
            Err(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => {
                Ok(Retire::Moved)
            }
            Err(codes) if codes.get(3).is_some_and(|c| c == "ConditionalCheckFailed") => {
                Err(StoreError::Malformed(format!(
                    "backup {id}: its root already has another deleted backup's retired item \
                     that was never emptied; see docs/operations.md"
                )))
            }
            // Deleted meanwhile by a concurrent call.
            Err(_) => Ok(Retire::NotDeleted),
        }
    }
}

/// A transaction lost against a concurrent one on the same items.
fn conflict(codes: &[String]) -> bool {
    codes.iter().any(|c| c == "TransactionConflict")
}

#[async_trait]
impl ControlTable for DynamoControl {
    async fn create_organization(
        &self,
        org: &Organization,
        token: &TokenRecord,
    ) -> Result<(), StoreError> {
        let items = vec![
            self.put(
                to_item(org_pk(org.id), "ORG".into(), org)?,
                "attribute_not_exists(pk)",
            )?,
            self.put(
                to_item(
                    format!("TOKEN#{}", token.token_sha256),
                    "TOKEN".into(),
                    token,
                )?,
                "attribute_not_exists(pk)",
            )?,
            self.put(
                to_item(org_pk(org.id), format!("TOKEN#{}", token.id), token)?,
                "attribute_not_exists(pk)",
            )?,
            // The organizations' directory, for the admin's list.
            self.put(
                to_item(ORGS_PK.into(), format!("ORG#{}", org.id), org)?,
                "attribute_not_exists(pk)",
            )?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(codes) => Err(StoreError::Malformed(format!(
                "creating a fresh organization was cancelled: {codes:?}"
            ))),
        }
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        self.partition(ORGS_PK.into(), "ORG#")
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    async fn get_organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        self.get(org_pk(id), "ORG".into())
            .await?
            .map(from_item)
            .transpose()
    }

    async fn put_token(&self, token: &TokenRecord) -> Result<bool, StoreError> {
        let org_exists = build(
            aws_sdk_dynamodb::types::ConditionCheck::builder()
                .table_name(&self.table)
                .set_key(Some(key(org_pk(token.organization_id), "ORG".into())))
                .condition_expression("attribute_exists(pk)")
                .build(),
        )?;
        let items = vec![
            TransactWriteItem::builder()
                .condition_check(org_exists)
                .build(),
            self.put(
                to_item(
                    format!("TOKEN#{}", token.token_sha256),
                    "TOKEN".into(),
                    token,
                )?,
                "attribute_not_exists(pk)",
            )?,
            self.put(
                to_item(
                    org_pk(token.organization_id),
                    format!("TOKEN#{}", token.id),
                    token,
                )?,
                "attribute_not_exists(pk)",
            )?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(true),
            Err(codes) if codes.first().is_some_and(|c| c == "ConditionalCheckFailed") => Ok(false),
            Err(codes) => Err(StoreError::Malformed(format!(
                "adding a token was cancelled: {codes:?}"
            ))),
        }
    }

    async fn token_by_hash(&self, sha256_hex: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get(format!("TOKEN#{sha256_hex}"), "TOKEN".into())
            .await?
            .map(from_item)
            .transpose()
    }

    async fn set_organization_limits(
        &self,
        id: Uuid,
        limits: &super::records::Limits,
    ) -> Result<Option<Organization>, StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(id), "ORG".into())))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#limits", "limits")
            .return_values(ReturnValue::AllNew);
        let update = if limits.is_unlimited() {
            update.update_expression("REMOVE #limits")
        } else {
            let value = serde_dynamo::to_attribute_value(limits)
                .map_err(|e| StoreError::Malformed(format!("encoding limits: {e}")))?;
            update
                .update_expression("SET #limits = :l")
                .expression_attribute_values(":l", value)
        };
        match unless_condition_failed(update.send().await)? {
            Some(out) => out.attributes.map(from_item).transpose(),
            None => Ok(None),
        }
    }

    async fn touch_token(
        &self,
        sha256_hex: &str,
        now: &str,
        since: &str,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(format!("TOKEN#{sha256_hex}"), "TOKEN".into())))
            .update_expression("SET lastUsedAt = :now")
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(lastUsedAt) OR lastUsedAt < :since)",
            )
            .expression_attribute_values(":now", s(now))
            .expression_attribute_values(":since", s(since))
            .send()
            .await;
        // A condition that did not hold: stamped already, or no such token.
        unless_condition_failed(result)?;
        Ok(())
    }

    async fn delete_organization(&self, id: Uuid) -> Result<bool, StoreError> {
        let delete = |pk, sk| self.delete(pk, sk, Some("attribute_exists(pk)"));
        let items = vec![
            delete(org_pk(id), "ORG".into())?,
            delete(ORGS_PK.into(), format!("ORG#{id}"))?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(true),
            Err(codes) if conflict(&codes) => Err(StoreError::Conflict),
            Err(_) => Ok(false),
        }
    }

    async fn token_by_id(
        &self,
        organization_id: Uuid,
        token_id: Uuid,
    ) -> Result<Option<TokenRecord>, StoreError> {
        self.get(org_pk(organization_id), format!("TOKEN#{token_id}"))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn delete_token(
        &self,
        organization_id: Uuid,
        token_id: Uuid,
    ) -> Result<bool, StoreError> {
        let Some(item) = self
            .get(org_pk(organization_id), format!("TOKEN#{token_id}"))
            .await?
        else {
            return Ok(false);
        };
        let token: TokenRecord = from_item(item)?;
        let delete = |pk, sk| self.delete(pk, sk, Some("attribute_exists(pk)"));
        let items = vec![
            delete(format!("TOKEN#{}", token.token_sha256), "TOKEN".into())?,
            delete(org_pk(organization_id), format!("TOKEN#{token_id}"))?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(true),
            Err(codes) if conflict(&codes) => Err(StoreError::Conflict),
            // Revoked meanwhile by a concurrent call: that one answers 200, this one 404.
            Err(_) => Ok(false),
        }
    }

    async fn create_database(&self, db: &KvDatabase) -> Result<(), StoreError> {
        self.create_database_with(db, None).await
    }

    async fn create_restored_database(
        &self,
        db: &KvDatabase,
        request: &RestoreRequest,
    ) -> Result<(), StoreError> {
        let mut item = to_item(format!("DB#{}", db.id), RESTORE_SK.into(), request)?;
        item.insert(DUE_INDEX_PK.into(), s(DUE_INDEX_RESTORE));
        self.create_database_with(db, Some(self.put(item, "attribute_not_exists(pk)")?))
            .await
    }

    async fn get_database(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<KvDatabase>, StoreError> {
        Ok(self.database_item(organization_id, id).await?.map(|f| f.db))
    }

    async fn delete_database(
        &self,
        organization_id: Uuid,
        id: Uuid,
        deleted_at_ms: i64,
    ) -> Result<DeleteOutcome, StoreError> {
        // A backup enabled between the read and the transaction fails its
        // condition: read again (a few times, as delete_backup does).
        for _ in 0..DELETE_ATTEMPTS {
            let Some(fields) = self.database_item(organization_id, id).await? else {
                return Ok(DeleteOutcome::NotFound);
            };
            if let Some(backup) = fields.backup_id {
                self.delete_backup(organization_id, backup).await?;
                continue;
            }
            let delete = |pk, sk, condition| self.delete(pk, sk, condition);
            let mut purge = key(format!("DB#{id}"), purge_sk(deleted_at_ms));
            purge.insert(DUE_INDEX_PK.into(), s(DUE_INDEX_PURGE));
            purge.insert("databaseId".into(), s(id.to_string()));
            purge.insert("organizationId".into(), s(organization_id.to_string()));
            let items = vec![
                delete(
                    org_pk(organization_id),
                    format!("DB#{id}"),
                    Some("attribute_exists(pk) AND attribute_not_exists(backupId)"),
                )?,
                delete(format!("DB#{id}"), "DB".into(), None)?,
                delete(format!("DB#{id}"), RESTORE_SK.into(), None)?,
                self.put(purge, "attribute_not_exists(pk)")?,
            ];
            match self.transact(items).await? {
                Ok(()) => return Ok(DeleteOutcome::Deleted),
                Err(codes) if conflict(&codes) => return Err(StoreError::Conflict),
                // Deleted, or given a backup, meanwhile: read again.
                Err(_) => continue,
            }
        }
        Err(StoreError::Conflict)
    }

    async fn purges(&self) -> Result<Vec<Purge>, StoreError> {
        let mut out = Vec::new();
        for item in due_items(&self.client, &self.table, DUE_INDEX_PURGE).await? {
            let database_id = get_s(&item, "databaseId").and_then(|id| Uuid::parse_str(id).ok());
            let deleted_at_ms = get_s(&item, SK)
                .and_then(|sk| sk.strip_prefix(PURGE_SK_PREFIX))
                .and_then(|ms| ms.parse().ok());
            // The `due` index does not carry the organization (its items only
            // say what is due); the purge item in the table does.
            let organization_id = match database_id {
                Some(db) => self.database_organization(db).await?,
                None => None,
            };
            match (database_id, deleted_at_ms, organization_id) {
                (Some(database_id), Some(deleted_at_ms), Some(organization_id)) => {
                    out.push(Purge {
                        database_id,
                        organization_id,
                        deleted_at_ms,
                    })
                }
                _ => {
                    return Err(StoreError::Malformed(format!(
                        "purge item {:?} / {:?}",
                        get_s(&item, PK),
                        get_s(&item, SK)
                    )))
                }
            }
        }
        out.sort_by_key(|p| p.deleted_at_ms);
        Ok(out)
    }

    async fn purge_leftovers(&self, database_id: Uuid, max: usize) -> Result<usize, StoreError> {
        let mut removed = 0;
        for retired in self
            .partition(format!("DB#{database_id}"), RETIRED_SK_PREFIX)
            .await?
        {
            let ledger = get_s(&retired, "backupId").map(|b| format!("BKLOG#{b}"));
            let entries = match &ledger {
                Some(ledger) => self.page_keys(ledger, max).await?,
                None => Vec::new(),
            };
            if entries.is_empty() {
                // The ledger is gone: the retired item last, so a step cut off
                // in between finds the ledger again through it.
                let (Some(pk), Some(sk)) = (get_s(&retired, PK), get_s(&retired, SK)) else {
                    continue;
                };
                self.client
                    .delete_item()
                    .table_name(&self.table)
                    .set_key(Some(key(pk.into(), sk.into())))
                    .send()
                    .await
                    .map_err(|e| store_error("DeleteItem", e))?;
                removed += 1;
                continue;
            }
            removed += entries.len();
            for chunk in entries.chunks(25) {
                let mut requests: Vec<WriteRequest> = chunk
                    .iter()
                    .map(|k| {
                        DeleteRequest::builder()
                            .set_key(Some(k.clone()))
                            .build()
                            .map(|d| WriteRequest::builder().delete_request(d).build())
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| StoreError::Malformed(format!("BatchWriteItem request: {e}")))?;
                // Unprocessed deletes (throttling) go again; what is still left
                // is found by the next step.
                for _ in 0..5 {
                    if requests.is_empty() {
                        break;
                    }
                    let out = self
                        .client
                        .batch_write_item()
                        .request_items(&self.table, requests)
                        .send()
                        .await
                        .map_err(|e| store_error("BatchWriteItem", e))?;
                    requests = out
                        .unprocessed_items
                        .and_then(|mut u| u.remove(&self.table))
                        .unwrap_or_default();
                }
            }
        }
        Ok(removed)
    }

    async fn finish_purge(&self, purge: &Purge) -> Result<(), StoreError> {
        // First the record of its organization, then the purge item: the
        // organization stays findable throughout.
        let mut gone = key(format!("DB#{}", purge.database_id), GONE_SK.into());
        gone.insert(
            "organizationId".into(),
            s(purge.organization_id.to_string()),
        );
        gone.insert(
            "ttl".into(),
            crate::dynamo::n(now_ms() / 1000 + GONE_OWNER_DAYS * 24 * 3600),
        );
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(gone))
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                format!("DB#{}", purge.database_id),
                purge_sk(purge.deleted_at_ms),
            )))
            .send()
            .await
            .map_err(|e| store_error("DeleteItem", e))?;
        Ok(())
    }

    async fn database_organization(&self, database_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        // The owner item (`DB`), a purge item (`PURGE#...`) or, once purged,
        // the `GONE` item: each names the organization.
        // They sort first in the partition (`BACKUP`, `DB`, `GONE`, `PURGE#...`),
        // before any `RESTORE` or `RETIRED#...`.
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(format!("DB#{database_id}")))
            .projection_expression("organizationId")
            .consistent_read(true)
            .limit(4)
            .send()
            .await
            .map_err(|e| store_error("Query", e))?;
        Ok(out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| get_s(item, "organizationId"))
            .find_map(|id| Uuid::parse_str(id).ok()))
    }

    async fn list_tokens(&self, organization_id: Uuid) -> Result<Vec<TokenRecord>, StoreError> {
        let mut tokens: Vec<TokenRecord> = self
            .org_items(organization_id, "TOKEN#")
            .await?
            .into_iter()
            .map(from_item)
            .collect::<Result<_, _>>()?;
        // `lastUsedAt` lives on the by-hash items (what authentication reads).
        let hashes: Vec<String> = tokens.iter().map(|t| t.token_sha256.clone()).collect();
        let last_used = self.last_used(&hashes).await?;
        for token in &mut tokens {
            token.last_used_at = last_used.get(&token.token_sha256).cloned();
        }
        Ok(tokens)
    }

    async fn list_databases(&self, organization_id: Uuid) -> Result<Vec<KvDatabase>, StoreError> {
        self.org_items(organization_id, "DB#")
            .await?
            .into_iter()
            .map(|item| Ok(from_item::<DatabaseFields>(item)?.db))
            .collect()
    }

    async fn update_database_description(
        &self,
        organization_id: Uuid,
        id: Uuid,
        description: &str,
        updated_at: &str,
    ) -> Result<Option<KvDatabase>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(organization_id), format!("DB#{id}"))))
            .update_expression("SET description = :d, updatedAt = :u")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":d", s(description))
            .expression_attribute_values(":u", s(updated_at))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match unless_condition_failed(result)? {
            Some(out) => out
                .attributes
                .map(|item| from_item::<DatabaseFields>(item).map(|f| f.db))
                .transpose(),
            None => Ok(None),
        }
    }

    async fn set_database_restore(
        &self,
        organization_id: Uuid,
        id: Uuid,
        restore: &DatabaseRestore,
    ) -> Result<bool, StoreError> {
        let value: aws_sdk_dynamodb::types::AttributeValue =
            serde_dynamo::to_attribute_value(restore)
                .map_err(|e| StoreError::Malformed(format!("encoding a restore: {e}")))?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(org_pk(organization_id), format!("DB#{id}"))))
            .update_expression("SET #restore = :r")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#restore", "restore")
            .expression_attribute_values(":r", value)
            .send()
            .await;
        Ok(unless_condition_failed(result)?.is_some())
    }

    async fn enable_backup(&self, backup: &BackupRecord) -> Result<EnableOutcome, StoreError> {
        let claim = build(
            Update::builder()
                .table_name(&self.table)
                .set_key(Some(key(
                    org_pk(backup.organization_id),
                    format!("DB#{}", backup.database_id),
                )))
                .update_expression("SET backupId = :b")
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(backupId)")
                .expression_attribute_values(":b", s(backup.id.to_string()))
                .build(),
        )?;
        let mut item = to_item(
            org_pk(backup.organization_id),
            format!("BACKUP#{}", backup.id),
            backup,
        )?;
        // Pending: due for the engine's catch-up until its snapshot is done.
        item.insert(DUE_INDEX_PK.into(), s(DUE_INDEX_VALUE));
        let items = vec![
            TransactWriteItem::builder().update(claim).build(),
            self.put(item, "attribute_not_exists(pk)")?,
            // The engine finds the backup from the database id alone.
            self.put(locator_item(backup), "attribute_not_exists(pk)")?,
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(EnableOutcome::Enabled),
            Err(codes) if conflict(&codes) => Err(StoreError::Conflict),
            Err(_) => Ok(
                match self
                    .database_item(backup.organization_id, backup.database_id)
                    .await?
                {
                    None => EnableOutcome::DatabaseNotFound,
                    Some(_) => EnableOutcome::AlreadyEnabled,
                },
            ),
        }
    }

    async fn get_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<BackupRecord>, StoreError> {
        self.get(org_pk(organization_id), format!("BACKUP#{id}"))
            .await?
            .map(from_item)
            .transpose()
    }

    async fn backup_of_database(
        &self,
        organization_id: Uuid,
        database_id: Uuid,
    ) -> Result<Option<Option<BackupRecord>>, StoreError> {
        let Some(db) = self.database_item(organization_id, database_id).await? else {
            return Ok(None);
        };
        match db.backup_id {
            Some(id) => Ok(Some(self.get_backup(organization_id, id).await?)),
            None => Ok(Some(None)),
        }
    }

    async fn delete_backup(&self, organization_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
        // The engine moves the backup's progress between our read and the
        // transaction now and then (a snapshot chunk recorded): read again.
        for _ in 0..DELETE_ATTEMPTS {
            let Some(item) = self
                .get(org_pk(organization_id), format!("BACKUP#{id}"))
                .await?
            else {
                return Ok(false);
            };
            match self.retire_backup(organization_id, id, item).await? {
                Retire::Deleted => return Ok(true),
                Retire::NotDeleted => return Ok(false),
                Retire::Moved => continue,
            }
        }
        Err(StoreError::Conflict)
    }

    async fn retry_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<RetryOutcome, StoreError> {
        // The engine's progress attributes (subkv_backup::progress): `activeGen` is
        // the snapshot generation whose differential is written. A comparison with
        // a missing attribute is false, hence the explicit alternatives.
        let resumes = [
            (
                BackupStatus::Active,
                "#st.#code = :failed AND activeGen = snapGen",
            ),
            (
                BackupStatus::Pending,
                "#st.#code = :failed AND (attribute_not_exists(activeGen) \
                 OR attribute_not_exists(snapGen) OR activeGen <> snapGen)",
            ),
        ];
        for (status, condition) in resumes {
            let status = serde_dynamo::to_attribute_value(&status)
                .map_err(|e| StoreError::Malformed(format!("cannot encode status: {e}")))?;
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key(org_pk(organization_id), format!("BACKUP#{id}"))))
                // Due for the engine's catch-up, which resumes it.
                .update_expression(
                    "SET #st = :status, dueIndex = :due REMOVE lastError, errorSince",
                )
                .condition_expression(condition)
                .expression_attribute_names("#st", "status")
                .expression_attribute_names("#code", "code")
                .expression_attribute_values(":status", status)
                .expression_attribute_values(":failed", s("failed"))
                .expression_attribute_values(":due", s(DUE_INDEX_VALUE))
                .return_values(ReturnValue::AllNew)
                .send()
                .await;
            if let Some(out) = unless_condition_failed(result)? {
                let item = out.attributes.ok_or_else(|| {
                    StoreError::Malformed("UpdateItem returned no attributes".into())
                })?;
                return Ok(RetryOutcome::Retried(Box::new(from_item(item)?)));
            }
        }
        match self.get_backup(organization_id, id).await? {
            None => Ok(RetryOutcome::NotFound),
            // Failed again between the two updates (or another retry and a failure
            // raced this one): let the client try again.
            Some(backup) if matches!(backup.status, BackupStatus::Failed { .. }) => {
                Err(StoreError::Conflict)
            }
            Some(backup) => Ok(RetryOutcome::NotFailed(backup.status)),
        }
    }
}
