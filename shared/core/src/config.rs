//! Configuration from the environment: every variable any function reads is named
//! in [`var`], and read through one typed parser, [`Env`], with one rule for
//! booleans and one for numbers. A function reads its configuration once, at cold
//! start, and refuses to start on a value it cannot parse.

use crate::auth::{parse_sha256_hex, token_sha256};
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Environment variables, by plane.
pub mod var {
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
    /// The secret CloudFront adds to every request it sends to an origin
    /// ([`crate::runtime::ORIGIN_SECRET_HEADER`]); set, a request without it is
    /// refused (403). Unset on the local stack, which has no distribution.
    pub const ORIGIN_SECRET: &str = "SUBKV_ORIGIN_SECRET";

    /// KV data table.
    pub const KV_DATA_TABLE: &str = "SUBKV_KV_DATA_TABLE";
    /// KV change log table.
    pub const KV_LOG_TABLE: &str = "SUBKV_KV_LOG_TABLE";
    /// How long change records stay in the change log (DynamoDB TTL); the backup
    /// engine reads it too, to tell an expired log from an idle one.
    pub const KV_LOG_RETENTION_SECONDS: &str = "SUBKV_KV_LOG_RETENTION_SECONDS";
    /// KMS HMAC key (id, ARN or alias) the data-path token key is derived from.
    pub const DATA_TOKEN_KEY_ID: &str = "SUBKV_DATA_TOKEN_KEY_ID";
    pub const DATA_TOKEN_TTL_SECONDS: &str = "SUBKV_DATA_TOKEN_TTL_SECONDS";
    pub const WATCH_MAX_SECONDS: &str = "SUBKV_WATCH_MAX_SECONDS";
    pub const WATCH_POLL_MS: &str = "SUBKV_WATCH_POLL_MS";
    /// Watches open at once on one database, and on the whole deployment.
    pub const WATCH_MAX_PER_DATABASE: &str = "SUBKV_WATCH_MAX_PER_DATABASE";
    pub const WATCH_MAX_PER_DEPLOYMENT: &str = "SUBKV_WATCH_MAX_PER_DEPLOYMENT";
    /// How long one run of the expiry sweeper sweeps, seconds (the local stack
    /// shortens it: its scheduler runs the functions one after another).
    pub const SWEEP_BUDGET_SECONDS: &str = "SUBKV_SWEEP_BUDGET_SECONDS";
    /// How long a data-path function trusts that an organization token it saw
    /// still exists (seconds, 1 to 55: revocation takes effect within a minute).
    pub const TOKEN_RECHECK_SECONDS: &str = "SUBKV_TOKEN_RECHECK_SECONDS";
    /// How often a data-plane instance flushes its usage tally (seconds, 1 to
    /// 3,600).
    pub const USAGE_FLUSH_SECONDS: &str = "SUBKV_USAGE_FLUSH_SECONDS";
    /// How long a data-plane instance trusts an organization's limits and
    /// month of usage (seconds, 1 to 300).
    pub const QUOTA_CACHE_SECONDS: &str = "SUBKV_QUOTA_CACHE_SECONDS";
    /// How long a run of `kv-purge-deleted` purges (seconds).
    pub const PURGE_BUDGET_SECONDS: &str = "SUBKV_PURGE_BUDGET_SECONDS";
    /// How long a deleted database stays on the purge's list (seconds).
    pub const PURGE_SETTLE_SECONDS: &str = "SUBKV_PURGE_SETTLE_SECONDS";
    /// Databases the expiry sweeper sweeps at once.
    pub const SWEEP_CONCURRENCY: &str = "SUBKV_SWEEP_CONCURRENCY";

    /// Data-table items per backup snapshot chunk (1 to 1000).
    pub const BACKUP_SNAPSHOT_ITEMS: &str = "SUBKV_BACKUP_SNAPSHOT_ITEMS";
    /// How long the backup engine trusts that a database has no backup (0 to
    /// 600 s; the local stack shortens it so its tests see backups settle).
    pub const BACKUP_ABSENT_TTL_SECONDS: &str = "SUBKV_BACKUP_ABSENT_TTL_SECONDS";
    /// How long one run of `restore-database` restores at most, seconds (1 to
    /// 840; the local stack shortens it so restores take several runs).
    pub const RESTORE_BUDGET_SECONDS: &str = "SUBKV_RESTORE_BUDGET_SECONDS";
    /// Keys a restore writes per step, the unit of progress saved (1 to 1000).
    pub const RESTORE_STEP_WRITES: &str = "SUBKV_RESTORE_STEP_WRITES";
}

