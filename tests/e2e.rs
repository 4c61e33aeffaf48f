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
                    0 => remove.push("#updated_by".into()), // actor falls back to the old image
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
        "actor": actor(&r.new).or_else(|| actor(&r.old)),
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
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let config = env.config(&[&table]);
    env.init(&config).await;

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
    daemon.assert_running();

    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: exit 0 within 5 s, got {status:?}"
    );
    // A restart on a fully checkpointed stream writes nothing twice.
    let mut again = env.spawn_daemon(&config);
    tokio::time::sleep(Duration::from_secs(3)).await;
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
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let config = env.config(&[&table]);
    env.init(&config).await;

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
    daemon.assert_running();
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}

/// SIGTERM and SIGINT: exit 0 within 5 s, with entries checkpointed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_exits_zero_within_five_seconds() {
    let env = TestEnv::new("stop");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let config = env.config(&[&table]);
    env.init(&config).await;
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
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let config = env.config(&[&table]);
    env.init(&config).await;
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
