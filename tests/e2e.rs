//! End-to-end: the `ddb-audit` binary against a DynamoDB + Streams emulator
//! (moto's server from ./.venv, started per test on a free port; or whatever
//! `AWS_ENDPOINT_URL` points at, e.g. LocalStack). See tests/common.
//!
//! The stream is the ground truth: the tests read it themselves and demand
//! exactly one audit entry per record, whose changes — applied by the test's
//! own patch code — rebuild every image.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use common::*;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

// ---------------------------------------------------------------------------
// A random workload: every write changes the item (the service emits no
// record for a no-op write, moto does), so N writes = N stream records.
// ---------------------------------------------------------------------------

fn seed() -> u64 {
    let seed = std::env::var("DDB_AUDIT_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("workload seed: {seed} (DDB_AUDIT_E2E_SEED={seed} to replay)");
    seed
}

fn item_key(i: usize) -> Value {
    json!({ "pk": { "S": format!("item-{i}") }, "sk": { "N": format!("{}", i * 10 + 1) } })
}

const ACTORS: &[&str] = &["alice", "bob", "carol", "deploy-bot", "migration-2026-11"];
const WORDS: &[&str] = &[
    "red",
    "green",
    "blue",
    "enterprise",
    "pro",
    "free",
    "",
    "ümlaut",
    "a.b[0]",
];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "-7",
    "3.14",
    "1000",
    "900",
    "1.50",
    "2.0",
    "-0.001",
    "1E+2",
    "12345678901234567890.123456789",
];

fn word(rng: &mut StdRng) -> String {
    WORDS.choose(rng).unwrap().to_string()
}

fn number(rng: &mut StdRng) -> String {
    NUMBERS.choose(rng).unwrap().to_string()
}

fn distinct_strings(rng: &mut StdRng, prefix: &str) -> Vec<String> {
    let n = rng.random_range(1..=4);
    let mut v: Vec<String> = (0..n)
        .map(|_| format!("{prefix}{}", rng.random_range(0..8)))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Any DynamoDB value, nested up to `depth`.
fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    let kinds = if depth == 0 { 8 } else { 10 };
    match rng.random_range(0..kinds) {
        0 => json!({ "S": word(rng) }),
        1 => json!({ "N": number(rng) }),
        2 => json!({ "BOOL": rng.random_bool(0.5) }),
        3 => json!({ "NULL": true }),
        4 => json!({ "B": common_b64(&[rng.random::<u8>(), rng.random::<u8>(), 0, 255]) }),
        5 => json!({ "SS": distinct_strings(rng, "s") }),
        6 => {
            let v: Vec<String> = distinct_strings(rng, "")
                .into_iter()
                .map(|s| format!("{}", s.parse::<i64>().unwrap() * 3 - 5))
                .collect();
            json!({ "NS": v })
        }
        7 => {
            let v: Vec<String> = distinct_strings(rng, "")
                .iter()
                .map(|s| common_b64(s.as_bytes()))
                .collect();
            json!({ "BS": v })
        }
        8 => {
            let n = rng.random_range(0..4);
            let mut m = Map::new();
            for _ in 0..n {
                let k = ["a", "b", "c-d", "e_f", "g"]
                    .choose(rng)
                    .unwrap()
                    .to_string();
                m.insert(k, random_value(rng, depth - 1));
            }
            json!({ "M": m })
        }
        _ => {
            let n = rng.random_range(0..4);
            json!({ "L": (0..n).map(|_| random_value(rng, depth - 1)).collect::<Vec<_>>() })
        }
    }
}

fn common_b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn line(rng: &mut StdRng) -> Value {
    json!({ "M": {
        "sku": { "S": format!("SKU-{}", rng.random_range(100..999)) },
        "qty": { "N": format!("{}", rng.random_range(1..20)) },
        "price": { "N": number(rng) },
    }})
}

/// A whole item: nested maps, lists, sets, numbers; `rev` makes it differ
/// from whatever was there.
fn random_item(rng: &mut StdRng, key: &Value, rev: usize) -> Value {
    let mut item = key.as_object().unwrap().clone();
    item.insert("rev".into(), json!({ "N": rev.to_string() }));
    let actor = ACTORS.choose(rng).unwrap().to_string();
    item.insert("updated_by".into(), json!({ "S": actor }));
    if rng.random_bool(0.9) {
        let mut profile = Map::new();
        let name = ["Ann", "Bob", "Cy"].choose(rng).unwrap().to_string();
        profile.insert("name".into(), json!({ "S": name }));
        profile.insert(
            "age".into(),
            json!({ "N": format!("{}", rng.random_range(18..90)) }),
        );
        if rng.random_bool(0.7) {
            profile.insert(
                "address".into(),
                json!({ "M": { "city": { "S": word(rng) }, "zip": { "S": "10115" } } }),
            );
        }
        item.insert("profile".into(), json!({ "M": profile }));
    }
    if rng.random_bool(0.8) {
        let n = rng.random_range(0..4);
        item.insert(
            "lines".into(),
            json!({ "L": (0..n).map(|_| line(rng)).collect::<Vec<_>>() }),
        );
    }
    if rng.random_bool(0.7) {
        item.insert("tags".into(), json!({ "SS": distinct_strings(rng, "t") }));
    }
    if rng.random_bool(0.5) {
        item.insert("balance".into(), json!({ "N": number(rng) }));
    }
    if rng.random_bool(0.6) {
        item.insert("meta".into(), random_value(rng, 3));
    }
    Value::Object(item)
}

struct Workload {
    table: String,
    items: usize,
    rng: StdRng,
    rev: usize,
    /// UpdateItem on a missing item (an INSERT). Off on moto, whose server
    /// emits two INSERT records for it where the service emits one.
    update_creates: bool,
}

impl Workload {
    fn new(env: &TestEnv, table: &str, items: usize, seed: u64) -> Workload {
        Workload {
            table: table.to_string(),
            items,
            rng: StdRng::seed_from_u64(seed),
            rev: 0,
            update_creates: !env.emu.is_moto(),
        }
    }

