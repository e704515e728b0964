//! `restoreFrom` of `POST /v1/organizations/{organizationId}/databases` (issue 14,
//! docs/restore.md): which backup, which point, checked before anything is
//! stored. The restore itself is the `restore-database` function's.

use crate::error::{ApiError, ApiResult, Resource};
use serde::Deserialize;
use subkv_core::control::records::{
    DatabaseRestore, RestoreBucket, RestorePointRequest, RestoreRequest, RestoreSource,
    RestoreStatus, RestoreStatusView,
};
use subkv_core::control::ControlTable;
use subkv_core::secrets::{restore_context, SecretSealer, SecretString};
use subkv_core::validate;
use uuid::Uuid;

/// `restoreFrom` as sent: one source (`databaseBackupId` or `s3`), at most one
/// of `versionstamp` and `timestamp`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RestoreFrom {
    #[serde(default)]
    database_backup_id: Option<String>,
    #[serde(default)]
    s3: Option<RestoreS3>,
    #[serde(default)]
    versionstamp: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// `restoreFrom.s3`: a bucket in denokv's backup format; `prefix` is the
/// database's root (the folder holding `snapshots/`, `logs/`, `differential`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RestoreS3 {
    endpoint: String,
    bucket_name: String,
    bucket_region: String,
    access_key_id: String,
    secret_access_key: SecretString,
    #[serde(default)]
    prefix: String,
}

/// `restoreFrom` checked: the source as shown, the point, and the secret to seal.
#[derive(Debug)]
pub struct Checked {
    pub source: RestoreSource,
    pub point: RestorePointRequest,
    pub secret: Option<SecretString>,
}

/// Checks every field of `restoreFrom` (the `s3` bucket by the rules of backup
/// targets); a message for a 400 otherwise.
pub fn check(body: RestoreFrom, allow_insecure: bool) -> Result<Checked, String> {
    let point = match (&body.versionstamp, &body.timestamp) {
        (Some(_), Some(_)) => {
            return Err(
                "restoreFrom takes at most one of versionstamp and timestamp, not both".into(),
            )
        }
        (Some(vs), None) => RestorePointRequest::Versionstamp {
            versionstamp: versionstamp(vs)?,
        },
        (None, Some(at)) => RestorePointRequest::Timestamp { ms: timestamp(at)? },
        (None, None) => RestorePointRequest::Latest,
    };
    match (body.database_backup_id, body.s3) {
        (Some(id), None) => {
            let id = Uuid::parse_str(&id)
                .map_err(|_| format!("restoreFrom.databaseBackupId must be a UUID, got {id:?}"))?;
            Ok(Checked {
                source: RestoreSource {
                    database_backup_id: Some(id),
                    s3: None,
                },
                point,
                secret: None,
            })
        }
        (None, Some(s3)) => {
            let in_s3 = |message: String| format!("restoreFrom.s3: {message}");
            let endpoint = validate::endpoint(&s3.endpoint, allow_insecure).map_err(in_s3)?;
            validate::bucket_name(&s3.bucket_name).map_err(in_s3)?;
            validate::bucket_region(&s3.bucket_region).map_err(in_s3)?;
            validate::credential("accessKeyId", &s3.access_key_id, 128).map_err(in_s3)?;
            validate::credential("secretAccessKey", s3.secret_access_key.expose(), 256)
                .map_err(in_s3)?;
            validate::prefix(&s3.prefix).map_err(in_s3)?;
            Ok(Checked {
                source: RestoreSource {
                    database_backup_id: None,
                    s3: Some(RestoreBucket {
                        endpoint,
                        bucket_name: s3.bucket_name,
                        bucket_region: s3.bucket_region,
                        access_key_id: s3.access_key_id,
                        prefix: root_of(&s3.prefix),
                    }),
                },
                point,
                secret: Some(s3.secret_access_key),
            })
        }
        (Some(_), Some(_)) => {
            Err("restoreFrom takes one source, databaseBackupId or s3, not both".into())
        }
        (None, None) => Err("restoreFrom needs a source: databaseBackupId or s3".into()),
    }
}

/// A database's root is a folder: `backup/<id>` and `backup/<id>/` name the same.
fn root_of(prefix: &str) -> String {
    if prefix.is_empty() || prefix.ends_with('/') {
        prefix.to_string()
    } else {
        format!("{prefix}/")
    }
}

/// 20 hex digits (a versionstamp as the API shows it), lower-cased.
fn versionstamp(text: &str) -> Result<String, String> {
    if text.len() == 20 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(format!(
            "restoreFrom.versionstamp must be 20 hex digits (as restore points show it), got {text:?}"
        ))
    }
}

/// An RFC 3339 time at or after the Unix epoch, as milliseconds.
fn timestamp(text: &str) -> Result<u64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|at| u64::try_from(at.timestamp_millis()).ok())
        .ok_or_else(|| {
            format!(
                "restoreFrom.timestamp must be an RFC 3339 time such as \
                 2026-12-01T10:00:00Z, got {text:?}"
            )
        })
}

