//! The proof side's CPU, on one core: hashing an entry onto its shard's
//! chain (canonical JSON + SHA-256 + the Merkle frontier), sealing a digest
//! with Ed25519, and `verify`'s checks over a 100,000-entry stream (the
//! store's Scan excluded: that is the emulator's or DynamoDB's time).
//!
//! `cargo bench --bench proof`; smoke mode: `-- --test`.

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;

use ddb_audit::entry::{AuditEntry, Change};
use ddb_audit::proof::chain::{document_hash, entry_document, ChainState};
use ddb_audit::proof::digest::{next_digest, DigestInput};
use ddb_audit::proof::sign::Ed25519Signer;
use ddb_audit::proof::verify::{
    verify_stream, CheckpointEvidence, FoundDigest, Leaf, StreamEvidence, VerifyOptions,
};
use ddb_audit::store::ShardCheckpoint;
use ddb_audit::value::AttrValue;

const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/orders/stream/L";

/// A ~1 KB MODIFY entry: ten changed attributes of ~40 bytes.
fn entry(seq: u64) -> AuditEntry {
    AuditEntry {
        shard_id: "shardId-00000001".into(),
        changes: (0..10)
            .map(|i| Change {
                path: format!("profile.field_{i}"),
                old: Some(AttrValue::S(format!("old-value-{i}-{seq}-xxxxxxxxxxxxxx"))),
                new: Some(AttrValue::S(format!("new-value-{i}-{seq}-xxxxxxxxxxxxxx"))),
                added: None,
                removed: None,
            })
            .collect(),
        ..AuditEntry::fixture(
            "orders",
            [(
                "pk".to_string(),
                AttrValue::S(format!("user-{}", seq % 1000)),
            )]
            .into(),
            &format!("{:021}", seq),
        )
    }
}

fn trail(n: u64, every: u64) -> StreamEvidence {
    let signer = Ed25519Signer::from_pem(
        include_str!("../src/proof/testdata/ed25519-private.pem"),
        "bench",
    )
    .expect("key");
    let mut chain = ChainState::default();
    let mut ev = StreamEvidence {
        table: "orders".into(),
        stream_arn: ARN.into(),
        ..Default::default()
    };
    let mut prev = None;
    for i in 1..=n {
        let e = entry(i);
        let link = chain.link_entry(&e).expect("hash");
        let stored = serde_json::to_value(&e).expect("json");
        ev.leaves.push(Leaf {
            is_gap: false,
            closes: Vec::new(),
            shard_id: e.shard_id.clone(),
            sequence_number: e.sequence_number.clone(),
            key: serde_json::to_string(&e.key).ok(),
            stored_hash: Some(link.hash),
            prev_hash: link.prev_hash,
            content_hash: document_hash(&entry_document(ARN, &stored, link.prev_hash.as_ref()))
                .ok(),
            expires: false,
            rejected: false,
        });
        if i % every == 0 || i == n {
            let cp = ShardCheckpoint {
                sequence_no: Some(e.sequence_number.clone()),
                ..ShardCheckpoint::fresh("orders", ARN, "shardId-00000001", None)
            };
            let (doc, sealed) = next_digest(DigestInput {
                table: "orders",
                stream_arn: ARN,
                previous: prev.as_ref().map(|(n, d)| (*n, d)),
                shards: vec![cp.digest_head(&chain)],
                time: Utc.with_ymd_and_hms(2026, 11, 23, 19, 0, 0).unwrap(),
                is_final: i == n,
                interval_secs: 60,
                retention_days: None,
                signer: Some(&signer),
            })
            .now_or_never()
            .expect("ready")
            .expect("seal");
            ev.digests.push(FoundDigest {
                number: doc.number,
                signed: sealed.clone(),
            });
            ev.newest_digest = Some((doc.number, sealed.hash.clone()));
            prev = Some((doc.number, sealed));
        }
    }
    ev.checkpoints.push(CheckpointEvidence {
        shard_id: "shardId-00000001".into(),
        parent_shard_id: None,
        chain: Some(chain),
        sequence_no: Some(format!("{n:021}")),
    });
    ev
}

fn chain_link(c: &mut Criterion) {
    let mut g = c.benchmark_group("proof");
    g.throughput(Throughput::Elements(1));
    let e = entry(1);
    let mut chain = ChainState::default();
    g.bench_function("link_entry_1kb", |b| {
        b.iter(|| black_box(chain.link_entry(black_box(&e)).expect("hash")))
    });
    let signer = Ed25519Signer::from_pem(
        include_str!("../src/proof/testdata/ed25519-private.pem"),
        "bench",
    )
    .expect("key");
    let heads: Vec<_> = (0..64)
        .map(|i| {
            let cp = ShardCheckpoint {
                sequence_no: Some("100".into()),
                ..ShardCheckpoint::fresh("orders", ARN, &format!("shardId-{i:08}"), None)
            };
            cp.digest_head(&chain)
        })
        .collect();
    g.bench_function("seal_digest_64_shards_ed25519", |b| {
        b.iter(|| {
            next_digest(DigestInput {
                table: "orders",
                stream_arn: ARN,
                previous: None,
                shards: heads.clone(),
                time: Utc::now(),
                is_final: false,
                interval_secs: 60,
                retention_days: None,
                signer: Some(&signer),
            })
            .now_or_never()
            .expect("ready")
            .expect("seal")
        })
    });
    g.finish();
}

fn verify_100k(c: &mut Criterion) {
    const N: u64 = 100_000;
    let ev = trail(N, 1000);
    let key = Ed25519Signer::from_pem(
        include_str!("../src/proof/testdata/ed25519-private.pem"),
        "bench",
    )
    .expect("key")
    .public_key();
    let mut g = c.benchmark_group("proof");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(N));
    g.bench_function("verify_stream_100k_entries", |b| {
        b.iter(|| {
            let report = verify_stream(
                black_box(&ev),
                &VerifyOptions {
                    public_key: Some(&key),
                    now: Utc.with_ymd_and_hms(2026, 11, 23, 19, 1, 0).unwrap(),
                    interval_secs: 60,
                    remembered: None,
                },
            );
            assert!(report.newest_intact.is_some());
            report
        })
    });
    // Re-hashing what a Scan returns (parse the stored JSON, canonical bytes,
    // SHA-256): the other half of verify's CPU per entry.
    let stored = serde_json::to_string(&entry(7)).expect("json");
    g.throughput(Throughput::Elements(1));
    g.bench_function("rehash_stored_entry_1kb", |b| {
        b.iter(|| {
            let value: serde_json::Value = serde_json::from_str(black_box(&stored)).expect("json");
            document_hash(&entry_document(ARN, &value, None)).expect("hash")
        })
    });
    g.finish();
}

criterion_group!(benches, chain_link, verify_100k);
criterion_main!(benches);
