//! Reads: the head, the items a commit plans on, and snapshot reads (`get`,
//! `getMany`, `list`), consistent without transactions.
//!
//! A snapshot read never uses a transaction: on DynamoDB a `TransactGetItems`
//! that meets a commit's `TransactWriteItems` on the head cancels it, so
//! transactional readers would cancel writers on a busy database. Instead a read
//! starts from a head version `V` (one this instance saw within [`HEAD_TRUST`],
//! else it reads the head), reads its items with plain consistent reads, then
//! reads the change log after `V`:
//! - no commit after `V` touched a key the read covers: what it read is the
//!   state of those keys now (the usual case, and the only one without writers);
//! - else it finishes any pending commit, reads the change log up to the head
//!   `H` it finds, and corrects what it read with it: each change record holds
//!   the resulting value (and expiry) of every key it wrote, so the answer is the
//!   state at `H` exactly. A read is never retried, so a range whose items keep
//!   changing cannot starve it.
//!
//! Deletions leave nothing in the data table (no tombstones, see
//! [`crate::items::slot_write`]): the change log is how a read learns of them.
//! Pages grow geometrically, so expired entries awaiting the sweeper cost a few
//! queries, not one per entry; a request reads at most [`MAX_PAGES`] pages, and
//! stops as soon as its answer is over the largest one subkv gives
//! ([`MAX_READ_RESPONSE_BYTES`]: refused with a 400, decision 32).
//!
//! [`HEAD_TRUST`]: crate::HEAD_TRUST

use crate::change_log::CommitAssembly;
use crate::items::{dynamo, log_part, log_sk, slot_from_item, GONE, PENDING, VER};
use crate::{backoff, now_ms, DynamoKv, LoggedCommit};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use denokv_proto::backup::BackupKvMutationKind;
use denokv_proto::ReadRange;
use std::collections::{BTreeMap, BTreeSet};
use subkv_core::dynamo::{b, get_n, Item};
use subkv_kv::error::{KvError, KvResult};
use subkv_kv::keys::{is_point_range, range_bounds, sort_key};
use subkv_kv::limits::{read_too_large, MAX_READ_RESPONSE_BYTES};
use subkv_kv::model::{Entry, Slot};
use uuid::Uuid;

/// Most pages of range queries one snapshot read makes (each at most 1 MB).
/// Only expired entries the sweeper has not yet deleted can make a read need
/// more: it then answers 503 (the client retries; the sweeper catches up).
pub(crate) const MAX_PAGES: usize = 100;
/// The first page of a range asks for its limit and this many more items.
const FIRST_PAGE_SLACK: usize = 4;
/// Most change-log bytes one read takes in to check itself: far more than the
/// commits of the few milliseconds a read lasts.
const MAX_LOG_BYTES: usize = 8 << 20;
/// Most keys per BatchGetItem.
const BATCH_GET_KEYS: usize = 100;
/// Attempts at the keys a BatchGetItem leaves unprocessed (throttled, or over
/// its 16 MB).
const BATCH_GET_ATTEMPTS: u32 = 8;
/// Attempts at reading the commits up to the head without a gap (a commit
/// whose transaction is still becoming visible).
const SETTLE_ATTEMPTS: u32 = 10;

/// One range of a snapshot read, as far as it has been read.
struct Scan<'r> {
    range: &'r ReadRange,
    /// `get`/`getMany`: one key, read with the other points in one BatchGetItem.
    point: bool,
    /// Entries read in the range (expired ones too: the answer filters).
    seen: Vec<Entry>,
    /// Sort key of the last item read: every key up to it, in scan order, is
    /// covered.
    last_sk: Option<Vec<u8>>,
    /// Where the next page starts.
    next: Option<Item>,
    /// The whole range is read.
    done: bool,
    /// Limit of the next page.
    page: usize,
    /// The newest version of an item read.
    newest: u64,
}

impl<'r> Scan<'r> {
    fn new(range: &'r ReadRange) -> Self {
        Scan {
            range,
            point: is_point_range(&range.start, &range.end),
            seen: Vec::new(),
            last_sk: None,
            next: None,
            done: range.start.as_slice() >= range.end.as_slice(),
            page: range.limit.get() as usize + FIRST_PAGE_SLACK,
            newest: 0,
        }
    }