    /// One write that certainly changes one item.
    async fn step(&mut self, ddb: &aws_sdk_dynamodb::Client) {
        self.rev += 1;
        let rev = self.rev;
        let i = self.rng.random_range(0..self.items);
        let key = item_key(i);
        let cur = get(ddb, &self.table, &key).await;
        let rng = &mut self.rng;
        let Some(cur) = cur else {
            if !self.update_creates || rng.random_bool(0.8) {
                let item = random_item(rng, &key, rev);
                ddb.put_item()
                    .table_name(&self.table)
                    .set_item(Some(json_to_item(&item)))
                    .send()
                    .await
                    .expect("put item");
            } else {
                // An UpdateItem that creates the item: an INSERT too.
                update(
                    ddb,
                    &self.table,
                    &key,
                    "SET #rev = :rev, #updated_by = :a, #profile = :p",
                    &[
                        (":rev", json!({ "N": rev.to_string() })),
                        (":a", json!({ "S": ACTORS.choose(rng).unwrap() })),
                        (":p", json!({ "M": { "name": { "S": "New" } } })),
                    ],
                )
                .await;
            }
            return;
        };
        let has = |name: &str, t: &str| cur.get(name).and_then(|v| v.get(t)).is_some();
        match rng.random_range(0..10) {
            0 => {
                ddb.delete_item()
                    .table_name(&self.table)
                    .set_key(Some(json_to_item(&key)))
                    .send()
                    .await
                    .expect("delete item");
            }
            1 | 2 => {
                let item = random_item(rng, &key, rev);
                ddb.put_item()
                    .table_name(&self.table)
                    .set_item(Some(json_to_item(&item)))
                    .send()
                    .await
                    .expect("put item");
            }
            _ => {
                // SET rev always changes something; one more edit rides along.
                let mut set = vec!["#rev = :rev".to_string()];
                let mut remove: Vec<String> = Vec::new();
                let mut add: Vec<String> = Vec::new();
                let mut delete: Vec<String> = Vec::new();
                let mut vals: Vec<(&str, Value)> = vec![(":rev", json!({ "N": rev.to_string() }))];
                match rng.random_range(0..4) {
                    0 => remove.push("#updated_by".into()), // no actor; the old one is the last writer
                    1 => {}                                 // actor unchanged
                    _ => {
                        set.push("#updated_by = :a".into());
                        vals.push((":a", json!({ "S": ACTORS.choose(rng).unwrap() })));
                    }
                }
                let lines_len = cur
                    .get("lines")
                    .and_then(|l| l.get("L"))
                    .and_then(|l| l.as_array())
                    .map(|l| l.len());
                let profile_is_map = has("profile", "M");
                match rng.random_range(0..12) {
                    0 if profile_is_map => {
                        set.push("#profile.#name = :v".into());
                        vals.push((":v", json!({ "S": format!("Name {rev}") })));
                    }
                    1 if profile_is_map => {
                        set.push("#profile.#address = :v".into());
                        vals.push((":v", json!({ "M": { "city": { "S": word(rng) } } })));
                    }
                    2 if lines_len.is_some_and(|n| n > 0) => {
                        let j = rng.random_range(0..lines_len.unwrap());
                        set.push(format!("#lines[{j}].#qty = :v"));
                        vals.push((":v", json!({ "N": format!("{}", 100 + rev) })));
                    }
                    3 if lines_len.is_some() => {
                        set.push("#lines = list_append(#lines, :v)".into());
                        vals.push((":v", json!({ "L": [line(rng), line(rng)] })));
                    }
                    4 if lines_len.is_some() => {
                        set.push("#lines = list_append(:v, #lines)".into());
                        vals.push((":v", json!({ "L": [line(rng)] })));
                    }
                    5 if lines_len.is_some_and(|n| n > 0) => remove.push("#lines[0]".into()),
                    6 if !cur.contains_key("tags") || has("tags", "SS") => {
                        add.push("#tags :v".into());
                        vals.push((":v", json!({ "SS": distinct_strings(rng, "t") })));
                    }
                    7 if has("tags", "SS") => {
                        let t = cur["tags"]["SS"].as_array().unwrap();
                        let victim = t.choose(rng).unwrap().clone();
                        delete.push("#tags :v".into());
                        vals.push((":v", json!({ "SS": [victim] })));
                    }
                    // moto's ADD parses a number without a '.' with int(),
                    // so "1E+2" makes it answer 500: keep ADD off those.
                    8 if !cur.contains_key("balance")
                        || (has("balance", "N")
                            && !cur["balance"]["N"]
                                .as_str()
                                .is_some_and(|n| n.contains(['E', 'e']))) =>
                    {
                        add.push("#balance :v".into());
                        vals.push((":v", json!({ "N": "-100" })));
                    }
                    9 => {
                        // Any type, any depth, possibly a type change.
                        set.push("#meta = :v".into());
                        vals.push((":v", random_value(rng, 3)));
                    }
                    10 => remove.push("#meta".into()),
                    _ => {
                        set.push("#note = :v".into());
                        vals.push((":v", random_value(rng, 1)));
                    }
                }
                let mut expr = format!("SET {}", set.join(", "));
                for (kw, parts) in [("REMOVE", &remove), ("ADD", &add), ("DELETE", &delete)] {
                    if !parts.is_empty() {
                        expr.push_str(&format!(" {kw} {}", parts.join(", ")));
                    }
                }
                update(ddb, &self.table, &key, &expr, &vals).await;
            }
        }
    }
}

async fn get(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &Value,
) -> Option<Map<String, Value>> {
    let out = ddb
        .get_item()
        .table_name(table)
        .consistent_read(true)
        .set_key(Some(json_to_item(key)))
        .send()
        .await
        .expect("get item");
    out.item()
        .map(|i| item_to_json(i).as_object().unwrap().clone())
}

async fn update(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    key: &Value,
    expr: &str,
    vals: &[(&str, Value)],
) {
    let mut req = ddb
        .update_item()
        .table_name(table)
        .set_key(Some(json_to_item(key)))
        .update_expression(expr);
    // Every name goes through a `#name` placeholder (many are reserved words).
    let mut names: Vec<&str> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '#'))
        .filter(|t| t.starts_with('#'))
        .collect();
    names.sort();
    names.dedup();
    for n in names {
        req = req.expression_attribute_names(n, &n[1..]);
    }
    for (k, v) in vals {
        req = req.expression_attribute_values(*k, json_to_av(v));
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("update {expr}: {e:?}"));
}

