//! The restore core (issue 14, `subkv_backup::restore`) reads a live backup in the
//! emulator's S3 as the real `denokv` does: the same restore points (versionstamps and
//! times; plus the state denokv's first sync starts from), and at each point checked the same keys, values, encodings and versionstamps as
//! `denokv pitr checkout` leaves in its SQLite copy, with the original deadlines kept.
//! The bucket is read through the engine's own S3 client (`Bucket` as a
//! `ReadBucket`: `ListObjectsV2`, `GetObject`). No database is restored into yet:
//! the restore function and the API come next (docs/decisions.md, decision 41).

use std::collections::BTreeMap;
use subkv_backup::bucket::{Bucket, Connector, Target as BucketTarget};
use subkv_backup::restore::{self, Job, StepLimits, Target, Write};
use subkv_core::secrets::SecretString;
use subkv_e2e::backup::*;
use subkv_e2e::restore::{sqlite_rows, Rows};

const PREFIX: &str = "restore-core/";

/// The state at `target` by the restore core, step after step (small steps, so that
/// snapshot ranges and log objects take several), as rows plus each key's deadline;
/// each step also applied, if `into` names a database, by the KV engine's restore
/// write path.
async fn core_state(
    bucket: &Bucket,
    root: &str,
    target: Target,
    into: Option<(&subkv_dynamo_kv::DynamoKv, uuid::Uuid)>,
) -> (restore::Plan, Rows, BTreeMap<String, i64>) {
    let plan = restore::plan(bucket, root, target, now_ms() as i64)
        .await
        .unwrap_or_else(|e| panic!("plan {target}: {e}"));
    let limits = StepLimits {
        max_writes: 7,
        ..StepLimits::default()
    };
    let mut cursor = restore::Cursor::start();
    let (mut rows, mut deadlines) = (Rows::new(), BTreeMap::new());
    let mut steps = 0;
    while !cursor.is_done() {
        let step = restore::step(bucket, &plan, &cursor, limits)
            .await
            .unwrap_or_else(|e| panic!("step {steps} of {target}: {e}"));
        if let Some((kv, database)) = into {
            let writes: Vec<subkv_dynamo_kv::RestoreWrite> =
                step.writes.iter().cloned().map(Into::into).collect();
            kv.restore_writes(database, &writes)
                .await
                .unwrap_or_else(|e| panic!("applying step {steps} of {target}: {e}"));
        }
        for write in step.writes {
            match write {
                Write::Put(entry) => {
                    let key = hex::encode(&entry.key);
                    if let Some(at) = entry.expire_at_ms {
                        deadlines.insert(key.clone(), at);
                    } else {
                        deadlines.remove(&key);
                    }
                    rows.insert(
                        key,
                        (
                            hex::encode(&entry.value),
                            entry.encoding,
                            hex::encode(entry.versionstamp),
                        ),
                    );
                }
                Write::Delete { key } => {
                    rows.remove(&hex::encode(&key));
                    deadlines.remove(&hex::encode(&key));
                }
            }
        }
        cursor = step.next;
        steps += 1;
    }
    eprintln!("{target}: {} keys in {steps} steps", rows.len());
    (plan, rows, deadlines)
}

