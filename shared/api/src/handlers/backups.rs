//! KV backups: enable (at most one per database), list, get, delete, and retry a
//! `failed` one (a subkv addition).

use crate::error::{ApiError, ApiResult, Resource};
use crate::http::Reply;
use crate::pipeline::Ctx;
use serde::{Deserialize, Serialize};
use subkv_core::control::records::{now_rfc3339, BackupRecord, BackupStatus, KvDatabaseBackup};
use subkv_core::control::{EnableOutcome, RetryOutcome};
use subkv_core::secrets::{backup_context, SecretString};
use subkv_core::validate;
use uuid::Uuid;

/// `EnableBackup` of the API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EnableBackup {
    kind: String,
    endpoint: String,
    bucket_name: String,
    bucket_region: String,
    access_key_id: String,
    secret_access_key: SecretString,
    #[serde(default)]
    prefix: Option<String>,
}

/// Checks every field; returns the normalised endpoint.
fn validate(body: &EnableBackup, allow_insecure: bool) -> Result<String, String> {
    if body.kind != "s3" {
        return Err(format!("kind must be \"s3\", got {:?}", body.kind));
    }
    let endpoint = validate::endpoint(&body.endpoint, allow_insecure)?;
    validate::bucket_name(&body.bucket_name)?;
    validate::bucket_region(&body.bucket_region)?;
    validate::credential("accessKeyId", &body.access_key_id, 128)?;
    validate::credential("secretAccessKey", body.secret_access_key.expose(), 256)?;
    validate::prefix(body.prefix.as_deref().unwrap_or(""))?;
    Ok(endpoint)
}

#[derive(Serialize)]
struct Enabled {
    id: Uuid,
}

pub async fn enable(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let database_id = ctx.id("databaseId")?;
    let body: EnableBackup = ctx.json(false)?;
    let endpoint = validate(&body, ctx.state.config.allow_insecure_endpoints)
        .map_err(ApiError::InvalidRequestBody)?;
    let control = &ctx.state.control;
    // A database being restored has no data to back up yet (the restore writes
    // no change records): its backup starts once it is active. A restore only
    // moves on from pending, so checking before the transaction is enough.
    if let Some(refusal) = control
        .get_database(organization_id, database_id)
        .await?
        .and_then(|db| db.restore)
        .and_then(|restore| restore.refusal(database_id))
    {
        return Err(ApiError::DatabaseRestoring(format!(
            "a backup cannot be enabled yet: {refusal}"
        )));
    }
    // Answer the common conflicts before paying for a KMS call; the transaction
    // below still decides races.
    match control
        .backup_of_database(organization_id, database_id)
        .await?
    {
        None => return Err(ApiError::not_found(Resource::Database, database_id)),
        Some(Some(_)) => {
            return Err(ApiError::BackupAlreadyEnabled {
                database_id: database_id.to_string(),
            })
        }
        Some(None) => {}
    }
    let id = Uuid::new_v4();
    let ciphertext = ctx
        .state
        .sealer
        .seal(
            &body.secret_access_key,
            &backup_context(&id.to_string(), &database_id.to_string()),
        )
        .await?;
    let record = BackupRecord {
        id,
        organization_id,
        database_id,
        kind: body.kind,
        endpoint,
        bucket_name: body.bucket_name,
        bucket_region: body.bucket_region,
        access_key_id: body.access_key_id,
        secret_access_key_ciphertext: ciphertext,
        prefix: body.prefix.unwrap_or_default(),
        status: BackupStatus::Pending,
        created_at: now_rfc3339(),
        last_backed_up_at: None,
        last_versionstamp: None,
        last_error: None,
        snapshot_chunks: None,
    };
    match control.enable_backup(&record).await? {
        EnableOutcome::Enabled => Reply::json(&Enabled { id }),
        EnableOutcome::AlreadyEnabled => Err(ApiError::BackupAlreadyEnabled {
            database_id: database_id.to_string(),
        }),
        EnableOutcome::DatabaseNotFound => {
            Err(ApiError::not_found(Resource::Database, database_id))
        }
    }
}

pub async fn list(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let database_id = ctx.id("databaseId")?;
    let backups: Vec<KvDatabaseBackup> = ctx
        .state
        .control
        .backup_of_database(organization_id, database_id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::Database, database_id))?
        .iter()
        .map(KvDatabaseBackup::from)
        .collect();
    Reply::json(&backups)
}

pub async fn get(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseBackupId")?;
    let backup = ctx
        .state
        .control
        .get_backup(organization_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::DatabaseBackup, id))?;
    Reply::json(&KvDatabaseBackup::from(&backup))
}

pub async fn delete(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseBackupId")?;
    if ctx.state.control.delete_backup(organization_id, id).await? {
        Ok(Reply::empty_object())
    } else {
        Err(ApiError::not_found(Resource::DatabaseBackup, id))
    }
}

/// `POST /v1/database_backups/{id}/retry`: a `failed` backup resumes from its
/// cursor (the tenant fixed their credentials or bucket), `pending` or `active` as
/// the store decides; any request body is ignored.
pub async fn retry(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseBackupId")?;
    match ctx.state.control.retry_backup(organization_id, id).await? {
        RetryOutcome::Retried(backup) => {
            tracing::info!(backup = %id, status = ?backup.status, "backup retried");
            Reply::json(&KvDatabaseBackup::from(backup.as_ref()))
        }
        RetryOutcome::NotFound => Err(ApiError::not_found(Resource::DatabaseBackup, id)),
        RetryOutcome::NotFailed(status) => Err(ApiError::BackupNotFailed {
            id: id.to_string(),
            status: match status {
                BackupStatus::Pending => "pending",
                BackupStatus::Active => "active",
                BackupStatus::Failed { .. } => "failed",
            },
        }),
    }
}
