//! `subkv-local bootstrap`: creates what the functions expect in the emulator
//! (the control table, the KV data and change-log tables, and the KMS keys).
//! Idempotent; reads the same `AWS_ENDPOINT_URL` and `SUBKV_*` variables as the
//! functions.

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use subkv::app::{env, DEFAULT_CONTROL_TABLE};
use subkv::kv::protocol::env as kv_env;
use subkv::kv::store::{ensure_kv_tables, DEFAULT_DATA_TABLE, DEFAULT_LOG_TABLE};
use subkv::store::dynamo::ensure_control_table;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn ensure_kms_alias(
    client: &aws_sdk_kms::Client,
    alias: &str,
    usage: KeyUsageType,
    spec: KeySpec,
) -> Result<(), Error> {
    if client.describe_key().key_id(alias).send().await.is_ok() {
        return Ok(());
    }
    let key = client
        .create_key()
        .description(format!("subkv {alias} (local)"))
        .key_usage(usage)
        .key_spec(spec)
        .send()
        .await?;
    let key_id = key
        .key_metadata
        .map(|m| m.key_id)
        .ok_or("CreateKey returned no key")?;
    client
        .create_alias()
        .alias_name(alias)
        .target_key_id(key_id)
        .send()
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let command = std::env::args().nth(1).unwrap_or_default();
    if command != "bootstrap" {
        return Err("usage: subkv-local bootstrap".into());
    }
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = std::env::var(env::CONTROL_TABLE).unwrap_or_else(|_| DEFAULT_CONTROL_TABLE.into());
    ensure_control_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await?;
    let alias = std::env::var(env::BACKUP_KMS_KEY_ID).map_err(|_| {
        format!(
            "{} must name the KMS alias to create",
            env::BACKUP_KMS_KEY_ID
        )
    })?;
    let kms = aws_sdk_kms::Client::new(&sdk);
    ensure_kms_alias(
        &kms,
        &alias,
        KeyUsageType::EncryptDecrypt,
        KeySpec::SymmetricDefault,
    )
    .await?;
    let data_table =
        std::env::var(kv_env::DATA_TABLE).unwrap_or_else(|_| DEFAULT_DATA_TABLE.into());
    let log_table = std::env::var(kv_env::LOG_TABLE).unwrap_or_else(|_| DEFAULT_LOG_TABLE.into());
    ensure_kv_tables(
        &aws_sdk_dynamodb::Client::new(&sdk),
        &data_table,
        &log_table,
    )
    .await?;
    let token_key = std::env::var(kv_env::TOKEN_KEY_ID)
        .map_err(|_| format!("{} must name the KMS alias to create", kv_env::TOKEN_KEY_ID))?;
    ensure_kms_alias(
        &kms,
        &token_key,
        KeyUsageType::GenerateVerifyMac,
        KeySpec::Hmac256,
    )
    .await?;
    println!("bootstrap: tables {table}, {data_table}, {log_table} and KMS keys {alias}, {token_key} are ready");
    Ok(())
}