/// A sink that lands half of one step's writes, then fails as throttling would.
struct Flaky {
    inner: subkv_restore::store::KvSink,
    fail_at: usize,
    calls: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl restore::RestoreSink for Flaky {
    async fn apply(
        &self,
        writes: Vec<subkv_dynamo_kv::RestoreWrite>,
    ) -> Result<(), restore::SinkFault> {
        use std::sync::atomic::Ordering;
        if self.calls.fetch_add(1, Ordering::SeqCst) == self.fail_at {
            let half = writes[..writes.len() / 2].to_vec();
            self.inner.apply(half).await?;
            self.failed.store(true, Ordering::SeqCst);
            return Err(restore::SinkFault::Transient("injected".into()));
        }
        self.inner.apply(writes).await
    }

    async fn raise_head(&self, version: u64) -> Result<(), restore::SinkFault> {
        self.inner.raise_head(version).await
    }
}

/// A new database (through the API), its restore job's store in the stack's
/// control table, and a flaky sink into it.
async fn job_parts() -> (subkv_restore::store::DynamoJobStore, Flaky, KvDatabase) {
    let db = kv_database("restore-job").await;
    let id: uuid::Uuid = db.id.parse().unwrap();
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let jobs = subkv_restore::store::DynamoJobStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        control_table(),
        id,
    );
    let sink = Flaky {
        inner: subkv_restore::store::KvSink::new(subkv_e2e::kv_wire::store().await, id),
        fail_at: 2,
        calls: Default::default(),
        failed: Default::default(),
    };
    (jobs, sink, db)
}

