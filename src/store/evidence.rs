//! What `verify` reads of a store, and the one assembler that turns it into
//! each stream's [`StreamEvidence`]. A store offers only the raw reads
//! ([`EvidenceReads`]: its chain rows, one pass over the trail, and the
//! checkpoint and snapshot rows its other traits already give); the
//! assembling is written once, so a test that verifies on the memory store
//! runs the code production runs on DynamoDB.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use crate::entry::GapRef;
use crate::proof::chain::{document_hash, entry_document, gap_document};
use crate::proof::digest::SignedDigest;
use crate::proof::verify::items::{ItemLink, ItemLinkEvidence};
use crate::proof::verify::{is_rejected_marker, CheckpointEvidence, FoundDigest, Leaf};
use crate::proof::Hash;
use crate::store::layout::entry_sort_key;
use crate::store::{segment_chain_id, snapshot_stream_arn, CheckpointStore, SnapshotStore};
use crate::store::{StoreResult, SNAPSHOT_ARN_PREFIX};

pub use crate::proof::verify::StreamEvidence;

/// A chain's row beside the trail: a stream's own row (its shards are
/// checkpointed under its ARN), or a snapshot run's digest pointer (its
/// `stream_arn` begins with `snapshot:`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainRow {
    pub table: String,
    pub stream_arn: String,
    /// The newest digest recorded as written: (number, hash).
    pub newest_digest: Option<(u64, String)>,
}

/// One stored thing of the trail, as the chain needs it.
#[derive(Clone, Debug, PartialEq)]
pub enum TrailRecord {
    Digest {
        table: String,
        stream_arn: String,
        number: u64,
        signed: SignedDigest,
    },
    Gap {
        table: String,
        stream_arn: String,
        /// The chain it is in (its shard).
        chain_shard: String,
        /// The gap's stored JSON.
        json: Option<String>,
        hash: Option<Hash>,
        prev_hash: Option<Hash>,
    },
    Entry {
        table: String,
        stream_arn: String,
        /// The chain it is in: its shard, or a SNAPSHOT entry's segment.
        chain_shard: String,
        /// Its place there: the sequence number, or the segment position.
        chain_position: String,
        /// The entry's stored JSON, whole; `None`: it cannot be read back
        /// (a body that does not inflate, parts gone).
        json: Option<String>,
        hash: Option<Hash>,
        prev_hash: Option<Hash>,
        /// It carries the retention TTL.
        expires: bool,
    },
}

impl TrailRecord {
    fn table(&self) -> &str {
        match self {
            TrailRecord::Digest { table, .. }
            | TrailRecord::Gap { table, .. }
            | TrailRecord::Entry { table, .. } => table,
        }
    }

    fn stream_arn(&self) -> &str {
        match self {
            TrailRecord::Digest { stream_arn, .. }
            | TrailRecord::Gap { stream_arn, .. }
            | TrailRecord::Entry { stream_arn, .. } => stream_arn,
        }
    }
}

/// The raw reads [`gather`] assembles evidence from.
pub trait EvidenceReads: CheckpointStore + SnapshotStore {
    /// Every stream row and snapshot-run pointer row (rows of other kinds
    /// left out).
    fn chain_rows(&self) -> impl Future<Output = StoreResult<Vec<ChainRow>>> + Send;
    /// One pass over the trail: each entry (whole, however it is stored),
    /// gap and digest given to `visit` once. `progress` is told how many
    /// stored items have been read so far.
    fn scan_trail(
        &self,
        visit: impl FnMut(TrailRecord) + Send,
        progress: impl FnMut(u64) + Send,
    ) -> impl Future<Output = StoreResult<()>> + Send;
}

