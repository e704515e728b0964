//! The fake's conditions, one by one (they are what the engine's tests rely on).

use super::*;

/// A `pending` backup of `database`, as the API enables it.
fn record(database: Uuid) -> BackupRecord {
    crate::fakes::backup_record(database, Uuid::new_v4(), "")
}

fn fake() -> (FakeProgress, Locator) {
    let progress = FakeProgress::default();
    let at = progress.add(record(Uuid::new_v4()));
    (progress, at)
}

fn ok(update: Result<Update, StoreError>) -> Update {
    match update {
        Ok(update) => update,
        Err(e) => panic!("{e}"),
    }
}

use Update::{Applied, Lost};

#[tokio::test]
async fn the_first_snapshot_begins_once_and_the_cursor_moves_only_from_where_it_is() {
    let (p, at) = fake();
    assert_eq!(ok(p.begin_snapshot(&at, None, 7, 1).await), Applied);
    assert_eq!(ok(p.begin_snapshot(&at, None, 9, 1).await), Lost);
    assert_eq!(ok(p.advance(&at, 6, 8, None, "t").await), Lost);
    assert_eq!(ok(p.advance(&at, 7, 8, Some("vs"), "t").await), Applied);
    assert_eq!(ok(p.advance(&at, 7, 9, None, "t").await), Lost);
    let item = p.item(&at).expect("item");
    assert_eq!(item.cursor, Some(8));
    assert_eq!(item.record.last_versionstamp.as_deref(), Some("vs"));
}

#[tokio::test]
async fn the_lease_is_its_owners_until_it_runs_out() {
    let (p, at) = fake();
    let _ = ok(p.begin_snapshot(&at, None, 0, 1).await);
    assert_eq!(ok(p.take_lease(&at, "a", 100, 200).await), Applied);
    assert_eq!(ok(p.take_lease(&at, "b", 150, 250).await), Lost);
    assert_eq!(ok(p.take_lease(&at, "a", 150, 250).await), Applied);
    assert_eq!(ok(p.take_lease(&at, "b", 251, 300).await), Applied);
    // Only the owner records a chunk, at its generation and index.
    let step = |owner: &'static str, generation, seq| {
        let (p, at) = (&p, at);
        async move {
            ok(
                p.snapshot_step(&at, owner, generation, seq, Scan::After(b"k"))
                    .await,
            )
        }
    };
    assert_eq!(step("a", 1, 0).await, Lost);
    assert_eq!(step("b", 2, 0).await, Lost);
    assert_eq!(step("b", 1, 1).await, Lost);
    assert_eq!(step("b", 1, 0).await, Applied);
    assert_eq!(step("b", 1, 0).await, Lost, "chunk 0 is recorded");
    assert_eq!(p.item(&at).and_then(|i| i.snap_seq), Some(1));
}

#[tokio::test]
async fn a_re_snapshot_marks_the_earlier_generation_stale_until_cleared() {
    let (p, at) = fake();
    let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
    let _ = ok(p.take_lease(&at, "a", 0, i64::MAX).await);
    let _ = ok(p
        .snapshot_step(&at, "a", 1, 0, Scan::Complete { end: 3 })
        .await);
    assert_eq!(ok(p.activate(&at, 2, "vs", "t").await), Lost);
    assert_eq!(ok(p.activate(&at, 1, "vs", "t").await), Applied);
    let item = p.item(&at).expect("item");
    assert_eq!(
        item.active_gen, item.snap_gen,
        "its differential is written"
    );
    assert_eq!(ok(p.begin_snapshot(&at, Some(2), 9, 2).await), Lost);
    assert_eq!(ok(p.begin_snapshot(&at, Some(3), 9, 2).await), Applied);
    let item = p.item(&at).expect("item");
    assert_eq!((item.active_gen, item.snap_gen), (Some(1), Some(2)));
    assert_eq!(
        item.stale,
        Some(Stale {
            generation: 1,
            chunks: 1,
            below: 10,
            ledger: None
        })
    );
    assert_eq!(item.record.status, BackupStatus::Pending);
    assert_eq!((item.snap_end, item.record.last_versionstamp), (None, None));
    // No third generation while the second's predecessor is not emptied.
    assert_eq!(ok(p.begin_snapshot(&at, Some(9), 12, 3).await), Lost);
    // Its chunks are emptied from the highest down, one recorded step each.
    assert_eq!(ok(p.stale_chunk_emptied(&at, 1, 1, 1).await), Lost);
    assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 2, 1).await), Lost);
    assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 1, 0).await), Lost);
    assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 1, 1).await), Applied);
    assert_eq!(ok(p.stale_chunk_emptied(&at, 2, 1, 1).await), Lost, "done");
    let stale = p.item(&at).and_then(|i| i.stale);
    assert_eq!(stale.map(|s| (s.generation, s.chunks)), Some((1, 0)));
    assert_eq!(ok(p.stale_cleared(&at, 1).await), Lost);
    assert_eq!(ok(p.stale_cleared(&at, 2).await), Applied);
    assert_eq!(ok(p.begin_snapshot(&at, Some(9), 12, 3).await), Applied);
}

