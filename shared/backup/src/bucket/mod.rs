//! The tenant's bucket: `PutObject` to any S3-compatible store, with the SSRF rules
//! checked again after DNS resolution.
//!
//! - One [`Connector`] per cold start: the HTTP client every tenant's [`Bucket`]
//!   shares. Its DNS resolver drops every address [`is_allowed_ip`] rejects (only
//!   public ones; also loopback ones for the local stack), so a host name that passed
//!   validation and later resolves inside the VPC is never connected to.
//! - One [`Bucket`] per backup target: static credentials, the target's region,
//!   virtual-hosted addressing on AWS and path-style everywhere else, no CRC checksum
//!   headers (several S3-compatible stores reject them), short timeouts and three
//!   attempts so one slow endpoint cannot hold the others.
//! - Every failure is a [`BucketFault`]: `Refused` (retrying will not help; the text
//!   is for the tenant), `Transient`, or `Timeout` (transient, but it held the
//!   caller: the engine's circuit breaker opens on it).
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`Target`], [`Bucket`] (the S3 client and `PutObject`), fault classification and the tenant's messages |
//! | `read.rs` | the restore's side: [`Bucket`] as a [`crate::restore::ReadBucket`] (`ListObjectsV2`, `GetObject`) |
//! | `connector.rs` | [`Connector`]: the shared HTTP client, its public-only DNS resolver and the retry rule for its refusals |
//! | `tests.rs` | against a local HTTP server and a recording connector |

mod connector;
mod read;
#[cfg(test)]
mod tests;

pub use connector::Connector;

use aws_sdk_s3::config::retry::{RetryConfig, RetryPartition, TokenBucket};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use connector::{chain, find_non_public, NonPublicIsFinal};
use std::error::Error as StdError;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use subkv_core::control::records::BackupRecord;
use subkv_core::secrets::SecretString;
use subkv_core::validate::is_allowed_ip;
use url::{Host, Url};

/// The longest message a [`BucketFault`] carries (the tenant sees it).
pub const MAX_FAULT_CHARS: usize = 300;

/// Where and how to write: a backup's configuration plus its decrypted secret.
#[derive(Clone, Debug)]
pub struct Target {
    /// The normalised endpoint URL (`validate::endpoint`), e.g. `https://storage.googleapis.com`.
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl Target {
    pub fn from_record(record: &BackupRecord, secret_access_key: SecretString) -> Self {
        Self {
            endpoint: record.endpoint.clone(),
            bucket: record.bucket_name.clone(),
            region: record.bucket_region.clone(),
            access_key_id: record.access_key_id.clone(),
            secret_access_key,
        }
    }
}

/// Why a write failed. The message is meant for the tenant: it names the store's
/// error code and message, is at most [`MAX_FAULT_CHARS`] characters long and never
/// contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketFault {
    /// The store refused (credentials, bucket, permissions, region, endpoint not
    /// allowed): retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// Worth retrying later (5xx, throttling, connection errors, and any 4xx
    /// whose code is not a refusal).
    #[error("{0}")]
    Transient(String),
    /// The store did not answer in time (connect, attempt or operation timeout,
    /// or the engine's own limit on a stream delivery's put): transient too, but
    /// costly to whoever waits, so the engine opens the backup's circuit breaker.
    #[error("{0}")]
    Timeout(String),
}

impl BucketFault {
    pub fn message(&self) -> &str {
        match self {
            BucketFault::Refused(m) | BucketFault::Transient(m) | BucketFault::Timeout(m) => m,
        }
    }

    pub fn is_transient(&self) -> bool {
        !matches!(self, BucketFault::Refused(_))
    }
}

/// Timeouts and retries of one bucket's requests.
#[derive(Clone, Copy, Debug)]
struct Limits {
    connect: Duration,
    attempt: Duration,
    operation: Duration,
    attempts: u32,
    initial_backoff: Duration,
}

