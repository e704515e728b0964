//! How the engine's data lives in DynamoDB items: attribute names, slots as
//! items (single entries, buckets) and the action that writes one (a delete when
//! it is empty: no tombstones), the checks as condition expressions, change
//! records in parts, and a failed call as a [`KvError`].

use crate::change_log::LogPart;
use crate::{DynamoKv, EXPIRY_SHARDS};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use denokv_proto::backup::BackupMutationRange;
use prost::Message;
use subkv_core::dynamo::{b, describe, get_b, get_n, is_transient, n, Item};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::model::{split_stamp, stamp, versionstamp, Entry, Slot};
use subkv_kv::plan::Cond;
use uuid::Uuid;

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";
pub(crate) const VER: &str = "kv_ver";
/// A single entry's versionstamp's last two bytes when not zero (restored
/// entries only: every commit subkv makes ends in `0000`).
pub(crate) const SEQ: &str = "kv_seq";
pub(crate) const VALUE: &str = "v";
pub(crate) const ENCODING: &str = "enc";
pub(crate) const EXPIRE: &str = "kv_exp";
pub(crate) const SHARD: &str = "kv_xs";
/// Tombstones, which builds before the read path validated against the change
/// log wrote for deletions (kept an hour by `ttl`): read as empty slots, never written.
pub(crate) const DELETED: &str = "kv_del";
/// On the head: the commit `kv_ver` is a large commit still being applied.
pub(crate) const PENDING: &str = "kv_pending";
/// On the head: the database was deleted (the time, ms). Every head read and
/// every commit of it is then refused with a 404 (`purge.rs`).
pub(crate) const GONE: &str = subkv_core::deleted::GONE;
pub(crate) const BUCKET: &str = "b";
pub(crate) const TTL: &str = subkv_core::deleted::TTL;
pub(crate) const LOG_TIME: &str = "ts";
pub(crate) const LOG_PARTS: &str = "parts";
pub(crate) const LOG_MUTATIONS: &str = "m";
/// The commit's client request token: tells an ambiguous failure from a commit.
/// On the change record and, for the last commit, on the head.
pub(crate) const LOG_REQUEST: &str = "req";

/// A failed DynamoDB call as the data plane's error: `Unavailable` (a 503 the
/// client retries) when trying again may succeed, else `Internal`.
pub(crate) fn dynamo<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> KvError
where
    E: std::error::Error + Send + Sync + 'static,
{
    let server_error = err
        .raw_response()
        .is_some_and(|r| r.status().is_server_error());
    if is_transient(&err, server_error) {
        return KvError::Unavailable(format!(
            "storage is busy or did not answer ({operation}); retry"
        ));
    }
    KvError::Internal(format!("{operation}: {}", describe(&err)))
}

/// DynamoDB's message if it refused a request for what it is
/// (`ValidationException`, e.g. an item or a transaction too large): sending the
/// same request again cannot succeed.
pub(crate) fn validation_refusal<E>(err: &SdkError<E, HttpResponse>) -> Option<String>
where
    E: ProvideErrorMetadata,
{
    let service = err.as_service_error()?;
    (service.code() == Some("ValidationException")).then(|| {
        format!(
            "ValidationException: {}",
            service.message().unwrap_or("refused")
        )
    })
}

/// An item this engine wrote that does not parse: reading it again gives the same.
pub(crate) fn malformed(what: &str) -> KvError {
    KvError::Malformed(format!("malformed data item: {what}"))
}

impl DynamoKv {
    /// The key of a database's head item (in the data table).
    pub(crate) fn head_key(database: Uuid) -> Item {
        subkv_core::deleted::head_key(database)
    }

    /// The key of the data item stored under sort key `sk`.
    pub(crate) fn item_key(database: Uuid, sk: &[u8]) -> Item {
        Item::from([
            (PK.into(), AttributeValue::S(database.to_string())),
            (SK.into(), b(sk)),
        ])
    }
}