pub const DEFAULT_CONTROL_TABLE: &str = "subkv-control";
/// The KV data table's name unless `SUBKV_KV_DATA_TABLE` says otherwise.
pub const DEFAULT_KV_DATA_TABLE: &str = "subkv-kv-data";

/// A variable that is set but cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{name} is not valid: {why}")]
pub struct ConfigError {
    pub name: &'static str,
    pub why: String,
}

type Lookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The environment, read through typed getters. An empty value counts as unset.
pub struct Env {
    lookup: Lookup,
}

impl Env {
    /// The process environment.
    pub fn process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Any source of values (tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    /// Fixed pairs (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::from_lookup(move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    /// The value, trimmed of nothing; `None` when unset or empty.
    pub fn string(&self, name: &str) -> Option<String> {
        (self.lookup)(name).filter(|v| !v.is_empty())
    }

    pub fn string_or(&self, name: &str, default: &str) -> String {
        self.string(name).unwrap_or_else(|| default.to_string())
    }

    /// A value the function cannot start without.
    pub fn required(&self, name: &'static str, what: &str) -> Result<String, ConfigError> {
        self.string(name).ok_or_else(|| ConfigError {
            name,
            why: format!("must be set: {what}"),
        })
    }

    /// The one rule for booleans: `true`/`1` or `false`/`0` (any case); unset is
    /// `default`; anything else is an error rather than a guess.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.string(name).map(|v| v.trim().to_ascii_lowercase()) {
            None => Ok(default),
            Some(v) if v == "true" || v == "1" => Ok(true),
            Some(v) if v == "false" || v == "0" => Ok(false),
            Some(v) => Err(ConfigError {
                name,
                why: format!("expected true or false, got {v:?}"),
            }),
        }
    }

    /// A number; unset is `default`.
    pub fn number<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError> {
        match self.string(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| ConfigError {
                name,
                why: format!("must be a number, got {v:?}"),
            }),
        }
    }

    /// A number within `range`; unset is `default`.
    pub fn number_in<T>(
        &self,
        name: &'static str,
        range: RangeInclusive<T>,
        default: T,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
    {
        let value = self.number(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError {
                name,
                why: format!(
                    "must be a number from {} to {}, got {value}",
                    range.start(),
                    range.end()
                ),
            })
        }
    }

    /// The control table's name.
    pub fn control_table(&self) -> String {
        self.string_or(var::CONTROL_TABLE, DEFAULT_CONTROL_TABLE)
    }

    /// Whether backup endpoints may be `http` or non-public (development only).
    pub fn allow_insecure_endpoints(&self) -> Result<bool, ConfigError> {
        self.flag(var::ALLOW_INSECURE_ENDPOINTS, false)
    }
}

