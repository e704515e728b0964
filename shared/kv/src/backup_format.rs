//! The backup format: KV data turned into the exact S3 object keys and bodies that
//! `denokv`'s point-in-time-recovery reader (crate `denokv_timemachine` 0.14) restores
//! from. Pure: no I/O. docs/backup-format.md is the contract; the facts below were
//! checked against the reader's source.
//!
//! Under the root `<prefix><databaseId>/` ([`root`]):
//!
//! - `differential` ([`differential_object`]): 20 lower-case hex characters, the
//!   10-byte versionstamp up to which the snapshot plus the logs are consistent. No
//!   newline: the reader hex-decodes the whole body into exactly 10 bytes.
//! - `snapshots/0001_<monoseq:016x>_<seq:016x>.bin` ([`snapshot_object`]): a protobuf
//!   `BackupSnapshotRange`; pair `i` of `data_list` is (`d` + key, value), pair `i` of
//!   `metadata_list` is (`m` + the same key, [`KeyMetadata`]). The reader asserts
//!   (panics) if the prefixes or the keys of a pair differ.
//! - `logs/0001_<monoseq:016x>_<first:024x>_<last:024x>.bin` ([`log_object`]): a
//!   protobuf `BackupMutationRange`; `first` and `last` are the 12-byte versionstamps
//!   of its first and last entries. The reader takes them from the name only (its
//!   first sync stops at the first object whose `first` is past the differential and
//!   that was written after the sync began).
//!
//! How the numbers are chosen:
//!
//! - **Log objects: `monoseq` = the version of the first commit the object holds.**
//!   The reader lists `logs/` in name order and resumes *after* the last name it read,
//!   so every object must sort after every object written before it. Each object starts
//!   after the previous object's last commit (the backup's cursor), so its first commit,
//!   and with it `monoseq`, strictly increases. An object retried after a crash
//!   (written, but the cursor not moved) starts at the same commit: it gets the same
//!   name, or the same `monoseq` and `first` with a different `last`. If it sorts after
//!   the original, the reader sees both and ignores the entries it already has; if it
//!   sorts before, it holds nothing the original lacks. Either way nothing is lost.
//! - **Snapshot objects: `monoseq` = the snapshot's generation** (chosen by the
//!   caller; a re-snapshot uses a higher one) and `seq` = the chunk index. The reader's
//!   first sync loads every snapshot object, in (`monoseq`, `seq`) order, whatever the
//!   generation.
//! - All numbers are zero-padded lower-case hex of a fixed width, so name order is
//!   numeric order.
//!
//! Rules [`log_object`] enforces ([`FormatError`] otherwise):
//!
//! - **A commit is never split across objects.** [`Commit`] carries the entries of all
//!   of a commit's change-record parts. The reader refuses to check out a state whose
//!   last applied entry is not a commit's last (`"redo/undo log did not end at a
//!   snapshot boundary"`), and `pitr sync` checks out the newest state after its first
//!   sync, so an object ending mid-commit could break a restore.
//! - Entry versionstamps are 12 bytes: the commit's versionstamp
//!   ([`crate::model::versionstamp`]) then a big-endian index that strictly
//!   increases within the commit; the commit's last entry, and only it, has index
//!   `0xffff` ([`COMMIT_END`]). The reader keys its log by these 12 bytes (a duplicate
//!   is dropped) and only `0xffff` entries are recovery points.
//! - Commits strictly increase by version.
//!
//! A commit without mutations (an atomic write of checks only) has an empty change
//! record: it adds no entry, and a batch of only such commits makes no object. The
//! object's `timestamp_ms` is the latest commit time in it: the reader stamps every
//! entry of an object with that one time, which `pitr list` shows for each recovery
//! point.
//!
//! What the reader ignores: the expiry in snapshot metadata and in log entries (a
//! restored key never expires; expiries reach a backup as the sweeper's deletions) and
//! every mutation kind but CLEAR (anything else is a SET of `value`).

use crate::model::{versionstamp, Entry};
use denokv_proto::backup::{
    BackupKvMutationKind, BackupKvPair, BackupMutationRange, BackupReplicationLogEntry,
    BackupSnapshotRange,
};
use prost::Message;
use uuid::Uuid;

