//! subkv's shared library: everything the Lambda functions have in common.
//!
//! A function's `main` is one call to [`lambda::serve`] with its route from
//! [`routes`] and its handler from [`api`].

pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod error;
pub mod http;
pub mod kv;
pub mod lambda;
pub mod model;
pub mod pagination;
pub mod routes;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod validate;
