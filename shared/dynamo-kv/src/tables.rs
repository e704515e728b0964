//! Table setup for the local stack (production tables come from the
//! infrastructure code).

use crate::items::{EXPIRE, PK, SHARD, SK, TTL};
use crate::EXPIRY_INDEX;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;

/// Creates the data and change-log tables if they do not exist (local stack).
pub async fn ensure_kv_tables(
    client: &Client,
    data_table: &str,
    log_table: &str,
) -> Result<(), String> {
    let attr = |name: &str, t: ScalarAttributeType| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(t)
            .build()
            .map_err(|e| e.to_string())
    };
    let key = |name: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(t)
            .build()
            .map_err(|e| e.to_string())
    };
    // Both tables have a stream, as in infra/template.yaml: the data table's
    // carries each item before and after a change (NEW_AND_OLD_IMAGES: the sizes
    // kv-storage-usage counts), the change log's only the keys (KEYS_ONLY: the
    // backup engine reads the log itself).
    for (table, data) in [(data_table, true), (log_table, false)] {
        if client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .is_ok()
        {
            continue;
        }
        let mut create = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(PK, ScalarAttributeType::S)?)
            .attribute_definitions(attr(SK, ScalarAttributeType::B)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?);
        let view = if data {
            StreamViewType::NewAndOldImages
        } else {
            StreamViewType::KeysOnly
        };
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .map_err(|e| e.to_string())?,
        );
        if data {
            create = create
                .attribute_definitions(attr(SHARD, ScalarAttributeType::S)?)
                .attribute_definitions(attr(EXPIRE, ScalarAttributeType::N)?)
                .global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(EXPIRY_INDEX)
                        .key_schema(key(SHARD, KeyType::Hash)?)
                        .key_schema(key(EXPIRE, KeyType::Range)?)
                        .projection(
                            Projection::builder()
                                .projection_type(ProjectionType::KeysOnly)
                                .build(),
                        )
                        .build()
                        .map_err(|e| e.to_string())?,
                );
        }
        create
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
        client
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name(TTL)
                    .build()
                    .map_err(|e| e.to_string())?,
            )
            .send()
            .await
            .map_err(|e| DisplayErrorContext(e).to_string())?;
    }
    Ok(())
}
