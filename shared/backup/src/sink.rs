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
        let secret = self
            .opener
            .open(
                &record.secret_access_key_ciphertext,
                &backup_context(&record.id.to_string(), &record.database_id.to_string()),
            )
            .await?;
        let target = Target::from_record(record, secret);
        let bucket = match Bucket::new(&self.connector, &target) {
            Ok(bucket) => Arc::new(bucket),
            Err(fault) => return Ok(Opened::Fault(fault)),
        };
        if let Ok(mut built) = self.built.lock() {
            built.insert(id, bucket.clone());
        }
        Ok(Opened::Sink(bucket))
    }
}
