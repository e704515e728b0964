//! Deno KV's limits (the values of denokv_proto's limits module, which the crate
//! keeps private), and the one limit DynamoDB imposes on top (docs/data-plane.md).

pub const MAX_WRITE_KEY_BYTES: usize = 2048;
pub const MAX_READ_KEY_BYTES: usize = MAX_WRITE_KEY_BYTES + 1;
pub const MAX_VALUE_BYTES: usize = 65536;
pub const MAX_READ_RANGES: usize = 10;
pub const MAX_READ_ENTRIES: usize = 1000;
pub const MAX_CHECKS: usize = 10;
pub const MAX_MUTATIONS: usize = 1000;
pub const MAX_TOTAL_MUTATION_BYTES: usize = 819200;
pub const MAX_WATCHED_KEYS: usize = 10;

/// DynamoDB's TransactWriteItems limit. A commit writes the database head, its
/// change record (1 item, or more past ~350 KB) and one item per distinct key it
/// writes or checks, so it may touch at most this many items in all.
pub const MAX_ITEMS_PER_COMMIT: usize = 100;

/// Largest request body a data-path function accepts: the biggest valid commit
/// (800 KiB of keys and values) plus protobuf framing.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
