//! Domain types of the management plane and their API shapes.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Now, as the RFC 3339 UTC timestamp with milliseconds every object carries.
/// Fixed width, so these strings sort in time order.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub created_at: String,
    /// What the operator allows it (issue 15 §4); none: no limit.
    #[serde(default, skip_serializing_if = "Limits::is_unlimited")]
    pub limits: Limits,
}

/// An organization's quotas (docs/quotas.md). Each absent: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Databases it may have at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<u64>,
    /// DynamoDB write units its KV Connect writes may use in a calendar month
    /// (UTC), as its usage counts them (docs/usage.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_units_per_month: Option<u64>,
    /// Bytes its databases may store together, as their usage counts them
    /// (`storedBytes`: items' sizes plus DynamoDB's 100 bytes each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    /// KV watches its databases may have open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watches: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        *self == Limits::default()
    }
}

/// A stored organization token: only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: Uuid,
    pub organization_id: Uuid,
    /// Lower-case hex SHA-256 of the token.
    pub token_sha256: String,
    pub description: String,
    pub created_at: String,
    /// Only these databases of the organization (issue 15 §2); None: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub databases: Option<Vec<Uuid>>,
    #[serde(default, skip_serializing_if = "TokenAccess::is_read_write")]
    pub access: TokenAccess,
    /// When it stops working (RFC 3339 UTC, milliseconds); None: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// When it was last used, to the hour ([`LAST_USED_RESOLUTION_MS`]): kept
    /// on its by-hash item, which every authentication reads; None: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

/// How coarse a token's `lastUsedAt` is: an authentication writes it only if
/// the recorded one is older than this (an hour), so a token costs at most
/// about one write an hour, never one per request.
pub const LAST_USED_RESOLUTION_MS: i64 = 3_600_000;

/// What an organization token may do with its databases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenAccess {
    /// Read and write (every token before issue 15 §2).
    #[default]
    ReadWrite,
    /// Read only: KV Connect refuses its writes, the management API all but
    /// reading its databases.
    Read,
}

impl TokenAccess {
    pub fn is_read_write(&self) -> bool {
        *self == TokenAccess::ReadWrite
    }
}

impl TokenRecord {
    /// What the token may reach.
    pub fn scope(&self) -> TokenScope {
        TokenScope {
            databases: self.databases.clone(),
            read_only: self.access == TokenAccess::Read,
        }
    }

    /// When it expires, in ms since the Unix epoch (None: never; an expiry
    /// that does not parse counts as already past, never as never).
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.expires_at.as_deref().map(|at| {
            humantime::parse_rfc3339(at)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64)
        })
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms().is_some_and(|at| at <= now_ms)
    }
}

/// The reach of an organization token: which databases, and whether only to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenScope {
    pub databases: Option<Vec<Uuid>>,
    pub read_only: bool,
}

impl TokenScope {
    /// Limited in any way (then the management API lets it only read its databases).
    pub fn is_limited(&self) -> bool {
        self.databases.is_some() || self.read_only
    }

    pub fn allows(&self, database: Uuid) -> bool {
        self.databases
            .as_ref()
            .is_none_or(|list| list.contains(&database))
    }
}

/// `KvDatabase` of the API: every field always present, but `restore`, only on a
/// database made by restoring a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvDatabase {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<DatabaseRestore>,
}

/// How a database made from a backup came to be (issue 14, docs/restore.md):
/// where from, to which point, how far. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRestore {
    pub source: RestoreSource,
    /// The point restored, 20 hex digits, once the backup was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versionstamp: Option<String>,
    pub status: RestoreStatusView,
}

/// `restoreFrom`'s source as shown: one of the two fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_backup_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<RestoreBucket>,
}

/// A bucket named by `restoreFrom.s3`, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreBucket {
    pub endpoint: String,
    pub bucket_name: String,
    pub bucket_region: String,
    pub access_key_id: String,
    pub prefix: String,
}

