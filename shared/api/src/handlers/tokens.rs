//! Organization tokens: mint another, list them (never a secret), revoke one
//! (admin or the organization's own token).

use crate::error::{ApiError, ApiResult, Resource};
use crate::http::Reply;
use crate::pipeline::Ctx;
use serde::{Deserialize, Serialize};
use subkv_core::auth::mint_token;
use subkv_core::control::records::{now_rfc3339, TokenRecord};
use subkv_core::validate;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    #[serde(default)]
    description: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    id: Uuid,
    organization_id: Uuid,
    description: String,
    created_at: String,
    token: String,
}

pub async fn create(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.id("organizationId")?;
    let body: CreateToken = ctx.json(true)?;
    let description = body.description.unwrap_or_default();
    validate::description(&description).map_err(ApiError::InvalidRequestBody)?;
    let token = mint_token();
    let record = TokenRecord {
        id: Uuid::new_v4(),
        organization_id,
        token_sha256: token.sha256_hex.clone(),
        description,
        created_at: now_rfc3339(),
    };
    if !ctx.state.control.put_token(&record).await? {
        return Err(ApiError::not_found(Resource::Organization, organization_id));
    }
    Reply::json(&Created {
        id: record.id,
        organization_id,
        description: record.description,
        created_at: record.created_at,
        token: token.plaintext,
    })
}

/// A token as listed: what it is, never the token or its hash.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: Uuid,
    organization_id: Uuid,
    description: String,
    created_at: String,
}

/// `GET /v1/organizations/{organizationId}/tokens`: every token, oldest first
/// (`order=desc` reverses), paginated and filtered by `q` (a part of the id) as
/// databases are.
pub async fn list(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.id("organizationId")?;
    let query = super::list_query(&ctx)?;
    let control = &ctx.state.control;
    let mut all = control.list_tokens(organization_id).await?;
    // The admin may name any organization: one without tokens may not exist.
    if all.is_empty() && control.get_organization(organization_id).await?.is_none() {
        return Err(ApiError::not_found(Resource::Organization, organization_id));
    }
    if let Some(q) = &query.q {
        let needle = q.to_lowercase();
        all.retain(|t| t.id.to_string().contains(&needle));
    }
    let listed: Vec<Listed> = all
        .into_iter()
        .map(|t| Listed {
            id: t.id,
            organization_id: t.organization_id,
            description: t.description,
            created_at: t.created_at,
        })
        .collect();
    super::list_reply(&ctx, &query, listed, |t| (&t.created_at, t.id))
}

pub async fn revoke(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.id("organizationId")?;
    let token_id = ctx.id("tokenId")?;
    if ctx
        .state
        .control
        .delete_token(organization_id, token_id)
        .await?
    {
        return Ok(Reply::empty_object());
    }
    // Say which of the two is missing (the admin may name any organization).
    if ctx
        .state
        .control
        .get_organization(organization_id)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(Resource::Organization, organization_id));
    }
    Err(ApiError::not_found(Resource::Token, token_id))
}
