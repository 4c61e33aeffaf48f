//! What the proof side costs, measured (BENCHMARKS.md, "Proof"):
//!
//! 1. the chain's extra bytes and write units per entry (its `hash` and
//!    `prev_hash` inline in the entry's item: no extra item), by DynamoDB's
//!    sizing rules as the store computes them (`write_cost`), over
//!    entries of many sizes;
//! 2. digest writes per hour per stream: the daemon's digest writer left to
//!    write heartbeats against the emulator, counted; and a digest's size and
//!    write units by the number of shards it lists;
//! 3. `verify` (the release binary) over a 100,000-entry trail in the
//!    emulator: entries per second and peak memory (max RSS).
//!
//! The trail is written straight into the audit table with BatchWriteItem in
//! the layout the store writes (the daemon through moto would take an hour),
//! with checkpoints and signed digests by the library's own code, so
//! `verify` must find it intact.
//!
//! `cargo bench --bench proof_trail [-- --quick] [-- --out FILE.json]`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use futures_util::{stream, StreamExt};
use tokio_util::sync::CancellationToken;

use common::{TestEnv, BIN};
use ddb_audit::daemon::digests::{DigestSettings, DigestWriter};
use ddb_audit::entry::{AuditEntry, Change};
use ddb_audit::proof::digest::{next_digest, DigestInput, ShardHead};
use ddb_audit::proof::sign::Ed25519Signer;
use ddb_audit::proof::{ChainState, Link};
use ddb_audit::retry::RetryPolicy;
use ddb_audit::store::dynamo::{
    encode_entry, entry_sort_key, item_partition_key, write_cost, DynamoStore,
};
use ddb_audit::store::{CheckpointStore, ShardCheckpoint, StreamRow, TableNames};
use ddb_audit::value::AttrValue;

const PRIVATE_PEM: &str = include_str!("../src/proof/testdata/ed25519-private.pem");

fn entry(
    table: &str,
    arn: &str,
    shard: &str,
    key: u64,
    seq: &str,
    changes: usize,
    width: usize,
) -> AuditEntry {
    AuditEntry {
        shard_id: shard.into(),
        changes: (0..changes)
            .map(|i| Change {
                path: format!("profile.field_{i}"),
                old: Some(AttrValue::S(format!("{:x<width$}", format!("old-{i}-")))),
                new: Some(AttrValue::S(format!("{:x<width$}", format!("new-{i}-")))),
                added: None,
                removed: None,
            })
            .collect(),
        actor_source: Some(ddb_audit::entry::ActorSource::Item),
        stream_arn: arn.into(),
        ..AuditEntry::fixture(
            table,
            [("pk".to_string(), AttrValue::S(format!("user-{key}")))].into(),
            seq,
        )
    }
}

/// 1. Bytes and write units the chain adds to one entry's write.
fn chain_cost() -> serde_json::Value {
    let link = Link {
        prev_hash: Some([7; 32]),
        hash: [9; 32],
    };
    println!(
        "1. chain cost per entry (DynamoDB sizing rules; WCU: the item's and its index rows')"
    );
    println!(
        "   {:>10} {:>12} {:>12} {:>9} {:>9}",
        "entry JSON", "item bytes", "+ chain", "WCU", "+ chain"
    );
    let mut shapes = Vec::new();
    for (changes, width) in [(1, 10), (3, 40), (10, 40), (10, 80), (30, 80), (60, 120)] {
        let e = entry("orders", "arn:s", "shardId-1", 1, "100", changes, width);
        let plain = write_cost(&e, None, false).expect("cost");
        let linked = write_cost(&e, Some(&link), false).expect("cost");
        let json = encode_entry(&e).expect("json").len();
        println!(
            "   {json:>10} {:>12} {:>+12} {:>9} {:>+9}",
            plain.item_bytes,
            linked.item_bytes as i64 - plain.item_bytes as i64,
            plain.write_units,
            linked.write_units as i64 - plain.write_units as i64
        );
        shapes.push(
            serde_json::json!({"entry_json_bytes": json, "item_bytes": plain.item_bytes,
            "extra_bytes": linked.item_bytes - plain.item_bytes, "write_units": plain.write_units,
            "extra_write_units": linked.write_units - plain.write_units}),
        );
    }
    // Sizes spread evenly over 200 B … 8 KB: how often the 141 bytes cross
    // a 1 KB boundary, i.e. the mean extra write units per entry.
    let (mut n, mut extra_units, mut units, mut extra_bytes) = (0u64, 0u64, 0u64, 0u64);
    for width in (4..400).step_by(3) {
        for changes in [1usize, 2, 5, 10] {
            let e = entry("orders", "arn:s", "shardId-1", 1, "100", changes, width);
            let plain = write_cost(&e, None, false).expect("cost");
            let linked = write_cost(&e, Some(&link), false).expect("cost");
            n += 1;
            units += plain.write_units as u64;
            extra_units += (linked.write_units - plain.write_units) as u64;
            extra_bytes += (linked.item_bytes - plain.item_bytes) as u64;
        }
    }
    let mean_units = extra_units as f64 / n as f64;
    println!(
        "   over {n} entry sizes from 200 B to 8 KB: +{} bytes each, +{mean_units:.3} write units \
         per entry on {:.2} (+{:.1} %)",
        extra_bytes / n,
        units as f64 / n as f64,
        100.0 * extra_units as f64 / units as f64
    );
    serde_json::json!({"shapes": shapes, "spread": {"entries": n, "extra_bytes_per_entry": extra_bytes / n,
        "mean_write_units": units as f64 / n as f64, "mean_extra_write_units": mean_units}})
}

