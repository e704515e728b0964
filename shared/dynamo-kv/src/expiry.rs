//! Expiry: the sweeper finds expired items through the sparse expiry index and
//! deletes their expired entries through the normal commit path.

use crate::items::{dynamo, EXPIRE, PK, SHARD, SK};
use crate::{now_ms, DynamoKv, WriteOutcome, EXPIRY_INDEX, EXPIRY_SHARDS};
use aws_sdk_dynamodb::types::AttributeValue;
use denokv_proto::AtomicWrite;
use std::collections::BTreeSet;
use subkv_core::dynamo::{get_b, n};
use subkv_kv::error::KvResult;
use subkv_kv::model::Entry;
use uuid::Uuid;

impl DynamoKv {
    /// Keys of expiring items whose deadline has passed (from the expiry index).
    pub async fn expired_items(&self, now: i64, limit: usize) -> KvResult<Vec<(Uuid, Vec<u8>)>> {
        let mut out = Vec::new();
        for shard in 0..EXPIRY_SHARDS {
            let mut start_key = None;
            loop {
                let page = self
                    .client
                    .query()
                    .table_name(&self.data_table)
                    .index_name(EXPIRY_INDEX)
                    .key_condition_expression(format!("{SHARD} = :s AND #exp <= :now"))
                    .expression_attribute_names("#exp", EXPIRE)
                    .expression_attribute_values(":s", AttributeValue::S(format!("x{shard}")))
                    .expression_attribute_values(":now", n(now))
                    .set_exclusive_start_key(start_key.take())
                    .send()
                    .await
                    .map_err(|e| dynamo("Query", e))?;
                for item in page.items() {
                    let db = item
                        .get(PK)
                        .and_then(|v| v.as_s().ok())
                        .and_then(|s| Uuid::parse_str(s).ok());
                    if let (Some(db), Some(sk)) = (db, get_b(item, SK)) {
                        out.push((db, sk.to_vec()));
                        if out.len() >= limit {
                            return Ok(out);
                        }
                    }
                }
                match page.last_evaluated_key {
                    Some(key) => start_key = Some(key),
                    None => break,
                }
            }
        }
        Ok(out)
    }

    /// Deletes the expired entries of one item through the normal commit path (so
    /// the change log records each as a deletion), on condition that each still
    /// holds the version that expired. Returns how many entries it deleted.
    pub async fn sweep_item(&self, database: Uuid, sk: &[u8]) -> KvResult<usize> {
        let sks = BTreeSet::from([sk.to_vec()]);
        let slots = self.get_slots(database, &sks).await?;
        let now = now_ms();
        let expired: Vec<&Entry> = slots
            .values()
            .flat_map(|s| s.entries.iter())
            .filter(|e| !e.is_live(now))
            .collect();
        let mut swept = 0;
        for chunk in expired.chunks(10) {
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