/// The format version in every object name (`0001`).
pub const FORMAT_VERSION: u16 = 1;

/// The index of a commit's last entry: only these entries are recovery points.
pub const COMMIT_END: u16 = 0xffff;

/// Snapshot metadata's `expire_at_ms` for a key that never expires.
pub const NO_EXPIRY: i64 = -1;

/// One object to `PutObject`: its full key in the bucket and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub body: Vec<u8>,
}

/// One commit's change record: the entries of all its parts, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub version: u64,
    /// The commit time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub entries: Vec<BackupReplicationLogEntry>,
}

/// A batch that would make a log object the reader cannot restore correctly.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("commit {version} follows commit {previous}: commits must strictly increase")]
    OutOfOrder { previous: u64, version: u64 },
    #[error(
        "commit {version}, entry {index}: versionstamp {found} is not the commit's \
         versionstamp followed by a 2-byte index"
    )]
    ForeignEntry {
        version: u64,
        index: usize,
        found: String,
    },
    #[error(
        "commit {version}, entry {index}: indices must strictly increase and only the \
         last entry's may be 0xffff"
    )]
    BadIndex { version: u64, index: usize },
    #[error("commit {version} is incomplete: its last entry's index is {found:#06x}, not 0xffff")]
    OpenCommit { version: u64, found: u16 },
    #[error("key {key}: value encoding {encoding} does not fit in a byte")]
    Encoding { key: String, encoding: i64 },
}

/// The root of a database's backup: `<prefix><databaseId>/`. The tenant passes it to
/// `denokv` as `--s3-prefix`.
pub fn root(prefix: &str, database: Uuid) -> String {
    format!("{prefix}{database}/")
}

/// A 12-byte entry versionstamp: commit `version`'s versionstamp, then `index`.
pub fn versionstamp12(version: u64, index: u16) -> [u8; 12] {
    let mut vs = [0u8; 12];
    vs[..10].copy_from_slice(&versionstamp(version));
    vs[10..].copy_from_slice(&index.to_be_bytes());
    vs
}

/// The `logs/` object of a batch of consecutive commits, oldest first; `None` if they
/// hold no entries (no commits, or only commits without mutations).
pub fn log_object(
    prefix: &str,
    database: Uuid,
    commits: Vec<Commit>,
) -> Result<Option<Object>, FormatError> {
    let Some((monoseq, first, last)) = check_commits(&commits)? else {
        return Ok(None);
    };
    let timestamp_ms = commits.iter().map(|c| c.timestamp_ms).max().unwrap_or(0);
    let entries: Vec<BackupReplicationLogEntry> =
        commits.into_iter().flat_map(|c| c.entries).collect();
    let key = format!(
        "{}logs/{FORMAT_VERSION:04x}_{monoseq:016x}_{}_{}.bin",
        root(prefix, database),
        hex::encode(first),
        hex::encode(last)
    );
    let body = BackupMutationRange {
        entries,
        timestamp_ms,
    }
    .encode_to_vec();
    Ok(Some(Object { key, body }))
}

/// A log object's `monoseq` and its first and last entry versionstamps.
type LogBounds = (u64, [u8; 12], [u8; 12]);

