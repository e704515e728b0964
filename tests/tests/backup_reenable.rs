//! A backup deleted, then enabled again with the same bucket, endpoint and prefix
//! (issue 11, item 3: what the announcement tells tenants to do once they fixed
//! their credentials), on the local stack, restored with the real `denokv`.
//!
//! The deleted backup's objects stay in the bucket (subkv may only `PutObject`
//! there) and denokv's first sync loads every snapshot chunk and replays every
//! log from the first: the new backup must empty them before its differential,
//! else keys deleted or changed while no backup ran come back (decision 26).

use aws_sdk_dynamodb::types::AttributeValue;
use std::time::Duration;
use subkv_dynamo_kv::DynamoKv;
use subkv_e2e::backup::{
    assert_same_state, commit, dump, enable_backup, fresh_bucket, get_object, kv, kv_database,
    list_keys, log_objects, wait_backed_up, KvDatabase, Restore, DEADLINE,
};
use subkv_kv::backup_format::FORMAT_VERSION;

/// The announcement's sample prefix.
const PREFIX: &str = "backup/";

/// How long the re-enabled backup may take to become active: it first waits out
/// the deleted backup's last puts (the engine's put margin, 40 s, from the
/// delete), then empties what that backup left, then takes its snapshot.
const ACTIVE_AGAIN_WITHIN: Duration = Duration::from_secs(40 + 120);

/// The items of the control table under `pk` whose sort key begins with
/// `sk_prefix` (every one: None), each as its `backupId` if it has one, else its
/// sort key.
async fn control_items(pk: &str, sk_prefix: Option<&str>) -> Vec<AttributeValue> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let table = std::env::var("SUBKV_CONTROL_TABLE")
        .unwrap_or_else(|_| subkv_core::config::DEFAULT_CONTROL_TABLE.into());
    let mut query = aws_sdk_dynamodb::Client::new(&sdk)
        .query()
        .table_name(&table)
        .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
        .consistent_read(true);
    query = match sk_prefix {
        Some(sk) => query
            .key_condition_expression("pk = :pk AND begins_with(sk, :sk)")
            .expression_attribute_values(":sk", AttributeValue::S(sk.into())),
        None => query.key_condition_expression("pk = :pk"),
    };
    let page = query.send().await.expect("query the control table");
    page.items()
        .iter()
        .filter_map(|item| item.get("backupId").or_else(|| item.get("sk")).cloned())
        .collect()
}

/// The retired roots of the database (their `backupId`s).
async fn retired_roots(db: &KvDatabase) -> Vec<AttributeValue> {
    control_items(&format!("DB#{}", db.id), Some("RETIRED#")).await
}

/// The ledger of a backup (its object keys).
async fn ledger(backup: &str) -> Vec<AttributeValue> {
    control_items(&format!("BKLOG#{backup}"), None).await
}

/// Sets `name` to `value`, or deletes it; returns the commit's versionstamp.
async fn set(store: &DynamoKv, db: &KvDatabase, name: &str, value: Option<&str>) -> String {
    commit(store, db, name, value.map(str::as_bytes)).await
}

#[tokio::test]
async fn a_backup_deleted_and_enabled_again_into_the_same_prefix_restores_exactly() {
    let store = kv().await;
    let db = kv_database("backup-reenable").await;
    let bucket = fresh_bucket("reenable").await;
    let root = format!("{PREFIX}{}/", db.id);
    // Several snapshot chunks (8 items each on the local stack).
    for i in 0..20 {
        set(&store, &db, &format!("k{i:02}"), Some("1")).await;
    }
    let first = enable_backup(&db, &bucket, PREFIX).await;
    // Commits the logs carry: values about to be changed, keys about to go.
    for i in 0..10 {
        set(&store, &db, &format!("k{i:02}"), Some("2")).await;
    }
    set(&store, &db, "gone", Some("1")).await;
    let last = set(&store, &db, "changed", Some("1")).await;
    wait_backed_up(&db.org.token, &first, &last, DEADLINE).await;
    let old_logs: Vec<String> = log_objects(&bucket, &root)
        .await
        .into_iter()
        .filter(|(_, range)| !range.entries.is_empty())
        .map(|(key, _)| key)
        .collect();
    assert!(!old_logs.is_empty(), "the first backup forwarded logs");
    let old_chunks = list_keys(&bucket, &format!("{root}snapshots/")).await;
    assert!(old_chunks.len() >= 3, "{old_chunks:?}");

    // Deleted: its ledger stays and its root is recorded as retired.
    subkv_e2e::delete(&format!("/v1/database_backups/{first}"), &db.org.token)
        .await
        .assert_ok();
    assert_eq!(retired_roots(&db).await, [AttributeValue::S(first.clone())]);
    assert!(!ledger(&first).await.is_empty());

    // While no backup runs: keys deleted and changed.
    set(&store, &db, "gone", None).await;
    set(&store, &db, "changed", Some("2")).await;
    for i in 0..5 {
        set(&store, &db, &format!("k{i:02}"), None).await;
    }
    for i in 5..10 {
        set(&store, &db, &format!("k{i:02}"), Some("3")).await;
    }

    // Enabled again with the same bucket, endpoint and prefix.
    let last = set(&store, &db, "k09", Some("4")).await;
    let again = enable_backup(&db, &bucket, PREFIX).await;
    wait_backed_up(&db.org.token, &again, &last, ACTIVE_AGAIN_WITHIN).await;

    // The new backup's logs follow.
    let last = set(&store, &db, "after", Some("1")).await;
    wait_backed_up(&db.org.token, &again, &last, DEADLINE).await;

    // A fresh restore is the database: nothing deleted or changed while no backup
    // ran comes back.
    let restore = Restore::new(&bucket, &root);
    restore.sync();
    restore.checkout(&last);
    let restored = restore.dump();
    assert_same_state(
        "enabled again into the same prefix",
        &dump(&db.url, &db.org.token),
        &restored,
    );
    assert!(!restored.to_string().contains("\"gone\""), "{restored}");

    // Everything the first backup wrote is emptied; the new chunks are of a
    // later generation.
    for (key, range) in log_objects(&bucket, &root).await {
        if old_logs.contains(&key) {
            assert!(range.entries.is_empty(), "{key} still holds entries");
        }
    }
    let first_generation = format!("{root}snapshots/{FORMAT_VERSION:04x}_{:016x}_", 1);
    let second_generation = format!("{root}snapshots/{FORMAT_VERSION:04x}_{:016x}_", 2);
    let chunks = list_keys(&bucket, &format!("{root}snapshots/")).await;
    assert!(
        chunks.iter().any(|k| k.starts_with(&second_generation)),
        "{chunks:?}"
    );
    for key in chunks {
        let body = get_object(&bucket, &key).await.expect("a listed object");
        if key.starts_with(&first_generation) {
            let range = <denokv_proto::backup::BackupSnapshotRange as prost::Message>::decode(
                body.as_slice(),
            )
            .expect("a snapshot range");
            assert!(range.data_list.is_empty(), "{key} still holds keys");
        }
    }
    // The retired root and the first backup's ledger are gone.
    assert!(retired_roots(&db).await.is_empty());
    assert!(ledger(&first).await.is_empty());
}