/// A digest item's size as the store writes it (names + values).
fn digest_item_bytes(digest: &str, signature: &str, arn: &str) -> usize {
    let attrs: [(&str, usize); 9] = [
        ("pk", "#digests|".len() + arn.len()),
        ("sk", 20),
        ("digest", digest.len()),
        ("hash", 64),
        ("signature", signature.len()),
        ("table_name", "orders".len()),
        ("stream_arn", arn.len()),
        ("number", 2),
        ("written_at", 24),
    ];
    attrs.iter().map(|(k, v)| k.len() + v).sum()
}

/// 2b. A digest's size by the number of shards it lists.
async fn digest_sizes(arn: &str) -> serde_json::Value {
    let signer = Ed25519Signer::from_pem(PRIVATE_PEM, "bench").expect("key");
    let mut out = Vec::new();
    println!("   digest size by shards listed (Ed25519-signed):");
    for shards in [1usize, 4, 16, 64] {
        let heads: Vec<ShardHead> = (0..shards)
            .map(|i| ShardHead {
                shard_id: format!("shardId-00000001700000000000-{i:08x}"),
                parent_shard_id: Some("shardId-00000001690000000000-0000abcd".into()),
                status: "open".into(),
                size: 123_456,
                root: hex::encode([i as u8; 32]),
                last_hash: Some(hex::encode([1; 32])),
                last_sequence_number: Some("4000000000012345678901".into()),
            })
            .collect();
        let (_, sealed) = next_digest(DigestInput {
            table: "orders",
            stream_arn: arn,
            previous: None,
            shards: heads,
            time: chrono::Utc::now(),
            is_final: false,
            interval_secs: 60,
            retention_days: None,
            signer: Some(&signer),
        })
        .await
        .expect("digest");
        let bytes = digest_item_bytes(
            &sealed.digest,
            sealed.signature.as_deref().unwrap_or(""),
            arn,
        );
        let units = bytes.div_ceil(1024);
        println!("   {shards:>4} shards: {bytes:>6} bytes, {units} write units");
        out.push(serde_json::json!({"shards": shards, "bytes": bytes, "write_units": units}));
    }
    serde_json::Value::Array(out)
}