/// Entries of a bucket item, as stored in its `b` attribute.
#[derive(Clone, PartialEq, prost::Message)]
struct BucketBlob {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<BucketEntry>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct BucketEntry {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
    #[prost(int64, tag = "3")]
    encoding: i64,
    #[prost(uint64, tag = "4")]
    version: u64,
    /// 0: never expires.
    #[prost(int64, tag = "5")]
    expire_at_ms: i64,
    /// The versionstamp's last two bytes (0 but for restored entries).
    #[prost(uint32, tag = "6")]
    seq: u32,
}

pub(crate) fn slot_from_item(item: &Item) -> KvResult<Slot> {
    let sk = get_b(item, SK).ok_or_else(|| malformed("no sk"))?.to_vec();
    let version: u64 = get_n(item, VER).ok_or_else(|| malformed("no ver"))?;
    let mut slot = Slot {
        sk,
        version,
        entries: Vec::new(),
    };
    if item.contains_key(DELETED) {
        return Ok(slot);
    }
    if let Some(blob) = get_b(item, BUCKET) {
        let blob = BucketBlob::decode(blob).map_err(|_| malformed("bucket"))?;
        slot.entries = blob
            .entries
            .into_iter()
            .map(|e| Entry {
                key: e.key,
                value: e.value,
                encoding: e.encoding,
                version: e.version,
                seq: u16::try_from(e.seq).unwrap_or(u16::MAX),
                expire_at_ms: (e.expire_at_ms > 0).then_some(e.expire_at_ms),
            })
            .collect();
        return Ok(slot);
    }
    slot.entries.push(Entry {
        key: slot.sk.clone(),
        value: get_b(item, VALUE)
            .ok_or_else(|| malformed("no value"))?
            .to_vec(),
        encoding: get_n(item, ENCODING).ok_or_else(|| malformed("no encoding"))?,
        version,
        seq: get_n(item, SEQ).unwrap_or(0),
        expire_at_ms: get_n(item, EXPIRE),
    });
    Ok(slot)
}

/// What one item of the data table stores for its database, as the storage
/// meter counts it (`subkv_connect::storage`): the database, and how many keys
/// the item holds (a single entry: 1; a bucket: its entries). None for an item
/// that holds no keys: a head (`<db>#head`), a tombstone of an earlier build, or
/// anything unreadable.
pub fn stored_keys(item: &Item) -> Option<(Uuid, usize)> {
    let database = Uuid::parse_str(subkv_core::dynamo::get_s(item, PK)?).ok()?;
    let slot = slot_from_item(item).ok()?;
    (!slot.entries.is_empty()).then_some((database, slot.entries.len()))
}

fn expiry_shard(database: Uuid, sk: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(database.as_bytes())
        .chain_update(sk)
        .finalize();
    format!("x{}", digest[0] % EXPIRY_SHARDS)
}

/// The item that stores a slot holding entries (an empty slot is deleted, see
/// [`slot_write`]).
pub(crate) fn item_from_slot(database: Uuid, slot: &Slot) -> Item {
    let mut item = Item::from([
        (PK.into(), AttributeValue::S(database.to_string())),
        (SK.into(), b(slot.sk.clone())),
        (VER.into(), n(slot.version)),
    ]);
    if slot.is_bucket() {
        let blob = BucketBlob {
            entries: slot
                .entries
                .iter()
                .map(|e| BucketEntry {
                    key: e.key.clone(),
                    value: e.value.clone(),
                    encoding: e.encoding,
                    version: e.version,
                    expire_at_ms: e.expire_at_ms.unwrap_or(0),
                    seq: e.seq.into(),
                })
                .collect(),
        };
        item.insert(BUCKET.into(), b(blob.encode_to_vec()));
    } else {
        let entry = &slot.entries[0];
        item.insert(VALUE.into(), b(entry.value.clone()));
        item.insert(ENCODING.into(), n(entry.encoding));
        if entry.seq != 0 {
            item.insert(SEQ.into(), n(entry.seq));
        }
    }
    if let Some(at) = slot.earliest_expiry() {
        item.insert(EXPIRE.into(), n(at));
        item.insert(
            SHARD.into(),
            AttributeValue::S(expiry_shard(database, &slot.sk)),
        );
    }
    item
}

/// The action of a transaction that writes `slot`: a put of its item, or, when
/// it holds no entry, a delete. A deletion leaves nothing behind: snapshot reads
/// learn of deletions from the change log (`read.rs`), so no tombstone fills the
/// ranges they scan, and deleting a key that never existed writes nothing.
/// `condition`: an expression and its values; a failed one returns the item.
pub(crate) fn slot_write(
    table: &str,
    database: Uuid,
    slot: &Slot,
    condition: Option<(String, Item)>,
) -> KvResult<TransactWriteItem> {
    let build = |e: aws_sdk_dynamodb::error::BuildError| {
        KvError::Internal(format!("TransactWriteItems request: {e}"))
    };
    if slot.entries.is_empty() {
        let mut delete = Delete::builder()
            .table_name(table)
            .set_key(Some(DynamoKv::item_key(database, &slot.sk)));
        if let Some((expr, values)) = condition {
            delete = delete
                .condition_expression(expr)
                .set_expression_attribute_values(Some(values))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
        }
        return Ok(TransactWriteItem::builder()
            .delete(delete.build().map_err(build)?)
            .build());
    }
    let mut put = Put::builder()
        .table_name(table)
        .set_item(Some(item_from_slot(database, slot)));
    if let Some((expr, values)) = condition {
        put = put
            .condition_expression(expr)
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
    }
    Ok(TransactWriteItem::builder()
        .put(put.build().map_err(build)?)
        .build())
}

/// The condition a set of checks puts on one (short-key) item.
pub(crate) fn condition(conds: &[Cond], values: &mut Item, now_ms: i64) -> String {
    values.insert(":now".into(), n(now_ms));
    conds
        .iter()
        .map(|cond| match cond.expect {
            Some(vs) => {
                let (version, seq) = split_stamp(&vs);
                let name = format!(":c{}", cond.check_index);
                values.insert(name.clone(), n(version));
                let seq = if seq == 0 {
                    format!("attribute_not_exists({SEQ})")
                } else {
                    let name = format!(":s{}", cond.check_index);
                    values.insert(name.clone(), n(seq));
                    format!("{SEQ} = {name}")
                };
                format!("({VER} = {name} AND {seq} AND attribute_not_exists({DELETED}) AND (attribute_not_exists({EXPIRE}) OR {EXPIRE} > :now))")
            }
            None => format!(
                "(attribute_not_exists({VER}) OR attribute_exists({DELETED}) OR {EXPIRE} <= :now)"
            ),
        })
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Whether `cond` holds on `item` (None: no item) at `now`: what [`condition`]
/// asks DynamoDB, evaluated on the item a failed condition returns, to tell which
/// of the checks sharing an item failed.
pub(crate) fn cond_holds(cond: &Cond, item: Option<&Item>, now_ms: i64) -> bool {
    let live = item
        .filter(|i| !i.contains_key(DELETED))
        .filter(|i| get_n::<i64>(i, EXPIRE).is_none_or(|at| at > now_ms));
    match cond.expect {
        Some(vs) => {
            live.and_then(|i| Some(stamp(get_n(i, VER)?, get_n(i, SEQ).unwrap_or(0)))) == Some(vs)
        }
        None => live.is_none(),
    }
}

/// A change-log item: its commit version and (part of) its mutations.
pub(crate) fn log_item(item: &Item) -> KvResult<(u64, BackupMutationRange)> {
    let sk = get_b(item, SK).ok_or_else(|| malformed("log sk"))?;
    let version = subkv_kv::model::version_of(&[sk.get(..8).unwrap_or_default(), &[0, 0]].concat())
        .ok_or_else(|| malformed("log sk"))?;
    let body = get_b(item, LOG_MUTATIONS).ok_or_else(|| malformed("log body"))?;
    let range = BackupMutationRange::decode(body).map_err(|_| malformed("log body"))?;
    Ok((version, range))
}

/// A change-log item as a part of its commit's change record.
pub(crate) fn log_part(item: &Item) -> KvResult<LogPart> {
    let (version, range) = log_item(item)?;
    let sk = get_b(item, SK).ok_or_else(|| malformed("log sk"))?;
    let part = sk
        .get(8..10)
        .and_then(|p| <[u8; 2]>::try_from(p).ok())
        .map(u16::from_be_bytes)
        .ok_or_else(|| malformed("log sk"))?;
    let parts = get_n(item, LOG_PARTS).ok_or_else(|| malformed("log parts"))?;
    Ok(LogPart {
        version,
        part,
        parts,
        range,
    })
}

/// The sort key of part `part` of the change record of commit `version`.
pub(crate) fn log_sk(version: u64, part: u16) -> Vec<u8> {
    let mut sk = versionstamp(version).to_vec();
    sk[8..].copy_from_slice(&part.to_be_bytes());
    sk
}

#[cfg(test)]
/// An item's size as DynamoDB counts it (attribute names plus values; a
/// number by its decimal digits, more than DynamoDB's one byte per two).
pub(crate) fn dynamodb_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(s) | AttributeValue::N(s) => s.len(),
                    AttributeValue::B(b) => b.as_ref().len(),
                    AttributeValue::Bool(_) => 1,
                    other => panic!("unexpected attribute {other:?}"),
                }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use subkv_kv::keys::sort_key;

