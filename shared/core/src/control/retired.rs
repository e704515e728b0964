//! Retired roots: what a deleted backup may have left in its tenant's bucket, kept
//! so that a later backup of the same database into the same root empties it
//! before its own differential (decision 26).
//!
//! A backup writes under the root `<prefix><databaseId>/` of its bucket at its
//! endpoint; the backup engine can only `PutObject` there, so a deleted backup's
//! `logs/` and `snapshots/` stay, and denokv's first sync would replay them over a
//! new backup's snapshot. Deleting a backup therefore keeps its ledger
//! (`BKLOG#<backup>`, the names of its log objects) and records, in the same
//! transaction, one item per (database, root):
//!
//! | pk | sk | attributes |
//! |---|---|---|
//! | `DB#<db>` | `RETIRED#<sha256 hex of endpoint, bucket, prefix>` | `backupId` (whose ledger names the log objects), `staleGen` and `staleSeq` (its snapshot chunks `0..=staleSeq` of generation `staleGen`), `nextGen` (the generation a new backup there starts at), `retiredAt` (ms), and `endpoint`, `bucketName`, `prefix` for people reading the table |
//!
//! The engine reads it when a backup's first snapshot begins and deletes it, with
//! the ledger, once everything it names is emptied (`subkv_backup::progress`).
//! Several roots of one database may be retired at once (a backup moved to
//! another bucket leaves the first alone); each root has at most one item.

use super::records::BackupRecord;
use crate::auth::hex;
use crate::dynamo::{get_n, get_s, n, s, Item};
use aws_sdk_dynamodb::types::AttributeValue;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Now, in milliseconds since the Unix epoch (a retired root's `retiredAt`).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Sort keys of retired roots begin with this (partition `DB#<db>`).
pub const RETIRED_SK_PREFIX: &str = "RETIRED#";

/// What a deleted backup left under its root, for the next backup there to empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetiredRoot {
    /// The deleted backup: its ledger (`BKLOG#<backup_id>`) names every log object
    /// it wrote under the root, all to be emptied.
    pub backup_id: Uuid,
    /// Its snapshot chunks `0..=chunks` of `generation` are to be emptied.
    pub generation: u64,
    pub chunks: u64,
    /// Above every generation it wrote: a new backup's chunk names never collide.
    pub next_generation: u64,
    /// When it was deleted (ms): a put it had in flight may land until then plus
    /// the engine's put margin.
    pub retired_at_ms: i64,
}

/// A stale generation a backup had not finished emptying (`staleGen`, `staleSeq`,
/// `staleLedger`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleMark {
    pub generation: u64,
    pub chunks: u64,
    /// Whose ledger names its logs; None: the backup's own.
    pub ledger: Option<Uuid>,
}

/// The backup engine's progress attributes (`subkv_backup::progress`) that say
/// what a backup may have written to its bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WrittenSoFar {
    /// `logCursor` exists: the first snapshot began.
    pub began: bool,
    pub generation: Option<u64>,
    pub seq: Option<u64>,
    pub stale: Option<StaleMark>,
}

/// The attributes [`WrittenSoFar`] is read from (besides `logCursor`).
const MARKS: [&str; 5] = ["snapGen", "snapSeq", "staleGen", "staleSeq", "staleLedger"];

impl WrittenSoFar {
    /// From a backup item.
    pub fn of(item: &Item) -> Self {
        let stale = match (get_n(item, "staleGen"), get_n(item, "staleSeq")) {
            (Some(generation), Some(chunks)) => Some(StaleMark {
                generation,
                chunks,
                ledger: get_s(item, "staleLedger").and_then(|id| Uuid::parse_str(id).ok()),
            }),
            _ => None,
        };
        Self {
            began: item.contains_key("logCursor"),
            generation: get_n(item, "snapGen"),
            seq: get_n(item, "snapSeq"),
            stale,
        }
    }

