//! The control table: organizations, tokens, databases and backups.
//!
//! - [`records`]: what is stored, and the API shapes of it.
//! - [`ControlTable`]: what the planes do with it; [`DynamoControl`] is the real
//!   one (the item layout is documented there), [`MemoryControl`] a fake for unit
//!   tests and benchmarks.
//! - [`locator`]: how the backup engine finds a database's backup.
//! - [`retired`]: what a deleted backup left in its bucket, for the next backup
//!   into the same root to empty.

mod dynamo;
pub mod locator;
mod memory;
pub mod records;
pub mod retired;
mod table;

pub use dynamo::{due_items, DynamoControl};

/// Records a token's use if its `lastUsedAt` is older than
/// [`records::LAST_USED_RESOLUTION_MS`] (or unset): at most about one write per
/// token an hour. A failure is logged, never the caller's: the request goes on.
pub async fn note_token_used(control: &dyn ControlTable, token: &TokenRecord) {
    let now = std::time::SystemTime::now();
    let since = now - std::time::Duration::from_millis(records::LAST_USED_RESOLUTION_MS as u64);
    let since = humantime::format_rfc3339_millis(since).to_string();
    if token
        .last_used_at
        .as_deref()
        .is_some_and(|at| at >= since.as_str())
    {
        return;
    }
    let now = humantime::format_rfc3339_millis(now).to_string();
    if let Err(err) = control.touch_token(&token.token_sha256, &now, &since).await {
        tracing::warn!(token = %token.id, error = %err, "recording the token's lastUsedAt failed");
    }
}
pub use memory::MemoryControl;
pub use table::{control_table_indexes, control_table_schema, ensure_control_table, PK, SK};

use self::records::{
    BackupRecord, BackupStatus, DatabaseRestore, KvDatabase, Organization, RestoreRequest,
    TokenRecord,
};
use crate::error::StoreError;
use async_trait::async_trait;
use uuid::Uuid;

/// Outcome of enabling a backup: decided atomically by the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnableOutcome {
    Enabled,
    DatabaseNotFound,
    AlreadyEnabled,
}

/// Outcome of retrying a backup: decided by one conditional update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// It was `failed` and is now `pending` or `active` (the backup as stored).
    Retried(Box<BackupRecord>),
    /// No such backup in the organization.
    NotFound,
    /// It is not `failed`: its status, unchanged.
    NotFailed(BackupStatus),
}

/// Outcome of deleting a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Gone from the control table, its backup deleted, on the purge's list.
    Deleted,
    /// No such database in the organization.
    NotFound,
}

/// How long a purged database's organization stays known: longer than a
/// DynamoDB stream keeps a record (24 h), so every deletion the purge made is
/// counted by the storage meter before it goes.
pub const GONE_OWNER_DAYS: i64 = 7;

/// A deleted database whose storage the purge function still removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purge {
    pub database_id: Uuid,
    pub organization_id: Uuid,
    /// When the database was deleted (ms since the Unix epoch).
    pub deleted_at_ms: i64,
}

#[async_trait]
pub trait ControlTable: Send + Sync {
    /// Creates an organization and its first token, together.
    async fn create_organization(
        &self,
        org: &Organization,
        token: &TokenRecord,
    ) -> Result<(), StoreError>;
    /// Every organization (the directory `ORGS`, one strongly consistent `Query`).
    async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError>;
    async fn get_organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError>;
    /// Replaces an organization's limits; the organization as it now is, or
    /// None if there is no such organization.
    async fn set_organization_limits(
        &self,
        id: Uuid,
        limits: &records::Limits,
    ) -> Result<Option<Organization>, StoreError>;
    /// Deletes an organization's own items (the organization and its directory
    /// entry, together); false if there is none. Its tokens and databases are
    /// the caller's to delete first.
    async fn delete_organization(&self, id: Uuid) -> Result<bool, StoreError>;

