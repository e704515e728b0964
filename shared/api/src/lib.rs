//! The management API: organizations, tokens, databases and backup
//! configurations, in the shape of the Subhosting v1 API (docs/api.md).
//!
//! | module | what |
//! |---|---|
//! | [`pipeline`] | the one request pipeline: body limit, bearer auth, path ids, access from the route table, the handler, one log line; [`pipeline::serve`] is a function's whole `main` |
//! | [`handlers`] | one handler per route |
//! | [`state`] | what a function builds once per cold start ([`state::ApiState`]) |
//! | [`error`] | [`error::ApiError`] and its one mapping to HTTP (`{"code","message"}`) |
//! | [`http`] | JSON bodies in and out, path ids |
//! | [`pagination`] | page/limit/sort/filter and the `Link` header |
//!
//! It uses `subkv-core` only; no KV or backup code is linked into these functions.

pub mod error;
pub mod handlers;
pub mod http;
pub mod pagination;
pub mod pipeline;
pub mod state;

pub use pipeline::serve;