    /// A condition that holds while the item's attributes still say what `item`
    /// said (the engine may move them between a read and a write), with its
    /// values (`:w0`...).
    pub fn unchanged(item: &Item) -> (String, Vec<(String, AttributeValue)>) {
        let mut terms = vec![if item.contains_key("logCursor") {
            "attribute_exists(logCursor)".to_string()
        } else {
            "attribute_not_exists(logCursor)".to_string()
        }];
        let mut values = Vec::new();
        for (i, name) in MARKS.iter().enumerate() {
            match item.get(*name) {
                Some(value) => {
                    let placeholder = format!(":w{i}");
                    terms.push(format!("{name} = {placeholder}"));
                    values.push((placeholder, value.clone()));
                }
                None => terms.push(format!("attribute_not_exists({name})")),
            }
        }
        (terms.join(" AND "), values)
    }
}

/// What deleting backup `backup_id` retires, given what it may have written:
///
/// - nothing if its first snapshot never began (it wrote nothing);
/// - nothing if it was still emptying an earlier deleted backup's objects (it
///   writes none of its own before they are emptied, and that backup's retired
///   root stays until they are);
/// - else its ledger, and its chunks: those of the stale generation it had not
///   finished emptying if there is one (it writes nothing of its current
///   generation before that is emptied), else those of its current generation,
///   up to and including `snapSeq`, the one a step may be putting.
pub fn retirement(
    backup_id: Uuid,
    written: &WrittenSoFar,
    now_ms: i64,
) -> Result<Option<RetiredRoot>, String> {
    if !written.began {
        return Ok(None);
    }
    if let Some(StaleMark {
        ledger: Some(owner),
        ..
    }) = written.stale
    {
        if owner != backup_id {
            return Ok(None);
        }
    }
    let (Some(current), Some(seq)) = (written.generation, written.seq) else {
        return Err(format!(
            "backup {backup_id} has a cursor but no snapGen or snapSeq"
        ));
    };
    let (generation, chunks) = match written.stale {
        Some(stale) => (stale.generation, stale.chunks),
        None => (current, seq),
    };
    Ok(Some(RetiredRoot {
        backup_id,
        generation,
        chunks,
        next_generation: current + 1,
        retired_at_ms: now_ms,
    }))
}

/// The sort key of the retired root at `endpoint` (normalised, as stored),
/// `bucket` and `prefix` (in the partition `DB#<db>`). Neither an endpoint nor a
/// bucket name holds a line feed, so the three are told apart.
pub fn retired_sk(endpoint: &str, bucket: &str, prefix: &str) -> String {
    let digest = Sha256::digest(format!("{endpoint}\n{bucket}\n{prefix}").as_bytes());
    format!("{RETIRED_SK_PREFIX}{}", hex(&digest))
}

/// The sort key of the root a backup writes to.
pub fn root_of(record: &BackupRecord) -> String {
    retired_sk(&record.endpoint, &record.bucket_name, &record.prefix)
}

/// The retired-root item of `record`'s root.
pub fn retired_item(record: &BackupRecord, retired: &RetiredRoot) -> Item {
    Item::from([
        ("pk".into(), s(format!("DB#{}", record.database_id))),
        ("sk".into(), s(root_of(record))),
        ("backupId".into(), s(retired.backup_id.to_string())),
        ("staleGen".into(), n(retired.generation)),
        ("staleSeq".into(), n(retired.chunks)),
        ("nextGen".into(), n(retired.next_generation)),
        ("retiredAt".into(), n(retired.retired_at_ms)),
        ("endpoint".into(), s(&record.endpoint)),
        ("bucketName".into(), s(&record.bucket_name)),
        ("prefix".into(), s(&record.prefix)),
    ])
}