    fn limit(&self) -> usize {
        self.range.limit.get() as usize
    }

    fn in_range(&self, key: &[u8]) -> bool {
        key >= self.range.start.as_slice() && key < self.range.end.as_slice()
    }

    /// Whether the read has covered `key`: in the range, and up to the last
    /// item read in scan order (sort keys order like keys).
    fn covers(&self, key: &[u8]) -> bool {
        if !self.in_range(key) {
            return false;
        }
        if self.done {
            return true;
        }
        match &self.last_sk {
            None => false,
            Some(last) if self.range.reverse => sort_key(key) >= *last,
            Some(last) => sort_key(key) <= *last,
        }
    }

    /// Whether a commit in `log` wrote a key this read covers.
    fn touched_by(&self, log: &[LoggedCommit]) -> bool {
        log.iter()
            .flat_map(|c| &c.entries)
            .any(|m| self.covers(&m.key))
    }

    /// The answer: what was read, corrected by `log` (commits after the version
    /// the read started from, oldest first), live at `now`, in scan order, at
    /// most the range's limit.
    fn answer(&self, log: &[LoggedCommit], now: i64) -> Vec<Entry> {
        let mut entries: BTreeMap<&[u8], Entry> = self
            .seen
            .iter()
            .filter(|e| self.in_range(&e.key))
            .map(|e| (e.key.as_slice(), e.clone()))
            .collect();
        for commit in log {
            for m in commit.entries.iter().filter(|m| self.covers(&m.key)) {
                if m.kind == BackupKvMutationKind::MkClear as i32 {
                    entries.remove(m.key.as_slice());
                } else {
                    let entry = Entry {
                        key: m.key.clone(),
                        value: m.value.clone(),
                        encoding: i64::from(m.value_encoding),
                        version: commit.version,
                        seq: 0,
                        expire_at_ms: (m.expire_at_ms > 0)
                            .then(|| i64::try_from(m.expire_at_ms).unwrap_or(i64::MAX)),
                    };
                    entries.insert(m.key.as_slice(), entry);
                }
            }
        }
        let live = entries.into_values().filter(|e| e.is_live(now));
        if self.range.reverse {
            live.rev().take(self.limit()).collect()
        } else {
            live.take(self.limit()).collect()
        }
    }

    /// Whether the read of this range can answer: it is complete, or holds its
    /// limit of live entries.
    fn satisfied(&self, log: &[LoggedCommit], now: i64) -> bool {
        self.done || self.answer(log, now).len() >= self.limit()
    }
}

