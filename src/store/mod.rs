//! The daemon's own state, behind small traits in domain types: where each
//! shard was read to ([`CheckpointStore`]), the audit trail itself
//! ([`AuditStore`]), its digests ([`ProofStore`]), the read side's paged
//! reads ([`ReadStore`]) and snapshots ([`SnapshotStore`]); `evidence` holds
//! the one assembler of what `verify` checks. `dynamo` keeps them in DynamoDB
//! tables (their layout: `layout`); `memory` in memory, for tests and
//! benchmarks (feature `test-util`, with the `faults` decorator); both run
//! one conformance suite (`tests/store_conformance.rs`).

pub mod attribution;
pub mod dynamo;
pub mod evidence;
pub mod layout;

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};

use crate::entry::{AuditEntry, Gap};
use crate::value::Item;

#[cfg(any(test, feature = "test-util"))]
pub mod faults;
#[cfg(any(test, feature = "test-util"))]
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

/// The last record handled in a shard's lineage before the shard itself: in
/// its parent, or further up when the parents between were empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineageTail {
    pub shard_id: String,
    pub sequence_no: String,
    pub record_time: Option<DateTime<Utc>>,
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
    /// Reading began at the shard's first sequence number (nothing of it was
    /// trimmed yet). Until something is read, a restart starts there again
    /// rather than at TRIM_HORIZON, so records trimmed in between are found
    /// and become a gap instead of being skipped in silence.
    pub from_start: bool,
    pub updated_at: DateTime<Utc>,
    /// The shard's hash chain as far as `sequence_no` (saved in the same
    /// write). `None`: a row written before the chain existed.
    pub chain: Option<crate::proof::ChainState>,
    /// While the shard has read nothing: the last record handled before it
    /// in its lineage, kept on its own row so that a loss found in it later
    /// is bracketed the same way once its ancestors' rows have expired.
    pub lineage_tail: Option<LineageTail>,
    /// Gaps of this shard's lineage written with their right bracket open
    /// (nothing was readable after them yet), oldest first: its own, or
    /// handed on by its parent's row when it read nothing since. The first
    /// record read closes them with one gap (`Gap::closing`), written before
    /// the checkpoint that clears this list.
    pub open_gaps: Vec<Gap>,
}

impl ShardCheckpoint {
    /// The row of a shard nothing of which has been read yet.
    pub fn fresh(
        table: &str,
        stream_arn: &str,
        shard_id: &str,
        parent_shard_id: Option<&str>,
    ) -> Self {
        ShardCheckpoint {
            stream_arn: stream_arn.to_string(),
            shard_id: shard_id.to_string(),
            table: table.to_string(),
            parent_shard_id: parent_shard_id.map(str::to_string),
            sequence_no: None,
            status: ShardStatus::Open,
            last_record_time: None,
            caught_up: false,
            from_start: false,
            updated_at: Utc::now(),
            chain: None,
            lineage_tail: None,
            open_gaps: Vec::new(),
        }
    }

    /// A gap of the lineage written with its right bracket open, to be
    /// closed by the next record read; once, however often it is found again.
    pub fn note_open_gap(&mut self, gap: Gap) {
        if !self
            .open_gaps
            .iter()
            .any(|g| g.reference() == gap.reference())
        {
            self.open_gaps.push(gap);
        }
    }

    /// This shard as a digest states it, with its chain as `chain`.
    pub fn digest_head(&self, chain: &crate::proof::ChainState) -> crate::proof::digest::ShardHead {
        let cp = self;
        crate::proof::digest::ShardHead {
            shard_id: cp.shard_id.clone(),
            parent_shard_id: cp.parent_shard_id.clone(),
            status: cp.status.as_str().to_string(),
            size: chain.tree.size,
            root: hex::encode(chain.tree.root()),
            last_hash: chain.last_hash.map(hex::encode),
            last_sequence_number: cp.sequence_no.clone(),
        }
    }
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
    /// The write is refused because the stream's lease moved past `epoch`:
    /// another replica took the stream over. Never retried: the writer
    /// stops reading the stream and lets go.
    #[error("stream {stream_arn}: lease lost (held at epoch {epoch}, taken over since)")]
    Fenced { stream_arn: String, epoch: u64 },
}

