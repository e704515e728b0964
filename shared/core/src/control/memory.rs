//! An in-memory [`ControlTable`] for unit tests and benchmarks. It keeps the same
//! invariants as the DynamoDB store (one backup per database, atomically). It
//! holds none of the backup engine's progress, so deleting a backup retires no
//! root here (the engine's fake, `subkv_backup::fakes`, does, as the DynamoDB
//! store does).

use super::records::{
    BackupRecord, BackupStatus, DatabaseRestore, KvDatabase, Organization, RestoreRequest,
    TokenRecord,
};
use super::{ControlTable, DeleteOutcome, EnableOutcome, Purge, RetryOutcome};
use crate::error::StoreError;
use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use uuid::Uuid;

#[derive(Default)]
struct State {
    orgs: HashMap<Uuid, Organization>,
    tokens: HashMap<String, TokenRecord>,
    databases: HashMap<Uuid, (KvDatabase, Option<Uuid>)>,
    backups: HashMap<Uuid, BackupRecord>,
    /// Backups whose current snapshot generation has its differential written
    /// (`activeGen = snapGen` in the control table).
    differential_written: HashSet<Uuid>,
    /// Restore requests by database.
    restores: HashMap<Uuid, RestoreRequest>,
    /// The purge's work list.
    purges: Vec<Purge>,
    /// Purged databases' organizations.
    gone: HashMap<Uuid, Uuid>,
}

#[derive(Default)]
pub struct MemoryControl {
    state: Mutex<State>,
}

impl MemoryControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an organization with `limits` and one token, and a database of
    /// it if `with_database` (for tests): their ids.
    pub async fn add_organization(
        &self,
        limits: super::records::Limits,
        with_database: bool,
    ) -> Result<(Uuid, Option<Uuid>), StoreError> {
        let org = Organization {
            id: Uuid::new_v4(),
            name: "test".into(),
            created_at: String::new(),
            limits,
        };
        let token = TokenRecord {
            id: Uuid::new_v4(),
            organization_id: org.id,
            token_sha256: Uuid::new_v4().to_string(),
            description: String::new(),
            created_at: String::new(),
            databases: None,
            access: Default::default(),
            expires_at: None,
            last_used_at: None,
        };
        self.create_organization(&org, &token).await?;
        if !with_database {
            return Ok((org.id, None));
        }
        let db = KvDatabase {
            id: Uuid::new_v4(),
            organization_id: org.id,
            description: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            restore: None,
        };
        self.create_database(&db).await?;
        Ok((org.id, Some(db.id)))
    }

    /// The restore request stored for a database (for tests).
    pub fn restore_request(&self, database_id: Uuid) -> Option<RestoreRequest> {
        self.lock().ok()?.restores.get(&database_id).cloned()
    }

    /// What the backup engine does to a backup (for tests): sets its status and
    /// `lastError`, and whether the differential of its current snapshot
    /// generation is written. False if there is no such backup.
    pub fn set_engine_state(
        &self,
        id: Uuid,
        status: BackupStatus,
        last_error: Option<&str>,
        differential_written: bool,
    ) -> bool {
        let Ok(mut s) = self.lock() else {
            return false;
        };
        let Some(backup) = s.backups.get_mut(&id) else {
            return false;
        };
        backup.status = status;
        backup.last_error = last_error.map(str::to_owned);
        if differential_written {
            s.differential_written.insert(id);
        } else {
            s.differential_written.remove(&id);
        }
        true
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Malformed("memory store lock poisoned".into()))
    }
}

#[async_trait]
impl ControlTable for MemoryControl {
    async fn create_organization(
        &self,
        org: &Organization,
        token: &TokenRecord,
    ) -> Result<(), StoreError> {
        let mut s = self.lock()?;
        s.orgs.insert(org.id, org.clone());
        s.tokens.insert(token.token_sha256.clone(), token.clone());
        Ok(())
    }

    async fn list_organizations(&self) -> Result<Vec<Organization>, StoreError> {
        Ok(self.lock()?.orgs.values().cloned().collect())
    }

    async fn get_organization(&self, id: Uuid) -> Result<Option<Organization>, StoreError> {
        Ok(self.lock()?.orgs.get(&id).cloned())
    }

