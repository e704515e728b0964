//! Where a KV key lives in the data table, keeping key order past DynamoDB's
//! 1024-byte sort-key limit (hazard 1 of DESIGN.md; docs/data-plane.md).
//!
//! An encoded key of at most [`SHORT_KEY_MAX`] bytes is its own sort key. A longer
//! key lives in a *bucket* item whose sort key is its first [`SHORT_KEY_MAX`] bytes
//! followed by `0xff`; the bucket holds every long key sharing that prefix, in key
//! order. Bucket sort keys are exactly `SHORT_KEY_MAX + 1` bytes long, so no short
//! key can equal one, and the order of sort keys is the order of the keys they hold:
//! a short key that is a prefix of the bucket's prefix sorts before it (and before
//! every key in it), and any other short key differs from the prefix within its own
//! length, where it compares with every key of the bucket the same way.

/// Longest encoded key stored under its own sort key.
pub const SHORT_KEY_MAX: usize = 1000;
const BUCKET_MARK: u8 = 0xff;

/// The sort key of the item that holds `key`.
pub fn sort_key(key: &[u8]) -> Vec<u8> {
    if key.len() <= SHORT_KEY_MAX {
        key.to_vec()
    } else {
        let mut sk = Vec::with_capacity(SHORT_KEY_MAX + 1);
        sk.extend_from_slice(&key[..SHORT_KEY_MAX]);
        sk.push(BUCKET_MARK);
        sk
    }
}

/// True when the item with this sort key is a bucket of long keys.
pub fn is_bucket(sk: &[u8]) -> bool {
    sk.len() == SHORT_KEY_MAX + 1
}

/// Inclusive sort-key bounds that cover every item that may hold a key in
/// `[start, end)`; `None` is unbounded. Entries are filtered to the exact range
/// afterwards (the bounds may include one item too many at each end).
pub fn range_bounds(start: &[u8], end: &[u8]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let lower = (!start.is_empty()).then(|| sort_key(start));
    let upper = Some(sort_key(end));
    (lower, upper)
}

/// True when a range read of `[start, end)` can hold at most the one key `start`:
/// what `get` and `getMany` send (`end` is `start` followed by a zero byte).
pub fn is_point_range(start: &[u8], end: &[u8]) -> bool {
    !start.is_empty()
        && end.len() == start.len() + 1
        && end.starts_with(start)
        && end[start.len()] == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(len: usize, fill: u8) -> Vec<u8> {
        vec![fill; len]
    }

    #[test]
    fn short_keys_are_their_own_sort_key_and_long_keys_share_a_bucket() {
        assert_eq!(sort_key(b"\x02a\x00"), b"\x02a\x00".to_vec());
        let a = [key(1000, 7), vec![1]].concat();
        let b = [key(1000, 7), vec![2, 3]].concat();
        assert_eq!(sort_key(&a), sort_key(&b));
        assert!(is_bucket(&sort_key(&a)));
        assert!(!is_bucket(&sort_key(&key(1000, 7))));
    }

    #[test]
    fn sort_keys_keep_key_order() {
        // Every pair of keys compares like their sort keys, or shares a bucket.
        let mut keys = vec![
            vec![],
            key(1, 1),
            key(999, 7),
            key(1000, 7),
            [key(1000, 7), vec![0]].concat(),
            [key(1000, 7), vec![0xff, 0xff]].concat(),
            [key(999, 7), vec![8]].concat(),
            [key(999, 7), vec![6], key(500, 0)].concat(),
            [key(999, 7), vec![8], key(500, 0xff)].concat(),
            key(2048, 0xff),
            key(1001, 0xff),
            key(1000, 0xff),
        ];
        keys.retain(|k| !k.is_empty());
        for a in &keys {
            for b in &keys {
                let (sa, sb) = (sort_key(a), sort_key(b));
                if sa != sb {
                    assert_eq!(a.cmp(b), sa.cmp(&sb), "{:?} vs {:?}", a.len(), b.len());
                }
            }
        }
    }

    #[test]
    fn point_ranges_are_recognised() {
        assert!(is_point_range(b"\x02a", b"\x02a\x00"));
        assert!(!is_point_range(b"\x02a", b"\x02a\xff"));
        assert!(!is_point_range(b"", b"\x00"));
        assert!(!is_point_range(b"\x02a", b"\x02b"));
    }

    #[test]
    fn range_bounds_cover_long_ends() {
        let end = [key(1000, 7), vec![9]].concat();
        let (lo, hi) = range_bounds(b"", &end);
        assert_eq!(lo, None);
        assert_eq!(hi, Some(sort_key(&end)));
    }
}
