//! `GET /v1/database_backups/{databaseBackupId}/restore_points?limit&cursor`: the
//! states a restore can target, newest first (docs/api.md, docs/restore.md).
//!
//! A page reads the `differential`, a few small listings and the log objects that
//! hold its points, never the whole backup. The next page is the `Link` header's
//! `rel="next"` (absent on the last page), with an opaque `cursor`.

use crate::Buckets;
use serde::Serialize;
use subkv_api::error::{ApiError, ApiResult, Resource};
use subkv_api::http::Reply;
use subkv_api::pagination::{DEFAULT_LIMIT, MAX_LIMIT};
use subkv_api::pipeline::Ctx;
use subkv_backup::format::root;
use subkv_backup::restore::{restore_points, LayoutError, RestoreError, RestorePoint};
use subkv_core::control::records::BackupStatus;

/// Longest `cursor` accepted (the core's are well under 1 KB).
const MAX_CURSOR_CHARS: usize = 2048;

/// The query of a restore-points page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointsQuery {
    pub limit: u32,
    pub cursor: Option<String>,
}

impl PointsQuery {
    /// `limit` (1 to 100, default 20) and `cursor`; other parameters are ignored,
    /// as by every list; one given twice, or out of range, is a 400.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> ApiResult<Self> {
        let mut out = Self {
            limit: DEFAULT_LIMIT,
            cursor: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in pairs {
            if !["limit", "cursor"].contains(&key) {
                continue;
            }
            if seen.contains(&key) {
                return Err(ApiError::InvalidQuery(format!(
                    "query parameter {key} is given more than once"
                )));
            }
            seen.push(key);
            if key == "limit" {
                out.limit = match value.parse::<u32>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(ApiError::InvalidQuery(format!(
                            "limit must be an integer from 1 to {MAX_LIMIT}, got {value:?}"
                        )))
                    }
                };
            } else if value.is_empty() || value.len() > MAX_CURSOR_CHARS {
                return Err(ApiError::InvalidQuery(
                    "cursor must be the cursor of a previous page's Link header".into(),
                ));
            } else {
                out.cursor = Some(value.to_string());
            }
        }
        Ok(out)
    }
}

/// One restore point as the API shows it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct PointView {
    /// The commit's versionstamp, 20 hex digits: `restoreFrom.versionstamp`.
    pub versionstamp: String,
    /// RFC 3339 (milliseconds): the time of the log object that holds the
    /// commit; null for a backup without logs (its one point is its snapshot).
    pub timestamp: Option<String>,
}

impl From<&RestorePoint> for PointView {
    fn from(point: &RestorePoint) -> Self {
        Self {
            versionstamp: hex::encode(point.versionstamp),
            timestamp: point.time_ms.map(|ms| {
                let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
                humantime::format_rfc3339_millis(at).to_string()
            }),
        }
    }
}

/// What a failed read of the bucket is for the caller.
pub fn api_error(err: RestoreError) -> ApiError {
    match err {
        RestoreError::BadCursor => ApiError::InvalidQuery(
            "cursor must be the cursor of a previous page's Link header".into(),
        ),
        err if err.is_transient() => ApiError::BucketUnavailable(err.to_string()),
        err @ RestoreError::Read(_) => ApiError::BackupUnreadable(format!(
            "{err} (listing restore points needs s3:ListBucket and s3:GetObject on the \
             backup's prefix)"
        )),
        err => ApiError::BackupUnreadable(err.to_string()),
    }
}

pub async fn list(ctx: Ctx, buckets: &Buckets) -> ApiResult<Reply> {
    let organization_id = ctx.organization_id()?;
    let id = ctx.id("databaseBackupId")?;
    let pairs = ctx.query_pairs();
    let query = PointsQuery::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let backup = ctx
        .state
        .control
        .get_backup(organization_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(Resource::DatabaseBackup, id))?;
    let bucket = buckets
        .open(&backup)
        .await?
        .map_err(|fault| ApiError::BackupUnreadable(fault.to_string()))?;
    let root = root(&backup.prefix, backup.database_id);
    let page = match restore_points(
        &bucket,
        &root,
        query.limit as usize,
        query.cursor.as_deref(),
    )
    .await
    {
        Ok(page) => page,
        // A backup taking its first snapshot has no point yet.
        Err(RestoreError::Layout(LayoutError::NoDifferential { .. }))
            if backup.status == BackupStatus::Pending =>
        {
            return Reply::json(&Vec::<PointView>::new());
        }
        Err(err) => return Err(api_error(err)),
    };
    let points: Vec<PointView> = page.points.iter().map(PointView::from).collect();
    let reply = Reply::json(&points)?;
    match page.next {
        Some(cursor) => {
            let next = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("limit", &query.limit.to_string())
                .append_pair("cursor", &cursor)
                .finish();
            reply.with_header(
                lambda_http::http::header::LINK,
                &format!("<{}?{next}>; rel=\"next\"", ctx.base_url()),
            )
        }
        None => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_backup::restore::ReadFault;

    #[test]
    fn a_query_takes_limit_and_cursor() {
        assert_eq!(
            PointsQuery::parse([]).unwrap(),
            PointsQuery {
                limit: DEFAULT_LIMIT,
                cursor: None
            }
        );
        let q = PointsQuery::parse([("limit", "7"), ("cursor", "abc"), ("page", "3")]).unwrap();
        assert_eq!((q.limit, q.cursor.as_deref()), (7, Some("abc")));
        for bad in [
            vec![("limit", "0")],
            vec![("limit", "101")],
            vec![("limit", "x")],
            vec![("cursor", "")],
            vec![("limit", "1"), ("limit", "2")],
        ] {
            let err = PointsQuery::parse(bad.clone()).unwrap_err();
            assert_eq!(err.code(), "invalidQueryParameter", "{bad:?}");
        }
    }

    #[test]
    fn a_point_shows_its_versionstamp_and_time() {
        let point = RestorePoint {
            versionstamp: [0, 0, 0, 0, 0, 0, 0, 0x2a, 0, 0],
            time_ms: Some(1_767_225_600_123),
        };
        assert_eq!(
            PointView::from(&point),
            PointView {
                versionstamp: "000000000000002a0000".into(),
                timestamp: Some("2026-01-01T00:00:00.123Z".into()),
            }
        );
        let untimed = RestorePoint {
            time_ms: None,
            ..point
        };
        assert_eq!(PointView::from(&untimed).timestamp, None);
    }

    #[test]
    fn read_faults_are_the_tenants_to_fix_or_to_retry() {
        let denied = api_error(RestoreError::Read(ReadFault::Denied(
            "AccessDenied: no s3:ListBucket".into(),
        )));
        assert_eq!(denied.status().as_u16(), 409);
        assert!(denied
            .to_string()
            .contains("s3:ListBucket and s3:GetObject"));
        let busy = api_error(RestoreError::Read(ReadFault::Transient("SlowDown".into())));
        assert_eq!(busy.status().as_u16(), 503);
        assert_eq!(busy.code(), "bucketUnavailable");
        let corrupt = api_error(RestoreError::Changed("gone".into()));
        assert_eq!(corrupt.code(), "backupUnreadable");
        assert_eq!(api_error(RestoreError::BadCursor).status().as_u16(), 400);
    }
}
