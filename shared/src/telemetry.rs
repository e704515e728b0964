//! JSON logs, one object per line, as CloudWatch Logs expects from Lambda.
//! Level from `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`.

use tracing_subscriber::EnvFilter;

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
    let configured = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("AWS_LAMBDA_LOG_LEVEL").ok());
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

#[cfg(test)]
mod tests {
    use super::*;

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
