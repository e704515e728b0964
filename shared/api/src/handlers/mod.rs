//! The management API's handlers, one per route (see `subkv_core::routes`).

pub mod backups;
pub mod databases;
pub mod organizations;
pub mod restore_from;
pub mod tokens;
