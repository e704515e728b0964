//! What went wrong on the storage side (DynamoDB, KMS). Each plane maps it to HTTP
//! once: the management API in `subkv_api::error`, KV Connect in `subkv_kv::error`.

/// What went wrong on the storage side. The details are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed: {source}")]
    Dynamo {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stored item is malformed: {0}")]
    Malformed(String),
    /// A concurrent change to the same items won; the caller may retry.
    #[error("a concurrent change to the same items won")]
    Conflict,
    #[error("KMS {operation} failed: {source}")]
    Kms {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub fn dynamo<E: std::error::Error + Send + Sync + 'static>(
        operation: &'static str,
        source: E,
    ) -> Self {
        Self::Dynamo {
            operation,
            source: Box::new(source),
        }
    }

    pub fn kms<E: std::error::Error + Send + Sync + 'static>(
        operation: &'static str,
        source: E,
    ) -> Self {
        Self::Kms {
            operation,
            source: Box::new(source),
        }
    }
}
