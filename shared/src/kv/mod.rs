//! The data plane: Deno KV on DynamoDB, served over KV Connect.
//! docs/data-plane.md describes the design; each module says what it owns.

pub mod error;
pub mod keys;
pub mod limits;
pub mod model;
pub mod plan;
pub mod protocol;
pub mod store;
pub mod sweep;
pub mod token;
pub mod watch;
