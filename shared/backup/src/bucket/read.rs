//! The restore's side of a tenant's bucket: `ListObjectsV2` and `GetObject` with the
//! same client as the engine's writes (SSRF rules after DNS, timeouts, retries, the
//! tenant's messages without the secret), as a [`ReadBucket`].

use super::{Bucket, BucketFault};
use crate::restore::{Listed, ReadBucket, ReadFault};
use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// The largest object a restore reads. subkv writes log objects of at most 8 MiB and
/// snapshot ranges of about 1 MB; a bucket given for an import may hold anything,
/// and a restore function must not run out of memory on one object.
pub const MAX_OBJECT_BYTES: usize = 64 << 20;

impl From<BucketFault> for ReadFault {
    fn from(fault: BucketFault) -> Self {
        match fault {
            BucketFault::Refused(m) => ReadFault::Denied(m),
            BucketFault::Transient(m) | BucketFault::Timeout(m) => ReadFault::Transient(m),
        }
    }
}

impl Bucket {
    fn read_fault<E>(&self, op: &str, key: &str, err: &SdkError<E>) -> ReadFault
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let missing = matches!(err, SdkError::ServiceError(ctx)
            if matches!(ctx.err().code(), Some("NoSuchKey" | "NotFound")));
        if missing {
            return ReadFault::NotFound(key.to_string());
        }
        let fault = self.classify(op, err);
        tracing::debug!(host = %self.host, fault = %fault, "{op} failed");
        fault.into()
    }
}

#[async_trait]
impl ReadBucket for Bucket {
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, ReadFault> {
        let limit = limit.clamp(1, 1000);
        let mut out = Vec::with_capacity(limit);
        let mut continuation: Option<String> = None;
        // A store may answer with fewer keys than asked and a continuation token
        // (S3 itself does not, but the trait promises that a short page is the end).
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_start_after(start_after.map(str::to_string))
                .set_continuation_token(continuation.take())
                .max_keys((limit - out.len()) as i32)
                .send()
                .await
                .map_err(|err| self.read_fault("ListObjectsV2", prefix, &err))?;
            for object in page.contents() {
                if let Some(key) = object.key() {
                    out.push(Listed {
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                    });
                }
            }
            match page.next_continuation_token() {
                Some(token) if page.is_truncated() == Some(true) && out.len() < limit => {
                    continuation = Some(token.to_string());
                }
                _ => break,
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ReadFault> {
        let too_large = || {
            ReadFault::Denied(format!(
                "`{key}` is larger than {} MiB, more than any object of the backup format",
                MAX_OBJECT_BYTES >> 20
            ))
        };
        let object = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| self.read_fault("GetObject", key, &err))?;
        if object.content_length().unwrap_or(0) > MAX_OBJECT_BYTES as i64 {
            return Err(too_large());
        }
        let mut body = object.body;
        let mut out = Vec::new();
        while let Some(chunk) = body.try_next().await.map_err(|err| {
            let cut = BucketFault::Transient(format!(
                "GetObject of `{key}` was cut off by the store at {}: {err}",
                self.host
            ));
            ReadFault::from(super::tenant_fault(cut, &self.secret))
        })? {
            if out.len() + chunk.len() > MAX_OBJECT_BYTES {
                return Err(too_large());
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}
