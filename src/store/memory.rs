//! In-memory checkpoint and audit stores with the same write-once semantics as
//! the DynamoDB ones, for tests and benchmarks. State survives a "crash" of
//! the daemon under test: drop the daemon, keep the store, start again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::entry::{AuditEntry, Gap};
use crate::store::{
    index_attrs, AuditStore, CheckpointStore, HistoryPage, Index, IndexHit, IndexPage, Position,
    PutOutcome, ReadCost, ReadStore, ShardCheckpoint, StoreResult, StreamRow, TableHealthRow,
    TsRange,
};
use crate::stream::{cmp_sequence, stream_label};
use crate::value::Item;

#[derive(Default)]
struct State {
    /// (table, canonical key) → (stream label, padded sequence) → entry.
    entries: HashMap<(String, String), BTreeMap<(String, String), AuditEntry>>,
    gaps: BTreeMap<(String, String, String, String), Gap>,
    shards: HashMap<String, BTreeMap<String, ShardCheckpoint>>,
    /// When each drained shard row expires (tokio's clock, so paused tests
    /// see it age): `DRAINED_SHARD_ROW_TTL` after it was first saved
    /// drained, or sooner once released. As with DynamoDB's TTL, it is gone
    /// then.
    expires_at: HashMap<(String, String), tokio::time::Instant>,
    streams: BTreeMap<(String, String), StreamRow>,
    health: BTreeMap<String, TableHealthRow>,
    entry_puts: u64,
    duplicate_puts: u64,
    /// (shard id, sequence number) of each entry written, in write order.
    write_order: Vec<(String, String)>,
    read_cost: ReadCost,
    /// Chain links as first written: (stream, shard, sequence, is gap).
    links: HashMap<(String, String, String, bool), crate::proof::Link>,
    /// Digests: (stream, number) → digest; and the newest written per stream.
    digests: BTreeMap<(String, u64), crate::proof::digest::SignedDigest>,
    newest_digest: HashMap<String, (u64, String)>,
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
        let mut guard = self.lock();
        let state = &mut *guard;
        let now = tokio::time::Instant::now();
        let expired: Vec<String> = state
            .expires_at
            .iter()
            .filter(|((arn, _), at)| arn == stream_arn && now >= **at)
            .map(|((_, id), _)| id.clone())
            .collect();
        for id in expired {
            state
                .expires_at
                .remove(&(stream_arn.to_string(), id.clone()));
            if let Some(rows) = state.shards.get_mut(stream_arn) {
                rows.remove(&id);
            }
        }
        state
            .shards
            .get(stream_arn)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// The canonical form of an item key: DynamoDB JSON with sorted names.
pub fn canonical_key(key: &Item) -> String {
    // The DynamoDB store's form, so both stores agree that N:1.5 and N:1.50
    // are one key.
    crate::value::canonical_key_json(key)
}

fn entry_sort_key(entry: &AuditEntry) -> (String, String) {
    (
        stream_label(&entry.stream_arn).to_string(),
        format!("{:0>40}", entry.sequence_number),
    )
}

impl MemoryStore {
    /// What `verify` would gather from this store, per stream.
    pub fn proof_evidence(&self) -> Vec<crate::proof::verify::StreamEvidence> {
        use crate::proof::chain::{document_hash, entry_document, gap_document};
        use crate::proof::verify::{CheckpointEvidence, FoundDigest, Leaf, StreamEvidence};
        let state = self.lock();
        let mut streams: BTreeMap<String, StreamEvidence> = BTreeMap::new();
        let mut collected: Vec<(String, String, Leaf)> = Vec::new();
        for entry in state.entries.values().flat_map(|m| m.values()) {
            let link = state.links.get(&(
                entry.stream_arn.clone(),
                entry.shard_id.clone(),
                entry.sequence_number.clone(),
                false,
            ));
            let prev = link.and_then(|l| l.prev_hash);
            let value = serde_json::to_value(entry).unwrap_or_default();
            collected.push((
                entry.table.clone(),
                entry.stream_arn.clone(),
                Leaf {
                    is_gap: false,
                    shard_id: entry.shard_id.clone(),
                    sequence_number: entry.sequence_number.clone(),
                    key: serde_json::to_string(&entry.key).ok(),
                    stored_hash: link.map(|l| l.hash),
                    prev_hash: prev,
                    content_hash: document_hash(&entry_document(
                        &entry.stream_arn,
                        &value,
                        prev.as_ref(),
                    ))
                    .ok(),
                    expires: false,
                    rejected: crate::proof::verify::is_rejected_marker(&value),
                },
            ));
        }
        for gap in state.gaps.values() {
            let after = gap.after_sequence_number.clone().unwrap_or_default();
            let link = state.links.get(&(
                gap.stream_arn.clone(),
                gap.shard_id.clone(),
                after.clone(),
                true,
            ));
            let prev = link.and_then(|l| l.prev_hash);
            let value = serde_json::to_value(gap).unwrap_or_default();
            collected.push((
                gap.table.clone(),
                gap.stream_arn.clone(),
                Leaf {
                    is_gap: true,
                    shard_id: gap.shard_id.clone(),
                    sequence_number: after,
                    key: None,
                    stored_hash: link.map(|l| l.hash),
                    prev_hash: prev,
                    content_hash: document_hash(&gap_document(&value, prev.as_ref())).ok(),
                    expires: false,
                    rejected: crate::proof::verify::is_rejected_marker(&value),
                },
            ));
        }
        for (table, arn, leaf) in collected {
            streams
                .entry(arn.clone())
                .or_insert_with(|| StreamEvidence {
                    table: table.clone(),
                    stream_arn: arn.clone(),
                    ..Default::default()
                })
                .leaves
                .push(leaf);
        }
        for ((arn, number), signed) in &state.digests {
            if let Some(e) = streams.get_mut(arn) {
                e.digests.push(FoundDigest {
                    number: *number,
                    signed: signed.clone(),
                });
            }
        }
        for (arn, shards) in &state.shards {
            let Some(first) = shards.values().next() else {
                continue;
            };
            let e = streams
                .entry(arn.clone())
                .or_insert_with(|| StreamEvidence {
                    table: first.table.clone(),
                    stream_arn: arn.clone(),
                    ..Default::default()
                });
            e.newest_digest = state.newest_digest.get(arn).cloned();
            for cp in shards.values() {
                e.checkpoints.push(CheckpointEvidence {
                    shard_id: cp.shard_id.clone(),
                    parent_shard_id: cp.parent_shard_id.clone(),
                    chain: cp.chain.clone(),
                    sequence_no: cp.sequence_no.clone(),
                });
            }
        }
        streams.into_values().collect()
    }
}

impl crate::store::ProofStore for MemoryStore {
    async fn newest_digest(
        &self,
        stream_arn: &str,
    ) -> StoreResult<Option<(u64, crate::proof::digest::SignedDigest)>> {
        let state = self.lock();
        Ok(state
            .digests
            .range((stream_arn.to_string(), 0)..=(stream_arn.to_string(), u64::MAX))
            .next_back()
            .map(|((_, n), d)| (*n, d.clone())))
    }

