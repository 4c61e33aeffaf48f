//! Shared pieces of the simulator-driven tests: running the daemon on the
//! simulator and checking the audit trail against the simulator's write log.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use ddb_audit::config::Polling;
use ddb_audit::diff::apply_changes;
use ddb_audit::engine::{Engine, Settings, Shutdown};
use ddb_audit::entry::AuditEntry;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{AuditStore, CheckpointStore};
use ddb_audit::stream::sim::SimStream;
use ddb_audit::stream::{cmp_sequence, StreamApi};
use ddb_audit::value::{same_value, AttrValue, Item};
use tokio::task::JoinHandle;

pub const TABLE: &str = "orders";

pub fn settings() -> Settings {
    Settings {
        actor_attribute: Some("updated_by".into()),
        correlation_attribute: None,
        polling: Polling::default(),
        jitter_seed: Some(1),
        ..Settings::default()
    }
}

pub fn key(id: u32) -> Item {
    [("pk".to_string(), AttrValue::S(format!("item-{id}")))].into()
}

/// An item with nested values that change from version to version.
pub fn item(id: u32, version: u32, actor: &str) -> Item {
    let mut item = key(id);
    item.insert(
        "balance".into(),
        AttrValue::N(format!("{}", 1000 - version)),
    );
    item.insert("updated_by".into(), AttrValue::S(actor.into()));
    item.insert(
        "profile".into(),
        AttrValue::M(
            [
                (
                    "name".to_string(),
                    AttrValue::S(format!("name-{}", version % 3)),
                ),
                (
                    "tags".to_string(),
                    AttrValue::L(
                        (0..(version % 4))
                            .map(|i| AttrValue::N(i.to_string()))
                            .collect(),
                    ),
                ),
            ]
            .into(),
        ),
    );
    if version % 2 == 0 {
        item.insert(
            "flags".into(),
            AttrValue::Ss(vec![format!("f{version}"), "beta".into()]),
        );
    }
    item
}

/// A running daemon over the simulator and a memory store.
pub struct Daemon {
    pub shutdown: Shutdown,
    pub handle: JoinHandle<()>,
}

pub fn start<S: StreamApi, T>(stream: S, store: &T, settings: Settings, tables: &[&str]) -> Daemon
where
    T: CheckpointStore + AuditStore + Clone,
{
    let engine = Arc::new(Engine::new(stream, store.clone(), store.clone(), settings));
    let shutdown = Shutdown::new();
    let tables = tables.iter().map(|t| t.to_string()).collect();
    let s = shutdown.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = ddb_audit::supervisor::run(engine, tables, s).await {
            panic!("daemon failed: {e}");
        }
    });
    Daemon { shutdown, handle }
}

impl Daemon {
    /// Graceful stop; returns once every task has finished.
    pub async fn stop(self) {
        self.shutdown.begin(Duration::from_secs(4));
        self.handle.await.expect("daemon task");
    }

    /// kill -9: the task tree is dropped at whatever await point it is in.
    pub async fn crash(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// Lets the daemon run for `d` of simulated time.
pub async fn run_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Checks the audit trail against the simulator: for every item, one entry per
/// record the stream holds (none lost, none doubled), in stream order, whose
/// changes rebuild each new image from the old one, and the last of which
/// leaves the item as the table holds it. Records the simulator has trimmed
/// may be missing only if a gap covers their shard.
pub async fn verify(sim: &SimStream, store: &MemoryStore, table: &str) -> Result<usize, String> {
    let log = sim.write_log_routed(table);
    let gaps = store.gaps().await.map_err(|e| e.to_string())?;
    let mut by_item: BTreeMap<String, Vec<&ddb_audit::stream::sim::LoggedRecord>> = BTreeMap::new();
    for l in &log {
        by_item
            .entry(format!("{:?}", l.record.keys))
            .or_default()
            .push(l);
    }
    let mut total = 0;
    for records in by_item.values() {
        let keys = &records[0].record.keys;
        let entries = store
            .history(table, keys)
            .await
            .map_err(|e| e.to_string())?;
        let by_seq: HashMap<&str, &AuditEntry> = entries
            .iter()
            .map(|e| (e.sequence_number.as_str(), e))
            .collect();
        if by_seq.len() != entries.len() {
            return Err(format!("{keys:?}: an entry appears twice"));
        }
        for pair in entries.windows(2) {
            if pair[0].stream_arn == pair[1].stream_arn
                && cmp_sequence(&pair[0].sequence_number, &pair[1].sequence_number).is_ge()
            {
                return Err(format!("{keys:?}: history out of stream order"));
            }
        }
        let mut expected = 0;
        for l in records {
            let seq = l.record.sequence_number.as_str();
            match by_seq.get(seq) {
                Some(entry) => {
                    expected += 1;
                    if entry.shard_id != l.shard_id || entry.event != l.record.event_name {
                        return Err(format!(
                            "{keys:?} {seq}: entry says {} {} but the stream {} {}",
                            entry.shard_id, entry.event, l.shard_id, l.record.event_name
                        ));
                    }
                    let rebuilt = apply_changes(l.record.old_image.as_ref(), &entry.changes)
                        .map_err(|e| format!("{keys:?} {seq}: changes do not apply: {e}"))?;
                    let want = l.record.new_image.clone().unwrap_or_default();
                    if !same_item(&rebuilt, &want) {
                        return Err(format!(
                            "{keys:?} {seq}: changes rebuild {rebuilt:?}, not {want:?}"
                        ));
                    }
                }
                None => {
                    let trimmed = sim.is_trimmed(table, seq);
                    let gap = gaps
                        .iter()
                        .any(|g| g.shard_id == l.shard_id && g.stream_arn == l.stream_arn);
                    if !(trimmed && gap) {
                        return Err(format!(
                            "{keys:?}: record {seq} in {} is missing (trimmed: {trimmed}, gap recorded: {gap})",
                            l.shard_id
                        ));
                    }
                }
            }
        }
        if expected != entries.len() {
            return Err(format!(
                "{keys:?}: {} entries for {expected} records",
                entries.len()
            ));
        }
        total += entries.len();
    }
    Ok(total)
}

pub fn same_item(a: &Item, b: &Item) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| same_value(v, w)))
}