    #[test]
    fn slots_round_trip_through_items() {
        let db = Uuid::new_v4();
        let mut single = Slot::empty(b"\x02a\x00".to_vec());
        single.version = 5;
        single.put(Entry {
            key: b"\x02a\x00".to_vec(),
            value: vec![9],
            encoding: 3,
            version: 5,
            seq: 0,
            expire_at_ms: Some(77),
        });
        let item = item_from_slot(db, &single);
        assert_eq!(slot_from_item(&item).unwrap(), single);
        assert!(item.contains_key(SHARD));
        assert!(!item.contains_key(SEQ), "a commit's entry stores no seq");
        // A restored entry keeps its versionstamp's last two bytes.
        single.entries[0].seq = 0x0102;
        let item = item_from_slot(db, &single);
        assert_eq!(item.get(SEQ), Some(&n(0x0102)));
        assert_eq!(slot_from_item(&item).unwrap(), single);

        let long = [vec![1u8; 1200], vec![0]].concat();
        let mut bucket = Slot::empty(sort_key(&long));
        bucket.version = 6;
        bucket.put(Entry {
            key: long,
            value: vec![],
            encoding: 1,
            version: 6,
            seq: 0xfffe,
            expire_at_ms: None,
        });
        let item = item_from_slot(db, &bucket);
        assert_eq!(slot_from_item(&item).unwrap(), bucket);
        assert!(!item.contains_key(SHARD));

        // A tombstone an earlier build wrote reads as an empty slot.
        let mut tomb = Item::from([
            (PK.into(), AttributeValue::S(db.to_string())),
            (SK.into(), b(b"\x02b\x00".to_vec())),
            (VER.into(), n(7)),
            (DELETED.into(), AttributeValue::Bool(true)),
            (TTL.into(), n(1000)),
        ]);
        let mut empty = Slot::empty(b"\x02b\x00".to_vec());
        empty.version = 7;
        assert_eq!(slot_from_item(&tomb).unwrap(), empty);
        tomb.remove(DELETED);
        assert!(slot_from_item(&tomb).is_err(), "an entry without a value");
    }

