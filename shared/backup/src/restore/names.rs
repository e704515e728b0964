//! Object names under a backup's root, parsed as `denokv`'s reader parses them
//! (`backup_source_s3.rs` in `denokv_timemachine` 0.14), but stricter about width
//! and case: the restore relies on name order being numeric order (it probes the
//! name space by `monoseq`, [`log_floor`]), which only fixed-width lower-case hex
//! guarantees. Both writers we know of (subkv's [`crate::format`] and `denokv`'s
//! own `Display` of its keys, which Deno Deploy's writer shares) produce exactly
//! these widths.
//!
//! - format 1: `snapshots/0001_<monoseq:016x>_<seq:016x>.bin`,
//!   `logs/0001_<monoseq:016x>_<first:024x>_<last:024x>.bin`;
//! - format 0 (the older one): the 4-digit version is absent and `monoseq` is
//!   written as two 16-digit numbers, `<epoch:016x>_<tsn:016x>` (each below
//!   `u32::MAX`, `monoseq = epoch << 32 | tsn`).

use super::LayoutError;
use serde::{Deserialize, Serialize};

/// The folder of snapshot ranges under a root.
pub const SNAPSHOTS: &str = "snapshots/";
/// The folder of log objects under a root.
pub const LOGS: &str = "logs/";
/// The differential object under a root.
pub const DIFFERENTIAL: &str = "differential";

/// A `logs/` object's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogName {
    /// The full key in the bucket.
    pub key: String,
    /// 0 or 1.
    pub format: u16,
    pub monoseq: u64,
    /// The first and last entry versionstamps the name claims (12 bytes each).
    pub first: [u8; 12],
    pub last: [u8; 12],
}

/// A `snapshots/` object's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotName {
    pub key: String,
    pub format: u16,
    pub monoseq: u64,
    pub seq: u64,
}

fn bad(key: &str, why: &str) -> LayoutError {
    LayoutError::BadName {
        key: key.to_string(),
        why: why.to_string(),
    }
}

/// `Some(n)` if `part` is exactly `width` lower-case hex digits.
fn hex_u64(part: &str, width: usize) -> Option<u64> {
    let ok = part.len() == width
        && part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !ok {
        return None;
    }
    u64::from_str_radix(part, 16).ok()
}

fn hex_12(part: &str) -> Option<[u8; 12]> {
    let ok = part.len() == 24
        && part
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let mut out = [0u8; 12];
    (ok && hex::decode_to_slice(part, &mut out).is_ok()).then_some(out)
}

/// The name without `<root><dir>` and `.bin`, split at `_`.
fn parts<'k>(root: &str, dir: &str, key: &'k str) -> Result<Vec<&'k str>, LayoutError> {
    let name = key
        .strip_prefix(root)
        .and_then(|k| k.strip_prefix(dir))
        .ok_or_else(|| bad(key, "it is not under the backup's root"))?;
    let name = name
        .strip_suffix(".bin")
        .ok_or_else(|| bad(key, "the name does not end in `.bin`"))?;
    Ok(name.split('_').collect())
}

/// The format version and `monoseq` at the start of `parts`, and how many parts
/// they took.
fn format_and_monoseq(key: &str, parts: &[&str]) -> Result<(u16, u64, usize), LayoutError> {
    let first = parts.first().copied().unwrap_or_default();
    if first.len() == 4 {
        let version = hex_u64(first, 4)
            .ok_or_else(|| bad(key, "the format version is not 4 lower-case hex digits"))?;
        if version != 1 {
            return Err(bad(
                key,
                &format!("format version {version} is unknown (0 and 1 are)"),
            ));
        }
        let monoseq = parts
            .get(1)
            .and_then(|p| hex_u64(p, 16))
            .ok_or_else(|| bad(key, "monoseq is not 16 lower-case hex digits"))?;
        Ok((1, monoseq, 2))
    } else {
        let epoch = hex_u64(first, 16);
        let tsn = parts.get(1).and_then(|p| hex_u64(p, 16));
        match (epoch, tsn) {
            (Some(epoch), Some(tsn))
                if epoch < u64::from(u32::MAX) && tsn < u64::from(u32::MAX) =>
            {
                Ok((0, (epoch << 32) | tsn, 2))
            }
            _ => Err(bad(
                key,
                "the name starts neither with `0001_<monoseq>` (format 1) nor with \
                 `<epoch>_<tsn>` (format 0)",
            )),
        }
    }
}

/// Parses the key of a `logs/` object under `root`.
pub fn parse_log(root: &str, key: &str) -> Result<LogName, LayoutError> {
    let parts = parts(root, LOGS, key)?;
    let (format, monoseq, used) = format_and_monoseq(key, &parts)?;
    let rest = &parts[used..];
    let [first, last] = rest else {
        return Err(bad(
            key,
            "a log name needs the first and last versionstamps after monoseq, and nothing more",
        ));
    };
    let first = hex_12(first).ok_or_else(|| {
        bad(
            key,
            "the first versionstamp is not 24 lower-case hex digits",
        )
    })?;
    let last = hex_12(last)
        .ok_or_else(|| bad(key, "the last versionstamp is not 24 lower-case hex digits"))?;
    if first > last {
        return Err(bad(key, "its first versionstamp is after its last"));
    }
    Ok(LogName {
        key: key.to_string(),
        format,
        monoseq,
        first,
        last,
    })
}

