//! The daemon's own state, behind two small traits: where each shard was read
//! to ([`CheckpointStore`]) and the audit trail itself ([`AuditStore`]).
//! `dynamo` keeps them in DynamoDB tables; `memory` in memory, for tests and
//! benchmarks.

pub mod dynamo;

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::entry::{AuditEntry, Gap};
use crate::value::Item;

pub mod faults;
pub mod memory;

/// Our view of a shard, as the seed article's `streams_shards` table has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShardStatus {
    /// The service still adds records to it.
    Open,
    /// Closed by the service, but not yet read to its end.
    Closed,
    /// Closed and read to its end: its children may start.
    Drained,
}

impl ShardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ShardStatus::Open => "open",
            ShardStatus::Closed => "closed",
            ShardStatus::Drained => "drained",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(ShardStatus::Open),
            "closed" => Some(ShardStatus::Closed),
            "drained" => Some(ShardStatus::Drained),
            _ => None,
        }
    }
}

/// One row of `streams_shards`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardCheckpoint {
    pub stream_arn: String,
    pub shard_id: String,
    pub table: String,
    pub parent_shard_id: Option<String>,
    /// The last sequence number whose entry is durably written.
    pub sequence_no: Option<String>,
    pub status: ShardStatus,
    /// Creation time of the newest record handled (for lag).
    pub last_record_time: Option<DateTime<Utc>>,
    /// The last read found nothing new: the shard is caught up (lag 0).
    pub caught_up: bool,
    pub updated_at: DateTime<Utc>,
    /// The shard's hash chain as far as `sequence_no` (saved in the same
    /// write). `None`: a row written before the chain existed.
    pub chain: Option<crate::proof::ChainState>,
}

/// One row of `streams`: a stream of an audited table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamRow {
    pub table_name: String,
    pub stream_arn: String,
    /// False once the table's stream was disabled or replaced.
    pub is_enabled: bool,
    /// True once every shard of a disabled stream is drained.
    pub drained: bool,
    pub updated_at: DateTime<Utc>,
}

/// Where the daemon last said a configured table stands (for `status`, which
/// runs in another process): `auditing`, `draining`, `failing` or `starting`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableHealthRow {
    pub table_name: String,
    pub state: String,
    /// Why it is draining or failing.
    pub reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// What a write-once put found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    /// The entry was already there (a record delivered again): nothing written.
    AlreadyPresent,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Throttling, 5xx, timeouts: retry.
    #[error("transient store error: {0}")]
    Transient(String),
    /// A table of ours is missing: `ddb-audit init` was not run.
    #[error("table {table} does not exist; run `ddb-audit init --config <file>` first")]
    MissingTable { table: String },
    /// A stored item we cannot read back.
    #[error("corrupt stored item: {0}")]
    Corrupt(String),
    /// The store refuses this item as it is (ValidationException): trying
    /// the same write again can never succeed.
    #[error("rejected by the store: {0}")]
    Rejected(String),
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

