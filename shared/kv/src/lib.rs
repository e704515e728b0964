//! Deno KV's semantics and formats, with no I/O and no AWS crate: what a key,
//! an entry and a commit mean, independent of where they are stored.
//!
//! | module | what |
//! |---|---|
//! | [`keys`] | key encoding and the sort keys entries are stored under |
//! | [`model`] | entries, slots (what one stored item holds), versionstamps |
//! | [`plan`] | a commit planned against a snapshot: checks, mutations, change-log entries |
//! | [`limits`] | Deno KV's limits, as KV Connect enforces them, and DynamoDB's |
//! | [`budget`] | what DynamoDB can store: item sizes and transactions, checked while planning |
//! | [`error`] | [`error::KvError`] and its one mapping to HTTP status and text |
//! | [`token`] | data-path tokens (HMAC, short-lived) |
//! | [`backup_format`] | denokv's backup format: S3 object keys and bodies |
//!
//! `subkv-dynamo-kv` stores this model in DynamoDB; `subkv-connect` serves it over
//! KV Connect; `subkv-backup` writes it to tenants' buckets.

pub mod backup_format;
pub mod budget;
pub mod error;
pub mod keys;
pub mod limits;
pub mod model;
pub mod plan;
pub mod token;
