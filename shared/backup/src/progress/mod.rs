//! The backup engine's state in the control table.
//!
//! Each backup item (`ORG#<org>` / `BACKUP#<backup>`, written by the API) carries,
//! besides its configuration and `status`, the engine's progress:
//!
//! | attribute | meaning |
//! |---|---|
//! | `logCursor` (N) | last commit version whose log object is in the bucket |
//! | `snapGen` (N) | snapshot generation (1, then +1 per re-snapshot) |
//! | `snapSeq` (N) | next snapshot chunk index |
//! | `snapAfter` (B) | data-table sort key the snapshot scan continues after |
//! | `snapStart` (N) | the head when the generation began (logs hold what follows) |
//! | `snapEnd` (N) | head version read once the scan finished; the differential waits for `logCursor >= snapEnd` |
//! | `snapLease` (N), `snapLeaseOwner` (S) | who may take snapshot steps, until when (ms) |
//! | `fwdLease` (N), `fwdOwner` (S) | which pass may write log objects, until when (ms) |
//! | `lastVersionstamp`, `lastBackedUpAt`, `lastError` (S) | what `GET` reports |
//! | `errorSince` (N) | when the current run of transient faults began (ms): set by the first `lastError` after a write that landed, removed by the next one that lands (cursor moved, chunk recorded, activation) and on `failed`; the engine gives up once it is older than its budget |
//! | `activeGen` (N) | the snapshot generation whose differential is written (set on activation): a retried `failed` backup resumes `active` if it equals `snapGen`, else `pending` |
//! | `dueIndex` (S, `due`) | the backup is due a visit by every catch-up (index `due`): set by the API on enable and retry, by a re-snapshot, a fault, or a pass that left work; removed on `failed` and by a pass that finds the backup `active`, caught up and without fault ([`Progress::settle`]) |
//! | `pendingSince` (N) | when the current snapshot generation began (ms): a backup `pending` much longer is reported as overdue |
//! | `staleGen`, `staleSeq`, `staleBelow` (N) | after a re-snapshot: the earlier generation's objects still to empty (its chunks `0..=staleSeq`, from the highest down: `staleSeq` goes down as they are emptied; its ledgered logs below `staleBelow`) |
//! | `staleLedger` (S) | with the above, when a new backup empties what a deleted one left in the same root: the deleted backup's id, whose ledger names the logs (all of them: `staleBelow` is `u64::MAX`); absent: the backup's own ledger |
//! | `breakerFaults`, `breakerUntil` (N) | the store's circuit breaker: timeouts in a row, and until when (ms) the catch-up leaves the backup alone; stream deliveries skip it while `breakerFaults` is there. Set with `lastError` on a timeout, removed by the next write that lands (as `errorSince`) and on `failed` |
//! | `parked` (N), `parkedReason` (S) | errors that no retry fixes (a malformed record, an object that cannot be built, a secret KMS cannot decrypt), counted and the last one kept, instead of failing stream batches |
//!
//! Ledger items `BKLOG#<backup>` / `<object key>` name every log object written,
//! so that a re-snapshot can empty the earlier generation's (PutObject only: the
//! engine never lists or deletes in the tenant's bucket). They outlive their
//! backup: deleting it records a retired root (`DB#<db>` /
//! `RETIRED#<root hash>`, [`subkv_core::control::retired`]) naming its ledger and
//! chunks, and the next backup of the database into the same root begins by
//! emptying them, then deletes them and the retired root.
//!
//! Every change is a conditional `UpdateItem`, so concurrent invocations (stream
//! batches, the scheduled catch-up, a retried delivery) cannot move a cursor
//! backwards or skip a chunk, and a deleted backup is never recreated.
//!
//! The engine finds a database's backup through its locator
//! ([`subkv_core::control::locator`]), and sees this store through the
//! [`Progress`] trait: [`DynamoProgress`] is the real one (the unit tests' fake
//! keeps the same conditions).

