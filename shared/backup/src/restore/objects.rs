//! The three kinds of object, fetched, decoded and checked. What `denokv`'s reader
//! would panic on or misread is a [`RestoreError::Corrupt`] here.

use super::names::{LogName, DIFFERENTIAL};
use super::{LayoutError, ReadBucket, ReadFault, RestoreError};
use crate::format::KeyMetadata;
use denokv_proto::backup::{
    BackupKvMutationKind, BackupMutationRange, BackupReplicationLogEntry, BackupSnapshotRange,
};
use prost::Message;

/// The differential's versionstamp. Like the reader: the whole body hex-decoded into
/// exactly 10 bytes (no newline, no spaces).
pub async fn differential(bucket: &dyn ReadBucket, root: &str) -> Result<[u8; 10], RestoreError> {
    let key = format!("{root}{DIFFERENTIAL}");
    let body = match bucket.get(&key).await {
        Ok(body) => body,
        Err(ReadFault::NotFound(_)) => {
            return Err(LayoutError::NoDifferential {
                root: root.to_string(),
            }
            .into())
        }
        Err(fault) => return Err(fault.into()),
    };
    let mut vs = [0u8; 10];
    if body.len() == 20 && hex::decode_to_slice(&body, &mut vs).is_ok() {
        return Ok(vs);
    }
    let shown: String = String::from_utf8_lossy(&body[..body.len().min(40)]).into();
    Err(LayoutError::BadDifferential {
        root: root.to_string(),
        found: format!("{} bytes: {shown:?}", body.len()),
    }
    .into())
}

/// Gets an object the plan (or a listing) saw; gone means the backup changed.
async fn get_known(bucket: &dyn ReadBucket, key: &str) -> Result<Vec<u8>, RestoreError> {
    match bucket.get(key).await {
        Ok(body) => Ok(body),
        Err(ReadFault::NotFound(_)) => Err(RestoreError::Changed(format!("`{key}` is gone"))),
        Err(fault) => Err(fault.into()),
    }
}

/// One log entry, with its versionstamp checked.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEntry {
    pub versionstamp: [u8; 12],
    pub entry: BackupReplicationLogEntry,
}

impl LogEntry {
    pub fn is_clear(&self) -> bool {
        self.entry.kind == BackupKvMutationKind::MkClear as i32
    }
}

/// A log object's content: its time, and its entries in versionstamp order with
/// duplicates dropped (the reader keys its log by the 12 bytes).
#[derive(Clone, Debug, PartialEq)]
pub struct LogBody {
    pub timestamp_ms: u64,
    pub entries: Vec<LogEntry>,
}

impl LogBody {
    /// The commit ends (`0xffff` entries) it holds, oldest first.
    pub fn commit_ends(&self) -> impl DoubleEndedIterator<Item = [u8; 12]> + '_ {
        self.entries
            .iter()
            .map(|e| e.versionstamp)
            .filter(super::is_commit_end)
    }
}

/// Fetches and decodes the log object `name`. Every entry must have a 12-byte
/// versionstamp within the name's `first..=last` (the restore trusts names to skip
/// objects it need not read, as the reader trusts them to stop its first sync).
pub async fn log(bucket: &dyn ReadBucket, name: &LogName) -> Result<LogBody, RestoreError> {
    let body = get_known(bucket, &name.key).await?;
    let corrupt = |why: String| RestoreError::Corrupt {
        key: name.key.clone(),
        what: "log object",
        why,
    };
    let range = BackupMutationRange::decode(body.as_slice())
        .map_err(|e| corrupt(format!("not a BackupMutationRange: {e}")))?;
    let mut entries = Vec::with_capacity(range.entries.len());
    for (index, entry) in range.entries.into_iter().enumerate() {
        let versionstamp = <[u8; 12]>::try_from(entry.versionstamp.as_slice())
            .map_err(|_| corrupt(format!("entry {index}'s versionstamp is not 12 bytes")))?;
        if !(name.first..=name.last).contains(&versionstamp) {
            return Err(corrupt(format!(
                "entry {index}'s versionstamp {} is outside the range its name claims",
                hex::encode(versionstamp)
            )));
        }
        entries.push(LogEntry {
            versionstamp,
            entry,
        });
    }
    // Stable: of two entries with one versionstamp the first is kept, as the
    // reader's `insert or ignore` keeps the first it sees.
    entries.sort_by_key(|e| e.versionstamp);
    entries.dedup_by_key(|e| e.versionstamp);
    Ok(LogBody {
        timestamp_ms: range.timestamp_ms,
        entries,
    })
}

/// One key of a snapshot range.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotEntry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub meta: KeyMetadata,
}

/// Fetches and decodes a snapshot range: pairs `(d+key, value)` and
/// `(m+key, metadata)` that must match (the reader asserts it).
pub async fn snapshot(
    bucket: &dyn ReadBucket,
    key: &str,
) -> Result<Vec<SnapshotEntry>, RestoreError> {
    let body = get_known(bucket, key).await?;
    let corrupt = |why: String| RestoreError::Corrupt {
        key: key.to_string(),
        what: "snapshot range",
        why,
    };
    let range = BackupSnapshotRange::decode(body.as_slice())
        .map_err(|e| corrupt(format!("not a BackupSnapshotRange: {e}")))?;
    if range.data_list.len() != range.metadata_list.len() {
        return Err(corrupt(format!(
            "{} data pairs but {} metadata pairs",
            range.data_list.len(),
            range.metadata_list.len()
        )));
    }
    let mut out = Vec::with_capacity(range.data_list.len());
    for (index, (data, meta)) in range
        .data_list
        .into_iter()
        .zip(range.metadata_list)
        .enumerate()
    {
        let (Some((b'd', data_key)), Some((b'm', meta_key))) =
            (data.key.split_first(), meta.key.split_first())
        else {
            return Err(corrupt(format!(
                "pair {index}: keys must start with `d` and `m`"
            )));
        };
        if data_key != meta_key {
            return Err(corrupt(format!(
                "pair {index}: the data and metadata keys differ"
            )));
        }
        let decoded = KeyMetadata::decode(&meta.value)
            .ok_or_else(|| corrupt(format!("pair {index}: metadata shorter than 11 bytes")))?;
        out.push(SnapshotEntry {
            key: data_key.to_vec(),
            value: data.value,
            meta: decoded,
        });
    }
    Ok(out)
}
