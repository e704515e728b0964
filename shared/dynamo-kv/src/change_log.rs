//! Reading a database back for its backups: the change log after a commit, and
//! its live entries page by page (a snapshot's base).

use crate::items::{dynamo, log_item, log_part, log_sk, slot_from_item, PENDING, VER};
use crate::{now_ms, DynamoKv, LoggedCommit};
use aws_sdk_dynamodb::types::AttributeValue;
use denokv_proto::backup::BackupMutationRange;
use prost::Message;
use subkv_core::dynamo::{b, get_n, Item};
use subkv_kv::error::KvResult;
use subkv_kv::model::Entry;
use uuid::Uuid;

impl DynamoKv {
    /// A consistent query of a database's change records after commit `after`.
    pub(crate) fn log_after(
        &self,
        database: Uuid,
        after: u64,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.log_table)
            .key_condition_expression("pk = :pk AND sk > :after")
            .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
            .expression_attribute_values(":after", b(log_sk(after, u16::MAX)))
            .consistent_read(true)
    }

    /// The change log of a database after commit `after` (exclusive), oldest first,
    /// one [`LoggedCommit`] per commit with the entries of all its parts, at most
    /// `max_commits` of them, and no commit more once their encoded size reaches
    /// `max_bytes` (the first commit always comes whole). Consistent read. A commit is never returned in
    /// pieces: all parts of a change record are written by one transaction, so the
    /// query either ends after a whole commit or shows where the next one starts;
    /// a record whose parts expired one by one (TTL) is missing a part, and the
    /// commits from it on are left out ([`CommitAssembly`]): a hole. A large
    /// commit still pending is left out too (and what follows it): its record is
    /// final only once it is applied or resolved.
    pub async fn change_log(
        &self,
        database: Uuid,
        after: u64,
        max_commits: usize,
        max_bytes: usize,
    ) -> KvResult<Vec<LoggedCommit>> {
        let decided = self.decided(database).await?;
        let mut assembly = CommitAssembly::new(max_commits, max_bytes);
        let mut start_key: Option<Item> = None;
        loop {
            let page = self
                .log_after(database, after)
                .limit((max_commits.max(1) + 1).min(1000) as i32)
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(|e| dynamo("Query", e))?;
            for item in page.items() {
                let part = log_part(item)?;
                if part.version > decided || !assembly.push(part) {
                    return Ok(assembly.finish());
                }
            }
            match page.last_evaluated_key {
                Some(key) => start_key = Some(key),
                None => return Ok(assembly.finish()),
            }
        }
    }

    /// The last commit whose change record is final: the head's, or the one
    /// before while the head's is a large commit still pending (its record may
    /// yet be rewritten if it cannot be written whole, `resolve.rs`). Read before
    /// the change log, with which a commit writes its head in one transaction.
    async fn decided(&self, database: Uuid) -> KvResult<u64> {
        let out = self
            .client
            .get_item()
            .table_name(&self.data_table)
            .set_key(Some(Self::head_key(database)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo("GetItem", e))?;
        let head = out.item.as_ref();
        let version: u64 = head.and_then(|i| get_n(i, VER)).unwrap_or(0);
        let pending = head.is_some_and(|i| i.contains_key(PENDING));
        Ok(if pending {
            version.saturating_sub(1)
        } else {
            version
        })
    }

    /// One page of a database's live entries in key order, for a backup snapshot:
    /// the entries of the items after sort key `after` (from the start if None),
    /// reading at most `max_items` items, and the sort key to continue after (None
    /// when the scan is complete). Tombstones and expired entries are left out.
    /// Each item is read consistently; the page as a whole is not a snapshot (the
    /// backup's logs cover whatever changes meanwhile).
    pub async fn live_entries_page(
        &self,
        database: Uuid,
        after: Option<&[u8]>,
        max_items: i32,
    ) -> KvResult<(Vec<Entry>, Option<Vec<u8>>)> {
        let mut query = self
            .client
            .query()
            .table_name(&self.data_table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(database.to_string()))
            .consistent_read(true)
            .limit(max_items.clamp(1, 1000));
        if let Some(after) = after {
            query = query.set_exclusive_start_key(Some(Self::item_key(database, after)));
        }
        let page = query.send().await.map_err(|e| dynamo("Query", e))?;
        let now = now_ms();
        let mut entries = Vec::new();
        let mut last_sk = None;
        for item in page.items() {
            let slot = slot_from_item(item)?;
            entries.extend(slot.entries.into_iter().filter(|e| e.is_live(now)));
            last_sk = Some(slot.sk);
        }
        let next = match page.last_evaluated_key {
            Some(_) => last_sk,
            None => None,
        };
        Ok((entries, next))
    }

    /// Change records of a database after `after` (exclusive), oldest first.
    pub async fn change_records(
        &self,
        database: Uuid,
        after: u64,
        limit: i32,
    ) -> KvResult<Vec<(u64, BackupMutationRange)>> {
        let page = self
            .log_after(database, after)
            .limit(limit)
            .send()
            .await
            .map_err(|e| dynamo("Query", e))?;
        page.items().iter().map(log_item).collect()
    }
}

