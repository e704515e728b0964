//! Helpers for the backup tests (tests/tests/backup_format.rs, tests/tests/backup.rs
//! and the fault tests): the tenant's side of a backup. Buckets in the emulator's S3,
//! the public `denokv` binary restoring from them (`pitr sync/list/checkout`,
//! `serve`, `serve --sync-from-s3`), and the Deno scripts that write a database
//! (tests/kv/backup_workload.ts) and dump one (tests/kv/dump.ts) in the canonical
//! JSON form of tests/kv/canonical.ts, compared here.
//!
//! Environment (set by `make e2e` through infra/local/stack.sh): `AWS_ENDPOINT_URL`
//! (moto, which serves S3 too), `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
//! `AWS_REGION`, `DENO`, `DENOKV` (the binary `make denokv` installs).
//!
//! How `denokv` reaches moto: `--s3-endpoint $AWS_ENDPOINT_URL` (an `http://127.0.0.1:<port>`
//! URL) and credentials and region from the standard AWS variables. It has no
//! path-style switch, but its S3 SDK addresses an IP-address endpoint path-style by
//! itself, so the endpoint must be the IP, not `localhost`.

use crate::{api_url, create_db, create_org, get, is_uuid, post, Org};
use denokv_proto::backup::BackupMutationRange;
use prost::Message;
use serde_json::{json, Value};
use std::future::Future;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use subkv_dynamo_kv::{DynamoKv, WriteOutcome};
use subkv_kv::backup_format::Object;
use subkv_kv::error::KvError;
use uuid::Uuid;

/// How long a restore step may take before the test gives up (a sync, a server
/// starting, a backup catching up).
pub const DEADLINE: Duration = Duration::from_secs(120);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn tool(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{var} must point at the binary (`make e2e` sets it)"))
}

/// The emulator (moto) every AWS client of the local stack talks to, S3 included:
/// `http://127.0.0.1:<port>`.
pub fn emulator_url() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: run the end-to-end tests through `make e2e`")
}

/// The output of a finished process, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Polls `check` every `interval` until it returns `Some`, or panics after `timeout`
/// with `what` and the last `Err` it returned. The only way these tests wait.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, interval: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            panic!("{what}: not after {timeout:?}; last: {last}");
        }
        tokio::time::sleep(interval).await;
    }
}

// ---------------------------------------------------------------------------------
// S3 (the emulator's), as the tenant sees it.

/// An S3 client on the emulator, with the stack's credentials, path-style.
pub async fn s3() -> aws_sdk_s3::Client {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .endpoint_url(emulator_url())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// Creates a bucket nobody else uses: `subkv-e2e-<tag>-<random>`.
pub async fn fresh_bucket(tag: &str) -> String {
    let name = format!(
        "subkv-e2e-{tag}-{}",
        &Uuid::new_v4().simple().to_string()[..12]
    );
    s3().await
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e:?}"));
    name
}

/// Writes objects as the backup engine would (`PutObject`, in the given order).
pub async fn put_objects(bucket: &str, objects: &[Object]) {
    let client = s3().await;
    for object in objects {
        client
            .put_object()
            .bucket(bucket)
            .key(&object.key)
            .body(object.body.clone().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {}: {e:?}", object.key));
    }
}

/// The keys under `prefix`, in name order (the order `denokv` reads them).
pub async fn list_keys(bucket: &str, prefix: &str) -> Vec<String> {
    let client = s3().await;
    let mut keys = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("list {bucket}/{prefix}: {e:?}"));
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        token = page.next_continuation_token().map(String::from);
        if token.is_none() {
            return keys;
        }
    }
}

