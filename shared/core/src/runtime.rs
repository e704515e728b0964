//! The runtime every function shares: JSON logs (one object per line, as
//! CloudWatch Logs expects from Lambda), the cold start (state built once, the
//! AWS SDK configuration loaded once), one `serve` for HTTP routes, one for
//! streamed HTTP responses, one for events, and the one request log line.
//!
//! Log level from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`.

use lambda_http::http::header::HOST;
use lambda_http::lambda_runtime::{self, LambdaEvent};
use lambda_http::{Body, Request, Response};
use serde::{de::DeserializeOwned, Serialize};
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
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

/// The whole of an HTTP function's `main`: its state built once, then each request
/// through `handler`, which never fails (errors are responses).
pub async fn serve_http<S, E, H, Fut>(
    function: &'static str,
    build: impl Future<Output = Result<S, E>>,
    handler: H,
) -> Result<(), lambda_runtime::Error>
where
    S: Send + Sync + 'static,
    E: std::fmt::Display,
    H: Fn(Arc<S>, Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let state = cold_start(function, build).await?;
    let handler = Arc::new(handler);
    lambda_http::run(lambda_http::service_fn(move |request: Request| {
        let (state, handler) = (state.clone(), handler.clone());
        async move { Ok::<_, Infallible>(handler(state, request).await) }
    }))
    .await
}

/// [`serve_http`] for a function whose responses stream (Lambda response streaming).
pub async fn serve_http_streaming<S, E, H, Fut, B>(
    function: &'static str,
    build: impl Future<Output = Result<S, E>>,
    handler: H,
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
    let handler = Arc::new(handler);
    lambda_http::run_with_streaming_response(lambda_http::service_fn(move |request: Request| {
        let (state, handler) = (state.clone(), handler.clone());
        async move { Ok::<_, Infallible>(handler(state, request).await) }
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

    use lambda_http::http::HeaderValue;

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
