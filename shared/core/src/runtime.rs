//! The runtime every function shares: JSON logs (one object per line, as
//! CloudWatch Logs expects from Lambda), the cold start (state built once, the
//! AWS SDK configuration loaded once), one `serve` for HTTP routes, one for
//! streamed HTTP responses, one for events, and the one request log line.
//!
//! Both HTTP `serve`s hold every response to Lambda's limits on what a function
//! may answer ([`MAX_BUFFERED_RESPONSE_BYTES`], [`MAX_STREAMED_RESPONSE_BYTES`]):
//! past them AWS delivers nothing (API Gateway and function URLs answer 502, a
//! 5xx that KV clients retry forever), while a local server would deliver it, so
//! the check is here, where it holds in both (docs/decisions.md, 32).
//!
//! Log level from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use lambda_http::http::header::HOST;
use lambda_http::http::HeaderMap;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::{Body, Request, Response};
use serde::{de::DeserializeOwned, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tracing_subscriber::EnvFilter;
use uuid::Uuid;

/// Libraries that log whole events or requests (the `Authorization` header, a
/// request body with `secretAccessKey`, a KMS `Encrypt` plaintext) at debug or
/// trace. They are capped at info whatever the configured level says.
const CAPPED: [&str; 7] = [
    "lambda_runtime",
    "lambda_http",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_sdk_kms",
    "aws_sdk_dynamodb",
    "hyper",
];

/// The filter directives: the configured ones, then the caps (later wins).
pub fn directives(configured: Option<&str>) -> String {
    let base = configured
        .map(str::to_lowercase)
        .filter(|d| EnvFilter::try_new(d).is_ok())
        .unwrap_or_else(|| "info".to_string());
    CAPPED
        .iter()
        .fold(base, |acc, target| format!("{acc},{target}=info"))
}

/// Installs the JSON subscriber, writing to stdout (what Lambda collects).
pub fn init() {
    let env = crate::config::Env::process();
    let configured = env
        .string("RUST_LOG")
        .or_else(|| env.string("AWS_LAMBDA_LOG_LEVEL"));
    init_with(configured.as_deref(), std::io::stdout);
}

/// The same subscriber with another writer (benchmarks log to `io::sink`).
/// A second call is a no-op.
pub fn init_with<W>(configured: Option<&str>, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new(directives(configured)))
        .with_target(false)
        .with_current_span(false)
        .flatten_event(true)
        .with_writer(writer)
        .try_init();
}

/// The AWS SDK configuration, loaded once per cold start. The SDK honours
/// `AWS_ENDPOINT_URL`, which is how the local stack points it at the emulator.
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

/// Logs, then builds the function's state; a failure is logged and ends the process
/// (Lambda reports an init error and retries the cold start).
async fn cold_start<S, E>(
    function: &'static str,
    build: impl Future<Output = Result<S, E>>,
) -> Result<Arc<S>, lambda_runtime::Error>
where
    E: std::fmt::Display,
{
    init();
    match build.await {
        Ok(state) => {
            tracing::debug!(function, "cold start");
            Ok(Arc::new(state))
        }
        Err(err) => {
            tracing::error!(function, error = %err, "cold start failed");
            Err(err.to_string().into())
        }
    }
}

/// Lambda's limit on a buffered response (the Invoke API's "6 MB" payload, which
/// Lambda counts as 6 MiB): the whole JSON document the function returns, status,
/// headers and body, a binary body base64-encoded (4 bytes per 3).
pub const MAX_BUFFERED_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// Lambda's limit on a streamed response (response streaming through a function
/// URL): the head (status and headers, as JSON, and 8 NUL bytes) and the body. AWS
/// documents it as 20 MB (a soft limit; 200 MB in its documentation since July
/// 2025), taken here as 20,000,000 bytes, the smaller reading of "20 MB".
pub const MAX_STREAMED_RESPONSE_BYTES: usize = 20_000_000;

