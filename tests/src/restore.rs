//! Helpers for the restore tests (tests/tests/restore.rs, restore_core.rs): a
//! database's rows as `denokv` leaves them in SQLite and as KV Connect reads them,
//! a bucket laid out as Deno Deploy's KV backups are, and restores through the
//! management API (`restoreFrom`, issue 14).

use crate::backup::{describe, poll, Restore};
use crate::kv_wire::{connect, Session};
use crate::{get, post, Org};
use denokv_proto::backup::{BackupKvMutationKind, BackupMutationRange, BackupReplicationLogEntry};
use prost::Message;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;
use subkv_kv::backup_format::{snapshot_object, Object, COMMIT_END};
use subkv_kv::model::Entry;
use uuid::Uuid;

/// key -> (value, encoding, versionstamp): hex strings and a number, sorted by key.
pub type Rows = BTreeMap<String, (String, i64, String)>;

/// The rows of denokv's copy as checked out: its `kv` view (`version` holds the
/// first 8 bytes of the versionstamp, `seq` the last 2).
pub fn sqlite_rows(restore: &Restore) -> Rows {
    let script = "import sqlite3, sys\n\
        for k, v, e, n, q in sqlite3.connect(sys.argv[1]).execute(\
        'select hex(k), hex(v), v_encoding, version, seq from kv order by k'):\n\
        \x20   print(k.lower(), v.lower(), e, '%016x%04x' % (n, q))\n";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&restore.sqlite)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            (
                f[0].to_string(),
                (f[1].to_string(), f[2].parse().unwrap(), f[3].to_string()),
            )
        })
        .collect()
}

