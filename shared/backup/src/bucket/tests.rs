use super::connector::*;
use super::*;
use aws_sdk_s3::config::interceptors::InterceptorContext;
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_s3::primitives::SdkBody;
use aws_smithy_runtime_api::client::dns::{ResolveDns, ResolveDnsError};
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

/// A store that accepts the connection and reads the request, then never answers.
async fn hanging_store() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let mut counted = false;
                // Read until the client gives up; answer nothing.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !counted {
                        counted = true;
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    (addr, requests)
}

#[tokio::test]
async fn a_store_that_never_answers_is_a_timeout() {
    let (addr, requests) = hanging_store().await;
    let limits = Limits {
        connect: Duration::from_secs(2),
        attempt: Duration::from_millis(200),
        operation: Duration::from_millis(700),
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
    };
    let b = Bucket::with_limits(
        &Connector::new(true),
        &target(&format!("http://{addr}")),
        limits,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = b.put("k", vec![1]).await.unwrap_err();
    assert!(matches!(err, BucketFault::Timeout(_)), "{err:?}");
    assert!(err.is_transient(), "{err:?}");
    assert!(err.message().contains("timed out"), "{err}");
    assert!(err.message().contains("127.0.0.1"), "{err}");
    // Bounded by the operation timeout, and the attempts were made.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(
        requests.load(Ordering::SeqCst) >= 2,
        "attempts were retried"
    );
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
        allowed_addresses(mixed.clone(), false),
        vec![
            "8.8.8.8".parse::<IpAddr>().unwrap(),
            "2606:4700::1".parse().unwrap()
        ]
    );
    // The local stack's setting adds loopback, nothing else that is not public:
    // a name resolving to instance metadata or a private range stays refused.
    let mut with_local = mixed;
    with_local
        .extend(["127.0.0.1", "::1", "169.254.169.254"].map(|a| a.parse::<IpAddr>().unwrap()));
    assert_eq!(
        allowed_addresses(with_local, true),
        ["8.8.8.8", "2606:4700::1", "127.0.0.1", "::1"].map(|a| a.parse::<IpAddr>().unwrap())
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

/// An S3 error document with `code`.
fn error_xml(code: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>m</Message><RequestId>1</RequestId></Error>"
    )
}

/// A put answered with `status` and `body` (leaked: the canned server wants 'static).
async fn put_answered(status: u16, body: String) -> (Server, BucketFault) {
    failed_put(status, Box::leak(body.into_boxed_str())).await
}

#[tokio::test]
async fn what_cannot_fix_itself_is_refused_at_once() {
    let cases = [
        (403, "InvalidAccessKeyId"),
        (403, "SignatureDoesNotMatch"),
        (403, "AccessDenied"),
        (404, "NoSuchBucket"),
        (301, "PermanentRedirect"),
        (400, "AuthorizationHeaderMalformed"),
        (400, "InvalidBucketName"),
    ];
    for (status, code) in cases {
        let (server, err) = put_answered(status, error_xml(code)).await;
        assert_eq!(
            err,
            BucketFault::Refused(format!("PutObject refused by the store: {code}: m")),
            "{status} {code}"
        );
        assert_eq!(server.requests(), 1, "{code}: a refusal is not retried");
    }
}

#[tokio::test]
async fn a_4xx_that_can_fix_itself_is_transient() {
    let cases = [
        (409, error_xml("OperationAborted")),
        (307, error_xml("TemporaryRedirect")),
        (400, error_xml("RequestTimeTooSkewed")),
        (503, error_xml("SlowDown")),
        (500, error_xml("InternalError")),
        (400, error_xml("InvalidRequest")),
        (400, error_xml("SomeCodeNobodyKnows")),
        (409, error_xml("SomeCodeNobodyKnows")),
        // A proxy's page: no S3 error code at all.
        (
            403,
            "<html><body><h1>403 Forbidden</h1></body></html>".to_string(),
        ),
        (404, "<html><body>Not Found</body></html>".to_string()),
        (400, String::new()),
    ];
    for (status, body) in cases {
        let (server, err) = put_answered(status, body.clone()).await;
        assert!(err.is_transient(), "{status} {body}: {err:?}");
        assert!(
            err.message().starts_with("PutObject failed at the store: "),
            "{status}: {err}"
        );
        assert!(server.requests() >= 1);
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
        (403, "AccountProblem"),
    ];
    for (status, code) in refused {
        let fault = classify_service("PutObject", status, Some(code), Some("m"));
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
        (409, Some("OperationAborted")),
        (400, Some("RequestTimeTooSkewed")),
        (307, Some("TemporaryRedirect")),
        (400, Some("InvalidRequest")),
        (400, Some("SomethingElse")),
        (403, None),
        (404, None),
        (400, None),
    ];
    for (status, code) in transient {
        assert!(
            classify_service("PutObject", status, code, None).is_transient(),
            "{status} {code:?}"
        );
    }
    assert_eq!(
        classify_service("PutObject", 404, None, None),
        BucketFault::Transient("PutObject failed at the store: HTTP 404".into())
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

// The restore's reads (`read.rs`).

use crate::restore::{ReadBucket, ReadFault};

#[tokio::test]
async fn lists_in_name_order_after_a_key() {
    let server = serve(
        200,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>bucket</Name>
<Prefix>root/logs/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>root/logs/a.bin</Key><Size>10</Size></Contents>
<Contents><Key>root/logs/b.bin</Key><Size>20</Size></Contents>
<NextContinuationToken>t</NextContinuationToken></ListBucketResult>"#,
    )
    .await;
    let b = bucket(&Connector::new(true), &format!("http://{}", server.addr));
    let listed = b.list("root/logs/", Some("root/logs/0"), 2).await.unwrap();
    let keys: Vec<(&str, u64)> = listed.iter().map(|l| (l.key.as_str(), l.size)).collect();
    assert_eq!(keys, [("root/logs/a.bin", 10), ("root/logs/b.bin", 20)]);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "a full page needs no continuation");
    let line = &seen[0].request_line;
    assert!(line.starts_with("GET /bucket/?list-type=2"), "{line}");
    assert!(line.contains("start-after=root%2Flogs%2F0"), "{line}");
    assert!(line.contains("max-keys=2"), "{line}");
}

#[tokio::test]
async fn a_missing_object_is_not_found_and_a_refusal_is_denied() {
    let missing = serve(
        404,
        "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>",
    )
    .await;
    let b = bucket(&Connector::new(true), &format!("http://{}", missing.addr));
    assert_eq!(
        b.get("root/differential").await,
        Err(ReadFault::NotFound("root/differential".into()))
    );
    assert_eq!(missing.requests(), 1, "not retried");

    let denied = serve(
        403,
        "<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
    )
    .await;
    let b = bucket(&Connector::new(true), &format!("http://{}", denied.addr));
    assert_eq!(
        b.list("root/", None, 10).await,
        Err(ReadFault::Denied(
            "ListObjectsV2 refused by the store: AccessDenied: Access Denied".into()
        ))
    );
    let fault = b.get("root/differential").await.unwrap_err();
    assert!(!fault.is_transient(), "{fault}");
    assert!(!fault.to_string().contains(SECRET));
}

#[tokio::test]
async fn a_body_is_read_whole() {
    let server = serve(200, "00000000000000010000").await;
    let b = bucket(&Connector::new(true), &format!("http://{}", server.addr));
    assert_eq!(
        b.get("root/differential").await.unwrap(),
        b"00000000000000010000"
    );
    assert_eq!(
        server.seen.lock().unwrap()[0].request_line,
        "GET /bucket/root/differential?x-id=GetObject"
    );
}
