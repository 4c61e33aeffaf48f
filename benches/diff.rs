//! Diff + audit-entry encoding, per record, on one core: `build_entry` (the
//! field-level diff of old and new image, actor, key, event time) followed by
//! `serde_json::to_string` of the entry (its stored form). Decode-free: the
//! input is an already decoded `StreamRecord`.
//!
//! Cases: items of ~1 KB, ~10 KB and ~350 KB; flat (scalar top-level
//! attributes) and nested (maps of maps with lists; the changes are at leaf
//! paths like `doc_3.rules[1].conditions[0].value`); one, ten, or all leaf
//! attributes changed. Throughput is one record per iteration, so criterion's
//! `thrpt` is records per second.
//!
//! `cargo bench --bench diff`; smoke mode (each case once): `-- --test`.

use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use ddb_audit::entry::build_entry;
use ddb_audit::stream::StreamRecord;
use ddb_audit::value::{AttrValue, Item};

/// Bytes of one leaf value (a string), so that sizes come out as asked.
const LEAF_BYTES: usize = 40;

fn s(x: impl Into<String>) -> AttrValue {
    AttrValue::S(x.into())
}

fn leaf_text(i: usize, version: u32) -> String {
    let mut t = format!("v{version}-leaf-{i}-");
    while t.len() < LEAF_BYTES {
        t.push('x');
    }
    t
}

/// Approximate stored size of an item, DynamoDB-style (names + values).
fn approx_size(v: &AttrValue) -> usize {
    match v {
        AttrValue::S(x) | AttrValue::N(x) => x.len(),
        AttrValue::B(x) => x.len(),
        AttrValue::Bool(_) | AttrValue::Null => 1,
        AttrValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| k.len() + approx_size(v))
                .sum::<usize>()
        }
        AttrValue::L(l) => 3 + l.iter().map(approx_size).sum::<usize>(),
        AttrValue::Ss(x) | AttrValue::Ns(x) => x.iter().map(String::len).sum(),
        AttrValue::Bs(x) => x.iter().map(Vec::len).sum(),
        AttrValue::Redacted(c) => c.len(),
    }
}

fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + approx_size(v)).sum()
}

/// Which leaves carry the new version.
type Changed = Box<dyn Fn(usize) -> bool>;

#[derive(Clone, Copy, Debug)]
enum Shape {
    Flat,
    Nested,
}

/// An item with `leaves` leaf values; `changed(i)` says which leaves carry
/// the new version.
fn make_item(shape: Shape, leaves: usize, changed: &dyn Fn(usize) -> bool) -> Item {
    let version = |i: usize| if changed(i) { 2 } else { 1 };
    let mut item = Item::new();
    item.insert("pk".into(), s("customer#000123"));
    item.insert("updated_by".into(), s("alice"));
    match shape {
        Shape::Flat => {
            for i in 0..leaves {
                item.insert(format!("attr_{i:05}"), s(leaf_text(i, version(i))));
            }
        }
        Shape::Nested => {
            // doc_<d>: { "name": .., "rules": [ { "id": N, "conditions": [
            //   { "field": S, "value": <leaf> }, ... 4 ] }, ... 4 ] }
            // 16 leaves per document.
            let docs = leaves.div_ceil(16);
            let mut i = 0;
            for d in 0..docs {
                let mut rules = Vec::new();
                for r in 0..4 {
                    let mut conditions = Vec::new();
                    for c in 0..4 {
                        let mut cond = Item::new();
                        cond.insert("field".into(), s(format!("f{c}")));
                        cond.insert("value".into(), s(leaf_text(i, version(i))));
                        conditions.push(AttrValue::M(cond));
                        i += 1;
                    }
                    let mut rule = Item::new();
                    rule.insert("id".into(), AttrValue::N(format!("{r}")));
                    rule.insert("conditions".into(), AttrValue::L(conditions));
                    rules.push(AttrValue::M(rule));
                }
                let mut doc = Item::new();
                doc.insert("name".into(), s(format!("document {d}")));
                doc.insert("rules".into(), AttrValue::L(rules));
                item.insert(format!("doc_{d:04}"), AttrValue::M(doc));
            }
        }
    }
    item
}

/// Leaves needed for an item of about `bytes`.
fn leaves_for(shape: Shape, bytes: usize) -> usize {
    let per_leaf = match shape {
        // name (10) + value (40)
        Shape::Flat => 10 + LEAF_BYTES,
        // value (5+40) + field (5+2) + map overhead, plus the rule/doc share
        Shape::Nested => 66,
    };
    (bytes / per_leaf).max(16)
}

fn record(old: Item, new: Item) -> StreamRecord {
    let mut keys = Item::new();
    keys.insert("pk".into(), s("customer#000123"));
    StreamRecord {
        event_id: "4b0c1a2e3f".into(),
        event_name: "MODIFY".into(),
        keys,
        size_bytes: Some((item_size(&old) + item_size(&new)) as i64),
        new_image: Some(new),
        old_image: Some(old),
        sequence_number: "110000000001745442301".into(),
        approximate_creation: Some(Utc.with_ymd_and_hms(2026, 11, 23, 19, 5, 0).unwrap()),
        user_identity: None,
        problem: None,
        raw: None,
    }
}

