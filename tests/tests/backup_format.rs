//! The backup format (`subkv_kv::backup_format`) against the real reader, without the
//! backup engine: objects built by the format module are put into a bucket of the
//! emulator's S3, the public `denokv` binary restores them (`pitr sync`, `pitr list`,
//! `pitr checkout`, `serve`, `serve --sync-from-s3`), and Deno reads the restored
//! copy back through `Deno.openKv` (tests/kv/dump.ts). Every state is compared, key
//! by key and with each entry's versionstamp, with a model of the history.
//!
//! Values are ones Rust encodes trivially: bytes (encoding 3, a Uint8Array in Deno)
//! and little-endian u64 (encoding 2, a Deno.KvU64). Keys use denokv_proto's codec.

use denokv_proto::backup::{BackupKvMutationKind as Kind, BackupReplicationLogEntry};
use denokv_proto::{encode_key, Key, KeyPart};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use subkv_e2e::backup::*;
use subkv_kv::backup_format::{self as format, Commit, Object, COMMIT_END};
use subkv_kv::model::{versionstamp, Entry};
use uuid::Uuid;

const PREFIX: &str = "format/";
/// 2023-11-14T22:13:20.000Z: commit `v` happened `v` seconds later.
const BASE_MS: u64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
enum Val {
    Bytes(Vec<u8>),
    U64(u64),
}

impl Val {
    fn raw(&self) -> (Vec<u8>, i64) {
        match self {
            Val::Bytes(b) => (b.clone(), 3),
            Val::U64(n) => (n.to_le_bytes().to_vec(), 2),
        }
    }

    fn canonical(&self) -> Value {
        match self {
            Val::Bytes(b) => json!({"t": "bytes", "v": hex::encode(b)}),
            Val::U64(n) => json!({"t": "u64", "v": n.to_string()}),
        }
    }
}

fn bytes(s: &str) -> Val {
    Val::Bytes(s.as_bytes().to_vec())
}

/// The canonical form (tests/kv/canonical.ts) of the key parts used here.
fn canonical_part(part: &KeyPart) -> Value {
    match part {
        KeyPart::String(s) => json!({"t": "string", "v": s}),
        KeyPart::Bytes(b) => json!({"t": "bytes", "v": hex::encode(b)}),
        KeyPart::Float(f) => json!({"t": "number", "v": f.to_string()}),
        KeyPart::True => json!({"t": "boolean", "v": true}),
        KeyPart::False => json!({"t": "boolean", "v": false}),
        KeyPart::Int(_) => unreachable!("not used: no bigint crate here"),
    }
}

fn long_part() -> KeyPart {
    KeyPart::String("long-".repeat(300))
}

/// One mutation: `value` None is a CLEAR; `kind` is what the log entry says (the
/// reader treats every kind but CLEAR as a SET of the value: sum/min/max are logged
/// with their result).
struct Mutation {
    key: Vec<KeyPart>,
    kind: Kind,
    value: Option<Val>,
}

fn set(key: Vec<KeyPart>, value: Val) -> Mutation {
    Mutation {
        key,
        kind: Kind::MkSet,
        value: Some(value),
    }
}

fn result_of(kind: Kind, key: Vec<KeyPart>, value: u64) -> Mutation {
    Mutation {
        key,
        kind,
        value: Some(Val::U64(value)),
    }
}

fn clear(key: Vec<KeyPart>) -> Mutation {
    Mutation {
        key,
        kind: Kind::MkClear,
        value: None,
    }
}

fn s(part: &str) -> KeyPart {
    KeyPart::String(part.to_string())
}

