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