fn bench_diff(c: &mut Criterion) {
    let mut group = c.benchmark_group("diff_entry");
    group.throughput(Throughput::Elements(1));
    for shape in [Shape::Flat, Shape::Nested] {
        for (size_name, bytes) in [("1KB", 1_000), ("10KB", 10_000), ("350KB", 350_000)] {
            let leaves = leaves_for(shape, bytes);
            // Spread the changed leaves over the item, not just its start.
            let stride_ten = (leaves / 10).max(1);
            let cases: [(&str, Changed); 3] = [
                ("1_changed", Box::new(move |i| i == leaves / 2)),
                (
                    "10_changed",
                    Box::new(move |i| i % stride_ten == 0 && i / stride_ten < 10),
                ),
                ("all_changed", Box::new(|_| true)),
            ];
            for (changed_name, changed) in cases {
                let old = make_item(shape, leaves, &|_| false);
                let new = make_item(shape, leaves, &*changed);
                let rec = record(old, new);
                let id = format!("{shape:?}/{size_name}/{changed_name}").to_lowercase();
                // Sanity: the sizes and change counts are what the name says.
                let probe = build_entry(
                    "orders",
                    "arn:s/stream/L",
                    "shard-1",
                    &rec,
                    Some("updated_by"),
                );
                let json = serde_json::to_string(&probe).unwrap();
                eprintln!(
                    "{id}: item ~{} B, {} changes, entry JSON {} B",
                    item_size(rec.new_image.as_ref().unwrap()),
                    probe.changes.len(),
                    json.len()
                );
                group.bench_with_input(BenchmarkId::from_parameter(&id), &rec, |b, rec| {
                    b.iter(|| {
                        let entry = build_entry(
                            "orders",
                            "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-11-23T00:00:00.000",
                            "shardId-00000001795392000000-0a1b2c3d",
                            black_box(rec),
                            Some("updated_by"),
                        );
                        let json = serde_json::to_string(&entry).unwrap();
                        black_box(json)
                    })
                });
            }
        }
    }
    group.finish();

    // What storing an entry adds for ~1 KB items: deflating its JSON into
    // the `entry_z` body (src/store/dynamo.rs, `entry_body`).
    let mut group = c.benchmark_group("entry_item");
    group.throughput(Throughput::Elements(1));
    for shape in [Shape::Flat, Shape::Nested] {
        let leaves = leaves_for(shape, 1_000);
        let cases: [(&str, Changed); 2] = [
            ("1_changed", Box::new(move |i| i == leaves / 2)),
            ("all_changed", Box::new(|_| true)),
        ];
        for (changed_name, changed) in cases {
            let rec = record(
                make_item(shape, leaves, &|_| false),
                make_item(shape, leaves, &*changed),
            );
            let entry = build_entry(
                "orders",
                "arn:s/stream/L",
                "shard-1",
                &rec,
                Some("updated_by"),
            );
            let json = serde_json::to_string(&entry).unwrap();
            let (name, body) = ddb_audit::store::dynamo::entry_body(&json);
            let stored = match &body {
                aws_sdk_dynamodb::types::AttributeValue::B(b) => b.as_ref().len(),
                _ => json.len(),
            };
            let id = format!("{shape:?}/1KB/{changed_name}").to_lowercase();
            eprintln!(
                "body {id}: JSON {} B stored as `{name}`, {stored} B",
                json.len()
            );
            group.bench_with_input(BenchmarkId::from_parameter(&id), &json, |b, json| {
                b.iter(|| black_box(ddb_audit::store::dynamo::entry_body(black_box(json))))
            });
        }
    }
    group.finish();
}

/// The same path with `[redaction]`: `redact_record` (both images, in place:
/// the covered values replaced by their HMAC commitments) before `build_entry`
/// and the JSON. Flat items: one covered attribute, the changed one; nested items: every
/// leaf covered (`*.rules[*].conditions[*].value`), the worst case (two
/// HMACs per leaf). One leaf changed.
fn bench_redact(c: &mut Criterion) {
    use ddb_audit::redact::{Pattern, RedactionKey, Redactor};
    use std::sync::Arc;
    let key = Arc::new(RedactionKey::from_bytes(vec![7; 32]).unwrap());
    let mut group = c.benchmark_group("redact_entry");
    group.throughput(Throughput::Elements(1));
    for shape in [Shape::Flat, Shape::Nested] {
        for (size_name, bytes) in [("1KB", 1_000), ("10KB", 10_000)] {
            let leaves = leaves_for(shape, bytes);
            let path = match shape {
                // The changed attribute: the secret changed.
                Shape::Flat => format!("attr_{:05}", leaves / 2),
                Shape::Nested => "*.rules[*].conditions[*].value".to_string(),
            };
            let redactor = Redactor::new(
                key.clone(),
                vec![Pattern::parse(&path, "redaction.paths").unwrap()],
            );
            let old = make_item(shape, leaves, &|_| false);
            let new = make_item(shape, leaves, &|i| i == leaves / 2);
            let rec = record(old, new);
            let id = format!("{shape:?}/{size_name}/1_changed").to_lowercase();
            // Sanity: the path covers what the case says.
            let mut probe = rec.clone();
            redactor.redact_record(&mut probe);
            let probe = build_entry("orders", "a", "s", &probe, None);
            let json = serde_json::to_string(&probe).unwrap();
            eprintln!(
                "redacted {id}: {} commitments in the entry",
                json.matches("hmac-sha256:").count()
            );
            // The record is redacted in place in the daemon (it owns the
            // page); the copy each iteration needs is made outside the timing.
            group.bench_with_input(BenchmarkId::from_parameter(&id), &rec, |b, rec| {
                b.iter_batched_ref(|| rec.clone(), |redacted| {
                    redactor.redact_record(black_box(redacted));
                    let entry = build_entry(
                        "orders",
                        "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-11-23T00:00:00.000",
                        "shardId-00000001795392000000-0a1b2c3d",
                        redacted,
                        Some("updated_by"),
                    );
                    black_box(serde_json::to_string(&entry).unwrap())
                }, criterion::BatchSize::SmallInput)
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: 18 cases must fit the `make bench` budget on a busy 2-core box.
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .nresamples(20_000)
        .without_plots();
    targets = bench_diff, bench_redact
}
criterion_main!(benches);