/// Checks the rules of [`log_object`]; returns the object's bounds, or None if it has
/// no entries.
fn check_commits(commits: &[Commit]) -> Result<Option<LogBounds>, FormatError> {
    let mut bounds: Option<LogBounds> = None;
    let mut previous: Option<u64> = None;
    for commit in commits {
        let version = commit.version;
        if let Some(previous) = previous.filter(|p| *p >= version) {
            return Err(FormatError::OutOfOrder { previous, version });
        }
        previous = Some(version);
        let vs = versionstamp(version);
        let mut last_index: Option<u16> = None;
        for (index, entry) in commit.entries.iter().enumerate() {
            let entry_vs = <[u8; 12]>::try_from(entry.versionstamp.as_slice())
                .ok()
                .filter(|e| e[..10] == vs)
                .ok_or_else(|| FormatError::ForeignEntry {
                    version,
                    index,
                    found: hex::encode(&entry.versionstamp),
                })?;
            match &mut bounds {
                None => bounds = Some((version, entry_vs, entry_vs)),
                Some((_, _, last)) => *last = entry_vs,
            }
            let entry_index = u16::from_be_bytes([entry_vs[10], entry_vs[11]]);
            let is_last = index + 1 == commit.entries.len();
            if last_index.is_some_and(|l| l >= entry_index)
                || (!is_last && entry_index == COMMIT_END)
            {
                return Err(FormatError::BadIndex { version, index });
            }
            last_index = Some(entry_index);
        }
        if let Some(found) = last_index.filter(|l| *l != COMMIT_END) {
            return Err(FormatError::OpenCommit { version, found });
        }
    }
    Ok(bounds)
}

/// Snapshot metadata of one key: what `metadata_list[i].value` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMetadata {
    /// The versionstamp of the commit that last wrote the key.
    pub versionstamp: [u8; 10],
    /// denokv value encoding: 1 V8, 2 little-endian u64, 3 bytes.
    pub encoding: u8,
    /// Milliseconds since the Unix epoch; None never expires.
    pub expire_at_ms: Option<i64>,
}

impl KeyMetadata {
    /// 19 bytes: the versionstamp, the encoding, then `expire_at_ms` as an i64
    /// little-endian ([`NO_EXPIRY`] for none).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(19);
        out.extend_from_slice(&self.versionstamp);
        out.push(self.encoding);
        out.extend_from_slice(&self.expire_at_ms.unwrap_or(NO_EXPIRY).to_le_bytes());
        out
    }

    /// Decodes as the reader does: at least 11 bytes; without the 8 expiry bytes (or
    /// with [`NO_EXPIRY`]) the key never expires; bytes beyond 19 are ignored.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        let versionstamp = <[u8; 10]>::try_from(raw.get(..10)?).ok()?;
        let encoding = *raw.get(10)?;
        let expire_at_ms = raw
            .get(11..19)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_le_bytes)
            .filter(|at| *at != NO_EXPIRY);
        Some(Self {
            versionstamp,
            encoding,
            expire_at_ms,
        })
    }
}

/// Chunk `seq` of snapshot `generation`: the `snapshots/` object holding `entries`.
/// The caller passes the entries the restored database is to hold (live ones); keys
/// may come in any order but each only once per generation.
pub fn snapshot_object(
    prefix: &str,
    database: Uuid,
    generation: u64,
    seq: u64,
    entries: &[Entry],
) -> Result<Object, FormatError> {
    let mut range = BackupSnapshotRange {
        data_list: Vec::with_capacity(entries.len()),
        metadata_list: Vec::with_capacity(entries.len()),
    };
    for entry in entries {
        let encoding = u8::try_from(entry.encoding).map_err(|_| FormatError::Encoding {
            key: hex::encode(&entry.key),
            encoding: entry.encoding,
        })?;
        let meta = KeyMetadata {
            versionstamp: entry.versionstamp(),
            encoding,
            expire_at_ms: entry.expire_at_ms,
        };
        range.data_list.push(BackupKvPair {
            key: prefixed(b'd', &entry.key),
            value: entry.value.clone(),
        });
        range.metadata_list.push(BackupKvPair {
            key: prefixed(b'm', &entry.key),
            value: meta.encode(),
        });
    }
    let key = format!(
        "{}snapshots/{FORMAT_VERSION:04x}_{generation:016x}_{seq:016x}.bin",
        root(prefix, database)
    );
    Ok(Object {
        key,
        body: range.encode_to_vec(),
    })
}

fn prefixed(tag: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(tag);
    out.extend_from_slice(key);
    out
}

/// The start of the names of log objects whose `monoseq` is `monoseq`: every log
/// object of a smaller `monoseq` sorts before it.
pub fn log_key_prefix(prefix: &str, database: Uuid, monoseq: u64) -> String {
    format!(
        "{}logs/{FORMAT_VERSION:04x}_{monoseq:016x}",
        root(prefix, database)
    )
}