/// How a function's responses reach Lambda.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    Buffered,
    Streamed,
}

impl ResponseMode {
    /// Lambda's limit on a response of this mode.
    pub const fn limit(self) -> usize {
        match self {
            Self::Buffered => MAX_BUFFERED_RESPONSE_BYTES,
            Self::Streamed => MAX_STREAMED_RESPONSE_BYTES,
        }
    }
}

impl std::fmt::Display for ResponseMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Buffered => "buffered",
            Self::Streamed => "streamed",
        })
    }
}

/// A response Lambda would refuse to deliver: the function answers this instead
/// (each plane maps it to its own 4xx body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("response too large for AWS Lambda: {bytes} bytes (the limit is {limit} bytes for a {mode} response)")]
pub struct ResponseTooLarge {
    pub mode: ResponseMode,
    /// The response's size as Lambda counts it (an upper bound for a buffered one).
    pub bytes: usize,
    pub limit: usize,
}

/// What the runtime answers for the function, in the plane's error format (it
/// must be small): a 4xx naming the limit instead of a response Lambda would
/// refuse, or a 403 for a request that did not come through the distribution.
pub type Refusal<B> = fn(&Refused) -> Response<B>;

/// What the runtime refuses on a function's behalf.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    TooLarge(#[from] ResponseTooLarge),
    /// The origin check ([`OriginCheck`]) failed.
    #[error("requests are served through the deployment's domain only")]
    NotThroughEdge,
}

/// The header CloudFront adds to every request it sends to an origin (the HTTP
/// API, the function URLs), with the deployment's origin secret as its value.
pub const ORIGIN_SECRET_HEADER: &str = "x-subkv-origin-secret";

/// The origin check: behind CloudFront, a request that reaches a function
/// without the origin secret came around the distribution (the HTTP API's own
/// endpoint, a function URL) and skipped its TLS policy, WAF and throttling.
/// Compared in constant time; never logged.
pub struct OriginCheck {
    secret: Option<Vec<u8>>,
}

impl OriginCheck {
    /// From [`var::ORIGIN_SECRET`](crate::config::var::ORIGIN_SECRET): unset or
    /// empty admits every request (the local stack).
    pub fn from_env(env: &crate::config::Env) -> Self {
        Self::new(env.string(crate::config::var::ORIGIN_SECRET))
    }

    pub fn new(secret: Option<String>) -> Self {
        Self {
            secret: secret.filter(|s| !s.is_empty()).map(String::into_bytes),
        }
    }

    /// Whether a request with `headers` may be served.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        use subtle::ConstantTimeEq;
        let Some(secret) = &self.secret else {
            return true;
        };
        headers
            .get(ORIGIN_SECRET_HEADER)
            .is_some_and(|got| bool::from(got.as_bytes().ct_eq(secret)))
    }
}

/// Bytes of `s` as a JSON string, quotes included, escaped as serde_json escapes.
fn json_string_bytes(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x09 | 0x0a | 0x0c | 0x0d => 2,
            0x00..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The headers as JSON members (`"name":"value",`) each.
fn headers_json_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| {
            json_string_bytes(name.as_str())
                + json_string_bytes(&String::from_utf8_lossy(value.as_bytes()))
                + 4
        })
        .sum()
}

/// Room for the fixed members of a buffered response's JSON (`statusCode`,
/// `isBase64Encoded`, `cookies`, the empty `multiValueHeaders`, braces, commas).
const BUFFERED_ENVELOPE_BYTES: usize = 256;