/// Parses the key of a `snapshots/` object under `root`.
pub fn parse_snapshot(root: &str, key: &str) -> Result<SnapshotName, LayoutError> {
    let parts = parts(root, SNAPSHOTS, key)?;
    let (format, monoseq, used) = format_and_monoseq(key, &parts)?;
    let [seq] = &parts[used..] else {
        return Err(bad(
            key,
            "a snapshot name needs one sequence number after monoseq, and nothing more",
        ));
    };
    let seq = hex_u64(seq, 16)
        .ok_or_else(|| bad(key, "the sequence number is not 16 lower-case hex digits"))?;
    Ok(SnapshotName {
        key: key.to_string(),
        format,
        monoseq,
        seq,
    })
}

/// The string every log name of `format` with a `monoseq` at or above `monoseq`
/// sorts after, and every one below it does not: `start-after` for "the log
/// objects from `monoseq` on".
pub fn log_floor(root: &str, format: u16, monoseq: u64) -> String {
    if format == 0 {
        format!(
            "{root}{LOGS}{:016x}_{:016x}",
            monoseq >> 32,
            monoseq & 0xffff_ffff
        )
    } else {
        format!("{root}{LOGS}{format:04x}_{monoseq:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "p/db/";

    #[test]
    fn format_1_names() {
        let key = format!(
            "{ROOT}logs/0001_000000000000000a_{}_{}.bin",
            "000000000000000a00000000", "000000000000000b0000ffff"
        );
        let name = parse_log(ROOT, &key).unwrap();
        assert_eq!((name.format, name.monoseq), (1, 10));
        assert_eq!(name.last[..10], [0, 0, 0, 0, 0, 0, 0, 0x0b, 0, 0]);
        let snap = parse_snapshot(
            ROOT,
            &format!("{ROOT}snapshots/0001_0000000000000003_0000000000000011.bin"),
        )
        .unwrap();
        assert_eq!((snap.format, snap.monoseq, snap.seq), (1, 3, 17));
    }

    #[test]
    fn format_0_names() {
        let key = format!(
            "{ROOT}logs/0000000000000002_0000000000000005_{}_{}.bin",
            "000000000000000a00000000", "000000000000000b0000ffff"
        );
        let name = parse_log(ROOT, &key).unwrap();
        assert_eq!((name.format, name.monoseq), (0, (2 << 32) | 5));
        assert!(log_floor(ROOT, 0, (2 << 32) | 5) < key);
        assert!(log_floor(ROOT, 0, (2 << 32) | 6) > key);
        let snap = parse_snapshot(
            ROOT,
            &format!("{ROOT}snapshots/0000000000000001_0000000000000000_0000000000000002.bin"),
        )
        .unwrap();
        assert_eq!((snap.format, snap.monoseq, snap.seq), (0, 1 << 32, 2));
    }

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let why = |key: &str| match parse_log(ROOT, key) {
            Err(LayoutError::BadName { why, .. }) => why,
            other => panic!("{other:?}"),
        };
        assert!(why(&format!("{ROOT}logs/readme.txt")).contains(".bin"));
        assert!(why(&format!("{ROOT}logs/")).contains(".bin"));
        assert!(why(&format!("{ROOT}logs/0002_0000000000000001_a_b.bin")).contains("unknown"));
        let vs = "000000000000000a00000000";
        assert!(
            why(&format!("{ROOT}logs/0001_000000000000000A_{vs}_{vs}.bin")).contains("monoseq")
        );
        assert!(why(&format!("{ROOT}logs/0001_000000000000000a_{vs}.bin")).contains("last"));
        assert!(why(&format!(
            "{ROOT}logs/0001_000000000000000a_{vs}_{vs}_{vs}.bin"
        ))
        .contains("nothing more"));
        let later = "000000000000000b00000000";
        assert!(why(&format!(
            "{ROOT}logs/0001_000000000000000a_{later}_{vs}.bin"
        ))
        .contains("after"));
        assert!(matches!(
            parse_snapshot(
                ROOT,
                &format!("{ROOT}snapshots/0001_0000000000000001_01.bin")
            ),
            Err(LayoutError::BadName { .. })
        ));
    }

    #[test]
    fn the_floor_splits_by_monoseq() {
        let name = |m: u64| {
            format!(
                "{ROOT}logs/0001_{m:016x}_{}_{}.bin",
                "0".repeat(24),
                "0".repeat(24)
            )
        };
        assert!(name(9) < log_floor(ROOT, 1, 10));
        assert!(name(10) > log_floor(ROOT, 1, 10));
        assert!(name(11) > log_floor(ROOT, 1, 10));
        assert!(log_floor(ROOT, 1, 0) < name(0));
    }
}