/// Waits until every record in the stream has its entry, then checks each
/// item's history against the stream and the table (see
/// `check_item_history`). Returns the total number of entries.
async fn assert_audited(env: &TestEnv, config: &Path, table: &str, n_records: usize) -> usize {
    let recs = env.read_stream_exactly(table, n_records).await;
    let mut total = 0;
    for (_, item_recs) in by_item(&recs) {
        let key = item_recs[0].keys.clone();
        let want = item_recs.len();
        let entries = env
            .wait_history(config, table, &key_args(&key), "every record", |e| {
                e.len() >= want
            })
            .await;
        let current = env.get_item(table, &key).await;
        check_item_history(table, &entries, &item_recs, current.as_ref());
        total += entries.len();
    }
    assert_eq!(total, n_records, "one entry per stream record");
    total
}

// ---------------------------------------------------------------------------
// Harness self-checks: need the emulator, not the CLI.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn harness_emulator_tables_writes_and_stream() {
    let env = TestEnv::new("harness");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let mut w = Workload::new(&env, &table, 3, seed());
    for _ in 0..25 {
        w.step(&env.ddb).await;
    }
    let recs = env.read_stream_exactly(&table, 25).await;
    // Replaying the stream's own images per item ends at the table's items.
    for (_, item_recs) in by_item(&recs) {
        let now = env.get_item(&table, &item_recs[0].keys).await;
        let last = item_recs.last().unwrap();
        assert_eq!(last.new.is_some(), now.is_some(), "{last:?}");
        if let (Some(a), Some(b)) = (&last.new, &now) {
            assert!(dyn_eq(&json!({ "M": a }), &json!({ "M": b })));
        }
        for pair in item_recs.windows(2) {
            assert_eq!(pair[0].new.is_some(), pair[1].old.is_some());
        }
        // The checker itself accepts a coarse but valid history built from
        // the records (one replace per changed top-level attribute)...
        let entries: Vec<Value> = item_recs
            .iter()
            .map(|r| coarse_entry(&table, r, &shard_of(r)))
            .collect();
        check_item_history(&table, &entries, &item_recs, now.as_ref());
        // ...and rejects a history with one entry lost or doubled.
        if entries.len() > 1 {
            let lost = std::panic::catch_unwind(|| {
                check_item_history(&table, &entries[1..], &item_recs[1..], now.as_ref())
            });
            assert!(
                lost.is_err(),
                "a lost first entry must not rebuild the item"
            );
        }
        let mut doubled = entries.clone();
        doubled.push(entries.last().unwrap().clone());
        let doubled = std::panic::catch_unwind(|| {
            check_item_history(&table, &doubled, &item_recs, now.as_ref())
        });
        assert!(doubled.is_err(), "a doubled entry must be caught");
    }
}

fn shard_of(r: &StreamRec) -> String {
    r.shard_id.clone()
}

/// A valid audit entry for a record: remove/add/replace per top-level
/// attribute (what the library produces is finer, but this obeys the format).
fn coarse_entry(table: &str, r: &StreamRec, shard: &str) -> Value {
    let empty = Map::new();
    let old = r.old.as_ref().and_then(|v| v.as_object()).unwrap_or(&empty);
    let new = r.new.as_ref().and_then(|v| v.as_object()).unwrap_or(&empty);
    let mut changes = Vec::new();
    for (k, o) in old {
        match new.get(k) {
            None => changes.push(json!({ "path": k, "old": o })),
            Some(n) if !dyn_eq(o, n) => changes.push(json!({ "path": k, "old": o, "new": n })),
            Some(_) => {}
        }
    }
    for (k, n) in new {
        if !old.contains_key(k) {
            changes.push(json!({ "path": k, "new": n }));
        }
    }
    for c in changes.iter_mut() {
        let set_of = |v: Option<&Value>| {
            v.and_then(|v| v.get("SS"))
                .and_then(|x| x.as_array())
                .cloned()
        };
        if let (Some(o), Some(n)) = (set_of(c.get("old")), set_of(c.get("new"))) {
            c["added"] = json!(n.iter().filter(|e| !o.contains(e)).collect::<Vec<_>>());
            c["removed"] = json!(o.iter().filter(|e| !n.contains(e)).collect::<Vec<_>>());
        } else if c.get("old").is_some() && c.get("new").is_some() {
            // NS/BS: whole-set replace without lists is only valid if the
            // sets are unchanged, which `dyn_eq` ruled out; give the lists.
            for t in ["NS", "BS"] {
                let get = |k: &str| {
                    c.get(k)
                        .and_then(|v| v.get(t))
                        .and_then(|x| x.as_array())
                        .cloned()
                };
                if let (Some(o), Some(n)) = (get("old"), get("new")) {
                    let num = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
                    let has = |l: &[Value], e: &Value| {
                        l.iter()
                            .any(|x| if t == "NS" { num(x) == num(e) } else { x == e })
                    };
                    c["added"] = json!(n.iter().filter(|e| !has(&o, e)).collect::<Vec<_>>());
                    c["removed"] = json!(o.iter().filter(|e| !has(&n, e)).collect::<Vec<_>>());
                }
            }
        }
    }
    let actor = |img: &Option<Value>| {
        img.as_ref()
            .and_then(|i| i.get("updated_by"))
            .and_then(|a| a.get("S"))
            .cloned()
    };
    json!({
        "table": table,
        "key": r.keys,
        "event": r.event,
        "sequence_number": r.sequence_number,
        "shard_id": shard,
        "event_time": "2026-11-23T19:05:00Z",
        "actor": actor(&r.new),
        "actor_source": match (actor(&r.new), actor(&r.old)) {
            (Some(n), Some(o)) if r.event == "MODIFY" && n == o => json!("item-unchanged"),
            (Some(_), _) => json!("item"),
            (None, _) => Value::Null,
        },
        "last_writer": if actor(&r.new).is_none() { actor(&r.old) } else { None },
        "changes": changes,
    })
}