/// The history: (version, mutations), versions with gaps as subkv's are.
fn history() -> Vec<(u64, Vec<Mutation>)> {
    vec![
        (
            3,
            vec![
                set(vec![s("a")], bytes("a3")),
                set(vec![s("b"), KeyPart::Float(1.5)], Val::U64(1)),
                set(vec![s("k"), long_part()], bytes("long 3")),
            ],
        ),
        (
            5,
            vec![
                set(vec![s("c"), KeyPart::Bytes(vec![0, 1])], bytes("c5")),
                set(vec![s("d"), KeyPart::True], Val::U64(10)),
                set(vec![s("gone")], bytes("x")),
            ],
        ),
        (
            8,
            vec![clear(vec![s("gone")]), set(vec![s("a")], bytes("a8"))],
        ),
        // The snapshot is the state after 8; the logs start at 5 (they overlap it).
        (
            9,
            vec![
                result_of(Kind::MkSum, vec![s("b"), KeyPart::Float(1.5)], 2),
                set(vec![s("e")], bytes("e9")),
            ],
        ),
        (
            12,
            vec![
                clear(vec![s("c"), KeyPart::Bytes(vec![0, 1])]),
                result_of(Kind::MkMin, vec![s("d"), KeyPart::True], 7),
            ],
        ),
        // The differential is 12: the recovery points start at 13.
        (
            13,
            vec![
                set(vec![s("a")], bytes("a13")),
                set(vec![s("f"), KeyPart::False], Val::U64(u64::MAX)),
                clear(vec![s("e")]),
            ],
        ),
        (
            15,
            vec![
                set(vec![s("g")], Val::Bytes(Vec::new())),
                result_of(Kind::MkMax, vec![s("b"), KeyPart::Float(1.5)], 100),
            ],
        ),
        (
            20,
            vec![
                clear(vec![s("a")]),
                clear(vec![s("k"), long_part()]),
                set(vec![s("h")], Val::Bytes(vec![0xab; 2000])),
            ],
        ),
        (21, vec![set(vec![s("a")], bytes("a21"))]),
        // Written after the first sync.
        (
            30,
            vec![set(vec![s("i")], bytes("i30")), clear(vec![s("g")])],
        ),
        (
            31,
            vec![
                clear(vec![s("f"), KeyPart::False]),
                set(vec![s("k"), long_part()], bytes("long again")),
            ],
        ),
        // Written while a replica follows the backup.
        (
            40,
            vec![
                set(vec![s("a")], bytes("a40")),
                clear(vec![s("h")]),
                set(vec![s("j"), KeyPart::Bytes(vec![0xff])], Val::U64(40)),
            ],
        ),
    ]
}

/// The database as `denokv` stores it: by encoded key, with the last writer.
#[derive(Clone, Default)]
struct Model {
    entries: BTreeMap<Vec<u8>, (Vec<KeyPart>, Val, u64)>,
}

impl Model {
    fn apply(&mut self, version: u64, mutations: &[Mutation]) {
        for m in mutations {
            let key = encode(&m.key);
            match &m.value {
                Some(value) => {
                    self.entries
                        .insert(key, (m.key.clone(), value.clone(), version));
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
    }

    /// The canonical dump (tests/kv/canonical.ts) of this state.
    fn dump(&self) -> Value {
        self.entries
            .values()
            .map(|(key, value, version)| {
                json!({
                    "key": key.iter().map(canonical_part).collect::<Vec<_>>(),
                    "value": value.canonical(),
                    "versionstamp": hex::encode(versionstamp(*version)),
                })
            })
            .collect()
    }

    fn snapshot_entries(&self) -> Vec<Entry> {
        self.entries
            .iter()
            .map(|(key, (_, value, version))| {
                let (value, encoding) = value.raw();
                Entry {
                    key: key.clone(),
                    value,
                    encoding,
                    version: *version,
                    seq: 0,
                    // The reader ignores expiries: a restored key never expires.
                    expire_at_ms: (version % 2 == 1).then_some(4_102_444_800_000),
                }
            })
            .collect()
    }
}

fn encode(key: &[KeyPart]) -> Vec<u8> {
    encode_key(&Key(key.to_vec())).expect("encodable key")
}

fn commit(version: u64, mutations: &[Mutation]) -> Commit {
    let last = mutations.len() - 1;
    let entries = mutations
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let index = if i == last { COMMIT_END } else { i as u16 };
            let (value, value_encoding) = m.value.as_ref().map_or((Vec::new(), 0), Val::raw);
            BackupReplicationLogEntry {
                versionstamp: format::versionstamp12(version, index).to_vec(),
                kind: m.kind as i32,
                key: encode(&m.key),
                value,
                value_encoding: value_encoding as i32,
                expire_at_ms: 0,
            }
        })
        .collect();
    Commit {
        version,
        timestamp_ms: BASE_MS + version * 1000,
        entries,
    }
}

/// The `pitr list` time of commit `version`'s log object: its latest commit's time.
fn time_of(last_version_in_object: u64) -> String {
    let secs = 20 + last_version_in_object;
    format!("2023-11-14T22:{:02}:{:02}.000Z", 13 + secs / 60, secs % 60)
}

fn vs(version: u64) -> String {
    hex::encode(versionstamp(version))
}

struct Fixture {
    database: Uuid,
    history: Vec<(u64, Vec<Mutation>)>,
}

impl Fixture {
    /// The history for a database of its own, a fresh bucket and the backup's root.
    async fn in_fresh_bucket(tag: &str) -> (Self, String, String) {
        let fixture = Fixture {
            database: Uuid::new_v4(),
            history: history(),
        };
        let root = format::root(PREFIX, fixture.database);
        (fixture, fresh_bucket(tag).await, root)
    }

