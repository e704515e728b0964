//! What went wrong on the storage side (DynamoDB, KMS). Each plane maps it to HTTP
//! once: the management API in `subkv_api::error`, KV Connect in `subkv_kv::error`.

/// Whether a failed call can succeed if it is simply made again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Later, it may: throttling, a 5xx, no answer (timeout, connection error), a
    /// lost race.
    Retry,
    /// Never with this input: a ciphertext KMS cannot decrypt under its context, a
    /// stored item that does not parse.
    Never,
    /// Not before an operator changes something: permissions, a missing or
    /// disabled table or key, a request the service rejects.
    Operator,
}

/// What went wrong on the storage side. The details are logged, never shown.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed: {source}")]
    Dynamo {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        recovery: Recovery,
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
        recovery: Recovery,
    },
}

impl StoreError {
    pub fn dynamo<E: std::error::Error + Send + Sync + 'static>(
        operation: &'static str,
        recovery: Recovery,
        source: E,
    ) -> Self {
        Self::Dynamo {
            operation,
            source: Box::new(source),
            recovery,
        }
    }

    pub fn kms<E: std::error::Error + Send + Sync + 'static>(
        operation: &'static str,
        recovery: Recovery,
        source: E,
    ) -> Self {
        Self::Kms {
            operation,
            source: Box::new(source),
            recovery,
        }
    }

    /// Whether making the call again can succeed (the backup engine retries only
    /// what can: see [`Recovery`]). A malformed item never parses; a lost race
    /// can be run again.
    pub fn recovery(&self) -> Recovery {
        match self {
            Self::Dynamo { recovery, .. } | Self::Kms { recovery, .. } => *recovery,
            Self::Malformed(_) => Recovery::Never,
            Self::Conflict => Recovery::Retry,
        }
    }
}
