//! The management API's handlers, one per route (see `subkv_core::routes`).

pub mod backups;
pub mod databases;
pub mod organizations;
pub mod restore_from;
pub mod tokens;
pub mod usage;

use crate::error::ApiResult;
use crate::http::Reply;
use crate::pagination::{link_header, paginate, ListQuery, Order};
use crate::pipeline::Ctx;
use lambda_http::http::header::LINK;
use serde::Serialize;
use uuid::Uuid;

/// The list query of the request (`page`, `limit`, `q`, `sort`, `order`).
fn list_query(ctx: &Ctx) -> ApiResult<ListQuery> {
    let pairs = ctx.query_pairs();
    ListQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// A list route's answer: `all` (already filtered by `q`) sorted by `key`
/// (creation time, then id), reversed for `order=desc`, then the page asked for,
/// with its `Link` header.
fn list_reply<T: Serialize>(
    ctx: &Ctx,
    query: &ListQuery,
    mut all: Vec<T>,
    key: impl for<'a> Fn(&'a T) -> (&'a str, Uuid),
) -> ApiResult<Reply> {
    all.sort_by(|a, b| key(a).cmp(&key(b)));
    if query.order() == Order::Desc {
        all.reverse();
    }
    let (page, info) = paginate(all, query);
    Reply::json(&page)?.with_header(LINK, &link_header(&ctx.base_url(), query, &info))
}
