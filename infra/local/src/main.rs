//! `subkv-local bootstrap`: creates what the functions expect in the emulator
//! (the control table, the KV data and change-log tables, and the KMS keys).
//! Idempotent; reads the same `AWS_ENDPOINT_URL` and `SUBKV_*` variables as the
//! functions.

use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use subkv_core::config::{var, Env};
use subkv_core::control::ensure_control_table;
use subkv_dynamo_kv::{ensure_kv_tables, DEFAULT_DATA_TABLE, DEFAULT_LOG_TABLE};

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
    let env = Env::process();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = env.control_table();
    ensure_control_table(&aws_sdk_dynamodb::Client::new(&sdk), &table).await?;
    let alias = env.required(var::BACKUP_KMS_KEY_ID, "it names the KMS alias to create")?;
    let kms = aws_sdk_kms::Client::new(&sdk);
    ensure_kms_alias(
        &kms,
        &alias,
        KeyUsageType::EncryptDecrypt,
        KeySpec::SymmetricDefault,
    )
    .await?;
    let data_table = env.string_or(var::KV_DATA_TABLE, DEFAULT_DATA_TABLE);
    let log_table = env.string_or(var::KV_LOG_TABLE, DEFAULT_LOG_TABLE);
    ensure_kv_tables(
        &aws_sdk_dynamodb::Client::new(&sdk),
        &data_table,
        &log_table,
    )
    .await?;
    let token_key = env.required(var::DATA_TOKEN_KEY_ID, "it names the KMS alias to create")?;
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