    #[test]
    fn an_empty_slot_is_deleted_and_leaves_no_item() {
        let db = Uuid::new_v4();
        let mut empty = Slot::empty(b"\x02gone".to_vec());
        empty.version = 9;
        let action = slot_write("t", db, &empty, None).unwrap();
        let delete = action.delete.expect("a delete");
        assert_eq!(delete.key, DynamoKv::item_key(db, b"\x02gone"));
        assert!(action.put.is_none());
        let mut full = empty.clone();
        full.put(Entry {
            key: b"\x02gone".to_vec(),
            value: vec![1],
            encoding: 3,
            version: 9,
            seq: 0,
            expire_at_ms: None,
        });
        let conds = Some(("attribute_not_exists(pk)".to_string(), Item::new()));
        let action = slot_write("t", db, &full, conds).unwrap();
        let put = action.put.expect("a put");
        assert_eq!(
            put.condition_expression.as_deref(),
            Some("attribute_not_exists(pk)")
        );
        assert_eq!(slot_from_item(&put.item).unwrap(), full);
    }

    #[test]
    fn change_record_parts_sort_by_version_then_part() {
        assert!(log_sk(1, 0) < log_sk(1, 1) && log_sk(1, 1) < log_sk(2, 0));
    }

    #[test]
    fn a_change_log_item_names_its_part_and_the_part_count() {
        let range = BackupMutationRange {
            entries: Vec::new(),
            timestamp_ms: 9,
        };
        let mut item = Item::from([
            (SK.into(), b(log_sk(5, 2))),
            (LOG_PARTS.into(), n(3)),
            (LOG_MUTATIONS.into(), b(range.encode_to_vec())),
        ]);
        let part = log_part(&item).unwrap();
        assert_eq!((part.version, part.part, part.parts), (5, 2, 3));
        assert_eq!(part.range, range);
        item.remove(LOG_PARTS);
        assert!(log_part(&item).is_err());
    }

