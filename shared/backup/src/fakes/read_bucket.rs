//! [`MemoryBucket`]: a bucket a restore reads, in memory, with the store's faults
//! on demand and a count of the requests made.

use super::lock;
use crate::format::Object;
use crate::restore::{Listed, ReadBucket, ReadFault};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

type KeyRule = Box<dyn Fn(&str) -> bool + Send>;

#[derive(Default)]
struct Store {
    objects: BTreeMap<String, Vec<u8>>,
    lists: usize,
    gets: Vec<String>,
    list_fault: Option<ReadFault>,
    get_fault: Option<(KeyRule, ReadFault)>,
}

/// An in-memory bucket; clones share it. Listing is S3's `ListObjectsV2`:
/// byte order, `start-after`, at most `limit` keys.
#[derive(Clone, Default)]
pub struct MemoryBucket {
    store: Arc<Mutex<Store>>,
}

impl MemoryBucket {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&self, key: &str, body: Vec<u8>) {
        lock(&self.store).objects.insert(key.to_string(), body);
    }

    pub fn put_object(&self, object: Object) {
        self.put(&object.key, object.body);
    }

    pub fn remove(&self, key: &str) {
        lock(&self.store).objects.remove(key);
    }

    /// Every listing fails with `fault` from now on (None: they work again).
    pub fn fail_lists(&self, fault: Option<ReadFault>) {
        lock(&self.store).list_fault = fault;
    }

    /// Gets of keys for which `which` holds fail with `fault` from now on.
    pub fn fail_gets(&self, which: impl Fn(&str) -> bool + Send + 'static, fault: ReadFault) {
        lock(&self.store).get_fault = Some((Box::new(which), fault));
    }

    pub fn heal(&self) {
        let mut store = lock(&self.store);
        store.list_fault = None;
        store.get_fault = None;
    }

    /// Listing calls made so far.
    pub fn lists(&self) -> usize {
        lock(&self.store).lists
    }

    /// Every key fetched so far, in order.
    pub fn gets(&self) -> Vec<String> {
        lock(&self.store).gets.clone()
    }

    pub fn reset_counts(&self) {
        let mut store = lock(&self.store);
        store.lists = 0;
        store.gets.clear();
    }
}

#[async_trait]
impl ReadBucket for MemoryBucket {
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Listed>, ReadFault> {
        let mut store = lock(&self.store);
        store.lists += 1;
        if let Some(fault) = &store.list_fault {
            return Err(fault.clone());
        }
        assert!((1..=1000).contains(&limit), "max-keys {limit}");
        let from = start_after.unwrap_or("");
        Ok(store
            .objects
            .range::<str, _>((std::ops::Bound::Excluded(from), std::ops::Bound::Unbounded))
            .filter(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| Listed {
                key: k.clone(),
                size: v.len() as u64,
            })
            .collect())
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, ReadFault> {
        let mut store = lock(&self.store);
        store.gets.push(key.to_string());
        if let Some((which, fault)) = &store.get_fault {
            if which(key) {
                return Err(fault.clone());
            }
        }
        store
            .objects
            .get(key)
            .cloned()
            .ok_or_else(|| ReadFault::NotFound(key.to_string()))
    }
}