    /// The state right after commit `version`.
    fn state(&self, version: u64) -> Model {
        let mut model = Model::default();
        for (v, mutations) in self.history.iter().filter(|(v, _)| *v <= version) {
            model.apply(*v, mutations);
        }
        model
    }

    /// The log object of the commits with these versions.
    fn log(&self, versions: &[u64]) -> Object {
        let commits = versions
            .iter()
            .map(|v| {
                let (_, mutations) = self
                    .history
                    .iter()
                    .find(|(h, _)| h == v)
                    .expect("a commit of the history");
                commit(*v, mutations)
            })
            .collect();
        format::log_object(PREFIX, self.database, commits)
            .expect("a valid batch")
            .expect("an object")
    }
}

fn assert_points(restore: &Restore, expected: &[(u64, u64)]) {
    let expected: Vec<RecoveryPoint> = expected
        .iter()
        .map(|(version, object_last)| RecoveryPoint {
            versionstamp: vs(*version),
            time: time_of(*object_last),
        })
        .collect();
    assert_eq!(restore.list(), expected, "pitr list");
}

fn assert_restored(restore: &Restore, fixture: &Fixture, version: u64) {
    restore.checkout(&vs(version));
    assert_same_state(
        &format!("restored at {version}"),
        &fixture.state(version).dump(),
        &restore.dump(),
    );
}

/// `pitr checkout` refuses `version` (replayed without undo records) and the copy
/// stays where it was.
fn assert_no_point(restore: &Restore, version: u64) {
    let before = restore.current();
    let refused = restore
        .try_checkout(&vs(version))
        .expect_err("a commit replayed without undo is no recovery point");
    assert!(
        refused.contains("redo/undo log did not end at a snapshot boundary"),
        "{refused}"
    );
    assert_eq!(
        restore.current(),
        before,
        "a refused checkout changes nothing"
    );
}

#[tokio::test]
async fn denokv_restores_the_format_at_every_recovery_point() {
    let (fixture, bucket, root) = Fixture::in_fresh_bucket("format").await;

    // What the engine writes on enable: the snapshot (two chunks of the state after
    // 8), the logs from before the scan through the differential and on, then the
    // differential (12) last.
    let snapshot = fixture.state(8).snapshot_entries();
    let (chunk0, chunk1) = snapshot.split_at(snapshot.len() / 2);
    let objects = vec![
        format::snapshot_object(PREFIX, fixture.database, 1, 0, chunk0).unwrap(),
        format::snapshot_object(PREFIX, fixture.database, 1, 1, chunk1).unwrap(),
        fixture.log(&[5, 8, 9]),
        fixture.log(&[12, 13]),
        fixture.log(&[15, 20, 21]),
        format::differential_object(PREFIX, fixture.database, 12),
    ];
    put_objects(&bucket, &objects).await;
    assert_eq!(
        get_object(&bucket, &format!("{root}differential")).await,
        Some(vs(12).into_bytes())
    );

    // First sync: snapshot, then the logs replayed through the differential, then the
    // newest state (21). Recovery points: every commit after the differential.
    let restore = Restore::new(&bucket, &root);
    restore.sync();
    assert_eq!(restore.current(), vs(21));
    assert_points(&restore, &[(21, 21), (20, 21), (15, 21), (13, 13)]);
    assert_same_state(
        "after the first sync",
        &fixture.state(21).dump(),
        &restore.dump(),
    );

    // Back (undo) and forward (redo) through the points.
    assert_restored(&restore, &fixture, 15);
    assert_restored(&restore, &fixture, 13);
    // The differential itself was replayed without undo records: not a point.
    assert_no_point(&restore, 12);
    assert_restored(&restore, &fixture, 20);

    // A later sync fetches only the new logs (into the redo log: `pitr sync` moves to
    // the newest state it had before fetching).
    put_objects(&bucket, &[fixture.log(&[30]), fixture.log(&[31])]).await;
    restore.sync();
    assert_eq!(restore.current(), vs(21));
    assert_points(
        &restore,
        &[(31, 31), (30, 30), (21, 21), (20, 21), (15, 21), (13, 13)],
    );
    assert_restored(&restore, &fixture, 31);
    assert_restored(&restore, &fixture, 30);
    assert_restored(&restore, &fixture, 13);
    assert_restored(&restore, &fixture, 31);

    // A replica following the backup: it serves the newest state after its first
    // sync, then picks up a new log object on its own (it syncs every 10 to 15 s).
    let replica = Restore::new(&bucket, &root);
    let server = replica.serve_sync_from_s3();
    assert_same_state("replica", &fixture.state(31).dump(), &server.dump());
    put_objects(&bucket, &[fixture.log(&[40])]).await;
    let expected = fixture.state(40).dump();
    let started = std::time::Instant::now();
    poll(
        "the replica shows commit 40",
        DEADLINE,
        std::time::Duration::from_secs(1),
        || {
            let dump = server.dump();
            let expected = &expected;
            async move {
                if &dump == expected {
                    Ok(())
                } else {
                    Err(format!("{} entries", dump.as_array().map_or(0, Vec::len)))
                }
            }
        },
    )
    .await;
    eprintln!(
        "replica caught up with commit 40 after {:?}",
        started.elapsed()
    );
    drop(server);
    let listed = list_keys(&bucket, &root).await;
    assert_eq!(listed.len(), objects.len() + 3, "{listed:#?}");
}

/// When no log object holds the differential's own commit (the snapshot covers it
/// and the logs start after it), the first sync replays the first commit after the
/// differential without undo records too: the recovery points start one commit
/// later. `first_sync_replays_through` (which the engine test's expectations use)
/// says so from the bucket's logs.
#[tokio::test]
async fn without_the_differentials_commit_in_the_logs_the_next_commit_is_no_point() {
    let (fixture, bucket, root) = Fixture::in_fresh_bucket("format-nodiff").await;
    let objects = vec![
        format::snapshot_object(
            PREFIX,
            fixture.database,
            1,
            0,
            &fixture.state(12).snapshot_entries(),
        )
        .unwrap(),
        fixture.log(&[13, 15]),
        fixture.log(&[20, 21]),
        format::differential_object(PREFIX, fixture.database, 12),
    ];
    put_objects(&bucket, &objects).await;
    let logs = log_objects(&bucket, &root).await;
    assert_eq!(logs.len(), 2);
    assert_eq!(
        first_sync_replays_through(&vs(12), &logs),
        Some(vs(13)),
        "the first commit end at or after the differential"
    );

    let restore = Restore::new(&bucket, &root);
    restore.sync();
    assert_eq!(restore.current(), vs(21));
    assert_points(&restore, &[(21, 21), (20, 21), (15, 15)]);
    assert_same_state(
        "after the first sync",
        &fixture.state(21).dump(),
        &restore.dump(),
    );
    assert_restored(&restore, &fixture, 15);
    assert_no_point(&restore, 13);
    assert_restored(&restore, &fixture, 20);
}
