//! What every management function builds once per cold start.

use std::sync::Arc;
use subkv_core::config::{Config, ConfigError};
use subkv_core::control::{ControlTable, DynamoControl};
use subkv_core::deleted::{DeletedMarks, DynamoMarks, NoMarks};
use subkv_core::runtime::aws_config;
use subkv_core::secrets::{KmsSealer, NoSealer, SecretSealer};
use subkv_core::storage::{DynamoStorage, MemoryStorage, StorageStore};
use subkv_core::usage::{DynamoUsage, MemoryUsage, UsageStore};

/// Configuration and clients, shared by every request of an instance.
pub struct ApiState {
    pub config: Config,
    pub control: Arc<dyn ControlTable>,
    pub sealer: Arc<dyn SecretSealer>,
    /// Where a deleted database's head is marked (the KV data table).
    pub marks: Arc<dyn DeletedMarks>,
    /// Usage for billing (the data plane's hourly counts).
    pub usage: Arc<dyn UsageStore>,
    /// Stored bytes and keys (what `kv-storage-usage` keeps).
    pub storage: Arc<dyn StorageStore>,
}

impl ApiState {
    pub fn new(
        config: Config,
        control: Arc<dyn ControlTable>,
        sealer: Arc<dyn SecretSealer>,
    ) -> Self {
        Self {
            config,
            control,
            sealer,
            marks: Arc::new(NoMarks),
            usage: Arc::new(MemoryUsage::default()),
            storage: Arc::new(MemoryStorage::default()),
        }
    }

    /// Reads the environment and builds the AWS clients.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let config = Config::from_env()?;
        let sdk = aws_config().await;
        let dynamo = aws_sdk_dynamodb::Client::new(&sdk);
        let control = Arc::new(DynamoControl::new(
            dynamo.clone(),
            config.control_table.clone(),
        ));
        let usage = Arc::new(DynamoUsage::new(
            dynamo.clone(),
            config.control_table.clone(),
        ));
        let storage = Arc::new(DynamoStorage::new(
            dynamo.clone(),
            config.control_table.clone(),
        ));
        let marks = Arc::new(DynamoMarks {
            client: dynamo,
            data_table: config.kv_data_table.clone(),
        });
        let sealer: Arc<dyn SecretSealer> = match &config.backup_kms_key_id {
            Some(key) => Arc::new(KmsSealer::new(aws_sdk_kms::Client::new(&sdk), key)),
            None => Arc::new(NoSealer),
        };
        Ok(Self {
            marks,
            usage,
            storage,
            ..Self::new(config, control, sealer)
        })
    }
}
