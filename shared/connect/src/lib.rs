//! KV Connect (denoland/denokv `proto/kv-connect.md`), versions 1 to 3, served by
//! subkv's data-plane functions on the DynamoDB engine (`subkv-dynamo-kv`).
//!
//! | module | what |
//! |---|---|
//! | [`protocol`] | the metadata exchange, `snapshot_read`, `atomic_write`: checks, decoding, replies, plain-text errors |
//! | [`watch`] | `watch`, streamed with Lambda response streaming |
//! | [`sweep`] | the scheduled expiry sweeper |
//! | [`purge`] | the scheduled purge of deleted databases' storage |
//! | [`storage`] | the stream function counting each database's stored bytes and keys |
//! | [`quota`] | the write quota of an organization, checked before a commit |
//! | [`usage`] | metering requests for billing: capacity units, the instance's tally, its flush |
//! | [`state`] | what a data-plane function builds once per cold start ([`state::ConnectState`]) |

pub mod protocol;
pub mod purge;
pub mod quota;
pub mod state;
pub mod storage;
pub mod sweep;
pub mod usage;
pub mod watch;