    #[test]
    fn the_planning_bound_covers_every_data_item_as_stored() {
        use subkv_kv::budget::item_bytes;
        let db = Uuid::new_v4();
        let entry = |key: Vec<u8>, len: usize, expire: Option<i64>| Entry {
            key,
            value: vec![0xab; len],
            encoding: i64::MAX,
            version: u64::MAX,
            seq: 0,
            expire_at_ms: expire,
        };
        let short = vec![2u8; 1000];
        let mut slots = Vec::new();
        let mut single = Slot::empty(short.clone());
        single.version = u64::MAX;
        single.put(entry(short.clone(), 65536, Some(i64::MAX)));
        slots.push(single);
        let long = |i: u16| [vec![3u8; 1000], vec![0; 1048], i.to_be_bytes().to_vec()].concat();
        let mut bucket = Slot::empty(sort_key(&long(0)));
        bucket.version = u64::MAX;
        for i in 0..40 {
            bucket.put(entry(
                long(i),
                if i % 2 == 0 { 65536 } else { 0 },
                Some(i64::MAX),
            ));
            slots.push(bucket.clone());
        }
        for slot in &slots {
            let item = item_from_slot(db, slot);
            assert!(
                dynamodb_size(&item) <= item_bytes(slot),
                "{} entries: {} > {}",
                slot.entries.len(),
                dynamodb_size(&item),
                item_bytes(slot)
            );
        }
    }

    #[test]
    fn a_cond_holds_as_its_condition_expression_reads() {
        let item = |attrs: &[(&str, AttributeValue)]| -> Item {
            attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let at = |expect: Option<u64>| Cond {
            check_index: 0,
            expect: expect.map(versionstamp),
        };
        let live = item(&[(VER, n(3))]);
        // A restored entry: its versionstamp's last two bytes count too.
        let restored = item(&[(VER, n(3)), (SEQ, n(5))]);
        let stamped = |seq| Cond {
            check_index: 0,
            expect: Some(stamp(3, seq)),
        };
        assert!(cond_holds(&stamped(5), Some(&restored), 50));
        assert!(!cond_holds(&stamped(0), Some(&restored), 50));
        assert!(!cond_holds(&stamped(5), Some(&live), 50));
        let expiring = item(&[(VER, n(3)), (EXPIRE, n(100))]);
        let tomb = item(&[(VER, n(3)), (DELETED, AttributeValue::Bool(true))]);
        // Expecting version 3: only a live item at 3.
        assert!(cond_holds(&at(Some(3)), Some(&live), 50));
        assert!(!cond_holds(&at(Some(4)), Some(&live), 50));
        assert!(cond_holds(&at(Some(3)), Some(&expiring), 99));
        assert!(!cond_holds(&at(Some(3)), Some(&expiring), 100));
        assert!(!cond_holds(&at(Some(3)), Some(&tomb), 50));
        assert!(!cond_holds(&at(Some(3)), None, 50));
        // Expecting absence: no item, a tombstone, or an expired entry.
        assert!(cond_holds(&at(None), None, 50));
        assert!(cond_holds(&at(None), Some(&tomb), 50));
        assert!(cond_holds(&at(None), Some(&expiring), 100));
        assert!(!cond_holds(&at(None), Some(&expiring), 99));
        assert!(!cond_holds(&at(None), Some(&live), 50));
    }

    #[test]
    fn conditions_name_each_check() {
        let mut values = Item::new();
        let expr = condition(
            &[
                Cond {
                    check_index: 3,
                    expect: Some(versionstamp(9)),
                },
                Cond {
                    check_index: 5,
                    expect: Some(stamp(9, 2)),
                },
                Cond {
                    check_index: 4,
                    expect: None,
                },
            ],
            &mut values,
            10,
        );
        assert!(expr.contains("kv_ver = :c3 AND attribute_not_exists(kv_seq)"));
        assert!(expr.contains("kv_ver = :c5 AND kv_seq = :s5"));
        assert!(expr.contains("attribute_not_exists(kv_ver) OR"));
        assert_eq!(values.get(":c3"), Some(&n(9)));
        assert_eq!(values.get(":s5"), Some(&n(2)));
    }
}
