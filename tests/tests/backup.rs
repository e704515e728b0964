//! Continuous backup end to end, with the real `denokv` binary as the tenant restores:
//! a database written by Deno (tests/kv/backup_workload.ts) before, during and after
//! enabling a backup to a bucket in the emulator's S3; then `denokv pitr sync`,
//! `pitr list` and `pitr checkout` at several recovery points, each compared key by
//! key (values and versionstamps) with the state the workload saw at that
//! versionstamp; then a `denokv serve --sync-from-s3` replica read through
//! Deno.openKv, following a later commit. Contract: docs/backup-format.md and the
//! backup routes of docs/api.md.

use std::time::{Duration, Instant};
use subkv_e2e::backup::*;

const PREFIX: &str = "backup/";

/// Workload commits: before the backup, while it is pending, after it is active.
const PHASE_1: (u64, u64) = (0, 24);
const PHASE_2: (u64, u64) = (24, 48);
const PHASE_3: (u64, u64) = (48, 64);

fn last_recovery_point(commits: &[WorkloadCommit]) -> &WorkloadCommit {
    commits
        .iter()
        .rev()
        .find(|c| c.recovery_point)
        .expect("the phase has a commit with mutations")
}

/// Up to `n` points spread over `points` (newest first), the oldest and newest
/// included, in an order that goes back (undo) and forward (redo) again.
fn checkout_plan(points: &[RecoveryPoint], n: usize) -> Vec<String> {
    let count = points.len();
    let mut picked: Vec<usize> = (0..n.min(count))
        .map(|i| i * (count - 1) / (n.min(count) - 1).max(1))
        .collect();
    picked.dedup();
    // Newest first is going back in time; end by going forward to a middle point and
    // then to the newest.
    let mut plan: Vec<String> = picked
        .iter()
        .map(|i| points[*i].versionstamp.clone())
        .collect();
    if picked.len() > 2 {
        plan.push(points[picked[picked.len() / 2]].versionstamp.clone());
    }
    plan.push(points[0].versionstamp.clone());
    plan
}

#[tokio::test]
async fn denokv_restores_a_live_backup_at_its_recovery_points_and_follows_it() {
    let db = kv_database("backup-e2e").await;
    let mut history = run_workload(&db, PHASE_1.0, PHASE_1.1);

    let bucket = fresh_bucket("engine").await;
    let backup_id = enable_backup(&db, &bucket, PREFIX).await;
    let backup = get_backup(&db.org.token, &backup_id).await;
    assert_eq!(backup["databaseId"], db.id.as_str(), "{backup}");
    assert_eq!(backup["bucketName"], bucket.as_str(), "{backup}");
    assert_eq!(backup["prefix"], PREFIX, "{backup}");
    // Enabling does not contact the bucket: the engine moves the status on later.
    assert!(
        matches!(
            backup["status"]["code"].as_str(),
            Some("pending" | "active")
        ),
        "{backup}"
    );
    let root = format!("{PREFIX}{}/", db.id);

    // Writes go on while the backup takes its snapshot.
    let phase_2 = run_workload(&db, PHASE_2.0, PHASE_2.1);
    let started = Instant::now();
    let status = wait_backed_up(
        &db.org.token,
        &backup_id,
        &last_recovery_point(&phase_2).versionstamp,
        DEADLINE,
    )
    .await;
    eprintln!("active after phase 2 in {:?}", started.elapsed());
    assert!(
        status["lastBackedUpAt"]
            .as_str()
            .is_some_and(|t| t.len() >= 20 && t.contains('T')),
        "{status}"
    );
    history.extend(phase_2);

    // Commits made once the backup is active are after its differential: recovery
    // points whatever the engine chose as the differential.
    let phase_3 = run_workload(&db, PHASE_3.0, PHASE_3.1);
    let newest = last_recovery_point(&phase_3).clone();
    wait_backed_up(&db.org.token, &backup_id, &newest.versionstamp, DEADLINE).await;
    history.extend(phase_3);

    let differential = get_object(&bucket, &format!("{root}differential"))
        .await
        .expect("a differential object once active");
    let differential = String::from_utf8(differential).expect("differential is text");
    assert!(is_versionstamp(&differential), "{differential:?}");
    let keys = list_keys(&bucket, &root).await;
    assert!(
        keys.iter().all(|k| k == &format!("{root}differential")
            || k.starts_with(&format!("{root}snapshots/"))
            || k.starts_with(&format!("{root}logs/"))),
        "only the format's objects under the root: {keys:#?}"
    );
    let logs = log_objects(&bucket, &root).await;
    let replayed =
        first_sync_replays_through(&differential, &logs).unwrap_or_else(|| differential.clone());

    // pitr sync, list.
    let restore = Restore::new(&bucket, &root);
    restore.sync();
    let points = restore.list();
    eprintln!(
        "differential {differential}, first sync replays through {replayed}; {} log \
         objects; {} recovery points listed",
        logs.len(),
        points.len()
    );
    // Exactly the workload's commits with mutations after the one the first sync
    // replayed through, up to the newest (the newest of phase 3), newest first.
    let listed: Vec<&str> = points.iter().map(|p| p.versionstamp.as_str()).collect();
    let expected: Vec<&str> = history
        .iter()
        .rev()
        .filter(|c| c.recovery_point && c.versionstamp > replayed)
        .map(|c| c.versionstamp.as_str())
        .collect();
    assert_eq!(listed, expected, "pitr list");
    for commit in history
        .iter()
        .filter(|c| c.commit >= PHASE_3.0 && c.recovery_point)
    {
        assert!(
            listed.contains(&commit.versionstamp.as_str()),
            "phase 3 commit {} ({}) is not a recovery point",
            commit.commit,
            commit.versionstamp
        );
    }
    // `pitr sync` leaves the copy at the newest state it has.
    assert_eq!(restore.current(), newest.versionstamp);
    assert_same_state("restored after pitr sync", &newest.state, &restore.dump());

    // pitr checkout at points spread over the list, back and forth.
    let plan = checkout_plan(&points, 5);
    assert!(plan.len() >= 3, "too few recovery points: {points:?}");
    for versionstamp in &plan {
        restore.checkout(versionstamp);
        let commit = at(&history, versionstamp);
        assert_same_state(
            &format!("restored at commit {} ({versionstamp})", commit.commit),
            &commit.state,
            &restore.dump(),
        );
    }

    // A replica following the backup: the newest state, then a commit made after it
    // started (the engine backs it up, the replica syncs every 10 to 15 s).
    let replica = Restore::new(&bucket, &root);
    let server = replica.serve_sync_from_s3();
    assert_same_state("replica", &newest.state, &server.dump());
    let next = run_workload(&db, PHASE_3.1, PHASE_3.1 + 1).remove(0);
    assert!(next.recovery_point);
    let started = Instant::now();
    poll(
        "the replica shows the commit made after it started",
        DEADLINE,
        Duration::from_secs(2),
        || {
            let dump = server.dump();
            let expected = &next.state;
            async move {
                if &dump == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "{} entries, expected {}",
                        dump.as_array().map_or(0, Vec::len),
                        expected.as_array().map_or(0, Vec::len)
                    ))
                }
            }
        },
    )
    .await;
    eprintln!(
        "replica caught up with commit {} after {:?}",
        next.commit,
        started.elapsed()
    );
}