const LIMITS: Limits = Limits {
    connect: Duration::from_secs(3),
    attempt: Duration::from_secs(10),
    operation: Duration::from_secs(25),
    attempts: 3,
    initial_backoff: Duration::from_secs(1),
};

/// One tenant's bucket.
#[derive(Clone, Debug)]
pub struct Bucket {
    client: aws_sdk_s3::Client,
    bucket: String,
    host: String,
    secret: SecretString,
}

impl Bucket {
    /// Checks the endpoint (scheme; a literal IP address must be public unless the
    /// connector allows private ones: such addresses never reach the resolver) and
    /// builds the client. Nothing is sent.
    pub fn new(connector: &Connector, target: &Target) -> Result<Self, BucketFault> {
        Self::with_limits(connector, target, LIMITS)
    }

    fn with_limits(
        connector: &Connector,
        target: &Target,
        limits: Limits,
    ) -> Result<Self, BucketFault> {
        let refuse =
            |why: String| tenant_fault(BucketFault::Refused(why), &target.secret_access_key);
        let url = Url::parse(&target.endpoint).map_err(|e| {
            refuse(format!(
                "endpoint {:?} is not a valid URL: {e}",
                target.endpoint
            ))
        })?;
        let host = url
            .host()
            .ok_or_else(|| refuse(format!("endpoint {:?} has no host", target.endpoint)))?;
        let literal = match host {
            Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            Host::Domain(_) => None,
        };
        if let Some(ip) = literal {
            if !is_allowed_ip(ip, connector.allow_private) {
                return Err(refuse(format!(
                    "endpoint address {ip} is not a public address"
                )));
            }
        }
        match url.scheme() {
            "https" => {}
            "http" if connector.allow_private => {}
            _ => return Err(refuse("endpoint must use https".to_string())),
        }
        let host = host.to_string();

        static PARTITION: AtomicU64 = AtomicU64::new(0);
        let partition = PARTITION.fetch_add(1, Ordering::Relaxed);
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(target.region.clone()))
            .endpoint_url(url.as_str().trim_end_matches('/'))
            .force_path_style(!virtual_hosted(&host))
            .credentials_provider(Credentials::new(
                target.access_key_id.clone(),
                target.secret_access_key.expose().to_string(),
                None,
                None,
                "subkv-backup-target",
            ))
            .http_client(connector.http.clone())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(limits.connect)
                    .operation_attempt_timeout(limits.attempt)
                    .operation_timeout(limits.operation)
                    .build(),
            )
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(limits.attempts)
                    .with_initial_backoff(limits.initial_backoff),
            )
            // Each bucket has its own retry quota: one failing tenant cannot use up
            // the retries of the others.
            .retry_partition(
                RetryPartition::custom(format!("subkv-backup-{partition}"))
                    .token_bucket(TokenBucket::default())
                    .build(),
            )
            .retry_classifier(NonPublicIsFinal)
            .build();
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(config),
            bucket: target.bucket.clone(),
            host,
            secret: target.secret_access_key.clone(),
        })
    }

    /// `PutObject` of `body` at `key`, retried up to three attempts in all.
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BucketFault> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|err| {
                let fault = self.classify("PutObject", &err);
                tracing::debug!(host = %self.host, fault = %fault, "PutObject failed");
                fault
            })
    }

    /// What the failure of operation `op` (`PutObject`, `ListObjectsV2`,
    /// `GetObject`) means for the tenant.
    fn classify<E>(&self, op: &str, err: &SdkError<E>) -> BucketFault
    where
        E: ProvideErrorMetadata + StdError + 'static,
    {
        let fault = match err {
            SdkError::ServiceError(ctx) => classify_service(
                op,
                ctx.raw().status().as_u16(),
                ctx.err().code(),
                ctx.err().message(),
            ),
            SdkError::DispatchFailure(failure) => {
                let connector = failure.as_connector_error();
                if let Some(refused) = connector.and_then(|c| find_non_public(c)) {
                    BucketFault::Refused(refused.to_string())
                } else if failure.is_timeout() {
                    BucketFault::Timeout(format!(
                        "{op} timed out connecting to the store at {}",
                        self.host
                    ))
                } else {
                    let why = match connector {
                        Some(c) => describe(c),
                        None => describe(err),
                    };
                    BucketFault::Transient(format!(
                        "{op} could not reach the store at {}: {why}",
                        self.host
                    ))
                }
            }
            SdkError::TimeoutError(_) => BucketFault::Timeout(format!(
                "{op} timed out: the store at {} did not answer in time",
                self.host
            )),
            SdkError::ResponseError(_) => BucketFault::Transient(format!(
                "{op} got an unreadable response from the store at {}",
                self.host
            )),
            SdkError::ConstructionFailure(_) => {
                BucketFault::Refused(format!("{op} could not be sent: {}", describe(err)))
            }
            _ => BucketFault::Transient(format!("{op} failed: {}", describe(err))),
        };
        tenant_fault(fault, &self.secret)
    }
}

