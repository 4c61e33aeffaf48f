//! In-memory checkpoint and audit stores with the same write-once semantics as
//! the DynamoDB ones, for tests and benchmarks. State survives a "crash" of
//! the daemon under test: drop the daemon, keep the store, start again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::entry::{AuditEntry, Gap};
use crate::store::{
    AuditStore, CheckpointStore, PutOutcome, ShardCheckpoint, StoreResult, StreamRow,
    TableHealthRow,
};
use crate::stream::{cmp_sequence, stream_label};
use crate::value::Item;

#[derive(Default)]
struct State {
    /// (table, canonical key) → (stream label, padded sequence) → entry.
    entries: HashMap<(String, String), BTreeMap<(String, String), AuditEntry>>,
    gaps: BTreeMap<(String, String, String, String), Gap>,
    shards: HashMap<String, BTreeMap<String, ShardCheckpoint>>,
    streams: BTreeMap<(String, String), StreamRow>,
    health: BTreeMap<String, TableHealthRow>,
    entry_puts: u64,
    duplicate_puts: u64,
    /// (shard id, sequence number) of each entry written, in write order.
    write_order: Vec<(String, String)>,
}

/// Both stores in one, cheap to clone (clones share state).
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every mutation is a single insert), so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every entry, in (table, key, stream order).
    pub fn all_entries(&self) -> Vec<AuditEntry> {
        let state = self.lock();
        let mut keys: Vec<_> = state.entries.keys().cloned().collect();
        keys.sort();
        keys.iter()
            .flat_map(|k| state.entries[k].values().cloned().collect::<Vec<_>>())
            .collect()
    }

    pub fn entry_count(&self) -> usize {
        self.lock().entries.values().map(BTreeMap::len).sum()
    }

    /// Puts that found their entry already written (redeliveries).
    pub fn duplicate_puts(&self) -> u64 {
        self.lock().duplicate_puts
    }

    pub fn entry_puts(&self) -> u64 {
        self.lock().entry_puts
    }

    /// (shard id, sequence number) of every entry, in the order written.
    pub fn write_order(&self) -> Vec<(String, String)> {
        self.lock().write_order.clone()
    }

    pub fn checkpoints(&self, stream_arn: &str) -> Vec<ShardCheckpoint> {
        self.lock()
            .shards
            .get(stream_arn)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The canonical form of an item key: DynamoDB JSON with sorted names.
pub fn canonical_key(key: &Item) -> String {
    format!("{key:?}")
}

fn entry_sort_key(entry: &AuditEntry) -> (String, String) {
    (
        stream_label(&entry.stream_arn).to_string(),
        format!("{:0>40}", entry.sequence_number),
    )
}

impl AuditStore for MemoryStore {
    async fn put_entry(&self, entry: &AuditEntry) -> StoreResult<PutOutcome> {
        let mut state = self.lock();
        state.entry_puts += 1;
        let item = (entry.table.clone(), canonical_key(&entry.key));
        let sort = entry_sort_key(entry);
        let slot = state.entries.entry(item).or_default();
        if slot.contains_key(&sort) {
            state.duplicate_puts += 1;
            return Ok(PutOutcome::AlreadyPresent);
        }
        slot.insert(sort, entry.clone());
        state
            .write_order
            .push((entry.shard_id.clone(), entry.sequence_number.clone()));
        Ok(PutOutcome::Written)
    }

    async fn history(&self, table: &str, key: &Item) -> StoreResult<Vec<AuditEntry>> {
        let state = self.lock();
        Ok(state
            .entries
            .get(&(table.to_string(), canonical_key(key)))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_gap(&self, gap: &Gap) -> StoreResult<PutOutcome> {
        let mut state = self.lock();
        let id = (
            gap.table.clone(),
            gap.stream_arn.clone(),
            gap.shard_id.clone(),
            gap.after_sequence_number.clone().unwrap_or_default(),
        );
        if state.gaps.contains_key(&id) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        state.gaps.insert(id, gap.clone());
        Ok(PutOutcome::Written)
    }

    async fn gaps(&self) -> StoreResult<Vec<Gap>> {
        Ok(self.lock().gaps.values().cloned().collect())
    }
}

impl CheckpointStore for MemoryStore {
    async fn load_shards(&self, stream_arn: &str) -> StoreResult<Vec<ShardCheckpoint>> {
        Ok(self.checkpoints(stream_arn))
    }

    async fn save_shard(&self, checkpoint: &ShardCheckpoint) -> StoreResult<()> {
        let mut state = self.lock();
        let shards = state
            .shards
            .entry(checkpoint.stream_arn.clone())
            .or_default();
        // Same rule as the DynamoDB store's condition: a checkpoint never
        // moves backwards, and drained is final.
        if let Some(existing) = shards.get(&checkpoint.shard_id) {
            let backwards = match (&existing.sequence_no, &checkpoint.sequence_no) {
                (Some(old), Some(new)) => cmp_sequence(new, old).is_lt(),
                (Some(_), None) => true,
                _ => false,
            };
            let undrains = existing.status == crate::store::ShardStatus::Drained
                && checkpoint.status != crate::store::ShardStatus::Drained;
            if backwards || undrains {
                tracing::warn!(shard = %checkpoint.shard_id, "checkpoint already further; kept");
                return Ok(());
            }
        }
        shards.insert(checkpoint.shard_id.clone(), checkpoint.clone());
        Ok(())
    }

    async fn save_stream(&self, row: &StreamRow) -> StoreResult<()> {
        self.lock().streams.insert(
            (row.table_name.clone(), row.stream_arn.clone()),
            row.clone(),
        );
        Ok(())
    }

    async fn save_table_health(&self, row: &TableHealthRow) -> StoreResult<()> {
        self.lock()
            .health
            .insert(row.table_name.clone(), row.clone());
        Ok(())
    }

    async fn load_table_health(&self, table: &str) -> StoreResult<Option<TableHealthRow>> {
        Ok(self.lock().health.get(table).cloned())
    }

    async fn load_streams(&self, table: Option<&str>) -> StoreResult<Vec<StreamRow>> {
        Ok(self
            .lock()
            .streams
            .values()
            .filter(|r| table.is_none_or(|t| r.table_name == t))
            .cloned()
            .collect())
    }
}
