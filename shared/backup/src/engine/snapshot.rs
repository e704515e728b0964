//! Snapshots: the first one's beginning (above a deleted backup's generations
//! when one wrote to the same root), the resumable chunks of a generation under
//! the lease, a new generation when the change log no longer reaches back to the
//! cursor, and the emptying of the earlier generation's objects (or of what the
//! deleted backup left).

use super::{time_for_a_step, Engine, EngineError, Report, Step};
use crate::progress::{BackupState, Scan, Stale, Update};
use crate::sink::ObjectSink;
use std::time::Instant;
use subkv_core::control::locator::Locator;
use subkv_core::control::retired;
use subkv_dynamo_kv::now_ms;
use subkv_kv::backup_format as format;

impl Engine {
    /// The first snapshot begins: logs start after the head as it is now, before
    /// the scan reads anything, so they leave no gap. If a deleted backup of the
    /// database wrote to the same root, what it left is to be emptied first (the
    /// reader would load its chunks and replay its logs): the snapshot begins at
    /// a generation above that backup's, with its objects as the stale marker,
    /// once any put it still had in flight has landed.
    pub(super) async fn begin(
        &self,
        at: &Locator,
        state: &BackupState,
    ) -> Result<Step, EngineError> {
        let root = retired::root_of(&state.record);
        let begun = match self.progress.retired(at.database_id, &root).await? {
            None => {
                let head = self.source.head(at.database_id).await?;
                self.progress.begin_snapshot(at, None, head, 1).await?
            }
            Some(retired) => {
                let settled = retired.retired_at_ms + self.config.lease_margin.as_millis() as i64;
                if now_ms() < settled {
                    // A pass over the deleted backup may still be putting an
                    // object; emptying it before that lands would not hold.
                    tracing::info!(backup = %at.backup_id, database = %at.database_id, retired = %retired.backup_id,
                        "waiting for the last writes of the deleted backup of this root");
                    return Ok(Step::Done);
                }
                tracing::info!(backup = %at.backup_id, database = %at.database_id, retired = %retired.backup_id,
                    generation = retired.next_generation, "emptying what a deleted backup left in this root");
                let head = self.source.head(at.database_id).await?;
                self.progress.begin_over_retired(at, head, &retired).await?
            }
        };
        // Lost: another invocation began it; look again either way.
        let _: Update = begun;
        Ok(Step::Again)
    }

    /// One resumable snapshot chunk, under the lease.
    pub(super) async fn snapshot_step(
        &self,
        at: &Locator,
        state: &BackupState,
        sink: &dyn ObjectSink,
        deadline: Instant,
        report: &mut Report,
    ) -> Result<Step, EngineError> {
        // A chunk takes a page read and a put: leave it to the next pass when
        // this one is nearly out of time.
        if !time_for_a_step(deadline) {
            return Ok(Step::Done);
        }
        let now = now_ms();
        let until = now + self.config.lease.as_millis() as i64;
        if let Update::Lost = self
            .progress
            .take_lease(at, &self.owner, now, until)
            .await?
        {
            // Another invocation is taking this backup's snapshot steps.
            return Ok(Step::Done);
        }
        let snap = &state.snapshot;
        let page = self
            .source
            .live_entries_page(
                at.database_id,
                snap.after.as_deref(),
                self.config.snapshot_items_per_chunk,
            )
            .await?;
        let scan = match page.next.as_deref() {
            Some(after) => Scan::After(after),
            // Read after the last page: every entry in the snapshot is at most this.
            None => Scan::Complete {
                end: self.source.head(at.database_id).await?,
            },
        };
        let object = format::snapshot_object(
            &state.record.prefix,
            at.database_id,
            snap.generation,
            snap.seq,
            &page.entries,
        )?;
        // A put that could outlast the lease might land after another holder's
        // put of the same chunk: don't start one.
        let margin = self.config.lease_margin.as_millis() as i64;
        if now_ms() + margin > until {
            return Ok(Step::Again);
        }
        if let Err(fault) = sink.put(&object.key, object.body).await {
            return Ok(Step::Fault(fault));
        }
        let recorded = self
            .progress
            .snapshot_step(at, &self.owner, snap.generation, snap.seq, scan)
            .await?;
        if recorded.applied() {
            report.snapshot_chunks += 1;
        }
        Ok(Step::Again)
    }