/// Where a restore stands. Serialized as `{"code": "pending"}` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "camelCase")]
pub enum RestoreStatus {
    /// Being restored: KV Connect refuses the database. `message`: why the
    /// last invocation stopped early, while a fault worth retrying lasts (a
    /// store throttling or down); the next invocation resumes.
    Pending {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Holds exactly the state at `versionstamp`; an ordinary database.
    Active,
    /// Cannot be restored (the message says why); KV Connect refuses it.
    Failed { message: String },
}

/// `restore.status`: the code (and message when failed), and the keys written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStatusView {
    #[serde(flatten)]
    pub status: RestoreStatus,
    /// Entries written so far (a key rewritten by a later part of the backup
    /// counts again).
    #[serde(default)]
    pub keys_restored: u64,
}

/// Which state of the source a restore targets, as `restoreFrom` asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum RestorePointRequest {
    /// The newest state in the bucket when the restore is planned.
    Latest,
    /// The state right after this commit (20 lower-case hex digits).
    Versionstamp { versionstamp: String },
    /// The last commit at or before this time, milliseconds since the Unix epoch.
    Timestamp { ms: u64 },
}

/// A restore as `POST .../databases` asked for it: stored beside its job
/// (`DB#<db>` / `RESTORE`) for the restore function alone; never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRequest {
    pub organization_id: Uuid,
    pub database_id: Uuid,
    pub source: RestoreSource,
    pub point: RestorePointRequest,
    /// `source.s3`'s secret access key, sealed with KMS under
    /// `secrets::restore_context(database_id)`; removed when the restore ends.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_opt_bytes_b64"
    )]
    pub secret_access_key_ciphertext: Option<Vec<u8>>,
}

impl DatabaseRestore {
    /// Why the data plane must not serve the database yet, if it must not.
    pub fn refusal(&self, database: Uuid) -> Option<String> {
        match &self.status.status {
            RestoreStatus::Active => None,
            RestoreStatus::Pending { .. } => Some(format!(
                "database {database} is being restored from a backup ({} keys so far); it \
                 opens once its restore is active (GET /v1/databases/{database} shows it)",
                self.status.keys_restored
            )),
            RestoreStatus::Failed { message } => Some(format!(
                "database {database} could not be restored from its backup, so it cannot be \
                 opened: {message}"
            )),
        }
    }
}

/// Where a backup stands. Serialized as `{"code": "pending"}` and so on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "camelCase")]
pub enum BackupStatus {
    /// Set up under way (the first snapshot).
    Pending,
    /// Continuously backing up.
    Active,
    /// Nothing more is written for this backup (the store refused, or transient
    /// faults outlasted the engine's budget) until the user retries it (back to
    /// `pending` or `active`), or deletes it and enables a new one.
    Failed { message: String },
}

/// A stored backup configuration. The secret access key is held only as KMS
/// ciphertext, which only the backup engine can decrypt.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub database_id: Uuid,
    pub kind: String,
    pub endpoint: String,
    pub bucket_name: String,
    pub bucket_region: String,
    pub access_key_id: String,
    #[serde(with = "serde_bytes_b64")]
    pub secret_access_key_ciphertext: Vec<u8>,
    pub prefix: String,
    pub status: BackupStatus,
    pub created_at: String,
    /// Set by the backup engine (`subkv_backup::progress`): when it last wrote to the
    /// bucket, the versionstamp of the last commit there, and a transient problem
    /// it is retrying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backed_up_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_versionstamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The engine's snapshot chunks written in the current generation
    /// (`snapSeq`): read for the status, never written from here.
    #[serde(default, rename = "snapSeq", skip_serializing)]
    pub snapshot_chunks: Option<u64>,
}

impl std::fmt::Debug for BackupRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupRecord")
            .field("id", &self.id)
            .field("organization_id", &self.organization_id)
            .field("database_id", &self.database_id)
            .field("endpoint", &self.endpoint)
            .field("bucket_name", &self.bucket_name)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// `KvDatabaseBackup` of the API: the secret is never part of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KvDatabaseBackup {
    pub id: Uuid,
    pub database_id: Uuid,
    pub kind: String,
    pub endpoint: String,
    pub bucket_name: String,
    pub bucket_region: String,
    pub access_key_id: String,
    pub prefix: String,
    pub status: BackupStatusView,
    pub created_at: String,
}

