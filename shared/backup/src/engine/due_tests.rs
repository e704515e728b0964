//! Fleet scale: which backups the catch-up visits (the due list), the negative
//! cache of databases without a backup, and the stuck states a pass reports.

use super::tests::{world, world_with};
use super::*;
use crate::fakes::FakeProgress;

const OUTAGE: &str = "PutObject failed at the store: SlowDown: Please reduce your request rate.";

fn settling() -> EngineConfig {
    EngineConfig {
        snapshot_items_per_chunk: 2,
        hot_pass: Duration::from_millis(200),
        absent_ttl: Duration::ZERO,
        ..EngineConfig::default()
    }
}

#[tokio::test]
async fn an_active_backup_caught_up_leaves_the_due_list_and_costs_no_write_after() {
    let w = world_with(settling());
    assert!(w.item().due, "the API enables a backup due");
    w.active(&[("a", Some("1"))]).await;
    assert!(!w.item().due, "active and caught up: off the due list");
    assert!(w
        .engine
        .progress()
        .due()
        .await
        .unwrap_or_default()
        .is_empty());

    // Forwarding commits writes no due attribute either way.
    w.commit(&[("b", Some("2"))]);
    let report = w.pass().await;
    assert_eq!(report.commits_forwarded, 1);
    assert!(!w.item().due);
    let calls = w.progress.calls();
    assert!(!calls.contains(&"mark_due"), "{calls:?}");
    assert_eq!(
        calls.iter().filter(|c| **c == "settle").count(),
        1,
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_new_backup_stays_due_while_instances_may_still_cache_its_absence() {
    // Default: an instance trusts "no backup" for 60 s, so a backup stays due for
    // the catch-up that long after its snapshot began.
    let w = world();
    w.active(&[("a", Some("1"))]).await;
    w.pass().await;
    assert!(w.item().due);
    w.progress.backdate_pending(&w.at, Duration::from_secs(61));
    w.pass().await;
    assert!(!w.item().due);
}

#[tokio::test]
async fn a_fault_puts_the_backup_back_on_the_due_list_until_a_write_lands() {
    let w = world_with(settling());
    w.active(&[("a", Some("1"))]).await;
    assert!(!w.item().due);
    w.bucket
        .fail_every_put(crate::bucket::BucketFault::Transient(OUTAGE.into()));
    w.commit(&[("b", Some("2"))]);
    let report = w.pass().await;
    assert!(report.retrying, "{report:?}");
    assert!(w.item().due);
    // Healed: the fault's run ends with the write, and the next caught-up pass
    // takes it off the list.
    w.bucket.heal();
    let report = w.pass().await;
    assert_eq!(report.commits_forwarded, 1);
    assert!(!report.retrying, "{report:?}");
    w.pass().await;
    assert!(!w.item().due);
}

#[tokio::test]
async fn a_failed_backup_is_off_the_due_list() {
    let w = world_with(settling());
    w.bucket
        .fail_every_put(crate::bucket::BucketFault::Refused("AccessDenied".into()));
    let report = w.pass().await;
    assert!(report.failed, "{report:?}");
    assert!(!w.item().due);
}

#[tokio::test(start_paused = true)]
async fn a_pass_that_runs_out_of_time_leaves_the_backup_due() {
    const PUT: Duration = Duration::from_secs(1);
    let w = world_with(EngineConfig {
        max_commits_per_object: 1,
        ..settling()
    });
    w.active(&[("a", Some("1"))]).await;
    assert!(!w.item().due);
    for i in 0..10 {
        w.commit(&[("k", Some(i.to_string().as_str()))]);
    }
    w.bucket.slow_puts(PUT);
    let deadline = tokio::time::Instant::now().into_std() + 3 * PUT;
    let report = w.engine.sync(&w.at, deadline).await.expect("pass");
    assert!(report.commits_forwarded < 10, "{report:?}");
    assert!(w.item().due, "work left: the catch-up must go on with it");
}

#[tokio::test]
async fn a_backup_pending_past_its_bound_is_reported_overdue() {
    let w = world_with(EngineConfig {
        pending_bound: Duration::from_secs(3600),
        ..settling()
    });
    w.progress.hold_lease(&w.at, "another", i64::MAX);
    let report = w.pass().await;
    assert!(!report.overdue, "{report:?}");
    w.progress
        .backdate_pending(&w.at, Duration::from_secs(3601));
    let report = w.pass().await;
    assert!(report.overdue, "{report:?}");
}

#[tokio::test]
async fn a_database_without_backup_is_looked_up_once_per_ttl() {
    let kv = Arc::new(crate::fakes::FakeKv::default());
    let progress = Arc::new(FakeProgress::default());
    let engine = |ttl: Duration| {
        Engine::new(
            kv.clone(),
            progress.clone(),
            Arc::new(crate::fakes::FakeBucket::default()),
            EngineConfig {
                absent_ttl: ttl,
                ..EngineConfig::default()
            },
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = Uuid::new_v4();
    let locates = || progress.calls().iter().filter(|c| **c == "locate").count();
    let cached = engine(Duration::from_secs(60));
    for _ in 0..5 {
        let sync = cached.sync_database(db, deadline).await.expect("sync");
        assert_eq!(sync, DatabaseSync::NoBackup);
    }
    assert_eq!(locates(), 1);
    let uncached = engine(Duration::ZERO);
    for _ in 0..5 {
        let sync = uncached.sync_database(db, deadline).await.expect("sync");
        assert_eq!(sync, DatabaseSync::NoBackup);
    }
    assert_eq!(locates(), 6);
}

#[tokio::test]
async fn the_requests_of_a_pass_are_counted() {
    // The figures of docs/performance.md ("Backup at fleet scale"): what one pass
    // asks of the control table, the change log and the bucket.
    let w = world_with(settling());
    w.active(&[("a", Some("1"))]).await;
    let (progress_before, kv_before, puts_before) = (
        w.progress.calls().len(),
        w.kv.calls().len(),
        w.bucket.attempts(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);

    // An idle backup's visit (the sweep).
    w.engine.sync(&w.at, deadline).await.expect("pass");
    let progress: Vec<_> = w.progress.calls()[progress_before..].to_vec();
    let kv: Vec<_> = w.kv.calls()[kv_before..].to_vec();
    assert_eq!(progress, ["load"]);
    assert_eq!(kv, ["change_log", "head"]);
    assert_eq!(w.bucket.attempts(), puts_before);

    // A stream delivery of one commit.
    w.commit(&[("b", Some("2"))]);
    let (progress_before, kv_before) = (w.progress.calls().len(), w.kv.calls().len());
    let sync = w.engine.sync_database(w.db, deadline).await.expect("pass");
    assert!(matches!(sync, DatabaseSync::Synced(_, ref r) if r.commits_forwarded == 1));
    let progress: Vec<_> = w.progress.calls()[progress_before..].to_vec();
    let kv: Vec<_> = w.kv.calls()[kv_before..].to_vec();
    assert_eq!(
        progress,
        [
            "locate",
            "load",
            "take_forwarding",
            "load",
            "ledger_put",
            "advance",
            "release_forwarding",
            "load"
        ]
    );
    assert_eq!(kv, ["change_log", "change_log", "change_log"]);
    assert_eq!(w.bucket.attempts(), puts_before + 1);
}

#[tokio::test]
async fn an_open_breaker_and_a_parked_error_keep_the_backup_on_the_due_list() {
    // The catch-up is what probes an open breaker and retries a parked error the
    // operator may fix: it only visits backups that are due (or in their hour's
    // sweep slot).
    let w = world_with(settling());
    w.active(&[("a", Some("1"))]).await;
    assert!(!w.item().due);
    let open = crate::progress::Breaker {
        faults: 1,
        until_ms: 0,
    };
    let _ = w
        .progress
        .open_breaker(&w.at, "PutObject timed out", 0, open)
        .await;
    assert!(w.item().due);
    let w = world_with(settling());
    w.active(&[("a", Some("1"))]).await;
    assert!(!w.item().due);
    let _ = w.progress.park(&w.at, "KMS AccessDenied", false).await;
    assert!(
        w.item().due,
        "parked but not failed: retried by the catch-up"
    );
    let _ = w.progress.park(&w.at, "malformed record", true).await;
    assert!(!w.item().due, "failed: left alone until a retry");
}

#[tokio::test(start_paused = true)]
async fn a_stream_delivery_gives_a_pending_snapshot_at_most_its_hot_pass() {
    // The other databases of a stream batch wait for this one: a snapshot of many
    // chunks is the catch-up's work, not a delivery's (found by the busy-database
    // benchmark: one delivery took 20 s of snapshot chunks).
    const PUT: Duration = Duration::from_millis(500);
    let w = world_with(EngineConfig {
        snapshot_items_per_chunk: 1,
        hot_pass: Duration::from_secs(2),
        ..settling()
    });
    for i in 0..30 {
        w.commit(&[(format!("k{i:02}").as_str(), Some("v"))]);
    }
    w.bucket.slow_puts(PUT);
    let started = tokio::time::Instant::now();
    let deadline = started.into_std() + Duration::from_secs(20);
    let report = w
        .engine
        .pass(&w.at, deadline, Trigger::Stream)
        .await
        .expect("stream pass");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "the delivery took {took:?}");
    assert!(report.snapshot_chunks >= 1, "{report:?}");
    assert!(report.snapshot_chunks <= 5, "{report:?}");
    assert_eq!(w.status(), BackupStatus::Pending);
    assert!(w.item().due);
    // The catch-up goes on to the end.
    let deadline = tokio::time::Instant::now().into_std() + Duration::from_secs(60);
    let report = w.engine.sync(&w.at, deadline).await.expect("catch-up");
    assert!(report.activated, "{report:?}");
}
