//! The item chain (proof format §2a): each stream entry names its item's
//! previous stream entry (`item_prev`: its leaf hash and sequence number),
//! so one item's entries form a chain of their own inside the shard chains
//! and a bundle of one item proves that it misses none of them.
//!
//! The previous entry comes from, in order: an earlier entry of the same
//! page; the cache of each item's newest entry written by this process; one
//! strongly consistent read of the store ([`AuditStore::item_predecessor`]).
//! Whichever answers, the answer is "the item's newest stream entry strictly
//! before this one", so an entry written again (a crash before the
//! checkpoint, a restarted shard task, two daemons at once) is written with
//! the same link, byte for byte: per item, the stream delivers records in
//! order and one lineage holds them all, so nothing can come between.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest as _, Sha256};

use crate::entry::{AuditEntry, ItemPrev};
use crate::proof::Hash;
use crate::retry::{retry, Retried, RetryPolicy};
use crate::store::layout::entry_sort_key;
use crate::store::{AuditStore, StoreError};
use crate::stream::stream_label;
use crate::value::canonical_key_json;

/// Reads of the store made at once for the misses of one page.
const READ_CONCURRENCY: usize = 16;

/// An item, as the cache names it: 16 bytes of SHA-256 over the table and
/// its canonical key (a collision among 2^64 items is not a concern; the
/// key text itself would cost ~10× the memory).
type ItemId = [u8; 16];

/// An item's newest entry as the cache keeps it: its place (stream label,
/// shared by all the stream's entries, and sequence number) and its hash.
#[derive(Clone, Debug)]
struct Newest {
    label: Arc<str>,
    sequence: u128,
    hash: Hash,
    /// The shard task run that wrote it (see [`ItemChains::next_run`]).
    run: u64,
}

impl Newest {
    /// Whether this entry comes strictly before (`label`, `sequence`) in the
    /// item's history (the audit table's sort order).
    fn is_before(&self, label: &str, sequence: u128) -> bool {
        (&*self.label, self.sequence) < (label, sequence)
    }
}

/// The bounded cache of each recently changed item's newest entry, shared
/// by every shard task of the process.
pub struct ItemChains {
    cache: Mutex<lru::LruCache<ItemId, Newest>>,
    capacity: usize,
    runs: std::sync::atomic::AtomicU64,
}