/// A data-path session on a database: the metadata exchange with the
/// organization's token (protocol version 3).
pub async fn kv_connect_session(database: &str, org_token: &str) -> Session {
    let reply = connect(database, org_token, r#"{"supportedVersions":[3]}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let meta: Value = serde_json::from_slice(&reply.body).expect("metadata");
    Session {
        db: database.to_string(),
        token: meta["token"].as_str().expect("token").to_string(),
    }
}

/// Up to 1000 entries from `start` on, as [`Rows`].
pub async fn kv_connect_page(session: &Session, start: Vec<u8>) -> Rows {
    session
        .list(start, vec![0xff])
        .await
        .into_iter()
        .map(|e| {
            (
                hex::encode(&e.key),
                (
                    hex::encode(e.value),
                    i64::from(e.encoding),
                    hex::encode(&e.versionstamp),
                ),
            )
        })
        .collect()
}

/// Every entry of a database read through KV Connect (`snapshot_read` pages of
/// 1000), as [`Rows`].
pub async fn kv_connect_rows(database: &str, org_token: &str) -> Rows {
    let session = kv_connect_session(database, org_token).await;
    let mut rows = Rows::new();
    let mut start = vec![];
    loop {
        let page = kv_connect_page(&session, start).await;
        let Some(last) = page.keys().next_back() else {
            return rows;
        };
        start = [hex::decode(last).expect("hex"), vec![0]].concat();
        let full = page.len() == 1000;
        rows.extend(page);
        if !full {
            return rows;
        }
    }
}

// ---------------------------------------------------------------------------------
// A bucket as Deno Deploy lays out a KV backup.

/// A versionstamp as FoundationDB makes them (Deno Deploy's): an 8-byte commit
/// version, then a 2-byte order within it, here never 0.
pub fn fdb(version: u64, order: u16) -> [u8; 10] {
    let mut vs = [0u8; 10];
    vs[..8].copy_from_slice(&version.to_be_bytes());
    vs[8..].copy_from_slice(&order.to_be_bytes());
    vs
}

/// What [`deploy_shaped_backup`] wrote.
pub struct DeployBackup {
    /// Its objects, in name order.
    pub objects: Vec<Object>,
    /// The name of the second snapshot range (to fail reads of it).
    pub second_range: String,
    /// The newest commit (20 hex).
    pub newest: String,
    /// A commit in the middle (20 hex), with the time of its log object (ms).
    pub middle: (String, u64),
}

/// A Deploy-shaped commit: its versionstamp and its changes.
type DeployCommit = ([u8; 10], Vec<Change>);

/// One mutation of a Deploy-shaped commit.
pub enum Change {
    Set(&'static str, Vec<u8>, i32),
    Clear(&'static str),
}

fn string_key(name: &str) -> Vec<u8> {
    crate::backup::key(name)
}

/// A backup under `root` as Deno Deploy's writer lays one out (the reader's format
/// 0: names `<epoch:016x>_<tsn:016x>_…`, no format number; versionstamps using all
/// ten bytes; `-1` for no expiry), written with denokv's own protobuf messages, not
/// subkv's engine: two snapshot ranges of 150 keys each (bytes, little-endian u64
/// and V8 strings, a few with deadlines a day away), a differential, then three log
/// objects of commits after it (sets, clears, a key set twice). denokv restores it
/// (the test checks); the layout follows docs/restore.md, "What is assumed about
/// the writer".
pub fn deploy_shaped_backup(root: &str, now_ms: u64) -> DeployBackup {
    let day = 86_400_000i64;
    let mut objects = Vec::new();
    let mut names = Vec::new();
    for (range, letter) in ["a", "b"].iter().enumerate() {
        let entries: Vec<Entry> = (0..150u64)
            .map(|i| {
                let (value, encoding) = match i % 3 {
                    0 => (format!("{letter}{i} bytes").into_bytes(), 3),
                    1 => ((i * 1_000_003).to_le_bytes().to_vec(), 2),
                    _ => (v8_string(&format!("{letter} string {i}")), 1),
                };
                Entry {
                    key: string_key(&format!("{letter}{i:03}")),
                    value,
                    encoding,
                    version: 1_000 + i / 7,
                    seq: 1 + (i % 7) as u16,
                    expire_at_ms: (i % 25 == 0).then_some(now_ms as i64 + day),
                }
            })
            .collect();
        let object =
            snapshot_object("", Uuid::nil(), 1, range as u64, &entries).expect("a snapshot range");
        let name = format!("{root}snapshots/{:016x}_{:016x}_{:016x}.bin", 1, 0, range);
        names.push(name.clone());
        objects.push(Object {
            key: name,
            body: object.body,
        });
    }
    objects.push(Object {
        key: format!("{root}differential"),
        body: hex::encode(fdb(2_000, 1)).into_bytes(),
    });
    use Change::*;
    let logs: [(u64, Vec<DeployCommit>); 3] = [
        (
            now_ms - 3_000,
            vec![
                (fdb(2_000, 1), vec![Set("a000", b"a000 again".to_vec(), 3)]),
                (
                    fdb(2_003, 4),
                    vec![Clear("b149"), Set("c000", 42u64.to_le_bytes().to_vec(), 2)],
                ),
            ],
        ),
        (
            now_ms - 2_000,
            vec![
                (
                    fdb(2_010, 2),
                    vec![Set("c001", v8_string("c one"), 1), Clear("a001")],
                ),
                (fdb(2_011, 9), vec![Set("a000", b"a000 thrice".to_vec(), 3)]),
            ],
        ),
        (
            now_ms - 1_000,
            vec![(
                fdb(2_020, 7),
                vec![Set("d000", b"last".to_vec(), 3), Clear("c000")],
            )],
        ),
    ];
    for (tsn, (time, commits)) in logs.into_iter().enumerate() {
        let mut entries = Vec::new();
        for (vs, changes) in commits {
            let n = changes.len();
            for (i, change) in changes.into_iter().enumerate() {
                let index = if i + 1 == n { COMMIT_END } else { i as u16 };
                let versionstamp = [vs.as_slice(), &index.to_be_bytes()].concat();
                entries.push(match change {
                    Set(k, value, encoding) => BackupReplicationLogEntry {
                        versionstamp,
                        kind: BackupKvMutationKind::MkSet as i32,
                        key: string_key(k),
                        value,
                        value_encoding: encoding,
                        expire_at_ms: 0,
                    },
                    Clear(k) => BackupReplicationLogEntry {
                        versionstamp,
                        kind: BackupKvMutationKind::MkClear as i32,
                        key: string_key(k),
                        value: vec![],
                        value_encoding: 0,
                        expire_at_ms: 0,
                    },
                });
            }
        }
        let first = hex::encode(&entries[0].versionstamp);
        let last = hex::encode(&entries[entries.len() - 1].versionstamp);
        objects.push(Object {
            key: format!("{root}logs/{:016x}_{:016x}_{first}_{last}.bin", 1, tsn + 1),
            body: BackupMutationRange {
                entries,
                timestamp_ms: time,
            }
            .encode_to_vec(),
        });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    DeployBackup {
        objects,
        second_range: names[1].rsplit('/').next().expect("a name").to_string(),
        newest: hex::encode(fdb(2_020, 7)),
        middle: (hex::encode(fdb(2_010, 2)), now_ms - 2_000),
    }
}

/// V8's serialization of a one-byte string (what Deno stores for a short ASCII
/// string value): version header, then `"`, length, bytes.
fn v8_string(s: &str) -> Vec<u8> {
    assert!(s.is_ascii() && s.len() < 128);
    [&[0xff, 0x0f, b'"', s.len() as u8][..], s.as_bytes()].concat()
}

/// A subkv backup of `keys` keys (`k<i:07>`, values of `value_bytes` bytes, each
/// with its own versionstamp) under `<prefix><database>/`, as the engine writes
/// one: snapshot ranges of 1000 keys, a marker commit at the differential, the
/// differential. Returns the objects and the rows a restore must give.
pub fn subkv_format_backup(
    prefix: &str,
    database: Uuid,
    keys: usize,
    value_bytes: usize,
) -> (Vec<Object>, Rows) {
    use subkv_kv::backup_format::{differential_marker, differential_object};
    let entries: Vec<Entry> = (0..keys)
        .map(|i| Entry {
            key: string_key(&format!("k{i:07}")),
            value: (0..value_bytes).map(|j| (i * 31 + j) as u8).collect(),
            encoding: 3,
            version: 10 + i as u64,
            seq: 0,
            expire_at_ms: None,
        })
        .collect();
    let rows = entries
        .iter()
        .map(|e| {
            (
                hex::encode(&e.key),
                (
                    hex::encode(&e.value),
                    e.encoding,
                    hex::encode(e.versionstamp()),
                ),
            )
        })
        .collect();
    let mut objects: Vec<Object> = entries
        .chunks(1000)
        .enumerate()
        .map(|(seq, chunk)| {
            snapshot_object(prefix, database, 1, seq as u64, chunk).expect("a snapshot range")
        })
        .collect();
    let head = 10 + keys as u64;
    objects.push(differential_marker(prefix, database, head, 1_000).expect("a marker"));
    objects.push(differential_object(prefix, database, head));
    (objects, rows)
}

// ---------------------------------------------------------------------------------
// Restores through the management API.

/// `POST /v1/organizations/{org}/databases` with `restoreFrom`: the reply's database.
pub async fn create_restored(org: &Org, description: &str, restore_from: Value) -> Value {
    let reply = post(
        &format!("/v1/organizations/{}/databases", org.id),
        &org.token,
        serde_json::json!({ "description": description, "restoreFrom": restore_from }),
    )
    .await;
    let db = reply.assert_ok().clone();
    assert_eq!(db["restore"]["status"]["code"], "pending", "{db}");
    db
}

/// `GET /v1/databases/{id}`'s `restore`.
pub async fn restore_of(org: &Org, database: &str) -> Value {
    get(&format!("/v1/databases/{database}"), &org.token)
        .await
        .assert_ok()["restore"]
        .clone()
}

/// Polls the database's `restore` until `done` says it is what the test waits for
/// (`Ok`), for up to `timeout`; panics with the last one seen.
pub async fn wait_restore<F>(org: &Org, database: &str, timeout: Duration, done: F) -> Value
where
    F: Fn(&Value) -> Result<(), String>,
{
    poll(
        &format!("restore of {database}"),
        timeout,
        Duration::from_millis(250),
        || async {
            let restore = restore_of(org, database).await;
            done(&restore)
                .map(|_| restore.clone())
                .map_err(|why| format!("{why}: {restore}"))
        },
    )
    .await
}

/// Waits until the restore is `active` (panics at once if `failed`).
pub async fn wait_active(org: &Org, database: &str, timeout: Duration) -> Value {
    wait_restore(org, database, timeout, |r| {
        match r["status"]["code"].as_str() {
            Some("active") => Ok(()),
            Some("failed") => panic!("restore of {database} failed: {r}"),
            _ => Err("not active yet".into()),
        }
    })
    .await
}

/// Waits until the restore is `failed`; returns its message.
pub async fn wait_failed(org: &Org, database: &str, timeout: Duration) -> String {
    let restore = wait_restore(org, database, timeout, |r| {
        match r["status"]["code"].as_str() {
            Some("failed") => Ok(()),
            Some("active") => {
                panic!("restore of {database} succeeded, a failure was expected: {r}")
            }
            _ => Err("not failed yet".into()),
        }
    })
    .await;
    restore["status"]["message"]
        .as_str()
        .expect("a failed restore says why")
        .to_string()
}
