//! An in-memory simulator of DynamoDB + DynamoDB Streams with real state:
//! tables and items, streams per enablement, shards with hash ranges that
//! rotate and split, retention, iterator expiry, throttling, and the brief
//! listing inconsistency. Behaviour follows `design/streams-facts.md`.
//!
//! The simulator is a *backend*, not a script: tests write items and move
//! tokio's (paused) clock; the consumer under test sees what the service would
//! show. It counts calls so tests and benchmarks can assert cost. Faults that
//! the service only produces by accident (5xx, latency) live in
//! [`super::faults::FaultStream`], which wraps this or the real client.
//!
//! All time is `tokio::time::Instant`, so `#[tokio::test(start_paused = true)]`
//! with `tokio::time::advance` drives retention, expiry, throttling and
//! automatic rotation deterministically. Randomness comes from one seeded
//! `StdRng`.
//!
//! Here: the knobs and the types tests see, and [`SimStream`]'s test
//! controls (tables, writes, topology, the write log).
//! - `state`  — what is behind the lock: tables, the write log, the clock,
//!   sequence numbers, and how a write becomes a record.
//! - `shards` — streams and their shards: hash ranges, listing order,
//!   rotation, splits and lineage, pruning.
//! - `keys`   — canonical keys, key hashes, item sizes.
//! - `api`    — the `StreamApi` the consumer under test calls.
//! - `limits` — the service's limits, throttling, and the call counts.

mod api;
mod errors;
mod keys;
mod limits;
mod shards;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::{
    IteratorPosition, Shard, ShardIteratorRequest, StreamApi, StreamRecord, StreamResult,
    UserIdentity, TTL_PRINCIPAL,
};
use crate::value::Item;
use errors::{invalid, not_found};
use keys::{canon_key, key_hash, key_of};
use limits::older_than;
pub use limits::{CallCounts, MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, MAX_SHARDS_PER_PAGE};
use shards::PRUNE_EVERY;
use state::{State, Table, FIRST_SEQUENCE};

/// GetShardIterator on any stream, its request spelled out: what tests of
/// the simulator and its decorators ask for.
pub async fn iterator<S: StreamApi>(
    stream: &S,
    stream_arn: &str,
    shard_id: &str,
    position: &IteratorPosition,
) -> StreamResult<String> {
    let request = ShardIteratorRequest {
        stream_arn,
        shard_id,
        position,
    };
    stream.get_shard_iterator(&request).await
}

/// `StreamViewType`: what a record carries besides the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewType {
    KeysOnly,
    NewImage,
    OldImage,
    NewAndOldImages,
}

impl ViewType {
    /// The service's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewType::KeysOnly => "KEYS_ONLY",
            ViewType::NewImage => "NEW_IMAGE",
            ViewType::OldImage => "OLD_IMAGE",
            ViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
        }
    }

    fn keeps_new(self) -> bool {
        matches!(self, ViewType::NewImage | ViewType::NewAndOldImages)
    }

    fn keeps_old(self) -> bool {
        matches!(self, ViewType::OldImage | ViewType::NewAndOldImages)
    }
}