    async fn put_digest(
        &self,
        _table: &str,
        stream_arn: &str,
        number: u64,
        digest: &crate::proof::digest::SignedDigest,
    ) -> StoreResult<PutOutcome> {
        let mut state = self.lock();
        let id = (stream_arn.to_string(), number);
        if state.digests.contains_key(&id) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        state.digests.insert(id, digest.clone());
        Ok(PutOutcome::Written)
    }

    async fn record_newest_digest(
        &self,
        _table: &str,
        stream_arn: &str,
        number: u64,
        hash: &str,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let slot = state
            .newest_digest
            .entry(stream_arn.to_string())
            .or_insert((0, String::new()));
        if slot.0 < number {
            *slot = (number, hash.to_string());
        }
        Ok(())
    }
}

impl AuditStore for MemoryStore {
    async fn put_linked_entry(
        &self,
        entry: &AuditEntry,
        link: &crate::proof::Link,
    ) -> StoreResult<PutOutcome> {
        let outcome = self.put_entry(entry).await?;
        if outcome == PutOutcome::Written {
            self.lock().links.insert(
                (
                    entry.stream_arn.clone(),
                    entry.shard_id.clone(),
                    entry.sequence_number.clone(),
                    false,
                ),
                *link,
            );
        }
        Ok(outcome)
    }

    async fn gap_link(&self, gap: &Gap) -> StoreResult<Option<crate::proof::Link>> {
        Ok(self
            .lock()
            .links
            .get(&(
                gap.stream_arn.clone(),
                gap.shard_id.clone(),
                gap.after_sequence_number.clone().unwrap_or_default(),
                true,
            ))
            .copied())
    }

    async fn put_linked_gap(
        &self,
        gap: &Gap,
        link: &crate::proof::Link,
    ) -> StoreResult<PutOutcome> {
        let outcome = self.put_gap(gap).await?;
        if outcome == PutOutcome::Written {
            self.lock().links.insert(
                (
                    gap.stream_arn.clone(),
                    gap.shard_id.clone(),
                    gap.after_sequence_number.clone().unwrap_or_default(),
                    true,
                ),
                *link,
            );
        }
        Ok(outcome)
    }

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

