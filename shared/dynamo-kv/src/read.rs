//! Reads: the head, serializable reads of the head with items (TransactGetItems),
//! point reads and consistent snapshots of ranges.

use crate::items::{dynamo, slot_from_item, PENDING, VER};
use crate::{backoff, now_ms, DynamoKv, MAX_ATTEMPTS};
use aws_sdk_dynamodb::operation::transact_get_items::TransactGetItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Get, TransactGetItem};
use denokv_proto::ReadRange;
use std::collections::{BTreeMap, BTreeSet};
use subkv_core::dynamo::{b, get_n, Item};
use subkv_kv::budget::read_batches;
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::keys::{is_point_range, range_bounds, sort_key};
use subkv_kv::model::{Entry, Slot};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Head {
    pub(crate) version: u64,
    /// A large commit (`version`) is being applied: finish it before anything else.
    pub(crate) pending: bool,
}

impl Head {
    /// The head as its item tells (none: nothing was ever written).
    fn of(item: Option<&Item>) -> Self {
        Head {
            version: item.and_then(|i| get_n(i, VER)).unwrap_or(0),
            pending: item.is_some_and(|i| i.contains_key(PENDING)),
        }
    }
}

/// Sort an entry into a range read: inside `[start, end)`, live.
fn in_range(entry: &Entry, range: &ReadRange, now_ms: i64) -> bool {
    entry.key.as_slice() >= range.start.as_slice()
        && entry.key.as_slice() < range.end.as_slice()
        && entry.is_live(now_ms)
}

/// The read items as slots, by sort key (an absent item: an empty slot).
/// `items` come in the order of `sks`.
fn slots_of(
    sks: &BTreeSet<Vec<u8>>,
    items: impl Iterator<Item = Option<Item>>,
) -> KvResult<BTreeMap<Vec<u8>, Slot>> {
    let mut slots = BTreeMap::new();
    for (sk, item) in sks.iter().zip(items) {
        let slot = match item {
            Some(item) => slot_from_item(&item)?,
            None => Slot::empty(sk.clone()),
        };
        slots.insert(sk.clone(), slot);
    }
    Ok(slots)
}