/// `status` as the API shows it: the hosted API's `code` (and `message` when
/// failed), plus how far the backup has got (subkv additions, once known).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatusView {
    #[serde(flatten)]
    pub status: BackupStatus,
    /// When the engine last wrote to the bucket (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backed_up_at: Option<String>,
    /// The versionstamp (20 hex digits) of the newest commit in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_versionstamp: Option<String>,
    /// A transient problem the engine is retrying (not while `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// While `pending`: the snapshot chunks (up to 1,000 keys each) already in
    /// the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_chunks: Option<u64>,
}

impl From<&BackupRecord> for KvDatabaseBackup {
    fn from(r: &BackupRecord) -> Self {
        Self {
            id: r.id,
            database_id: r.database_id,
            kind: r.kind.clone(),
            endpoint: r.endpoint.clone(),
            bucket_name: r.bucket_name.clone(),
            bucket_region: r.bucket_region.clone(),
            access_key_id: r.access_key_id.clone(),
            prefix: r.prefix.clone(),
            status: BackupStatusView {
                status: r.status.clone(),
                last_backed_up_at: r.last_backed_up_at.clone(),
                last_versionstamp: r.last_versionstamp.clone(),
                last_error: r
                    .last_error
                    .clone()
                    .filter(|_| !matches!(r.status, BackupStatus::Failed { .. })),
                snapshot_chunks: r
                    .snapshot_chunks
                    .filter(|_| r.status == BackupStatus::Pending),
            },
            created_at: r.created_at.clone(),
        }
    }
}

/// Binary fields are kept as DynamoDB strings in base64 so that every stored
/// attribute stays readable in the console.
mod serde_bytes_b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