/// Writes `per_shard` chained entries into each of `shards` shards of one
/// stream, 25 an item batch, 8 batches in flight; returns each shard's chain.
async fn seed(
    env: &TestEnv,
    audit: &str,
    table: &str,
    arn: &str,
    shards: usize,
    per_shard: usize,
) -> Vec<(String, ChainState, String)> {
    let mut heads = Vec::new();
    let mut items: Vec<HashMap<String, AttributeValue>> = Vec::with_capacity(shards * per_shard);
    let s = |v: String| AttributeValue::S(v);
    for shard in 0..shards {
        let shard_id = format!("shardId-00000001700000000000-{shard:08x}");
        let mut chain = ChainState::default();
        let mut last = String::new();
        for i in 0..per_shard {
            let seq = format!("{}{:020}", shard + 1, i as u64 * 10);
            // 2,500 items a shard, ten versions each.
            let key = (shard * 2500 + i % 2500) as u64;
            let e = entry(table, arn, &shard_id, key, &seq, 3, 40);
            let link = chain.link_entry(&e).expect("hash");
            let mut item = HashMap::from([
                ("pk".to_string(), s(item_partition_key(table, &e.key))),
                ("sk".to_string(), s(entry_sort_key(arn, &seq))),
                ("entry".to_string(), s(encode_entry(&e).expect("json"))),
                ("hash".to_string(), s(hex::encode(link.hash))),
                ("table_name".to_string(), s(table.into())),
                ("stream_arn".to_string(), s(arn.into())),
                ("shard_id".to_string(), s(shard_id.clone())),
                ("sequence_number".to_string(), s(seq.clone())),
                ("event".to_string(), s("MODIFY".into())),
            ]);
            if let Some(p) = link.prev_hash {
                item.insert("prev_hash".into(), s(hex::encode(p)));
            }
            items.push(item);
            last = seq;
        }
        heads.push((shard_id, chain, last));
    }
    let started = Instant::now();
    let total = items.len();
    let mut batches: Vec<Vec<HashMap<String, AttributeValue>>> = Vec::new();
    let mut items = items.into_iter();
    loop {
        let batch: Vec<_> = items.by_ref().take(25).collect();
        if batch.is_empty() {
            break;
        }
        batches.push(batch);
    }
    stream::iter(batches)
        .for_each_concurrent(8, |batch| async move {
            let mut requests: Vec<WriteRequest> = batch
                .into_iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(item))
                                .build()
                                .expect("put"),
                        )
                        .build()
                })
                .collect();
            while !requests.is_empty() {
                let out = env
                    .ddb
                    .batch_write_item()
                    .request_items(audit, requests)
                    .send()
                    .await
                    .expect("BatchWriteItem");
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(audit))
                    .cloned()
                    .unwrap_or_default();
            }
        })
        .await;
    println!(
        "   seeded {total} entries in {shards} shards in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    heads
}

/// A process's peak RSS so far (VmHWM, MB): it starts afresh at exec, unlike
/// wait4's `ru_maxrss`, which counts the forking parent's pages too.
fn vm_hwm_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<f64>()
        .ok()
        .map(|kb| kb / 1024.0)
}

