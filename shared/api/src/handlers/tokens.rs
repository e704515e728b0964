//! Organization tokens: mint another (optionally limited to some databases, to
//! reading, or in time: issue 15 §2), list them (never a secret), revoke one
//! (admin or the organization's own token).

use crate::error::{ApiError, ApiResult, Resource};
use crate::http::Reply;
use crate::pipeline::Ctx;
use serde::{Deserialize, Serialize};
use subkv_core::auth::mint_token;
use subkv_core::control::records::{now_rfc3339, TokenAccess, TokenRecord};
use subkv_core::validate;
use uuid::Uuid;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateToken {
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    databases: Option<Vec<Uuid>>,
    #[serde(default)]
    access: Option<TokenAccess>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Most databases one token may be limited to.
const MAX_TOKEN_DATABASES: usize = 100;

/// A token as shown: what it is and what it may do, never the token or its hash.
/// `databases` null: every database of the organization; `expiresAt` null: never.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Listed {
    id: Uuid,
    organization_id: Uuid,
    description: String,
    created_at: String,
    databases: Option<Vec<Uuid>>,
    access: TokenAccess,
    expires_at: Option<String>,
    /// When it was last used (API or KV metadata exchange), to the hour.
    last_used_at: Option<String>,
}

impl From<TokenRecord> for Listed {
    fn from(t: TokenRecord) -> Self {
        Listed {
            id: t.id,
            organization_id: t.organization_id,
            description: t.description,
            created_at: t.created_at,
            databases: t.databases,
            access: t.access,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Created {
    #[serde(flatten)]
    listed: Listed,
    token: String,
}

/// `expiresAt`: RFC 3339, in the future; stored in UTC with milliseconds.
fn expiry(text: &str) -> ApiResult<String> {
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| {
        ApiError::InvalidRequestBody(format!(
            "expiresAt must be an RFC 3339 time such as 2026-12-31T23:59:59Z, got {text:?}"
        ))
    })?;
    if at.timestamp_millis() <= chrono::Utc::now().timestamp_millis() {
        return Err(ApiError::InvalidRequestBody(format!(
            "expiresAt {text} is not in the future"
        )));
    }
    Ok(at
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// `databases`: 1 to 100 distinct databases, each of the organization.
async fn limited_to(ctx: &Ctx, organization_id: Uuid, ids: Vec<Uuid>) -> ApiResult<Vec<Uuid>> {
    if ids.is_empty() || ids.len() > MAX_TOKEN_DATABASES {
        return Err(ApiError::InvalidRequestBody(format!(
            "databases must name 1 to {MAX_TOKEN_DATABASES} databases (leave it out for all), got {}",
            ids.len()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    for id in &ids {
        if !seen.insert(*id) {
            return Err(ApiError::InvalidRequestBody(format!(
                "databases names {id} twice"
            )));
        }
        if ctx
            .state
            .control
            .get_database(organization_id, *id)
            .await?
            .is_none()
        {
            return Err(ApiError::InvalidRequestBody(format!(
                "databases: {id} is not a database of this organization"
            )));
        }
    }
    Ok(ids)
}

pub async fn create(ctx: Ctx) -> ApiResult<Reply> {
    let organization_id = ctx.id("organizationId")?;
    let body: CreateToken = ctx.json(true)?;
    let description = body.description.unwrap_or_default();
    validate::description(&description).map_err(ApiError::InvalidRequestBody)?;
    let expires_at = body.expires_at.as_deref().map(expiry).transpose()?;
    let databases = match body.databases {
        Some(ids) => Some(limited_to(&ctx, organization_id, ids).await?),
        None => None,
    };
    let token = mint_token();
    let record = TokenRecord {
        id: Uuid::new_v4(),
        organization_id,
        token_sha256: token.sha256_hex.clone(),
        description,
        created_at: now_rfc3339(),
        databases,
        access: body.access.unwrap_or_default(),
        expires_at,
        last_used_at: None,
    };
    if !ctx.state.control.put_token(&record).await? {
        return Err(ApiError::not_found(Resource::Organization, organization_id));
    }
    Reply::json(&Created {
        listed: record.into(),
        token: token.plaintext,
    })
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
    let listed: Vec<Listed> = all.into_iter().map(Listed::from).collect();
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