#[test]
fn harness_patch_applier_follows_the_contract() {
    // The product.md example and list shifting, sets, type change, removal.
    let mut state = None;
    let insert = [
        json!({"path":"pk","new":{"S":"u1"}}),
        json!({"path":"profile","new":{"M":{"name":{"S":"Ann"}}}}),
        json!({"path":"rules","new":{"L":[{"M":{}},{"M":{"conditions":{"L":[{"M":{"value":{"S":"enterprise"}}}]}}}]}}),
        json!({"path":"tags","new":{"SS":["a","b"]}}),
        json!({"path":"n","new":{"N":"1.50"}}),
    ];
    apply_entry(&mut state, &insert).unwrap();
    let modify = [
        json!({"path":"profile.name","old":{"S":"Ann"},"new":{"S":"Bob"}}),
        json!({"path":"rules[1].conditions[0].value","old":{"S":"enterprise"},"new":{"S":"pro"}}),
        json!({"path":"rules[0]","old":{"M":{}}}),
        json!({"path":"rules[1]","new":{"NULL":true}}),
        json!({"path":"tags","old":{"SS":["b","a"]},"new":{"SS":["b","c"]},"added":["c"],"removed":["a"]}),
        json!({"path":"n","old":{"N":"1.5"},"new":{"S":"x"}}),
    ];
    apply_entry(&mut state, &modify).unwrap();
    let want = json!({
        "pk":{"S":"u1"}, "profile":{"M":{"name":{"S":"Bob"}}},
        "rules":{"L":[{"M":{"conditions":{"L":[{"M":{"value":{"S":"pro"}}}]}}},{"NULL":true}]},
        "tags":{"SS":["c","b"]}, "n":{"S":"x"}
    });
    assert!(dyn_eq(
        &json!({ "M": state.clone().unwrap() }),
        &json!({ "M": want })
    ));
    // Wrong `old`, wrong set delta, insert past the end: all rejected.
    let mut s = state.clone();
    assert!(apply_entry(
        &mut s,
        &[json!({"path":"pk","old":{"S":"zz"},"new":{"S":"u2"}})]
    )
    .is_err());
    let mut s = state.clone();
    assert!(apply_entry(
        &mut s,
        &[json!({"path":"tags","old":{"SS":["b","c"]},"new":{"SS":["b"]},"removed":["b"]})]
    )
    .is_err());
    let mut s = state.clone();
    assert!(apply_entry(&mut s, &[json!({"path":"rules[5]","new":{"S":"x"}})]).is_err());
    let mut s = state.clone();
    assert!(apply_entry(&mut s, &[json!({"path":"pk","new":{"S":"again"}})]).is_err());
    // REMOVE of every attribute leaves nothing.
    let remove: Vec<Value> = state
        .as_ref()
        .unwrap()
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| json!({"path": k, "old": v}))
        .collect();
    apply_entry(&mut state, &remove).unwrap();
    assert!(state.is_none());
    assert!(dyn_eq(&json!({"N":"1E+2"}), &json!({"N":"100.0"})));
    assert!(!dyn_eq(&json!({"N":"1"}), &json!({"S":"1"})));
}

// ---------------------------------------------------------------------------
// The daemon, end to end.
// ---------------------------------------------------------------------------

/// N random changes → exactly N entries, rebuilding every item exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_becomes_exactly_one_entry_that_rebuilds_the_item() {
    const N: usize = 60;
    let env = TestEnv::new("random");
    let (table, config) = env.audited_table("orders").await;

    let mut w = Workload::new(&env, &table, 4, seed());
    // Half before the daemon starts (read from TRIM_HORIZON), half while it runs.
    for _ in 0..N / 2 {
        w.step(&env.ddb).await;
    }
    let mut daemon = env.spawn_daemon(&config);
    for _ in N / 2..N {
        w.step(&env.ddb).await;
    }
    assert_audited(&env, &config, &table, N).await;
    env.wait_checkpointed(&table).await;
    daemon.stop_gracefully().await;

    // A restart on a fully checkpointed stream reads nothing again and puts
    // no entry: every PutItem of an entry counts either as written or as a
    // duplicate (the write-once key was there), and both stay at 0.
    let listen = free_addr();
    let text = std::fs::read_to_string(&config).expect("config");
    let observed = env.write_file(
        "observed.toml",
        &format!("{text}\n[observability]\nlisten = \"{listen}\"\n"),
    );
    let mut again = env.spawn_daemon(&observed);
    // Two GetRecords per shard read: the first page from the checkpoint on
    // (where anything read again would be) is handled, and counted, before
    // the second call.
    let s = wait_for(
        "the restarted daemon to read its shards twice",
        AUDIT_DEADLINE,
        || {
            again.assert_running();
            http_get(listen, "/metrics")?;
            let s = scrape(listen);
            let reading = s.get(
                "ddb_audit_shards",
                &[("table", &table), ("state", "reading")],
            )?;
            let calls = s.get(
                "ddb_audit_stream_calls_total",
                &[("operation", "GetRecords"), ("outcome", "ok")],
            )?;
            (reading >= 1.0 && calls >= 2.0 * reading).then_some(s)
        },
    )
    .await;
    for name in [
        "ddb_audit_records_read_total",
        "ddb_audit_entries_written_total",
        "ddb_audit_duplicates_total",
    ] {
        assert_eq!(
            s.table(name, &table),
            0.0,
            "{name} of a restart on a checkpointed stream:\n{}",
            again.log_text()
        );
    }
    again.assert_running();
    assert_audited(&env, &config, &table, N).await;
    again.sigterm();
    assert!(again.wait_exit(Duration::from_secs(5)).await.is_some());
}

