//! Where the engine reads a database from: [`ChangeSource`], implemented by the
//! data plane's [`DynamoKv`] (the data and change-log tables) and, in unit tests,
//! by an in-memory fake.

use async_trait::async_trait;
use subkv_dynamo_kv::{DynamoKv, LoggedCommit};
use subkv_kv::error::KvResult;
use subkv_kv::model::Entry;
use uuid::Uuid;

/// One page of a database's live entries, in key order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LivePage {
    pub entries: Vec<Entry>,
    /// The sort key the scan continues after; None: the scan is complete.
    pub next: Option<Vec<u8>>,
}

/// What the engine reads of a database: its head, its change log and its live
/// entries. Every read is consistent.
#[async_trait]
pub trait ChangeSource: Send + Sync {
    /// The database's last committed version (0 for a database never written).
    /// A commit writes its head and its change record together.
    async fn head(&self, database: Uuid) -> KvResult<u64>;

    /// The change log after commit `after` (exclusive), oldest first, one
    /// [`LoggedCommit`] per commit, never one in pieces: at most `max_commits` of
    /// them, and no commit more once their encoded size reaches `max_bytes` (the
    /// first always comes whole). Commits whose records expired are missing.
    async fn change_log(
        &self,
        database: Uuid,
        after: u64,
        max_commits: usize,
        max_bytes: usize,
    ) -> KvResult<Vec<LoggedCommit>>;

    /// The live entries of the items after sort key `after` (from the start if
    /// None), reading at most `max_items` items.
    async fn live_entries_page(
        &self,
        database: Uuid,
        after: Option<&[u8]>,
        max_items: i32,
    ) -> KvResult<LivePage>;
}

#[async_trait]
impl ChangeSource for DynamoKv {
    async fn head(&self, database: Uuid) -> KvResult<u64> {
        DynamoKv::head(self, database).await
    }

    async fn change_log(
        &self,
        database: Uuid,
        after: u64,
        max_commits: usize,
        max_bytes: usize,
    ) -> KvResult<Vec<LoggedCommit>> {
        DynamoKv::change_log(self, database, after, max_commits, max_bytes).await
    }

    async fn live_entries_page(
        &self,
        database: Uuid,
        after: Option<&[u8]>,
        max_items: i32,
    ) -> KvResult<LivePage> {
        let (entries, next) = DynamoKv::live_entries_page(self, database, after, max_items).await?;
        Ok(LivePage { entries, next })
    }
}