impl crate::retry::Transient for StoreError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }

    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }
}

/// Who may write a stream's checkpoints, gaps and digests: the replica that
/// took its lease, for as long as the lease's epoch has not moved. Carried
/// by the stream's supervisor and handed to each fenced write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub table: String,
    pub stream_arn: String,
    pub owner: String,
    pub epoch: u64,
}

/// A stream row's lease: who reads the stream now (`None`: nobody), and the
/// epoch, which every change of owner (take or release) increments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub table: String,
    pub stream_arn: String,
    pub owner: Option<String>,
    pub epoch: u64,
    /// The stream is read to its end: nobody needs to own it.
    pub drained: bool,
}

/// A replica's heartbeat row. Peers judge liveness only by whether
/// `counter` changes, timed on their own monotonic clock; `updated_at` is
/// for people reading `status`, never compared between machines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaBeat {
    pub replica: String,
    pub counter: u64,
    /// Streams it owned at its last beat, for `status`.
    pub owned: u64,
    pub updated_at: DateTime<Utc>,
}

pub type StoreResult<T> = Result<T, StoreError>;

pub trait CheckpointStore: Send + Sync + 'static {
    /// Before anything is read: whether the daemon's own tables are there
    /// and shaped as it writes them, each problem named with its fix.
    /// Stores that cannot be missing have nothing to check.
    fn check_tables(&self) -> impl Future<Output = StoreResult<()>> + Send {
        async { Ok(()) }
    }
    fn load_shards(
        &self,
        stream_arn: &str,
    ) -> impl Future<Output = StoreResult<Vec<ShardCheckpoint>>> + Send;
    /// One shard's row (`None`: never saved, or expired). What a new child
    /// needs of its parent: a GetItem, not a Query of every row.
    fn load_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> impl Future<Output = StoreResult<Option<ShardCheckpoint>>> + Send;
    /// A drained shard's row is no longer needed (its shard is not listed
    /// and is no listed shard's parent): let it expire `after` from now, if
    /// that is sooner than it would. Rows not drained are left alone.
    fn release_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
        after: std::time::Duration,
    ) -> impl Future<Output = StoreResult<()>> + Send;
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
    /// Every table's state row: what `status` shows of tables a pattern
    /// found (failing ones have no stream row).
    fn load_all_table_health(
        &self,
    ) -> impl Future<Output = StoreResult<Vec<TableHealthRow>>> + Send;
    /// Whether every stream entry of the table so far is of this stream,
    /// read with no loss and with no item removed (false when never set):
    /// an INSERT read then starts its item's chain, and the item chain
    /// reads nothing to know it (`daemon::itemchain`). Kept on the stream's
    /// row.
    fn fresh_items(
        &self,
        table: &str,
        stream_arn: &str,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// Sets [`CheckpointStore::fresh_items`] on an existing stream row:
    /// `true` only where it was never set (the row of a table's first
    /// stream, just recorded), `false` for good.
    fn set_fresh_items(
        &self,
        table: &str,
        stream_arn: &str,
        fresh: bool,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    // ---- replicas and leases (see `daemon::leases`)

    /// Writes this replica's heartbeat row (an overwrite).
    fn beat(&self, beat: &ReplicaBeat) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every replica's heartbeat row.
    fn replicas(&self) -> impl Future<Output = StoreResult<Vec<ReplicaBeat>>> + Send;
    /// Deletes a replica's heartbeat row if its counter is still `counter`
    /// (a replica that beats again keeps it). Returns whether it was deleted.
    fn forget_replica(
        &self,
        replica: &str,
        counter: u64,
    ) -> impl Future<Output = StoreResult<bool>> + Send;
    /// The lease of every stream row of `table` (a Query), or of every
    /// table (a Scan).
    fn leases(&self, table: Option<&str>) -> impl Future<Output = StoreResult<Vec<Lease>>> + Send;
    /// One lease row (epoch 0 and no owner when absent): a task that runs
    /// on one replica at a time keeps its lease under the replicas'
    /// partition (`store::layout::REPLICAS_PARTITION`), `name` its key.
    fn task_lease(&self, name: &str) -> impl Future<Output = StoreResult<Lease>> + Send;
    /// Takes `seen` for `me` if its epoch is still `seen.epoch` (whoever owns
    /// it): the owner becomes `me` and the epoch `seen.epoch + 1`, which is
    /// returned. `None`: the lease moved since it was seen.
    fn take_lease(
        &self,
        seen: &Lease,
        me: &str,
    ) -> impl Future<Output = StoreResult<Option<u64>>> + Send;
    /// Gives the lease up if `fence` still holds it: no owner, epoch + 1.
    /// Returns whether it was released.
    fn release_lease(&self, fence: &Fence) -> impl Future<Output = StoreResult<bool>> + Send;
    /// [`CheckpointStore::save_shard`] under a fence: the row keeps the
    /// epoch of its last writer and refuses a lower one
    /// ([`StoreError::Fenced`]), so an ex-owner's checkpoint fails once the
    /// new owner has saved that shard. (Entries are deterministic per chain,
    /// so an ex-owner's checkpoint before that is one the new owner would
    /// write too; it can never move a row back.)
    fn save_fenced_shard(
        &self,
        checkpoint: &ShardCheckpoint,
        fence: &Fence,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A write-once gap with its chain link, written only while `fence`
    /// holds the stream's lease (atomically with that check), else
    /// [`StoreError::Fenced`].
    fn put_fenced_gap(
        &self,
        gap: &Gap,
        link: &crate::proof::Link,
        fence: &Fence,
    ) -> impl Future<Output = StoreResult<PutOutcome>> + Send;
    /// Ok while `fence` holds the stream's lease (a strongly consistent
    /// read), else [`StoreError::Fenced`].
    fn check_fence(&self, fence: &Fence) -> impl Future<Output = StoreResult<()>> + Send;
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
    /// The item chain's predecessor of an entry not yet linked: the item's
    /// newest *stream* entry whose sort key is below `before_sort_key` (the
    /// new entry's own, [`layout::entry_sort_key`]), or `None` when it has
    /// none. Strictly before, not simply the newest: an entry written again
    /// after a crash must find the predecessor it found the first time,
    /// whatever was written after it. SNAPSHOT entries are never returned
    /// (they sort before every stream entry but may be written after them).
    /// One strongly consistent read; a store that keeps no proof answers
    /// `None`.
    fn item_predecessor(
        &self,
        table: &str,
        key: &Item,
        before_sort_key: &str,
    ) -> impl Future<Output = StoreResult<Option<ItemPredecessor>>> + Send {
        let _ = (table, key, before_sort_key);
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

/// An item's previous stream entry, as the item chain needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemPredecessor {
    /// Its sort key in the audit table.
    pub sort_key: String,
    pub sequence_number: String,
    /// Its leaf hash; `None` for an entry stored before entries were
    /// hashed, which nothing can link to.
    pub hash: Option<crate::proof::Hash>,
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
    /// [`ProofStore::put_digest`] written only while `fence` holds the
    /// stream's lease (atomically with that check), else
    /// [`StoreError::Fenced`]: a replica that lost a stream cannot sign
    /// where its trail stands.
    fn put_fenced_digest(
        &self,
        number: u64,
        digest: &crate::proof::digest::SignedDigest,
        fence: &Fence,
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
    use crate::retry::{retry, Retried, RetryPolicy, Transient};
    use std::time::Duration;

    /// "Not yet" is a wait, retried as a throttle is, but not a failure.
    enum Wait<'a> {
        NotYet(&'a str),
        Failed(StoreError),
    }
    impl std::fmt::Display for Wait<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Wait::NotYet(what) => f.write_str(what),
                Wait::Failed(e) => e.fmt(f),
            }
        }
    }
    impl Transient for Wait<'_> {
        fn is_transient(&self) -> bool {
            match self {
                Wait::NotYet(_) => true,
                Wait::Failed(e) => e.is_retryable(),
            }
        }
        fn is_wait(&self) -> bool {
            matches!(self, Wait::NotYet(_))
        }
    }

    let policy = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(2));
    let waited = retry(policy, cancel, "wait until ready", || {
        let checked = check();
        async move {
            match checked.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(Wait::NotYet(what)),
                Err(e) => Err(Wait::Failed(e)),
            }
        }
    });
    match tokio::time::timeout(timeout, waited).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(Retried::Cancelled)) => Ok(false),
        Ok(Err(Retried::Failed(Wait::Failed(e)))) => Err(e),
        Ok(Err(Retried::Failed(Wait::NotYet(_)))) | Err(_) => Err(StoreError::Other(format!(
            "{what}: still not ready after {}s",
            timeout.as_secs()
        ))),
    }
}

