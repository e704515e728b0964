//! What a restore reads: a bucket it may list and read, never write ([`ReadBucket`]).
//!
//! The engine's port is [`crate::sink::ObjectSink`] (`PutObject` only, with
//! [`crate::bucket::BucketFault`] classifying the store's answers); a restore needs
//! the other half, `ListObjectsV2` and `GetObject`, with the tenant's (or the
//! backup's) credentials granting List and Get. The S3 implementation belongs
//! beside [`crate::bucket::Bucket`] (same client settings, same SSRF checks, same
//! fault codes, plus `NoSuchKey` as [`ReadFault::NotFound`]); the unit tests use
//! the in-memory fake in `crate::fakes`.

use async_trait::async_trait;

/// One object of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The full key in the bucket.
    pub key: String,
    /// The body's size in bytes, as the listing says.
    pub size: u64,
}

/// Why a read failed. Messages are for the tenant: the store's code and message,
/// never a secret (the same rules as [`crate::bucket::BucketFault`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadFault {
    /// No object at that key (S3 `NoSuchKey`).
    #[error("no object at `{0}`")]
    NotFound(String),
    /// The store refused: credentials, permissions (`AccessDenied`: the
    /// credentials lack List or Get), no such bucket, wrong region, an endpoint
    /// the rules refuse. Retrying will not help. A backup's own credentials
    /// often may only write (backup-format.md), hence the hint.
    #[error(
        "{0} (check the bucket, its region and endpoint, and that the credentials allow \
         s3:ListBucket and s3:GetObject: a restore reads the bucket)"
    )]
    Denied(String),
    /// Worth retrying: 5xx, throttling, timeouts, connection errors.
    #[error("{0}")]
    Transient(String),
}

impl ReadFault {
    pub fn is_transient(&self) -> bool {
        matches!(self, ReadFault::Transient(_))
    }
}

/// A bucket a restore reads. Implementations return names in S3's order (UTF-8
/// byte order, which for the format's fixed-width lower-case hex names is numeric
/// order).
#[async_trait]
pub trait ReadBucket: Send + Sync {
    /// At most `limit` (1..=1000) objects whose key starts with `prefix` and sorts
    /// after `start_after` (if given), in name order: `ListObjectsV2` with
    /// `prefix`, `start-after` and `max-keys`. Fewer than `limit` means there are
    /// no more.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, ReadFault>;

    /// The whole body of the object at `key` (`GetObject`).
    async fn get(&self, key: &str) -> Result<Vec<u8>, ReadFault>;
}