mod dynamo;

pub use dynamo::DynamoProgress;

use async_trait::async_trait;
use subkv_core::control::locator::Locator;
use subkv_core::control::records::BackupRecord;
use subkv_core::control::retired::RetiredRoot;
use subkv_core::error::StoreError;
use uuid::Uuid;

/// Progress of the snapshot of one generation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotProgress {
    pub generation: u64,
    pub seq: u64,
    pub after: Option<Vec<u8>>,
    pub end: Option<u64>,
    /// The head when the generation began (its logs hold the commits after it);
    /// None for a generation begun before this was recorded.
    pub start: Option<u64>,
}

/// What a re-snapshot leaves of the earlier generation in the bucket: snapshot
/// chunks `0..=chunks` of `generation` and the log objects whose `monoseq` is
/// below `below` (the first commit the new generation's logs hold). `chunks`
/// goes down as the chunks are emptied, from the highest
/// ([`Progress::stale_chunk_emptied`]).
///
/// Also what a deleted backup left in the root a new backup begins in
/// ([`Progress::begin_over_retired`]): then `ledger` is the deleted backup,
/// whose ledger names the log objects, and `below` is `u64::MAX` (all of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stale {
    pub generation: u64,
    pub chunks: u64,
    pub below: u64,
    /// Whose ledger names the log objects; None: this backup's own.
    pub ledger: Option<Uuid>,
}

impl Stale {
    /// What `retired` left, for the backup that begins in its root.
    pub fn retired(retired: &RetiredRoot) -> Self {
        Self {
            generation: retired.generation,
            chunks: retired.chunks,
            below: u64::MAX,
            ledger: Some(retired.backup_id),
        }
    }
}

/// A backup as the engine sees it.
#[derive(Clone, Debug)]
pub struct BackupState {
    pub record: BackupRecord,
    /// None: the first snapshot has not begun.
    pub cursor: Option<u64>,
    pub snapshot: SnapshotProgress,
    /// After a re-snapshot, until emptied: the earlier generation's objects.
    pub stale: Option<Stale>,
    pub lease_until_ms: i64,
    pub lease_owner: Option<String>,
    /// When the current run of transient faults began (ms); None since the last
    /// write that landed.
    pub error_since_ms: Option<i64>,
    /// Due a visit by every catch-up (`dueIndex`).
    pub due: bool,
    /// When the current snapshot generation began (ms), if recorded.
    pub pending_since_ms: Option<i64>,
    /// The store's circuit breaker (closed: the default).
    pub breaker: Breaker,
}

/// A backup's circuit breaker: open after its store timed out, until a write
/// lands. Stream deliveries skip a backup whose breaker is open; the scheduled
/// catch-up tries it again once `until_ms` has passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Breaker {
    /// Timeouts in a row (0: closed).
    pub faults: u32,
    /// Until when (ms) the catch-up leaves the backup alone.
    pub until_ms: i64,
}

impl Breaker {
    pub fn is_open(&self) -> bool {
        self.faults > 0
    }
}

/// What a conditional update of a backup did.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    Applied,
    /// Its condition did not hold: someone else moved first, the backup is gone,
    /// or it is no longer in the state the caller saw.
    Lost,
}

impl Update {
    pub fn applied(self) -> bool {
        self == Update::Applied
    }
}

/// Where the snapshot scan stands after a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// It goes on after this data-table sort key.
    After(&'a [u8]),
    /// It is complete; `end` is the head read after its last page.
    Complete { end: u64 },
}

/// Each backup's progress (the table above; every change is conditional and
/// answers [`Update`]).
#[async_trait]
pub trait Progress: Send + Sync {
    /// The backup of a database, if one is enabled.
    async fn locate(&self, database: Uuid) -> Result<Option<Locator>, StoreError>;

