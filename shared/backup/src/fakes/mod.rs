//! In-memory fakes of the engine's ports, for its unit tests: a change source
//! ([`FakeKv`]), a progress store keeping [`DynamoProgress`]'s conditions
//! ([`FakeProgress`]), a bucket that records every put ([`FakeBucket`]) and one a
//! restore reads ([`MemoryBucket`]).
//!
//!
//! [`DynamoProgress`]: crate::progress::DynamoProgress

mod bucket;
mod kv;
mod progress;
mod read_bucket;

pub use bucket::FakeBucket;
pub use kv::{FakeKv, Op};
pub use progress::{FakeProgress, Item};
pub use read_bucket::MemoryBucket;

use std::sync::{Mutex, MutexGuard};
use subkv_core::control::records::{now_rfc3339, BackupRecord, BackupStatus};
use uuid::Uuid;

/// A `pending` backup of `database` (of `organization`) into `prefix` of a
/// tenant's bucket, as the API enables it.
pub fn backup_record(database: Uuid, organization: Uuid, prefix: &str) -> BackupRecord {
    BackupRecord {
        id: Uuid::new_v4(),
        organization_id: organization,
        database_id: database,
        kind: "s3".into(),
        endpoint: "https://s3.eu-west-1.amazonaws.com".into(),
        bucket_name: "tenant-bucket".into(),
        bucket_region: "eu-west-1".into(),
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key_ciphertext: vec![1, 2, 3],
        prefix: prefix.into(),
        status: BackupStatus::Pending,
        created_at: now_rfc3339(),
        last_backed_up_at: None,
        last_versionstamp: None,
        last_error: None,
        snapshot_chunks: None,
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