pub use crate::config::TableNames;

// ---------------------------------------------------------------- the read side

/// The audit table's secondary indexes, each sorted by the entry's time
/// (`ts`). The hot ones (by table, by actor) are sharded over
/// [`INDEX_BUCKETS`] partitions by the item key's hash, so one table or one
/// service account writing thousands of changes a second spreads over
/// several index partitions; a query fans out over the buckets and merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Index {
    /// `<table>#<bucket>`: every entry.
    Table,
    /// `<actor>#<bucket>`: entries with an actor.
    Actor,
    /// `<correlation id>`: sparse, only entries that have one.
    Correlation,
    /// `<principal ARN>#<bucket>`: sparse, on CloudTrail attribution
    /// records naming a principal (not on entries: an entry is written
    /// before CloudTrail says who made it, and never changed). Its rows
    /// point at the record; `index_page` gives the entry's sort key.
    Principal,
}

/// Buckets of the sharded indexes. Part of the stored layout: changing it
/// would hide entries already written from queries.
pub const INDEX_BUCKETS: u64 = 8;

impl Index {
    pub fn name(self) -> &'static str {
        match self {
            Index::Table => "by-table-time",
            Index::Actor => "by-actor-time",
            Index::Correlation => "by-correlation-time",
            Index::Principal => "by-principal-time",
        }
    }

    /// The index's partition-key attribute on the audit item.
    pub fn attribute(self) -> &'static str {
        match self {
            Index::Table => "ix_table",
            Index::Actor => "ix_actor",
            Index::Correlation => "ix_corr",
            Index::Principal => "ix_principal",
        }
    }

    pub const ALL: [Index; 4] = [
        Index::Table,
        Index::Actor,
        Index::Correlation,
        Index::Principal,
    ];

    /// The partitions one lookup value spreads over.
    pub fn partitions(self, value: &str) -> Vec<String> {
        match self {
            Index::Correlation => vec![truncate_key(value).to_string()],
            Index::Table | Index::Actor | Index::Principal => (0..INDEX_BUCKETS)
                .map(|b| format!("{}#{b}", truncate_key(value)))
                .collect(),
        }
    }
}

