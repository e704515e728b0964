//! [`advance`] against the in-memory bucket, a sink that can fail in the middle of
//! a step's writes, and a store holding the job as the control table would.

use super::job::*;
use super::tests::{root, standard, State, NOW};
use super::{StepLimits, Target};
use crate::fakes::MemoryBucket;
use async_trait::async_trait;
use std::sync::Mutex;
use subkv_dynamo_kv::RestoreWrite;
use subkv_kv::model::versionstamp;

/// The new database: its entries as the model state, its head, and a planned
/// fault (`fail_at`: the index of the `apply` call that lands half of its writes,
/// then fails as `fault` says).
#[derive(Default)]
struct Sink {
    state: Mutex<State>,
    head: Mutex<u64>,
    applies: Mutex<usize>,
    fail_at: Option<(usize, SinkFault)>,
}

#[async_trait]
impl RestoreSink for Sink {
    async fn apply(&self, writes: Vec<RestoreWrite>) -> Result<(), SinkFault> {
        let call = {
            let mut applies = self.applies.lock().unwrap();
            *applies += 1;
            *applies - 1
        };
        let fault = self.fail_at.as_ref().filter(|(at, _)| *at == call);
        let landed = if fault.is_some() {
            writes.len() / 2
        } else {
            writes.len()
        };
        let mut state = self.state.lock().unwrap();
        for write in &writes[..landed] {
            match write {
                RestoreWrite::Put(e) => {
                    state.insert(
                        e.key.clone(),
                        (e.value.clone(), e.versionstamp(), e.expire_at_ms),
                    );
                }
                RestoreWrite::Delete(key) => {
                    state.remove(key);
                }
            }
        }
        match fault {
            Some((_, fault)) => Err(fault.clone()),
            None => Ok(()),
        }
    }

    async fn raise_head(&self, version: u64) -> Result<(), SinkFault> {
        let mut head = self.head.lock().unwrap();
        *head = (*head).max(version);
        Ok(())
    }
}

/// The stored job, replaced only on the condition that it is the one read.
struct Store {
    job: Mutex<Job>,
    saves: Mutex<usize>,
}

impl Store {
    fn new(job: Job) -> Self {
        Self {
            job: Mutex::new(job),
            saves: Mutex::new(0),
        }
    }

    fn job(&self) -> Job {
        self.job.lock().unwrap().clone()
    }
}

#[async_trait]
impl JobStore for Store {
    async fn save(&self, previous: &Job, next: &Job) -> Result<(), StoreFault> {
        let mut job = self.job.lock().unwrap();
        if *job != *previous {
            return Err(StoreFault::Superseded);
        }
        *job = next.clone();
        *self.saves.lock().unwrap() += 1;
        Ok(())
    }
}

const SMALL: StepLimits = StepLimits {
    max_writes: 2,
    max_bytes: 1 << 20,
};

async fn run(
    bucket: &MemoryBucket,
    sink: &Sink,
    store: &Store,
    steps: Option<usize>,
) -> Result<Job, Stopped> {
    let mut left = steps.unwrap_or(usize::MAX);
    let mut more = move || {
        let go = left > 0;
        left = left.saturating_sub(1);
        go
    };
    advance(store.job(), bucket, sink, store, SMALL, NOW, &mut more).await
}

#[tokio::test]
async fn a_job_runs_to_its_point_and_raises_the_head_past_it() {
    let (bucket, history) = standard();
    let store = Store::new(Job::new(&root(), Target::Versionstamp(versionstamp(20))));
    let sink = Sink::default();
    let job = run(&bucket, &sink, &store, None).await.expect("a restore");
    assert!(job.is_done());
    assert_eq!(job, store.job(), "the last job is stored");
    assert_eq!(job.point().unwrap().versionstamp, versionstamp(20));
    let state = sink.state.lock().unwrap().clone();
    assert_eq!(state, history.state_at(20));
    assert!(job.keys() >= state.len() as u64, "{} puts", job.keys());
    assert_eq!(*sink.head.lock().unwrap(), 20);
    assert!(
        *store.saves.lock().unwrap() > 10,
        "a store after every step"
    );
}

#[tokio::test]
async fn a_job_stopped_anywhere_resumes_to_the_same_state() {
    let (bucket, history) = standard();
    let target = Target::Versionstamp(versionstamp(21));
    let fresh = Sink::default();
    let store = Store::new(Job::new(&root(), target));
    run(&bucket, &fresh, &store, None).await.unwrap();
    let applies = *fresh.applies.lock().unwrap();
    assert!(applies > 5, "{applies} steps with writes");
    // A step's writes fail half-way (a throttled batch, a crash): the invocation
    // stops; the next one starts from the stored job.
    for fail_at in 0..applies {
        let store = Store::new(Job::new(&root(), target));
        let sink = Sink {
            fail_at: Some((fail_at, SinkFault::Transient("throttled".into()))),
            ..Sink::default()
        };
        let stopped = run(&bucket, &sink, &store, None).await.unwrap_err();
        assert_eq!(stopped, Stopped::Transient("throttled".into()));
        assert!(!store.job().is_done());
        let job = run(&bucket, &sink, &store, None).await.expect("resumed");
        assert!(job.is_done());
        assert_eq!(
            *sink.state.lock().unwrap(),
            history.state_at(21),
            "failed at {fail_at}"
        );
        assert_eq!(*sink.head.lock().unwrap(), 21);
    }
    // Out of time after every number of steps: the same, one invocation at a time.
    let store = Store::new(Job::new(&root(), target));
    let sink = Sink::default();
    let mut invocations = 0;
    while !store.job().is_done() {
        let before = store.job();
        let job = run(&bucket, &sink, &store, Some(3)).await.unwrap();
        assert_ne!(job, before, "every invocation makes progress");
        invocations += 1;
    }
    assert!(invocations > 3, "{invocations} invocations");
    assert_eq!(*sink.state.lock().unwrap(), history.state_at(21));
}

#[tokio::test]
async fn an_invocation_whose_job_was_advanced_elsewhere_stops() {
    let (bucket, _) = standard();
    let store = Store::new(Job::new(&root(), Target::Latest));
    let sink = Sink::default();
    run(&bucket, &sink, &store, Some(2)).await.unwrap();
    let stale = Job::new(&root(), Target::Latest);
    let mut always = || true;
    let stopped = advance(stale, &bucket, &sink, &store, SMALL, NOW, &mut always)
        .await
        .unwrap_err();
    assert_eq!(stopped, Stopped::Superseded);
}

#[tokio::test]
async fn what_cannot_succeed_fails_with_the_tenants_message() {
    let (bucket, _) = standard();
    // No backup under the root.
    let store = Store::new(Job::new("tenant/elsewhere/", Target::Latest));
    let stopped = run(&bucket, &Sink::default(), &store, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&stopped, Stopped::Failed(m) if m.contains("no backup at `tenant/elsewhere/`")),
        "{stopped:?}"
    );
    // A point the backup does not hold.
    let store = Store::new(Job::new(&root(), Target::Versionstamp(versionstamp(99))));
    let stopped = run(&bucket, &Sink::default(), &store, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&stopped, Stopped::Failed(m) if m.contains("is not in this backup")),
        "{stopped:?}"
    );
    // The store cannot hold what the backup holds.
    let store = Store::new(Job::new(&root(), Target::Latest));
    let sink = Sink {
        fail_at: Some((0, SinkFault::Refused("an entry too large".into()))),
        ..Sink::default()
    };
    let stopped = run(&bucket, &sink, &store, None).await.unwrap_err();
    assert_eq!(stopped, Stopped::Failed("an entry too large".into()));
}