    /// After a re-snapshot: empties (overwrites with empty bodies) the earlier
    /// generation's log objects, then its snapshot chunks. Likewise, before a
    /// backup's first snapshot, what a deleted backup left in the same root: its
    /// ledger's log objects (all of them) and its chunks, then its retired root. A fresh restore reads every
    /// object under `snapshots/` and replays every log from the first: without this,
    /// entries from before the gap would be replayed over the new snapshot.
    ///
    /// Resumable and bounded by `deadline`: no put starts without
    /// [`super::MIN_STEP_TIME`] left, and each emptied object is recorded before the
    /// next (a log object leaves the ledger; the chunks go from the highest down,
    /// the stale marker's chunk count following), so the next pass goes on from
    /// there, however many objects the earlier generation has.
    pub(super) async fn empty_stale(
        &self,
        at: &Locator,
        state: &BackupState,
        stale: Stale,
        sink: &dyn ObjectSink,
        deadline: Instant,
    ) -> Result<Step, EngineError> {
        let prefix = &state.record.prefix;
        let below = format::log_key_prefix(prefix, at.database_id, stale.below);
        let ledger = stale.ledger.unwrap_or(at.backup_id);
        let objects = self.progress.ledger_before(ledger, &below, 100).await?;
        if !objects.is_empty() {
            for key in objects {
                if !time_for_a_step(deadline) {
                    return Ok(Step::Done);
                }
                if let Err(fault) = sink.put(&key, format::emptied_log_body()).await {
                    return Ok(Step::Fault(fault));
                }
                self.progress.ledger_delete(ledger, &key).await?;
            }
            return Ok(Step::Again);
        }
        let generation = state.snapshot.generation;
        for seq in (0..=stale.chunks).rev() {
            if !time_for_a_step(deadline) {
                return Ok(Step::Done);
            }
            let object =
                format::snapshot_object(prefix, at.database_id, stale.generation, seq, &[])?;
            if let Err(fault) = sink.put(&object.key, object.body).await {
                return Ok(Step::Fault(fault));
            }
            let recorded = if seq == 0 {
                if let Some(deleted) = stale.ledger {
                    // Its ledger is empty and its chunks emptied: its retired root
                    // goes first, then the marker (a pass that ends in between
                    // empties chunk 0 again and finds nothing else).
                    let root = retired::root_of(&state.record);
                    let _: Update = self
                        .progress
                        .retired_emptied(at.database_id, &root, deleted)
                        .await?;
                }
                self.progress.stale_cleared(at, generation).await?
            } else {
                self.progress
                    .stale_chunk_emptied(at, generation, stale.generation, seq)
                    .await?
            };
            if !recorded.applied() {
                // Another invocation moved it on (or the generation did): look again.
                return Ok(Step::Again);
            }
        }
        Ok(Step::Again)
    }

    /// The change log no longer holds what comes after the cursor: begin a new
    /// snapshot generation (logs from the head as it is now).
    pub(super) async fn restart_snapshot(
        &self,
        at: &Locator,
        state: &BackupState,
        cursor: u64,
        report: &mut Report,
    ) -> Result<Step, EngineError> {
        let head = self.source.head(at.database_id).await?;
        let generation = state.snapshot.generation + 1;
        tracing::warn!(backup = %at.backup_id, database = %at.database_id, cursor, head, generation,
            "change log expired before it was backed up: re-snapshotting");
        if self
            .progress
            .begin_snapshot(at, Some(cursor), head, generation)
            .await?
            .applied()
        {
            let message = "the change log expired before it was backed up: taking a new snapshot";
            let _: Update = self.progress.note_error(at, message).await?;
            report.problem = Some(message.into());
        }
        Ok(Step::Again)
    }
}
