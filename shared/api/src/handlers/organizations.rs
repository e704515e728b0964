//! Organizations, admin only: create, list, get one, set its limits, delete.

use crate::error::{ApiError, ApiResult, Resource};
use crate::http::Reply;
use crate::pipeline::Ctx;
use serde::{Deserialize, Serialize};
use subkv_core::auth::mint_token;
use subkv_core::control::records::{now_rfc3339, Limits, Organization, TokenRecord};
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
        limits: Default::default(),
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

/// `PATCH /v1/organizations/{organizationId}` (admin, issue 15 §4):
/// `{"limits": {...}}` sets the limits named (a number, or `null` for none) and
/// keeps the others. The organization as it now is.
pub async fn update(ctx: Ctx) -> ApiResult<Reply> {
    let id = ctx.id("organizationId")?;
    let body: serde_json::Value = ctx.json(false)?;
    let control = &ctx.state.control;
    let org = control
        .get_organization(id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::Organization, id))?;
    let limits = changed_limits(org.limits, &body).map_err(ApiError::InvalidRequestBody)?;
    let updated = control
        .set_organization_limits(id, &limits)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::Organization, id))?;
    Reply::json(&updated)
}

/// `limits` with the changes of a PATCH body applied, or why the body is wrong.
pub fn changed_limits(mut limits: Limits, body: &serde_json::Value) -> Result<Limits, String> {
    let body = body.as_object().ok_or("the body must be a JSON object")?;
    if let Some(other) = body.keys().find(|k| *k != "limits") {
        return Err(format!(
            "unknown field {other:?}: only \"limits\" can be changed"
        ));
    }
    let Some(changes) = body.get("limits") else {
        return Ok(limits);
    };
    let changes = changes.as_object().ok_or("limits must be an object")?;
    for (name, value) in changes {
        let value = match value {
            serde_json::Value::Null => None,
            v => Some(v.as_u64().ok_or_else(|| {
                format!("limits.{name} must be a whole number of at least 0, or null for none")
            })?),
        };
        match name.as_str() {
            "databases" => limits.databases = value,
            "writeUnitsPerMonth" => limits.write_units_per_month = value,
            "storageBytes" => limits.storage_bytes = value,
            "watches" => limits.watches = value,
            other => {
                return Err(format!(
                    "unknown limit {other:?}: the limits are databases, writeUnitsPerMonth, \
                     storageBytes and watches"
                ))
            }
        }
    }
    Ok(limits)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_sets_the_limits_it_names_and_keeps_the_others() {
        let start = Limits {
            databases: Some(3),
            write_units_per_month: Some(1000),
            storage_bytes: None,
            watches: None,
        };
        let changed = changed_limits(start, &json!({"limits": {"databases": 10}})).unwrap();
        assert_eq!(changed.databases, Some(10));
        assert_eq!(changed.write_units_per_month, Some(1000));
        let stored = changed_limits(start, &json!({"limits": {"storageBytes": 5000}})).unwrap();
        assert_eq!(stored.storage_bytes, Some(5000));
        let cleared =
            changed_limits(start, &json!({"limits": {"writeUnitsPerMonth": null}})).unwrap();
        assert_eq!(cleared.write_units_per_month, None);
        assert_eq!(changed_limits(start, &json!({})).unwrap(), start);
    }

    #[test]
    fn a_bad_patch_says_what_is_wrong() {
        for (body, says) in [
            (json!([]), "JSON object"),
            (json!({"name": "x"}), "only \"limits\""),
            (json!({"limits": 3}), "must be an object"),
            (json!({"limits": {"databases": -1}}), "whole number"),
            (json!({"limits": {"databases": 1.5}}), "whole number"),
            (json!({"limits": {"keys": 10}}), "unknown limit"),
        ] {
            let err = changed_limits(Limits::default(), &body).unwrap_err();
            assert!(err.contains(says), "{body}: {err}");
        }
    }
}