    async fn put_token(&self, token: &TokenRecord) -> Result<bool, StoreError> {
        let mut s = self.lock()?;
        if !s.orgs.contains_key(&token.organization_id) {
            return Ok(false);
        }
        s.tokens.insert(token.token_sha256.clone(), token.clone());
        Ok(true)
    }

    async fn token_by_hash(&self, sha256_hex: &str) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self.lock()?.tokens.get(sha256_hex).cloned())
    }

    async fn set_organization_limits(
        &self,
        id: Uuid,
        limits: &super::records::Limits,
    ) -> Result<Option<Organization>, StoreError> {
        let mut s = self.lock()?;
        Ok(s.orgs.get_mut(&id).map(|org| {
            org.limits = *limits;
            org.clone()
        }))
    }

    async fn touch_token(
        &self,
        sha256_hex: &str,
        now: &str,
        since: &str,
    ) -> Result<(), StoreError> {
        if let Some(token) = self.lock()?.tokens.get_mut(sha256_hex) {
            if token.last_used_at.as_deref().is_none_or(|at| at < since) {
                token.last_used_at = Some(now.to_string());
            }
        }
        Ok(())
    }

    async fn delete_organization(&self, id: Uuid) -> Result<bool, StoreError> {
        Ok(self.lock()?.orgs.remove(&id).is_some())
    }

    async fn token_by_id(
        &self,
        organization_id: Uuid,
        token_id: Uuid,
    ) -> Result<Option<TokenRecord>, StoreError> {
        Ok(self
            .lock()?
            .tokens
            .values()
            .find(|t| t.organization_id == organization_id && t.id == token_id)
            .cloned())
    }

    async fn delete_token(
        &self,
        organization_id: Uuid,
        token_id: Uuid,
    ) -> Result<bool, StoreError> {
        let mut s = self.lock()?;
        let before = s.tokens.len();
        s.tokens
            .retain(|_, t| !(t.organization_id == organization_id && t.id == token_id));
        Ok(s.tokens.len() != before)
    }

    async fn create_database(&self, db: &KvDatabase) -> Result<(), StoreError> {
        self.lock()?.databases.insert(db.id, (db.clone(), None));
        Ok(())
    }

    async fn create_restored_database(
        &self,
        db: &KvDatabase,
        request: &RestoreRequest,
    ) -> Result<(), StoreError> {
        let mut s = self.lock()?;
        s.databases.insert(db.id, (db.clone(), None));
        s.restores.insert(db.id, request.clone());
        Ok(())
    }

    async fn get_database(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<KvDatabase>, StoreError> {
        Ok(self
            .lock()?
            .databases
            .get(&id)
            .filter(|(db, _)| db.organization_id == organization_id)
            .map(|(db, _)| db.clone()))
    }

    async fn list_tokens(&self, organization_id: Uuid) -> Result<Vec<TokenRecord>, StoreError> {
        Ok(self
            .lock()?
            .tokens
            .values()
            .filter(|t| t.organization_id == organization_id)
            .cloned()
            .collect())
    }

    async fn list_databases(&self, organization_id: Uuid) -> Result<Vec<KvDatabase>, StoreError> {
        Ok(self
            .lock()?
            .databases
            .values()
            .filter(|(db, _)| db.organization_id == organization_id)
            .map(|(db, _)| db.clone())
            .collect())
    }

    async fn update_database_description(
        &self,
        organization_id: Uuid,
        id: Uuid,
        description: &str,
        updated_at: &str,
    ) -> Result<Option<KvDatabase>, StoreError> {
        let mut s = self.lock()?;
        Ok(s.databases
            .get_mut(&id)
            .filter(|(db, _)| db.organization_id == organization_id)
            .map(|(db, _)| {
                db.description = description.to_string();
                db.updated_at = updated_at.to_string();
                db.clone()
            }))
    }

    async fn set_database_restore(
        &self,
        organization_id: Uuid,
        id: Uuid,
        restore: &DatabaseRestore,
    ) -> Result<bool, StoreError> {
        let mut s = self.lock()?;
        Ok(s.databases
            .get_mut(&id)
            .filter(|(db, _)| db.organization_id == organization_id)
            .map(|(db, _)| db.restore = Some(restore.clone()))
            .is_some())
    }

    async fn enable_backup(&self, backup: &BackupRecord) -> Result<EnableOutcome, StoreError> {
        let mut s = self.lock()?;
        let Some((db, slot)) = s.databases.get_mut(&backup.database_id) else {
            return Ok(EnableOutcome::DatabaseNotFound);
        };
        if db.organization_id != backup.organization_id {
            return Ok(EnableOutcome::DatabaseNotFound);
        }
        if slot.is_some() {
            return Ok(EnableOutcome::AlreadyEnabled);
        }
        *slot = Some(backup.id);
        s.backups.insert(backup.id, backup.clone());
        Ok(EnableOutcome::Enabled)
    }

    async fn get_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<Option<BackupRecord>, StoreError> {
        Ok(self
            .lock()?
            .backups
            .get(&id)
            .filter(|b| b.organization_id == organization_id)
            .cloned())
    }

    async fn backup_of_database(
        &self,
        organization_id: Uuid,
        database_id: Uuid,
    ) -> Result<Option<Option<BackupRecord>>, StoreError> {
        let s = self.lock()?;
        Ok(s.databases
            .get(&database_id)
            .filter(|(db, _)| db.organization_id == organization_id)
            .map(|(_, slot)| slot.and_then(|id| s.backups.get(&id).cloned())))
    }

    async fn delete_database(
        &self,
        organization_id: Uuid,
        id: Uuid,
        deleted_at_ms: i64,
    ) -> Result<DeleteOutcome, StoreError> {
        let mut s = self.lock()?;
        match s.databases.get(&id) {
            Some((db, _)) if db.organization_id == organization_id => {}
            _ => return Ok(DeleteOutcome::NotFound),
        }
        if let Some((_, Some(backup))) = s.databases.remove(&id) {
            s.backups.remove(&backup);
            s.differential_written.remove(&backup);
        }
        s.restores.remove(&id);
        s.purges.push(Purge {
            database_id: id,
            organization_id,
            deleted_at_ms,
        });
        Ok(DeleteOutcome::Deleted)
    }

    async fn purges(&self) -> Result<Vec<Purge>, StoreError> {
        Ok(self.lock()?.purges.clone())
    }

    /// Deleting a backup retires no root here (see the module's documentation).
    async fn purge_leftovers(&self, _: Uuid, _: usize) -> Result<usize, StoreError> {
        Ok(0)
    }

    async fn finish_purge(&self, purge: &Purge) -> Result<(), StoreError> {
        let mut s = self.lock()?;
        s.purges.retain(|p| p != purge);
        s.gone.insert(purge.database_id, purge.organization_id);
        Ok(())
    }

    async fn database_organization(&self, database_id: Uuid) -> Result<Option<Uuid>, StoreError> {
        let s = self.lock()?;
        Ok(s.databases
            .get(&database_id)
            .map(|(db, _)| db.organization_id)
            .or_else(|| {
                s.purges
                    .iter()
                    .find(|p| p.database_id == database_id)
                    .map(|p| p.organization_id)
            })
            .or_else(|| s.gone.get(&database_id).copied()))
    }

    async fn delete_backup(&self, organization_id: Uuid, id: Uuid) -> Result<bool, StoreError> {
        let mut s = self.lock()?;
        let Some(backup) = s
            .backups
            .get(&id)
            .filter(|b| b.organization_id == organization_id)
        else {
            return Ok(false);
        };
        let database_id = backup.database_id;
        s.backups.remove(&id);
        s.differential_written.remove(&id);
        if let Some((_, slot)) = s.databases.get_mut(&database_id) {
            if *slot == Some(id) {
                *slot = None;
            }
        }
        Ok(true)
    }

    async fn retry_backup(
        &self,
        organization_id: Uuid,
        id: Uuid,
    ) -> Result<RetryOutcome, StoreError> {
        let mut s = self.lock()?;
        let active = s.differential_written.contains(&id);
        let Some(backup) = s
            .backups
            .get_mut(&id)
            .filter(|b| b.organization_id == organization_id)
        else {
            return Ok(RetryOutcome::NotFound);
        };
        if !matches!(backup.status, BackupStatus::Failed { .. }) {
            return Ok(RetryOutcome::NotFailed(backup.status.clone()));
        }
        backup.status = if active {
            BackupStatus::Active
        } else {
            BackupStatus::Pending
        };
        backup.last_error = None;
        Ok(RetryOutcome::Retried(Box::new(backup.clone())))
    }
}