/// What create-database stores for a restore: the database's `restore`
/// (pending) and the request. A `databaseBackupId` must name a backup of the
/// caller's organization (404 otherwise, as everywhere); an `s3` secret is
/// sealed under a context naming the new database.
pub async fn prepare(
    checked: Checked,
    organization_id: Uuid,
    database_id: Uuid,
    control: &dyn ControlTable,
    sealer: &dyn SecretSealer,
) -> ApiResult<(DatabaseRestore, RestoreRequest)> {
    if let Some(id) = checked.source.database_backup_id {
        control
            .get_backup(organization_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found(Resource::DatabaseBackup, id))?;
    }
    let ciphertext = match &checked.secret {
        Some(secret) => Some(
            sealer
                .seal(secret, &restore_context(&database_id.to_string()))
                .await?,
        ),
        None => None,
    };
    let restore = DatabaseRestore {
        source: checked.source.clone(),
        versionstamp: match &checked.point {
            RestorePointRequest::Versionstamp { versionstamp } => Some(versionstamp.clone()),
            _ => None,
        },
        status: RestoreStatusView {
            status: RestoreStatus::Pending { message: None },
            keys_restored: 0,
        },
    };
    let request = RestoreRequest {
        organization_id,
        database_id,
        source: checked.source,
        point: checked.point,
        secret_access_key_ciphertext: ciphertext,
    };
    Ok((restore, request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(body: serde_json::Value) -> Result<Checked, String> {
        let body: RestoreFrom = serde_json::from_value(body).map_err(|e| e.to_string())?;
        check(body, false)
    }

    fn s3() -> serde_json::Value {
        json!({"endpoint": "https://storage.example.com", "bucketName": "old-backups",
               "bucketRegion": "us-east-1", "accessKeyId": "AKID", "secretAccessKey": "s3cr3t",
               "prefix": "backup/0192"})
    }

    #[test]
    fn each_documented_shape_is_accepted() {
        let id = Uuid::new_v4();
        let by_stamp =
            parse(json!({"databaseBackupId": id, "versionstamp": "00000000000000AB0001"})).unwrap();
        assert_eq!(by_stamp.source.database_backup_id, Some(id));
        assert_eq!(
            by_stamp.point,
            RestorePointRequest::Versionstamp {
                versionstamp: "00000000000000ab0001".into()
            }
        );
        let by_time =
            parse(json!({"databaseBackupId": id, "timestamp": "2026-12-01T11:00:00+01:00"}))
                .unwrap();
        assert_eq!(
            by_time.point,
            RestorePointRequest::Timestamp {
                ms: 1_796_119_200_000
            }
        );
        let newest = parse(json!({"databaseBackupId": id})).unwrap();
        assert_eq!(newest.point, RestorePointRequest::Latest);
        let import = parse(json!({"s3": s3()})).unwrap();
        let bucket = import.source.s3.unwrap();
        assert_eq!(bucket.prefix, "backup/0192/", "the root is a folder");
        assert_eq!(bucket.endpoint, "https://storage.example.com");
        assert_eq!(import.secret.unwrap().expose(), "s3cr3t");
    }

    #[test]
    fn bad_input_says_what_is_wrong_and_never_echoes_the_secret() {
        let id = Uuid::new_v4();
        let cases = [
            (json!({}), "needs a source"),
            (json!({"databaseBackupId": id, "s3": s3()}), "not both"),
            (json!({"databaseBackupId": "nope"}), "must be a UUID"),
            (
                json!({"databaseBackupId": id, "versionstamp": "00", "timestamp": "2026-12-01T10:00:00Z"}),
                "at most one",
            ),
            (
                json!({"databaseBackupId": id, "versionstamp": "123"}),
                "20 hex digits",
            ),
            (
                json!({"databaseBackupId": id, "versionstamp": "0000000000000000000g"}),
                "20 hex digits",
            ),
            (
                json!({"databaseBackupId": id, "timestamp": "yesterday"}),
                "RFC 3339",
            ),
            (
                json!({"databaseBackupId": id, "timestamp": "1960-01-01T00:00:00Z"}),
                "RFC 3339",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert!(err.contains(expected), "{body}: {err}");
        }
        let mut private = s3();
        private["endpoint"] = json!("https://169.254.169.254");
        let err = parse(json!({"s3": private})).unwrap_err();
        assert!(err.starts_with("restoreFrom.s3: endpoint"), "{err}");
        let mut spaced = s3();
        spaced["secretAccessKey"] = json!("s3cr3t with spaces");
        let err = parse(json!({"s3": spaced})).unwrap_err();
        assert!(
            err.contains("secretAccessKey") && !err.contains("s3cr3t"),
            "{err}"
        );
        let err = parse(json!({"databaseBackupId": id, "extra": 1})).unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
    }
}
