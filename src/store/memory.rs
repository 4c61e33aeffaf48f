//! In-memory checkpoint, audit, proof and snapshot stores, write-once as the
//! DynamoDB ones, for tests and benchmarks. State survives a "crash" of the
//! daemon under test: drop the daemon, keep the store, start again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::entry::{AuditEntry, Gap};
use crate::proof::digest::SignedDigest;
use crate::proof::{Hash, Link};
use crate::store::evidence::{ChainRow, EvidenceReads, TrailRecord};
use crate::store::layout::{encode_entry, entry_sort_key};
use crate::store::{
    index_attrs, segment_chain_id, AuditStore, CheckpointStore, HistoryPage, HistoryRequest,
    IndexHit, IndexPage, IndexRequest, Position, PutOutcome, ReadCost, ReadStore, ScanPage,
    ScanRequest, SegmentProgress, ShardCheckpoint, SnapshotRun, SnapshotStore, SourceInfo,
    StoreError, StoreResult, StreamRow, TableHealthRow,
};
use crate::stream::cmp_sequence;
use crate::value::Item;

/// An entry as stored, with what the DynamoDB store keeps beside it.
#[derive(Clone)]
struct Stored {
    entry: AuditEntry,
    link: Option<Link>,
    /// A SNAPSHOT entry's chain and place in it: (segment chain id, position).
    place: Option<(String, u64)>,
}

/// A source table a snapshot reads: its key names and its items, by
/// canonical key.
#[derive(Default)]
struct Source {
    key_names: Vec<String>,
    items: BTreeMap<String, Item>,
}

/// A table's snapshot bookkeeping: the latest run's row, and each segment's
/// row with the run that saved it last (as the DynamoDB store's rows, keyed
/// by segment alone).
#[derive(Default)]
struct Snapshots {
    run: Option<SnapshotRun>,
    segments: BTreeMap<u32, (String, SegmentProgress)>,
}

#[derive(Default)]
struct State {
    /// (table, canonical key) → the entry's sort key in the audit table
    /// (`layout::entry_sort_key`) → entry.
    entries: HashMap<(String, String), BTreeMap<String, Stored>>,
    gaps: BTreeMap<(String, String, String, String), Gap>,
    /// Gap chain links as first written: (stream, shard, position).
    gap_links: HashMap<(String, String, String), Link>,
    shards: HashMap<String, BTreeMap<String, ShardCheckpoint>>,
    /// When each drained shard row expires (tokio's clock, so paused tests
    /// see it age): `DRAINED_SHARD_ROW_TTL` after it was first saved
    /// drained, or sooner once released. As with DynamoDB's TTL, it is gone
    /// then.
    expires_at: HashMap<(String, String), tokio::time::Instant>,
    streams: BTreeMap<(String, String), StreamRow>,
    fresh_items: HashMap<(String, String), bool>,
    health: BTreeMap<String, TableHealthRow>,
    entry_puts: u64,
    duplicate_puts: u64,
    /// Reads the item chain made on a cache miss.
    item_predecessor_reads: u64,
    /// (shard id, sequence number) of each entry written, in write order.
    write_order: Vec<(String, String)>,
    read_cost: ReadCost,
    /// Digests: (stream, number) → (table, digest).
    digests: BTreeMap<(String, u64), (String, SignedDigest)>,
    /// The newest digest recorded per (table, stream): the DynamoDB store's
    /// pointer on the stream's row.
    newest_digest: BTreeMap<(String, String), (u64, String)>,
    sources: HashMap<String, Source>,
    snapshots: HashMap<String, Snapshots>,
    /// Each stream's lease (owner, epoch), as the DynamoDB store keeps them
    /// on the stream's row.
    leases: HashMap<String, (Option<String>, u64)>,
    /// The epoch of each shard row's last fenced writer.
    row_epochs: HashMap<(String, String), u64>,
    /// Heartbeat rows by replica.
    replicas: BTreeMap<String, crate::store::ReplicaBeat>,
    /// Lease and heartbeat writes (takes, releases, beats), for tests that
    /// count what leasing costs.
    lease_writes: u64,
}

