//! subkv's core: what every plane shares, and nothing of any one plane.
//!
//! | module | what |
//! |---|---|
//! | [`routes`] | every HTTP route: path, method, function, who may call it |
//! | [`config`] | every environment variable, read through one typed parser |
//! | [`runtime`] | JSON logs, cold start, `serve` for HTTP and for events, the request log line |
//! | [`auth`] | bearer tokens: minting, hashing, the admin check |
//! | [`error`] | storage errors (each plane maps them to HTTP once) |
//! | [`metrics`] | CloudWatch Embedded Metric Format lines, without dimensions |
//! | [`dynamo`] | DynamoDB attribute helpers and the reading of a failed call |
//! | [`deleted`] | a deleted database's mark on its head in the KV data table |
//! | [`control`] | the control table: records, [`control::ControlTable`], its DynamoDB and in-memory implementations |
//! | [`secrets`] | backup secrets sealed and opened with KMS |
//! | [`usage`] | usage for billing: hourly counts per database, where they are kept |
//! | [`validate`] | input rules shared by the API and the backup engine (names, endpoints, public addresses) |
//!
//! The planes build on it, one way: `subkv-api` (management), `subkv-kv` (Deno KV
//! semantics and the backup format, no I/O), `subkv-dynamo-kv` (the KV engine on
//! DynamoDB), `subkv-connect` (the KV Connect functions) and `subkv-backup` (the
//! backup engine).

pub mod auth;
pub mod config;
pub mod control;
pub mod deleted;
pub mod dynamo;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod runtime;
pub mod secrets;
pub mod storage;
pub mod usage;
pub mod validate;