/// The size of `response` as Lambda counts a buffered response: an upper bound of
/// the JSON document lambda_http sends for it (a unit test checks the bound
/// against lambda_http's own serialization). The headers are counted twice, so
/// that the bound also holds for payload shapes that repeat them
/// (`multiValueHeaders`).
pub fn buffered_response_bytes(response: &Response<Body>) -> usize {
    let body = match response.body() {
        Body::Text(text) => json_string_bytes(text),
        Body::Binary(bytes) => 2 + bytes.len().div_ceil(3) * 4,
        // Empty, and whatever else lambda_http sends as no body: `null`.
        _ => 4,
    };
    BUFFERED_ENVELOPE_BYTES + 2 * headers_json_bytes(response.headers()) + body
}

/// Room for the fixed members of a streamed response's head (`statusCode`,
/// `cookies`, braces) and the `content-type` lambda_runtime adds when there is none.
const STREAMED_HEAD_ENVELOPE_BYTES: usize = 128;

/// The bytes a streamed response's head takes before its body, as Lambda counts
/// them: an upper bound of the JSON prelude lambda_runtime sends (status, headers,
/// cookies) and the 8 NUL bytes after it.
pub fn streamed_head_bytes(headers: &HeaderMap) -> usize {
    STREAMED_HEAD_ENVELOPE_BYTES + headers_json_bytes(headers) + 8
}

/// `response`, or what the function answers instead if Lambda would refuse it.
fn fit_buffered(
    function: &str,
    response: Response<Body>,
    too_large: Refusal<Body>,
) -> Response<Body> {
    let bytes = buffered_response_bytes(&response);
    if bytes <= MAX_BUFFERED_RESPONSE_BYTES {
        return response;
    }
    let err = ResponseTooLarge {
        mode: ResponseMode::Buffered,
        bytes,
        limit: MAX_BUFFERED_RESPONSE_BYTES,
    };
    let replacement = too_large(&Refused::TooLarge(err.clone()));
    tracing::warn!(route = function, status = replacement.status().as_u16(), error = %err, "response replaced");
    replacement
}

/// A streamed body held to what is left of Lambda's limit once the head is sent.
/// A body whose length is known is checked before anything is sent (see
/// [`fit_streamed`]); one whose length is not (a watch, which sends a message at
/// a time) ends before the first chunk that would go past the limit, so every
/// chunk sent is whole. Such a body must be made of self-contained chunks.
pub struct Capped<B> {
    inner: B,
    left: usize,
    ended: bool,
    function: &'static str,
}

impl<B> Capped<B> {
    pub fn new(function: &'static str, inner: B, left: usize) -> Self {
        Self {
            inner,
            left,
            ended: false,
            function,
        }
    }
}

impl<B> http_body::Body for Capped<B>
where
    B: http_body::Body + Unpin,
    B::Data: Into<Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Ready(Some(Err(err))) => return Poll::Ready(Some(Err(err))),
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let data: Bytes = match frame.into_data() {
            Ok(data) => data.into(),
            Err(other) => return Poll::Ready(Some(Ok(other.map_data(Into::into)))),
        };
        if data.len() > self.left {
            self.ended = true;
            tracing::warn!(
                route = self.function,
                limit = MAX_STREAMED_RESPONSE_BYTES,
                "streamed response ended before Lambda's limit"
            );
            return Poll::Ready(None);
        }
        self.left -= data.len();
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `response` held to Lambda's streamed limit: replaced (before anything is sent)
/// if its body's length is known and too large, else capped.
fn fit_streamed<B: http_body::Body>(
    function: &'static str,
    response: Response<B>,
    too_large: Refusal<B>,
) -> Response<Capped<B>> {
    let head = streamed_head_bytes(response.headers());
    let bytes = response
        .body()
        .size_hint()
        .exact()
        .map(|body| head + body as usize);
    let response = match bytes {
        Some(bytes) if bytes > MAX_STREAMED_RESPONSE_BYTES => {
            let err = ResponseTooLarge {
                mode: ResponseMode::Streamed,
                bytes,
                limit: MAX_STREAMED_RESPONSE_BYTES,
            };
            let replacement = too_large(&Refused::TooLarge(err.clone()));
            tracing::warn!(route = function, status = replacement.status().as_u16(), error = %err, "response replaced");
            replacement
        }
        _ => response,
    };
    let left = MAX_STREAMED_RESPONSE_BYTES.saturating_sub(streamed_head_bytes(response.headers()));
    response.map(|body| Capped::new(function, body, left))
}

