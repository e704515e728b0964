//! What every data-plane function builds once per cold start.

use std::sync::Arc;
use subkv_core::config::{var, Env};
use subkv_core::control::{ControlTable, DynamoControl};
use subkv_core::deleted::MAX_DATA_TOKEN_TTL_SECONDS;
use subkv_core::runtime::aws_config;
use subkv_core::usage::{DynamoUsage, UsageStore};
use subkv_dynamo_kv::{DynamoKv, WatchCaps};
use subkv_kv::token::{TokenSigner, DEFAULT_TTL_SECONDS, KEY_LABEL};

/// How a watch polls and how long it may last.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub max_seconds: u64,
    pub poll_ms: u64,
    pub keepalive_seconds: u64,
    /// Watches open at once: per database, per deployment.
    pub caps: WatchCaps,
}

/// The KV engine, the data-path token signer and the control table.
pub struct ConnectState {
    pub kv: DynamoKv,
    pub signer: TokenSigner,
    pub control: Arc<dyn ControlTable>,
    pub watch: WatchConfig,
    /// Organization tokens this instance saw still existing, and when: a
    /// data-path request checks its token's again once that is older than
    /// `recheck` (issue 15 §2: a revoked token stops working within a minute).
    pub live_tokens: LiveTokens,
    /// The instance's usage tally and where it is flushed (issue 15 §3).
    pub meter: Arc<crate::usage::Meter>,
    pub usage: Arc<dyn UsageStore>,
    /// Stored bytes per database (`kv-storage-usage` keeps them), for the
    /// storage quota.
    pub storage: Arc<dyn subkv_core::storage::StorageStore>,
    /// The organizations' write quotas as this instance knows them (§4).
    pub quotas: crate::quota::Quotas,
}

/// When this instance last saw each organization token still existing.
pub struct LiveTokens {
    pub recheck: std::time::Duration,
    seen: std::sync::Mutex<std::collections::HashMap<uuid::Uuid, std::time::Instant>>,
}

/// How long an instance trusts that an organization token still exists, unless
/// configured (`SUBKV_TOKEN_RECHECK_SECONDS`): under a minute, so revocation
/// takes effect within one.
pub const DEFAULT_TOKEN_RECHECK_SECONDS: u64 = 50;

impl LiveTokens {
    pub fn new(recheck: std::time::Duration) -> Self {
        Self {
            recheck,
            seen: Default::default(),
        }
    }

    /// Whether `token` was seen existing within `recheck`.
    pub fn fresh(&self, token: uuid::Uuid) -> bool {
        self.seen
            .lock()
            .map(|seen| {
                seen.get(&token)
                    .is_some_and(|at| at.elapsed() < self.recheck)
            })
            .unwrap_or(false)
    }

    pub fn saw(&self, token: uuid::Uuid) {
        if let Ok(mut seen) = self.seen.lock() {
            // Bounded: entries past `recheck` are worth nothing.
            if seen.len() >= 10_000 {
                let recheck = self.recheck;
                seen.retain(|_, at| at.elapsed() < recheck);
            }
            seen.insert(token, std::time::Instant::now());
        }
    }
}

impl ConnectState {
    /// [`Self::from_env`] for a data-plane function that meters its requests:
    /// what it holds unflushed is written when Lambda shuts the instance down
    /// (SIGTERM, which Lambda sends to a function with a registered extension:
    /// `lambda_runtime`'s graceful-shutdown helper registers a no-op one; the
    /// write has Lambda's 500 ms of shutdown).
    pub async fn serving() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let state = Self::from_env().await?;
        let (meter, usage) = (state.meter.clone(), state.usage.clone());
        lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
            let flushed = meter.flush_now(usage.as_ref()).await;
            tracing::info!(months = flushed.len(), "usage flushed at shutdown");
        })
        .await;
        Ok(state)
    }
    /// Adds what a request (or a stretch of a watch) used to the instance's
    /// tally, and flushes the tally if a flush is due, or at once if `now`
    /// (docs/usage.md).
    pub async fn count(
        &self,
        who: crate::protocol::Metered,
        counts: subkv_core::usage::Counts,
        now: bool,
    ) {
        self.meter
            .record(who.organization, who.database, chrono::Utc::now(), counts);
        let flushed = if now {
            self.meter.flush_now(self.usage.as_ref()).await
        } else {
            self.meter.flush_if_due(self.usage.as_ref()).await
        };
        for (organization, month, counts) in flushed {
            self.quotas
                .note_flushed(organization, month, counts.write_units);
        }
    }

    /// Reads the environment, builds the clients and derives the data-path token
    /// key from the KMS HMAC key (one `GenerateMac` per cold start).
    pub async fn from_env() -> Result<Self, lambda_http::Error> {
        let env = Env::process();
        let sdk = aws_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let key_id = env.required(var::DATA_TOKEN_KEY_ID, "it names the KMS HMAC key")?;
        let mac = aws_sdk_kms::Client::new(&sdk)
            .generate_mac()
            .key_id(key_id)
            .mac_algorithm(aws_sdk_kms::types::MacAlgorithmSpec::HmacSha256)
            .message(aws_sdk_kms::primitives::Blob::new(KEY_LABEL))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "deriving the data-path token key: {}",
                    aws_sdk_kms::error::DisplayErrorContext(e)
                )
            })?;
        let key: [u8; 32] = mac
            .mac
            .as_ref()
            .and_then(|m| m.as_ref().try_into().ok())
            .ok_or("GenerateMac returned no 32-byte MAC")?;
        // The engine's own client asks every call for its consumed capacity,
        // charged to the request being served (`crate::usage`).
        let metered = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(crate::usage::CapacityMeter)
                .build(),
        );
        Ok(Self {
            kv: DynamoKv::from_env(metered, &env)?,
            signer: TokenSigner::new(
                key,
                // A deleted database's mark outlives every token (`subkv_core::deleted`).
                env.number_in(
                    var::DATA_TOKEN_TTL_SECONDS,
                    1..=MAX_DATA_TOKEN_TTL_SECONDS,
                    DEFAULT_TTL_SECONDS,
                )?,
            ),
            control: Arc::new(DynamoControl::new(dynamo.clone(), env.control_table())),
            usage: Arc::new(DynamoUsage::new(dynamo.clone(), env.control_table())),
            storage: Arc::new(subkv_core::storage::DynamoStorage::new(
                dynamo,
                env.control_table(),
            )),
            quotas: crate::quota::Quotas::new(std::time::Duration::from_secs(env.number_in(
                var::QUOTA_CACHE_SECONDS,
                1..=300,
                crate::quota::DEFAULT_CACHE_SECONDS,
            )?)),
            meter: Arc::new(crate::usage::Meter::new(std::time::Duration::from_secs(
                env.number_in(
                    var::USAGE_FLUSH_SECONDS,
                    1..=3600,
                    crate::usage::DEFAULT_FLUSH_SECONDS,
                )?,
            ))),
            live_tokens: LiveTokens::new(std::time::Duration::from_secs(env.number_in(
                var::TOKEN_RECHECK_SECONDS,
                1..=55,
                DEFAULT_TOKEN_RECHECK_SECONDS,
            )?)),
            watch: WatchConfig {
                max_seconds: env.number(var::WATCH_MAX_SECONDS, 600)?,
                poll_ms: env.number(var::WATCH_POLL_MS, 250)?,
                keepalive_seconds: 5,
                caps: WatchCaps {
                    per_database: env.number(var::WATCH_MAX_PER_DATABASE, 50)?,
                    per_deployment: env.number(var::WATCH_MAX_PER_DEPLOYMENT, 500)?,
                },
            },
        })
    }
}