/// Wraps a store and delays every call a little (seeded), so that a crash —
/// the daemon's task tree dropped at an arbitrary await — can land between an
/// entry's write and its checkpoint, as a kill -9 can.
#[derive(Clone)]
pub struct LaggyStore {
    pub inner: MemoryStore,
    state: Arc<std::sync::atomic::AtomicU64>,
    max_micros: u64,
}

impl LaggyStore {
    pub fn new(inner: MemoryStore, seed: u64, max_latency: Duration) -> Self {
        LaggyStore {
            inner,
            state: Arc::new(std::sync::atomic::AtomicU64::new(seed | 1)),
            max_micros: max_latency.as_micros() as u64,
        }
    }

    async fn lag(&self) {
        use std::sync::atomic::Ordering;
        // xorshift: cheap, seeded, shared by clones.
        let mut x = self.state.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state.store(x, Ordering::Relaxed);
        if self.max_micros > 0 {
            tokio::time::sleep(Duration::from_micros(x % self.max_micros)).await;
        }
    }
}

use ddb_audit::entry::Gap;
use ddb_audit::store::{PutOutcome, ShardCheckpoint, StoreResult, StreamRow, TableHealthRow};

impl AuditStore for LaggyStore {
    async fn put_entry(&self, entry: &AuditEntry) -> StoreResult<PutOutcome> {
        self.lag().await;
        let r = self.inner.put_entry(entry).await;
        self.lag().await;
        r
    }
    async fn history(&self, table: &str, key: &Item) -> StoreResult<Vec<AuditEntry>> {
        self.inner.history(table, key).await
    }
    async fn put_gap(&self, gap: &Gap) -> StoreResult<PutOutcome> {
        self.lag().await;
        self.inner.put_gap(gap).await
    }
    async fn gaps(&self) -> StoreResult<Vec<Gap>> {
        self.inner.gaps().await
    }
    async fn put_linked_entry(
        &self,
        entry: &AuditEntry,
        link: &ddb_audit::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.lag().await;
        let r = self.inner.put_linked_entry(entry, link).await;
        self.lag().await;
        r
    }
    async fn gap_link(&self, gap: &Gap) -> StoreResult<Option<ddb_audit::proof::Link>> {
        self.inner.gap_link(gap).await
    }
    async fn put_linked_gap(
        &self,
        gap: &Gap,
        link: &ddb_audit::proof::Link,
    ) -> StoreResult<PutOutcome> {
        self.lag().await;
        self.inner.put_linked_gap(gap, link).await
    }
}

impl CheckpointStore for LaggyStore {
    async fn load_shards(&self, stream_arn: &str) -> StoreResult<Vec<ShardCheckpoint>> {
        self.lag().await;
        self.inner.load_shards(stream_arn).await
    }
    async fn save_shard(&self, checkpoint: &ShardCheckpoint) -> StoreResult<()> {
        self.lag().await;
        let r = self.inner.save_shard(checkpoint).await;
        self.lag().await;
        r
    }
    async fn save_stream(&self, row: &StreamRow) -> StoreResult<()> {
        self.inner.save_stream(row).await
    }
    async fn load_streams(&self, table: Option<&str>) -> StoreResult<Vec<StreamRow>> {
        self.inner.load_streams(table).await
    }
    async fn save_table_health(&self, row: &TableHealthRow) -> StoreResult<()> {
        self.inner.save_table_health(row).await
    }
    async fn load_table_health(&self, table: &str) -> StoreResult<Option<TableHealthRow>> {
        self.inner.load_table_health(table).await
    }
}