impl DynamoKv {
    /// The last committed version of a database (0: nothing was ever written),
    /// after finishing a large commit that is still being applied, if any.
    pub async fn head(&self, database: Uuid) -> KvResult<u64> {
        loop {
            let out = self
                .client
                .get_item()
                .table_name(&self.data_table)
                .set_key(Some(Self::head_key(database)))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo("GetItem", e))?;
            let version = out.item.as_ref().and_then(|i| get_n(i, VER)).unwrap_or(0);
            if out.item.as_ref().is_some_and(|i| i.contains_key(PENDING)) {
                self.roll_forward(database, version).await?;
                continue;
            }
            self.remember_head(database, Some(version));
            return Ok(version);
        }
    }

    /// The head and these items in one serializable read (TransactGetItems).
    /// `Ok(None)`: the read lost against a concurrent transaction; try again.
    pub(crate) async fn read_with_head(
        &self,
        database: Uuid,
        sks: &BTreeSet<Vec<u8>>,
        with_head: bool,
    ) -> KvResult<Option<(u64, BTreeMap<Vec<u8>, Slot>)>> {
        loop {
            match self.read_once(database, sks, with_head).await? {
                Some((
                    Head {
                        version,
                        pending: true,
                    },
                    _,
                )) => self.roll_forward(database, version).await?,
                Some((head, slots)) => return Ok(Some((head.version, slots))),
                None => return Ok(None),
            }
        }
    }

    /// One read of the head (if `with_head`; else version 0) and these items:
    /// serializable when one TransactGetItems holds them all.
    async fn read_once(
        &self,
        database: Uuid,
        sks: &BTreeSet<Vec<u8>>,
        with_head: bool,
    ) -> KvResult<Option<(Head, BTreeMap<Vec<u8>, Slot>)>> {
        let mut keys: Vec<Item> = Vec::new();
        if with_head {
            keys.push(Self::head_key(database));
        }
        keys.extend(sks.iter().map(|sk| Self::item_key(database, sk)));
        let list: Vec<Vec<u8>> = sks.iter().cloned().collect();
        if read_batches(&list, with_head).len() > 1 {
            return self.read_in_chunks(database, sks).await;
        }
        let Some(items) = self.read_items(keys).await? else {
            return Ok(None);
        };
        let mut items = items.into_iter();
        let head = if with_head {
            Head::of(items.next().flatten().as_ref())
        } else {
            Head::of(None)
        };
        Ok(Some((head, slots_of(sks, items)?)))
    }

    /// More items than one TransactGetItems holds, by count or by what they may
    /// hold (a large commit's operands and buckets; never a point read, whose ten
    /// keys fit): the head first, then the items in groups. Not one snapshot, but
    /// it need not be: the commit is conditioned on the head being unchanged, and
    /// every item is read after the head.
    async fn read_in_chunks(
        &self,
        database: Uuid,
        sks: &BTreeSet<Vec<u8>>,
    ) -> KvResult<Option<(Head, BTreeMap<Vec<u8>, Slot>)>> {
        let head = self.head(database).await?;
        let mut slots = BTreeMap::new();
        let list: Vec<Vec<u8>> = sks.iter().cloned().collect();
        for run in read_batches(&list, false) {
            let chunk: BTreeSet<Vec<u8>> = list[run].iter().cloned().collect();
            let keys = chunk
                .iter()
                .map(|sk| Self::item_key(database, sk))
                .collect();
            match self.read_items(keys).await? {
                Some(items) => slots.extend(slots_of(&chunk, items.into_iter())?),
                None => return Ok(None),
            }
        }
        Ok(Some((
            Head {
                version: head,
                pending: false,
            },
            slots,
        )))
    }

    /// These items of the data table (at most [`subkv_kv::limits::MAX_ITEMS_PER_COMMIT`]), in
    /// order, in one consistent read: GetItem for one, else TransactGetItems.
    /// `Ok(None)`: the read lost against a concurrent transaction.
    async fn read_items(&self, mut keys: Vec<Item>) -> KvResult<Option<Vec<Option<Item>>>> {
        if keys.len() == 1 {
            let key = keys.pop().unwrap_or_default();
            let out = self
                .client
                .get_item()
                .table_name(&self.data_table)
                .set_key(Some(key))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| dynamo("GetItem", e))?;
            return Ok(Some(vec![out.item]));
        }
        let gets = keys
            .into_iter()
            .map(|key| {
                Get::builder()
                    .table_name(&self.data_table)
                    .set_key(Some(key))
                    .build()
                    .map(|get| TransactGetItem::builder().get(get).build())
                    .map_err(|e| KvError::Internal(format!("TransactGetItems request: {e}")))
            })
            .collect::<KvResult<Vec<_>>>()?;
        match self
            .client
            .transact_get_items()
            .set_transact_items(Some(gets))
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.responses
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.item)
                    .collect(),
            )),
            Err(err) => {
                if let Some(TransactGetItemsError::TransactionCanceledException(_)) =
                    err.as_service_error()
                {
                    return Ok(None);
                }
                Err(dynamo("TransactGetItems", err))
            }
        }
    }

    /// Reads point keys in one serializable read: the live entry of each, in order.
    pub async fn get_many(&self, database: Uuid, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Entry>>> {
        let sks: BTreeSet<Vec<u8>> = keys.iter().map(|k| sort_key(k)).collect();
        for attempt in 0..MAX_ATTEMPTS {
            let now = now_ms();
            if let Some((_, slots)) = self.read_with_head(database, &sks, true).await? {
                return Ok(keys
                    .iter()
                    .map(|k| slots.get(&sort_key(k)).and_then(|s| s.get(k, now)).cloned())
                    .collect());
            }
            backoff(attempt).await;
        }
        Err(KvError::Unavailable(
            "reads keep conflicting with writes; retry".into(),
        ))
    }

    /// A consistent snapshot across every range.
    pub async fn snapshot_read(
        &self,
        database: Uuid,
        ranges: &[ReadRange],
    ) -> KvResult<Vec<Vec<Entry>>> {
        if ranges.iter().all(|r| is_point_range(&r.start, &r.end)) {
            let keys: Vec<Vec<u8>> = ranges.iter().map(|r| r.start.clone()).collect();
            let entries = self.get_many(database, &keys).await?;
            return Ok(entries
                .into_iter()
                .map(|e| e.into_iter().collect())
                .collect());
        }
        for attempt in 0..MAX_ATTEMPTS {
            let head = self.head(database).await?;
            let now = now_ms();
            let reads = ranges
                .iter()
                .map(|range| self.read_range(database, range, head, now));
            let results = futures_util::future::try_join_all(reads).await?;
            if results.iter().all(Option::is_some) {
                return Ok(results.into_iter().flatten().collect());
            }
            backoff(attempt.min(3)).await;
        }
        Err(KvError::Unavailable(
            "reads keep conflicting with writes; retry".into(),
        ))
    }

    /// One range as of version `head`; None if an item newer than `head` was seen.
    async fn read_range(
        &self,
        database: Uuid,
        range: &ReadRange,
        head: u64,
        now: i64,
    ) -> KvResult<Option<Vec<Entry>>> {
        let limit = range.limit.get() as usize;
        let mut out = Vec::new();
        if range.start.as_slice() >= range.end.as_slice() {
            return Ok(Some(out));
        }
        let (lower, upper) = range_bounds(&range.start, &range.end);
        let mut values = Item::from([(":pk".to_string(), AttributeValue::S(database.to_string()))]);
        let condition = match (lower, upper) {
            (Some(lo), Some(hi)) => {
                values.insert(":lo".into(), b(lo));
                values.insert(":hi".into(), b(hi));
                "pk = :pk AND sk BETWEEN :lo AND :hi"
            }
            (None, Some(hi)) => {
                values.insert(":hi".into(), b(hi));
                "pk = :pk AND sk <= :hi"
            }
            (Some(lo), None) => {
                values.insert(":lo".into(), b(lo));
                "pk = :pk AND sk >= :lo"
            }
            (None, None) => "pk = :pk",
        };
        let mut start_key: Option<Item> = None;
        loop {
            let page_limit = (limit - out.len() + 4).min(1000) as i32;
            let page = self
                .client
                .query()
                .table_name(&self.data_table)
                .key_condition_expression(condition)
                .set_expression_attribute_values(Some(values.clone()))
                .consistent_read(true)
                .scan_index_forward(!range.reverse)
                .limit(page_limit)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                let slot = slot_from_item(item)?;
                if slot.version > head {
                    return Ok(None);
                }
                let mut entries: Vec<Entry> = slot
                    .entries
                    .into_iter()
                    .filter(|e| in_range(e, range, now))
                    .collect();
                if range.reverse {
                    entries.reverse();
                }
                for entry in entries {
                    out.push(entry);
                    if out.len() == limit {
                        return Ok(Some(out));
                    }
                }
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => return Ok(Some(out)),
            }
        }
    }
}
