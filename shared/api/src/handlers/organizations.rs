//! Organizations, admin only: create, list, get one.

use crate::error::{ApiError, ApiResult, Resource};
use crate::http::Reply;
use crate::pipeline::Ctx;
use serde::{Deserialize, Serialize};
use subkv_core::auth::mint_token;
use subkv_core::control::records::{now_rfc3339, Organization, TokenRecord};
use subkv_core::validate;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOrganization {
    name: String,
}

/// The reply to a creation: the only time the token is ever shown.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: Uuid,
    name: String,
    created_at: String,
    token: String,
    token_id: Uuid,
}

pub async fn create(ctx: Ctx) -> ApiResult<Reply> {
    let body: CreateOrganization = ctx.json(false)?;
    validate::organization_name(&body.name).map_err(ApiError::InvalidRequestBody)?;
    let now = now_rfc3339();
    let org = Organization {
        id: Uuid::new_v4(),
        name: body.name,
        created_at: now.clone(),
    };
    let token = mint_token();
    let record = TokenRecord {
        id: Uuid::new_v4(),
        organization_id: org.id,
        token_sha256: token.sha256_hex.clone(),
        description: "created with the organization".into(),
        created_at: now,
        databases: None,
        access: Default::default(),
        expires_at: None,
        last_used_at: None,
    };
    ctx.state.control.create_organization(&org, &record).await?;
    Reply::json(&Created {
        id: org.id,
        name: org.name,
        created_at: org.created_at,
        token: token.plaintext,
        token_id: record.id,
    })
}

/// `GET /v1/organizations`: every organization, oldest first (`order=desc`
/// reverses), filtered by `q` (a part of the id or of the name, any case) and
/// paginated as databases are.
pub async fn list(ctx: Ctx) -> ApiResult<Reply> {
    let query = super::list_query(&ctx)?;
    let mut all = ctx.state.control.list_organizations().await?;
    if let Some(q) = &query.q {
        let needle = q.to_lowercase();
        all.retain(|o| {
            o.id.to_string().contains(&needle) || o.name.to_lowercase().contains(&needle)
        });
    }
    super::list_reply(&ctx, &query, all, |o| (&o.created_at, o.id))
}

/// `GET /v1/organizations/{organizationId}`: one organization.
pub async fn get(ctx: Ctx) -> ApiResult<Reply> {
    let id = ctx.id("organizationId")?;
    let org = ctx
        .state
        .control
        .get_organization(id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::Organization, id))?;
    Reply::json(&org)
}

/// `DELETE /v1/organizations/{organizationId}` (admin, issue 15): refused with
/// 409 while the organization has databases, unless `?force=true`, which deletes
/// each as `DELETE /v1/databases/{id}` does (backup deleted, data refused at
/// once, storage purged). Its tokens are revoked first (so nothing new is made
/// meanwhile), then its databases (with `force`), then the organization and its
/// directory entry. Each step can be repeated: a deletion cut off half-way is
/// finished by asking again.
pub async fn delete(ctx: Ctx) -> ApiResult<Reply> {
    let id = ctx.id("organizationId")?;
    let force = match ctx
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "force")
        .map(|(_, v)| v)
    {
        None => false,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(v) => {
            return Err(ApiError::InvalidQuery(format!(
                "force must be true or false, got {v:?}"
            )))
        }
    };
    let control = &ctx.state.control;
    if control.get_organization(id).await?.is_none() {
        return Err(ApiError::not_found(Resource::Organization, id));
    }
    let databases = control.list_databases(id).await?;
    if !databases.is_empty() && !force {
        return Err(ApiError::OrganizationHasDatabases {
            id: id.to_string(),
            databases: databases.len(),
        });
    }
    for token in control.list_tokens(id).await? {
        control.delete_token(id, token.id).await?;
    }
    // Listed again: a database created by a request already past its token
    // check when the tokens went is deleted too (with force) or refuses.
    let databases = control.list_databases(id).await?;
    if !databases.is_empty() && !force {
        return Err(ApiError::OrganizationHasDatabases {
            id: id.to_string(),
            databases: databases.len(),
        });
    }
    for db in databases {
        super::databases::delete_one(&ctx, id, db.id).await?;
    }
    if !control.delete_organization(id).await? {
        return Err(ApiError::not_found(Resource::Organization, id));
    }
    Ok(Reply::empty_object())
}
