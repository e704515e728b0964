//! Deno KV's limits (the values of denokv_proto's limits module, which the crate
//! keeps private), and DynamoDB's limits, which shape how commits are stored
//! ([`crate::budget`] applies them).

pub const MAX_WRITE_KEY_BYTES: usize = 2048;
pub const MAX_READ_KEY_BYTES: usize = MAX_WRITE_KEY_BYTES + 1;
pub const MAX_VALUE_BYTES: usize = 65536;
pub const MAX_READ_RANGES: usize = 10;
pub const MAX_READ_ENTRIES: usize = 1000;
pub const MAX_CHECKS: usize = 10;
pub const MAX_MUTATIONS: usize = 1000;
pub const MAX_TOTAL_MUTATION_BYTES: usize = 819200;
pub const MAX_WATCHED_KEYS: usize = 10;

/// The latest `expireAt` a mutation may carry, in milliseconds since the Unix
/// epoch: the last millisecond of the year 262142, the latest instant chrono
/// represents. Deno's client refuses an `expireIn` that goes past it; denokv_proto
/// converts the raw field with an addition that panics past it, so a raw request
/// is checked first.
pub const MAX_EXPIRE_AT_MS: i64 = 8_210_266_876_799_999;

/// DynamoDB's TransactWriteItems (and TransactGetItems) limit. A commit that
/// touches more items (head, change record, one per distinct key) becomes a large
/// commit: see `shared/dynamo-kv/src/large.rs` and docs/data-plane.md.
pub const MAX_ITEMS_PER_COMMIT: usize = 100;

/// DynamoDB's item size limit, 400 KB (attribute names and values together).
pub const DYNAMODB_MAX_ITEM_BYTES: usize = 400 * 1024;

/// DynamoDB's limit on the aggregate size of the items of one transaction, 4 MB
/// (TransactWriteItems and TransactGetItems).
pub const DYNAMODB_MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

/// The largest item subkv writes, as [`crate::budget::item_bytes`] bounds it: a
/// little under DynamoDB's 409,600 bytes, so that the local emulator (moto
/// refuses items over 405,000 bytes) and DynamoDB agree on what fits.
pub const MAX_ITEM_BYTES: usize = 400_000;

/// The largest answer to one read, in bytes of `SnapshotReadOutput` protobuf: 19 MiB,
/// which with the streamed response's head stays under Lambda's 20 MB limit on a
/// streamed response (docs/decisions.md, 32). Deno's limits allow reads of up to
/// 1000 entries of 64 KiB (about 67 MB); a read whose answer would be larger than
/// this is refused with a 400 naming the limit, before any byte is sent.
pub const MAX_READ_RESPONSE_BYTES: usize = 19 * 1024 * 1024;

/// The refusal of a read whose answer is over [`MAX_READ_RESPONSE_BYTES`]:
/// `entries` entries that take (at least) `bytes` bytes.
pub fn read_too_large(entries: usize, bytes: usize) -> crate::error::KvError {
    crate::error::KvError::bad(format!(
        "read too large: its {entries} entries take {bytes} bytes (the limit is \
         {MAX_READ_RESPONSE_BYTES} bytes per read, what one streamed AWS Lambda response \
         carries); read fewer entries at once (a smaller list batchSize or limit)"
    ))
}

/// Largest request body a data-path function accepts: the biggest valid commit
/// (800 KiB of keys and values) plus protobuf framing.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_expiry_is_the_latest_instant_chrono_represents() {
        let max = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        assert_eq!(max.timestamp_millis(), MAX_EXPIRE_AT_MS);
        // denokv_proto's conversion adds the milliseconds to the epoch: this must
        // not overflow (it panics past it).
        let at = chrono::DateTime::UNIX_EPOCH
            + std::time::Duration::from_millis(MAX_EXPIRE_AT_MS as u64);
        assert_eq!(at.timestamp_millis(), MAX_EXPIRE_AT_MS);
        assert!(chrono::DateTime::UNIX_EPOCH
            .checked_add_signed(chrono::TimeDelta::milliseconds(MAX_EXPIRE_AT_MS + 1))
            .is_none());
    }
}
