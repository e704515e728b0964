//! The restore plane: what the management API does with a backup's bucket, which
//! needs the backup engine's read side (`subkv_backup::restore`) and so cannot
//! live in `subkv-api` (it links no backup code; `shared/kv/tests/pure.rs`).
//!
//! | module | what |
//! |---|---|
//! | [`function`] | `restore-database`: the pending restores, each leased, advanced and recorded per invocation |
//! | [`points`] | `GET /v1/database_backups/{databaseBackupId}/restore_points`: the points a restore can target, newest first, paginated by cursor |
//! | [`run`] | one invocation's work on a restore: its job advanced while time remains, its status recorded on the database |
//! | [`store`] | a restore's job in the control table ([`store::DynamoJobStore`]) and the new database as its sink ([`store::KvSink`]) |
//!
//! docs/restore.md has the design; docs/api.md the route.

pub mod function;
pub mod points;
pub mod run;
pub mod store;

use std::sync::Arc;
use subkv_backup::bucket::{Bucket, BucketFault, Connector};
use subkv_backup::sink::open_bucket;
use subkv_core::config::{var, ConfigError, Env};
use subkv_core::control::records::BackupRecord;
use subkv_core::error::StoreError;
use subkv_core::routes::Route;
use subkv_core::runtime;
use subkv_core::secrets::{KmsOpener, SecretOpener};

/// Opens a backup's bucket for reading: the secret opened with KMS (the key
/// policy grants `kms:Decrypt` to the functions that read backups), then the
/// engine's own S3 client with its endpoint rules. Built once per cold start.
pub struct Buckets {
    pub(crate) opener: Arc<dyn SecretOpener>,
    pub(crate) connector: Connector,
}

impl Buckets {
    pub fn new(opener: Arc<dyn SecretOpener>, connector: Connector) -> Self {
        Self { opener, connector }
    }

    /// From `SUBKV_BACKUP_KMS_KEY_ID` and `SUBKV_ALLOW_INSECURE_ENDPOINTS`.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let env = Env::process();
        let key_id = env.required(
            var::BACKUP_KMS_KEY_ID,
            "it names the KMS key of backup secrets",
        )?;
        let sdk = runtime::aws_config().await;
        Ok(Self::new(
            Arc::new(KmsOpener::new(aws_sdk_kms::Client::new(&sdk), key_id)),
            Connector::from_env(&env)?,
        ))
    }

    /// The backup's bucket. `Err(Store)`: KMS failed; `Ok(Err(fault))`: the
    /// endpoint is one the rules refuse (the tenant's to fix).
    pub async fn open(
        &self,
        record: &BackupRecord,
    ) -> Result<Result<Bucket, BucketFault>, StoreError> {
        open_bucket(self.opener.as_ref(), &self.connector, record).await
    }
}

/// `list-restore-points`'s whole `main`: the buckets' opener built once, then
/// every request through the management API's pipeline.
pub async fn serve_restore_points(route: &'static Route) -> Result<(), lambda_http::Error> {
    let buckets = Arc::new(Buckets::from_env().await?);
    subkv_api::serve(route, move |ctx| {
        let buckets = buckets.clone();
        async move { points::list(ctx, &buckets).await }
    })
    .await
}