/// AWS S3 takes the bucket in the host name (virtual-hosted addressing); every
/// other S3-compatible store (Google Cloud Storage, R2, MinIO, IP addresses,
/// localhost) gets it in the path.
fn virtual_hosted(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")
}

/// Error codes no retry will fix: only the tenant can (new credentials, a bucket
/// policy, the right bucket or region), and then they ask for a retry
/// (`POST /v1/database_backups/{id}/retry`). Every other answer is transient.
///
/// `AccessDenied` (403 with that code) is final although a tenant may fix it at
/// any moment: a policy does not change by itself, and retrying a denied write
/// for a day would only delay telling them. A 403 *without* an S3 error code
/// (a proxy's page) is not a refusal by the store: transient.
const REFUSED_CODES: [&str; 9] = [
    // Credentials.
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    // Permissions, account.
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    // Bucket, region.
    "NoSuchBucket",
    "InvalidBucketName",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
];

/// A response from the store: classified by its S3 error code, never by its status
/// alone. Refused only for [`REFUSED_CODES`]; everything else (`SlowDown`,
/// `OperationAborted`, `RequestTimeTooSkewed`, `TemporaryRedirect`,
/// `InternalError`, a code nobody knows, a 4xx without a code such as a proxy's
/// HTML page) is transient: the engine notes it and retries, within its budget
/// (`EngineConfig::transient_budget`).
fn classify_service(
    op: &str,
    status: u16,
    code: Option<&str>,
    message: Option<&str>,
) -> BucketFault {
    let refused = code.is_some_and(|c| REFUSED_CODES.contains(&c));
    let detail = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, Some(m)) => format!("HTTP {status}: {m}"),
        (None, None) => format!("HTTP {status}"),
    };
    if refused {
        BucketFault::Refused(format!("{op} refused by the store: {detail}"))
    } else {
        BucketFault::Transient(format!("{op} failed at the store: {detail}"))
    }
}

/// Removes the secret (should a store ever echo it) and caps the length.
fn tenant_fault(fault: BucketFault, secret: &SecretString) -> BucketFault {
    let clean = |m: &str| {
        let secret = secret.expose();
        if secret.is_empty() {
            cap(m)
        } else {
            cap(&m.replace(secret, "<redacted>"))
        }
    };
    match fault {
        BucketFault::Refused(m) => BucketFault::Refused(clean(&m)),
        BucketFault::Transient(m) => BucketFault::Transient(clean(&m)),
        BucketFault::Timeout(m) => BucketFault::Timeout(clean(&m)),
    }
}

fn cap(message: &str) -> String {
    if message.chars().count() <= MAX_FAULT_CHARS {
        return message.to_string();
    }
    let mut out: String = message.chars().take(MAX_FAULT_CHARS - 1).collect();
    out.push('…');
    out
}

/// "outer: inner: innermost", without the parts an outer message already says.
fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    for part in chain(err).map(|e| e.to_string()) {
        if !out.contains(&part) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&part);
        }
    }
    out
}