    /// The backups due a visit by every catch-up (`dueIndex`).
    async fn due(&self) -> Result<Vec<Locator>, StoreError>;

    /// The backups of sweep slot `slot` (0..[`subkv_core::control::locator::SWEEP_SLOTS`]):
    /// each minute's catch-up visits one slot, so every backup once an hour.
    async fn sweep(&self, slot: u32) -> Result<Vec<Locator>, StoreError>;

    /// The backup is due a visit by every catch-up: a pass left it with work.
    async fn mark_due(&self, at: &Locator) -> Result<Update, StoreError>;

    /// The backup no longer needs the catch-up every minute: applies only if it is
    /// `active`, still at cursor `cursor`, with no run of faults and nothing of an
    /// earlier generation to empty.
    async fn settle(&self, at: &Locator, cursor: u64) -> Result<Update, StoreError>;

    /// The backup's configuration and progress (strongly consistent); None once
    /// it is deleted.
    async fn load(&self, at: &Locator) -> Result<Option<BackupState>, StoreError>;

    /// Starts snapshot `generation` of a backup whose logs are to begin after
    /// `head`: the cursor moves to `head` (or is set, the first time). `expected`
    /// is the cursor the caller saw (None: never started). Applies only to a
    /// `pending` backup without a cursor (None), or to a `pending` or `active` one
    /// still at cursor `expected` with no stale generation left to empty; then
    /// the earlier generation becomes stale (its chunks, its logs below
    /// `head + 1`) and the backup `pending`. The backup is due (`dueIndex`) and
    /// `pendingSince` is now.
    async fn begin_snapshot(
        &self,
        at: &Locator,
        expected: Option<u64>,
        head: u64,
        generation: u64,
    ) -> Result<Update, StoreError>;

    /// What a deleted backup of `database` left in the root whose retired-root
    /// sort key is `root` ([`subkv_core::control::retired::root_of`]), if anything.
    async fn retired(&self, database: Uuid, root: &str) -> Result<Option<RetiredRoot>, StoreError>;

    /// Starts the first snapshot of a backup whose root holds what a deleted
    /// backup left: as [`Self::begin_snapshot`] with `expected` None (a `pending`
    /// backup without a cursor), at generation `retired.next_generation`, with
    /// [`Stale::retired`] as the stale marker, so that it is emptied first.
    async fn begin_over_retired(
        &self,
        at: &Locator,
        head: u64,
        retired: &RetiredRoot,
    ) -> Result<Update, StoreError>;

    /// Everything the retired root of `backup` (a deleted backup) named is
    /// emptied: removes it (only if it is still that backup's).
    async fn retired_emptied(
        &self,
        database: Uuid,
        root: &str,
        backup: Uuid,
    ) -> Result<Update, StoreError>;

    /// Records, before it is written, that a log object is in the bucket: a
    /// re-snapshot empties every such object of the earlier generation.
    async fn ledger_put(&self, at: &Locator, object_key: &str) -> Result<(), StoreError>;

    /// Up to `limit` log objects in the ledger of backup `ledger` whose key sorts
    /// before `below`, in key order.
    async fn ledger_before(
        &self,
        ledger: Uuid,
        below: &str,
        limit: i32,
    ) -> Result<Vec<String>, StoreError>;

    async fn ledger_delete(&self, ledger: Uuid, object_key: &str) -> Result<(), StoreError>;

    /// The earlier generation's objects are all emptied (applies if the backup is
    /// still at snapshot `generation`): the stale marker goes.
    async fn stale_cleared(&self, at: &Locator, generation: u64) -> Result<Update, StoreError>;

    /// Chunk `seq` (at least 1) of the stale generation `stale_generation` is
    /// emptied: the chunks still to empty become `0..seq` (`staleSeq = seq - 1`).
    /// Applies only if the backup is still at snapshot `generation` and its stale
    /// marker still at that generation and chunk. (Chunk 0, the last, ends with
    /// [`Self::stale_cleared`].)
    async fn stale_chunk_emptied(
        &self,
        at: &Locator,
        generation: u64,
        stale_generation: u64,
        seq: u64,
    ) -> Result<Update, StoreError>;