    async fn load_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
    ) -> StoreResult<Option<ShardCheckpoint>> {
        let state = self.lock();
        let key = (stream_arn.to_string(), shard_id.to_string());
        let expired = state
            .expires_at
            .get(&key)
            .is_some_and(|at| tokio::time::Instant::now() >= *at);
        if expired {
            return Ok(None);
        }
        Ok(state
            .shards
            .get(stream_arn)
            .and_then(|rows| rows.get(shard_id))
            .cloned())
    }

    async fn save_shard(&self, checkpoint: &ShardCheckpoint) -> StoreResult<()> {
        if let Some(seq) = &checkpoint.sequence_no {
            // As the DynamoDB store: no store could resume after it.
            if !crate::stream::is_sequence_number(seq) {
                return Err(crate::store::StoreError::Other(format!(
                    "shard {} of {}: {seq:?} is not a sequence number; refusing to checkpoint it",
                    checkpoint.shard_id, checkpoint.stream_arn
                )));
            }
        }
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
        if checkpoint.status == crate::store::ShardStatus::Drained {
            state
                .expires_at
                .entry((checkpoint.stream_arn.clone(), checkpoint.shard_id.clone()))
                .or_insert_with(|| {
                    tokio::time::Instant::now() + crate::store::dynamo::DRAINED_SHARD_ROW_TTL
                });
        }
        Ok(())
    }

    async fn release_shard(
        &self,
        stream_arn: &str,
        shard_id: &str,
        after: std::time::Duration,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let at = tokio::time::Instant::now() + after;
        // Only drained rows carry an expiry, so only they are released.
        if let Some(expires) = state
            .expires_at
            .get_mut(&(stream_arn.to_string(), shard_id.to_string()))
        {
            *expires = (*expires).min(at);
        }
        Ok(())
    }

