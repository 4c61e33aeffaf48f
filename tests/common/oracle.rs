//! The stream as the ground truth: every record it holds, read with the
//! SDK, and the check of an item's history against those records.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::values::streams_item_to_json;
use super::{apply_entry, dyn_eq, TestEnv};

impl TestEnv {
    /// Every record the table's stream holds now (parents' shards first).
    pub async fn read_stream(&self, table: &str) -> Vec<StreamRec> {
        use aws_sdk_dynamodbstreams::types::ShardIteratorType;
        let desc = self
            .ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe table");
        let arn = desc
            .table()
            .and_then(|t| t.latest_stream_arn())
            .expect("table has a stream")
            .to_string();
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let d = self
                .streams
                .describe_stream()
                .stream_arn(&arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
                .await
                .expect("describe stream");
            let sd = d.stream_description().expect("stream description");
            for s in sd.shards() {
                shards.push((
                    s.shard_id().unwrap_or_default().to_string(),
                    s.parent_shard_id().map(str::to_string),
                ));
            }
            start = sd.last_evaluated_shard_id().map(str::to_string);
            if start.is_none() {
                break;
            }
        }
        // Parents before children (stable otherwise).
        let mut ordered: Vec<(String, Option<String>)> = Vec::new();
        while !shards.is_empty() {
            let before = shards.len();
            let known: Vec<String> = shards.iter().map(|s| s.0.clone()).collect();
            let (ready, rest): (Vec<_>, Vec<_>) = shards.into_iter().partition(|(_, p)| {
                p.as_ref()
                    .is_none_or(|p| !known.contains(p) || ordered.iter().any(|o| &o.0 == p))
            });
            shards = rest;
            ordered.extend(ready);
            assert!(shards.len() < before || shards.is_empty(), "shard cycle");
        }
        let mut out = Vec::new();
        for (shard_id, _) in ordered {
            let mut it = self
                .streams
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(&shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("get shard iterator")
                .shard_iterator()
                .map(str::to_string);
            let mut empty_pages = 0;
            while let Some(iter) = it {
                let page = self
                    .streams
                    .get_records()
                    .shard_iterator(iter)
                    .send()
                    .await
                    .expect("get records");
                for r in page.records() {
                    let d = r.dynamodb().expect("record body");
                    out.push(StreamRec {
                        shard_id: shard_id.clone(),
                        sequence_number: d.sequence_number().unwrap_or_default().to_string(),
                        event: r
                            .event_name()
                            .map(|e| e.as_str().to_string())
                            .unwrap_or_default(),
                        keys: d.keys().map(streams_item_to_json).unwrap_or(json!({})),
                        old: d.old_image().map(streams_item_to_json),
                        new: d.new_image().map(streams_item_to_json),
                    });
                }
                // An open shard never ends: a few empty pages in a row mean
                // "caught up" (one alone may not, on a Kinesis-backed emulator).
                if page.records().is_empty() {
                    empty_pages += 1;
                    if empty_pages >= 3 {
                        break;
                    }
                } else {
                    empty_pages = 0;
                }
                it = page.next_shard_iterator().map(str::to_string);
            }
        }
        out
    }

    /// Reads the stream until it holds at least `n` records (emulators such
    /// as LocalStack deliver asynchronously); panics on more than `n`.
    pub async fn read_stream_exactly(&self, table: &str, n: usize) -> Vec<StreamRec> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let recs = self.read_stream(table).await;
            assert!(
                recs.len() <= n,
                "stream of {table} holds {} records, expected {n} (a no-op write?)",
                recs.len()
            );
            if recs.len() == n {
                return recs;
            }
            assert!(
                Instant::now() < deadline,
                "stream of {table} holds {} records after 60 s, expected {n}",
                recs.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// One stream record, values in DynamoDB JSON.
#[derive(Clone, Debug)]
pub struct StreamRec {
    pub shard_id: String,
    pub sequence_number: String,
    pub event: String,
    pub keys: Value,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// A canonical string for an item key (object keys sorted by serde_json).
pub fn key_id(key: &Value) -> String {
    let sorted: BTreeMap<&String, &Value> = key.as_object().expect("key map").iter().collect();
    serde_json::to_string(&sorted).unwrap()
}

/// Stream records grouped by item key, in stream order.
pub fn by_item(recs: &[StreamRec]) -> BTreeMap<String, Vec<StreamRec>> {
    let mut m: BTreeMap<String, Vec<StreamRec>> = BTreeMap::new();
    for r in recs {
        m.entry(key_id(&r.keys)).or_default().push(r.clone());
    }
    m
}

/// Checks one item's history against the stream records for that item and
/// the item the table holds now:
/// - the same sequence numbers in the same (stream) order: none lost, none
///   doubled;
/// - per entry: table, key, event, shard, actor (`updated_by` of the new
///   image), `actor_source`, `last_writer` (the old image's, when the new
///   image has none), no TTL mark; its changes applied to the record's
///   old image give the record's new image;
/// - all changes applied in order from nothing give `current`.
pub fn check_item_history(
    table: &str,
    entries: &[Value],
    recs: &[StreamRec],
    current: Option<&Value>,
) {
    let got: Vec<&str> = entries
        .iter()
        .map(|e| {
            e["sequence_number"]
                .as_str()
                .expect("sequence_number string")
        })
        .collect();
    let want: Vec<&str> = recs.iter().map(|r| r.sequence_number.as_str()).collect();
    assert_eq!(
        got,
        want,
        "history sequence numbers differ from the stream's for {table} {}",
        recs.first().map(|r| key_id(&r.keys)).unwrap_or_default()
    );
    let mut state: Option<Value> = None;
    for (e, r) in entries.iter().zip(recs) {
        let ctx = format!("entry {}", serde_json::to_string(e).unwrap());
        assert_eq!(e["table"], json!(table), "{ctx}: table");
        assert_eq!(key_id(&e["key"]), key_id(&r.keys), "{ctx}: key");
        assert_eq!(e["event"], json!(r.event), "{ctx}: event");
        assert_eq!(e["shard_id"], json!(r.shard_id), "{ctx}: shard_id");
        let t = e["event_time"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: event_time"));
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap_or_else(|err| panic!("{ctx}: event_time {t:?} not RFC 3339: {err}"));
        let actor_of = |img: &Option<Value>| {
            img.as_ref()
                .and_then(|i| i.get("updated_by"))
                .and_then(|a| a.get("S"))
                .cloned()
        };
        // Provenance: the actor only from the new image; a REMOVE's (or an
        // attribute-dropping MODIFY's) old value is the last writer, never
        // the actor; an attribute the write left as it was is marked so.
        let (new_actor, old_actor) = (actor_of(&r.new), actor_of(&r.old));
        let want_source = match (&new_actor, &old_actor) {
            (Some(n), Some(o)) if r.event == "MODIFY" && n == o => json!("item-unchanged"),
            (Some(_), _) => json!("item"),
            (None, _) => Value::Null,
        };
        assert_eq!(
            e["actor"],
            new_actor.clone().unwrap_or(Value::Null),
            "{ctx}: actor"
        );
        assert_eq!(e["actor_source"], want_source, "{ctx}: actor_source");
        let want_last = if new_actor.is_none() {
            old_actor.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        assert_eq!(
            e.get("last_writer").cloned().unwrap_or(Value::Null),
            want_last,
            "{ctx}: last_writer"
        );
        assert!(
            matches!(e.get("ttl_expiry"), None | Some(Value::Bool(false))),
            "{ctx}: no user write is a TTL expiry"
        );
        let changes = e["changes"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: changes array"));
        match r.event.as_str() {
            "INSERT" | "REMOVE" => {
                for c in changes {
                    let p = c["path"].as_str().unwrap_or_default();
                    assert!(
                        !p.contains('.') && !p.contains('['),
                        "{ctx}: INSERT/REMOVE change one top-level attribute each"
                    );
                }
            }
            _ => {}
        }

        // The entry alone: old image + changes == new image.
        let mut img = Some(r.old.clone().unwrap_or(json!({})));
        apply_entry(&mut img, changes).unwrap_or_else(|err| panic!("{ctx}: {err}"));
        assert_images_eq(img.as_ref(), r.new.as_ref(), &ctx);

        // The chain from nothing.
        apply_entry(&mut state, changes)
            .unwrap_or_else(|err| panic!("{ctx} (replaying from nothing): {err}"));
        assert_images_eq(state.as_ref(), r.new.as_ref(), &format!("{ctx} (replay)"));
    }
    assert_images_eq(
        state.as_ref(),
        current,
        &format!("replaying every entry of {table} vs the table's item now"),
    );
}

fn assert_images_eq(got: Option<&Value>, want: Option<&Value>, ctx: &str) {
    let empty = json!({});
    let norm = |v: Option<&Value>| v.filter(|v| v != &&empty).cloned();
    let (g, w) = (norm(got), norm(want));
    let same = match (&g, &w) {
        (None, None) => true,
        (Some(a), Some(b)) => dyn_eq(&json!({ "M": a }), &json!({ "M": b })),
        _ => false,
    };
    assert!(
        same,
        "{ctx}:\n  rebuilt: {}\n  expected: {}",
        g.map(|v| v.to_string()).unwrap_or("nothing".into()),
        w.map(|v| v.to_string()).unwrap_or("nothing".into())
    );
}