#[tokio::test]
async fn failed_is_final_and_a_deleted_backup_is_never_recreated() {
    let (p, at) = fake();
    let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
    assert_eq!(ok(p.fail(&at, "refused").await), Applied);
    assert_eq!(ok(p.begin_snapshot(&at, Some(3), 4, 2).await), Lost);
    assert_eq!(ok(p.activate(&at, 1, "vs", "t").await), Lost);
    p.delete(&at);
    assert_eq!(ok(p.note_error(&at, "m").await), Lost);
    assert_eq!(ok(p.note_fault(&at, "m", 0).await), Lost);
    assert_eq!(ok(p.fail(&at, "m").await), Lost);
    assert_eq!(ok(p.advance(&at, 3, 4, None, "t").await), Lost);
    assert!(p.item(&at).is_none());
    assert!(matches!(p.load(&at).await, Ok(None)));
    assert!(matches!(p.locate(at.database_id).await, Ok(None)));
}

#[tokio::test]
async fn the_ledger_lists_keys_below_a_bound_in_order() {
    let (p, at) = fake();
    for key in ["logs/3", "logs/1", "logs/2", "logs/9"] {
        let _ = p.ledger_put(&at, key).await;
    }
    let below = p.ledger_before(at.backup_id, "logs/9", 2).await.ok();
    assert_eq!(below, Some(vec!["logs/1".into(), "logs/2".into()]));
    let _ = p.ledger_delete(at.backup_id, "logs/1").await;
    assert_eq!(p.ledger(&at), ["logs/2", "logs/3", "logs/9"]);
}

#[tokio::test]
async fn a_retired_root_is_adopted_by_a_fresh_backup_and_removed_only_for_its_backup() {
    let (p, old) = fake();
    let _ = ok(p.begin_snapshot(&old, None, 3, 1).await);
    let _ = p.ledger_put(&old, "logs/1").await;
    p.delete(&old);
    let retired_roots = p.retired_roots(old.database_id);
    let [(root, retired)] = &retired_roots[..] else {
        panic!("one retired root: {retired_roots:?}");
    };
    let (root, retired) = (root.as_str(), *retired);
    assert_eq!(retired.backup_id, old.backup_id);
    assert_eq!(p.ledger_of(old.backup_id), ["logs/1"], "the ledger stays");
    let found = p.retired(old.database_id, root).await.ok().flatten();
    assert_eq!(found, Some(retired));

    let new = p.add(record(old.database_id));
    // Only a pending backup that has not begun.
    assert_eq!(ok(p.begin_over_retired(&new, 7, &retired).await), Applied);
    assert_eq!(ok(p.begin_over_retired(&new, 8, &retired).await), Lost);
    assert_eq!(ok(p.begin_snapshot(&new, None, 8, 1).await), Lost);
    let item = p.item(&new).expect("item");
    assert_eq!((item.cursor, item.snap_gen), (Some(7), Some(2)));
    assert_eq!(item.stale, Some(Stale::retired(&retired)));
    assert_eq!(item.stale.map(|s| s.below), Some(u64::MAX));
    // No re-snapshot while it is not emptied.
    assert_eq!(ok(p.begin_snapshot(&new, Some(7), 9, 3).await), Lost);
    // The retired root goes only for its own backup.
    let other = Uuid::new_v4();
    assert_eq!(
        ok(p.retired_emptied(old.database_id, root, other).await),
        Lost
    );
    assert_eq!(
        ok(p.retired_emptied(old.database_id, root, old.backup_id)
            .await),
        Applied
    );
    assert_eq!(
        ok(p.retired_emptied(old.database_id, root, old.backup_id)
            .await),
        Lost
    );
    assert!(p.retired_roots(old.database_id).is_empty());
    assert_eq!(ok(p.stale_cleared(&new, 2).await), Applied);
    // Deleting a backup that never began retires nothing.
    let (p, at) = fake();
    p.delete(&at);
    assert!(p.retired_roots(at.database_id).is_empty());
}