/// One change-log item: part `part` (the last two bytes of its `sk`) of the `parts`
/// parts of the change record of commit `version`.
#[derive(Clone, Debug, PartialEq)]
pub struct LogPart {
    pub version: u64,
    pub part: u16,
    pub parts: u16,
    pub range: BackupMutationRange,
}

/// Change-log items, read in sort-key order, assembled into whole commits (no I/O:
/// [`DynamoKv::change_log`] feeds it its query's items, [`whole_commits`] a list).
/// At most `max_commits` commits, and no commit more once their encoded size
/// reaches `max_bytes` (the first always comes whole).
///
/// A commit is returned only with all its parts, `0..parts` in order: DynamoDB's
/// TTL deletes each item on its own, so a record can be missing its first, middle
/// or last parts. Such a commit is treated as missing: the commits before it are
/// returned, it and none after it (they would hide the hole), so the backup engine
/// finds the change log ending before the head and re-snapshots.
#[derive(Debug)]
pub struct CommitAssembly {
    max_commits: usize,
    max_bytes: usize,
    bytes: usize,
    commits: Vec<LoggedCommit>,
    /// The commit being assembled: its next part and its part count.
    open: Option<(LoggedCommit, u16, u16)>,
    /// A limit was reached or a commit found partial: nothing more is taken.
    ended: bool,
}

impl CommitAssembly {
    pub fn new(max_commits: usize, max_bytes: usize) -> Self {
        Self {
            max_commits: max_commits.max(1),
            max_bytes,
            bytes: 0,
            commits: Vec::new(),
            open: None,
            ended: false,
        }
    }

    /// Takes the next item; false once it takes no more (nothing after it can be
    /// in the result: the reading can stop).
    pub fn push(&mut self, part: LogPart) -> bool {
        if self.ended {
            return false;
        }
        let LogPart {
            version,
            part,
            parts,
            range,
        } = part;
        if let Some((commit, next, count)) = self.open.as_mut().filter(|o| o.0.version == version) {
            if part != *next || parts != *count {
                return self.partial();
            }
            self.bytes += range.encoded_len();
            commit.entries.extend(range.entries);
            *next += 1;
            return true;
        }
        // Another commit begins: the one before must be whole.
        if let Some((commit, next, count)) = self.open.take() {
            if next != count {
                return self.partial();
            }
            self.commits.push(commit);
        }
        if self.commits.len() == self.max_commits
            || (!self.commits.is_empty() && self.bytes >= self.max_bytes)
        {
            self.ended = true;
            return false;
        }
        if part != 0 || parts == 0 {
            return self.partial();
        }
        self.bytes += range.encoded_len();
        let commit = LoggedCommit {
            version,
            timestamp_ms: range.timestamp_ms,
            entries: range.entries,
        };
        self.open = Some((commit, 1, parts));
        true
    }

    /// The commit being assembled is missing a part: it and what follows are left out.
    fn partial(&mut self) -> bool {
        self.open = None;
        self.ended = true;
        false
    }