    async fn save_stream(&self, row: &StreamRow) -> StoreResult<()> {
        let mut state = self.lock();
        let id = (row.table_name.clone(), row.stream_arn.clone());
        // As the DynamoDB store's condition: a drained stream stays drained.
        if state.streams.get(&id).is_some_and(|r| r.drained) && !row.drained {
            return Ok(());
        }
        state.streams.insert(id, row.clone());
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

fn sort_key_text(sort: &(String, String)) -> String {
    format!("{}#{}", sort.0, sort.1)
}

fn position(pairs: &[(&str, &str)]) -> Position {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The same index layout as the DynamoDB store, computed over every entry
/// (a test double: cost is counted as if it were an index).
impl ReadStore for MemoryStore {
    async fn index_page(
        &self,
        index: Index,
        partition: &str,
        range: &TsRange,
        descending: bool,
        after: Option<&Position>,
        limit: usize,
    ) -> StoreResult<IndexPage> {
        let mut state = self.lock();
        state.read_cost.query_calls += 1;
        let mut rows: Vec<(String, String, String, String)> = Vec::new();
        for ((table, key), entries) in &state.entries {
            let pk = format!("{table}|{key}");
            for (sort, entry) in entries {
                let attrs = index_attrs(entry, key, chrono::DateTime::UNIX_EPOCH);
                let listed = attrs
                    .keys
                    .iter()
                    .any(|(i, v)| *i == index && v == partition);
                if listed && range.contains(&attrs.ts) {
                    rows.push((
                        attrs.ts,
                        pk.clone(),
                        sort_key_text(sort),
                        entry.event.clone(),
                    ));
                }
            }
        }
        rows.sort();
        if descending {
            rows.reverse();
        }
        let start = after.map(|p| {
            let at = (
                p.get("ts").cloned().unwrap_or_default(),
                p.get("pk").cloned().unwrap_or_default(),
                p.get("sk").cloned().unwrap_or_default(),
            );
            rows.iter()
                .position(|r| {
                    let here = (r.0.clone(), r.1.clone(), r.2.clone());
                    if descending {
                        here < at
                    } else {
                        here > at
                    }
                })
                .unwrap_or(rows.len())
        });
        let rest = &rows[start.unwrap_or(0)..];
        let hits: Vec<IndexHit> = rest
            .iter()
            .take(limit)
            .map(|(ts, pk, sk, event)| IndexHit {
                pk: pk.clone(),
                sk: sk.clone(),
                ts: ts.clone(),
                event: Some(event.clone()),
                position: position(&[("ts", ts), ("pk", pk), ("sk", sk)]),
            })
            .collect();
        state.read_cost.items_read += hits.len() as u64;
        let next = (rest.len() > limit)
            .then(|| hits.last().map(|h| h.position.clone()))
            .flatten();
        Ok(IndexPage { hits, next })
    }

    async fn fetch_entries(
        &self,
        refs: &[(String, String)],
    ) -> StoreResult<Vec<Option<AuditEntry>>> {
        let mut state = self.lock();
        state.read_cost.batch_get_calls += refs.len().div_ceil(100) as u64;
        state.read_cost.items_read += refs.len() as u64;
        Ok(refs
            .iter()
            .map(|(pk, sk)| {
                let (table, key) = pk.split_once('|')?;
                let (label, seq) = sk.rsplit_once('#')?;
                state
                    .entries
                    .get(&(table.to_string(), key.to_string()))?
                    .get(&(label.to_string(), seq.to_string()))
                    .cloned()
            })
            .collect())
    }

    async fn history_page(
        &self,
        table: &str,
        key: &Item,
        descending: bool,
        after: Option<&Position>,
        limit: usize,
    ) -> StoreResult<HistoryPage> {
        let mut state = self.lock();
        state.read_cost.query_calls += 1;
        let mut rows: Vec<(String, AuditEntry)> = state
            .entries
            .get(&(table.to_string(), canonical_key(key)))
            .map(|m| {
                m.iter()
                    .map(|(s, e)| (sort_key_text(s), e.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if descending {
            rows.reverse();
        }
        if let Some(at) = after.and_then(|p| p.get("sk")) {
            rows.retain(|(sk, _)| if descending { sk < at } else { sk > at });
        }
        let more = rows.len() > limit;
        rows.truncate(limit);
        state.read_cost.items_read += rows.len() as u64;
        let entries: Vec<(AuditEntry, Position)> = rows
            .into_iter()
            .map(|(sk, e)| (e, position(&[("sk", &sk)])))
            .collect();
        let next = more
            .then(|| entries.last().map(|(_, p)| p.clone()))
            .flatten();
        Ok(HistoryPage { entries, next })
    }

    fn read_cost(&self) -> ReadCost {
        self.lock().read_cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::dynamo::{DRAINED_SHARD_ROW_TTL, RELEASED_SHARD_ROW_TTL};
    use crate::store::ShardStatus;
    use std::time::Duration;

    fn row(shard: &str, status: ShardStatus) -> ShardCheckpoint {
        ShardCheckpoint {
            stream_arn: "arn:s".into(),
            shard_id: shard.into(),
            table: "orders".into(),
            parent_shard_id: None,
            sequence_no: Some("100".into()),
            status,
            updated_at: chrono::Utc::now(),
            caught_up: false,
            from_start: false,
            chain: None,
            lineage_tail: None,
            last_record_time: None,
        }
    }

    /// As DynamoDB's TTL: a drained row is gone, by id and from the listing,
    /// once its TTL has passed; an open row stays.
    #[tokio::test(start_paused = true)]
    async fn drained_rows_expire_after_their_ttl_and_open_rows_stay() {
        let store = MemoryStore::new();
        store
            .save_shard(&row("drained", ShardStatus::Drained))
            .await
            .unwrap();
        store
            .save_shard(&row("open", ShardStatus::Open))
            .await
            .unwrap();
        tokio::time::advance(DRAINED_SHARD_ROW_TTL - Duration::from_secs(1)).await;
        assert!(store
            .load_shard("arn:s", "drained")
            .await
            .unwrap()
            .is_some());
        assert_eq!(store.load_shards("arn:s").await.unwrap().len(), 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.load_shard("arn:s", "drained").await.unwrap(), None);
        let left = store.load_shards("arn:s").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].shard_id, "open");
        assert!(store.load_shard("arn:s", "open").await.unwrap().is_some());
    }

    /// Releasing shortens a drained row's life, never lengthens it, and
    /// leaves a row that is not drained alone.
    #[tokio::test(start_paused = true)]
    async fn a_released_drained_row_expires_a_day_later_and_an_open_one_never() {
        let store = MemoryStore::new();
        store
            .save_shard(&row("d", ShardStatus::Drained))
            .await
            .unwrap();
        store
            .save_shard(&row("o", ShardStatus::Open))
            .await
            .unwrap();
        store
            .release_shard("arn:s", "d", RELEASED_SHARD_ROW_TTL)
            .await
            .unwrap();
        store
            .release_shard("arn:s", "o", RELEASED_SHARD_ROW_TTL)
            .await
            .unwrap();
        // A longer release does not undo the shorter one.
        store
            .release_shard("arn:s", "d", DRAINED_SHARD_ROW_TTL)
            .await
            .unwrap();
        tokio::time::advance(RELEASED_SHARD_ROW_TTL).await;
        assert_eq!(store.load_shard("arn:s", "d").await.unwrap(), None);
        tokio::time::advance(DRAINED_SHARD_ROW_TTL).await;
        let left = store.load_shards("arn:s").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].shard_id, "o");
    }
}
