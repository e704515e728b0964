//! [`FakeBucket`]: a tenant bucket that records every put.

use super::lock;
use crate::bucket::BucketFault;
use crate::sink::{ObjectSink, Opened, Sinks};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subkv_core::control::records::BackupRecord;
use subkv_core::error::{Recovery, StoreError};

/// Which puts a rule applies to, by key.
type KeyRule = Box<dyn Fn(&str) -> bool + Send>;
/// Which puts fail, and how.
type FaultRule = (KeyRule, BucketFault);

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
    /// Which puts hang, then fail with a timeout after how long (as the S3
    /// client's operation timeout ends a put to a store that never answers).
    hang: Option<(KeyRule, Duration)>,
    /// Opening the sink fails as KMS would (the secret cannot be decrypted).
    open_error: Option<(Recovery, String)>,
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

    /// Puts of keys for which `which` holds hang from now on: no answer, until
    /// the client's own timeout ends them after `timeout` with
    /// [`BucketFault::Timeout`] (tokio's clock: virtual under a paused clock).
    pub fn hang_puts(&self, which: impl Fn(&str) -> bool + Send + 'static, timeout: Duration) {
        lock(&self.store).hang = Some((Box::new(which), timeout));
    }

    /// Opening the sink fails from now on with a KMS error that `recovery`
    /// classifies (`Never`: a ciphertext KMS cannot decrypt).
    pub fn fail_open(&self, recovery: Recovery, message: &str) {
        lock(&self.store).open_error = Some((recovery, message.to_string()));
    }

    /// Puts succeed again (and answer at once: no hang), and opening works.
    pub fn heal(&self) {
        let mut store = lock(&self.store);
        store.fault = None;
        store.hang = None;
        store.open_error = None;
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
        let (put_time, hang) = {
            let mut store = lock(&self.store);
            store.attempts += 1;
            if let Some((which, fault)) = &store.fault {
                if which(key) {
                    return Err(fault.clone());
                }
            }
            let hang = match &store.hang {
                Some((which, timeout)) if which(key) => Some(*timeout),
                _ => None,
            };
            (store.put_time, hang)
        };
        if let Some(timeout) = hang {
            tokio::time::sleep(timeout).await;
            return Err(BucketFault::Timeout(
                "PutObject timed out: the store at fake did not answer in time".into(),
            ));
        }
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
        if let Some((recovery, message)) = &store.open_error {
            return Err(StoreError::kms(
                "Decrypt",
                *recovery,
                std::io::Error::other(message.clone()),
            ));
        }
        Ok(match &store.open_fault {
            Some(fault) => Opened::Fault(fault.clone()),
            None => Opened::Sink(Arc::new(self.clone())),
        })
    }
}