impl ItemChains {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ItemChains {
            cache: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
            capacity,
            runs: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// A new shard task run's number. A cached entry answers only for the
    /// run that wrote it: one run reads its shard's records in order from
    /// its start, so it has seen every entry of the item since; another
    /// run (a child shard, a restart from a checkpoint another replica
    /// saved) may start past entries this process never saw, and asks the
    /// store instead. Per item, one read per shard, not per change.
    pub fn next_run(&self) -> u64 {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items cached now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, lru::LruCache<ItemId, Newest>> {
        // Every change is one insert: a panic elsewhere leaves it whole.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Remembers `entry`, hashed as `hash`, as its item's newest entry (what
    /// a page's commit does); for benchmarks that fill the cache.
    #[doc(hidden)]
    pub fn remember_entry(&self, entry: &AuditEntry, hash: Hash, run: u64) {
        let label: Arc<str> = Arc::from(stream_label(&entry.stream_arn));
        if let Some(place) = place_of(entry, &label) {
            self.remember(
                place.id,
                Newest {
                    label: place.label,
                    sequence: place.sequence,
                    hash,
                    run,
                },
            );
        }
    }

    /// The cached predecessor of an entry at (`label`, `sequence`), if the
    /// cache knows the item and its newest entry comes before.
    fn cached(&self, id: &ItemId, label: &str, sequence: u128, run: u64) -> Option<Newest> {
        let mut cache = self.lock();
        cache
            .get(id)
            .filter(|n| n.run == run && n.is_before(label, sequence))
            .cloned()
    }

    /// Remembers `newest` as the item's newest entry unless a later one is
    /// known (a replayed page must not move an item back).
    fn remember(&self, id: ItemId, newest: Newest) {
        let mut cache = self.lock();
        let later_known = cache
            .peek(&id)
            .is_some_and(|n| !n.is_before(&newest.label, newest.sequence));
        if !later_known {
            cache.put(id, newest);
        }
    }
}

/// What the item chain needs of a page's entry: who it is and where.
struct Place {
    id: ItemId,
    label: Arc<str>,
    sequence: u128,
}

/// The place of an entry in its item's chain; `None` for an entry outside
/// it: a SNAPSHOT entry (no sequence number), an entry whose record had no
/// key or a sequence number that is not one.
fn place_of(entry: &AuditEntry, label: &Arc<str>) -> Option<Place> {
    if entry.key.is_empty() {
        return None;
    }
    let sequence = entry.sequence_number.parse::<u128>().ok()?;
    Some(Place {
        id: item_id(&entry.table, &canonical_key_json(&entry.key)),
        label: label.clone(),
        sequence,
    })
}

fn item_id(table: &str, canonical_key: &str) -> ItemId {
    let mut h = Sha256::new();
    h.update(table.as_bytes());
    h.update([0u8]);
    h.update(canonical_key.as_bytes());
    let digest = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    id
}

/// What an item's first entry in a page follows: `None`, nothing (the item
/// has no stream entry before it); `Some(None)`, an entry stored without a
/// hash (nothing can link to it); else that entry's sequence number and hash.
type Found = Option<Option<(String, Hash)>>;

/// What one shard task run knows of its items' chains.
#[derive(Clone, Copy, Debug)]
pub struct ItemRun {
    /// Its number for the cache (see [`ItemChains::next_run`]).
    pub id: u64,
    /// The table's stream entries so far are all of this stream, read with
    /// no loss and no item removed (`CheckpointStore::fresh_items`, read
    /// when the run starts, after its checkpoint): then an INSERT starts
    /// its item's chain, and nothing needs to be read to know it. An item
    /// created now had no earlier life in the trail, since its end would
    /// be a REMOVE, or a gap where one was lost; and its records are in
    /// this shard's lineage, read by its ancestors' runs before this one.
    pub fresh: bool,
}

/// What one page's entries link to, resolved before they are hashed.
pub struct PageLinks {
    places: Vec<Option<Place>>,
    /// Per item: what its first entry in the page follows.
    first: HashMap<ItemId, Found>,
    /// Per item: its newest entry linked so far in this page.
    linked: HashMap<ItemId, (u128, Hash)>,
    /// Reads the store answered for this page.
    pub reads: usize,
    run: u64,
}

impl PageLinks {
    /// Sets `entry.item_prev` (entry `i` of the page); call in page order,
    /// each followed by [`PageLinks::linked`] with its leaf hash.
    pub fn link(&self, i: usize, entry: &mut AuditEntry) {
        let Some(place) = self.places.get(i).and_then(Option::as_ref) else {
            return;
        };
        entry.item_prev = match self.linked.get(&place.id) {
            Some((sequence, hash)) => Some(Some(ItemPrev {
                hash: hex::encode(hash),
                sequence_number: sequence.to_string(),
            })),
            None => match self.first.get(&place.id) {
                Some(Some(Some((sequence_number, hash)))) => Some(Some(ItemPrev {
                    hash: hex::encode(hash),
                    sequence_number: sequence_number.clone(),
                })),
                Some(None) => Some(None),
                // A predecessor stored without a hash: the item's entries
                // stay unlinked (the unlinked prefix goes on).
                Some(Some(None)) | None => None,
            },
        };
    }

    /// Entry `i` was hashed as `hash`: the next entry of its item links to it.
    pub fn linked(&mut self, i: usize, hash: Hash) {
        if let Some(place) = self.places.get(i).and_then(Option::as_ref) {
            self.linked.insert(place.id, (place.sequence, hash));
        }
    }

    /// After the page's entries are durably written: their items' newest
    /// entries go into the cache.
    pub fn commit(self, chains: &ItemChains) {
        let labels: HashMap<ItemId, Arc<str>> = self
            .places
            .into_iter()
            .flatten()
            .map(|p| (p.id, p.label))
            .collect();
        for (id, (sequence, hash)) in self.linked {
            if let Some(label) = labels.get(&id) {
                chains.remember(
                    id,
                    Newest {
                        label: label.clone(),
                        sequence,
                        hash,
                        run: self.run,
                    },
                );
            }
        }
    }
}

/// Resolves the predecessor of each item's first entry in `entries` (one
/// page of one stream, in stream order): from the cache, else, for an
/// INSERT of a fresh run, none; else with one read of the store per item.
pub async fn resolve_page<A: AuditStore>(
    chains: &ItemChains,
    store: &A,
    policy: RetryPolicy,
    abort: &tokio_util::sync::CancellationToken,
    item_run: ItemRun,
    stream_arn: &str,
    entries: &[AuditEntry],
) -> Result<PageLinks, Retried<StoreError>> {
    let run = item_run.id;
    let label: Arc<str> = Arc::from(stream_label(stream_arn));
    let places: Vec<Option<Place>> = entries.iter().map(|e| place_of(e, &label)).collect();
    let mut first: HashMap<ItemId, Found> = HashMap::new();
    let mut missed: std::collections::HashSet<ItemId> = std::collections::HashSet::new();
    let mut misses: Vec<(ItemId, &AuditEntry)> = Vec::new();
    for (entry, place) in entries.iter().zip(&places) {
        let Some(place) = place else { continue };
        if first.contains_key(&place.id) || missed.contains(&place.id) {
            continue;
        }
        match chains.cached(&place.id, &place.label, place.sequence, run) {
            Some(n) => {
                first.insert(place.id, Some(Some((n.sequence.to_string(), n.hash))));
            }
            None if item_run.fresh && entry.event == "INSERT" => {
                first.insert(place.id, None);
            }
            None => {
                missed.insert(place.id);
                misses.push((place.id, entry));
            }
        }
    }
    let reads = misses.len();
    // Built eagerly: a lazy `.map` closure over `&AuditEntry` trips the
    // compiler's higher-ranked Send check for spawned tasks.
    let reads_of: Vec<_> = misses
        .into_iter()
        .map(|(id, entry)| async move {
            let before = entry_sort_key(&entry.stream_arn, &entry.sequence_number);
            let found = retry(policy, abort, "Query(item's previous entry)", || {
                store.item_predecessor(&entry.table, &entry.key, &before)
            })
            .await?;
            // In the form the cache gives it, so a hit and a miss write the
            // same bytes.
            let canonical = |p: &crate::store::ItemPredecessor| {
                p.sequence_number
                    .parse::<u128>()
                    .map_or_else(|_| p.sequence_number.clone(), |n| n.to_string())
            };
            Ok::<_, Retried<StoreError>>((id, found.map(|p| p.hash.map(|h| (canonical(&p), h)))))
        })
        .collect();
    let found: Vec<(ItemId, Found)> = futures_util::stream::iter(reads_of)
        .buffer_unordered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    first.extend(found);
    Ok(PageLinks {
        places,
        first,
        linked: HashMap::new(),
        reads,
        run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn newest(label: &str, sequence: u128) -> Newest {
        Newest {
            label: Arc::from(label),
            sequence,
            hash: [1; 32],
            run: 7,
        }
    }

    #[test]
    fn the_cache_answers_only_for_a_later_entry_and_never_moves_back() {
        let chains = ItemChains::new(2);
        let id = item_id("orders", "{\"pk\":{\"S\":\"a\"}}");
        chains.remember(id, newest("L2", 500));
        // A replayed earlier entry finds no predecessor in the cache.
        assert!(chains.cached(&id, "L2", 400, 7).is_none());
        assert!(chains.cached(&id, "L2", 500, 7).is_none());
        assert_eq!(
            chains.cached(&id, "L2", 501, 7).map(|n| n.sequence),
            Some(500)
        );
        // A later stream's label sorts after.
        assert!(chains.cached(&id, "L3", 1, 7).is_some());
        // Another run (a child shard, a restart) asks the store.
        assert!(chains.cached(&id, "L2", 501, 8).is_none());
        chains.remember(id, newest("L2", 300));
        assert_eq!(
            chains.cached(&id, "L2", 900, 7).map(|n| n.sequence),
            Some(500)
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let chains = ItemChains::new(2);
        for i in 0..5u8 {
            chains.remember([i; 16], newest("L", 1));
        }
        assert_eq!(chains.len(), 2);
        assert!(chains.cached(&[0; 16], "L", 2, 7).is_none());
        assert!(chains.cached(&[4; 16], "L", 2, 7).is_some());
    }
}
