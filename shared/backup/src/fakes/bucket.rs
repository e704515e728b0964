//! [`FakeBucket`]: a tenant bucket that records every put.

use super::lock;
use crate::bucket::BucketFault;
use crate::sink::{ObjectSink, Opened, Sinks};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subkv_core::control::records::BackupRecord;
use subkv_core::error::StoreError;

/// Which puts fail, and how.
type FaultRule = (Box<dyn Fn(&str) -> bool + Send>, BucketFault);

#[derive(Default)]
struct Store {
    /// Every put that succeeded, in order.
    puts: Vec<(String, Vec<u8>)>,
    attempts: usize,
    opens: usize,
    fault: Option<FaultRule>,
    open_fault: Option<BucketFault>,
    /// How long each put takes (on tokio's clock: virtual under a paused clock).
    put_time: Option<Duration>,
}

/// A tenant bucket that records every put; clones share it. It is its own
/// [`Sinks`]: every backup opens it.
#[derive(Clone, Default)]
pub struct FakeBucket {
    store: Arc<Mutex<Store>>,
}

impl FakeBucket {
    /// Puts of keys for which `which` holds fail with `fault` from now on.
    pub fn fail_puts(&self, which: impl Fn(&str) -> bool + Send + 'static, fault: BucketFault) {
        lock(&self.store).fault = Some((Box::new(which), fault));
    }

    /// Every put fails with `fault` from now on.
    pub fn fail_every_put(&self, fault: BucketFault) {
        self.fail_puts(|_| true, fault);
    }

    /// Opening the bucket fails with `fault` (an endpoint the rules refuse).
    pub fn refuse_open(&self, fault: BucketFault) {
        lock(&self.store).open_fault = Some(fault);
    }

    /// Each put takes `time` from now on (a `tokio::time::sleep`: under a paused
    /// clock, virtual time that passes at once and exactly).
    pub fn slow_puts(&self, time: Duration) {
        lock(&self.store).put_time = Some(time);
    }

    /// Puts succeed again.
    pub fn heal(&self) {
        lock(&self.store).fault = None;
    }

    pub fn puts(&self) -> Vec<(String, Vec<u8>)> {
        lock(&self.store).puts.clone()
    }

    pub fn keys(&self) -> Vec<String> {
        self.puts().into_iter().map(|(k, _)| k).collect()
    }

    /// The bucket's content: the last body put at each key.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        self.puts().into_iter().collect()
    }

    /// Puts tried, failed ones included.
    pub fn attempts(&self) -> usize {
        lock(&self.store).attempts
    }

    pub fn opens(&self) -> usize {
        lock(&self.store).opens
    }
}

#[async_trait]
impl ObjectSink for FakeBucket {
    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), BucketFault> {
        let put_time = {
            let mut store = lock(&self.store);
            store.attempts += 1;
            if let Some((which, fault)) = &store.fault {
                if which(key) {
                    return Err(fault.clone());
                }
            }
            store.put_time
        };
        if let Some(time) = put_time {
            tokio::time::sleep(time).await;
        }
        lock(&self.store).puts.push((key.to_string(), body));
        Ok(())
    }
}

#[async_trait]
impl Sinks for FakeBucket {
    async fn open(&self, _record: &BackupRecord) -> Result<Opened, StoreError> {
        let mut store = lock(&self.store);
        store.opens += 1;
        Ok(match &store.open_fault {
            Some(fault) => Opened::Fault(fault.clone()),
            None => Opened::Sink(Arc::new(self.clone())),
        })
    }
}
