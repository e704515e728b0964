//! Configuration and the clients a function builds once per cold start.

use crate::auth::{parse_sha256_hex, token_sha256};
use crate::secrets::{KmsSealer, NoSealer, SecretSealer};
use crate::store::{dynamo::DynamoStore, ControlStore};
use std::sync::Arc;

/// Environment variables a function reads at cold start.
pub mod env {
    /// DynamoDB table of the management plane.
    pub const CONTROL_TABLE: &str = "SUBKV_CONTROL_TABLE";
    /// SHA-256 (hex) of the operator's admin token: what the AWS deployment sets.
    pub const ADMIN_TOKEN_SHA256: &str = "SUBKV_ADMIN_TOKEN_SHA256";
    /// The admin token itself: for local development only.
    pub const ADMIN_TOKEN: &str = "SUBKV_ADMIN_TOKEN";
    /// KMS key (id, ARN or alias) that encrypts backup secrets.
    pub const BACKUP_KMS_KEY_ID: &str = "SUBKV_BACKUP_KMS_KEY_ID";
    /// `true` accepts `http` and local backup endpoints: development only.
    pub const ALLOW_INSECURE_ENDPOINTS: &str = "SUBKV_ALLOW_INSECURE_ENDPOINTS";
}

pub const DEFAULT_CONTROL_TABLE: &str = "subkv-control";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not valid: {why}")]
    Invalid { name: &'static str, why: String },
}

#[derive(Clone)]
pub struct Config {
    pub control_table: String,
    /// None: no admin token is configured, so the admin routes refuse everyone.
    pub admin_token_sha256: Option<[u8; 32]>,
    pub backup_kms_key_id: Option<String>,
    pub allow_insecure_endpoints: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("control_table", &self.control_table)
            .field("admin_token_configured", &self.admin_token_sha256.is_some())
            .field("backup_kms_key_id", &self.backup_kms_key_id)
            .field("allow_insecure_endpoints", &self.allow_insecure_endpoints)
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let admin_token_sha256 = match (get(env::ADMIN_TOKEN_SHA256), get(env::ADMIN_TOKEN)) {
            (Some(hex), _) => Some(parse_sha256_hex(&hex).ok_or(ConfigError::Invalid {
                name: env::ADMIN_TOKEN_SHA256,
                why: "expected 64 hex digits".into(),
            })?),
            (None, Some(token)) => Some(token_sha256(token.trim())),
            (None, None) => None,
        };
        let allow_insecure_endpoints = match get(env::ALLOW_INSECURE_ENDPOINTS).as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: env::ALLOW_INSECURE_ENDPOINTS,
                    why: format!("expected true or false, got {other:?}"),
                })
            }
        };
        Ok(Self {
            control_table: get(env::CONTROL_TABLE)
                .unwrap_or_else(|| DEFAULT_CONTROL_TABLE.to_string()),
            admin_token_sha256,
            backup_kms_key_id: get(env::BACKUP_KMS_KEY_ID),
            allow_insecure_endpoints,
        })
    }
}

/// What every handler gets: configuration and clients, built once per cold start.
pub struct App {
    pub config: Config,
    pub store: Arc<dyn ControlStore>,
    pub sealer: Arc<dyn SecretSealer>,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<dyn ControlStore>,
        sealer: Arc<dyn SecretSealer>,
    ) -> Self {
        Self {
            config,
            store,
            sealer,
        }
    }

    /// Reads the environment and builds the AWS clients. The SDK honours
    /// `AWS_ENDPOINT_URL`, which is how the local stack points it at the emulator.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let store = Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            config.control_table.clone(),
        ));
        let sealer: Arc<dyn SecretSealer> = match &config.backup_kms_key_id {
            Some(key) => Arc::new(KmsSealer::new(aws_sdk_kms::Client::new(&sdk), key)),
            None => Arc::new(NoSealer),
        };
        Ok(Self::new(config, store, sealer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn admin_token_from_hash_or_plaintext() {
        let c = Config::from_lookup(lookup(&[(env::ADMIN_TOKEN, "t0k")])).unwrap();
        assert_eq!(c.admin_token_sha256, Some(token_sha256("t0k")));
        let hex = crate::auth::hex(&token_sha256("other"));
        let c = Config::from_lookup(lookup(&[
            (env::ADMIN_TOKEN_SHA256, &hex),
            (env::ADMIN_TOKEN, "t0k"),
        ]))
        .unwrap();
        assert_eq!(c.admin_token_sha256, Some(token_sha256("other")));
        assert!(!format!("{c:?}").contains(&hex));
        assert!(Config::from_lookup(lookup(&[(env::ADMIN_TOKEN_SHA256, "nothex")])).is_err());
        let c = Config::from_lookup(lookup(&[])).unwrap();
        assert_eq!(c.admin_token_sha256, None);
        assert_eq!(c.control_table, DEFAULT_CONTROL_TABLE);
        assert!(!c.allow_insecure_endpoints);
    }

    #[test]
    fn insecure_endpoints_need_an_explicit_true() {
        let c = Config::from_lookup(lookup(&[(env::ALLOW_INSECURE_ENDPOINTS, "true")])).unwrap();
        assert!(c.allow_insecure_endpoints);
        assert!(Config::from_lookup(lookup(&[(env::ALLOW_INSECURE_ENDPOINTS, "yes")])).is_err());
    }
}