pub trait CheckpointStore: Send + Sync + 'static {
    fn load_shards(
        &self,
        stream_arn: &str,
    ) -> impl Future<Output = StoreResult<Vec<ShardCheckpoint>>> + Send;
    /// Upsert one shard's row.
    fn save_shard(
        &self,
        checkpoint: &ShardCheckpoint,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn save_stream(&self, row: &StreamRow) -> impl Future<Output = StoreResult<()>> + Send;
    /// The streams of one table, or of all tables.
    fn load_streams(
        &self,
        table: Option<&str>,
    ) -> impl Future<Output = StoreResult<Vec<StreamRow>>> + Send;
    fn save_table_health(
        &self,
        row: &TableHealthRow,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn load_table_health(
        &self,
        table: &str,
    ) -> impl Future<Output = StoreResult<Option<TableHealthRow>>> + Send;
}

pub trait AuditStore: Send + Sync + 'static {
    /// Write-once: never overwrites; a second put of the same record is
    /// recognised and reported as [`PutOutcome::AlreadyPresent`].
    fn put_entry(&self, entry: &AuditEntry)
        -> impl Future<Output = StoreResult<PutOutcome>> + Send;
    /// One item's entries in stream order.
    fn history(
        &self,
        table: &str,
        key: &Item,
    ) -> impl Future<Output = StoreResult<Vec<AuditEntry>>> + Send;
    fn put_gap(&self, gap: &Gap) -> impl Future<Output = StoreResult<PutOutcome>> + Send;
    fn gaps(&self) -> impl Future<Output = StoreResult<Vec<Gap>>> + Send;
    /// [`AuditStore::put_entry`], with the entry's chain link stored inline
    /// beside it. A store that keeps no proof may ignore the link.
    fn put_linked_entry(
        &self,
        entry: &AuditEntry,
        link: &crate::proof::Link,
    ) -> impl Future<Output = StoreResult<PutOutcome>> + Send {
        let _ = link;
        self.put_entry(entry)
    }
    /// The chain link stored with a gap already written (`None`: no gap
    /// there, or a store that keeps no proof). A gap seen again after a
    /// crash may differ in what it could tell (where reading resumed); the
    /// chain then continues from the stored one.
    fn gap_link(
        &self,
        gap: &Gap,
    ) -> impl Future<Output = StoreResult<Option<crate::proof::Link>>> + Send {
        let _ = gap;
        async { Ok(None) }
    }
    /// [`AuditStore::put_gap`] with the gap's chain link.
    fn put_linked_gap(
        &self,
        gap: &Gap,
        link: &crate::proof::Link,
    ) -> impl Future<Output = StoreResult<PutOutcome>> + Send {
        let _ = link;
        self.put_gap(gap)
    }
}

/// Where the signed digests live, and the pointer to each stream's newest
/// one (kept outside the audit table, so rolling that table back shows).
pub trait ProofStore: Send + Sync + 'static {
    /// The newest digest of a stream: (number, digest as stored).
    fn newest_digest(
        &self,
        stream_arn: &str,
    ) -> impl Future<Output = StoreResult<Option<(u64, crate::proof::digest::SignedDigest)>>> + Send;
    /// Write-once.
    fn put_digest(
        &self,
        table: &str,
        stream_arn: &str,
        number: u64,
        digest: &crate::proof::digest::SignedDigest,
    ) -> impl Future<Output = StoreResult<PutOutcome>> + Send;
    /// Records on the stream's row that digest `number` (with `hash`) was
    /// written; never moves back.
    fn record_newest_digest(
        &self,
        table: &str,
        stream_arn: &str,
        number: u64,
        hash: &str,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Polls `check` until it says ready, with a growing pause (100 ms → 2 s),
/// for at most `timeout`. Ends at once when `cancel` fires (`Ok(false)`):
/// `init`'s wait for new tables must not outlive a SIGTERM. Transient errors
/// of `check` are waited out like "not ready yet".
pub async fn wait_until_ready<F, Fut>(
    what: &str,
    timeout: std::time::Duration,
    cancel: &tokio_util::sync::CancellationToken,
    mut check: F,
) -> StoreResult<bool>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = StoreResult<bool>>,
{
    use std::time::Duration;
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut next_report = Duration::from_secs(5);
    loop {
        let ready = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(false),
            ready = check() => ready,
        };
        match ready {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(e) if e.is_retryable() => tracing::debug!(error = %e, "{what}: retrying"),
            Err(e) => return Err(e),
        }
        let waited = started.elapsed();
        if waited > timeout {
            return Err(StoreError::Other(format!(
                "{what}: still not ready after {}s",
                timeout.as_secs()
            )));
        }
        if waited >= next_report {
            tracing::info!(waited_secs = waited.as_secs(), "{what}: still waiting");
            next_report = waited * 2;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The names of the daemon's own DynamoDB tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableNames {
    /// One row per (audited table, stream): the seed article's `streams`.
    pub streams: String,
    /// One row per (stream, shard): the seed article's `streams_shards`.
    pub shards: String,
    /// The audit entries and gaps.
    pub audit: String,
}

impl Default for TableNames {
    fn default() -> Self {
        TableNames {
            streams: "ddb-audit-streams".into(),
            shards: "ddb-audit-shards".into(),
            audit: "ddb-audit-entries".into(),
        }
    }
}