mod serde_opt_bytes_b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| STANDARD.decode(text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_serializes_as_the_api_shape() {
        assert_eq!(
            serde_json::to_value(BackupStatus::Pending).unwrap(),
            serde_json::json!({"code": "pending"})
        );
        assert_eq!(
            serde_json::to_value(BackupStatus::Failed {
                message: "denied".into()
            })
            .unwrap(),
            serde_json::json!({"code": "failed", "message": "denied"})
        );
    }

    #[test]
    fn a_restore_shows_its_source_point_and_progress_and_refuses_until_active() {
        let db = Uuid::from_u128(7);
        let mut restore = DatabaseRestore {
            source: RestoreSource {
                database_backup_id: Some(Uuid::from_u128(9)),
                s3: None,
            },
            versionstamp: None,
            status: RestoreStatusView {
                status: RestoreStatus::Pending { message: None },
                keys_restored: 1200,
            },
        };
        assert_eq!(
            serde_json::to_value(&restore).unwrap(),
            serde_json::json!({
                "source": {"databaseBackupId": "00000000-0000-0000-0000-000000000009"},
                "status": {"code": "pending", "keysRestored": 1200}
            })
        );
        let pending = restore.refusal(db).expect("refused while pending");
        assert!(
            pending.contains("is being restored") && pending.contains("1200 keys"),
            "{pending}"
        );
        restore.status.status = RestoreStatus::Pending {
            message: Some("retrying: SlowDown".into()),
        };
        assert_eq!(
            serde_json::to_value(&restore.status).unwrap(),
            serde_json::json!({"code": "pending", "message": "retrying: SlowDown", "keysRestored": 1200})
        );
        assert!(restore.refusal(db).unwrap().contains("is being restored"));
        restore.status.status = RestoreStatus::Failed {
            message: "AccessDenied".into(),
        };
        assert!(restore
            .refusal(db)
            .unwrap()
            .contains("could not be restored"));
        restore.status.status = RestoreStatus::Active;
        restore.versionstamp = Some("000000000000002a0000".into());
        assert_eq!(restore.refusal(db), None);
        let shown = serde_json::to_value(&restore).unwrap();
        assert_eq!(shown["versionstamp"], "000000000000002a0000");
        assert_eq!(
            shown["status"],
            serde_json::json!({"code": "active", "keysRestored": 1200})
        );
        // A database without one shows no `restore` at all, and reads back so.
        let plain = KvDatabase {
            id: db,
            organization_id: db,
            description: String::new(),
            created_at: String::new(),
            updated_at: String::new(),
            restore: None,
        };
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json.get("restore").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<KvDatabase>(json).unwrap(), plain);
    }

    #[test]
    fn timestamps_are_fixed_width_utc() {
        let now = now_rfc3339();
        assert_eq!(now.len(), "2024-07-09T12:00:00.000Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn backup_debug_and_api_view_hide_the_secret() {
        let record = BackupRecord {
            id: Uuid::nil(),
            organization_id: Uuid::nil(),
            database_id: Uuid::nil(),
            kind: "s3".into(),
            endpoint: "https://s3.example.com".into(),
            bucket_name: "b".into(),
            bucket_region: "r".into(),
            access_key_id: "AKIA".into(),
            secret_access_key_ciphertext: b"ciphertext-bytes".to_vec(),
            prefix: String::new(),
            status: BackupStatus::Pending,
            created_at: now_rfc3339(),
            last_backed_up_at: None,
            last_versionstamp: None,
            last_error: None,
            snapshot_chunks: None,
        };
        assert!(!format!("{record:?}").contains("ciphertext"));
        let api = serde_json::to_string(&KvDatabaseBackup::from(&record)).unwrap();
        assert!(!api.contains("ecret"), "{api}");
        // The hosted API's shape until the engine has written something.
        let view: serde_json::Value = serde_json::from_str(&api).unwrap();
        assert_eq!(view["status"], serde_json::json!({"code": "pending"}));
    }

    #[test]
    fn a_pending_status_shows_the_snapshot_chunks_written() {
        let item = serde_json::json!({
            "id": Uuid::nil(), "organizationId": Uuid::nil(), "databaseId": Uuid::nil(),
            "kind": "s3", "endpoint": "https://e", "bucketName": "b", "bucketRegion": "r",
            "accessKeyId": "a", "secretAccessKeyCiphertext": "AQ==", "prefix": "",
            "status": {"code": "pending"}, "createdAt": "2026-01-01T00:00:00.000Z",
            "snapSeq": 12
        });
        let mut record: BackupRecord = serde_json::from_value(item).unwrap();
        assert_eq!(record.snapshot_chunks, Some(12));
        let view = serde_json::to_value(KvDatabaseBackup::from(&record)).unwrap();
        assert_eq!(
            view["status"],
            serde_json::json!({"code": "pending", "snapshotChunks": 12})
        );
        // The engine's attribute is never written back from the record.
        assert!(serde_json::to_value(&record)
            .unwrap()
            .get("snapSeq")
            .is_none());
        record.status = BackupStatus::Active;
        let view = serde_json::to_value(KvDatabaseBackup::from(&record)).unwrap();
        assert_eq!(view["status"], serde_json::json!({"code": "active"}));
    }

    #[test]
    fn status_shows_progress_and_hides_transient_errors_once_failed() {
        let mut record: BackupRecord = serde_json::from_value(serde_json::json!({
            "id": Uuid::nil(), "organizationId": Uuid::nil(), "databaseId": Uuid::nil(),
            "kind": "s3", "endpoint": "https://e", "bucketName": "b", "bucketRegion": "r",
            "accessKeyId": "a", "secretAccessKeyCiphertext": "AQ==", "prefix": "",
            "status": {"code": "active"}, "createdAt": "2026-01-01T00:00:00.000Z",
            "lastBackedUpAt": "2026-01-01T00:00:01.000Z",
            "lastVersionstamp": "00000000000000070000", "lastError": "SlowDown"
        }))
        .unwrap();
        let view = serde_json::to_value(KvDatabaseBackup::from(&record)).unwrap();
        assert_eq!(
            view["status"],
            serde_json::json!({"code": "active", "lastBackedUpAt": "2026-01-01T00:00:01.000Z",
                "lastVersionstamp": "00000000000000070000", "lastError": "SlowDown"})
        );
        record.status = BackupStatus::Failed {
            message: "InvalidAccessKeyId".into(),
        };
        let view = serde_json::to_value(KvDatabaseBackup::from(&record)).unwrap();
        assert_eq!(view["status"]["code"], "failed");
        assert_eq!(view["status"]["message"], "InvalidAccessKeyId");
        assert!(view["status"].get("lastError").is_none());
    }
}