#[tokio::test]
async fn the_breaker_opens_with_a_timeout_and_closes_with_a_write_that_lands() {
    let open = Breaker {
        faults: 2,
        until_ms: 500,
    };
    let (p, at) = fake();
    let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
    assert_eq!(
        ok(p.open_breaker(&at, "timed out", 100, open).await),
        Applied
    );
    let item = p.item(&at).expect("item");
    assert_eq!(item.breaker, open);
    assert_eq!(item.record.last_error.as_deref(), Some("timed out"));
    assert_eq!(item.error_since, Some(100));
    // The cursor moving closes it (DynamoProgress: REMOVE breakerFaults, breakerUntil).
    assert_eq!(ok(p.advance(&at, 3, 4, None, "t").await), Applied);
    assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
    // So do a snapshot chunk recorded, the activation, and failed.
    let _ = ok(p.take_lease(&at, "a", 0, i64::MAX).await);
    let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
    let _ = ok(p
        .snapshot_step(&at, "a", 1, 0, Scan::Complete { end: 4 })
        .await);
    assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
    let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
    assert_eq!(ok(p.activate(&at, 1, "vs", "t").await), Applied);
    assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
    let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
    assert_eq!(ok(p.fail(&at, "refused").await), Applied);
    assert_eq!(p.item(&at).map(|i| i.breaker), Some(Breaker::default()));
    // A note of another fault leaves it as it is.
    let (p, at) = fake();
    let _ = ok(p.open_breaker(&at, "timed out", 100, open).await);
    let _ = ok(p.note_fault(&at, "SlowDown", 200).await);
    assert_eq!(p.item(&at).map(|i| i.breaker), Some(open));
    p.delete(&at);
    assert_eq!(ok(p.open_breaker(&at, "m", 0, open).await), Lost);
}

#[tokio::test]
async fn a_parked_error_is_counted_and_fails_the_backup_only_when_asked() {
    let (p, at) = fake();
    let _ = ok(p.begin_snapshot(&at, None, 3, 1).await);
    assert_eq!(ok(p.park(&at, "ours", false).await), Applied);
    let item = p.item(&at).expect("item");
    assert_eq!(
        (item.parked, item.record.status),
        (1, BackupStatus::Pending)
    );
    assert_eq!(item.record.last_error.as_deref(), Some("ours"));
    assert_eq!(item.parked_reason.as_deref(), Some("ours"));
    assert_eq!(ok(p.park(&at, "malformed", true).await), Applied);
    let item = p.item(&at).expect("item");
    assert_eq!(item.parked, 2);
    assert_eq!(
        item.record.status,
        BackupStatus::Failed {
            message: "malformed".into()
        }
    );
    assert_eq!(item.parked_reason.as_deref(), Some("malformed"));
    // A racing pass that met the same error: parked once.
    assert_eq!(ok(p.park(&at, "malformed", true).await), Lost);
    assert_eq!(p.item(&at).map(|i| i.parked), Some(2));
    p.delete(&at);
    assert_eq!(ok(p.park(&at, "m", true).await), Lost);
}