/// Everything `verify` needs, per stream, of `tables` only when given.
pub async fn gather<S: EvidenceReads>(
    store: &S,
    tables: Option<&[String]>,
    progress: impl FnMut(u64) + Send,
) -> StoreResult<Vec<StreamEvidence>> {
    let excluded = |t: &str| tables.is_some_and(|ts| !ts.iter().any(|x| x == t));
    let mut streams: BTreeMap<String, StreamEvidence> = BTreeMap::new();
    // Checkpoints and the digest pointers first: what they name was written
    // before the trail is read, so the pass sees it. Read after it, a digest
    // or entry the running daemon wrote meanwhile would look deleted.
    for row in store.chain_rows().await? {
        if excluded(&row.table) {
            continue;
        }
        let ev = evidence_of(&mut streams, &row.table, &row.stream_arn);
        if row.stream_arn.starts_with(SNAPSHOT_ARN_PREFIX) {
            ev.newest_digest = row.newest_digest;
            continue;
        }
        if let Some(p) = row.newest_digest {
            ev.newest_digest = Some(p);
        }
        for cp in store.load_shards(&row.stream_arn).await? {
            ev.checkpoints.push(CheckpointEvidence {
                shard_id: cp.shard_id,
                parent_shard_id: cp.parent_shard_id,
                chain: cp.chain,
                sequence_no: cp.sequence_no,
            });
        }
    }
    // A table's latest snapshot run keeps its segments' progress, with
    // their chains, as a stream keeps its checkpoints (earlier runs have
    // only their digests: each ends with a final one).
    let snapshot_tables: BTreeSet<String> = streams
        .values()
        .filter(|ev| ev.stream_arn.starts_with(SNAPSHOT_ARN_PREFIX))
        .map(|ev| ev.table.clone())
        .collect();
    for table in snapshot_tables {
        let Some((run, segments)) = store.load_snapshot(&table).await? else {
            continue;
        };
        let Some(ev) = streams.get_mut(&snapshot_stream_arn(&table, &run.run_id)) else {
            continue;
        };
        for seg in segments {
            let size = seg.chain.tree.size;
            ev.checkpoints.push(CheckpointEvidence {
                shard_id: segment_chain_id(seg.segment),
                parent_shard_id: None,
                chain: Some(seg.chain),
                sequence_no: (size > 0).then(|| size.to_string()),
            });
        }
    }
    store
        .scan_trail(
            |record| {
                if !excluded(record.table()) {
                    let ev = evidence_of(&mut streams, record.table(), record.stream_arn());
                    add_record(ev, record);
                }
            },
            progress,
        )
        .await?;
    // A digest newer than the pointer read before the pass was written
    // while it ran: it may cover entries the pass had gone by already,
    // which would then look deleted. The next `verify` checks it.
    for ev in streams.values_mut() {
        if let Some((pointer, _)) = ev.newest_digest {
            ev.digests.retain(|d| d.number <= pointer);
        }
    }
    Ok(streams.into_values().collect())
}

fn evidence_of<'a>(
    streams: &'a mut BTreeMap<String, StreamEvidence>,
    table: &str,
    stream_arn: &str,
) -> &'a mut StreamEvidence {
    streams
        .entry(stream_arn.to_string())
        .or_insert_with(|| StreamEvidence {
            table: table.to_string(),
            stream_arn: stream_arn.to_string(),
            ..Default::default()
        })
}

fn add_record(ev: &mut StreamEvidence, record: TrailRecord) {
    match record {
        TrailRecord::Digest { number, signed, .. } => {
            ev.digests.push(FoundDigest { number, signed });
        }
        TrailRecord::Gap {
            chain_shard,
            json,
            hash,
            prev_hash,
            ..
        } => {
            let gap: Option<serde_json::Value> = json.and_then(|g| serde_json::from_str(&g).ok());
            let after = gap
                .as_ref()
                .and_then(|g| g.get("after_sequence_number"))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            // A list that does not parse is kept as none: the leaf's hash,
            // recomputed from the same JSON, then says it was altered.
            let closes: Vec<GapRef> = gap
                .as_ref()
                .and_then(|g| g.get("closes"))
                .and_then(|c| serde_json::from_value(c.clone()).ok())
                .unwrap_or_default();
            ev.leaves.push(Leaf {
                is_gap: true,
                closes,
                shard_id: chain_shard,
                sequence_number: after,
                key: None,
                stored_hash: hash,
                prev_hash,
                content_hash: gap
                    .and_then(|g| document_hash(&gap_document(&g, prev_hash.as_ref())).ok()),
                expires: false,
                rejected: false,
            });
        }
        TrailRecord::Entry {
            stream_arn,
            chain_shard,
            chain_position,
            json,
            hash,
            prev_hash,
            expires,
            ..
        } => {
            let mut leaf = Leaf {
                is_gap: false,
                closes: Vec::new(),
                shard_id: chain_shard,
                sequence_number: chain_position,
                key: None,
                stored_hash: hash,
                prev_hash,
                content_hash: None,
                expires,
                rejected: false,
            };
            // A body that cannot be read, or is not JSON, cannot hash right:
            // the leaf stays without content.
            let value = json.and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok());
            if let Some(value) = value {
                leaf.key = value.get("key").map(|k| k.to_string());
                let stream_entry = !stream_arn.starts_with(SNAPSHOT_ARN_PREFIX);
                if let (true, Some(key)) = (stream_entry, &leaf.key) {
                    ev.item_links.push(ItemLinkEvidence {
                        key: key.clone(),
                        shard_id: leaf.shard_id.clone(),
                        sequence_number: leaf.sequence_number.clone(),
                        sort_key: entry_sort_key(&stream_arn, &leaf.sequence_number),
                        hash: hash.map(hex::encode),
                        link: ItemLink::of(&value),
                        expires,
                    });
                }
                leaf.rejected = is_rejected_marker(&value);
                leaf.content_hash =
                    document_hash(&entry_document(&stream_arn, &value, prev_hash.as_ref())).ok();
            }
            ev.leaves.push(leaf);
        }
    }
}
