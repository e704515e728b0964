//! The HTTP client every tenant's [`super::Bucket`] shares, and the SSRF rules it
//! keeps after DNS: its resolver drops every address [`is_allowed_ip`] rejects
//! (only public ones; also loopback ones for the local stack), and a resolver refusal
//! is never retried.

use aws_sdk_s3::config::interceptors::InterceptorContext;
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_s3::config::SharedHttpClient;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::retries::classifiers::RetryClassifierPriority;
use std::error::Error as StdError;
use std::net::{IpAddr, ToSocketAddrs};
use subkv_core::config::{ConfigError, Env};
use subkv_core::validate::is_allowed_ip;

/// The HTTP client every [`Bucket`] shares; build it once per cold start.
#[derive(Clone, Debug)]
pub struct Connector {
    pub(super) http: SharedHttpClient,
    pub(super) allow_private: bool,
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

    /// `SUBKV_ALLOW_INSECURE_ENDPOINTS=true` (or `1`) allows loopback endpoints
    /// (the local emulator), as the management API does; never other non-public
    /// ones. Anything else allows public ones only.
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
pub(super) struct PublicOnlyResolver {
    pub(super) allow_private: bool,
}

/// Every address the endpoint's host resolved to was non-public.
#[derive(Debug, thiserror::Error)]
#[error("endpoint {host} resolves to a non-public address")]
pub(super) struct NonPublicAddress {
    pub(super) host: String,
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

pub(super) fn allowed_addresses(addrs: Vec<IpAddr>, allow_private: bool) -> Vec<IpAddr> {
    addrs
        .into_iter()
        .filter(|ip| is_allowed_ip(*ip, allow_private))
        .collect()
}

/// An error and its sources, outermost first.
pub(super) fn chain<'a>(
    err: &'a (dyn StdError + 'static),
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(Some(err), |&e| match e.downcast_ref::<std::io::Error>() {
        // io::Error::source skips its payload: step into the payload itself.
        Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
        None => e.source(),
    })
}

/// The resolver's refusal, wherever it sits in an error's chain.
pub(super) fn find_non_public<'a>(
    err: &'a (dyn StdError + 'static),
) -> Option<&'a NonPublicAddress> {
    chain(err).find_map(|e| e.downcast_ref::<NonPublicAddress>())
}

/// A resolver refusal is final: the SDK would otherwise retry it as an I/O error.
#[derive(Debug)]
pub(super) struct NonPublicIsFinal;

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