/// The stack's control table.
fn control_table() -> String {
    std::env::var("SUBKV_CONTROL_TABLE").unwrap_or_else(|_| "subkv-control".into())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// RFC 3339 with milliseconds in UTC, as `denokv pitr list` prints times.
fn rfc3339_ms(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[tokio::test]
async fn the_restore_core_reads_a_live_backup_as_denokv_does() {
    let db = kv_database("restore-core").await;
    run_workload(&db, 0, 16);
    let bucket_name = fresh_bucket("restore-core").await;
    let backup_id = enable_backup(&db, &bucket_name, PREFIX).await;
    let during = run_workload(&db, 16, 32);
    let last = during.iter().rev().find(|c| c.recovery_point).unwrap();
    wait_backed_up(&db.org.token, &backup_id, &last.versionstamp, DEADLINE).await;
    let after = run_workload(&db, 32, 44);
    let newest = after.iter().rev().find(|c| c.recovery_point).unwrap();
    wait_backed_up(&db.org.token, &backup_id, &newest.versionstamp, DEADLINE).await;
    let root = format!("{PREFIX}{}/", db.id);

    // The engine's client, reading with the emulator's credentials (moto accepts any).
    let bucket = Bucket::new(
        &Connector::new(true),
        &BucketTarget {
            endpoint: emulator_url(),
            bucket: bucket_name.clone(),
            region: "us-east-1".into(),
            access_key_id: "subkv-local".into(),
            secret_access_key: SecretString::new("subkv-local"),
        },
    )
    .expect("a client for the emulator");

    let copy = Restore::new(&bucket_name, &root);
    copy.sync();
    let listed = copy.list();
    assert!(listed.len() >= 10, "{listed:?}");

    // Restore points, newest first, in pages of 4: exactly denokv's list.
    let mut points = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = restore::restore_points(&bucket, &root, 4, cursor.as_deref())
            .await
            .expect("restore points");
        assert!(page.points.len() <= 4);
        points.extend(page.points);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let ours: Vec<RecoveryPoint> = points
        .iter()
        .map(|p| RecoveryPoint {
            versionstamp: hex::encode(p.versionstamp),
            time: rfc3339_ms(
                p.time_ms
                    .expect("every point of a backup with logs has a time"),
            ),
        })
        .collect();
    // denokv lists the commits after the one its first sync replays through; that
    // one is a consistent state too (the copy's first), and the core offers it.
    let differential = get_object(&bucket_name, &format!("{root}differential"))
        .await
        .expect("a differential once active");
    let logs = log_objects(&bucket_name, &root).await;
    let first = first_sync_replays_through(&String::from_utf8(differential).unwrap(), &logs)
        .expect("the engine's logs hold a commit end at or after the differential");
    assert_eq!(
        ours.last().unwrap().versionstamp,
        first,
        "the core's first point"
    );
    assert_eq!(
        ours[..ours.len() - 1],
        listed[..],
        "restore points vs denokv pitr list"
    );
    assert_eq!(listed[0].versionstamp, newest.versionstamp);

    // The same points through the management API, in pages of 4 linked by the
    // `Link` header's cursor.
    let route = format!("/v1/database_backups/{backup_id}/restore_points");
    let mut api_points: Vec<RecoveryPoint> = Vec::new();
    let mut path = format!("{route}?limit=4");
    loop {
        let reply = subkv_e2e::get(&path, &db.org.token).await;
        let page = reply.assert_ok().as_array().expect("a list").clone();
        assert!(page.len() <= 4, "{page:?}");
        api_points.extend(page.iter().map(|p| RecoveryPoint {
            versionstamp: p["versionstamp"].as_str().unwrap().to_string(),
            time: p["timestamp"].as_str().unwrap().to_string(),
        }));
        let Some(link) = reply.headers.get("link") else {
            break;
        };
        let link = link.to_str().unwrap();
        let next = link
            .strip_prefix('<')
            .and_then(|l| l.split_once(">; rel=\"next\""))
            .map(|(url, _)| url)
            .unwrap_or_else(|| panic!("a next link: {link}"));
        path = next[next.find("/v1/").unwrap()..].to_string();
    }
    assert_eq!(api_points, ours, "the API's restore points vs the core's");
    // Another organization's token sees no such backup; a bad query is a 400.
    let other = subkv_e2e::create_org("restore-core-other").await;
    subkv_e2e::get(&route, &other.token)
        .await
        .assert_error(404, "databaseBackupNotFound");
    subkv_e2e::get(&format!("{route}?limit=0"), &db.org.token)
        .await
        .assert_error(400, "invalidQueryParameter");

    // The state at points spread over the list (the first, the newest and three
    // between), by versionstamp: denokv's rows exactly. Deadlines: denokv drops
    // them; the core keeps the workload's one-hour deadlines.
    // The newest is also applied into a new database by the KV engine's restore
    // write path and read back through KV Connect: denokv's rows again.
    let n = listed.len();
    let session = subkv_e2e::kv_wire::Session::open().await;
    let kv = subkv_e2e::kv_wire::store().await;
    for i in [n - 1, n * 3 / 4, n / 2, n / 4, 0] {
        let vs = &listed[i].versionstamp;
        copy.checkout(vs);
        let expected = sqlite_rows(&copy);
        let target = Target::Versionstamp(hex::decode(vs).unwrap().try_into().unwrap());
        let into = (i == 0).then_some((&kv, session.id()));
        let (plan, rows, deadlines) = core_state(&bucket, &root, target, into).await;
        assert_eq!(hex::encode(plan.point.versionstamp), *vs);
        assert_eq!(rows, expected, "state at {vs} (point {i} of {n}) vs denokv");
        let in_50_min = now_ms() as i64 + 50 * 60_000;
        assert!(
            deadlines.values().all(|at| *at > in_50_min),
            "deadlines kept: {deadlines:?}"
        );
        if i == 0 {
            assert!(
                !deadlines.is_empty(),
                "the workload's expiring keys are there"
            );
            let version = subkv_kv::model::split_stamp(&plan.point.versionstamp).0;
            kv.raise_head(session.id(), version)
                .await
                .expect("raise head");
            let read: Rows = session
                .list(vec![], vec![0xff])
                .await
                .into_iter()
                .map(|e| {
                    let vs = hex::encode(&e.versionstamp);
                    (
                        hex::encode(e.key),
                        (hex::encode(e.value), i64::from(e.encoding), vs),
                    )
                })
                .collect();
            assert_eq!(read, expected, "restored database vs denokv");
        }
    }

    // The restore job, as the restore function runs it: its job in the control
    // table, the new database through the KV engine, invocations of a few steps,
    // one of them failing half-way through a step's writes, each recording the
    // restore on the database. The middle point, read back by Deno.
    let vs = &listed[n / 2].versionstamp;
    let target = Target::Versionstamp(hex::decode(vs).unwrap().try_into().unwrap());
    let (jobs, sink, restored) = job_parts().await;
    assert!(jobs.create(&Job::new(&root, target)).await.unwrap());
    assert!(
        !jobs.create(&Job::new(&root, target)).await.unwrap(),
        "one job per database"
    );
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let control = subkv_core::control::DynamoControl::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        control_table(),
    );
    let on = subkv_restore::run::Target {
        organization_id: restored.org.id.parse().unwrap(),
        database_id: restored.id.parse().unwrap(),
        source: subkv_core::control::records::RestoreSource {
            database_backup_id: Some(backup_id.parse().unwrap()),
            s3: None,
        },
        control: &control,
    };
    let limits = StepLimits {
        max_writes: 5,
        ..StepLimits::default()
    };
    let mut invocations = 0;
    let mut retried = 0;
    let shown = |restored: &KvDatabase| {
        let path = format!("/v1/databases/{}", restored.id);
        let token = restored.org.token.clone();
        async move { subkv_e2e::get(&path, &token).await.assert_ok()["restore"].clone() }
    };
    let job = loop {
        let job = jobs.load().await.unwrap().expect("the stored job");
        if job.is_done() {
            break job;
        }
        // An invocation with 31 s left: the 30 s margin leaves one step or so.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(30_050);
        let ran = subkv_restore::run::run(
            &on,
            job,
            &bucket,
            &sink,
            &jobs,
            limits,
            now_ms() as i64,
            deadline,
        )
        .await
        .expect("the control table answers");
        match ran {
            subkv_restore::run::Ran::Advanced(job) if !job.is_done() => {
                let status = shown(&restored).await;
                assert_eq!(status["status"]["code"], "pending", "{status}");
                assert_eq!(status["status"]["keysRestored"], job.keys(), "{status}");
            }
            subkv_restore::run::Ran::Advanced(_) => {}
            subkv_restore::run::Ran::Retry(why) => {
                assert_eq!(why, "injected");
                retried += 1;
            }
            other => panic!("{other:?}"),
        }
        invocations += 1;
        assert!(invocations < 500, "no progress");
    };
    assert_eq!(retried, 1, "the fault was injected once");
    assert_eq!(hex::encode(job.point().unwrap().versionstamp), *vs);
    let status = shown(&restored).await;
    assert_eq!(
        status,
        serde_json::json!({
            "source": {"databaseBackupId": backup_id},
            "versionstamp": vs,
            "status": {"code": "active", "keysRestored": job.keys()}
        })
    );
    let expected = during
        .iter()
        .chain(&after)
        .find(|c| c.versionstamp == *vs)
        .expect("a point of the workload")
        .state
        .clone();
    assert_eq!(
        dump(&restored.url, &restored.org.token),
        expected,
        "restored by the job ({invocations} invocations) vs what Deno saw at {vs}"
    );
    eprintln!("job: {} keys in {invocations} invocations", job.keys());

    // By time: the last point at or before it. Latest: the newest.
    let middle = &points[n / 2];
    let time = middle.time_ms.unwrap();
    let expected = points
        .iter()
        .find(|p| p.time_ms.unwrap() <= time)
        .unwrap()
        .versionstamp;
    let plan = restore::plan(&bucket, &root, Target::Timestamp(time), now_ms() as i64)
        .await
        .expect("plan by time");
    assert_eq!(plan.point.versionstamp, expected);
    let plan = restore::plan(&bucket, &root, Target::Latest, now_ms() as i64)
        .await
        .expect("plan latest");
    assert_eq!(hex::encode(plan.point.versionstamp), newest.versionstamp);

    // A versionstamp the backup does not hold, and a root without a backup.
    let mut past = hex::decode(&newest.versionstamp).unwrap();
    past[7] = past[7].wrapping_add(1);
    let err = restore::plan(
        &bucket,
        &root,
        Target::Versionstamp(past.try_into().unwrap()),
        now_ms() as i64,
    )
    .await
    .expect_err("a point past the newest");
    assert!(err.to_string().contains("is not in this backup"), "{err}");
    let err = restore::plan(&bucket, "restore-core/nothing/", Target::Latest, 0)
        .await
        .expect_err("no backup there");
    assert!(err.to_string().contains("no backup at"), "{err}");
}

/// The KV engine's restore write path (`DynamoKv::restore_writes`, `raise_head`):
/// entries written with their source's versionstamps, including the last two
/// bytes Deno Deploy's carry and subkv's commits leave zero, and long keys sharing
/// a bucket item, read back exactly through KV Connect; checks compare all ten
/// bytes; the next commit's versionstamp is greater than every restored one.
#[tokio::test]
async fn restored_entries_keep_their_versionstamps_through_kv_connect() {
    use denokv_proto::datapath as pb;
    use subkv_dynamo_kv::{head_after, RestoreWrite};
    use subkv_e2e::kv_wire::{key, store, Session};
    use subkv_kv::model::{stamp, Entry};

    let session = Session::open().await;
    let kv = store().await;
    let long = |tail: &str| {
        [
            vec![2u8],
            vec![b'l'; 1100],
            tail.as_bytes().to_vec(),
            vec![0],
        ]
        .concat()
    };
    let entry = |key: Vec<u8>, version: u64, seq: u16, expire_at_ms: Option<i64>| Entry {
        value: format!("{version}.{seq}").into_bytes(),
        key,
        encoding: 3,
        version,
        seq,
        expire_at_ms,
    };
    let far = now_ms() as i64 + 3_600_000;
    let step = vec![
        RestoreWrite::Put(entry(key("a"), 0x10, 0x0102, None)),
        RestoreWrite::Put(entry(key("b"), 0x10, 0, Some(far))),
        RestoreWrite::Put(entry(key("c"), 0x03, 9, None)),
        RestoreWrite::Put(entry(long("1"), 0x20, 7, None)),
        RestoreWrite::Put(entry(long("2"), 0x05, 0, Some(far))),
        RestoreWrite::Put(entry(long("3"), 0x06, 1, None)),
    ];
    // A later step deletes one short and one long key; both steps are applied
    // twice, the second time in the wrong order, as a retried restore may.
    let later = vec![
        RestoreWrite::Delete(key("c")),
        RestoreWrite::Delete(long("3")),
    ];
    for writes in [&step, &later, &step, &later] {
        kv.restore_writes(session.id(), writes)
            .await
            .expect("restore step");
    }
    let restored: Vec<&Entry> = step
        .iter()
        .filter_map(|w| match w {
            RestoreWrite::Put(e) if e.key != key("c") && e.key != long("3") => Some(e),
            _ => None,
        })
        .collect();
    let head = head_after(restored.iter().map(|e| (e.version, e.seq)));
    assert_eq!(head, 0x21, "0x20 with seq 7 needs the next version");
    kv.raise_head(session.id(), head).await.expect("raise head");
    kv.raise_head(session.id(), 2).await.expect("never lowers");

    let mut expected: Vec<(Vec<u8>, Vec<u8>, String)> = restored
        .iter()
        .map(|e| {
            (
                e.key.clone(),
                e.value.clone(),
                hex::encode(e.versionstamp()),
            )
        })
        .collect();
    expected.sort();
    let listed: Vec<(Vec<u8>, Vec<u8>, String)> = session
        .list(vec![2], vec![3])
        .await
        .into_iter()
        .map(|e| (e.key, e.value, hex::encode(e.versionstamp)))
        .collect();
    assert_eq!(listed, expected);

    // A check with the whole versionstamp holds; one differing in its last two
    // bytes fails, on a short key (a DynamoDB condition) and on a long key (the
    // bucket, decided on the item read).
    let check = |k: Vec<u8>, vs: [u8; 10]| pb::Check {
        key: k,
        versionstamp: vs.to_vec(),
    };
    let write = |checks: Vec<pb::Check>| pb::AtomicWrite {
        checks,
        mutations: vec![subkv_e2e::kv_wire::set(&key("next"), b"n", 0)],
        ..Default::default()
    };
    for wrong in [
        check(key("a"), stamp(0x10, 0x0103)),
        check(long("1"), stamp(0x20, 6)),
    ] {
        let out = session.write(write(vec![wrong])).await;
        assert_eq!(out.status, pb::AtomicWriteStatus::AwCheckFailure as i32);
        assert_eq!(out.failed_checks, vec![0]);
    }
    let out = session
        .write(write(vec![
            check(key("a"), stamp(0x10, 0x0102)),
            check(key("b"), stamp(0x10, 0)),
            check(long("1"), stamp(0x20, 7)),
        ]))
        .await;
    assert_eq!(out.status, pb::AtomicWriteStatus::AwSuccess as i32);
    assert_eq!(hex::encode(out.versionstamp), hex::encode(stamp(0x22, 0)));
}

/// A database being restored, or whose restore failed, is refused by KV Connect
/// with a 4xx that the real Deno client reports (rather than retrying, as it does
/// any 5xx); the management API shows the restore; once it is `active` the
/// database opens as any other. The restore state is set in the control table
/// directly, as the restore function will.
#[tokio::test]
async fn a_database_being_restored_is_refused_until_its_restore_is_active() {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    use std::collections::HashMap;

    let db = kv_database("restore-refused").await;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let control = aws_sdk_dynamodb::Client::new(&sdk);
    let table = control_table();
    let backup_id = uuid::Uuid::new_v4().to_string();
    let set_status = |status: HashMap<String, A>| {
        let (control, table, db, backup_id) = (&control, &table, &db, &backup_id);
        async move {
            let restore = HashMap::from([
                (
                    "source".to_string(),
                    A::M(HashMap::from([(
                        "databaseBackupId".to_string(),
                        A::S(backup_id.clone()),
                    )])),
                ),
                ("status".to_string(), A::M(status)),
            ]);
            control
                .update_item()
                .table_name(table)
                .key("pk", A::S(format!("ORG#{}", db.org.id)))
                .key("sk", A::S(format!("DB#{}", db.id)))
                .update_expression("SET #r = :r")
                .expression_attribute_names("#r", "restore")
                .expression_attribute_values(":r", A::M(restore))
                .send()
                .await
                .expect("restore state set");
        }
    };
    let code = |code: &str| ("code".to_string(), A::S(code.into()));
    let keys = |n: u64| ("keysRestored".to_string(), A::N(n.to_string()));
    let open = |what: &str| {
        output_within(
            what,
            deno_script("dump.ts")
                .arg(&db.url)
                .env("DENO_KV_ACCESS_TOKEN", &db.org.token),
            DEADLINE,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };

    set_status(HashMap::from([code("pending"), keys(1200)])).await;
    let shown = subkv_e2e::get(&format!("/v1/databases/{}", db.id), &db.org.token).await;
    assert_eq!(
        shown.assert_ok()["restore"],
        serde_json::json!({
            "source": {"databaseBackupId": backup_id},
            "status": {"code": "pending", "keysRestored": 1200}
        })
    );
    let reply =
        subkv_e2e::kv_wire::connect(&db.id, &db.org.token, r#"{"supportedVersions":[1,2,3]}"#)
            .await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("is being restored from a backup (1200 keys so far)"),
        "{}",
        reply.text()
    );
    let out = open("dump.ts while pending");
    assert!(
        !out.status.success(),
        "Deno must fail, not hang or succeed: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is being restored"),
        "Deno shows the reason: {}",
        describe(&out)
    );

    set_status(HashMap::from([
        code("failed"),
        (
            "message".to_string(),
            A::S("reading the backup failed: AccessDenied".into()),
        ),
        keys(0),
    ]))
    .await;
    let reply =
        subkv_e2e::kv_wire::connect(&db.id, &db.org.token, r#"{"supportedVersions":[3]}"#).await;
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert!(
        reply
            .text()
            .contains("could not be restored from its backup"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("AccessDenied"), "{}", reply.text());

    set_status(HashMap::from([code("active"), keys(1200)])).await;
    let out = open("dump.ts once active");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}
