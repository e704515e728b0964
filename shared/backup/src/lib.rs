//! Continuous backup of KV databases to the tenant's S3-compatible bucket, in the
//! format the public `denokv` tool restores from (`denokv pitr`,
//! `denokv serve --sync-from-s3`). docs/backup-format.md is the contract.
//!
//! | module | what |
//! |---|---|
//! | [`format`] | object keys and bodies (re-exported from `subkv_kv::backup_format`: pure, no I/O) |
//! | [`bucket`] | the tenant's bucket: an S3 client per backup target (any S3-compatible store), `PutObject` only, SSRF re-checked after DNS; [`bucket::BucketFault`] |
//! | [`progress`] | each backup's progress (cursor, snapshot, lease, ledger, status) in the control table |
//! | [`engine`] | moves a backup forward from its cursor |
//! | [`function`] | the `backup-forward` Lambda (change-log stream + scheduled catch-up) |

pub mod bucket;
pub mod engine;
pub mod function;
pub mod progress;

pub use subkv_kv::backup_format as format;
