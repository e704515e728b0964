//! Nothing to use: this crate only makes every build of the workspace ask for the
//! same features of its dependencies, so they compile once (see its `Cargo.toml`).
