//! What the item chain costs and how fast it is checked (BENCHMARKS.md,
//! "The item chain"):
//!
//! 1. read requests per change, on a cache hit and on a miss: the daemon on
//!    the stream simulator and the memory store (the same code as on
//!    DynamoDB), counting the store's predecessor reads; and the read units
//!    such a read costs, from the size of the item it reads (`write_cost`
//!    sizes the very items the store writes);
//! 2. the cache's memory: RSS before and after filling it with 1,000,000
//!    distinct items;
//! 3. `verify-bundle` on one item of 10,000 entries: the bundle's JSON
//!    parsed and checked, as the command does.
//!
//! `cargo bench --bench item_chain [-- --quick]`

#[path = "../tests/sim_support/mod.rs"]
mod sim_support;

use std::time::{Duration, Instant};

use ddb_audit::daemon::engine::ItemCacheEntries;
use ddb_audit::daemon::itemchain::ItemChains;
use ddb_audit::entry::{AuditEntry, ItemPrev};
use ddb_audit::proof::bundle::{
    check_bundle, Bundle, BundleDigest, BundleEntry, BundleSpan, LeafProof,
};
use ddb_audit::proof::digest::{next_digest, DigestInput, ShardHead};
use ddb_audit::proof::merkle::inclusion_proof;
use ddb_audit::proof::sign::{DigestSigner, Ed25519Signer};
use ddb_audit::proof::verify::exit_status;
use ddb_audit::proof::ChainState;
use ddb_audit::store::dynamo::write_cost;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::stream::sim::{SimConfig, SimStream, ViewType};
use ddb_audit::value::AttrValue;
use sim_support::{item, run_for, settings, start, TABLE};

const PRIVATE_PEM: &str = include_str!("../src/proof/testdata/ed25519-private.pem");
const ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-23T00:00:00.000";

/// Changes `items` items `versions` times each, round robin, with a cache
/// of `cache` items; returns (changes, predecessor reads) of the versions
/// after the first, and the largest entry item a read could meet (bytes).
async fn reads_per_change(items: u32, versions: u32, cache: usize) -> (u64, u64, usize) {
    let sim = SimStream::new(SimConfig::with_seed(3));
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .expect("table");
    let store = MemoryStore::new();
    let mut s = settings();
    s.item_cache_entries = ItemCacheEntries(cache);
    s.polling.get_records_per_shard_per_sec = 1_000_000;
    let daemon = start(sim.clone(), &store, s, &[TABLE]);
    for id in 0..items {
        sim.put(TABLE, item(id, 0, "alice")).expect("put");
    }
    run_for(Duration::from_secs(5)).await;
    let first = store.item_predecessor_reads();
    for v in 1..versions {
        for id in 0..items {
            sim.put(TABLE, item(id, v, "alice")).expect("put");
        }
        run_for(Duration::from_secs(5)).await;
    }
    daemon.stop().await;
    let reads = store.item_predecessor_reads() - first;
    let changes = u64::from(items) * u64::from(versions - 1);
    assert_eq!(store.entry_count() as u64, changes + u64::from(items));
    let largest = store
        .all_entries()
        .iter()
        .map(|e| {
            let link = ddb_audit::proof::Link {
                prev_hash: Some([7; 32]),
                hash: [9; 32],
            };
            write_cost(e, Some(&link), true).expect("cost").item_bytes
        })
        .max()
        .unwrap_or(0);
    (changes, reads, largest)
}

