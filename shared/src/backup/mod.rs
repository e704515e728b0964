//! Continuous backup of KV databases to the tenant's S3-compatible bucket, in the
//! format the public `denokv` tool restores from (`denokv pitr`,
//! `denokv serve --sync-from-s3`). docs/backup-format.md is the contract.
//!
//! - [`format`]: the pure part, object keys and bodies, no I/O.
//! - [`s3`]: the tenant's bucket: an S3 client per backup target (any
//!   S3-compatible store), `PutObject` only, SSRF re-checked after DNS.
//! - [`control`]: each backup's progress (cursor, snapshot, status) in the
//!   control table.
//! - [`engine`]: moves a backup forward from its cursor; [`function`]: the
//!   `backup-forward` Lambda (change-log stream + scheduled catch-up).

pub mod control;
pub mod engine;
pub mod format;
pub mod function;
pub mod s3;