/// The body a log object is overwritten with to retract it: no entries. (PutObject
/// is the only operation on the tenant's bucket, so nothing is ever deleted.)
pub fn emptied_log_body() -> Vec<u8> {
    BackupMutationRange {
        entries: Vec::new(),
        timestamp_ms: 0,
    }
    .encode_to_vec()
}

/// The one entry of a commit that changes nothing: the deletion of the empty key
/// (no Deno KV key is empty), as the commit's last entry. Marks a commit in a log
/// (below), and replaces the change record of a commit that was abandoned.
pub fn no_op_entry(version: u64) -> BackupReplicationLogEntry {
    BackupReplicationLogEntry {
        versionstamp: versionstamp12(version, COMMIT_END).to_vec(),
        kind: BackupKvMutationKind::MkClear as i32,
        key: Vec::new(),
        value: Vec::new(),
        value_encoding: 0,
        expire_at_ms: 0,
    }
}

/// A log object holding one marker commit at `version`: a single entry, the deletion
/// of the empty key (no Deno KV key is empty, so applying it changes nothing), with
/// the commit's last index. Written before the `differential` when no log object
/// holds the differential's own commit, so that the reader's first sync, which
/// replays the logs from the start up to the first commit end at or after the
/// differential, has one to end at.
pub fn differential_marker(
    prefix: &str,
    database: Uuid,
    version: u64,
    timestamp_ms: u64,
) -> Result<Object, FormatError> {
    let commit = Commit {
        version,
        timestamp_ms,
        entries: vec![no_op_entry(version)],
    };
    log_object(prefix, database, vec![commit])?.ok_or(FormatError::OpenCommit { version, found: 0 })
}