    /// Takes (or renews) the snapshot lease until `until_ms`: only if nobody holds
    /// it, it ran out before `now_ms`, or `owner` holds it.
    async fn take_lease(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError>;

    /// Takes (or renews) the forwarding lease: one pass at a time writes a
    /// backup's log objects, so racing passes (a stream delivery and the
    /// catch-up) do not write the same commits twice. Lost while another owner
    /// holds it and it has not run out.
    async fn take_forwarding(
        &self,
        at: &Locator,
        owner: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Update, StoreError>;

    /// Gives the forwarding lease back (only its owner can).
    async fn release_forwarding(&self, at: &Locator, owner: &str) -> Result<Update, StoreError>;

    /// Records that chunk `seq` of `generation` is in the bucket and where the
    /// scan stands: only by the lease's owner, at that generation and chunk. Ends a
    /// run of transient faults and closes the breaker (a write landed).
    async fn snapshot_step(
        &self,
        at: &Locator,
        owner: &str,
        generation: u64,
        seq: u64,
        scan: Scan<'_>,
    ) -> Result<Update, StoreError>;

    /// Moves the cursor from `from` to `to` after the log object up to `to` was
    /// written (only if it is still at `from`); `last_versionstamp` (20 hex) is
    /// what `GET` shows. Clears the last error, ends a run of transient faults and
    /// closes the breaker.
    async fn advance(
        &self,
        at: &Locator,
        from: u64,
        to: u64,
        last_versionstamp: Option<&str>,
        at_time: &str,
    ) -> Result<Update, StoreError>;

    /// `pending` → `active`, once the differential (versionstamp `differential`, 20
    /// hex) is written: the bucket holds the database through it from then on.
    /// Applies only to a `pending` backup still at snapshot `generation`; records
    /// `generation` as the one whose differential is written (`activeGen`).
    /// Closes the breaker.
    async fn activate(
        &self,
        at: &Locator,
        generation: u64,
        differential: &str,
        at_time: &str,
    ) -> Result<Update, StoreError>;

    /// The store refused, or transient faults outlasted the budget. Nothing more
    /// is attempted for this backup until the tenant asks for a retry (the API
    /// sets it back to `pending` or `active`). No longer due; closes the breaker.
    async fn fail(&self, at: &Locator, message: &str) -> Result<Update, StoreError>;

    /// A problem being dealt with (e.g. a re-snapshot), shown by `GET` until the
    /// next success. The backup is due.
    async fn note_error(&self, at: &Locator, message: &str) -> Result<Update, StoreError>;

    /// A transient store fault, shown by `GET` until the next success, as
    /// [`Self::note_error`]; the first one since a write landed starts a run of
    /// faults at `now_ms` (`errorSince`). The backup is due.
    async fn note_fault(
        &self,
        at: &Locator,
        message: &str,
        now_ms: i64,
    ) -> Result<Update, StoreError>;

    /// The store timed out: [`Self::note_fault`], and the breaker is set to
    /// `breaker` (its timeouts in a row, until when the catch-up waits).
    async fn open_breaker(
        &self,
        at: &Locator,
        message: &str,
        now_ms: i64,
        breaker: Breaker,
    ) -> Result<Update, StoreError>;

    /// An error no retry fixes, parked on the backup instead of failing a stream
    /// batch: `parked` counts one more, `parkedReason` is `message`. With `fail`
    /// the backup becomes `failed` with `message` (it cannot go on without a
    /// change), only if it is not `failed` already (racing passes that met the
    /// same error park it once); else `message` is its `lastError`.
    async fn park(&self, at: &Locator, message: &str, fail: bool) -> Result<Update, StoreError>;
}
