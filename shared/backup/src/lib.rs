//! Continuous backup of KV databases to the tenant's S3-compatible bucket, in the
//! format the public `denokv` tool restores from (`denokv pitr`,
//! `denokv serve --sync-from-s3`). docs/backup-format.md is the contract.
//!
//! | module | what |
//! |---|---|
//! | [`format`] | object keys and bodies (re-exported from `subkv_kv::backup_format`: pure, no I/O) |
//! | [`engine`] | moves a backup forward from its cursor (`mod.rs`: a pass, log objects, faults; `snapshot.rs`: snapshots and re-snapshots) |
//! | [`source`] | what the engine reads: [`source::ChangeSource`] (head, change log, live entries), implemented by `DynamoKv` |
//! | [`progress`] | each backup's progress (cursor, snapshot, lease, ledger, status): [`progress::Progress`], implemented in the control table by [`progress::DynamoProgress`] |
//! | [`sink`] | where the engine writes: [`sink::ObjectSink`] (`PutObject`) and [`sink::Sinks`] (a backup's sink from its record), implemented by [`sink::TenantBuckets`] |
//! | [`bucket`] | the tenant's bucket: an S3 client per backup target (any S3-compatible store), `PutObject` only, SSRF re-checked after DNS (`connector.rs`); [`bucket::BucketFault`] |
//! | [`restore`] | reading a backup back (subkv's or Deno Deploy's): restore points, a restore planned to an exact point, the state at it in resumable steps (pure, over a [`restore::ReadBucket`]) |
//! | [`function`] | the `backup-forward` Lambda (change-log stream + scheduled catch-up): wires the real source, progress and sinks |
//! | `metrics` | the Embedded Metric Format lines (namespace `subkv/backup`, no dimension) |
//! | `fakes` | (tests only) in-memory change source, progress store and buckets for the engine's and the restore's unit tests |

pub mod bucket;
pub mod engine;
#[cfg(test)]
mod fakes;
pub mod function;
mod metrics;
pub mod progress;
pub mod restore;
pub mod sink;
pub mod source;

pub use subkv_kv::backup_format as format;