/// The index sort key attribute: the entry's time, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const TIME_ATTRIBUTE: &str = "ts";

/// Index values longer than this are cut (DynamoDB allows 2,048 bytes of
/// partition key); a query for a longer value is cut the same way.
const MAX_INDEX_VALUE: usize = 1000;

fn truncate_key(s: &str) -> &str {
    if s.len() <= MAX_INDEX_VALUE {
        return s;
    }
    let mut end = MAX_INDEX_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The index attributes of one entry: what both stores write beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexAttrs {
    pub ts: String,
    /// (attribute, partition value) for each index the entry is in.
    pub keys: Vec<(Index, String)>,
}

/// A sortable time of an entry: its `event_time`, normalised to milliseconds
/// (or `fallback`, the write time, if the record had none).
pub fn entry_ts(entry: &AuditEntry, fallback: DateTime<Utc>) -> String {
    entry
        .event_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .map(format_ts)
        .unwrap_or_else(|| format_ts(fallback))
}

pub use crate::entry::format_ts;

/// Which bucket an item's entries go to in the sharded indexes.
pub fn bucket_of(canonical_key: &str) -> u64 {
    crate::value::fnv1a64(canonical_key.as_bytes()) % INDEX_BUCKETS
}

pub fn index_attrs(entry: &AuditEntry, canonical_key: &str, now: DateTime<Utc>) -> IndexAttrs {
    let bucket = bucket_of(canonical_key);
    let mut keys = vec![(
        Index::Table,
        format!("{}#{bucket}", truncate_key(&entry.table)),
    )];
    if let Some(actor) = entry.actor.as_deref().filter(|a| !a.is_empty()) {
        keys.push((Index::Actor, format!("{}#{bucket}", truncate_key(actor))));
    }
    if let Some(c) = entry.correlation.as_deref().filter(|c| !c.is_empty()) {
        keys.push((Index::Correlation, truncate_key(c).to_string()));
    }
    IndexAttrs {
        ts: entry_ts(entry, now),
        keys,
    }
}

/// The `by-principal-time` partition of an attribution record naming `arn`
/// for an item (its entries' bucket, as the other sharded indexes).
pub fn principal_index_key(arn: &str, canonical_key: &str) -> String {
    format!("{}#{}", truncate_key(arn), bucket_of(canonical_key))
}

/// An inclusive time range over `ts` (either end open).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TsRange {
    pub since: Option<String>,
    pub until: Option<String>,
}