/// Creates `items` new items, in a table whose trail is fresh or (with
/// `removal_first`) already holds a removal; returns the predecessor reads
/// those creations cost.
async fn reads_per_creation(items: u32, removal_first: bool) -> u64 {
    let sim = SimStream::new(SimConfig::with_seed(3));
    sim.create_table(TABLE, &["pk"], Some(ViewType::NewAndOldImages))
        .expect("table");
    let store = MemoryStore::new();
    let mut s = settings();
    s.polling.get_records_per_shard_per_sec = 1_000_000;
    let daemon = start(sim.clone(), &store, s, &[TABLE]);
    if removal_first {
        sim.put(TABLE, item(u32::MAX, 0, "alice")).expect("put");
        sim.delete(TABLE, &sim_support::key(u32::MAX))
            .expect("delete");
    }
    run_for(Duration::from_secs(5)).await;
    let first = store.item_predecessor_reads();
    for id in 0..items {
        sim.put(TABLE, item(id, 0, "alice")).expect("put");
    }
    run_for(Duration::from_secs(5)).await;
    daemon.stop().await;
    store.item_predecessor_reads() - first
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn cache_memory(items: usize) -> (u64, usize) {
    let before = rss_bytes();
    let chains = ItemChains::new(items);
    let mut e = AuditEntry {
        stream_arn: ARN.into(),
        ..AuditEntry::fixture("orders", Default::default(), "110000000001745442301")
    };
    for i in 0..items {
        e.key = [("pk".to_string(), AttrValue::S(format!("order-{i:010}")))].into();
        e.sequence_number = format!("{}", 110_000_000_001_745_442_301u128 + i as u128);
        chains.remember_entry(&e, [i as u8; 32], 1);
    }
    let after = rss_bytes();
    let len = chains.len();
    drop(chains);
    (after.saturating_sub(before), len)
}

/// One item's bundle of `n` linked entries in one shard, proven by one
/// signed digest, as `export --proof` writes it.
fn bundle_of(n: usize) -> Bundle {
    let signer = Ed25519Signer::from_pem(PRIVATE_PEM, "bench").expect("key");
    let mut chain = ChainState::default();
    let mut entries = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    let mut prev: Option<(String, [u8; 32])> = None;
    for i in 0..n {
        let seq = format!("{}", 110_000_000_001_745_442_301u128 + 100 * i as u128);
        let mut e = AuditEntry {
            stream_arn: ARN.into(),
            ..AuditEntry::fixture(
                "orders",
                [("pk".to_string(), AttrValue::S("order-1".into()))].into(),
                &seq,
            )
        };
        e.changes = vec![ddb_audit::entry::Change {
            path: "balance".into(),
            old: Some(AttrValue::N(i.to_string())),
            new: Some(AttrValue::N((i + 1).to_string())),
            added: None,
            removed: None,
        }];
        e.item_prev = Some(prev.as_ref().map(|(s, h)| ItemPrev {
            hash: hex::encode(h),
            sequence_number: s.clone(),
        }));
        let link = chain.link_entry(&e).expect("hash");
        prev = Some((seq, link.hash));
        hashes.push(link.hash);
        entries.push((e, link));
    }
    let head = ShardHead {
        shard_id: "shardId-1".into(),
        parent_shard_id: None,
        status: "open".into(),
        size: chain.tree.size,
        root: hex::encode(chain.tree.root()),
        last_hash: chain.last_hash.map(hex::encode),
        last_sequence_number: entries.last().map(|(e, _)| e.sequence_number.clone()),
    };
    let (doc, signed) = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(next_digest(DigestInput {
            table: "orders",
            stream_arn: ARN,
            previous: None,
            shards: vec![head],
            time: chrono::Utc::now(),
            is_final: false,
            interval_secs: 60,
            retention_days: None,
            signer: Some(&signer),
        }))
        .expect("digest");
    let entries: Vec<BundleEntry> = entries
        .iter()
        .enumerate()
        .map(|(i, (e, link))| BundleEntry {
            stream_arn: ARN.into(),
            shard_id: "shardId-1".into(),
            entry: serde_json::to_value(e).expect("json"),
            proof: LeafProof {
                prev_hash: link.prev_hash.map(hex::encode),
                hash: hex::encode(link.hash),
                leaf_index: i as u64,
                tree_size: n as u64,
                digest_number: doc.number,
                inclusion_proof: inclusion_proof(&hashes, i)
                    .expect("proof")
                    .iter()
                    .map(hex::encode)
                    .collect(),
            },
        })
        .collect();
    Bundle {
        kind: ddb_audit::proof::bundle::BUNDLE_TYPE.into(),
        table: "orders".into(),
        key: serde_json::json!({"pk": {"S": "order-1"}}),
        created_at: "2026-11-23T21:00:00Z".into(),
        public_key_fingerprint: Some(signer.fingerprint().to_string()),
        span: BundleSpan::of(&entries),
        entries,
        digests: vec![BundleDigest {
            stream_arn: ARN.into(),
            number: doc.number,
            signed,
        }],
        gaps: Vec::new(),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick" || a == "--test");
    let (items, versions, cache_items, bundle_entries) = if quick {
        (50, 3, 10_000, 500)
    } else {
        (1_000, 5, 1_000_000, 10_000)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");

    println!("# item chain: read requests per change (simulator, memory store)");
    let (changes, reads, largest) = rt.block_on(reads_per_change(items, versions, 100_000));
    println!(
        "cache hit  ({items} items, cache 100,000): {reads} reads for {changes} changes = {:.3} per change",
        reads as f64 / changes as f64
    );
    let (changes, reads, _) = rt.block_on(reads_per_change(items, versions, 1));
    println!(
        "cache miss ({items} items round robin, cache 1): {reads} reads for {changes} changes = {:.3} per change",
        reads as f64 / changes as f64
    );
    let fresh = rt.block_on(reads_per_creation(items, false));
    let removed = rt.block_on(reads_per_creation(items, true));
    println!(
        "item created ({items} new items): {fresh} reads in a table whose trail is fresh, \
         {removed} in one whose trail holds a removal"
    );
    println!(
        "largest entry item a miss reads: {largest} B = {} read unit(s) (strongly consistent: 4 KB a unit)",
        largest.div_ceil(4096)
    );

    println!("# item chain: the cache's memory");
    let (bytes, len) = cache_memory(cache_items);
    println!(
        "{len} items cached: RSS +{:.1} MB = {} B per item",
        bytes as f64 / 1e6,
        bytes / len.max(1) as u64
    );

    println!("# verify-bundle on one item of {bundle_entries} entries");
    let started = Instant::now();
    let bundle = bundle_of(bundle_entries);
    let text = serde_json::to_string(&bundle).expect("json");
    let built = started.elapsed();
    let signer = Ed25519Signer::from_pem(PRIVATE_PEM, "bench").expect("key");
    let key = signer.public_key();
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let started = Instant::now();
        let parsed: Bundle = serde_json::from_str(&text).expect("parse");
        let verdict = check_bundle(&parsed, Some(&key));
        let took = started.elapsed();
        assert_eq!(exit_status(&verdict.findings), 0, "{:?}", verdict.findings);
        assert_eq!(verdict.span.expect("span").chain.chained_from, Some(1));
        best = best.min(took);
    }
    println!(
        "bundle of {} entries ({:.1} MB JSON, built in {:.2} s): parsed and checked in {:.3} s (best of 3)",
        bundle_entries,
        text.len() as f64 / 1e6,
        built.as_secs_f64(),
        best.as_secs_f64()
    );
}
