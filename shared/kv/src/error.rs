//! Errors of the data plane and their one mapping to HTTP. KV Connect wants a
//! plain-text, human-readable body on every error (proto/kv-connect.md); clients
//! abort on 4xx and retry 5xx with backoff, so a 5xx only ever means "try again".

use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Malformed or out-of-limit request: the client must not retry it.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A request that may not be served here at all (around the distribution).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Over a cap on what may be open at once (watches): the client is told
    /// (Deno raises it), and may try again later.
    #[error("{0}")]
    TooManyRequests(String),
    /// The database exists but may not be served in its state (being restored,
    /// or its restore failed): a 4xx, so Deno's client reports it instead of
    /// retrying.
    #[error("{0}")]
    Conflict(String),
    /// Throttling or contention that outlasted our retries: the client retries.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected storage answer; the detail goes to the log only.
    #[error("internal error")]
    Internal(String),
    /// A stored item that does not parse (a data item, a change record): reading
    /// it again gives the same. A 500 like [`Self::Internal`]; the detail goes to
    /// the log only (the backup engine parks the backup rather than retry it).
    #[error("internal error")]
    Malformed(String),
}

pub type KvResult<T> = Result<T, KvError>;

impl KvError {
    pub fn bad(message: impl Into<String>) -> Self {
        Self::BadRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Malformed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the log gets: the internal detail too.
    pub fn detail(&self) -> String {
        match self {
            Self::Internal(detail) | Self::Malformed(detail) => format!("internal error: {detail}"),
            other => other.to_string(),
        }
    }

    /// The plain-text body a client sees (never the internal detail).
    pub fn body_text(&self) -> String {
        format!("{self}\n")
    }
}

impl From<denokv_proto::ConvertError> for KvError {
    fn from(err: denokv_proto::ConvertError) -> Self {
        use crate::limits::*;
        use denokv_proto::ConvertError as E;
        let message = match err {
            E::KeyTooLong => format!("key too large (the limit is {MAX_WRITE_KEY_BYTES} bytes for writes, {MAX_READ_KEY_BYTES} for reads)"),
            E::ValueTooLong => format!("value too large (the limit is {MAX_VALUE_BYTES} bytes)"),
            E::ReadRangeTooLarge => format!("too many entries requested (the limit is {MAX_READ_ENTRIES} per read)"),
            E::AtomicWriteTooLarge => format!("total mutation size too large (the limit is {MAX_TOTAL_MUTATION_BYTES} bytes)"),
            E::TooManyReadRanges => format!("too many ranges (the limit is {MAX_READ_RANGES} per read)"),
            E::TooManyWatchedKeys => format!("too many keys to watch (the limit is {MAX_WATCHED_KEYS})"),
            E::TooManyChecks => format!("too many checks (the limit is {MAX_CHECKS} per atomic operation)"),
            E::TooManyMutations => format!("too many mutations (the limit is {MAX_MUTATIONS} per atomic operation)"),
            E::TooManyQueueUndeliveredKeys
            | E::TooManyQueueBackoffIntervals
            | E::QueueBackoffIntervalTooLarge
            | E::InvalidMutationEnqueueDeadline => ENQUEUE_UNSUPPORTED.to_string(),
            E::InvalidReadRangeLimit => "invalid read range limit: it must be at least 1".into(),
            E::DecodeError => "invalid value encoding".into(),
            E::InvalidVersionstamp => "invalid versionstamp: it must be 10 bytes".into(),
            E::InvalidMutationKind => "invalid mutation kind, or a mutation without a value".into(),
            E::InvalidMutationExpireAt => "invalid expireAt".into(),
        };
        Self::BadRequest(message)
    }
}

/// Remote databases have no queues (as on Deno Deploy's KV Connect).
pub const ENQUEUE_UNSUPPORTED: &str =
    "enqueue is not supported by remote databases: subkv databases have no queues";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_plain_text_with_their_status() {
        let err = KvError::bad("too many checks");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.body_text(), "too many checks\n");
        for internal in [
            KvError::Internal("secret detail".into()),
            KvError::Malformed("secret detail".into()),
        ] {
            assert_eq!(internal.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(!internal.body_text().contains("secret"));
            assert!(internal.detail().contains("secret detail"));
        }
    }
}