/// The whole of an HTTP function's `main`: its state built once, then each request
/// that passes the [`OriginCheck`] through `handler`, which never fails (errors are
/// responses). A request refused by the check, or a response Lambda would refuse,
/// becomes `refusal`'s.
pub async fn serve_http<S, E, H, Fut>(
    function: &'static str,
    build: impl Future<Output = Result<S, E>>,
    handler: H,
    refusal: Refusal<Body>,
) -> Result<(), lambda_runtime::Error>
where
    S: Send + Sync + 'static,
    E: std::fmt::Display,
    H: Fn(Arc<S>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let state = cold_start(function, build).await?;
    let origin = Arc::new(OriginCheck::from_env(&crate::config::Env::process()));
    let handler = Arc::new(handler);
    lambda_http::run(lambda_http::service_fn(move |request: Request| {
        let (state, handler, origin) = (state.clone(), handler.clone(), origin.clone());
        async move {
            if !origin.admits(request.headers()) {
                return Ok::<_, Infallible>(refuse_origin(function, refusal));
            }
            let response = handler(state, request).await;
            Ok::<_, Infallible>(fit_buffered(function, response, refusal))
        }
    }))
    .await
}

/// The answer to a request the [`OriginCheck`] refuses, logged as a request.
fn refuse_origin<B>(function: &'static str, refusal: Refusal<B>) -> Response<B> {
    let response = refusal(&Refused::NotThroughEdge);
    tracing::warn!(
        route = function,
        status = response.status().as_u16(),
        "request refused: not through the distribution"
    );
    response
}

/// [`serve_http`] for a function whose responses stream (Lambda response
/// streaming). A response whose body length is known and too large becomes
/// `refusal`'s before anything is sent; one of unknown length is [`Capped`].
pub async fn serve_http_streaming<S, E, H, Fut, B>(
    function: &'static str,
    build: impl Future<Output = Result<S, E>>,
    handler: H,
    refusal: Refusal<B>,
) -> Result<(), lambda_runtime::Error>
where
    S: Send + Sync + 'static,
    E: std::fmt::Display,
    H: Fn(Arc<S>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Into<bytes::Bytes> + Send,
    B::Error: Into<lambda_runtime::Error> + Send + std::fmt::Debug,
{
    let state = cold_start(function, build).await?;
    let origin = Arc::new(OriginCheck::from_env(&crate::config::Env::process()));
    let handler = Arc::new(handler);
    lambda_http::run_with_streaming_response(lambda_http::service_fn(move |request: Request| {
        let (state, handler, origin) = (state.clone(), handler.clone(), origin.clone());
        async move {
            if !origin.admits(request.headers()) {
                let refused = refuse_origin(function, refusal);
                return Ok::<_, Infallible>(fit_streamed(function, refused, refusal));
            }
            let response = handler(state, request).await;
            Ok::<_, Infallible>(fit_streamed(function, response, refusal))
        }
    }))
    .await
}

/// The whole of an event-driven function's `main` (stream batches, schedules).
pub async fn serve_events<S, E, H, Fut, In, Out>(
    function: &'static str,
    build: impl Future<Output = Result<S, E>>,
    handler: H,
) -> Result<(), lambda_runtime::Error>
where
    S: Send + Sync + 'static,
    E: std::fmt::Display,
    H: Fn(Arc<S>, LambdaEvent<In>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, lambda_runtime::Error>> + Send + 'static,
    In: DeserializeOwned + Send + 'static,
    Out: Serialize + Send + 'static,
{
    let state = cold_start(function, build).await?;
    let handler = Arc::new(handler);
    lambda_runtime::run(lambda_runtime::service_fn(move |event: LambdaEvent<In>| {
        let (state, handler) = (state.clone(), handler.clone());
        async move { handler(state, event).await }
    }))
    .await
}

/// The one log line of a request: `request` (or `request failed` for a 5xx, at
/// error level, with the error's detail, which never reaches the client).
pub struct RequestLog<'a> {
    pub function: &'a str,
    pub status: u16,
    pub elapsed_us: u64,
    /// The calling organization, when the request was authenticated as one.
    pub organization: Option<Uuid>,
    /// The error code the client saw (management API).
    pub code: Option<&'a str>,
    /// What went wrong, for the log only.
    pub error: Option<&'a str>,
}

impl RequestLog<'_> {
    pub fn emit(&self) {
        let organization = self.organization.map(tracing::field::display);
        if self.status >= 500 {
            tracing::error!(
                route = self.function,
                status = self.status,
                elapsed_us = self.elapsed_us,
                organization,
                code = self.code,
                error = self.error,
                "request failed"
            );
        } else {
            tracing::info!(
                route = self.function,
                status = self.status,
                elapsed_us = self.elapsed_us,
                organization,
                code = self.code,
                error = self.error,
                "request"
            );
        }
    }
}