impl TsRange {
    pub fn contains(&self, ts: &str) -> bool {
        self.since.as_deref().is_none_or(|s| ts >= s)
            && self.until.as_deref().is_none_or(|u| ts <= u)
    }
}

/// Where one index or item partition was read to: the store's own
/// continuation key, opaque to the read side (it only stores it in cursors).
pub type Position = BTreeMap<String, String>;

/// One index row: which entry, when, and what the index projects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexHit {
    /// The audit item's key.
    pub pk: String,
    pub sk: String,
    pub ts: String,
    pub event: Option<String>,
    /// Resume *after* this hit.
    pub position: Position,
}

impl IndexHit {
    /// The audited table, from the audit partition key (`<table>|…`).
    pub fn table(&self) -> &str {
        self.pk.split_once('|').map(|(t, _)| t).unwrap_or("")
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexPage {
    pub hits: Vec<IndexHit>,
    /// Where the read stopped, when there may be more.
    pub next: Option<Position>,
}

/// A page of one index partition: up to `limit` rows within `range`, in
/// time order (`descending`: newest first), after `after`.
#[derive(Clone, Copy, Debug)]
pub struct IndexRequest<'a> {
    pub index: Index,
    pub partition: &'a str,
    pub range: &'a TsRange,
    pub descending: bool,
    pub after: Option<&'a Position>,
    pub limit: usize,
}

/// A page of one item's history: up to about `limit` of its entries, in
/// stream order (`descending`: newest first), after `after`.
#[derive(Clone, Copy, Debug)]
pub struct HistoryRequest<'a> {
    pub table: &'a str,
    pub key: &'a Item,
    pub descending: bool,
    pub after: Option<&'a Position>,
    pub limit: usize,
}

/// One page of one item's entries in stream order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryPage {
    /// Each entry with the position just after it.
    pub entries: Vec<(AuditEntry, Position)>,
    pub next: Option<Position>,
}

/// What the read side needs beyond [`AuditStore`]: paged, indexed reads.
/// Every read here is a Query or a BatchGetItem (the auditor policy's rights).
pub trait ReadStore: AuditStore {
    fn index_page(
        &self,
        request: &IndexRequest<'_>,
    ) -> impl Future<Output = StoreResult<IndexPage>> + Send;
    /// The entries of index hits, by `(pk, sk)`, in the order asked; `None`
    /// for one that is gone (never, with a write-once trail).
    fn fetch_entries(
        &self,
        refs: &[(String, String)],
    ) -> impl Future<Output = StoreResult<Vec<Option<AuditEntry>>>> + Send;
    fn history_page(
        &self,
        request: &HistoryRequest<'_>,
    ) -> impl Future<Output = StoreResult<HistoryPage>> + Send;
    /// Calls made so far (Query, BatchGetItem) and items read: the cost of a
    /// read, logged by the commands and counted by tests.
    fn read_cost(&self) -> ReadCost;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReadCost {
    pub query_calls: u64,
    pub batch_get_calls: u64,
    pub items_read: u64,
}

// ---------------------------------------------------------------- snapshots

/// Which page of a parallel Scan of a source table to read: segment
/// `segment` of `segments`, from `start` (none: the segment's first page),
/// at most `limit` items.
#[derive(Clone, Copy, Debug)]
pub struct ScanRequest<'a> {
    pub table: &'a str,
    pub segment: u32,
    pub segments: u32,
    pub start: Option<&'a Item>,
    pub limit: usize,
}