    /// Adds a token; false if the organization does not exist.
    async fn put_token(&self, token: &TokenRecord) -> Result<bool, StoreError>;
    /// The token with this SHA-256, in one strongly consistent read.
    async fn token_by_hash(&self, sha256_hex: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Sets the token's `lastUsedAt` (on its by-hash item) to `now` (RFC 3339
    /// UTC), unless it is already at or after `since`: concurrent callers write
    /// it once. A token that no longer exists is left alone.
    async fn touch_token(&self, sha256_hex: &str, now: &str, since: &str)
        -> Result<(), StoreError>;
    /// Every token of the organization (its by-id items, one strongly consistent
    /// `Query`), hashes included: the caller shows none.
    async fn list_tokens(&self, organization_id: Uuid) -> Result<Vec<TokenRecord>, StoreError>;
    /// The organization's token with this id (its by-id item), in one strongly
    /// consistent read: how the data path learns that a token was revoked.
    async fn token_by_id(
        &self,
        organization_id: Uuid,
        token_id: Uuid,
    ) -> Result<Option<TokenRecord>, StoreError>;
    /// Revokes a token; false if the organization has no such token.
    async fn delete_token(&self, organization_id: Uuid, token_id: Uuid)
        -> Result<bool, StoreError>;

    async fn create_database(&self, db: &KvDatabase) -> Result<(), StoreError>;
    /// Creates a database made by a restore (`db.restore` pending) and its
    /// restore item (`DB#<db>` / `RESTORE`: the request, on the restore
    /// function's work list), together.
    async fn create_restored_database(
        &self,
        db: &KvDatabase,
        request: &RestoreRequest,
    ) -> Result<(), StoreError>;
    async fn get_database(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<KvDatabase>, StoreError>;
    /// Every database of an organization, in no particular order.
    async fn list_databases(&self, organization_id: Uuid) -> Result<Vec<KvDatabase>, StoreError>;
    /// Sets the description; None if there is no such database.
    async fn update_database_description(
        &self,
        organization_id: Uuid,
        id: Uuid,
        description: &str,
        updated_at: &str,
    ) -> Result<Option<KvDatabase>, StoreError>;

    /// Deletes a database: first its backup, if one is enabled (as
    /// [`Self::delete_backup`] does: the engine writes nothing more, the bucket
    /// keeps what it holds), then in one transaction the database, its owner
    /// item and its restore item (with any sealed restore secret), with a purge
    /// item put on the purge function's list ([`Self::purges`]).
    async fn delete_database(
        &self,
        organization_id: Uuid,
        id: Uuid,
        deleted_at_ms: i64,
    ) -> Result<DeleteOutcome, StoreError>;
    /// The deleted databases whose storage is still being removed, oldest first.
    async fn purges(&self) -> Result<Vec<Purge>, StoreError>;
    /// One step of removing what a deleted database left in the control table
    /// besides its purge item: the retired roots of its deleted backups
    /// (`DB#<db>` / `RETIRED#...`) and their ledgers (`BKLOG#<backup>`), which
    /// only a later backup of the same database would have used. Up to `max`
    /// ledger items a step; how many items it removed (0: nothing left). The
    /// tenant's bucket is not touched.
    async fn purge_leftovers(&self, database_id: Uuid, max: usize) -> Result<usize, StoreError>;
    /// Takes a purge off the list (its storage is gone), leaving a record of the
    /// database's organization for [`GONE_OWNER_DAYS`] (what the storage meter
    /// needs for the deletions it has yet to count: `subkv_connect::storage`).
    async fn finish_purge(&self, purge: &Purge) -> Result<(), StoreError>;
    /// The organization of a database: a live one's, a deleted one's while it
    /// is purged and for [`GONE_OWNER_DAYS`] after; None if unknown.
    async fn database_organization(&self, database_id: Uuid) -> Result<Option<Uuid>, StoreError>;

    /// Records how a database's restore stands (the restore function, as it goes);
    /// false if there is no such database. Only a database made from a backup has
    /// one; the status moves `pending` to `active` or `failed`.
    async fn set_database_restore(
        &self,
        organization_id: Uuid,
        id: Uuid,
        restore: &DatabaseRestore,
    ) -> Result<bool, StoreError>;

    /// Enables a backup unless the database already has one, atomically: of two
    /// concurrent calls for one database, at most one returns `Enabled`.
    async fn enable_backup(&self, backup: &BackupRecord) -> Result<EnableOutcome, StoreError>;
    async fn get_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<BackupRecord>, StoreError>;
    /// The database's backup: `None` if there is no such database, else
    /// `Some(None)` or `Some(Some(backup))` (at most one exists).
    async fn backup_of_database(
        &self,
        organization_id: Uuid,
        database_id: Uuid,
    ) -> Result<Option<Option<BackupRecord>>, StoreError>;
    /// Deletes a backup and frees its database for a new one; false if not found.
    /// Its ledger stays, and what it may have written to its bucket is recorded
    /// as a retired root ([`retired`]) in the same transaction, for a later backup
    /// of the database into the same root to empty.
    async fn delete_backup(&self, organization_id: Uuid, id: Uuid) -> Result<bool, StoreError>;
    /// A `failed` backup resumes: `active` if the differential of its current
    /// snapshot generation is written (the engine's `activeGen` equals `snapGen`),
    /// else `pending`; `lastError` and the run of transient faults are cleared,
    /// the cursor and snapshot progress kept, so the engine goes on from its
    /// cursor. Applies only to a backup that exists and is `failed`.
    async fn retry_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<RetryOutcome, StoreError>;
}
