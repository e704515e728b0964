//! Restore points against [`MemoryBucket`]: exact, newest first, paginated, and
//! reading only the log objects a page needs.

use super::tests::{history, log, root, standard, time_of, History, Mut, DB, PREFIX};
use super::*;
use crate::fakes::MemoryBucket;
use crate::format;
use subkv_kv::model::versionstamp;

fn point(version: u64, time_of_object: u64) -> RestorePoint {
    RestorePoint {
        versionstamp: versionstamp(version),
        time_ms: Some(time_of(time_of_object)),
    }
}

/// Every page of `limit`, concatenated; checks each page's size.
async fn all_pages(bucket: &MemoryBucket, limit: usize) -> Vec<RestorePoint> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = restore_points(bucket, &root(), limit, cursor.as_deref())
            .await
            .unwrap();
        assert!(page.points.len() <= limit);
        if page.next.is_some() {
            assert_eq!(page.points.len(), limit, "only the last page is short");
        }
        out.extend(page.points);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
    panic!("endless pages");
}

#[tokio::test]
async fn points_are_the_commit_ends_from_the_differential_newest_first() {
    let (bucket, _) = standard();
    // 16 and 17 are in [16,17] and in the retry [16..18]: the first object (in name
    // order) gives their time, as in `denokv pitr list`. 19 has no entry.
    let expected = vec![
        point(22, 22),
        point(21, 22),
        point(20, 22),
        point(18, 18),
        point(17, 17),
        point(16, 17),
        point(15, 15),
    ];
    for limit in [1, 2, 3, 4, 6, 7, 8, 1000, 5000] {
        assert_eq!(all_pages(&bucket, limit).await, expected, "limit {limit}");
    }
    // The plan agrees on the range.
    let plan = super::plan(&bucket, &root(), Target::Latest, 0)
        .await
        .unwrap();
    assert_eq!(plan.first, expected[6]);
    assert_eq!(plan.newest, expected[0]);
}

#[tokio::test]
async fn a_page_reads_only_the_objects_it_needs() {
    // 3000 one-commit objects (one commit a second), the differential at 100.
    let bucket = MemoryBucket::new();
    let commits: Vec<(u64, Vec<Mut>)> = (1..=3000u64)
        .map(|v| (v, vec![Mut::Set("k", "v", None)]))
        .collect();
    let history = History { commits };
    bucket.put_object(format::snapshot_object(PREFIX, DB, 1, 0, &[]).unwrap());
    for v in 1..=3000u64 {
        bucket.put_object(log(history.commits(v, v)));
    }
    bucket.put_object(format::differential_object(PREFIX, DB, 100));

    bucket.reset_counts();
    let page = restore_points(&bucket, &root(), 10, None).await.unwrap();
    let versions: Vec<u64> = (2991..=3000).rev().collect();
    assert_eq!(
        page.points,
        versions.iter().map(|v| point(*v, *v)).collect::<Vec<_>>()
    );
    let (gets, lists) = (bucket.gets().len(), bucket.lists());
    assert!(gets <= 13, "{gets} objects read for 10 points");
    assert!(lists <= 40, "{lists} listings");

    // A page deep in the history costs the same.
    let mut cursor = page.next;
    for _ in 0..100 {
        cursor = restore_points(&bucket, &root(), 10, cursor.as_deref())
            .await
            .unwrap()
            .next;
    }
    bucket.reset_counts();
    let page = restore_points(&bucket, &root(), 10, cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(page.points[0], point(1990, 1990));
    assert!(bucket.gets().len() <= 13, "{:?}", bucket.gets().len());
    assert!(bucket.lists() <= 40, "{}", bucket.lists());

    // The whole list ends at the differential.
    let every = all_pages(&bucket, 1000).await;
    assert_eq!(every.len(), 2901);
    assert_eq!(every.last(), Some(&point(100, 100)));
}

#[tokio::test]
async fn degenerate_backups_have_one_point() {
    let history = history();
    // No log: the differential, time unknown.
    let bucket = MemoryBucket::new();
    bucket.put_object(format::snapshot_object(PREFIX, DB, 1, 0, &history.entries_at(10)).unwrap());
    bucket.put_object(format::differential_object(PREFIX, DB, 10));
    let page = restore_points(&bucket, &root(), 10, None).await.unwrap();
    assert_eq!(
        page.points,
        vec![RestorePoint {
            versionstamp: versionstamp(10),
            time_ms: None
        }]
    );
    assert_eq!(page.next, None);
    // Logs that end before the differential: their last commit.
    bucket.put_object(log(history.commits(11, 13)));
    bucket.put_object(format::differential_object(PREFIX, DB, 14));
    let page = restore_points(&bucket, &root(), 10, None).await.unwrap();
    assert_eq!(page.points, vec![point(13, 13)]);
}

#[tokio::test]
async fn bad_input_is_refused() {
    let (bucket, _) = standard();
    let wrong = format::root("elsewhere/", DB);
    assert!(matches!(
        restore_points(&bucket, &wrong, 10, None).await,
        Err(RestoreError::Layout(LayoutError::NoDifferential { .. }))
    ));
    for cursor in [
        "",
        "zz",
        "000000000000000f0000.q.x",
        "000000000000000f0000.i.garbage.bin",
    ] {
        assert_eq!(
            restore_points(&bucket, &root(), 10, Some(cursor)).await,
            Err(RestoreError::BadCursor),
            "{cursor:?}"
        );
    }
    bucket.put(&format!("{}logs/zzz.bin", root()), vec![]);
    assert!(matches!(
        restore_points(&bucket, &root(), 10, None).await,
        Err(RestoreError::Layout(LayoutError::BadName { .. }))
    ));
}