/// Samples a child's VmHWM every 20 ms until it exits (start it before
/// reading the child's output: a zombie has no VmHWM).
fn sample_peak(pid: u32) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let mut peak = 0.0f64;
        // Gone (a zombie, then reaped): the last reading was the peak.
        while let Some(mb) = vm_hwm_mb(pid) {
            peak = peak.max(mb);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// CPU seconds (user + system, from wait4) and exit status of a child.
fn wait_measured(child: &std::process::Child) -> (f64, i32) {
    let pid = child.id();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our own unwaited child; the pointers are valid.
    let rc = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert!(rc > 0, "wait4 failed");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
    (cpu, libc::WEXITSTATUS(status))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick" || a == "--test");
    let out_file = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1).cloned());
    let (shards, per_shard, heartbeat_secs) = if quick { (2, 500, 3) } else { (4, 25_000, 30) };

    let cost = chain_cost();

    let env = TestEnv::new("bench-proof");
    let table = env.name("orders");
    let names = TableNames {
        streams: env.name("streams"),
        shards: env.name("shards"),
        audit: env.name("entries"),
    };
    let arn = format!(
        "arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/2026-11-23T00:00:00.000"
    );
    let key_file = env.write_file("digest-key.pem", PRIVATE_PEM);
    let base = std::fs::read_to_string(env.config(&[&table])).expect("config");
    let config = env.write_file(
        "bench.toml",
        &format!(
            "{base}\n[proof]\nsigning_key_file = \"{}\"\ndigest_interval_secs = 1\n",
            key_file.display()
        ),
    );
    env.init(&config).await;
    let store = DynamoStore::new(env.ddb.clone(), names.clone());

    println!("2. digest writes per hour per stream");
    let heads = seed(&env, &names.audit, &table, &arn, shards, per_shard).await;
    store
        .save_stream(&StreamRow {
            table_name: table.clone(),
            stream_arn: arn.clone(),
            is_enabled: true,
            drained: false,
            updated_at: chrono::Utc::now(),
        })
        .await
        .expect("stream row");
    for (shard_id, chain, last) in &heads {
        store
            .save_shard(&ShardCheckpoint {
                sequence_no: Some(last.clone()),
                caught_up: true,
                chain: Some(chain.clone()),
                ..ShardCheckpoint::fresh(&table, &arn, shard_id, None)
            })
            .await
            .expect("checkpoint");
    }
    let signer = Ed25519Signer::from_pem(PRIVATE_PEM, "bench").expect("key");
    let interval = Duration::from_secs(1);
    let writer = Arc::new(DigestWriter::new(
        store.clone(),
        store.clone(),
        vec![table.clone()],
        DigestSettings {
            interval,
            retention_days: None,
            signer: Some(Arc::new(signer)),
            retry: RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(2)),
        },
    ));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let beating = {
        let (writer, stop) = (writer.clone(), stop.clone());
        tokio::spawn(async move { writer.heartbeats(stop).await })
    };
    tokio::time::sleep(Duration::from_secs(heartbeat_secs)).await;
    stop.cancel();
    beating.await.expect("heartbeats");
    let elapsed = started.elapsed().as_secs_f64();
    let written = store.digests(&arn).await.expect("digests").len();
    // A heartbeat sleeps the interval, then writes: its period is the
    // interval plus one round's own time.
    let round_secs = (elapsed / written.max(1) as f64 - interval.as_secs_f64()).max(0.0);
    let per_hour = |interval: f64| 3600.0 / (interval + round_secs);
    println!(
        "   {written} digests in {elapsed:.1} s at digest_interval_secs = 1 (a round takes \
         {round_secs:.2} s): per stream and hour, {:.0} at 1 s, {:.1} at the default 60 s, {:.1} \
         at 300 s; each is one digest PutItem and one stream-row UpdateItem",
        per_hour(1.0),
        per_hour(60.0),
        per_hour(300.0)
    );
    let sizes = digest_sizes(&arn).await;
    let done = CancellationToken::new();
    writer.round(true, &done, &done).await;

    println!("3. verify over the trail (this build's binary, against the emulator)");
    let entries = (shards * per_shard) as u64;
    let started = Instant::now();
    let child = std::process::Command::new(BIN)
        .args([
            "verify",
            "--config",
            config.to_str().expect("path"),
            "--json",
        ])
        .envs(env.emu.child_env())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn verify");
    let mut child = child;
    let sampler = sample_peak(child.id());
    let mut stdout = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().expect("stdout"), &mut stdout)
        .expect("read");
    let (cpu_secs, code) = wait_measured(&child);
    let rss_mb = sampler.join().expect("sampler");
    let wall = started.elapsed().as_secs_f64();
    let summary: serde_json::Value = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["summary"] == serde_json::json!(true))
        .expect("verify's summary line");
    assert_eq!(code, 0, "the seeded trail must verify intact:\n{stdout}");
    assert_eq!(summary["entries"], serde_json::json!(entries), "{summary}");
    println!(
        "   {entries} entries, {} digests: intact in {wall:.1} s wall ({:.0} entries/s by verify's \
         own clock; the emulator's Scan is most of it), verify's own CPU {cpu_secs:.1} s \
         ({:.0} entries per CPU second), peak RSS {rss_mb:.1} MB",
        summary["digests"],
        summary["entries_per_second"].as_f64().unwrap_or(0.0),
        entries as f64 / cpu_secs.max(0.001)
    );
    let result = serde_json::json!({
        "chain_cost": cost,
        "digests": {"interval_secs": 1, "seconds": elapsed, "written": written,
            "round_seconds": round_secs, "per_hour_at_60s": per_hour(60.0), "sizes": sizes},
        "verify": {"entries": entries, "shards": shards, "wall_seconds": wall,
            "entries_per_second": summary["entries_per_second"], "cpu_seconds": cpu_secs,
            "peak_rss_mb": rss_mb},
    });
    if let Some(path) = out_file {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&result).expect("json") + "\n",
        )
        .expect("write --out");
    }
}