    /// The whole commits assembled, oldest first (the last one read only if none
    /// of its parts is missing).
    pub fn finish(mut self) -> Vec<LoggedCommit> {
        if let Some((commit, next, count)) = self.open.take() {
            if next == count {
                self.commits.push(commit);
            }
        }
        self.commits
    }
}

/// [`CommitAssembly`] over a list of change-log items in sort-key order.
pub fn whole_commits(
    parts: impl IntoIterator<Item = LogPart>,
    max_commits: usize,
    max_bytes: usize,
) -> Vec<LoggedCommit> {
    let mut assembly = CommitAssembly::new(max_commits, max_bytes);
    for part in parts {
        if !assembly.push(part) {
            break;
        }
    }
    assembly.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use denokv_proto::backup::BackupReplicationLogEntry;

    /// The change record of commit `version` in `parts` items, part `i` holding
    /// the entry with key `<version>/<i>`.
    fn record(version: u64, parts: u16) -> Vec<LogPart> {
        (0..parts)
            .map(|part| LogPart {
                version,
                part,
                parts,
                range: BackupMutationRange {
                    entries: vec![BackupReplicationLogEntry {
                        key: format!("{version}/{part}").into_bytes(),
                        value: vec![0; 100],
                        ..Default::default()
                    }],
                    timestamp_ms: 1000 + version,
                },
            })
            .collect()
    }

    /// Each commit's version and its entries' keys.
    fn summary(commits: &[LoggedCommit]) -> Vec<(u64, Vec<String>)> {
        commits
            .iter()
            .map(|c| {
                let keys = c
                    .entries
                    .iter()
                    .map(|e| String::from_utf8_lossy(&e.key).into_owned())
                    .collect();
                (c.version, keys)
            })
            .collect()
    }

    fn keys(version: u64, parts: u16) -> (u64, Vec<String>) {
        (
            version,
            (0..parts).map(|p| format!("{version}/{p}")).collect(),
        )
    }

    #[test]
    fn a_commit_in_parts_comes_whole_with_its_entries_in_order() {
        let items = [record(1, 1), record(2, 3), record(3, 1)].concat();
        let commits = whole_commits(items, 10, usize::MAX);
        assert_eq!(summary(&commits), [keys(1, 1), keys(2, 3), keys(3, 1)]);
        assert_eq!(commits[1].timestamp_ms, 1002);
    }

    #[test]
    fn a_commit_missing_a_part_is_not_returned_and_nothing_after_it() {
        // Its first, middle or last part expired (TTL deletes each item on its
        // own): the commits before it come, it and the later ones do not (the
        // backup engine finds the hole after them and re-snapshots).
        for missing in 0..3 {
            let mut partial = record(2, 3);
            partial.remove(missing);
            let items = [record(1, 1), partial, record(3, 2), record(4, 1)].concat();
            assert_eq!(
                summary(&whole_commits(items, 10, usize::MAX)),
                [keys(1, 1)],
                "part {missing} missing"
            );
        }
        // The last parts of the last commit read.
        let items = [record(1, 1), record(2, 3)[..2].to_vec()].concat();
        assert_eq!(summary(&whole_commits(items, 10, usize::MAX)), [keys(1, 1)]);
        // The first commit read.
        let items = [record(2, 3)[1..].to_vec(), record(3, 1)].concat();
        assert!(whole_commits(items, 10, usize::MAX).is_empty());
        let items = [record(2, 3)[..1].to_vec(), record(3, 1)].concat();
        assert!(whole_commits(items, 10, usize::MAX).is_empty());
    }

    #[test]
    fn the_limits_count_whole_commits() {
        let items = [record(1, 2), record(2, 3), record(3, 1)].concat();
        let two = whole_commits(items.clone(), 2, usize::MAX);
        assert_eq!(summary(&two), [keys(1, 2), keys(2, 3)]);
        // The first commit comes whole past the byte limit; none after it.
        let one = whole_commits(items, 10, 1);
        assert_eq!(summary(&one), [keys(1, 2)]);
    }
}
