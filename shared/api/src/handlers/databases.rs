//! KV databases: create (empty, or restored from a backup: `restore_from`), list,
//! get, update the description, delete.

use super::restore_from::{self, RestoreFrom};
use crate::error::{ApiError, ApiResult, Resource};
use crate::http::Reply;
use crate::pipeline::Ctx;
use serde::Deserialize;
use subkv_core::control::records::{now_rfc3339, KvDatabase};
use subkv_core::control::DeleteOutcome;
use subkv_core::validate;
use uuid::Uuid;

/// Body of create and update. `null` means "" on create and "unchanged" on update.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescriptionBody {
    #[serde(default)]
    description: Option<String>,
}

fn description_of(ctx: &Ctx) -> ApiResult<Option<String>> {
    let body: DescriptionBody = ctx.json(true)?;
    if let Some(d) = &body.description {
        validate::description(d).map_err(ApiError::InvalidRequestBody)?;
    }
    Ok(body.description)
}

/// Body of create: a description, and optionally what to restore into the new
/// database (issue 14).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    restore_from: Option<RestoreFrom>,
}

pub async fn create(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let body: CreateBody = ctx.json(true)?;
    let description = body.description.unwrap_or_default();
    validate::description(&description).map_err(ApiError::InvalidRequestBody)?;
    let restore_from = body
        .restore_from
        .map(|r| restore_from::check(r, ctx.state.config.allow_insecure_endpoints))
        .transpose()
        .map_err(ApiError::InvalidRequestBody)?;
    let now = now_rfc3339();
    let mut db = KvDatabase {
        id: Uuid::new_v4(),
        organization_id,
        description,
        created_at: now.clone(),
        updated_at: now,
        restore: None,
    };
    let control = ctx.state.control.as_ref();
    within_database_limit(control, organization_id).await?;
    match restore_from {
        None => control.create_database(&db).await?,
        Some(checked) => {
            let (restore, request) = restore_from::prepare(
                checked,
                organization_id,
                db.id,
                control,
                ctx.state.sealer.as_ref(),
            )
            .await?;
            db.restore = Some(restore);
            control.create_restored_database(&db, &request).await?;
        }
    }
    Reply::json(&db)
}

/// Refuses a new database when the organization has as many as its limit
/// allows (`limits.databases`). Counted before the write: concurrent creations
/// can each pass, so an organization may exceed its limit by as many creations
/// as run at once (docs/quotas.md).
async fn within_database_limit(
    control: &dyn subkv_core::control::ControlTable,
    organization_id: Uuid,
) -> ApiResult<()> {
    let Some(limit) = control
        .get_organization(organization_id)
        .await?
        .and_then(|org| org.limits.databases)
    else {
        return Ok(());
    };
    let count = control.list_databases(organization_id).await?.len() as u64;
    if count >= limit {
        return Err(ApiError::LimitExceeded(format!(
            "the organization has {count} databases, its limit (limits.databases) is {limit}: \
             delete one, or ask the operator to raise the limit"
        )));
    }
    Ok(())
}

pub async fn list(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let query = super::list_query(&ctx)?;
    let mut all = ctx.state.control.list_databases(organization_id).await?;
    // A token limited to some databases lists those.
    if let subkv_core::auth::Caller::Organization { scope, .. } = &ctx.caller {
        all.retain(|db| scope.allows(db.id));
    }
    if let Some(q) = &query.q {
        let needle = q.to_lowercase();
        all.retain(|db| db.id.to_string().contains(&needle));
    }
    super::list_reply(&ctx, &query, all, |db| (&db.created_at, db.id))
}

pub async fn get(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseId")?;
    let db = ctx
        .state
        .control
        .get_database(organization_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::Database, id))?;
    Reply::json(&db)
}

pub async fn update(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseId")?;
    let control = &ctx.state.control;
    let updated = match description_of(&ctx)? {
        Some(description) => {
            control
                .update_database_description(organization_id, id, &description, &now_rfc3339())
                .await?
        }
        None => control.get_database(organization_id, id).await?,
    };
    Reply::json(&updated.ok_or_else(|| ApiError::not_found(Resource::Database, id))?)
}

/// `DELETE /v1/databases/{id}` (issue 15): the database is gone from the control
/// table at once (its backup deleted first: the bucket keeps what it holds), its
/// head in the data table marked so that no data-path token reaches it, and its
/// storage left to the purge function (`kv-purge-deleted`, docs/data-plane.md).
/// The mark follows the control table's change: should it fail, the purge
/// marks the head before it deletes anything, within a minute.
pub async fn delete(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseId")?;
    if delete_one(&ctx, organization_id, id).await? {
        Ok(Reply::empty_object())
    } else {
        Err(ApiError::not_found(Resource::Database, id))
    }
}

/// Deletes one database (above); false if the organization has no such database.
pub(crate) async fn delete_one(ctx: &Ctx, organization_id: Uuid, id: Uuid) -> ApiResult<bool> {
    let deleted_at = subkv_core::control::retired::now_ms();
    match ctx
        .state
        .control
        .delete_database(organization_id, id, deleted_at)
        .await?
    {
        DeleteOutcome::NotFound => Ok(false),
        DeleteOutcome::Deleted => {
            if let Err(err) = ctx.state.marks.mark_deleted(id, deleted_at).await {
                tracing::warn!(database = %id, error = %err, "marking the deleted database's head failed; the purge marks it");
            }
            Ok(true)
        }
    }
}
