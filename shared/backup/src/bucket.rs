//! The tenant's bucket: `PutObject` to any S3-compatible store, with the SSRF rules
//! checked again after DNS resolution.
//!
//! - One [`Connector`] per cold start: the HTTP client every tenant's [`Bucket`]
//!   shares. Its DNS resolver drops every address [`is_public_ip`] rejects (unless
//!   private endpoints are allowed, for development), so a host name that passed
//!   validation and later resolves inside the VPC is never connected to.
//! - One [`Bucket`] per backup target: static credentials, the target's region,
//!   virtual-hosted addressing on AWS and path-style everywhere else, no CRC checksum
//!   headers (several S3-compatible stores reject them), short timeouts and three
//!   attempts so one slow endpoint cannot hold the others.
//! - Every failure is a [`BucketFault`]: `Refused` (retrying will not help; the text
//!   is for the tenant) or `Transient`.

use aws_sdk_s3::config::interceptors::InterceptorContext;
use aws_sdk_s3::config::retry::{
    ClassifyRetry, RetryAction, RetryConfig, RetryPartition, TokenBucket,
};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedHttpClient,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::PutObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
use std::error::Error as StdError;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use subkv_core::config::{ConfigError, Env};
use subkv_core::control::records::BackupRecord;
use subkv_core::secrets::SecretString;
use subkv_core::validate::is_public_ip;
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
    /// The store refused (credentials, bucket, permissions, endpoint not allowed):
    /// retrying will not help.
    #[error("{0}")]
    Refused(String),
    /// Worth retrying later (5xx, throttling, timeouts, connection errors).
    #[error("{0}")]
    Transient(String),
}

impl BucketFault {
    pub fn message(&self) -> &str {
        match self {
            BucketFault::Refused(m) | BucketFault::Transient(m) => m,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, BucketFault::Transient(_))
    }
}

/// The HTTP client every [`Bucket`] shares; build it once per cold start.
#[derive(Clone, Debug)]
pub struct Connector {
    http: SharedHttpClient,
    allow_private: bool,
}

impl Connector {
    /// `allow_private` (development only) accepts `http` endpoints and endpoints that
    /// are or resolve to loopback, private, link-local... addresses.
    pub fn new(allow_private: bool) -> Self {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_with_resolver(PublicOnlyResolver { allow_private });
        Self {
            http,
            allow_private,
        }
    }

    /// `SUBKV_ALLOW_INSECURE_ENDPOINTS=true` (or `1`) allows private endpoints, as
    /// the management API does; anything else does not.
    /// `SUBKV_ALLOW_INSECURE_ENDPOINTS` decides, by the one rule for booleans.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self::new(env.allow_insecure_endpoints()?))
    }

    pub fn allows_private(&self) -> bool {
        self.allow_private
    }
}

/// Resolves with the system resolver and keeps only public addresses.
#[derive(Clone, Debug)]
struct PublicOnlyResolver {
    allow_private: bool,
}

/// Every address the endpoint's host resolved to was non-public.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {host} resolves to a non-public address")]
struct NonPublicAddress {
    host: String,
}

impl ResolveDns for PublicOnlyResolver {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        let allow_private = self.allow_private;
        let host = name.to_string();
        DnsFuture::new(async move {
            let lookup = host.clone();
            let resolved = tokio::task::spawn_blocking(move || {
                (lookup.as_str(), 0)
                    .to_socket_addrs()
                    .map(|addrs| addrs.map(|a| a.ip()).collect::<Vec<IpAddr>>())
            })
            .await
            .map_err(ResolveDnsError::new)?
            .map_err(ResolveDnsError::new)?;
            let allowed = allowed_addresses(resolved.clone(), allow_private);
            if allowed.is_empty() && !resolved.is_empty() {
                tracing::warn!(host = %host, addresses = ?resolved, "backup endpoint resolves to non-public addresses only");
                return Err(ResolveDnsError::new(NonPublicAddress { host }));
            }
            Ok(allowed)
        })
    }
}

