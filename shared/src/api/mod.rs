//! The management API's handlers, one per route (see `routes.rs`).

pub mod backups;
pub mod databases;
pub mod organizations;
pub mod tokens;
