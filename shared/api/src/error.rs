//! Errors of the management API, and their one mapping to HTTP.
//!
//! Every error a handler returns is an [`ApiError`]; [`ApiError::status`] and
//! [`ApiError::code`] are the only place that decides what a client sees. The body
//! is always `{"code": "...", "message": "..."}`.

use lambda_http::http::StatusCode;
use serde::Serialize;
use subkv_core::error::StoreError;
use subkv_core::runtime::ResponseTooLarge;

/// The kind of resource a 404 is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Organization,
    Token,
    Database,
    DatabaseBackup,
}

impl Resource {
    fn code(self) -> &'static str {
        match self {
            Resource::Organization => "organizationNotFound",
            Resource::Token => "tokenNotFound",
            Resource::Database => "databaseNotFound",
            Resource::DatabaseBackup => "databaseBackupNotFound",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Resource::Organization => "organization",
            Resource::Token => "token",
            Resource::Database => "database",
            Resource::DatabaseBackup => "database backup",
        }
    }
}

/// Every error a management API handler can return.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequestBody(String),
    #[error("{0}")]
    InvalidQuery(String),
    #[error("{name} must be a UUID, got {value:?}")]
    InvalidId { name: &'static str, value: String },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The reply would be larger than AWS Lambda delivers (`subkv_core::runtime`).
    #[error("{0}")]
    ResponseTooLarge(ResponseTooLarge),
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{} {id} was not found", .resource.noun())]
    NotFound { resource: Resource, id: String },
    #[error(
        "a backup is already enabled for database {database_id}; delete it before enabling another"
    )]
    BackupAlreadyEnabled { database_id: String },
    #[error("database backup {id} is {status}, not failed: only a failed backup can be retried")]
    BackupNotFailed { id: String, status: &'static str },
    #[error("another change to this resource is in progress; retry")]
    ChangeInProgress,
    #[error(
        "organization {id} still has {databases} database(s): delete them first, or delete the \
         organization with ?force=true, which deletes them too"
    )]
    OrganizationHasDatabases { id: String, databases: usize },
    /// The backup's bucket refused, or does not hold a backup in the format:
    /// the tenant's to fix (credentials, permissions, the bucket's contents).
    #[error("the backup's bucket cannot be read: {0}")]
    BackupUnreadable(String),
    /// The backup's bucket failed in a way worth retrying (5xx, throttling, a
    /// timeout).
    #[error("the backup's bucket did not answer: {0}; retry")]
    BucketUnavailable(String),
    /// The database is being restored (or its restore failed): what needs its
    /// data must wait (or cannot be).
    #[error("{0}")]
    DatabaseRestoring(String),
    /// Over one of the organization's limits (docs/quotas.md): the message
    /// names it.
    #[error("{0}")]
    LimitExceeded(String),
    #[error("internal error")]
    Store(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The error body every 4xx and 5xx carries.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn not_found(resource: Resource, id: impl ToString) -> Self {
        Self::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequestBody(_)
            | ApiError::InvalidQuery(_)
            | ApiError::InvalidId { .. }
            | ApiError::ResponseTooLarge(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::LimitExceeded(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::BackupAlreadyEnabled { .. }
            | ApiError::BackupNotFailed { .. }
            | ApiError::ChangeInProgress
            | ApiError::OrganizationHasDatabases { .. }
            | ApiError::BackupUnreadable(_)
            | ApiError::DatabaseRestoring(_) => StatusCode::CONFLICT,
            ApiError::BucketUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequestBody(_) => "invalidRequestBody",
            ApiError::InvalidQuery(_) => "invalidQueryParameter",
            ApiError::InvalidId { .. } => "invalidId",
            ApiError::PayloadTooLarge { .. } => "payloadTooLarge",
            ApiError::ResponseTooLarge(_) => "responseTooLarge",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound { resource, .. } => resource.code(),
            ApiError::BackupAlreadyEnabled { .. } => "backupAlreadyEnabled",
            ApiError::BackupNotFailed { .. } => "backupNotFailed",
            ApiError::ChangeInProgress => "changeInProgress",
            ApiError::OrganizationHasDatabases { .. } => "organizationHasDatabases",
            ApiError::BackupUnreadable(_) => "backupUnreadable",
            ApiError::BucketUnavailable(_) => "bucketUnavailable",
            ApiError::DatabaseRestoring(_) => "databaseRestoring",
            ApiError::LimitExceeded(_) => "limitExceeded",
            ApiError::Store(_) | ApiError::Internal(_) => "internalServerError",
        }
    }

    /// The body a client sees. Internal details stay in the logs.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            ApiError::Store(_) | ApiError::Internal(_) => {
                "the server failed to handle the request; try again later".to_string()
            }
            other => other.to_string(),
        };
        ErrorBody {
            code: self.code(),
            message,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => ApiError::ChangeInProgress,
            other => ApiError::Store(other),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_status_and_code() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::InvalidRequestBody("x".into()),
                400,
                "invalidRequestBody",
            ),
            (
                ApiError::InvalidQuery("x".into()),
                400,
                "invalidQueryParameter",
            ),
            (
                ApiError::InvalidId {
                    name: "databaseId",
                    value: "nope".into(),
                },
                400,
                "invalidId",
            ),
            (
                ApiError::PayloadTooLarge { limit: 1 },
                413,
                "payloadTooLarge",
            ),
            (
                ApiError::ResponseTooLarge(ResponseTooLarge {
                    mode: subkv_core::runtime::ResponseMode::Buffered,
                    bytes: 7_000_000,
                    limit: 6_291_456,
                }),
                400,
                "responseTooLarge",
            ),
            (ApiError::Unauthorized("x"), 401, "unauthorized"),
            (ApiError::Forbidden("x"), 403, "forbidden"),
            (ApiError::LimitExceeded("x".into()), 403, "limitExceeded"),
            (
                ApiError::not_found(Resource::Organization, "o"),
                404,
                "organizationNotFound",
            ),
            (
                ApiError::not_found(Resource::Token, "t"),
                404,
                "tokenNotFound",
            ),
            (
                ApiError::not_found(Resource::Database, "d"),
                404,
                "databaseNotFound",
            ),
            (
                ApiError::not_found(Resource::DatabaseBackup, "b"),
                404,
                "databaseBackupNotFound",
            ),
            (
                ApiError::BackupAlreadyEnabled {
                    database_id: "d".into(),
                },
                409,
                "backupAlreadyEnabled",
            ),
            (
                ApiError::BackupNotFailed {
                    id: "b".into(),
                    status: "active",
                },
                409,
                "backupNotFailed",
            ),
            (
                ApiError::from(StoreError::Conflict),
                409,
                "changeInProgress",
            ),
            (
                ApiError::DatabaseRestoring("r".into()),
                409,
                "databaseRestoring",
            ),
            (
                ApiError::Internal("boom".into()),
                500,
                "internalServerError",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
            assert_eq!(err.body().code, code);
        }
    }

    #[test]
    fn internal_details_never_reach_the_body() {
        let err = ApiError::Store(StoreError::Malformed("pk=ORG#secret-detail".into()));
        let body = err.body();
        assert!(!body.message.contains("secret-detail"), "{}", body.message);
        let err = ApiError::Internal("the key material".into());
        assert!(!err.body().message.contains("key material"));
    }

    #[test]
    fn not_found_names_the_resource_and_id() {
        let body = ApiError::not_found(Resource::DatabaseBackup, "123").body();
        assert_eq!(body.message, "database backup 123 was not found");
    }
}