/// Knobs of the simulated service. `Default` is the service as documented.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice (sequence gaps, shard ids, listing order,
    /// event ids), so a run is reproducible.
    pub seed: u64,
    /// Wall time at the moment the simulator is created; wall time advances
    /// with tokio's clock from there.
    pub base_wall: DateTime<Utc>,
    pub region: String,
    pub account: String,
    /// Records older than this are trimmed; closed shards older than this
    /// (since closing) disappear from listings.
    pub retention: Duration,
    /// Iterators expire this long after they were issued.
    pub iterator_ttl: Duration,
    /// LimitExceeded on too many GetRecords / DescribeStream calls per second.
    pub throttling: bool,
    pub get_records_per_shard_per_sec: usize,
    pub describe_stream_per_stream_per_sec: usize,
    /// For this many DescribeStream calls (on the same stream) after a shard
    /// closes, listings still show it open although its children are listed.
    pub stale_parent_describe_calls: u64,
    /// Close every open shard and open a successor this long after the shard
    /// opened (community-observed about every 4 h). `None`: only on request.
    pub auto_rotate: Option<Duration>,
    /// Open shards of a new stream, partitioning the key-hash space evenly.
    pub initial_shards: u32,
    /// GetRecords byte budget per call (by `SizeBytes`).
    pub max_bytes_per_call: i64,
    /// Keep every record ever written in the write log (the tests' oracle:
    /// `write_log`, `is_trimmed`). Off for long benchmark runs, whose
    /// memory would otherwise be the log's.
    pub keep_write_log: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            // 2026-11-23T00:00:00Z
            base_wall: DateTime::from_timestamp(1_795_392_000, 0).unwrap_or_default(),
            region: "us-east-1".to_string(),
            account: "000000000000".to_string(),
            retention: Duration::from_secs(24 * 3600),
            iterator_ttl: Duration::from_secs(15 * 60),
            throttling: true,
            get_records_per_shard_per_sec: 5,
            describe_stream_per_stream_per_sec: 10,
            stale_parent_describe_calls: 2,
            auto_rotate: None,
            initial_shards: 1,
            max_bytes_per_call: MAX_BYTES_PER_CALL,
            keep_write_log: true,
        }
    }
}

impl SimConfig {
    pub fn with_seed(seed: u64) -> Self {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }
}

/// One record as the simulator wrote it, with where it went.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRecord {
    pub stream_arn: String,
    pub shard_id: String,
    pub record: StreamRecord,
}

/// The simulated service. Cheap to clone: clones share state.
#[derive(Clone)]
pub struct SimStream {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SimStream")
            .field("tables", &st.tables.len())
            .field("streams", &st.streams.len())
            .field("shards", &st.shard_index.len())
            .finish()
    }
}

impl Default for SimStream {
    fn default() -> Self {
        SimStream::new(SimConfig::default())
    }
}

impl SimStream {
    pub fn new(cfg: SimConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        SimStream {
            state: Arc::new(Mutex::new(State {
                cfg,
                epoch: Instant::now(),
                rng,
                last_seq: FIRST_SEQUENCE,
                last_label_ms: i64::MIN,
                tables: HashMap::new(),
                streams: Vec::new(),
                streams_by_arn: HashMap::new(),
                streams_by_table: HashMap::new(),
                shard_index: HashMap::new(),
                logs: HashMap::new(),
                counts: CallCounts::default(),
                next_auto_rotate: None,
                next_prune: Instant::now() + PRUNE_EVERY,
            })),
        }
    }

    pub fn with_seed(seed: u64) -> Self {
        SimStream::new(SimConfig::with_seed(seed))
    }

    // The lock is never held across an await: every method is synchronous.
    // A panic in a test thread must not wedge every other user, so a
    // poisoned lock is taken over as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The configuration in force.
    pub fn config(&self) -> SimConfig {
        self.lock().cfg.clone()
    }

    pub fn set_throttling(&self, on: bool) {
        self.lock().cfg.throttling = on;
    }

    pub fn set_stale_parent_describe_calls(&self, calls: u64) {
        self.lock().cfg.stale_parent_describe_calls = calls;
    }

    /// Turns automatic rotation on (every `period` of shard age) or off.
    pub fn set_auto_rotate(&self, period: Option<Duration>) {
        let mut st = self.lock();
        st.cfg.auto_rotate = period;
        st.next_auto_rotate = None;
        if period.is_some() {
            let now = Instant::now();
            st.next_auto_rotate = Some(now);
            st.auto_rotate(now);
        }
    }

    /// The simulated wall clock now.
    pub fn now_wall(&self) -> DateTime<Utc> {
        let st = self.lock();
        st.wall(Instant::now())
    }

