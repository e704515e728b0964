//! Where the engine writes: an [`ObjectSink`] per backup (the tenant's
//! [`Bucket`]), opened from the backup's record by [`Sinks`] ([`TenantBuckets`]:
//! the secret opened with KMS, the bucket built once per backup per cold start).

use crate::bucket::{Bucket, BucketFault, Connector, Target};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use subkv_core::control::records::BackupRecord;
use subkv_core::error::StoreError;
use subkv_core::secrets::{backup_context, SecretOpener};
use uuid::Uuid;

/// A store of objects: `PutObject` only (the engine never reads, lists or deletes).
#[async_trait]
pub trait ObjectSink: Send + Sync {
    /// Writes `body` at `key`, replacing whatever was there.
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BucketFault>;
}

#[async_trait]
impl ObjectSink for Bucket {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BucketFault> {
        Bucket::put(self, key, body).await
    }
}

/// What opening a backup's sink gave.
pub enum Opened {
    Sink(Arc<dyn ObjectSink>),
    /// The target cannot be written to (an endpoint the rules refuse): a tenant
    /// problem, handled as a failed put would be.
    Fault(BucketFault),
}

/// Opens the sink of a backup from its record.
#[async_trait]
pub trait Sinks: Send + Sync {
    /// `Err` is the engine's own infrastructure failing (KMS).
    async fn open(&self, record: &BackupRecord) -> Result<Opened, StoreError>;
}

/// A backup's bucket, from its record: the secret opened (KMS, under the context
/// that binds it to its backup), then [`Bucket::new`]. `Err`: KMS failed;
/// `Ok(Err(fault))`: the endpoint is one the rules refuse (the tenant's to fix).
/// The backup engine writes through it; restore points read through it.
pub async fn open_bucket(
    opener: &dyn SecretOpener,
    connector: &Connector,
    record: &BackupRecord,
) -> Result<Result<Bucket, BucketFault>, StoreError> {
    let secret = opener
        .open(
            &record.secret_access_key_ciphertext,
            &backup_context(&record.id.to_string(), &record.database_id.to_string()),
        )
        .await?;
    Ok(Bucket::new(connector, &Target::from_record(record, secret)))
}

/// The tenants' buckets: the secret opened with KMS, then [`Bucket::new`]; each
/// built once per backup per cold start.
pub struct TenantBuckets {
    opener: Arc<dyn SecretOpener>,
    connector: Connector,
    built: Mutex<HashMap<Uuid, Arc<Bucket>>>,
}

impl TenantBuckets {
    pub fn new(opener: Arc<dyn SecretOpener>, connector: Connector) -> Self {
        Self {
            opener,
            connector,
            built: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl Sinks for TenantBuckets {
    async fn open(&self, record: &BackupRecord) -> Result<Opened, StoreError> {
        let id = record.id;
        if let Some(bucket) = self.built.lock().ok().and_then(|b| b.get(&id).cloned()) {
            return Ok(Opened::Sink(bucket));
        }
        let bucket = match open_bucket(self.opener.as_ref(), &self.connector, record).await? {
            Ok(bucket) => Arc::new(bucket),
            Err(fault) => return Ok(Opened::Fault(fault)),
        };
        if let Ok(mut built) = self.built.lock() {
            built.insert(id, bucket.clone());
        }
        Ok(Opened::Sink(bucket))
    }
}