/// kill -9 while writes go on, twice; restart; finish: nothing lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_doubles_nothing() {
    const N: usize = 120;
    let env = TestEnv::new("kill9");
    let (table, config) = env.audited_table("orders").await;

    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let ddb = env.ddb.clone();
        let written = written.clone();
        let mut w = Workload::new(&env, &table, 3, seed());
        tokio::spawn(async move {
            for _ in 0..N {
                w.step(&ddb).await;
                written.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let probe = key_args(&item_key(0));
    let mut seen = 0;
    for round in 0..2 {
        let mut daemon = env.spawn_daemon(&config);
        // Some entries exist (and, unless the writer is done, more are
        // arriving) when the kill lands.
        let entries = env
            .wait_history(&config, &table, &probe, "progress before kill -9", |e| {
                e.len() > seen || written.load(Ordering::SeqCst) == N
            })
            .await;
        seen = entries.len();
        daemon.assert_running();
        daemon.kill9().await;
        eprintln!(
            "kill -9 #{round}: {seen} entries for item-0, {} writes done",
            written.load(Ordering::SeqCst)
        );
    }
    let mut daemon = env.spawn_daemon(&config);
    writer.await.expect("writer");
    assert_audited(&env, &config, &table, N).await;
    daemon.stop_gracefully().await;
}

/// SIGTERM and SIGINT: exit 0 within 5 s, with entries checkpointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_exits_zero_within_five_seconds() {
    let env = TestEnv::new("stop");
    let (table, config) = env.audited_table("orders").await;
    let key = item_key(0);
    let mut w = Workload::new(&env, &table, 1, seed()); // always item 0

    for (round, sig) in [libc::SIGTERM, libc::SIGINT].into_iter().enumerate() {
        let mut daemon = env.spawn_daemon(&config);
        w.step(&env.ddb).await;
        // Running and auditing: the write shows up.
        env.wait_history(&config, &table, &key_args(&key), "the write", |e| {
            e.len() > round
        })
        .await;
        daemon.assert_running();
        let t0 = Instant::now();
        daemon.signal(sig);
        let status = daemon.wait_exit(Duration::from_secs(5)).await;
        let took = t0.elapsed();
        assert!(
            status.is_some_and(|s| s.code() == Some(0)),
            "signal {sig}: expected exit 0 within 5 s, got {status:?} after {took:?}\n{}",
            daemon.log_text()
        );
    }
    // Nothing doubled across the restarts.
    assert_audited(&env, &config, &table, 2).await;
}

#[tokio::test]
async fn bad_config_is_rejected_naming_the_key() {
    let env = TestEnv::new("badconf");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let cases = [
        (
            "unknown-key.toml",
            format!("tables = [\"{table}\"]\n\n[polling]\nbogus = 1\n"),
            "bogus",
        ),
        (
            "unknown-top.toml",
            format!("tables = [\"{table}\"]\nbogus_top = true\n"),
            "bogus_top",
        ),
        (
            "syntax.toml",
            format!("tables = [\"{table}\"]\n\n[attribution]\nactor_attribute = updated_by\n"),
            "actor_attribute",
        ),
        (
            "wrong-type.toml",
            "tables = \"orders\"\n".to_string(),
            "tables",
        ),
    ];
    for (file, text, key) in cases {
        let path = env.write_file(file, &text);
        for cmd in ["init", "run"] {
            env.cli(&[cmd, "--config", path_str(&path)])
                .await
                .fails_naming(&[key]);
        }
    }
    let missing = env.dir.path().join("does-not-exist.toml");
    env.cli(&["run", "--config", path_str(&missing)])
        .await
        .fails_naming(&["does-not-exist.toml"]);
}

#[tokio::test]
async fn missing_table_is_an_error_naming_it() {
    let env = TestEnv::new("missing");
    let table = env.name("no-such-table");
    let config = env.config(&[&table]);
    env.init(&config).await;
    env.cli(&["run", "--config", path_str(&config)])
        .await
        .fails_naming(&[&table]);
}

#[tokio::test]
async fn table_without_new_and_old_images_is_an_error_naming_the_fix() {
    let env = TestEnv::new("nostream");
    let plain = env.name("plain");
    env.create_table(&plain, None).await;
    let keys_only = env.name("keys-only");
    env.create_table(&keys_only, Some(StreamViewType::KeysOnly))
        .await;
    for table in [&plain, &keys_only] {
        let config = env.config(&[table]);
        env.init(&config).await;
        env.cli(&["run", "--config", path_str(&config)])
            .await
            .fails_naming(&[table, "NEW_AND_OLD_IMAGES"]);
    }
}

#[tokio::test]
async fn init_is_idempotent() {
    let env = TestEnv::new("init");
    let (table, config) = env.audited_table("orders").await;
    env.init(&config).await;
    for t in ["streams", "shards", "entries"] {
        let name = env.name(t);
        assert!(env.table_exists(&name).await, "init created {name}");
    }
    // And the daemon's tables hold no audit entry for a table nobody wrote.
    let k = key_args(&item_key(0));
    let out = env.history_raw(&config, &table, &k, true).await;
    out.success();
    assert!(parse_json_lines(&out.stdout).is_empty());
}

// ---------------------------------------------------------------------------
// Items near DynamoDB's 400 KB limit
// ---------------------------------------------------------------------------

/// `unit` repeated, cut (at a char boundary) to at most `bytes` bytes.
fn filler(unit: &str, bytes: usize) -> String {
    let mut s = unit.repeat(bytes / unit.len() + 1);
    let mut end = bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s
}

/// Roughly DynamoDB's item size: attribute names plus values, UTF-8 bytes.
fn approx_size(v: &Value) -> usize {
    let (t, x) = v.as_object().unwrap().iter().next().unwrap();
    match t.as_str() {
        "S" | "N" => x.as_str().unwrap().len(),
        "B" => x.as_str().unwrap().len() * 3 / 4,
        "SS" | "NS" | "BS" => x
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().len())
            .sum(),
        "L" => {
            3 + x
                .as_array()
                .unwrap()
                .iter()
                .map(|e| 1 + approx_size(e))
                .sum::<usize>()
        }
        "M" => 3 + item_size(x),
        _ => 1,
    }
}

fn item_size(item: &Value) -> usize {
    item.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| k.len() + 1 + approx_size(v))
        .sum()
}