/// Reads a retired-root item back (None if an attribute is missing).
pub fn retired_of(item: &Item) -> Option<RetiredRoot> {
    Some(RetiredRoot {
        backup_id: Uuid::parse_str(get_s(item, "backupId")?).ok()?,
        generation: get_n(item, "staleGen")?,
        chunks: get_n(item, "staleSeq")?,
        next_generation: get_n(item, "nextGen")?,
        retired_at_ms: get_n(item, "retiredAt")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::records::BackupStatus;

    const B: Uuid = Uuid::from_u128(1);
    const EARLIER: Uuid = Uuid::from_u128(2);

    fn began(generation: u64, seq: u64, stale: Option<StaleMark>) -> WrittenSoFar {
        WrittenSoFar {
            began: true,
            generation: Some(generation),
            seq: Some(seq),
            stale,
        }
    }

    #[test]
    fn a_backup_retires_its_ledger_and_the_chunks_it_may_have_written() {
        assert_eq!(retirement(B, &WrittenSoFar::default(), 5), Ok(None));
        let plain = retirement(B, &began(3, 7, None), 5);
        assert_eq!(
            plain,
            Ok(Some(RetiredRoot {
                backup_id: B,
                generation: 3,
                chunks: 7,
                next_generation: 4,
                retired_at_ms: 5
            }))
        );
        // Its own re-snapshot unfinished: generation 4 has nothing yet, 3 is to empty.
        let own = StaleMark {
            generation: 3,
            chunks: 2,
            ledger: None,
        };
        let resnapshot = retirement(B, &began(4, 0, Some(own)), 5);
        assert_eq!(
            resnapshot.map(|r| r.map(|r| (r.generation, r.chunks, r.next_generation))),
            Ok(Some((3, 2, 5)))
        );
        // Still emptying an earlier deleted backup: it left nothing of its own.
        let adopted = StaleMark {
            generation: 1,
            chunks: 4,
            ledger: Some(EARLIER),
        };
        assert_eq!(retirement(B, &began(2, 0, Some(adopted)), 5), Ok(None));
        let broken = WrittenSoFar {
            began: true,
            ..WrittenSoFar::default()
        };
        assert!(retirement(B, &broken, 5).is_err());
    }

    #[test]
    fn a_root_is_its_endpoint_bucket_and_prefix_and_its_item_reads_back() {
        let record = BackupRecord {
            id: B,
            organization_id: Uuid::from_u128(3),
            database_id: Uuid::from_u128(4),
            kind: "s3".into(),
            endpoint: "https://storage.googleapis.com".into(),
            bucket_name: "b".into(),
            bucket_region: "us-central1".into(),
            access_key_id: "GOOG1".into(),
            secret_access_key_ciphertext: vec![1],
            prefix: "backup/".into(),
            status: BackupStatus::Active,
            created_at: "2026-12-01T00:00:00.000Z".into(),
            last_backed_up_at: None,
            last_versionstamp: None,
            last_error: None,
            snapshot_chunks: None,
        };
        let root = root_of(&record);
        assert!(root.starts_with(RETIRED_SK_PREFIX) && root.len() == 8 + 64);
        assert_eq!(
            root,
            retired_sk("https://storage.googleapis.com", "b", "backup/")
        );
        assert_ne!(
            root,
            retired_sk("https://storage.googleapis.com", "b", "other/")
        );
        assert_ne!(
            root,
            retired_sk("https://storage.googleapis.com", "c", "backup/")
        );
        assert_ne!(root, retired_sk("https://s3.amazonaws.com", "b", "backup/"));
        let retired = RetiredRoot {
            backup_id: B,
            generation: 2,
            chunks: 9,
            next_generation: 3,
            retired_at_ms: 1_700_000_000_000,
        };
        let item = retired_item(&record, &retired);
        assert_eq!(
            get_s(&item, "pk"),
            Some(format!("DB#{}", record.database_id).as_str())
        );
        assert_eq!(get_s(&item, "sk"), Some(root.as_str()));
        assert_eq!(retired_of(&item), Some(retired));
        // No secret, no key id: only where the root is.
        assert!(
            !item.contains_key("accessKeyId") && !item.contains_key("secretAccessKeyCiphertext")
        );
    }

    #[test]
    fn the_unchanged_condition_names_every_mark_present_or_absent() {
        let item = Item::from([
            ("logCursor".to_string(), n(9)),
            ("snapGen".to_string(), n(2)),
            ("snapSeq".to_string(), n(5)),
        ]);
        let (condition, values) = WrittenSoFar::unchanged(&item);
        assert_eq!(
            condition,
            "attribute_exists(logCursor) AND snapGen = :w0 AND snapSeq = :w1 AND \
             attribute_not_exists(staleGen) AND attribute_not_exists(staleSeq) AND \
             attribute_not_exists(staleLedger)"
        );
        assert_eq!(
            values,
            [(":w0".to_string(), n(2)), (":w1".to_string(), n(5))]
        );
        assert_eq!(WrittenSoFar::of(&item), began(2, 5, None));
    }
}