    /// Creates a table keyed by `key_attrs`, with a stream if `stream` is set.
    pub fn create_table(
        &self,
        table: &str,
        key_attrs: &[&str],
        stream: Option<ViewType>,
    ) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        if st.tables.contains_key(table) {
            return Err(invalid(format!("table {table} already exists")));
        }
        if key_attrs.is_empty() {
            return Err(invalid("a table needs at least one key attribute"));
        }
        st.tables.insert(
            table.to_string(),
            Table {
                key_attrs: key_attrs.iter().map(|k| k.to_string()).collect(),
                items: HashMap::new(),
                current_stream: None,
                tags: Default::default(),
                replicas: Vec::new(),
            },
        );
        if let Some(view) = stream {
            st.create_stream(table, view, now);
        }
        Ok(())
    }

    /// PutItem of a whole item: INSERT, MODIFY, or nothing if unchanged.
    pub fn put(&self, table: &str, item: Item) -> StreamResult<Option<StreamRecord>> {
        let mut st = self.lock();
        let now = st.tick();
        let t = st.table_mut(table)?;
        let keys = key_of(&t.key_attrs, &item)?;
        let canon = canon_key(&keys);
        let old = t.items.insert(canon.clone(), item.clone());
        if old.as_ref() == Some(&item) {
            // The service writes no record for a write that changed nothing.
            return Ok(None);
        }
        let event = if old.is_some() { "MODIFY" } else { "INSERT" };
        st.emit(now, table, canon, keys, event, old, Some(item), None)
    }

    /// UpdateItem: `change` edits the current item (or just the key if the
    /// item doesn't exist). It must not change key attributes.
    pub fn update(
        &self,
        table: &str,
        key: &Item,
        change: impl FnOnce(&mut Item),
    ) -> StreamResult<Option<StreamRecord>> {
        let (key_attrs, keys, mut item) = {
            let st = self.lock();
            let t = st.table(table)?;
            let keys = key_of(&t.key_attrs, key)?;
            let item = t
                .items
                .get(&canon_key(&keys))
                .cloned()
                .unwrap_or(keys.clone());
            (t.key_attrs.clone(), keys, item)
        };
        // Outside the lock: the closure may itself use the simulator. (Not
        // atomic with concurrent writes to the same item, which tests that
        // drive the simulator from one task never do.)
        change(&mut item);
        if key_of(&key_attrs, &item)? != keys {
            return Err(invalid("an update cannot change key attributes"));
        }
        self.put(table, item)
    }

    /// DeleteItem: REMOVE with the old image, or nothing if absent.
    pub fn delete(&self, table: &str, key: &Item) -> StreamResult<Option<StreamRecord>> {
        self.lock().remove_item(table, key, None)
    }

    /// A TTL deletion: REMOVE by the service principal.
    pub fn ttl_expire(&self, table: &str, key: &Item) -> StreamResult<Option<StreamRecord>> {
        let identity = UserIdentity {
            kind: "Service".to_string(),
            principal_id: TTL_PRINCIPAL.to_string(),
        };
        self.lock().remove_item(table, key, Some(identity))
    }

    /// GetItem.
    pub fn get_item(&self, table: &str, key: &Item) -> Option<Item> {
        let st = self.lock();
        let t = st.tables.get(table)?;
        let keys = key_of(&t.key_attrs, key).ok()?;
        t.items.get(&canon_key(&keys)).cloned()
    }

    /// Every item of the table, in no particular order.
    pub fn items(&self, table: &str) -> Vec<Item> {
        let st = self.lock();
        st.tables
            .get(table)
            .map(|t| t.items.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every record written to the table's streams (all of them, across
    /// re-enablements), in write order: the ground truth an audit trail is
    /// compared against. Kept after trimming and after the table is deleted.
    pub fn write_log(&self, table: &str) -> Vec<StreamRecord> {
        let st = self.lock();
        st.logs
            .get(table)
            .map(|l| l.iter().map(|l| l.entry.record.clone()).collect())
            .unwrap_or_default()
    }

    /// The write log of one item (`key` may be the whole item).
    pub fn write_log_for(&self, table: &str, key: &Item) -> StreamResult<Vec<StreamRecord>> {
        let st = self.lock();
        let key_attrs = match st.tables.get(table) {
            Some(t) => t.key_attrs.clone(),
            // A deleted table: its log is still there, keyed by whatever
            // attributes the records carry as keys.
            None => st
                .logs
                .get(table)
                .and_then(|l| l.first())
                .map(|l| l.entry.record.keys.keys().cloned().collect())
                .ok_or_else(|| not_found(format!("table {table}")))?,
        };
        let canon = canon_key(&key_of(&key_attrs, key)?);
        Ok(st
            .logs
            .get(table)
            .map(|l| {
                l.iter()
                    .filter(|l| l.key == canon)
                    .map(|l| l.entry.record.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The write log with the stream and shard each record went to.
    pub fn write_log_routed(&self, table: &str) -> Vec<LoggedRecord> {
        let st = self.lock();
        st.logs
            .get(table)
            .map(|l| l.iter().map(|l| l.entry.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether the record with this sequence number, written to `table`,
    /// is trimmed by now (older than retention): a consumer that had not
    /// read it by now can only record a gap.
    pub fn is_trimmed(&self, table: &str, sequence_number: &str) -> bool {
        let st = self.lock();
        let now = Instant::now();
        let Ok(seq) = sequence_number.parse::<u128>() else {
            return false;
        };
        let Some(log) = st.logs.get(table) else {
            return false;
        };
        // The log is in write order, and sequence numbers only grow.
        log.binary_search_by(|l| l.seq.cmp(&seq))
            .is_ok_and(|i| older_than(log[i].at, st.cfg.retention, now))
    }

    /// The table's latest stream ARN (enabled or not).
    pub fn stream_arn(&self, table: &str) -> Option<String> {
        let st = self.lock();
        let s = st.tables.get(table)?.current_stream?;
        Some(st.streams[s].arn.clone())
    }

    /// Every shard of a stream still retained, as it really is (no listing
    /// inconsistency, no pages), in creation order.
    pub fn shards(&self, stream_arn: &str) -> StreamResult<Vec<Shard>> {
        self.shards_where(stream_arn, true)
    }

    /// Every shard the stream has ever had, trimmed away or not: the truth a
    /// test's oracle needs for lineage (which shard was whose parent) after
    /// the service has forgotten.
    pub fn all_shards(&self, stream_arn: &str) -> StreamResult<Vec<Shard>> {
        self.shards_where(stream_arn, false)
    }

    fn shards_where(&self, stream_arn: &str, retained_only: bool) -> StreamResult<Vec<Shard>> {
        let st = self.lock();
        let now = Instant::now();
        let s = *st
            .streams_by_arn
            .get(stream_arn)
            .ok_or_else(|| not_found(format!("stream {stream_arn}")))?;
        let stream = &st.streams[s];
        Ok((0..stream.shards.len())
            .filter(|&i| !retained_only || !stream.shards[i].expired(now, st.cfg.retention))
            .map(|i| stream.true_shard(i))
            .collect())
    }

    /// Ids of the open shards of the table's enabled stream.
    pub fn open_shards(&self, table: &str) -> StreamResult<Vec<String>> {
        let mut st = self.lock();
        st.tick();
        let Some(s) = st.enabled_stream(table)? else {
            return Ok(Vec::new());
        };
        let stream = &st.streams[s];
        Ok(stream
            .open
            .values()
            .map(|&i| stream.shards[i].id.clone())
            .collect())
    }

    /// The open shard an item's next record would go to.
    pub fn shard_for_key(&self, table: &str, key: &Item) -> StreamResult<Option<String>> {
        let mut st = self.lock();
        st.tick();
        let key_attrs = st.table(table)?.key_attrs.clone();
        let hash = key_hash(&canon_key(&key_of(&key_attrs, key)?));
        let Some(s) = st.enabled_stream(table)? else {
            return Ok(None);
        };
        let stream = &st.streams[s];
        Ok(stream
            .open
            .range(..=hash)
            .next_back()
            .map(|(_, &i)| stream.shards[i].id.clone()))
    }

    /// Closes an open shard and opens one successor with the same range.
    /// Returns the successor's id.
    pub fn rotate_shard(&self, shard_id: &str) -> StreamResult<String> {
        let mut st = self.lock();
        let now = st.tick();
        let (s, idx) = st.open_shard_of(shard_id)?;
        let child = st.rotate_at(s, idx, now);
        Ok(st.streams[s].shards[child].id.clone())
    }

    /// Closes an open shard and opens two children halving its range.
    pub fn split_shard(&self, shard_id: &str) -> StreamResult<(String, String)> {
        let mut st = self.lock();
        let now = st.tick();
        let (s, idx) = st.open_shard_of(shard_id)?;
        let (a, b) = st
            .split_at(s, idx, now)
            .ok_or_else(|| invalid(format!("shard {shard_id} is too narrow to split")))?;
        let shards = &st.streams[s].shards;
        Ok((shards[a].id.clone(), shards[b].id.clone()))
    }

    /// Rotates every open shard of every enabled stream; returns how many.
    pub fn rotate_all(&self) -> usize {
        let mut st = self.lock();
        let now = st.tick();
        let mut rotated = 0;
        for s in 0..st.streams.len() {
            if !st.streams[s].enabled {
                continue;
            }
            let open: Vec<usize> = st.streams[s].open.values().copied().collect();
            for idx in open {
                st.rotate_at(s, idx, now);
                rotated += 1;
            }
        }
        rotated
    }

    /// Adds `n` closed, empty shards to the table's enabled stream, as a
    /// busy day does: mostly rotations, with an occasional split (about one
    /// in twenty, while fewer than 16 shards are open), so the result is a
    /// long chain that fans out a little and ends in the open shard(s).
    /// Existing open shards (with their records) are the first to close.
    pub fn add_empty_closed_shards(&self, table: &str, n: usize) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        let s = st
            .enabled_stream(table)?
            .ok_or_else(|| invalid(format!("table {table} has no enabled stream")))?;
        for _ in 0..n {
            let open: Vec<usize> = st.streams[s].open.values().copied().collect();
            if open.is_empty() {
                break;
            }
            let pick = open[st.rng.random_range(0..open.len())];
            let split = open.len() < 16 && st.rng.random_ratio(1, 20);
            if !(split && st.split_at(s, pick, now).is_some()) {
                st.rotate_at(s, pick, now);
            }
        }
        Ok(())
    }

    /// Disables the table's stream: every open shard closes, no new records.
    pub fn disable_stream(&self, table: &str) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        let s = st
            .enabled_stream(table)?
            .ok_or_else(|| invalid(format!("table {table} has no enabled stream")))?;
        st.disable(s, now);
        Ok(())
    }

    /// Enables a stream on a table whose stream is disabled (or never was):
    /// a new stream ARN. Older streams stay readable until trimmed.
    pub fn enable_stream(&self, table: &str, view: ViewType) -> StreamResult<String> {
        let mut st = self.lock();
        let now = st.tick();
        if st.enabled_stream(table)?.is_some() {
            return Err(invalid(format!("table {table} already has a stream")));
        }
        let s = st.create_stream(table, view, now);
        Ok(st.streams[s].arn.clone())
    }

    /// TagResource: sets one tag of the table.
    pub fn tag_table(&self, table: &str, key: &str, value: &str) -> StreamResult<()> {
        let mut st = self.lock();
        st.tick();
        st.table_mut(table)?
            .tags
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    /// UntagResource: removes one tag of the table.
    pub fn untag_table(&self, table: &str, key: &str) -> StreamResult<()> {
        let mut st = self.lock();
        st.tick();
        st.table_mut(table)?.tags.remove(key);
        Ok(())
    }

    /// Makes the table a Global Table with replicas in `regions` (as
    /// DescribeTable's `Replicas` lists them), or a one-region table again.
    pub fn set_replicas(&self, table: &str, regions: &[&str]) -> StreamResult<()> {
        let mut st = self.lock();
        st.tick();
        st.table_mut(table)?.replicas = regions.iter().map(|r| r.to_string()).collect();
        Ok(())
    }

    /// The table's ARN, as DescribeTable gives it.
    pub fn table_arn(&self, table: &str) -> String {
        self.lock().table_arn(table)
    }

    /// Deletes the table: its stream is disabled and DescribeTable says
    /// NotFound; the streams' records stay readable until trimmed.
    pub fn delete_table(&self, table: &str) -> StreamResult<()> {
        let mut st = self.lock();
        let now = st.tick();
        if let Some(s) = st.enabled_stream(table)? {
            st.disable(s, now);
        }
        st.tables.remove(table);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
