//! The control table's schema: key attributes, the sparse `backups` and `due` indexes, and
//! creating it in the local stack's emulator (the SAM template creates it in AWS;
//! a test keeps the two in agreement).

use super::locator::{BACKUPS_INDEX, BACKUPS_INDEX_PK, DUE_INDEX, DUE_INDEX_PK};
use crate::dynamo::store_error;
use crate::error::StoreError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;

/// Key attribute names of the control table.
pub const PK: &str = "pk";
pub const SK: &str = "sk";

/// Attribute definitions and key schema of the control table, shared by the
/// local bootstrap and checked against the SAM template by a test.
pub fn control_table_schema() -> (Vec<AttributeDefinition>, Vec<KeySchemaElement>) {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("static attribute definition")
    };
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("static key schema")
    };
    (
        vec![
            attr(PK),
            attr(SK),
            attr(BACKUPS_INDEX_PK),
            attr(DUE_INDEX_PK),
        ],
        vec![key(PK, KeyType::Hash), key(SK, KeyType::Range)],
    )
}

/// The control table's global secondary indexes, both sparse, both read by the
/// backup engine's catch-up: `backups` (locators by sweep slot, every attribute)
/// and `due` (backup items that need a visit; only `databaseId` besides the keys,
/// so that the engine's updates of other attributes cost the index nothing).
pub fn control_table_indexes() -> Vec<GlobalSecondaryIndex> {
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("static key schema")
    };
    let backups = GlobalSecondaryIndex::builder()
        .index_name(BACKUPS_INDEX)
        .key_schema(key(BACKUPS_INDEX_PK, KeyType::Hash))
        .key_schema(key(PK, KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .expect("static index");
    let due = GlobalSecondaryIndex::builder()
        .index_name(DUE_INDEX)
        .key_schema(key(DUE_INDEX_PK, KeyType::Hash))
        .key_schema(key(SK, KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("databaseId")
                .build(),
        )
        .build()
        .expect("static index");
    vec![backups, due]
}

/// Creates the control table if it does not exist (local stack and tests).
pub async fn ensure_control_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let (attrs, keys) = control_table_schema();
    match client
        .create_table()
        .table_name(table)
        .set_attribute_definitions(Some(attrs))
        .set_key_schema(Some(keys))
        .set_global_secondary_indexes(Some(control_table_indexes()))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            Ok(())
        }
        Err(e) => Err(store_error("CreateTable", e)),
    }
}
