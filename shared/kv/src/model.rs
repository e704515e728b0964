//! What the data table holds, independent of DynamoDB's attribute encoding.

use crate::keys::{is_bucket, sort_key};
use denokv_proto::Versionstamp;

/// One live (or expired, not yet swept) KV entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// denokv value encoding: 1 V8, 2 little-endian u64, 3 bytes.
    pub encoding: i64,
    /// The commit that last wrote it.
    pub version: u64,
    /// The versionstamp's last two bytes: 0 for every commit subkv makes; a
    /// restored entry keeps its source's (Deno Deploy's order within a commit
    /// version, denokv's `seq`).
    pub seq: u16,
    /// Milliseconds since the Unix epoch; None never expires.
    pub expire_at_ms: Option<i64>,
}

impl Entry {
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expire_at_ms.is_none_or(|at| at > now_ms)
    }

    /// The versionstamp clients see for this entry.
    pub fn versionstamp(&self) -> Versionstamp {
        stamp(self.version, self.seq)
    }
}

/// One item of the data table: a short key's entry, or a bucket of long keys
/// (see [`crate::keys`]). No entries: the key was deleted (a tombstone, kept for a
/// while so snapshot reads notice the deletion) or never existed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Slot {
    pub sk: Vec<u8>,
    /// The commit that last wrote this item; 0 if it does not exist.
    pub version: u64,
    /// In key order.
    pub entries: Vec<Entry>,
}

impl Slot {
    pub fn empty(sk: Vec<u8>) -> Self {
        Self {
            sk,
            version: 0,
            entries: Vec::new(),
        }
    }

    pub fn is_bucket(&self) -> bool {
        is_bucket(&self.sk)
    }

    /// The live entry with this key.
    pub fn get(&self, key: &[u8], now_ms: i64) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.key == key)
            .filter(|e| e.is_live(now_ms))
    }

    pub fn put(&mut self, entry: Entry) {
        debug_assert_eq!(sort_key(&entry.key), self.sk);
        match self.entries.binary_search_by(|e| e.key.cmp(&entry.key)) {
            Ok(i) => self.entries[i] = entry,
            Err(i) => self.entries.insert(i, entry),
        }
    }

    pub fn remove(&mut self, key: &[u8]) {
        self.entries.retain(|e| e.key != key);
    }

    /// Earliest expiry among the entries, for the sweep index.
    pub fn earliest_expiry(&self) -> Option<i64> {
        self.entries.iter().filter_map(|e| e.expire_at_ms).min()
    }
}

/// A commit version as the 10-byte versionstamp clients see: 8 bytes big-endian
/// then two zero bytes, as denokv's own backends write it.
pub fn versionstamp(version: u64) -> Versionstamp {
    let mut vs = [0u8; 10];
    vs[..8].copy_from_slice(&version.to_be_bytes());
    vs
}

/// The versionstamp of order `seq` within commit version `version`.
pub fn stamp(version: u64, seq: u16) -> Versionstamp {
    let mut vs = versionstamp(version);
    vs[8..].copy_from_slice(&seq.to_be_bytes());
    vs
}

/// A versionstamp's commit version and order within it (`seq`): what an entry
/// stores. Every 10-byte value is one (restored entries keep their source's).
pub fn split_stamp(vs: &Versionstamp) -> (u64, u16) {
    let mut be = [0u8; 8];
    be.copy_from_slice(&vs[..8]);
    (u64::from_be_bytes(be), u16::from_be_bytes([vs[8], vs[9]]))
}

/// The version a versionstamp names, if it is one subkv could have issued.
pub fn version_of(vs: &[u8]) -> Option<u64> {
    if vs.len() != 10 || vs[8] != 0 || vs[9] != 0 {
        return None;
    }
    let mut be = [0u8; 8];
    be.copy_from_slice(&vs[..8]);
    Some(u64::from_be_bytes(be))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versionstamps_round_trip_and_sort_like_versions() {
        assert_eq!(version_of(&versionstamp(42)), Some(42));
        assert!(versionstamp(255) < versionstamp(256));
        assert_eq!(version_of(&[0; 9]), None);
        assert_eq!(version_of(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 1]), None);
    }

    #[test]
    fn stamps_keep_all_ten_bytes_and_sort_like_them() {
        let vs = [0, 0, 0, 0, 0, 0, 0, 7, 0x01, 0x02];
        assert_eq!(split_stamp(&vs), (7, 0x0102));
        assert_eq!(stamp(7, 0x0102), vs);
        assert_eq!(stamp(7, 0), versionstamp(7));
        assert!(stamp(7, 0xffff) < stamp(8, 0));
        assert!(stamp(7, 1) > versionstamp(7));
    }

    #[test]
    fn expired_entries_are_not_live() {
        let mut slot = Slot::empty(b"\x02k".to_vec());
        slot.put(Entry {
            key: b"\x02k".to_vec(),
            value: vec![1],
            encoding: 3,
            version: 1,
            seq: 0,
            expire_at_ms: Some(1000),
        });
        assert!(slot.get(b"\x02k", 999).is_some());
        assert!(slot.get(b"\x02k", 1000).is_none());
        assert_eq!(slot.earliest_expiry(), Some(1000));
    }
}
