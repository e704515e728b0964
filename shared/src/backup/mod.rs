//! Continuous backup of KV databases to the tenant's S3-compatible bucket, in the
//! format the public `denokv` tool restores from (`denokv pitr`,
//! `denokv serve --sync-from-s3`). docs/backup-format.md is the contract.
//!
//! [`format`] is the pure part: the object keys and bodies, no I/O.

pub mod format;