fn allowed_addresses(addrs: Vec<IpAddr>, allow_private: bool) -> Vec<IpAddr> {
    addrs
        .into_iter()
        .filter(|ip| allow_private || is_public_ip(*ip))
        .collect()
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
            if !connector.allow_private && !is_public_ip(ip) {
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
                let fault = self.classify(&err);
                tracing::debug!(host = %self.host, fault = %fault, "PutObject failed");
                fault
            })
    }

    fn classify(&self, err: &SdkError<PutObjectError>) -> BucketFault {
        let fault = match err {
            SdkError::ServiceError(ctx) => classify_service(
                ctx.raw().status().as_u16(),
                ctx.err().code(),
                ctx.err().message(),
            ),
            SdkError::DispatchFailure(failure) => {
                let connector = failure.as_connector_error();
                if let Some(refused) = connector.and_then(|c| find_non_public(c)) {
                    BucketFault::Refused(refused.to_string())
                } else if failure.is_timeout() {
                    BucketFault::Transient(format!(
                        "PutObject timed out connecting to the store at {}",
                        self.host
                    ))
                } else {
                    let why = match connector {
                        Some(c) => describe(c),
                        None => describe(err),
                    };
                    BucketFault::Transient(format!(
                        "PutObject could not reach the store at {}: {why}",
                        self.host
                    ))
                }
            }
            SdkError::TimeoutError(_) => BucketFault::Transient(format!(
                "PutObject timed out: the store at {} did not answer in time",
                self.host
            )),
            SdkError::ResponseError(_) => BucketFault::Transient(format!(
                "PutObject got an unreadable response from the store at {}",
                self.host
            )),
            SdkError::ConstructionFailure(_) => {
                BucketFault::Refused(format!("PutObject could not be sent: {}", describe(err)))
            }
            _ => BucketFault::Transient(format!("PutObject failed: {}", describe(err))),
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

/// Error codes that no retry will fix.
const REFUSED_CODES: [&str; 10] = [
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "AllAccessDisabled",
    "InvalidBucketName",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "InvalidRequest",
    "AccountProblem",
];

/// A response from the store: refused unless the code or status says "later".
fn classify_service(status: u16, code: Option<&str>, message: Option<&str>) -> BucketFault {
    let transient = match code {
        Some(c) if REFUSED_CODES.contains(&c) => false,
        Some(c)
            if c == "SlowDown"
                || c == "RequestTimeout"
                || c.starts_with("Throttl")
                || c == "ServiceUnavailable"
                || c == "InternalError" =>
        {
            true
        }
        _ => status >= 500 || status == 408 || status == 429,
    };
    let detail = match (code, message) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        (None, Some(m)) => format!("HTTP {status}: {m}"),
        (None, None) => format!("HTTP {status}"),
    };
    if transient {
        BucketFault::Transient(format!("PutObject failed at the store: {detail}"))
    } else {
        BucketFault::Refused(format!("PutObject refused by the store: {detail}"))
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

/// An error and its sources, outermost first.
fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<std::io::Error>() {
        // io::Error::source skips its payload: step into the payload itself.
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

/// The resolver's refusal, wherever it sits in an error's chain.
fn find_non_public<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a NonPublicAddress> {
    chain(err).find_map(|e| e.downcast_ref::<NonPublicAddress>())
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

/// A resolver refusal is final: the SDK would otherwise retry it as an I/O error.
#[derive(Debug)]
struct NonPublicIsFinal;

impl ClassifyRetry for NonPublicIsFinal {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        let refused = match ctx.output_or_error() {
            Some(Err(err)) => err
                .as_connector_error()
                .and_then(|c| find_non_public(c))
                .is_some(),
            _ => false,
        };
        if refused {
            RetryAction::RetryForbidden
        } else {
            RetryAction::NoActionIndicated
        }
    }

    fn name(&self) -> &'static str {
        "subkv non-public endpoint"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::primitives::SdkBody;
    use aws_smithy_runtime_api::client::http::{
        http_client_fn, HttpConnector, HttpConnectorFuture, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::net::SocketAddr;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Mutex};

    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

    fn target(endpoint: &str) -> Target {
        Target {
            endpoint: endpoint.to_string(),
            bucket: "bucket".into(),
            region: "eu-west-1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: SecretString::new(SECRET),
        }
    }

    const FAST: Limits = Limits {
        connect: Duration::from_secs(2),
        attempt: Duration::from_secs(5),
        operation: Duration::from_secs(10),
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
    };

    fn bucket(connector: &Connector, endpoint: &str) -> Bucket {
        Bucket::with_limits(connector, &target(endpoint), FAST).unwrap()
    }

    struct Seen {
        request_line: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    struct Server {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
    }

    impl Server {
        fn requests(&self) -> usize {
            self.seen.lock().unwrap().len()
        }
    }

    /// An HTTP/1.1 server on 127.0.0.1 that answers every request with `status`
    /// and `reply`, and records what it was sent.
    async fn serve(status: u16, reply: &'static str) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, connections2) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections2.fetch_add(1, Ordering::SeqCst);
                let seen = seen2.clone();
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let request_line = format!("{} {}", req.method(), req.uri());
                        let headers = req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (n.as_str().to_string(), v.to_str().unwrap_or("").to_string())
                            })
                            .collect();
                        let body = req.into_body().collect().await?.to_bytes().to_vec();
                        seen.lock().unwrap().push(Seen {
                            request_line,
                            headers,
                            body,
                        });
                        let mut response =
                            hyper::Response::new(Full::new(Bytes::from_static(reply.as_bytes())));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(response)
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        Server {
            addr,
            seen,
            connections,
        }
    }

    #[tokio::test]
    async fn puts_path_style_without_checksums() {
        let server = serve(200, "").await;
        let b = bucket(&Connector::new(true), &format!("http://{}", server.addr));
        b.put("some/key", b"hello".to_vec()).await.unwrap();
        let seen = server.seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        let req = &seen[0];
        // The SDK tags every request with its operation in the query (`x-id`).
        assert_eq!(req.request_line, "PUT /bucket/some/key?x-id=PutObject");
        assert_eq!(req.body, b"hello");
        assert_eq!(req.header("content-length"), Some("5"));
        for (name, value) in &req.headers {
            assert!(!name.starts_with("x-amz-checksum-"), "{name}: {value}");
            assert!(
                !value.contains(SECRET),
                "the secret was sent in {name}: {value}"
            );
        }
        assert_eq!(req.header("x-amz-sdk-checksum-algorithm"), None);
        assert_eq!(req.header("x-amz-trailer"), None);
        assert_eq!(req.header("x-amz-decoded-content-length"), None);
        assert!(!req
            .header("content-encoding")
            .unwrap_or("")
            .contains("aws-chunked"));
        assert!(!req
            .header("x-amz-content-sha256")
            .unwrap_or("")
            .starts_with("STREAMING"));
        assert!(req
            .header("authorization")
            .unwrap()
            .contains("Credential=AKIAIOSFODNN7EXAMPLE/"));
    }

    /// A put of `[1, 2, 3]` to a server that answers every request with `status`.
    async fn failed_put(status: u16, reply: &'static str) -> (Server, BucketFault) {
        let server = serve(status, reply).await;
        let b = bucket(&Connector::new(true), &format!("http://{}", server.addr));
        let err = b.put("k", vec![1, 2, 3]).await.unwrap_err();
        (server, err)
    }

    #[tokio::test]
    async fn a_refusal_carries_the_stores_code_and_message() {
        let (server, err) = failed_put(
            403,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message><RequestId>1</RequestId></Error>",
        )
        .await;
        assert_eq!(
            err,
            BucketFault::Refused(
                "PutObject refused by the store: InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records."
                    .into()
            )
        );
        assert_eq!(server.requests(), 1, "a refusal is not retried");
    }

    #[tokio::test]
    async fn slow_down_is_transient_after_three_attempts() {
        let (server, err) = failed_put(
            503,
            "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
        )
        .await;
        assert_eq!(
            err,
            BucketFault::Transient(
                "PutObject failed at the store: SlowDown: Please reduce your request rate.".into()
            )
        );
        assert_eq!(server.requests(), 3);
        assert!(server
            .seen
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.body == [1, 2, 3]));
    }

    #[tokio::test]
    async fn a_closed_port_is_transient() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let b = bucket(&Connector::new(true), &format!("http://{addr}"));
        let err = b.put("k", vec![]).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
        assert!(err.message().contains("Connection refused"), "{err}");
        assert!(!err.message().contains("DispatchFailure"), "{err}");
        assert!(
            err.message()
                .contains("could not reach the store at 127.0.0.1"),
            "{err}"
        );
        assert!(err.message().chars().count() <= MAX_FAULT_CHARS);
    }

    #[tokio::test]
    async fn a_private_ip_endpoint_is_refused_before_anything_is_sent() {
        let server = serve(200, "").await;
        let connector = Connector::new(false);
        for endpoint in [
            format!("https://{}", server.addr),
            format!("http://{}", server.addr),
            "https://[::1]".to_string(),
            "https://169.254.169.254".to_string(),
            "https://[::ffff:10.0.0.1]".to_string(),
        ] {
            let err = Bucket::new(&connector, &target(&endpoint)).unwrap_err();
            assert!(
                matches!(&err, BucketFault::Refused(m) if m.contains("is not a public address")),
                "{endpoint}: {err:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn http_is_refused_unless_private_endpoints_are_allowed() {
        let err = Bucket::new(&Connector::new(false), &target("http://203.0.114.9")).unwrap_err();
        assert_eq!(err, BucketFault::Refused("endpoint must use https".into()));
        assert!(Bucket::new(&Connector::new(true), &target("http://203.0.114.9")).is_ok());
        let err = Bucket::new(&Connector::new(false), &target("not a url")).unwrap_err();
        assert!(matches!(err, BucketFault::Refused(_)));
    }

    #[tokio::test]
    async fn a_host_resolving_to_loopback_is_refused_at_resolve_time() {
        let server = serve(200, "").await;
        let b = bucket(
            &Connector::new(false),
            &format!("https://localhost:{}", server.addr.port()),
        );
        let started = std::time::Instant::now();
        let err = b.put("k", vec![1]).await.unwrap_err();
        assert_eq!(
            err,
            BucketFault::Refused("endpoint localhost resolves to a non-public address".into())
        );
        assert!(started.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn the_resolver_keeps_public_addresses_only() {
        let strict = PublicOnlyResolver {
            allow_private: false,
        };
        let err = strict.resolve_dns("localhost").await.unwrap_err();
        assert!(find_non_public(&err).is_some(), "{err:?}");
        let lax = PublicOnlyResolver {
            allow_private: true,
        };
        let addrs = lax.resolve_dns("localhost").await.unwrap();
        assert!(addrs.iter().all(|ip| ip.is_loopback()), "{addrs:?}");
        let mixed = vec![
            "10.1.2.3".parse().unwrap(),
            "8.8.8.8".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            "2606:4700::1".parse().unwrap(),
        ];
        assert_eq!(
            allowed_addresses(mixed, false),
            vec![
                "8.8.8.8".parse::<IpAddr>().unwrap(),
                "2606:4700::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn a_resolver_refusal_is_never_retried() {
        use aws_sdk_s3::error::ConnectorError;
        use aws_smithy_runtime_api::client::interceptors::context::Input;
        use aws_smithy_runtime_api::client::orchestrator::OrchestratorError;
        let refusal = ResolveDnsError::new(NonPublicAddress { host: "h".into() });
        let mut ctx = InterceptorContext::new(Input::erase(()));
        ctx.set_output_or_error(Err(OrchestratorError::connector(ConnectorError::io(
            Box::new(refusal),
        ))));
        assert_eq!(
            NonPublicIsFinal.classify_retry(&ctx),
            RetryAction::RetryForbidden
        );
        ctx.set_output_or_error(Err(OrchestratorError::connector(ConnectorError::io(
            "connection refused".into(),
        ))));
        assert_eq!(
            NonPublicIsFinal.classify_retry(&ctx),
            RetryAction::NoActionIndicated
        );
    }

    /// Records the URI of each request instead of sending it.
    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl HttpConnector for Recorder {
        fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
            self.0.lock().unwrap().push(request.uri().to_string());
            let response = HttpResponse::new(200.try_into().unwrap(), SdkBody::empty());
            HttpConnectorFuture::ready(Ok(response))
        }
    }

    async fn sent_uri(endpoint: &str, bucket_name: &str) -> String {
        let recorder = Recorder::default();
        let r = recorder.clone();
        let connector = Connector {
            http: http_client_fn(move |_, _| SharedHttpConnector::new(r.clone())),
            allow_private: false,
        };
        let mut t = target(endpoint);
        t.bucket = bucket_name.into();
        let b = Bucket::with_limits(&connector, &t, FAST).unwrap();
        b.put("some/key", b"x".to_vec()).await.unwrap();
        let uris = recorder.0.lock().unwrap();
        assert_eq!(uris.len(), 1);
        let uri = uris[0].strip_suffix("?x-id=PutObject").unwrap();
        uri.to_string()
    }

    #[tokio::test]
    async fn aws_is_virtual_hosted_everything_else_path_style() {
        let cases = [
            (
                "https://s3.eu-west-1.amazonaws.com",
                "my-bucket",
                "https://my-bucket.s3.eu-west-1.amazonaws.com/some/key",
            ),
            (
                "https://storage.googleapis.com",
                "my-bucket",
                "https://storage.googleapis.com/my-bucket/some/key",
            ),
            (
                "https://acct.r2.cloudflarestorage.com",
                "my-bucket",
                "https://acct.r2.cloudflarestorage.com/my-bucket/some/key",
            ),
            (
                "https://203.0.114.9:9000",
                "my-bucket",
                "https://203.0.114.9:9000/my-bucket/some/key",
            ),
            // TLS certificates do not cover a dotted bucket's host name: the SDK
            // falls back to path-style on AWS.
            (
                "https://s3.eu-west-1.amazonaws.com",
                "my.bucket",
                "https://s3.eu-west-1.amazonaws.com/my.bucket/some/key",
            ),
        ];
        for (endpoint, bucket_name, expected) in cases {
            assert_eq!(
                sent_uri(endpoint, bucket_name).await,
                expected,
                "{endpoint} {bucket_name}"
            );
        }
    }

    #[test]
    fn the_addressing_decision() {
        for host in [
            "s3.eu-west-1.amazonaws.com",
            "s3.amazonaws.com",
            "s3.dualstack.us-east-1.amazonaws.com",
            "S3.EU-WEST-1.AMAZONAWS.COM.",
            "s3.cn-north-1.amazonaws.com.cn",
        ] {
            assert!(virtual_hosted(host), "{host}");
        }
        for host in [
            "storage.googleapis.com",
            "acct.r2.cloudflarestorage.com",
            "localhost",
            "127.0.0.1",
            "[::1]",
            "amazonaws.com.evil.example",
            "notamazonaws.com",
        ] {
            assert!(!virtual_hosted(host), "{host}");
        }
    }

    #[test]
    fn service_errors_are_classified() {
        let refused = [
            (403, "AccessDenied"),
            (403, "InvalidAccessKeyId"),
            (403, "SignatureDoesNotMatch"),
            (404, "NoSuchBucket"),
            (403, "AllAccessDisabled"),
            (400, "InvalidBucketName"),
            (301, "PermanentRedirect"),
            (400, "AuthorizationHeaderMalformed"),
            (400, "InvalidRequest"),
            (403, "AccountProblem"),
            (400, "SomethingElse"),
            (409, "OperationAborted"),
        ];
        for (status, code) in refused {
            let fault = classify_service(status, Some(code), Some("m"));
            assert_eq!(
                fault,
                BucketFault::Refused(format!("PutObject refused by the store: {code}: m"))
            );
        }
        let transient = [
            (503, Some("SlowDown")),
            (400, Some("ThrottlingException")),
            (400, Some("Throttling")),
            (400, Some("RequestTimeout")),
            (500, Some("InternalError")),
            (502, None),
            (408, None),
            (429, None),
            (500, Some("AccessDenied-ish")),
        ];
        for (status, code) in transient {
            assert!(
                classify_service(status, code, None).is_transient(),
                "{status} {code:?}"
            );
        }
        assert_eq!(
            classify_service(404, None, None),
            BucketFault::Refused("PutObject refused by the store: HTTP 404".into())
        );
    }

    #[test]
    fn tenant_messages_are_capped_and_never_hold_the_secret() {
        let secret = SecretString::new(SECRET);
        let long = BucketFault::Refused(format!("x {SECRET} {}", "y".repeat(1000)));
        let clean = tenant_fault(long, &secret);
        assert!(!clean.message().contains(SECRET));
        assert!(clean.message().contains("<redacted>"));
        assert_eq!(clean.message().chars().count(), MAX_FAULT_CHARS);
        assert!(!clean.is_transient());
        let short = BucketFault::Transient("é".repeat(10));
        assert_eq!(tenant_fault(short.clone(), &secret), short);
    }

    #[test]
    fn the_secret_never_prints() {
        let t = target("https://s3.eu-west-1.amazonaws.com");
        assert!(!format!("{t:?}").contains(SECRET));
        let b = Bucket::new(&Connector::new(false), &t).unwrap();
        assert!(!format!("{b:?}").contains(SECRET));
    }
}