/// `scheme://host` of the request as the client addressed it (API Gateway and
/// CloudFront set `x-forwarded-proto`; a local server does not, so `http`).
/// `None` without a `Host`.
pub fn origin(request: &Request) -> Option<String> {
    let headers = request.headers();
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().host())?;
    Some(format!("{proto}://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::BodyExt;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
    use lambda_http::http::header::{CONTENT_TYPE, SET_COOKIE};
    use lambda_http::http::HeaderValue;
    use lambda_http::lambda_runtime::MetadataPrelude;

    fn response(body: Body, headers: &[(&'static str, &str)]) -> Response<Body> {
        let mut response = Response::new(body);
        for (name, value) in headers {
            response
                .headers_mut()
                .append(*name, HeaderValue::from_str(value).unwrap());
        }
        response
    }

    /// The JSON lambda_http sends for `response` (HTTP API payload 2.0 and function
    /// URLs), built as its `LambdaResponse::from_response` builds it.
    fn sent_by_lambda_http(response: &Response<Body>) -> usize {
        let mut sent = ApiGatewayV2httpResponse::default();
        sent.status_code = response.status().as_u16().into();
        let mut headers = response.headers().clone();
        sent.cookies = headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        headers.remove(SET_COOKIE);
        sent.headers = headers;
        sent.is_base64_encoded = matches!(response.body(), Body::Binary(_));
        sent.body = match response.body() {
            Body::Empty => None,
            other => Some(other.clone()),
        };
        serde_json::to_vec(&sent).unwrap().len()
    }

    #[test]
    fn the_buffered_size_bounds_what_lambda_http_sends_closely() {
        let headers: &[(&'static str, &str)] = &[
            ("content-type", "application/json"),
            ("link", "<https://h/v1/x?page=2&limit=1>; rel=\"next\""),
            ("set-cookie", "a=b"),
        ];
        let texts = [
            String::new(),
            "plain".to_string(),
            "quotes \" and \\ backslashes, \n\r\t\u{8}\u{c} and \u{1} \u{1f} controls".to_string(),
            "unicode: é 漢字 🦀".repeat(1000),
            "{\"code\":\"x\",\"message\":\"y\"}".repeat(10_000),
        ];
        let mut bodies: Vec<Body> = texts.into_iter().map(Body::Text).collect();
        for len in [0, 1, 2, 3, 4, 5, 100, 65_536, 1_000_001] {
            bodies.push(Body::Binary((0..len).map(|i| i as u8).collect()));
        }
        bodies.push(Body::Empty);
        for body in bodies {
            for headers in [&[][..], headers] {
                let r = response(body.clone(), headers);
                let (bound, sent) = (buffered_response_bytes(&r), sent_by_lambda_http(&r));
                assert!(bound >= sent, "{bound} < {sent} for {body:?}");
                assert!(bound - sent < 512, "{bound} is loose for {sent}");
            }
        }
    }

    #[test]
    fn a_binary_body_counts_as_its_base64() {
        // 4.5 MiB of binary is 6 MiB of base64: Lambda's whole limit, and the rest
        // of the document (status, empty headers) takes 100 bytes more.
        let r = response(Body::Binary(vec![0; 4_718_592]), &[]);
        assert_eq!(sent_by_lambda_http(&r) - 4_718_592 * 4 / 3, 100);
        assert!(buffered_response_bytes(&r) > MAX_BUFFERED_RESPONSE_BYTES);
        let r = response(Body::Binary(vec![0; 4_718_592 - 1024]), &[]);
        assert!(buffered_response_bytes(&r) <= MAX_BUFFERED_RESPONSE_BYTES);
        // Deno's default list batch over 64 KiB values: 6.6 MB of protobuf, 8.7 MB
        // once base64-encoded.
        let r = response(Body::Binary(vec![0; 6_556_909]), &[]);
        assert_eq!(sent_by_lambda_http(&r), 8_742_648);
        assert!(buffered_response_bytes(&r) > MAX_BUFFERED_RESPONSE_BYTES);
    }

    fn refuse(refused: &Refused) -> Response<Body> {
        let mut r = Response::new(Body::Text(refused.to_string()));
        *r.status_mut() = match refused {
            Refused::TooLarge(_) => lambda_http::http::StatusCode::BAD_REQUEST,
            Refused::NotThroughEdge => lambda_http::http::StatusCode::FORBIDDEN,
        };
        r
    }

    fn with_header(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(ORIGIN_SECRET_HEADER, value.parse().expect("header value"));
        }
        headers
    }

    #[test]
    fn the_origin_check_admits_only_the_secret_when_one_is_set() {
        let open = OriginCheck::new(None);
        assert!(open.admits(&with_header(None)), "no secret: every request");
        assert!(OriginCheck::new(Some(String::new())).admits(&with_header(None)));

        let check = OriginCheck::new(Some("s3cr3t-value".into()));
        assert!(check.admits(&with_header(Some("s3cr3t-value"))));
        for wrong in [
            None,
            Some(""),
            Some("s3cr3t-valu"),
            Some("s3cr3t-value2"),
            Some("S3CR3T-VALUE"),
        ] {
            assert!(!check.admits(&with_header(wrong)), "{wrong:?}");
        }
        let env =
            crate::config::Env::from_pairs(&[(crate::config::var::ORIGIN_SECRET, "from-env")]);
        assert!(OriginCheck::from_env(&env).admits(&with_header(Some("from-env"))));
        assert!(!OriginCheck::from_env(&env).admits(&with_header(None)));
    }

    #[test]
    fn a_request_around_the_distribution_gets_the_planes_403() {
        let refused = refuse_origin("f", refuse);
        assert_eq!(refused.status(), 403);
        let Body::Text(text) = refused.body() else {
            panic!("text body")
        };
        assert!(text.contains("through the deployment's domain"), "{text}");
    }

    #[test]
    fn a_buffered_response_over_the_limit_becomes_the_refusal() {
        let fits = response(Body::Binary(vec![7; 4 * 1024 * 1024]), &[]);
        let kept = fit_buffered("f", fits, refuse);
        assert_eq!(kept.status(), 200);
        assert!(matches!(kept.body(), Body::Binary(b) if b.len() == 4 * 1024 * 1024));

        let over = response(Body::Binary(vec![7; 5 * 1024 * 1024]), &[]);
        let replaced = fit_buffered("f", over, refuse);
        assert_eq!(replaced.status(), 400);
        let Body::Text(text) = replaced.body() else {
            panic!("text body")
        };
        assert_eq!(
            text,
            "response too large for AWS Lambda: 6990766 bytes (the limit is 6291456 bytes for a \
             buffered response)"
        );
    }

    #[test]
    fn the_streamed_head_bounds_the_prelude_lambda_runtime_sends() {
        for headers in [
            vec![],
            vec![(CONTENT_TYPE, "application/x-protobuf")],
            vec![
                (CONTENT_TYPE, "text/plain; charset=utf-8"),
                (SET_COOKIE, "a=\"b\""),
            ],
        ] {
            let mut map = HeaderMap::new();
            for (name, value) in headers {
                map.append(name, HeaderValue::from_static(value));
            }
            // As lambda_runtime sends it: a content-type added if there is none.
            let mut prelude = MetadataPrelude {
                status_code: lambda_http::http::StatusCode::BAD_REQUEST,
                headers: map.clone(),
                cookies: vec![],
            };
            prelude
                .headers
                .entry(CONTENT_TYPE)
                .or_insert(HeaderValue::from_static("application/octet-stream"));
            let sent = serde_json::to_vec(&prelude).unwrap().len() + 8;
            let bound = streamed_head_bytes(&map);
            assert!(bound >= sent && bound - sent < 160, "{bound} vs {sent}");
        }
    }

    async fn collect(body: Capped<Body>) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_streamed_body_of_known_length_is_checked_before_anything_is_sent() {
        let headers = [("content-type", "application/x-protobuf")];
        let room = MAX_STREAMED_RESPONSE_BYTES
            - streamed_head_bytes(&response(Body::Empty, &headers).headers().clone());
        let fits = fit_streamed("f", response(Body::Binary(vec![1; room]), &headers), refuse);
        assert_eq!(fits.status(), 200);
        assert_eq!(collect(fits.into_body()).await.len(), room, "sent whole");

        let over = fit_streamed(
            "f",
            response(Body::Binary(vec![1; room + 1]), &headers),
            refuse,
        );
        assert_eq!(over.status(), 400);
        let text = String::from_utf8(collect(over.into_body()).await).unwrap();
        assert!(
            text.contains("the limit is 20000000 bytes for a streamed response"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_streamed_body_of_unknown_length_ends_before_the_chunk_past_the_limit() {
        let chunks = (0..3).map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![i; 10]))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        assert_eq!(http_body::Body::size_hint(&body).exact(), None);
        let sent = Capped::new("f", body, 25)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(sent.to_vec(), [vec![0; 10], vec![1; 10]].concat());
        // Within the limit, every chunk goes.
        let chunks = (0..3).map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![i; 10]))));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
        let sent = Capped::new("f", body, 30)
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(sent.len(), 30);
    }

    #[test]
    fn origin_from_forwarded_proto_and_host() {
        let mut r = Request::new(Body::Empty);
        *r.uri_mut() = "/v1/databases".parse().unwrap();
        assert_eq!(origin(&r), None);
        r.headers_mut()
            .insert(HOST, HeaderValue::from_static("api.example.com"));
        assert_eq!(origin(&r).as_deref(), Some("http://api.example.com"));
        r.headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(origin(&r).as_deref(), Some("https://api.example.com"));
        r.headers_mut()
            .insert("x-forwarded-proto", HeaderValue::from_static("gopher"));
        assert_eq!(origin(&r).as_deref(), Some("http://api.example.com"));
    }

    #[test]
    fn secret_bearing_libraries_stay_at_info_even_under_trace() {
        let d = directives(Some("TRACE"));
        assert!(d.starts_with("trace,"), "{d}");
        assert!(
            d.contains("lambda_runtime=info") && d.contains("aws_sdk_kms=info"),
            "{d}"
        );
        assert!(directives(None).starts_with("info,"));
        assert!(directives(Some("not a [valid filter")).starts_with("info,"));
    }
}