/// Every store in one, cheap to clone (clones share state).
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
            .flat_map(|k| {
                state.entries[k]
                    .values()
                    .map(|s| s.entry.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Lease and heartbeat writes so far.
    pub fn lease_writes(&self) -> u64 {
        self.lock().lease_writes
    }

    /// Who owns each stream's lease now, and at which epoch.
    pub fn lease_of(&self, stream_arn: &str) -> (Option<String>, u64) {
        self.lock()
            .leases
            .get(stream_arn)
            .cloned()
            .unwrap_or((None, 0))
    }

    fn holds(state: &State, fence: &crate::store::Fence) -> crate::store::StoreResult<()> {
        match state.leases.get(&fence.stream_arn) {
            Some((Some(owner), epoch)) if *owner == fence.owner && *epoch == fence.epoch => Ok(()),
            _ => Err(StoreError::Fenced {
                stream_arn: fence.stream_arn.clone(),
                epoch: fence.epoch,
            }),
        }
    }

    pub fn entry_count(&self) -> usize {
        self.lock().entries.values().map(BTreeMap::len).sum()
    }

    /// Puts that found their entry already written (redeliveries).
    pub fn duplicate_puts(&self) -> u64 {
        self.lock().duplicate_puts
    }

    /// Reads of an item's previous entry made so far (item chain cache misses).
    pub fn item_predecessor_reads(&self) -> u64 {
        self.lock().item_predecessor_reads
    }

    /// Removes one stored entry, as someone with write access to the audit
    /// table could: tests of what `verify` finds.
    pub fn tamper_delete_entry(&self, table: &str, key: &Item, sequence_number: &str) -> bool {
        self.tamper_item(table, key, |m| {
            let before = m.len();
            m.retain(|_, s| s.entry.sequence_number != sequence_number);
            m.len() != before
        })
    }

    /// Runs `edit` on one item's stored entries (false: no such item).
    fn tamper_item(
        &self,
        table: &str,
        key: &Item,
        edit: impl FnOnce(&mut BTreeMap<String, Stored>) -> bool,
    ) -> bool {
        let mut state = self.lock();
        let item = (table.to_string(), canonical_key(key));
        state.entries.get_mut(&item).is_some_and(edit)
    }

    /// Swaps what two stored entries of one item hold (their changes, item
    /// links and chain links), each keeping its place (sort key and
    /// sequence number), as an edit of the audit table that reorders the
    /// item's history would. Tests of what `verify` finds.
    pub fn tamper_swap_entries(&self, table: &str, key: &Item, a: &str, b: &str) -> bool {
        self.tamper_item(table, key, |m| {
            let find = |m: &BTreeMap<String, Stored>, seq: &str| {
                m.iter()
                    .find(|(_, s)| s.entry.sequence_number == seq)
                    .map(|(k, _)| k.clone())
            };
            let (Some(ka), Some(kb)) = (find(m, a), find(m, b)) else {
                return false;
            };
            let (Some(sa), Some(sb)) = (m.get(&ka).cloned(), m.get(&kb).cloned()) else {
                return false;
            };
            for (slot, from) in [(&ka, &sb), (&kb, &sa)] {
                if let Some(s) = m.get_mut(slot) {
                    s.entry.changes = from.entry.changes.clone();
                    s.entry.item_prev = from.entry.item_prev.clone();
                    s.link = from.link;
                }
            }
            true
        })
    }

    /// Rewrites every stored entry without its `item_prev`, rehashing the
    /// shard chains, as a daemon that predates the item chain wrote them;
    /// returns how many entries it rewrote. Tests of trails written by
    /// earlier versions.
    pub fn strip_item_links(&self) -> usize {
        let mut state = self.lock();
        let mut stored: Vec<&mut Stored> = state
            .entries
            .values_mut()
            .flat_map(|m| m.values_mut())
            .filter(|s| s.place.is_none())
            .collect();
        stored.sort_by(|a, b| {
            (&a.entry.stream_arn, &a.entry.shard_id)
                .cmp(&(&b.entry.stream_arn, &b.entry.shard_id))
                .then(cmp_sequence(
                    &a.entry.sequence_number,
                    &b.entry.sequence_number,
                ))
        });
        // Rehashed in shard order: a leaf's hash commits to the one before.
        let mut rehashed: HashMap<Hash, Hash> = HashMap::new();
        let mut count = 0;
        for s in stored {
            s.entry.item_prev = None;
            let Some(link) = s.link else { continue };
            let prev = link.prev_hash.map(|p| *rehashed.get(&p).unwrap_or(&p));
            let Ok(hash) = crate::proof::chain::hash_entry(&s.entry, prev.as_ref()) else {
                continue;
            };
            rehashed.insert(link.hash, hash);
            s.link = Some(Link {
                prev_hash: prev,
                hash,
            });
            count += 1;
        }
        // The checkpoints' chains end at the rewritten hashes.
        for rows in state.shards.values_mut() {
            for cp in rows.values_mut() {
                if let Some(chain) = cp.chain.as_mut() {
                    if let Some(h) = chain.last_hash.and_then(|h| rehashed.get(&h).copied()) {
                        chain.last_hash = Some(h);
                    }
                }
            }
        }
        count
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

    /// Adds `item` to the source table `table` (created with `key_names` on
    /// first use), for `snapshot` to read.
    pub fn put_source_item(&self, table: &str, key_names: &[&str], item: Item) {
        let mut state = self.lock();
        let source = state
            .sources
            .entry(table.to_string())
            .or_insert_with(|| Source {
                key_names: key_names.iter().map(|k| k.to_string()).collect(),
                items: BTreeMap::new(),
            });
        let key = source_key(&source.key_names, &item);
        source.items.insert(canonical_key(&key), item);
    }

    /// What `verify` would gather from this store, per stream: the one
    /// assembler production runs, on this store's reads (which never wait).
    pub fn proof_evidence(&self) -> Vec<crate::proof::verify::StreamEvidence> {
        use futures_util::FutureExt;
        crate::store::evidence::gather(self, None, |_| {})
            .now_or_never()
            .expect("the memory store's reads never wait")
            .unwrap_or_default()
    }

    /// The write-once put of every entry: `link` and `place` are kept with
    /// it as first written.
    fn put_stored(
        &self,
        entry: &AuditEntry,
        link: Option<&Link>,
        place: Option<(String, u64)>,
    ) -> PutOutcome {
        let mut state = self.lock();
        state.entry_puts += 1;
        let item = (entry.table.clone(), canonical_key(&entry.key));
        let sort = entry_sort_key(&entry.stream_arn, &entry.sequence_number);
        let slot = state.entries.entry(item).or_default();
        if slot.contains_key(&sort) {
            state.duplicate_puts += 1;
            return PutOutcome::AlreadyPresent;
        }
        slot.insert(
            sort,
            Stored {
                entry: entry.clone(),
                link: link.copied(),
                place,
            },
        );
        state
            .write_order
            .push((entry.shard_id.clone(), entry.sequence_number.clone()));
        PutOutcome::Written
    }
}

/// The canonical form of an item key: DynamoDB JSON with sorted names.
pub fn canonical_key(key: &Item) -> String {
    // The DynamoDB store's form, so both stores agree that N:1.5 and N:1.50
    // are one key.
    crate::value::canonical_key_json(key)
}

/// The key attributes of a source item.
fn source_key(key_names: &[String], item: &Item) -> Item {
    item.iter()
        .filter(|(k, _)| key_names.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A write-once gap.
fn put_gap_in(state: &mut State, gap: &Gap) -> PutOutcome {
    let id = (
        gap.table.clone(),
        gap.stream_arn.clone(),
        gap.shard_id.clone(),
        gap_position(gap),
    );
    if state.gaps.contains_key(&id) {
        return PutOutcome::AlreadyPresent;
    }
    state.gaps.insert(id, gap.clone());
    PutOutcome::Written
}

fn gap_link_key(gap: &Gap) -> (String, String, String) {
    (
        gap.stream_arn.clone(),
        gap.shard_id.clone(),
        gap_position(gap),
    )
}

/// Where a gap is in its shard, as its DynamoDB sort key says it.
fn gap_position(gap: &Gap) -> String {
    let after = gap.after_sequence_number.clone().unwrap_or_default();
    if gap.is_closing() {
        format!("{after}#closes")
    } else {
        after
    }
}

/// The raw reads `verify` assembles its evidence from, as the DynamoDB
/// store gives them: stream rows (and snapshot pointers), then every entry,
/// gap and digest once.
impl EvidenceReads for MemoryStore {
    async fn chain_rows(&self) -> StoreResult<Vec<ChainRow>> {
        let state = self.lock();
        // A stream's row exists once it is saved or its digest pointer is
        // recorded (DynamoDB's UpdateItem creates the row).
        let mut rows: BTreeMap<(String, String), Option<(u64, String)>> =
            state.streams.keys().map(|id| (id.clone(), None)).collect();
        for (id, pointer) in &state.newest_digest {
            rows.insert(id.clone(), Some(pointer.clone()));
        }
        Ok(rows
            .into_iter()
            .map(|((table, stream_arn), newest_digest)| ChainRow {
                table,
                stream_arn,
                newest_digest,
            })
            .collect())
    }

    async fn scan_trail(
        &self,
        mut visit: impl FnMut(TrailRecord) + Send,
        mut progress: impl FnMut(u64) + Send,
    ) -> StoreResult<()> {
        let state = self.lock();
        let mut read = 0u64;
        for stored in state.entries.values().flat_map(BTreeMap::values) {
            read += 1;
            let e = &stored.entry;
            let (chain_shard, chain_position) = match &stored.place {
                Some((segment, position)) => (segment.clone(), position.to_string()),
                None => (e.shard_id.clone(), e.sequence_number.clone()),
            };
            visit(TrailRecord::Entry {
                table: e.table.clone(),
                stream_arn: e.stream_arn.clone(),
                chain_shard,
                chain_position,
                json: encode_entry(e).ok(),
                hash: stored.link.map(|l| l.hash),
                prev_hash: stored.link.and_then(|l| l.prev_hash),
                expires: false,
            });
        }
        for gap in state.gaps.values() {
            read += 1;
            let link = state.gap_links.get(&gap_link_key(gap));
            visit(TrailRecord::Gap {
                table: gap.table.clone(),
                stream_arn: gap.stream_arn.clone(),
                chain_shard: gap.shard_id.clone(),
                json: serde_json::to_string(gap).ok(),
                hash: link.map(|l| l.hash),
                prev_hash: link.and_then(|l| l.prev_hash),
            });
        }
        for ((stream_arn, number), (table, signed)) in &state.digests {
            read += 1;
            visit(TrailRecord::Digest {
                table: table.clone(),
                stream_arn: stream_arn.clone(),
                number: *number,
                signed: signed.clone(),
            });
        }
        progress(read);
        Ok(())
    }
}

impl crate::store::ProofStore for MemoryStore {
    async fn newest_digest(&self, stream_arn: &str) -> StoreResult<Option<(u64, SignedDigest)>> {
        let state = self.lock();
        Ok(state
            .digests
            .range((stream_arn.to_string(), 0)..=(stream_arn.to_string(), u64::MAX))
            .next_back()
            .map(|((_, n), (_, d))| (*n, d.clone())))
    }

    async fn put_digest(
        &self,
        table: &str,
        stream_arn: &str,
        number: u64,
        digest: &SignedDigest,
    ) -> StoreResult<PutOutcome> {
        let mut state = self.lock();
        let id = (stream_arn.to_string(), number);
        if state.digests.contains_key(&id) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        state
            .digests
            .insert(id, (table.to_string(), digest.clone()));
        Ok(PutOutcome::Written)
    }

    async fn put_fenced_digest(
        &self,
        number: u64,
        digest: &SignedDigest,
        fence: &crate::store::Fence,
    ) -> StoreResult<PutOutcome> {
        let mut state = self.lock();
        Self::holds(&state, fence)?;
        let id = (fence.stream_arn.clone(), number);
        if state.digests.contains_key(&id) {
            return Ok(PutOutcome::AlreadyPresent);
        }
        state
            .digests
            .insert(id, (fence.table.clone(), digest.clone()));
        Ok(PutOutcome::Written)
    }

    async fn record_newest_digest(
        &self,
        table: &str,
        stream_arn: &str,
        number: u64,
        hash: &str,
    ) -> StoreResult<()> {
        let mut state = self.lock();
        let id = (table.to_string(), stream_arn.to_string());
        // As the DynamoDB store's condition: set when absent or older.
        if state
            .newest_digest
            .get(&id)
            .is_none_or(|(n, _)| *n < number)
        {
            state.newest_digest.insert(id, (number, hash.to_string()));
        }
        Ok(())
    }
}

impl AuditStore for MemoryStore {
    async fn put_linked_entry(&self, entry: &AuditEntry, link: &Link) -> StoreResult<PutOutcome> {
        Ok(self.put_stored(entry, Some(link), None))
    }

    async fn gap_link(&self, gap: &Gap) -> StoreResult<Option<Link>> {
        Ok(self.lock().gap_links.get(&gap_link_key(gap)).copied())
    }

    async fn put_linked_gap(&self, gap: &Gap, link: &Link) -> StoreResult<PutOutcome> {
        let outcome = self.put_gap(gap).await?;
        if outcome == PutOutcome::Written {
            self.lock().gap_links.insert(gap_link_key(gap), *link);
        }
        Ok(outcome)
    }

    async fn put_entry(&self, entry: &AuditEntry) -> StoreResult<PutOutcome> {
        Ok(self.put_stored(entry, None, None))
    }

    async fn history(&self, table: &str, key: &Item) -> StoreResult<Vec<AuditEntry>> {
        let state = self.lock();
        Ok(state
            .entries
            .get(&(table.to_string(), canonical_key(key)))
            .map(|m| m.values().map(|s| s.entry.clone()).collect())
            .unwrap_or_default())
    }

    async fn put_gap(&self, gap: &Gap) -> StoreResult<PutOutcome> {
        Ok(put_gap_in(&mut self.lock(), gap))
    }

    async fn gaps(&self) -> StoreResult<Vec<Gap>> {
        Ok(self.lock().gaps.values().cloned().collect())
    }

    async fn item_predecessor(
        &self,
        table: &str,
        key: &Item,
        before_sort_key: &str,
    ) -> StoreResult<Option<crate::store::ItemPredecessor>> {
        let mut state = self.lock();
        state.read_cost.query_calls += 1;
        state.item_predecessor_reads += 1;
        let found = state
            .entries
            .get(&(table.to_string(), canonical_key(key)))
            .and_then(|m| m.range(..before_sort_key.to_string()).next_back())
            .filter(|(_, s)| s.place.is_none() && !s.entry.sequence_number.is_empty())
            .map(|(sk, s)| crate::store::ItemPredecessor {
                sort_key: sk.clone(),
                sequence_number: s.entry.sequence_number.clone(),
                hash: s.link.map(|l| l.hash),
            });
        if found.is_some() {
            state.read_cost.items_read += 1;
        }
        Ok(found)
    }
}

/// The DynamoDB store's snapshot semantics over in-memory source tables
/// ([`MemoryStore::put_source_item`]): a segment is the items whose key
/// hashes to it, read in key order; run and segment rows are overwritten
/// as saved; SNAPSHOT entries are write-once.
impl SnapshotStore for MemoryStore {
    async fn describe_source(&self, table: &str) -> StoreResult<SourceInfo> {
        let state = self.lock();
        let source = state.sources.get(table).ok_or_else(|| {
            StoreError::Other(format!(
                "table {table} does not exist: name an audited table with --table"
            ))
        })?;
        Ok(SourceInfo {
            key_names: source.key_names.clone(),
            item_count: Some(source.items.len() as u64),
        })
    }

    async fn scan_page(&self, request: ScanRequest<'_>) -> StoreResult<ScanPage> {
        let ScanRequest {
            table,
            segment,
            segments,
            start,
            limit,
        } = request;
        let state = self.lock();
        let source = state
            .sources
            .get(table)
            .ok_or_else(|| StoreError::MissingTable {
                table: table.to_string(),
            })?;
        let after = start.map(canonical_key);
        let segments = u64::from(segments.max(1));
        let mut rest = source
            .items
            .iter()
            .filter(|(k, _)| crate::value::fnv1a64(k.as_bytes()) % segments == u64::from(segment))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a));
        let items: Vec<Item> = rest
            .by_ref()
            .take(limit.clamp(1, 10_000))
            .map(|(_, item)| item.clone())
            .collect();
        let more = rest.next().is_some();
        // Strongly consistent: one unit per 4 KB read, rounded up per page.
        let bytes: usize = items
            .iter()
            .map(|i| serde_json::to_string(i).map_or(0, |j| j.len()))
            .sum();
        Ok(ScanPage {
            next: more
                .then(|| items.last().map(|i| source_key(&source.key_names, i)))
                .flatten(),
            items,
            read_units: (bytes.div_ceil(4096)).max(1) as f64,
        })
    }

    async fn load_snapshot(
        &self,
        table: &str,
    ) -> StoreResult<Option<(SnapshotRun, Vec<SegmentProgress>)>> {
        let state = self.lock();
        let Some(rows) = state.snapshots.get(table) else {
            return Ok(None);
        };
        let Some(run) = rows.run.clone() else {
            return Ok(None);
        };
        let segments = rows
            .segments
            .values()
            .filter(|(run_id, _)| *run_id == run.run_id)
            .map(|(_, p)| p.clone())
            .collect();
        Ok(Some((run, segments)))
    }

    async fn save_snapshot_run(&self, run: &SnapshotRun) -> StoreResult<()> {
        self.lock()
            .snapshots
            .entry(run.table.clone())
            .or_default()
            .run = Some(run.clone());
        Ok(())
    }

    async fn save_segment(&self, run: &SnapshotRun, progress: &SegmentProgress) -> StoreResult<()> {
        self.lock()
            .snapshots
            .entry(run.table.clone())
            .or_default()
            .segments
            .insert(progress.segment, (run.run_id.clone(), progress.clone()));
        Ok(())
    }

    async fn put_snapshot_entry(
        &self,
        entry: &AuditEntry,
        link: &Link,
        segment: u32,
        position: u64,
    ) -> StoreResult<PutOutcome> {
        let place = (segment_chain_id(segment), position);
        Ok(self.put_stored(entry, Some(link), Some(place)))
    }

    async fn snapshot_entry_link(&self, entry: &AuditEntry) -> StoreResult<Option<Link>> {
        let state = self.lock();
        Ok(state
            .entries
            .get(&(entry.table.clone(), canonical_key(&entry.key)))
            .and_then(|m| m.get(&entry_sort_key(&entry.stream_arn, &entry.sequence_number)))
            .and_then(|s| s.link))
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
        self.save_row(checkpoint, None)
    }

    async fn beat(&self, beat: &crate::store::ReplicaBeat) -> StoreResult<()> {
        let mut state = self.lock();
        state.lease_writes += 1;
        state.replicas.insert(beat.replica.clone(), beat.clone());
        Ok(())
    }

    async fn task_lease(&self, name: &str) -> StoreResult<crate::store::Lease> {
        let stream_arn = crate::store::layout::task_lease_key(name);
        let (owner, epoch) = self
            .lock()
            .leases
            .get(&stream_arn)
            .cloned()
            .unwrap_or((None, 0));
        Ok(crate::store::Lease {
            table: crate::store::layout::REPLICAS_PARTITION.to_string(),
            stream_arn,
            owner,
            epoch,
            drained: false,
        })
    }

    async fn replicas(&self) -> StoreResult<Vec<crate::store::ReplicaBeat>> {
        Ok(self.lock().replicas.values().cloned().collect())
    }

    async fn forget_replica(&self, replica: &str, counter: u64) -> StoreResult<bool> {
        let mut state = self.lock();
        if state
            .replicas
            .get(replica)
            .is_some_and(|b| b.counter == counter)
        {
            state.replicas.remove(replica);
            return Ok(true);
        }
        Ok(false)
    }

    async fn leases(&self, table: Option<&str>) -> StoreResult<Vec<crate::store::Lease>> {
        let state = self.lock();
        Ok(state
            .streams
            .values()
            .filter(|r| table.is_none_or(|t| r.table_name == t))
            .map(|row| {
                let (owner, epoch) = state
                    .leases
                    .get(&row.stream_arn)
                    .cloned()
                    .unwrap_or((None, 0));
                crate::store::Lease {
                    table: row.table_name.clone(),
                    stream_arn: row.stream_arn.clone(),
                    owner,
                    epoch,
                    drained: row.drained,
                }
            })
            .collect())
    }

    async fn take_lease(&self, seen: &crate::store::Lease, me: &str) -> StoreResult<Option<u64>> {
        let mut state = self.lock();
        let id = (seen.table.clone(), seen.stream_arn.clone());
        // As the DynamoDB store: only a stream row that exists is leased
        // (a task's lease row is made by its first take).
        let task = seen.table == crate::store::layout::REPLICAS_PARTITION;
        if !task && !state.streams.contains_key(&id) {
            return Ok(None);
        }
        let epoch = state.leases.get(&seen.stream_arn).map_or(0, |(_, e)| *e);
        if epoch != seen.epoch {
            return Ok(None);
        }
        state.lease_writes += 1;
        state
            .leases
            .insert(seen.stream_arn.clone(), (Some(me.to_string()), epoch + 1));
        Ok(Some(epoch + 1))
    }

    async fn release_lease(&self, fence: &crate::store::Fence) -> StoreResult<bool> {
        let mut state = self.lock();
        if Self::holds(&state, fence).is_err() {
            return Ok(false);
        }
        state.lease_writes += 1;
        state
            .leases
            .insert(fence.stream_arn.clone(), (None, fence.epoch + 1));
        Ok(true)
    }

    async fn save_fenced_shard(
        &self,
        checkpoint: &ShardCheckpoint,
        fence: &crate::store::Fence,
    ) -> StoreResult<()> {
        self.save_row(checkpoint, Some(fence.epoch))
    }

    async fn put_fenced_gap(
        &self,
        gap: &Gap,
        link: &Link,
        fence: &crate::store::Fence,
    ) -> StoreResult<PutOutcome> {
        // One lock for the check and the write, as one transaction.
        let mut state = self.lock();
        Self::holds(&state, fence)?;
        let outcome = put_gap_in(&mut state, gap);
        if outcome == PutOutcome::Written {
            state.gap_links.insert(gap_link_key(gap), *link);
        }
        Ok(outcome)
    }

    async fn check_fence(&self, fence: &crate::store::Fence) -> StoreResult<()> {
        Self::holds(&self.lock(), fence)
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

    async fn load_all_table_health(&self) -> StoreResult<Vec<TableHealthRow>> {
        Ok(self.lock().health.values().cloned().collect())
    }

    async fn fresh_items(&self, table: &str, stream_arn: &str) -> StoreResult<bool> {
        let id = (table.to_string(), stream_arn.to_string());
        Ok(self.lock().fresh_items.get(&id) == Some(&true))
    }

    async fn set_fresh_items(&self, table: &str, stream_arn: &str, fresh: bool) -> StoreResult<()> {
        let (mut state, id) = (self.lock(), (table.to_string(), stream_arn.to_string()));
        // As DynamoDB's conditions: a recorded stream only; `true` only once.
        if state.streams.contains_key(&id) && (!fresh || !state.fresh_items.contains_key(&id)) {
            state.fresh_items.insert(id, fresh);
        }
        Ok(())
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

impl MemoryStore {
    /// A shard row's write, under the DynamoDB store's conditions; `epoch`:
    /// the fenced writer's, refused below the row's.
    fn save_row(&self, checkpoint: &ShardCheckpoint, epoch: Option<u64>) -> StoreResult<()> {
        if let Some(seq) = &checkpoint.sequence_no {
            // As the DynamoDB store: no store could resume after it.
            if !crate::stream::is_sequence_number(seq) {
                return Err(StoreError::Other(format!(
                    "shard {} of {}: {seq:?} is not a sequence number; refusing to checkpoint it",
                    checkpoint.shard_id, checkpoint.stream_arn
                )));
            }
        }
        let mut state = self.lock();
        let row = (checkpoint.stream_arn.clone(), checkpoint.shard_id.clone());
        if let Some(epoch) = epoch {
            let stored = state.row_epochs.get(&row).copied().unwrap_or(0);
            if epoch < stored {
                return Err(StoreError::Fenced {
                    stream_arn: checkpoint.stream_arn.clone(),
                    epoch,
                });
            }
        }
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
        if let Some(epoch) = epoch {
            state.row_epochs.insert(row, epoch);
        }
        Ok(())
    }
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
    async fn index_page(&self, request: &IndexRequest<'_>) -> StoreResult<IndexPage> {
        let mut state = self.lock();
        state.read_cost.query_calls += 1;
        let mut rows: Vec<(String, String, String, String)> = Vec::new();
        for ((table, key), entries) in &state.entries {
            let pk = format!("{table}|{key}");
            for (sort, stored) in entries {
                let entry = &stored.entry;
                let attrs = index_attrs(entry, key, chrono::DateTime::UNIX_EPOCH);
                let listed = attrs
                    .keys
                    .iter()
                    .any(|(i, v)| *i == request.index && v == request.partition);
                if listed && request.range.contains(&attrs.ts) {
                    rows.push((attrs.ts, pk.clone(), sort.clone(), entry.event.clone()));
                }
            }
        }
        rows.sort();
        if request.descending {
            rows.reverse();
        }
        let start = request.after.map(|p| {
            let at = (
                p.get("ts").cloned().unwrap_or_default(),
                p.get("pk").cloned().unwrap_or_default(),
                p.get("sk").cloned().unwrap_or_default(),
            );
            rows.iter()
                .position(|r| {
                    let here = (r.0.clone(), r.1.clone(), r.2.clone());
                    if request.descending {
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
            .take(request.limit)
            .map(|(ts, pk, sk, event)| IndexHit {
                pk: pk.clone(),
                sk: sk.clone(),
                ts: ts.clone(),
                event: Some(event.clone()),
                position: position(&[("ts", ts), ("pk", pk), ("sk", sk)]),
            })
            .collect();
        state.read_cost.items_read += hits.len() as u64;
        let next = (rest.len() > request.limit)
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
                state
                    .entries
                    .get(&(table.to_string(), key.to_string()))?
                    .get(sk)
                    .map(|s| s.entry.clone())
            })
            .collect())
    }

    async fn history_page(&self, request: &HistoryRequest<'_>) -> StoreResult<HistoryPage> {
        let mut state = self.lock();
        state.read_cost.query_calls += 1;
        let mut rows: Vec<(String, AuditEntry)> = state
            .entries
            .get(&(request.table.to_string(), canonical_key(request.key)))
            .map(|m| {
                m.iter()
                    .map(|(sk, s)| (sk.clone(), s.entry.clone()))
                    .collect()
            })
            .unwrap_or_default();
        if request.descending {
            rows.reverse();
        }
        if let Some(at) = request.after.and_then(|p| p.get("sk")) {
            rows.retain(|(sk, _)| if request.descending { sk < at } else { sk > at });
        }
        let more = rows.len() > request.limit;
        rows.truncate(request.limit);
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
            sequence_no: Some("100".into()),
            status,
            ..ShardCheckpoint::fresh("orders", "arn:s", shard, None)
        }
    }

    /// A store with a drained row and an open one of stream `arn:s`.
    async fn drained_and_open(drained: &str, open: &str) -> MemoryStore {
        let store = MemoryStore::new();
        for (shard, status) in [(drained, ShardStatus::Drained), (open, ShardStatus::Open)] {
            store.save_shard(&row(shard, status)).await.unwrap();
        }
        store
    }

    /// As DynamoDB's TTL: a drained row is gone, by id and from the listing,
    /// once its TTL has passed; an open row stays.
    #[tokio::test(start_paused = true)]
    async fn drained_rows_expire_after_their_ttl_and_open_rows_stay() {
        let store = drained_and_open("drained", "open").await;
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
        let store = drained_and_open("d", "o").await;
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