/// One page of one segment of a parallel Scan of a source table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ScanPage {
    pub items: Vec<Item>,
    /// Where the segment goes on (its LastEvaluatedKey), if it does.
    pub next: Option<Item>,
    /// Read capacity the page consumed, as the service reports it (or an
    /// estimate from the items' sizes where it reports none).
    pub read_units: f64,
}

/// What a snapshot needs to know of the source table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceInfo {
    pub key_names: Vec<String>,
    /// DescribeTable's approximate item count (refreshed every ~6 h).
    pub item_count: Option<u64>,
}

/// A snapshot run of one table: its id names its entries, so a resumed run
/// writes each item at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotRun {
    pub table: String,
    pub run_id: String,
    pub segments: u32,
    pub done: bool,
}

/// How far one Scan segment of a run has come.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SegmentProgress {
    pub segment: u32,
    /// The last key whose page is written; `None`: not started.
    pub last_key: Option<Item>,
    pub done: bool,
    pub items: u64,
    /// The segment's hash chain over the entries of the pages written, saved
    /// in the same write as `last_key` (as a shard's with its checkpoint).
    pub chain: crate::proof::ChainState,
}

/// A snapshot run's segment is a chain of its own, named like a shard.
pub fn segment_chain_id(segment: u32) -> String {
    format!("segment-{segment:05}")
}

/// The source-table reads and the run bookkeeping `snapshot` needs.
pub trait SnapshotStore: AuditStore {
    fn describe_source(&self, table: &str) -> impl Future<Output = StoreResult<SourceInfo>> + Send;
    /// A strongly consistent Scan page of one segment.
    fn scan_page(
        &self,
        request: ScanRequest<'_>,
    ) -> impl Future<Output = StoreResult<ScanPage>> + Send;
    /// The table's latest run and its segments, if it has one.
    fn load_snapshot(
        &self,
        table: &str,
    ) -> impl Future<Output = StoreResult<Option<(SnapshotRun, Vec<SegmentProgress>)>>> + Send;
    fn save_snapshot_run(&self, run: &SnapshotRun) -> impl Future<Output = StoreResult<()>> + Send;
    fn save_segment(
        &self,
        run: &SnapshotRun,
        progress: &SegmentProgress,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    /// A SNAPSHOT entry, write-once, with its chain link and its place in
    /// its segment's chain (`position`: 1, 2, … within `segment`).
    fn put_snapshot_entry(
        &self,
        entry: &AuditEntry,
        link: &crate::proof::Link,
        segment: u32,
        position: u64,
    ) -> impl Future<Output = StoreResult<PutOutcome>> + Send;
    /// The link stored with a SNAPSHOT entry already written (`None`: none,
    /// or written before snapshots were chained). A resumed run re-reads a
    /// page at another time, so its entries differ from the stored ones;
    /// the chain continues from what is stored.
    fn snapshot_entry_link(
        &self,
        entry: &AuditEntry,
    ) -> impl Future<Output = StoreResult<Option<crate::proof::Link>>> + Send;
}

/// The stand-in stream ARN of a snapshot run's entries: its label sorts
/// before every real stream label (creation timestamps), so in an item's
/// partition the SNAPSHOT entries come first and the read side can place
/// them by time.
pub fn snapshot_stream_arn(table: &str, run_id: &str) -> String {
    format!("{SNAPSHOT_ARN_PREFIX}{table}/stream/{SNAPSHOT_LABEL_PREFIX}{run_id}")
}

/// How [`snapshot_stream_arn`] begins (a real stream ARN begins `arn:`).
pub const SNAPSHOT_ARN_PREFIX: &str = "snapshot:";

pub const SNAPSHOT_LABEL_PREFIX: &str = "0000-snapshot-";