/// The body of an object, or None if there is no such key.
pub async fn get_object(bucket: &str, key: &str) -> Option<Vec<u8>> {
    match s3().await.get_object().bucket(bucket).key(key).send().await {
        Ok(output) => Some(output.body.collect().await.expect("object body").to_vec()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => None,
        Err(e) => panic!("get {bucket}/{key}: {e:?}"),
    }
}

/// Every `logs/` object under `root`, in name order, decoded.
pub async fn log_objects(bucket: &str, root: &str) -> Vec<(String, BackupMutationRange)> {
    let mut out = Vec::new();
    for key in list_keys(bucket, &format!("{root}logs/")).await {
        let body = get_object(bucket, &key).await.expect("a listed object");
        let range = BackupMutationRange::decode(body.as_slice())
            .unwrap_or_else(|e| panic!("{key} is not a BackupMutationRange: {e}"));
        out.push((key, range));
    }
    out
}

/// The commit `denokv`'s first sync replays up to, without undo records, when the
/// backup's `differential` is `differential` and its logs are `logs`: the first
/// commit end (`…ffff`) at or after the differential. That is the differential's
/// own commit if the logs hold it, else the first commit after it (for instance
/// when the differential names a commit the snapshot covers and no log object
/// repeats). Recovery points are the commits after it; None if no log reaches it
/// (then the copy starts at the differential).
pub fn first_sync_replays_through(
    differential: &str,
    logs: &[(String, BackupMutationRange)],
) -> Option<String> {
    let target = format!("{differential}ffff");
    logs.iter()
        .flat_map(|(_, range)| &range.entries)
        .map(|e| hex::encode(&e.versionstamp))
        .filter(|vs| vs.ends_with("ffff") && vs.as_str() >= target.as_str())
        .min()
        .map(|vs| vs[..20].to_string())
}

// ---------------------------------------------------------------------------------
// Processes: ports, children killed on drop.

/// A loopback port nothing listens on (bound and released: another process could
/// take it in between, which the local stack's port range makes unlikely).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A child process, killed (and reaped) when dropped, so a failing test leaves
/// nothing running.
pub struct KillOnDrop {
    child: Child,
    what: String,
}

impl KillOnDrop {
    pub fn spawn(what: &str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
        Self {
            child,
            what: what.to_string(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with `log`) if the process has exited.
    pub fn assert_running(&mut self, log: &str) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("{} exited ({status}):\n{log}", self.what);
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to completion, its output captured; Err (with the output so far)
/// if it has not exited after `timeout`, when it is killed.
pub fn output_within(
    what: &str,
    command: &mut Command,
    timeout: Duration,
) -> Result<Output, String> {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{what} still running after {timeout:?}, killed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

/// A directory of its own under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("subkv-e2e-{tag}-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// denokv: a restored copy.

/// One recovery point of `denokv pitr list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPoint {
    /// 20 lower-case hex characters.
    pub versionstamp: String,
    /// RFC 3339 with milliseconds: the `timestamp_ms` of the log object holding it.
    pub time: String,
}

/// A local copy of a backup restored by `denokv`: a SQLite file of its own, synced
/// from `bucket` under `prefix` (a backup's root, `<prefix><databaseId>/`).
pub struct Restore {
    dir: TempDir,
    pub sqlite: PathBuf,
    pub bucket: String,
    pub prefix: String,
}

impl Restore {
    pub fn new(bucket: &str, prefix: &str) -> Self {
        let dir = TempDir::new("restore");
        let sqlite = dir.path().join("r.sqlite");
        Self {
            dir,
            sqlite,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// [`denokv_on`] this copy's SQLite file.
    pub fn denokv(&self) -> Command {
        denokv_on(&self.sqlite)
    }

    /// The `--s3-*` flags of `pitr sync` and `serve --sync-from-s3`.
    fn s3_flags(&self) -> [String; 6] {
        [
            "--s3-bucket".into(),
            self.bucket.clone(),
            "--s3-prefix".into(),
            self.prefix.clone(),
            "--s3-endpoint".into(),
            emulator_url(),
        ]
    }

    /// Runs `denokv <args>` to completion; Err with its output if it fails.
    /// Runs `denokv <args>` to completion within [`DEADLINE`]; Err with its output if
    /// it fails or is still running then (denokv retries S3 errors without end and
    /// its first sync waits for `differential`: either would otherwise hang the test).
    pub fn try_run(&self, args: &[&str]) -> Result<Output, String> {
        let what = format!("denokv {args:?}");
        let output = output_within(&what, self.denokv().args(args), DEADLINE)?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(format!("{what} failed:\n{}", describe(&output)))
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let output = self.try_run(args).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `pitr sync`: fetches what is new (the snapshot and every log on the first
    /// run) and, after the first, moves to the newest state. Returns how long it took.
    pub fn sync(&self) -> Duration {
        let started = Instant::now();
        let flags = self.s3_flags();
        let mut args = vec!["pitr", "sync"];
        args.extend(flags.iter().map(String::as_str));
        self.run(&args);
        let took = started.elapsed();
        eprintln!(
            "denokv pitr sync of {}/{}: {took:?}",
            self.bucket, self.prefix
        );
        took
    }

    /// `pitr list`: the recovery points, newest first.
    pub fn list(&self) -> Vec<RecoveryPoint> {
        self.run(&["pitr", "list"])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let (versionstamp, time) = line
                    .split_once('\t')
                    .unwrap_or_else(|| panic!("pitr list line without a tab: {line:?}"));
                assert!(is_versionstamp(versionstamp), "{line:?}");
                RecoveryPoint {
                    versionstamp: versionstamp.to_string(),
                    time: time.to_string(),
                }
            })
            .collect()
    }

    /// `pitr info`: the versionstamp the copy is at.
    pub fn current(&self) -> String {
        let out = self.run(&["pitr", "info"]);
        let vs = out
            .trim()
            .strip_prefix("Current versionstamp: ")
            .unwrap_or_else(|| panic!("unexpected pitr info output: {out:?}"));
        assert!(is_versionstamp(vs), "{out:?}");
        vs.to_string()
    }

    /// `pitr checkout <versionstamp>`; Err with denokv's output if it refuses.
    pub fn try_checkout(&self, versionstamp: &str) -> Result<(), String> {
        let output = self.try_run(&["pitr", "checkout", versionstamp])?;
        let out = String::from_utf8_lossy(&output.stdout);
        let expected = format!("Snapshot is now at versionstamp {versionstamp}");
        if out.trim() == expected {
            Ok(())
        } else {
            Err(format!("pitr checkout {versionstamp}: {out:?}"))
        }
    }

    pub fn checkout(&self, versionstamp: &str) {
        self.try_checkout(versionstamp)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(self.current(), versionstamp);
    }

    /// `serve --read-only` on the copy as it is now (checked out), on a free port.
    pub fn serve(&self) -> Server {
        Server::start(self, &["--read-only"])
    }

    /// `serve --sync-from-s3`: a replica following the backup (syncs every 10 to 15
    /// s). It listens only once its first sync is done; this waits for that.
    pub fn serve_sync_from_s3(&self) -> Server {
        let flags = self.s3_flags();
        let mut args = vec!["--sync-from-s3"];
        args.extend(flags.iter().map(String::as_str));
        Server::start(self, &args)
    }

    /// Serves the copy and dumps it through Deno.
    pub fn dump(&self) -> Value {
        self.serve().dump()
    }
}

/// `denokv --sqlite-path <sqlite>` with the S3 credentials and region of the
/// environment (moto accepts any), nothing else inherited that could redirect it.
fn denokv_on(sqlite: &Path) -> Command {
    let mut command = Command::new(tool("DENOKV"));
    command
        .arg("--sqlite-path")
        .arg(sqlite)
        .env_clear()
        .env("PATH", env_or("PATH", "/usr/bin:/bin"))
        .env(
            "AWS_ACCESS_KEY_ID",
            env_or("AWS_ACCESS_KEY_ID", "subkv-local"),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            env_or("AWS_SECRET_ACCESS_KEY", "subkv-local"),
        )
        .env("AWS_REGION", env_or("AWS_REGION", "us-east-1"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    command
}

/// A running `denokv serve` (killed on drop), reachable with Deno.openKv(url) and
/// the token.
pub struct Server {
    process: KillOnDrop,
    pub url: String,
    pub token: String,
    log: PathBuf,
}

impl Server {
    fn start(restore: &Restore, extra: &[&str]) -> Self {
        let token = format!("denokv-e2e-{}", Uuid::new_v4().simple());
        Self::spawn(restore.denokv(), restore.dir(), token, extra)
    }

    /// `denokv serve` of a new, empty database (a SQLite file in `dir`) that accepts
    /// `token`: the reference server of the differential test.
    pub fn empty(dir: &Path, token: &str) -> Self {
        let command = denokv_on(&dir.join("reference.sqlite"));
        Self::spawn(command, dir, token.to_string(), &[])
    }

    fn spawn(mut command: Command, dir: &Path, token: String, extra: &[&str]) -> Self {
        let port = free_port();
        let log = dir.join(format!("serve-{port}.log"));
        let file = std::fs::File::create(&log).expect("serve log");
        command
            .args(["serve", "--access-token", &token, "--addr"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        let started = Instant::now();
        let mut process = KillOnDrop::spawn("denokv serve", &mut command);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            process.assert_running(&read_log(&log));
            assert!(
                started.elapsed() < DEADLINE,
                "denokv serve {extra:?} is not listening after {DEADLINE:?}:\n{}",
                read_log(&log)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "denokv serve {extra:?} listening after {:?}",
            started.elapsed()
        );
        Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
            token,
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Every entry, through Deno.openKv (tests/kv/dump.ts).
    pub fn dump(&self) -> Value {
        dump(&self.url, &self.token)
    }
}

// ---------------------------------------------------------------------------------
// Deno: the workload and the dumps.

fn kv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kv")
}

/// `deno run` of a script in tests/kv with KV, network and environment access.
pub fn deno_script(script: &str) -> Command {
    let mut command = Command::new(tool("DENO"));
    command
        .current_dir(kv_dir())
        .args([
            "run",
            "--unstable-kv",
            "--allow-net",
            "--allow-env",
            "--no-prompt",
            script,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

fn run_deno(what: &str, command: &mut Command) -> String {
    let output = output_within(what, command, DEADLINE).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}",
        describe(&output)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// Every entry of the database at `url` (a subkv KV Connect URL or a `denokv serve`),
/// in the canonical form of tests/kv/canonical.ts: `[{key, value, versionstamp}]` in
/// key order.
pub fn dump(url: &str, token: &str) -> Value {
    let out = run_deno(
        &format!("dump.ts {url}"),
        deno_script("dump.ts")
            .arg(url)
            .env("DENO_KV_ACCESS_TOKEN", token),
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("dump.ts output: {e}: {out}"))
}

/// One commit of tests/kv/backup_workload.ts and the database right after it.
#[derive(Clone, Debug)]
pub struct WorkloadCommit {
    /// The commit's index in the script (the same mutations every run).
    pub commit: u64,
    pub versionstamp: String,
    /// False for a check-only commit: nothing in a backup, no recovery point.
    pub recovery_point: bool,
    /// The whole database after the commit (canonical dump).
    pub state: Value,
}

/// Runs commits `from..to` of tests/kv/backup_workload.ts against `db` (its only
/// writer).
pub fn run_workload(db: &KvDatabase, from: u64, to: u64) -> Vec<WorkloadCommit> {
    let started = Instant::now();
    let out = run_deno(
        &format!("backup_workload.ts {from} {to}"),
        deno_script("backup_workload.ts")
            .args([from.to_string(), to.to_string()])
            .env("SUBKV_KV_URL", &db.url)
            .env("DENO_KV_ACCESS_TOKEN", &db.org.token),
    );
    let commits: Vec<WorkloadCommit> = out
        .lines()
        .map(|line| {
            let mut v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("workload line: {e}: {line}"));
            WorkloadCommit {
                commit: v["commit"].as_u64().expect("commit"),
                versionstamp: v["versionstamp"]
                    .as_str()
                    .expect("versionstamp")
                    .to_string(),
                recovery_point: v["recoveryPoint"].as_bool().expect("recoveryPoint"),
                state: v["state"].take(),
            }
        })
        .collect();
    assert_eq!(commits.len() as u64, to - from, "{out}");
    assert!(
        commits
            .windows(2)
            .all(|w| w[0].versionstamp < w[1].versionstamp),
        "versionstamps must increase"
    );
    eprintln!("workload {from}..{to}: {:?}", started.elapsed());
    commits
}

/// The commit whose versionstamp is `versionstamp`.
pub fn at<'a>(commits: &'a [WorkloadCommit], versionstamp: &str) -> &'a WorkloadCommit {
    commits
        .iter()
        .find(|c| c.versionstamp == versionstamp)
        .unwrap_or_else(|| panic!("no workload commit has versionstamp {versionstamp}"))
}

/// Asserts two canonical dumps are equal; on a difference, says which keys are
/// missing, extra or different rather than printing both dumps.
pub fn assert_same_state(what: &str, expected: &Value, actual: &Value) {
    if expected == actual {
        return;
    }
    let entries = |v: &Value| -> Vec<(String, Value)> {
        v.as_array()
            .unwrap_or_else(|| panic!("{what}: a dump is an array: {v}"))
            .iter()
            .map(|e| (e["key"].to_string(), e.clone()))
            .collect()
    };
    let (expected, actual) = (entries(expected), entries(actual));
    let find = |list: &[(String, Value)], key: &str| {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let mut report = Vec::new();
    for (key, entry) in &expected {
        match find(&actual, key) {
            None => report.push(format!("missing {key}: {entry}")),
            Some(other) if &other != entry => report.push(format!(
                "differs {key}:\n  expected {entry}\n  actual   {other}"
            )),
            Some(_) => {}
        }
    }
    for (key, entry) in &actual {
        if find(&expected, key).is_none() {
            report.push(format!("extra {key}: {entry}"));
        }
    }
    if report.is_empty() {
        report.push("same entries in another order".into());
    }
    let shown = report.len().min(20);
    panic!(
        "{what}: {} expected entries, {} actual; {} differences, the first {shown}:\n{}",
        expected.len(),
        actual.len(),
        report.len(),
        report[..shown].join("\n")
    );
}

pub fn is_versionstamp(s: &str) -> bool {
    s.len() == 20
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------------------------
// subkv: databases and their backups.

/// A fresh organization and database.
#[derive(Clone, Debug)]
pub struct KvDatabase {
    pub org: Org,
    pub id: String,
    /// Its KV Connect URL (Deno.openKv), the org token in DENO_KV_ACCESS_TOKEN.
    pub url: String,
}

pub async fn kv_database(name: &str) -> KvDatabase {
    let org = create_org(name).await;
    let db = create_db(&org, name).await;
    let id = db["id"].as_str().expect("database id").to_string();
    let url = format!("{}/databases/{id}/connect", api_url());
    KvDatabase { org, id, url }
}

/// The KV engine on the emulator's tables, as the data-plane functions use it:
/// commits that bypass KV Connect (faster, and exactly the engine's commit path).
pub async fn kv() -> DynamoKv {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    DynamoKv::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        env_or("SUBKV_KV_DATA_TABLE", subkv_dynamo_kv::DEFAULT_DATA_TABLE),
        env_or("SUBKV_KV_LOG_TABLE", subkv_dynamo_kv::DEFAULT_LOG_TABLE),
        3600,
    )
}

/// A one-part string key in denokv's key encoding.
pub fn key(name: &str) -> Vec<u8> {
    let mut k = vec![0x02];
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k
}

/// Commits `name = value` (bytes) or, with None, deletes `name`; returns the
/// versionstamp (20 hex). A 503-class answer (`Unavailable`: contention or a busy
/// store) is retried, as Deno's client retries a 503.
pub async fn commit(store: &DynamoKv, db: &KvDatabase, name: &str, value: Option<&[u8]>) -> String {
    let mutation = denokv_proto::Mutation {
        key: key(name),
        kind: match value {
            Some(v) => denokv_proto::MutationKind::Set(denokv_proto::KvValue::Bytes(v.to_vec())),
            None => denokv_proto::MutationKind::Delete,
        },
        expire_at: None,
    };
    let write = denokv_proto::AtomicWrite {
        checks: vec![],
        mutations: vec![mutation],
        enqueues: vec![],
    };
    let db_id = Uuid::parse_str(&db.id).expect("database id");
    let started = Instant::now();
    loop {
        match store.atomic_write(db_id, &write).await {
            Ok(WriteOutcome::Committed(vs)) => return hex::encode(vs),
            Ok(other) => panic!("commit refused: {other:?}"),
            Err(KvError::Unavailable(why)) if started.elapsed() < DEADLINE => {
                eprintln!("commit of {name}: {why}; retrying as a client would");
            }
            Err(e) => panic!("commit of {name}: {e:?}"),
        }
    }
}

/// Deletes `db`'s change records after `version`, as the change log's TTL does
/// once they are older than its retention.
pub async fn expire_change_records_after(db: &KvDatabase, version: u64) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = std::env::var("SUBKV_KV_LOG_TABLE")
        .unwrap_or_else(|_| subkv_dynamo_kv::DEFAULT_LOG_TABLE.into());
    let mut after = version.to_be_bytes().to_vec();
    after.extend_from_slice(&[0xff, 0xff]);
    let page = client
        .query()
        .table_name(&table)
        .key_condition_expression("pk = :pk AND sk > :after")
        .expression_attribute_values(":pk", AttributeValue::S(db.id.clone()))
        .expression_attribute_values(":after", AttributeValue::B(after.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("query the change log");
    for item in page.items() {
        client
            .delete_item()
            .table_name(&table)
            .key("pk", item["pk"].clone())
            .key("sk", item["sk"].clone())
            .send()
            .await
            .expect("expire a change record");
    }
    page.items().len()
}

/// The `EnableBackup` body for a bucket in the emulator's S3.
pub fn emulator_backup_body(bucket: &str, prefix: &str) -> Value {
    json!({
        "kind": "s3",
        "endpoint": emulator_url(),
        "bucketName": bucket,
        "bucketRegion": "us-east-1",
        "accessKeyId": env_or("AWS_ACCESS_KEY_ID", "subkv-local"),
        "secretAccessKey": env_or("AWS_SECRET_ACCESS_KEY", "subkv-local"),
        "prefix": prefix,
    })
}

/// Enables a backup of `db` to `bucket` in the emulator; returns the backup's id
/// (the reply is `{"id"}`; the engine moves its status on from `pending`).
pub async fn enable_backup(db: &KvDatabase, bucket: &str, prefix: &str) -> String {
    let reply = post(
        &format!("/v1/databases/{}/database_backups", db.id),
        &db.org.token,
        emulator_backup_body(bucket, prefix),
    )
    .await;
    let body = reply.assert_ok();
    assert!(is_uuid(&body["id"]), "{body}");
    body["id"].as_str().expect("id").to_string()
}

/// Enables a backup of `db` into `prefix` of `bucket` at `endpoint` (e.g. a
/// fault proxy), signed with `access_key_id`; returns the backup's id.
pub async fn enable_backup_at(
    db: &KvDatabase,
    endpoint: &str,
    access_key_id: &str,
    bucket: &str,
    prefix: &str,
) -> String {
    let reply = post(
        &format!("/v1/databases/{}/database_backups", db.id),
        &db.org.token,
        json!({
            "kind": "s3", "endpoint": endpoint, "bucketName": bucket, "bucketRegion": "us-east-1",
            "accessKeyId": access_key_id, "secretAccessKey": "fault-secret", "prefix": prefix,
        }),
    )
    .await;
    reply.assert_ok()["id"]
        .as_str()
        .expect("backup id")
        .to_string()
}

/// `GET /v1/database_backups/{id}`: the `KvDatabaseBackup`.
pub async fn get_backup(token: &str, backup_id: &str) -> Value {
    get(&format!("/v1/database_backups/{backup_id}"), token)
        .await
        .assert_ok()
        .clone()
}

/// Polls `GET /v1/database_backups/{id}` until the backup is `active` with a
/// `lastVersionstamp` at or past `versionstamp`; returns that status. Panics at once
/// if it is `failed`, or after `timeout`.
pub async fn wait_backed_up(
    token: &str,
    backup_id: &str,
    versionstamp: &str,
    timeout: Duration,
) -> Value {
    let started = Instant::now();
    let status = poll(
        &format!("backup {backup_id} active through {versionstamp}"),
        timeout,
        Duration::from_millis(500),
        || async {
            let status = get_backup(token, backup_id).await["status"].clone();
            match status["code"].as_str() {
                Some("failed") => panic!("backup {backup_id} failed: {status}"),
                Some("active")
                    if status["lastVersionstamp"]
                        .as_str()
                        .is_some_and(|last| last >= versionstamp) =>
                {
                    Ok(status)
                }
                _ => Err(status.to_string()),
            }
        },
    )
    .await;
    eprintln!(
        "backup {backup_id} through {versionstamp} after {:?}: {status}",
        started.elapsed()
    );
    status
}

/// What tests/kv/try_ops.ts saw on the database at `url` with `token`.
pub fn try_ops(url: &str, token: &str) -> Value {
    let output = output_within(
        "try_ops.ts",
        deno_script("try_ops.ts")
            .arg(url)
            .env("DENO_KV_ACCESS_TOKEN", token),
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(output.status.success(), "{}", describe(&output));
    let out = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}
