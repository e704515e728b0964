//! Expiry: the sweeper finds expired items through the sparse expiry index and
//! deletes their expired entries through the normal commit path.

use crate::items::{dynamo, EXPIRE, PK, SHARD, SK};
use crate::{now_ms, DynamoKv, WriteOutcome, EXPIRY_INDEX};
use aws_sdk_dynamodb::types::AttributeValue;
use denokv_proto::AtomicWrite;
use std::collections::BTreeSet;
use subkv_core::dynamo::{get_b, n, Item};
use subkv_kv::error::KvResult;
use subkv_kv::model::Entry;
use uuid::Uuid;

/// Where a shard of the expiry index is read from next (the start: None).
pub type ShardCursor = Option<Item>;

/// Keys per sweeping commit: each carries one check per key (Deno's limit is 10).
const SWEEP_KEYS_PER_COMMIT: usize = 10;

impl DynamoKv {
    /// One page of shard `shard` of the expiry index: items whose earliest
    /// expiry has passed, oldest deadline first, as (database, sort key), and
    /// the cursor of the next page (None: the shard holds no more).
    pub async fn expired_page(
        &self,
        shard: u8,
        now: i64,
        cursor: ShardCursor,
        limit: i32,
    ) -> KvResult<(Vec<(Uuid, Vec<u8>)>, ShardCursor)> {
        let page = self
            .client
            .query()
            .table_name(&self.data_table)
            .index_name(EXPIRY_INDEX)
            .key_condition_expression(format!("{SHARD} = :s AND #exp <= :now"))
            .expression_attribute_names("#exp", EXPIRE)
            .expression_attribute_values(":s", AttributeValue::S(format!("x{shard}")))
            .expression_attribute_values(":now", n(now))
            .limit(limit.max(1))
            .set_exclusive_start_key(cursor)
            .send()
            .await
            .map_err(|e| dynamo("Query", e))?;
        let items = page
            .items()
            .iter()
            .filter_map(|item| {
                let db = item
                    .get(PK)
                    .and_then(|v| v.as_s().ok())
                    .and_then(|s| Uuid::parse_str(s).ok())?;
                Some((db, get_b(item, SK)?.to_vec()))
            })
            .collect();
        Ok((items, page.last_evaluated_key))
    }

    /// Deletes the expired entries of these items of one database through the
    /// normal commit path (so the change log records each as a deletion), in
    /// commits of up to 10 keys, each on condition that its keys are still
    /// expired. Returns how many entries it deleted; stops at the first error.
    pub async fn sweep_items(&self, database: Uuid, sks: &[Vec<u8>]) -> KvResult<usize> {
        let sks: BTreeSet<Vec<u8>> = sks.iter().cloned().collect();
        let slots = self.get_slots(database, &sks).await?;
        let now = now_ms();
        let expired: Vec<&Entry> = slots
            .values()
            .flat_map(|s| s.entries.iter())
            .filter(|e| !e.is_live(now))
            .collect();
        let mut swept = 0;
        for chunk in expired.chunks(SWEEP_KEYS_PER_COMMIT) {
            let write = AtomicWrite {
                checks: chunk
                    .iter()
                    .map(|e| denokv_proto::Check {
                        key: e.key.clone(),
                        // Checks treat an expired key as absent, so the check names
                        // "absent": a rewrite since would make the key live again.
                        versionstamp: None,
                    })
                    .collect(),
                mutations: chunk
                    .iter()
                    .map(|e| denokv_proto::Mutation {
                        key: e.key.clone(),
                        kind: denokv_proto::MutationKind::Delete,
                        expire_at: None,
                    })
                    .collect(),
                enqueues: Vec::new(),
            };
            if let WriteOutcome::Committed(_) = self.atomic_write(database, &write).await? {
                swept += chunk.len();
            }
        }
        Ok(swept)
    }
}