/// The `differential` object: the snapshot plus the logs are consistent from commit
/// `version` on. It must be >= every version in the snapshot and written last.
pub fn differential_object(prefix: &str, database: Uuid, version: u64) -> Object {
    Object {
        key: format!("{}differential", root(prefix, database)),
        body: hex::encode(versionstamp(version)).into_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use denokv_proto::backup::BackupKvMutationKind;

    const DB: Uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);

    #[test]
    fn a_log_key_prefix_sorts_after_smaller_monoseqs_and_before_its_own() {
        let entry = |version: u64| BackupReplicationLogEntry {
            versionstamp: versionstamp12(version, COMMIT_END).to_vec(),
            kind: BackupKvMutationKind::MkClear as i32,
            key: vec![2, b'k', 0],
            value: vec![],
            value_encoding: 0,
            expire_at_ms: 0,
        };
        let object = |version: u64| {
            log_object(
                "p/",
                DB,
                vec![Commit {
                    version,
                    timestamp_ms: 1,
                    entries: vec![entry(version)],
                }],
            )
            .unwrap()
            .unwrap()
            .key
        };
        let below = log_key_prefix("p/", DB, 0x100);
        assert!(object(0xff) < below);
        assert!(object(0x100) > below);
        assert!(object(0x100).starts_with(&below));
        assert!(emptied_log_body().is_empty());
        assert_eq!(
            BackupMutationRange::decode(emptied_log_body().as_slice())
                .unwrap()
                .entries,
            vec![]
        );
    }

    fn set(version: u64, index: u16, key: &[u8]) -> BackupReplicationLogEntry {
        BackupReplicationLogEntry {
            versionstamp: versionstamp12(version, index).to_vec(),
            kind: BackupKvMutationKind::MkSet as i32,
            key: key.to_vec(),
            value: version.to_le_bytes().to_vec(),
            value_encoding: 2,
            expire_at_ms: 0,
        }
    }

    /// A commit of `n` mutations, indexed as the planner does (0, 1, ..., last 0xffff).
    fn commit(version: u64, n: u16) -> Commit {
        let entries = (0..n)
            .map(|i| {
                let index = if i + 1 == n { COMMIT_END } else { i };
                set(version, index, format!("k{i}").as_bytes())
            })
            .collect();
        Commit {
            version,
            timestamp_ms: 1_700_000_000_000 + version % 1_000_000,
            entries,
        }
    }

    fn log(commits: Vec<Commit>) -> Object {
        match log_object("backup/", DB, commits) {
            Ok(Some(object)) => object,
            other => panic!("expected an object, got {other:?}"),
        }
    }

    /// The name as the reader's `list_logs` parses it: (format, monoseq, first, last).
    fn parse_log_key(key: &str) -> (u16, u64, [u8; 12], [u8; 12]) {
        let name = key
            .strip_prefix(&format!("backup/{DB}/logs/"))
            .and_then(|k| k.strip_suffix(".bin"))
            .unwrap();
        let parts: Vec<&str> = name.split('_').collect();
        assert_eq!(parts.len(), 4, "{name}");
        assert_eq!(
            parts[0].len(),
            4,
            "a 4-digit format version selects monoseq"
        );
        let mut first = [0u8; 12];
        let mut last = [0u8; 12];
        hex::decode_to_slice(parts[2], &mut first).unwrap();
        hex::decode_to_slice(parts[3], &mut last).unwrap();
        (
            u16::from_str_radix(parts[0], 16).unwrap(),
            u64::from_str_radix(parts[1], 16).unwrap(),
            first,
            last,
        )
    }

    #[test]
    fn root_and_key_shapes() {
        assert_eq!(
            root("backup/", DB),
            "backup/01234567-89ab-cdef-0123-456789abcdef/"
        );
        assert_eq!(root("", DB), format!("{DB}/"));
        let object = log(vec![commit(10, 2), commit(11, 1)]);
        assert_eq!(
            object.key,
            format!(
                "backup/{DB}/logs/0001_000000000000000a_\
                 000000000000000a00000000_000000000000000b0000ffff.bin"
            )
        );
        assert_eq!(
            parse_log_key(&object.key),
            (1, 10, versionstamp12(10, 0), versionstamp12(11, COMMIT_END))
        );
        let snapshot = snapshot_object("backup/", DB, 3, 17, &[]).unwrap();
        assert_eq!(
            snapshot.key,
            format!("backup/{DB}/snapshots/0001_0000000000000003_0000000000000011.bin")
        );
    }

    #[test]
    fn log_names_sort_in_write_order() {
        // Batches as a backup writes them, each starting after the previous one's last
        // commit, across every change in hex width (and the 32-bit boundary).
        let starts = [
            1u64,
            9,
            10,
            15,
            16,
            255,
            256,
            0xfff,
            0x1000,
            0xffff_ffff,
            0x1_0000_0000,
            u64::MAX / 2,
            u64::MAX - 3,
        ];
        let mut written = Vec::new();
        for pair in starts.windows(2) {
            let (start, next) = (pair[0], pair[1]);
            let commits = [start, next - 1]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|v| commit(v, 3))
                .collect();
            written.push(log(commits).key);
        }
        // A retry after a crash starts at the same commit and may reach further: it
        // sorts right after the original.
        let original = log(vec![commit(40, 1), commit(41, 2)]).key;
        let retry = log(vec![commit(40, 1), commit(41, 2), commit(42, 1)]).key;
        assert!(original < retry);
        assert_eq!(
            original,
            log(vec![commit(40, 1), commit(41, 2)]).key,
            "the same batch gets the same name"
        );

        let mut sorted = written.clone();
        sorted.sort();
        assert_eq!(sorted, written);
        let monoseqs: Vec<u64> = written.iter().map(|k| parse_log_key(k).1).collect();
        assert_eq!(monoseqs, starts[..starts.len() - 1]);
        assert!(written.iter().all(|k| k.len() == written[0].len()));
    }

    #[test]
    fn snapshot_names_sort_by_generation_then_chunk() {
        let mut written = Vec::new();
        for generation in [1u64, 2, 0xf, 0x10, 0x1_0000_0000] {
            for seq in [0u64, 1, 9, 10, 15, 16, 255, 256] {
                written.push(snapshot_object("", DB, generation, seq, &[]).unwrap().key);
            }
        }
        let mut sorted = written.clone();
        sorted.sort();
        assert_eq!(sorted, written);
    }

    #[test]
    fn log_body_round_trips_and_every_commit_ends_with_ffff() {
        let commits = vec![commit(5, 3), commit(6, 1), commit(9, 2)];
        let object = log(commits.clone());
        let range = BackupMutationRange::decode(object.body.as_slice()).unwrap();
        let expected: Vec<_> = commits.iter().flat_map(|c| c.entries.clone()).collect();
        assert_eq!(range.entries, expected);
        assert_eq!(range.timestamp_ms, 1_700_000_000_009);

        // Group the decoded entries by commit as the reader sees them.
        let mut by_commit: std::collections::BTreeMap<Vec<u8>, Vec<u16>> = Default::default();
        for entry in &range.entries {
            assert_eq!(entry.versionstamp.len(), 12);
            by_commit
                .entry(entry.versionstamp[..10].to_vec())
                .or_default()
                .push(u16::from_be_bytes([
                    entry.versionstamp[10],
                    entry.versionstamp[11],
                ]));
        }
        assert_eq!(by_commit.len(), 3);
        for indices in by_commit.values() {
            assert_eq!(indices.last(), Some(&COMMIT_END));
            assert_eq!(indices.iter().filter(|i| **i == COMMIT_END).count(), 1);
        }
        // The versionstamps strictly increase through the object.
        assert!(range
            .entries
            .windows(2)
            .all(|w| w[0].versionstamp < w[1].versionstamp));
    }

    #[test]
    fn timestamp_is_the_latest_commit_time() {
        let mut commits = vec![commit(1, 1), commit(2, 1)];
        commits[0].timestamp_ms = 2_000;
        commits[1].timestamp_ms = 1_000; // another function's clock ran behind
        let range = BackupMutationRange::decode(log(commits).body.as_slice()).unwrap();
        assert_eq!(range.timestamp_ms, 2_000);
    }

    #[test]
    fn commits_without_entries_add_nothing() {
        assert_eq!(log_object("", DB, Vec::new()), Ok(None));
        assert_eq!(
            log_object("", DB, vec![commit(3, 0), commit(4, 0)]),
            Ok(None)
        );
        let object = log(vec![commit(3, 0), commit(4, 2), commit(5, 0), commit(6, 1)]);
        let (_, monoseq, first, last) = parse_log_key(&object.key);
        assert_eq!(monoseq, 4, "the first commit the object holds entries of");
        assert_eq!(first, versionstamp12(4, 0));
        assert_eq!(last, versionstamp12(6, COMMIT_END));
        let range = BackupMutationRange::decode(object.body.as_slice()).unwrap();
        assert_eq!(range.entries.len(), 3);
    }

    #[test]
    fn malformed_batches_are_refused() {
        let refused = |commits| log_object("", DB, commits).unwrap_err();
        assert_eq!(
            refused(vec![commit(5, 1), commit(5, 1)]),
            FormatError::OutOfOrder {
                previous: 5,
                version: 5
            }
        );
        assert!(matches!(
            refused(vec![commit(7, 1), commit(6, 1)]),
            FormatError::OutOfOrder { .. }
        ));

        // A commit cut short (a part missing): its last entry is not 0xffff.
        let mut open = commit(8, 3);
        open.entries.pop();
        assert_eq!(
            refused(vec![open]),
            FormatError::OpenCommit {
                version: 8,
                found: 1
            }
        );

        let mut foreign = commit(8, 2);
        foreign.entries[0].versionstamp = versionstamp12(7, 0).to_vec();
        assert!(matches!(
            refused(vec![foreign]),
            FormatError::ForeignEntry { index: 0, .. }
        ));
        let mut short = commit(8, 1);
        short.entries[0].versionstamp.truncate(10);
        assert!(matches!(
            refused(vec![short]),
            FormatError::ForeignEntry { .. }
        ));

        let mut early_end = commit(8, 2);
        early_end.entries[0].versionstamp = versionstamp12(8, COMMIT_END).to_vec();
        assert_eq!(
            refused(vec![early_end]),
            FormatError::BadIndex {
                version: 8,
                index: 0
            }
        );
        let mut duplicate = commit(8, 3);
        duplicate.entries[1].versionstamp = versionstamp12(8, 0).to_vec();
        assert_eq!(
            refused(vec![duplicate]),
            FormatError::BadIndex {
                version: 8,
                index: 1
            }
        );
    }

    fn entry(key: &[u8], version: u64, expire_at_ms: Option<i64>) -> Entry {
        Entry {
            key: key.to_vec(),
            value: format!("value of {}", hex::encode(key)).into_bytes(),
            encoding: 3,
            version,
            seq: 0,
            expire_at_ms,
        }
    }

    #[test]
    fn snapshot_pairs_match_and_round_trip() {
        let entries = vec![
            entry(b"\x02users\x00\x21", 7, None),
            entry(b"\x02a", 0x0102_0304_0506_0708, Some(1_700_000_000_123)),
            entry(&[0x02; 2048], 1, None),
        ];
        let object = snapshot_object("p/", DB, 2, 0, &entries).unwrap();
        assert_eq!(
            object.key,
            format!("p/{DB}/snapshots/0001_0000000000000002_0000000000000000.bin")
        );
        let range = BackupSnapshotRange::decode(object.body.as_slice()).unwrap();
        assert_eq!(range.data_list.len(), entries.len());
        assert_eq!(range.metadata_list.len(), entries.len());
        for ((data, meta), entry) in range
            .data_list
            .iter()
            .zip(&range.metadata_list)
            .zip(&entries)
        {
            // What the reader asserts for every pair.
            assert_eq!(data.key[0], b'd');
            assert_eq!(meta.key[0], b'm');
            assert_eq!(data.key[1..], meta.key[1..]);
            assert_eq!(data.key[1..], entry.key[..]);
            assert_eq!(data.value, entry.value);
            let decoded = KeyMetadata::decode(&meta.value).unwrap();
            assert_eq!(decoded.versionstamp, entry.versionstamp());
            assert_eq!(decoded.encoding, 3);
            assert_eq!(decoded.expire_at_ms, entry.expire_at_ms);
        }
    }

    #[test]
    fn snapshot_refuses_an_encoding_beyond_a_byte() {
        let mut bad = entry(b"\x02k", 1, None);
        bad.encoding = 256;
        assert_eq!(
            snapshot_object("", DB, 1, 0, &[bad]),
            Err(FormatError::Encoding {
                key: "026b".into(),
                encoding: 256
            })
        );
    }

    #[test]
    fn metadata_layout() {
        let never = KeyMetadata {
            versionstamp: versionstamp(0x0a0b),
            encoding: 1,
            expire_at_ms: None,
        };
        let raw = never.encode();
        assert_eq!(raw.len(), 19);
        assert_eq!(raw[..10], [0, 0, 0, 0, 0, 0, 0x0a, 0x0b, 0, 0]);
        assert_eq!(raw[10], 1);
        assert_eq!(raw[11..], (-1i64).to_le_bytes());
        assert_eq!(raw[11..], [0xff; 8]);
        assert_eq!(KeyMetadata::decode(&raw), Some(never));

        let expiring = KeyMetadata {
            expire_at_ms: Some(0x0102_0304_0506),
            ..never
        };
        let raw = expiring.encode();
        assert_eq!(raw[11..], [0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0, 0]);
        assert_eq!(KeyMetadata::decode(&raw), Some(expiring));

        // The reader's leniency: 11 bytes mean no expiry, fewer are invalid.
        assert_eq!(KeyMetadata::decode(&raw[..11]), Some(never));
        assert_eq!(KeyMetadata::decode(&raw[..10]), None);
    }

    #[test]
    fn differential_is_20_lower_case_hex() {
        let object = differential_object("backup/", DB, 0xab_cdef_0123);
        assert_eq!(object.key, format!("backup/{DB}/differential"));
        let body = std::str::from_utf8(&object.body).unwrap();
        assert_eq!(body, "000000abcdef01230000");
        assert_eq!(body.len(), 20);
        assert!(body
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        let mut vs = [0u8; 10];
        hex::decode_to_slice(body, &mut vs).unwrap();
        assert_eq!(vs, versionstamp(0xab_cdef_0123));
    }
}
