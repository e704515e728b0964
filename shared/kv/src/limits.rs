//! Deno KV's limits (the values of denokv_proto's limits module, which the crate
//! keeps private), and DynamoDB's transaction size, which shapes how commits are sent.

pub const MAX_WRITE_KEY_BYTES: usize = 2048;
pub const MAX_READ_KEY_BYTES: usize = MAX_WRITE_KEY_BYTES + 1;
pub const MAX_VALUE_BYTES: usize = 65536;
pub const MAX_READ_RANGES: usize = 10;
pub const MAX_READ_ENTRIES: usize = 1000;
pub const MAX_CHECKS: usize = 10;
pub const MAX_MUTATIONS: usize = 1000;
pub const MAX_TOTAL_MUTATION_BYTES: usize = 819200;
pub const MAX_WATCHED_KEYS: usize = 10;

/// DynamoDB's TransactWriteItems (and TransactGetItems) limit. A commit that
/// touches more items (head, change record, one per distinct key) becomes a large
/// commit: see `store.rs` and docs/data-plane.md.
pub const MAX_ITEMS_PER_COMMIT: usize = 100;

/// Largest request body a data-path function accepts: the biggest valid commit
/// (800 KiB of keys and values) plus protobuf framing.
pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