/// A ~390 KB item: one long string (multi-byte characters, quotes,
/// backslashes, newlines: everything JSON escapes or a byte split could
/// break) plus nested maps, lists, sets, a binary, a bool and a null. `v`
/// (1 or 2) picks one of two versions that differ in every non-key attribute.
fn big_item(key: &Value, v: usize) -> Value {
    let mut item = key.as_object().unwrap().clone();
    let unit = if v == 1 {
        "Grüße — 1 000 € \"quoted\" back\\slash\nline "
    } else {
        "Ωmega ✓ {braces} [brackets] tab\there 'single' 😀 "
    };
    let lines: Vec<Value> = (0..40)
        .map(|i| {
            json!({ "M": {
                "sku": { "S": format!("SKU-{v}-{i:03}") },
                "qty": { "N": format!("{}", i * v + 1) },
                "price": { "N": format!("{}.{:02}", 10 * v + i, i) },
                "notes": { "L": [
                    { "S": format!("note {i} of version {v}") },
                    { "N": format!("{}", v * 1000 + i) },
                ] },
            }})
        })
        .take(if v == 1 { 40 } else { 33 })
        .collect();
    let fields = json!({
        "blob": { "S": "" },
        "rev": { "N": v.to_string() },
        "updated_by": { "S": if v == 1 { "alice" } else { "bob" } },
        "profile": { "M": {
            "name": { "S": if v == 1 { "Ann Lee" } else { "Ann Smith" } },
            "address": { "M": {
                "city": { "S": if v == 1 { "Berlin" } else { "Lisbon" } },
                "geo": { "M": {
                    "lat": { "N": if v == 1 { "52.52" } else { "38.72" } },
                    "lon": { "N": if v == 1 { "13.405" } else { "-9.139" } },
                } },
            } },
            "prefs": { "L": if v == 1 {
                json!([{ "S": "email" }, { "S": "sms" }, { "BOOL": true }])
            } else {
                json!([{ "S": "push" }, { "NULL": true }])
            } },
        } },
        "lines": { "L": lines },
        "tags": { "SS": if v == 1 { json!(["a", "b", "c"]) } else { json!(["c", "d"]) } },
        "scores": { "NS": if v == 1 { json!(["1", "2.5", "-3"]) } else { json!(["2.5", "7"]) } },
        "bin": { "B": common_b64(&vec![v as u8; 1000]) },
        "active": { "BOOL": v == 1 },
        "gone": if v == 1 { json!({ "NULL": true }) } else { json!({ "S": "now a string" }) },
    });
    item.extend(fields.as_object().unwrap().clone());
    // The string fills the item up to ~390 KB.
    let rest = item_size(&Value::Object(item.clone()));
    item.insert("blob".into(), json!({ "S": filler(unit, 390_000 - rest) }));
    Value::Object(item)
}

/// Insert a ~390 KB item, rewrite every attribute of it (still ~390 KB),
/// delete it: three whole entries, each rebuilding its image exactly; the
/// ~800 KB MODIFY entry is stored in parts and comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_400kb_item_rewritten_completely_round_trips_through_history() {
    let env = TestEnv::new("big");
    let (table, config) = env.audited_table("docs").await;

    let key = json!({ "pk": { "S": "big-1" }, "sk": { "N": "1" } });
    let (v1, v2) = (big_item(&key, 1), big_item(&key, 2));
    for v in [&v1, &v2] {
        let size = item_size(v);
        assert!((380_000..400_000).contains(&size), "item of {size} bytes");
    }
    for (name, a) in v1.as_object().unwrap() {
        if key.get(name).is_none() {
            assert!(!dyn_eq(a, &v2[name]), "{name} must differ between versions");
        }
    }
    assert_eq!(v1.as_object().unwrap().len(), v2.as_object().unwrap().len());

    let mut daemon = env.spawn_daemon(&config);
    for v in [&v1, &v2] {
        env.ddb
            .put_item()
            .table_name(&table)
            .set_item(Some(json_to_item(v)))
            .send()
            .await
            .expect("put ~390 KB item");
    }
    env.ddb
        .delete_item()
        .table_name(&table)
        .set_key(Some(json_to_item(&key)))
        .send()
        .await
        .expect("delete item");
    assert!(env.get_item(&table, &key).await.is_none());

    let recs = env.read_stream_exactly(&table, 3).await;
    let k = key_args(&key);
    env.wait_history(&config, &table, &k, "three entries", |e| e.len() >= 3)
        .await;
    let out = env.history_raw(&config, &table, &k, true).await;
    out.success();
    let lines: Vec<&str> = out.stdout.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "exactly three entries");
    let entries = parse_json_lines(&out.stdout);
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["INSERT", "MODIFY", "REMOVE"]);
    let actors: Vec<&Value> = entries.iter().map(|e| &e["actor"]).collect();
    assert_eq!(actors, [&json!("alice"), &json!("bob"), &Value::Null]);
    assert_eq!(
        entries[2]["last_writer"],
        json!("bob"),
        "a delete names no one"
    );
    assert!(
        lines[1].len() > 760_000,
        "the MODIFY entry carries both ~390 KB strings: {} bytes",
        lines[1].len()
    );

    // Each entry whole: applied in order, they give exactly what was written.
    let changes = |i: usize| entries[i]["changes"].as_array().unwrap().clone();
    let same = |got: &Option<Value>, want: &Value| {
        got.as_ref()
            .is_some_and(|g| dyn_eq(&json!({ "M": g }), &json!({ "M": want })))
    };
    let mut state = None;
    apply_entry(&mut state, &changes(0)).expect("INSERT applies to nothing");
    assert!(
        same(&state, &v1),
        "the INSERT's adds rebuild the first image"
    );
    apply_entry(&mut state, &changes(1)).expect("MODIFY applies to the first image");
    assert!(
        same(&state, &v2),
        "the MODIFY turns the first image into the second"
    );
    apply_entry(&mut state, &changes(2)).expect("REMOVE applies to the second image");
    assert!(state.is_none(), "the REMOVE removes everything: {state:?}");
    // And against the stream's own records (sequence numbers, shard, images).
    check_item_history(&table, &entries, &recs, None);

    // Stored in parts: each head carries `parts` and has exactly that many
    // part items after it (the layout documented in src/store/dynamo.rs).
    let audit = env.name("entries");
    let mut rows = Vec::new();
    let mut start = None;
    loop {
        let page = env
            .ddb
            .scan()
            .table_name(&audit)
            .projection_expression("#pk, #sk, #event, #parts, #part, #bytes")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#sk", "sk")
            .expression_attribute_names("#event", "event")
            .expression_attribute_names("#parts", "parts")
            .expression_attribute_names("#part", "part")
            .expression_attribute_names("#bytes", "entry_bytes")
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan the audit table");
        rows.extend(page.items().iter().map(item_to_json));
        start = page.last_evaluated_key().cloned().filter(|k| !k.is_empty());
        if start.is_none() {
            break;
        }
    }
    let s = |r: &Value, a: &str| r.get(a).and_then(|v| v["S"].as_str()).map(str::to_string);
    let n = |r: &Value, a: &str| {
        r.get(a)
            .and_then(|v| v["N"].as_str())
            .map(|x| x.parse::<usize>().unwrap())
    };
    let heads: Vec<&Value> = rows.iter().filter(|r| r.get("part").is_none()).collect();
    assert_eq!(heads.len(), 3, "three entry heads: {heads:?}");
    let modify = heads
        .iter()
        .find(|h| s(h, "event").as_deref() == Some("MODIFY"))
        .expect("a MODIFY head");
    let parts = n(modify, "parts").expect("the MODIFY entry is stored in parts");
    assert!(parts >= 2, "{parts} parts");
    eprintln!(
        "history lines: {:?} bytes; MODIFY stored as {parts} parts ({:?} bytes)",
        lines.iter().map(|l| l.len()).collect::<Vec<_>>(),
        n(modify, "entry_bytes")
    );
    assert!(
        n(modify, "entry_bytes").is_some_and(|b| b > 760_000),
        "{modify}"
    );
    for h in &heads {
        let Some(parts) = n(h, "parts") else { continue };
        let sk = s(h, "sk").unwrap();
        let mut got: Vec<usize> = rows
            .iter()
            .filter(|r| s(r, "pk") == s(h, "pk") && s(r, "sk").unwrap().starts_with(&sk))
            .filter_map(|r| n(r, "part"))
            .collect();
        got.sort();
        assert_eq!(got, (1..=parts).collect::<Vec<_>>(), "parts of {sk}");
    }

    daemon.stop_gracefully().await;
}

