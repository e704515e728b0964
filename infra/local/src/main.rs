//! `subkv-local bootstrap`: creates what the functions expect in the emulator
//! (the control table and the KMS key behind `alias/subkv-backup-secrets`).
//! Idempotent; reads the same `AWS_ENDPOINT_URL` and `SUBKV_*` variables as the
//! functions.

use aws_sdk_kms::types::KeyUsageType;
use subkv::app::{env, DEFAULT_CONTROL_TABLE};
use subkv::store::dynamo::ensure_control_table;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn ensure_kms_alias(client: &aws_sdk_kms::Client, alias: &str) -> Result<(), Error> {
    if client.describe_key().key_id(alias).send().await.is_ok() {
        return Ok(());
    }
    let key = client
        .create_key()
        .description("subkv backup secrets (local)")
        .key_usage(KeyUsageType::EncryptDecrypt)
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
    ensure_kms_alias(&aws_sdk_kms::Client::new(&sdk), &alias).await?;
    println!("bootstrap: table {table} and KMS key {alias} are ready");
    Ok(())
}