/// The management plane's settings.
#[derive(Clone)]
pub struct Config {
    pub control_table: String,
    /// The KV data table (delete-database marks a deleted database's head there).
    pub kv_data_table: String,
    /// None: no admin token is configured, so the admin routes refuse everyone.
    pub admin_token_sha256: Option<[u8; 32]>,
    pub backup_kms_key_id: Option<String>,
    pub allow_insecure_endpoints: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("control_table", &self.control_table)
            .field("kv_data_table", &self.kv_data_table)
            .field("admin_token_configured", &self.admin_token_sha256.is_some())
            .field("backup_kms_key_id", &self.backup_kms_key_id)
            .field("allow_insecure_endpoints", &self.allow_insecure_endpoints)
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&Env::process())
    }

    pub fn read(env: &Env) -> Result<Self, ConfigError> {
        let admin_token_sha256 = match (
            env.string(var::ADMIN_TOKEN_SHA256),
            env.string(var::ADMIN_TOKEN),
        ) {
            (Some(hex), _) => Some(parse_sha256_hex(&hex).ok_or(ConfigError {
                name: var::ADMIN_TOKEN_SHA256,
                why: "expected 64 hex digits".into(),
            })?),
            (None, Some(token)) => Some(token_sha256(token.trim())),
            (None, None) => None,
        };
        Ok(Self {
            control_table: env.control_table(),
            kv_data_table: env.string_or(var::KV_DATA_TABLE, DEFAULT_KV_DATA_TABLE),
            admin_token_sha256,
            backup_kms_key_id: env.string(var::BACKUP_KMS_KEY_ID),
            allow_insecure_endpoints: env.allow_insecure_endpoints()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_token_from_hash_or_plaintext() {
        let c = Config::read(&Env::from_pairs(&[(var::ADMIN_TOKEN, "t0k")])).unwrap();
        assert_eq!(c.admin_token_sha256, Some(token_sha256("t0k")));
        let hex = crate::auth::hex(&token_sha256("other"));
        let c = Config::read(&Env::from_pairs(&[
            (var::ADMIN_TOKEN_SHA256, &hex),
            (var::ADMIN_TOKEN, "t0k"),
        ]))
        .unwrap();
        assert_eq!(c.admin_token_sha256, Some(token_sha256("other")));
        assert!(!format!("{c:?}").contains(&hex));
        assert!(Config::read(&Env::from_pairs(&[(var::ADMIN_TOKEN_SHA256, "nothex")])).is_err());
        let c = Config::read(&Env::from_pairs(&[])).unwrap();
        assert_eq!(c.admin_token_sha256, None);
        assert_eq!(c.control_table, DEFAULT_CONTROL_TABLE);
        assert!(!c.allow_insecure_endpoints);
    }

    #[test]
    fn insecure_endpoints_need_an_explicit_true() {
        let c = Config::read(&Env::from_pairs(&[(var::ALLOW_INSECURE_ENDPOINTS, "true")])).unwrap();
        assert!(c.allow_insecure_endpoints);
        assert!(Config::read(&Env::from_pairs(&[(var::ALLOW_INSECURE_ENDPOINTS, "yes")])).is_err());
    }

    #[test]
    fn one_rule_for_booleans() {
        const V: &str = "SOME_FLAG";
        for (value, expected) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("false", false),
            ("0", false),
            ("", false),
        ] {
            let env = Env::from_pairs(&[(V, value)]);
            assert_eq!(env.flag(V, false).unwrap(), expected, "{value:?}");
        }
        assert!(Env::from_pairs(&[]).flag(V, true).unwrap());
        for bad in ["yes", "no", "on", "2"] {
            let err = Env::from_pairs(&[(V, bad)]).flag(V, false).unwrap_err();
            assert!(err.to_string().contains(V), "{err}");
        }
    }

    #[test]
    fn numbers_parse_or_name_the_variable() {
        const V: &str = "SOME_NUMBER";
        assert_eq!(Env::from_pairs(&[]).number(V, 7u64).unwrap(), 7);
        assert_eq!(Env::from_pairs(&[(V, "42")]).number(V, 7u64).unwrap(), 42);
        assert_eq!(Env::from_pairs(&[(V, "")]).number(V, 7u64).unwrap(), 7);
        let err = Env::from_pairs(&[(V, "ten")]).number(V, 7u64).unwrap_err();
        assert!(err.to_string().contains(V) && err.to_string().contains("ten"));
        let env = Env::from_pairs(&[(V, "1001")]);
        assert!(env.number_in(V, 1..=1000, 1000usize).is_err());
        let env = Env::from_pairs(&[(V, "8")]);
        assert_eq!(env.number_in(V, 1..=1000, 1000usize).unwrap(), 8);
        assert!(Env::from_pairs(&[(V, "0")])
            .number_in(V, 1..=1000, 1000usize)
            .is_err());
    }

    #[test]
    fn required_values_say_what_they_are_for() {
        let err = Env::from_pairs(&[])
            .required(var::DATA_TOKEN_KEY_ID, "the KMS HMAC key")
            .unwrap_err();
        assert!(err.to_string().contains(var::DATA_TOKEN_KEY_ID));
        assert!(err.to_string().contains("KMS HMAC key"));
    }
}