// ---------------------------------------------------------------------------
// gaps and status
// ---------------------------------------------------------------------------

/// A healthy run: `gaps` reports none; `status` shows every configured table
/// and its shard open, checkpointed at the last record, with a lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_and_status_on_a_healthy_run() {
    let env = TestEnv::new("status");
    let tables = [env.name("orders"), env.name("flags")];
    for t in &tables {
        env.create_stream_table(t).await;
    }
    let config = env.config(&[&tables[0], &tables[1]]);
    env.init(&config).await;
    let cfg = path_str(&config);

    // Before anything ran: no gaps, nothing to report per shard.
    let out = env.cli(&["gaps", "--config", cfg, "--json"]).await;
    out.success();
    assert_eq!(out.stdout, "", "no gaps: no output");

    let mut daemon = env.spawn_daemon(&config);
    let s = seed();
    for (i, t) in tables.iter().enumerate() {
        let mut w = Workload::new(&env, t, 2, s + i as u64);
        for _ in 0..4 {
            w.step(&env.ddb).await;
        }
    }
    let mut last = Vec::new(); // (table, stream arn, shard, last sequence number)
    for t in &tables {
        assert_audited(&env, &config, t, 4).await;
        let recs = env.read_stream(t).await;
        let arn = env
            .ddb
            .describe_table()
            .table_name(t)
            .send()
            .await
            .unwrap()
            .table()
            .and_then(|d| d.latest_stream_arn())
            .unwrap()
            .to_string();
        let mut shards: Vec<&str> = recs.iter().map(|r| r.shard_id.as_str()).collect();
        shards.dedup();
        for sh in shards {
            let seq = recs
                .iter()
                .rfind(|r| r.shard_id == sh)
                .unwrap()
                .sequence_number
                .clone();
            last.push((t.clone(), arn.clone(), sh.to_string(), seq));
        }
    }

    // gaps: nothing, in both forms.
    let out = env.cli(&["gaps", "--config", cfg, "--json"]).await;
    out.success();
    assert_eq!(out.stdout, "", "a healthy run has no gaps");
    let out = env.cli(&["gaps", "--config", cfg]).await;
    out.success();
    assert!(out.stdout.contains("no gaps"), "{}", out.stdout);

    // status --json: the checkpoint may trail the entries briefly; poll until
    // every shard is checkpointed at its last record.
    let deadline = Instant::now() + AUDIT_DEADLINE;
    let lines = loop {
        let out = env.cli(&["status", "--config", cfg, "--json"]).await;
        out.success();
        let lines = parse_json_lines(&out.stdout);
        let caught_up = last.iter().all(|(t, _, sh, seq)| {
            lines.iter().any(|l| {
                l["kind"] == "shard"
                    && l["table"] == json!(t)
                    && l["shard_id"] == json!(sh)
                    && l["sequence_number"] == json!(seq)
            })
        });
        if caught_up {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed every shard at its last record {last:?}:\n{}",
            out.stdout
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // One table line per configured table, in config order, each followed
    // by its shard lines.
    let table_lines: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "table").collect();
    assert_eq!(table_lines.len(), tables.len(), "{lines:#?}");
    // Then the replicas (`run` processes) sharing the work: this one.
    let replicas = lines.iter().filter(|l| l["kind"] == "replica").count();
    assert_eq!(replicas, 1, "{lines:#?}");
    assert!(lines
        .iter()
        .all(|l| l["kind"] == "table" || l["kind"] == "shard" || l["kind"] == "replica"));
    let mut current: Option<&str> = None;
    for l in lines.iter().filter(|l| l["kind"] != "replica") {
        match l["kind"].as_str().unwrap() {
            "table" => current = l["table"].as_str(),
            _ => assert_eq!(l["table"].as_str(), current, "shard after its table: {l}"),
        }
    }
    for (t, summary) in tables.iter().zip(&table_lines) {
        assert_eq!(summary["table"], json!(t));
        let shards: Vec<&Value> = lines
            .iter()
            .filter(|l| l["kind"] == "shard" && l["table"] == json!(t))
            .collect();
        let mine: Vec<_> = last.iter().filter(|(lt, ..)| lt == t).collect();
        assert_eq!(
            shards.len(),
            mine.len(),
            "one line per shard of {t}: {shards:#?}"
        );
        let arn = &mine[0].1;
        assert_eq!(summary["streams"], json!(1));
        assert_eq!(summary["current_stream_arn"], json!(arn));
        assert_eq!(summary["shards"], json!(shards.len()));
        assert_eq!(summary["open"], json!(shards.len()));
        assert_eq!(summary["closed"], json!(0));
        assert_eq!(summary["drained"], json!(0));
        // The replica reading it, by its lease.
        assert_eq!(
            summary["read_by"].as_array().map(Vec::len),
            Some(1),
            "{summary}"
        );
        let lags: Vec<i64> = shards
            .iter()
            .map(|sh| {
                let (_, _, id, seq) = mine
                    .iter()
                    .find(|(_, _, id, _)| sh["shard_id"] == json!(id))
                    .unwrap_or_else(|| panic!("unknown shard in status: {sh}"));
                assert_eq!(sh["stream_arn"], json!(arn), "{sh}");
                assert_eq!(sh["status"], json!("open"), "{sh}");
                assert_eq!(sh["sequence_number"], json!(seq), "{sh}");
                assert_eq!(sh["parent_shard_id"], Value::Null, "{sh}");
                for f in ["last_record_time", "updated_at"] {
                    let ts = sh[f].as_str().unwrap_or_else(|| panic!("{f}: {sh}"));
                    chrono::DateTime::parse_from_rfc3339(ts)
                        .unwrap_or_else(|e| panic!("{f} {ts:?} of {id}: {e}"));
                }
                let lag = sh["lag_seconds"]
                    .as_i64()
                    .unwrap_or_else(|| panic!("an open shard has a lag: {sh}"));
                assert!((0..600).contains(&lag), "lag {lag} s: {sh}");
                lag
            })
            .collect();
        assert_eq!(summary["max_lag_seconds"], json!(lags.iter().max()));
    }

    // The table form: per table, in config order, a summary line and then
    // its open shards, indented under it.
    let out = env.cli(&["status", "--config", cfg]).await;
    out.success();
    eprintln!("status:\n{}", out.stdout);
    let text: Vec<&str> = out.stdout.lines().collect();
    let starts: Vec<usize> = tables
        .iter()
        .map(|t| {
            text.iter()
                .position(|l| l.starts_with(&format!("{t}: ")))
                .unwrap_or_else(|| panic!("no summary line for {t}:\n{}", out.stdout))
        })
        .collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "{}", out.stdout);
    assert_eq!(starts[0], 0, "{}", out.stdout);
    for (i, t) in tables.iter().enumerate() {
        let whole = &text[starts[i]..starts.get(i + 1).copied().unwrap_or(text.len())];
        // Under the summary, the replica reading the table; after the last
        // table, the replicas.
        assert!(whole[1].starts_with("  read by "), "{}", out.stdout);
        let section: Vec<&str> = whole
            .iter()
            .filter(|l| !l.starts_with("  read by ") && !l.starts_with("replica "))
            .copied()
            .collect();
        let mine: Vec<_> = last.iter().filter(|(lt, ..)| lt == t).collect();
        let n = mine.len();
        assert!(
            section[0].starts_with(&format!(
                "{t}: 1 stream(s), {n} shard(s): {n} open, 0 closed, 0 drained; max lag "
            )) && section[0].ends_with(" s"),
            "{}",
            section[0]
        );
        assert!(section[1].starts_with("  SHARD"), "{}", out.stdout);
        assert_eq!(section.len(), 2 + n, "{}", out.stdout);
        for (_, _, sh, seq) in mine {
            let row = section[2..]
                .iter()
                .find(|l| l.contains(sh.as_str()))
                .unwrap_or_else(|| panic!("no row for shard {sh} under {t}:\n{}", out.stdout));
            assert!(row.starts_with(&format!("  {sh} ")), "indented: {row:?}");
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cells[1..3], ["open", seq.as_str()], "{row}");
        }
    }

    daemon.stop_gracefully().await;
}

