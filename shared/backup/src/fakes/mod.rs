//! In-memory fakes of the engine's ports, for its unit tests: a change source
//! ([`FakeKv`]), a progress store keeping [`DynamoProgress`]'s conditions
//! ([`FakeProgress`]) and a bucket that records every put ([`FakeBucket`]).
//!
//!
//! [`DynamoProgress`]: crate::progress::DynamoProgress

mod bucket;
mod kv;
mod progress;

pub use bucket::FakeBucket;
pub use kv::{FakeKv, Op};
pub use progress::{FakeProgress, Item};

use std::sync::{Mutex, MutexGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