/// The entries the scans would answer now, and a lower bound of their encoded
/// size (their keys and values).
fn answer_size(scans: &[Scan<'_>], log: &[LoggedCommit], now: i64) -> (usize, usize) {
    scans
        .iter()
        .flat_map(|s| s.answer(log, now))
        .fold((0, 0), |(n, bytes), e| {
            (n + 1, bytes + e.key.len() + e.value.len())
        })
}

/// Whether `log` is every commit after `from`, consecutive, through at least
/// `newest` (the newest item a read saw).
fn follows(log: &[LoggedCommit], from: u64, newest: u64) -> bool {
    log.iter()
        .enumerate()
        .all(|(i, c)| c.version == from + 1 + i as u64)
        && from + log.len() as u64 >= newest
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
            if out.item.as_ref().is_some_and(|i| i.contains_key(GONE)) {
                return Err(crate::purge::deleted(database));
            }
            let version = out.item.as_ref().and_then(|i| get_n(i, VER)).unwrap_or(0);
            if out.item.as_ref().is_some_and(|i| i.contains_key(PENDING)) {
                self.roll_forward(database, version).await?;
                continue;
            }
            self.remember_head(database, Some(version));
            return Ok(version);
        }
    }

    /// These items, by sort key (an absent item: an empty slot), each read
    /// consistently (BatchGetItem), not as one snapshot: a commit planned on them
    /// is conditioned on the head it read before them, which makes it one.
    pub(crate) async fn get_slots(
        &self,
        database: Uuid,
        sks: &BTreeSet<Vec<u8>>,
    ) -> KvResult<BTreeMap<Vec<u8>, Slot>> {
        let mut slots: BTreeMap<Vec<u8>, Slot> = sks
            .iter()
            .map(|sk| (sk.clone(), Slot::empty(sk.clone())))
            .collect();
        let list: Vec<&Vec<u8>> = sks.iter().collect();
        for chunk in list.chunks(BATCH_GET_KEYS) {
            let mut keys: Vec<Item> = chunk
                .iter()
                .map(|sk| Self::item_key(database, sk))
                .collect();
            let mut attempt = 0;
            while !keys.is_empty() {
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| KvError::Internal(format!("BatchGetItem request: {e}")))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.data_table, request)
                    .send()
                    .await
                    .map_err(|e| dynamo("BatchGetItem", e))?;
                let items = out
                    .responses
                    .and_then(|mut r| r.remove(&self.data_table))
                    .unwrap_or_default();
                for item in &items {
                    let slot = slot_from_item(item)?;
                    slots.insert(slot.sk.clone(), slot);
                }
                keys = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.data_table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    if attempt == BATCH_GET_ATTEMPTS {
                        return Err(KvError::Unavailable(
                            "storage is busy (reads left unprocessed); retry".into(),
                        ));
                    }
                    backoff(attempt).await;
                    attempt += 1;
                }
            }
        }
        Ok(slots)
    }

    /// Reads point keys as one snapshot: the live entry of each, in order.
    pub async fn get_many(&self, database: Uuid, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Entry>>> {
        let ranges: Vec<ReadRange> = keys
            .iter()
            .map(|key| ReadRange {
                start: key.clone(),
                end: [key.as_slice(), &[0]].concat(),
                limit: std::num::NonZeroU32::MIN,
                reverse: false,
            })
            .collect();
        let results = self.snapshot_read(database, &ranges).await?;
        Ok(results.into_iter().map(|r| r.into_iter().next()).collect())
    }

    /// A consistent snapshot across every range (see the module's documentation).
    pub async fn snapshot_read(
        &self,
        database: Uuid,
        ranges: &[ReadRange],
    ) -> KvResult<Vec<Vec<Entry>>> {
        let (mut from, mut trusted) = match self.recent_head(database) {
            Some(version) => (version, true),
            None => (self.head(database).await?, false),
        };
        let mut scans: Vec<Scan> = ranges.iter().map(Scan::new).collect();
        let mut log: Vec<LoggedCommit> = Vec::new();
        let mut pages = 0;
        loop {
            self.read_points(database, &mut scans).await?;
            loop {
                let now = now_ms();
                let unsatisfied: Vec<&mut Scan> = scans
                    .iter_mut()
                    .filter(|s| !s.satisfied(&log, now))
                    .collect();
                if unsatisfied.is_empty() {
                    break;
                }
                pages += unsatisfied.len();
                if pages > MAX_PAGES {
                    return Err(KvError::Unavailable(format!(
                        "the range holds more expired entries than one read scans ({MAX_PAGES} \
                         pages); they are being deleted, retry"
                    )));
                }
                let reads = unsatisfied
                    .into_iter()
                    .map(|scan| self.read_page(database, scan));
                futures_util::future::try_join_all(reads).await?;
                // An answer already over the largest one subkv gives is refused
                // now, not after reading the rest of it.
                let now = now_ms();
                let (entries, bytes) = answer_size(&scans, &log, now);
                if bytes > MAX_READ_RESPONSE_BYTES {
                    return Err(read_too_large(entries, bytes));
                }
            }
            let Some(after) = self.commits_after(database, from, None).await? else {
                // More commits since the version it started from than a read takes
                // in: start again from the head, once.
                if !trusted {
                    return Err(KvError::Unavailable(
                        "the database changes faster than a read can follow; retry".into(),
                    ));
                }
                trusted = false;
                from = self.head(database).await?;
                scans = ranges.iter().map(Scan::new).collect();
                log.clear();
                continue;
            };
            let newest = scans.iter().map(|s| s.newest).max().unwrap_or(0);
            if follows(&after, from, newest) && !scans.iter().any(|s| s.touched_by(&after)) {
                let now = now_ms();
                return Ok(scans.iter().map(|s| s.answer(&after, now)).collect());
            }
            // Commits touched what it read: the state at the head, from the log.
            log = self.settle(database, from, newest).await?;
            let now = now_ms();
            if scans.iter().all(|s| s.satisfied(&log, now)) {
                return Ok(scans.iter().map(|s| s.answer(&log, now)).collect());
            }
            // Deletions left a range short of its limit: read on, check again.
        }
    }

    /// Reads the point ranges not yet read, in one BatchGetItem.
    async fn read_points(&self, database: Uuid, scans: &mut [Scan<'_>]) -> KvResult<()> {
        let sks: BTreeSet<Vec<u8>> = scans
            .iter()
            .filter(|s| s.point && !s.done)
            .map(|s| sort_key(&s.range.start))
            .collect();
        if sks.is_empty() {
            return Ok(());
        }
        let slots = self.get_slots(database, &sks).await?;
        for scan in scans.iter_mut().filter(|s| s.point && !s.done) {
            let sk = sort_key(&scan.range.start);
            if let Some(slot) = slots.get(&sk) {
                scan.newest = scan.newest.max(slot.version);
                if let Some(entry) = slot.entries.iter().find(|e| e.key == scan.range.start) {
                    scan.seen.push(entry.clone());
                }
            }
            scan.done = true;
        }
        Ok(())
    }

    /// Reads the next page of a range: at most twice as many items as the one
    /// before, up to DynamoDB's 1 MB.
    async fn read_page(&self, database: Uuid, scan: &mut Scan<'_>) -> KvResult<()> {
        let (lower, upper) = range_bounds(&scan.range.start, &scan.range.end);
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
        let page = self
            .client
            .query()
            .table_name(&self.data_table)
            .key_condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .consistent_read(true)
            .scan_index_forward(!scan.range.reverse)
            .limit(scan.page.min(1000) as i32)
            .set_exclusive_start_key(scan.next.take())
            .send()
            .await
            .map_err(|e| dynamo("Query", e))?;
        for item in page.items() {
            let slot = slot_from_item(item)?;
            scan.newest = scan.newest.max(slot.version);
            scan.seen.extend(slot.entries);
            scan.last_sk = Some(slot.sk);
        }
        scan.next = page.last_evaluated_key;
        scan.done = scan.next.is_none();
        scan.page = (scan.page * 2).min(1000);
        Ok(())
    }

    /// Every commit after `from` up to the head (finishing a pending one) or the
    /// newest item read, if newer: a transaction's items become visible one by
    /// one, so an item may show a commit whose head or record a read cannot see
    /// yet. Versions are consecutive (every commit, even an abandoned one, has
    /// a record), so a gap is such a commit: read again, briefly.
    async fn settle(&self, database: Uuid, from: u64, newest: u64) -> KvResult<Vec<LoggedCommit>> {
        for attempt in 0..SETTLE_ATTEMPTS {
            let upto = self.head(database).await?.max(newest);
            if let Some(log) = self.commits_after(database, from, Some(upto)).await? {
                if follows(&log, from, upto) {
                    return Ok(log);
                }
            }
            backoff(attempt).await;
        }
        Err(KvError::Unavailable(
            "the database changes faster than a read can follow; retry".into(),
        ))
    }

    /// The commits after `after` (up to `upto`, if given), oldest first, each
    /// whole; None if they are more than a read takes in ([`MAX_LOG_BYTES`]) or
    /// a record is missing a part (only records older than the change log's
    /// retention can be: the version is older than any read lasts).
    async fn commits_after(
        &self,
        database: Uuid,
        after: u64,
        upto: Option<u64>,
    ) -> KvResult<Option<Vec<LoggedCommit>>> {
        let mut assembly = CommitAssembly::new(usize::MAX, usize::MAX);
        let mut last: Option<(u16, u16)> = None;
        let mut bytes = 0;
        let mut start_key: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.log_table)
                .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
                .expression_attribute_values(":after", b(log_sk(after, u16::MAX)))
                .consistent_read(true)
                .set_exclusive_start_key(start_key.take());
            query = match upto {
                Some(upto) => query
                    .key_condition_expression("pk = :pk AND sk BETWEEN :after AND :upto")
                    .expression_attribute_values(":upto", b(log_sk(upto, u16::MAX))),
                None => query.key_condition_expression("pk = :pk AND sk > :after"),
            };
            let page = query.send().await.map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                let part = log_part(item)?;
                if part.version <= after {
                    continue; // BETWEEN includes its lower bound
                }
                bytes += part
                    .range
                    .entries
                    .iter()
                    .map(|e| e.key.len() + e.value.len())
                    .sum::<usize>();
                last = Some((part.part, part.parts));
                if bytes > MAX_LOG_BYTES || !assembly.push(part) {
                    return Ok(None);
                }
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => break,
            }
        }
        if last.is_some_and(|(part, parts)| part + 1 != parts) {
            return Ok(None);
        }
        Ok(Some(assembly.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use denokv_proto::backup::BackupReplicationLogEntry;
    use std::num::NonZeroU32;

    fn k(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    fn range(start: &str, end: &str, limit: u32, reverse: bool) -> ReadRange {
        ReadRange {
            start: k(start),
            end: k(end),
            limit: NonZeroU32::new(limit).unwrap(),
            reverse,
        }
    }

    fn entry(key: &str, version: u64, expire_at_ms: Option<i64>) -> Entry {
        Entry {
            key: k(key),
            value: vec![version as u8],
            encoding: 3,
            version,
            seq: 0,
            expire_at_ms,
        }
    }

    fn set(key: &str, expire_at_ms: u64) -> BackupReplicationLogEntry {
        BackupReplicationLogEntry {
            key: k(key),
            value: vec![0xee],
            value_encoding: 3,
            kind: BackupKvMutationKind::MkSet as i32,
            expire_at_ms,
            ..Default::default()
        }
    }

    fn clear(key: &str) -> BackupReplicationLogEntry {
        BackupReplicationLogEntry {
            key: k(key),
            kind: BackupKvMutationKind::MkClear as i32,
            ..Default::default()
        }
    }

    fn commit(version: u64, entries: Vec<BackupReplicationLogEntry>) -> LoggedCommit {
        LoggedCommit {
            version,
            timestamp_ms: 0,
            entries,
        }
    }

    fn keys(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.key).into_owned())
            .collect()
    }

    /// A scan of `r` that has read these entries, up to the item `last`.
    fn scanned<'r>(r: &'r ReadRange, seen: &[Entry], last: Option<&str>) -> Scan<'r> {
        let mut scan = Scan::new(r);
        scan.seen = seen.to_vec();
        scan.last_sk = last.map(k);
        scan.done = last.is_none();
        scan
    }

    #[test]
    fn what_was_read_is_the_answer_when_no_commit_touched_it() {
        let r = range("a", "z", 2, false);
        let seen = [
            entry("b", 1, None),
            entry("c", 2, None),
            entry("d", 2, None),
        ];
        let scan = scanned(&r, &seen, Some("d"));
        // A commit outside the range, and one past what was read.
        let log = [commit(3, vec![set("zz", 0)]), commit(4, vec![clear("e")])];
        assert!(!scan.touched_by(&log));
        assert_eq!(keys(&scan.answer(&log, 0)), ["b", "c"]);
    }

    #[test]
    fn the_log_corrects_what_was_read_to_the_state_at_its_last_commit() {
        let r = range("a", "z", 10, false);
        // "b" was read before commit 3 deleted it; "c" before commit 4 rewrote
        // it; "d" was not there yet when the scan passed it.
        let seen = [
            entry("b", 1, None),
            entry("c", 1, None),
            entry("e", 2, None),
        ];
        let scan = scanned(&r, &seen, Some("e"));
        let log = [
            commit(3, vec![clear("b"), set("d", 0)]),
            commit(4, vec![set("c", 0), set("b", 0)]),
            commit(5, vec![clear("b")]),
        ];
        assert!(scan.touched_by(&log));
        let answer = scan.answer(&log, 0);
        assert_eq!(keys(&answer), ["c", "d", "e"]);
        assert_eq!(answer[0].version, 4);
        assert_eq!(answer[0].value, vec![0xee]);
        assert_eq!(answer[1].version, 3);
        assert_eq!(answer[2].version, 2);
    }

    #[test]
    fn only_what_the_scan_covered_is_corrected() {
        // Forward: keys past the last item read are not in the answer yet (the
        // keys between it and them are unknown), so a short answer reads on.
        let r = range("a", "z", 3, false);
        let scan = scanned(&r, &[entry("b", 1, None), entry("c", 1, None)], Some("c"));
        let log = [commit(2, vec![clear("c"), set("x", 0)])];
        assert_eq!(keys(&scan.answer(&log, 0)), ["b"]);
        assert!(!scan.satisfied(&log, 0));
        // Reverse: covered from the end down to the last item read.
        let r = range("a", "z", 3, true);
        let scan = scanned(&r, &[entry("y", 1, None), entry("x", 1, None)], Some("x"));
        let log = [commit(2, vec![set("b", 0), set("xa", 0)])];
        assert_eq!(keys(&scan.answer(&log, 0)), ["y", "xa", "x"]);
        assert!(scan.satisfied(&log, 0));
        // A complete scan covers its whole range, and nothing outside it.
        let r = range("b", "d", 5, false);
        let scan = scanned(&r, &[], None);
        let log = [commit(2, vec![set("a", 0), set("c", 0), set("d", 0)])];
        assert_eq!(keys(&scan.answer(&log, 0)), ["c"]);
    }

    #[test]
    fn expiry_hides_entries_read_and_entries_from_the_log() {
        let r = range("a", "z", 10, false);
        let scan = scanned(&r, &[entry("b", 1, Some(100)), entry("c", 1, None)], None);
        let log = [commit(2, vec![set("d", 100), set("e", 0)])];
        assert_eq!(keys(&scan.answer(&log, 99)), ["b", "c", "d", "e"]);
        assert_eq!(keys(&scan.answer(&log, 100)), ["c", "e"]);
        assert_eq!(scan.answer(&log, 0)[2].expire_at_ms, Some(100));
    }

    #[test]
    fn expired_entries_do_not_count_toward_the_limit() {
        let r = range("a", "z", 2, false);
        let seen = [
            entry("b", 1, Some(5)),
            entry("c", 1, Some(5)),
            entry("d", 1, None),
        ];
        let scan = scanned(&r, &seen, Some("d"));
        assert!(!scan.satisfied(&[], 10), "one live entry of two");
        assert!(scan.satisfied(&[], 0));
    }

    #[test]
    fn a_log_follows_only_when_consecutive_through_the_newest_item_read() {
        let log = |versions: &[u64]| -> Vec<LoggedCommit> {
            versions.iter().map(|v| commit(*v, vec![])).collect()
        };
        assert!(follows(&log(&[]), 7, 7));
        assert!(follows(&log(&[]), 7, 3), "items older than the start");
        assert!(follows(&log(&[8, 9]), 7, 9));
        assert!(
            !follows(&log(&[]), 7, 8),
            "an item of a commit not in the log yet"
        );
        assert!(!follows(&log(&[8, 10]), 7, 10), "a gap");
        assert!(!follows(&log(&[9]), 7, 9), "the first is missing");
        assert!(!follows(&log(&[8]), 7, 9));
    }

    #[test]
    fn the_size_of_an_answer_counts_what_it_would_return() {
        let r = range("a", "z", 2, false);
        let seen = [
            entry("b", 1, None),
            entry("c", 1, None),
            entry("d", 1, None),
        ];
        let scan = scanned(&r, &seen, Some("d"));
        // Two entries of a one-byte key and a one-byte value; "d" is past the limit.
        assert_eq!(answer_size(&[scan], &[], 0), (2, 4));
    }

    #[test]
    fn point_ranges_are_read_by_key_and_empty_ranges_are_complete() {
        let point = ReadRange {
            start: k("p"),
            end: [k("p"), vec![0]].concat(),
            limit: NonZeroU32::MIN,
            reverse: false,
        };
        assert!(Scan::new(&point).point);
        assert!(!Scan::new(&point).done);
        let empty = range("m", "m", 1, false);
        assert!(Scan::new(&empty).done);
        assert!(Scan::new(&empty)
            .answer(&[commit(2, vec![set("m", 0)])], 0)
            .is_empty());
    }
}