// ---------------------------------------------------------------------------
// The command line itself
// ---------------------------------------------------------------------------

/// `--help` everywhere exits 0 and says how to give the config and the key.
#[tokio::test]
async fn help_documents_the_config_flag_and_the_key_format() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(BIN)
            .args(args)
            .output()
            .expect("run ddb-audit");
        assert!(
            out.status.success(),
            "`ddb-audit {}` exited {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 help")
    };
    for flag in ["--help", "-h"] {
        let top = run(&[flag]);
        for cmd in ["init", "run", "history", "gaps", "status"] {
            assert!(top.contains(cmd), "top-level {flag} lists {cmd}:\n{top}");
        }
        assert!(top.contains("--config"), "top-level {flag}:\n{top}");
        assert!(top.contains("NAME=TYPE:VALUE"), "top-level {flag}:\n{top}");
    }
    for cmd in ["init", "run", "history", "gaps", "status"] {
        for help in [vec![cmd, "--help"], vec!["help", cmd]] {
            let text = run(&help);
            assert!(
                text.contains("--config") && text.contains("DDB_AUDIT_CONFIG"),
                "`ddb-audit {}`:\n{text}",
                help.join(" ")
            );
            if matches!(cmd, "history" | "gaps" | "status") {
                assert!(text.contains("--json"), "{text}");
            }
        }
    }
    let history = run(&["history", "--help"]);
    for needle in ["--table", "--key", "NAME=TYPE:VALUE", "S, N, B"] {
        assert!(
            history.contains(needle),
            "history --help: {needle}\n{history}"
        );
    }
}

/// A malformed `--key` fails before any lookup, naming the expected form.
#[tokio::test]
async fn malformed_history_key_is_rejected_naming_the_form() {
    let env = TestEnv::new("badkey");
    let table = env.name("orders");
    // No `init`: a key parsed after the lookup would fail on the missing
    // tables instead, and not name the form.
    let config = env.config(&[&table]);
    let cases: &[(&str, &[&str])] = &[
        ("pk=X:1", &["NAME=TYPE:VALUE", "pk=X:1"]),
        ("pk", &["NAME=TYPE:VALUE"]),
        ("=S:1", &["NAME=TYPE:VALUE"]),
        ("pk=S1", &["NAME=TYPE:VALUE"]),
        ("pk=N:abc", &["N:NUMBER", "abc"]),
        ("pk=B:@@", &["B:BASE64"]),
    ];
    for (key, needles) in cases {
        let out = env
            .history_raw(&config, &table, &[key.to_string()], true)
            .await;
        out.fails_naming(needles);
        assert_eq!(out.stdout, "", "--key {key}: nothing on stdout");
        // A good key next to a bad one does not rescue it.
        let out = env
            .history_raw(&config, &table, &["sk=N:1".into(), key.to_string()], false)
            .await;
        out.fails_naming(needles);
    }
    // No --key at all: a usage error naming the flag.
    let out = env
        .cli(&["history", "--config", path_str(&config), "--table", &table])
        .await;
    out.fails_naming(&["--key"]);
}
