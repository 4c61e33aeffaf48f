//! The read side end to end: the real binary against the emulator, a random
//! workload, and the test's own record of what it wrote (and when) as the
//! oracle. Never the library's own folding or filtering.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use common::*;

/// Which of the test's own steps a query must return.
type Oracle = Box<dyn Fn(&Step) -> bool>;

fn seed() -> u64 {
    std::env::var("DDB_AUDIT_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// One write the test made, bracketed by the times around it.
#[derive(Clone, Debug)]
struct Step {
    key: Value,
    event: &'static str,
    before: Option<Value>,
    after: Option<Value>,
    actor: Option<String>,
    correlation: Option<String>,
    /// Before the call was sent / after it returned.
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

fn item_key(i: usize) -> Value {
    json!({"pk": {"S": format!("item-{i}")}, "sk": {"N": "1"}})
}

const ACTORS: [&str; 3] = ["alice", "bob", "carol"];
const STATUSES: [&str; 3] = ["PENDING", "PAID", "SHIPPED"];

fn random_item(rng: &mut StdRng, key: &Value, actor: &str, step: usize) -> Value {
    let mut item = key.as_object().unwrap().clone();
    item.insert("updated_by".into(), json!({"S": actor}));
    item.insert(
        "status".into(),
        json!({"S": STATUSES[rng.random_range(0..3)]}),
    );
    item.insert(
        "balance".into(),
        json!({"N": rng.random_range(0..5).to_string()}),
    );
    if rng.random_bool(0.6) {
        let name = ["Ann", "Bob"][rng.random_range(0..2)];
        item.insert(
            "profile".into(),
            json!({"M": {"name": {"S": name},
                         "tags": {"L": [{"S": "x"}, {"N": step.to_string()}]}}}),
        );
    }
    if rng.random_bool(0.3) {
        item.insert(
            "request_id".into(),
            json!({"S": format!("req-{}", rng.random_range(0..4))}),
        );
    }
    Value::Object(item)
}

fn attr<'a>(item: &'a Option<Value>, name: &str) -> Option<&'a Value> {
    item.as_ref().and_then(|i| i.get(name))
}

fn differs(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => !dyn_eq(x, y),
        (None, None) => false,
        _ => true,
    }
}

async fn put(env: &TestEnv, table: &str, item: &Value) {
    env.ddb
        .put_item()
        .table_name(table)
        .set_item(Some(json_to_item(item)))
        .send()
        .await
        .expect("put item");
}

async fn delete(env: &TestEnv, table: &str, key: &Value) {
    env.ddb
        .delete_item()
        .table_name(table)
        .set_key(Some(json_to_item(key)))
        .send()
        .await
        .expect("delete item");
}

/// Writes `item` (or deletes when `None`) and records the step.
async fn write(
    env: &TestEnv,
    table: &str,
    key: &Value,
    state: &mut BTreeMap<String, Option<Value>>,
    new: Option<Value>,
) -> Step {
    let before = state.get(&key_id(key)).cloned().flatten();
    let start = Utc::now();
    match &new {
        Some(item) => put(env, table, item).await,
        None => delete(env, table, key).await,
    }
    let end = Utc::now();
    // Keeps every write in its own millisecond window, so a time between two
    // steps is unambiguous.
    tokio::time::sleep(Duration::from_millis(8)).await;
    state.insert(key_id(key), new.clone());
    let event = match (&before, &new) {
        (None, _) => "INSERT",
        (Some(_), Some(_)) => "MODIFY",
        (Some(_), None) => "REMOVE",
    };
    let actor = attr(&new, "updated_by").and_then(|v| v["S"].as_str().map(str::to_string));
    let correlation = attr(&new, "request_id")
        .or_else(|| attr(&before, "request_id"))
        .and_then(|v| v["S"].as_str().map(str::to_string));
    Step {
        key: key.clone(),
        event,
        before,
        after: new,
        actor,
        correlation,
        start,
        end,
    }
}

fn config_text(env: &TestEnv, table: &str) -> String {
    format!(
        "tables = [\"{table}\"]\n\n[attribution]\nactor_attribute = \"updated_by\"\n\
         correlation_attribute = \"request_id\"\n\n{}",
        env.storage_section()
    )
}

/// `query --json` with these extra arguments, parsed.
async fn query(env: &TestEnv, config: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["query", "--config", config, "--json"];
    all.extend_from_slice(args);
    let out = env.cli(&all).await;
    out.success();
    parse_json_lines(&out.stdout)
}

/// What an entry is, for comparing with the oracle: key, event, actor. A
/// REMOVE's actor is left out: the stream does not say who deleted, and what
/// the entry says instead (the last writer) is the attribution's business.
fn summary(e: &Value) -> String {
    let event = e["event"].as_str().unwrap_or("?");
    let actor = if event == "REMOVE" {
        "?"
    } else {
        e["actor"].as_str().unwrap_or("-")
    };
    format!("{} {event} {actor}", key_id(&e["key"]))
}

fn step_summary(s: &Step) -> String {
    let actor = if s.event == "REMOVE" {
        "?"
    } else {
        s.actor.as_deref().unwrap_or("-")
    };
    format!("{} {} {actor}", key_id(&s.key), s.event)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_question_against_a_random_workload() {
    let seed = seed();
    eprintln!("DDB_AUDIT_E2E_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = TestEnv::new("read");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let config = env.write_file("config.toml", &config_text(&env, &table));
    let cfg = path_str(&config).to_string();
    env.init(&config).await;
    let mut daemon = env.spawn_daemon(&config);

    // The workload: random puts and deletes over a few items, then a long
    // run of changes to one hot item.
    let mut state = BTreeMap::new();
    let mut steps = Vec::new();
    for step in 0..70 {
        let i = rng.random_range(0..6);
        let key = item_key(i);
        let exists = state.get(&key_id(&key)).cloned().flatten().is_some();
        let actor = ACTORS[rng.random_range(0..3)];
        let new = if exists && rng.random_bool(0.15) {
            None
        } else {
            Some(random_item(&mut rng, &key, actor, step))
        };
        steps.push(write(&env, &table, &key, &mut state, new).await);
    }
    let hot = item_key(99);
    for n in 0..200 {
        let item = json!({"pk": hot["pk"], "sk": hot["sk"], "updated_by": {"S": "svc"},
                          "counter": {"N": n.to_string()}});
        steps.push(write(&env, &table, &hot, &mut state, Some(item)).await);
    }
    let total = steps.len();

    // Wait until every change is audited.
    let deadline = std::time::Instant::now() + AUDIT_DEADLINE;
    loop {
        let got = query(&env, &cfg, &["--table", &table]).await.len();
        if got == total {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{got} of {total} entries audited"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.assert_running();

    // ---- query: every filter, and combinations, against the oracle ----
    let mid = |i: usize| steps[i].end + (steps[i + 1].start - steps[i].end) / 2;
    let (t_a, t_b) = (mid(15), mid(50));
    let in_window = |s: &Step, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>| {
        since.is_none_or(|t| s.start > t) && until.is_none_or(|t| s.end < t)
    };
    let field_changed = |s: &Step, f: &str| differs(attr(&s.before, f), attr(&s.after, f));
    let status_went = |s: &Step, from: &str, to: &str| {
        attr(&s.before, "status").and_then(|v| v["S"].as_str()) == Some(from)
            && attr(&s.after, "status").and_then(|v| v["S"].as_str()) == Some(to)
    };
    let some_key = item_key(rng.random_range(0..6));
    let key_arg = key_args(&some_key);
    let cases: Vec<(Vec<String>, Oracle)> = vec![
        (vec![], Box::new(|_| true)),
        // With MODIFY: who a REMOVE is attributed to is not the stream's to say.
        (
            vec![
                "--actor".into(),
                "alice".into(),
                "--event".into(),
                "MODIFY".into(),
            ],
            Box::new(|s| s.actor.as_deref() == Some("alice") && s.event == "MODIFY"),
        ),
        (
            vec!["--since".into(), rfc(t_a), "--until".into(), rfc(t_b)],
            Box::new(move |s| in_window(s, Some(t_a), Some(t_b))),
        ),
        (
            vec![
                "--actor".into(),
                "bob".into(),
                "--since".into(),
                rfc(t_a),
                "--event".into(),
                "MODIFY".into(),
            ],
            Box::new(move |s| {
                s.actor.as_deref() == Some("bob")
                    && s.event == "MODIFY"
                    && in_window(s, Some(t_a), None)
            }),
        ),
        (
            vec!["--field".into(), "profile".into()],
            Box::new(move |s| field_changed(s, "profile")),
        ),
        (
            vec![
                "--field".into(),
                "status".into(),
                "--from".into(),
                "S:PENDING".into(),
                "--to".into(),
                "S:PAID".into(),
            ],
            Box::new(move |s| status_went(s, "PENDING", "PAID")),
        ),
        (
            vec!["--event".into(), "REMOVE".into()],
            Box::new(|s| s.event == "REMOVE"),
        ),
        (
            vec![
                "--event".into(),
                "INSERT".into(),
                "--until".into(),
                rfc(t_b),
            ],
            Box::new(move |s| s.event == "INSERT" && in_window(s, None, Some(t_b))),
        ),
        (
            vec!["--correlation".into(), "req-1".into()],
            Box::new(|s| s.correlation.as_deref() == Some("req-1")),
        ),
        (
            vec![
                "--key".into(),
                key_arg[0].clone(),
                "--key".into(),
                key_arg[1].clone(),
            ],
            {
                let k = key_id(&some_key);
                Box::new(move |s| key_id(&s.key) == k)
            },
        ),
        (
            vec![
                "--key".into(),
                key_arg[0].clone(),
                "--key".into(),
                key_arg[1].clone(),
                "--field".into(),
                "balance".into(),
                "--since".into(),
                rfc(t_a),
            ],
            {
                let k = key_id(&some_key);
                Box::new(move |s| {
                    key_id(&s.key) == k
                        && field_changed(s, "balance")
                        && in_window(s, Some(t_a), None)
                })
            },
        ),
    ];
    let mut nonempty = 0;
    for (args, pred) in &cases {
        let expected: Vec<String> = steps.iter().filter(|s| pred(s)).map(step_summary).collect();
        nonempty += usize::from(!expected.is_empty());
        let mut a: Vec<&str> = vec!["--table", &table];
        a.extend(args.iter().map(String::as_str));
        let got: Vec<String> = query(&env, &cfg, &a).await.iter().map(summary).collect();
        assert_eq!(got, expected, "query {args:?} (seed {seed})");
        // Newest first, and a limit.
        let mut d = a.clone();
        d.extend(["--order", "desc", "--limit", "5"]);
        let got: Vec<String> = query(&env, &cfg, &d).await.iter().map(summary).collect();
        let newest: Vec<String> = expected.iter().rev().take(5).cloned().collect();
        assert_eq!(
            got, newest,
            "query {args:?} --order desc --limit 5 (seed {seed})"
        );
    }
    assert!(nonempty >= 8, "the workload exercises most filters");
    // Correlation needs no --table: it spans every audited table.
    let across = query(&env, &cfg, &["--correlation", "req-2"]).await;
    let expected: Vec<String> = steps
        .iter()
        .filter(|s| s.correlation.as_deref() == Some("req-2"))
        .map(step_summary)
        .collect();
    assert_eq!(across.iter().map(summary).collect::<Vec<_>>(), expected);
    for e in &across {
        assert_eq!(e["correlation"], json!("req-2"));
    }

    // ---- history --last 1 on the hot item: a few Query calls ----
    let hot_args = key_args(&hot);
    let mut cmd = env.command(&[
        "history",
        "--config",
        &cfg,
        "--table",
        &table,
        "--key",
        &hot_args[0],
        "--key",
        &hot_args[1],
        "--last",
        "1",
        "--json",
    ]);
    cmd.env("RUST_LOG", "ddb_audit::read=debug");
    let out = cmd.output().await.expect("run history");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = parse_json_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(last.len(), 1);
    assert_eq!(last[0]["changes"][0]["new"], json!({"N": "199"}));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let calls: u64 = stderr
        .lines()
        .find(|l| l.contains("read cost"))
        .and_then(|l| l.split("query_calls=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no read cost logged: {stderr}"));
    assert!(
        calls <= 3,
        "--last 1 of 200 entries took {calls} Query calls"
    );
    let three = env
        .cli(&[
            "history",
            "--config",
            &cfg,
            "--table",
            &table,
            "--key",
            &hot_args[0],
            "--key",
            &hot_args[1],
            "--last",
            "3",
            "--json",
        ])
        .await;
    let three = parse_json_lines(&three.success().stdout);
    let counters: Vec<&Value> = three.iter().map(|e| &e["changes"][0]["new"]["N"]).collect();
    assert_eq!(
        counters,
        [&json!("197"), &json!("198"), &json!("199")],
        "oldest first"
    );

    // The readable form, for the on-call: field, old → new, actor, time.
    let text = env
        .cli(&[
            "history",
            "--config",
            &cfg,
            "--table",
            &table,
            "--key",
            &hot_args[0],
            "--key",
            &hot_args[1],
            "--last",
            "1",
        ])
        .await;
    let text = &text.success().stdout;
    assert!(
        text.contains("counter") && text.contains("198 → 199") && text.contains("svc"),
        "{text}"
    );
    assert!(
        text.contains(last[0]["event_time"].as_str().unwrap()),
        "{text}"
    );

    // ---- show --at: the item as the test wrote it at that moment ----
    let shown = |key: &Value, at: DateTime<Utc>| {
        let (env, cfg, table) = (&env, &cfg, &table);
        let args = key_args(key);
        async move {
            let out = env
                .cli(&[
                    "show",
                    "--config",
                    cfg,
                    "--table",
                    table,
                    "--key",
                    &args[0],
                    "--key",
                    &args[1],
                    "--at",
                    &rfc(at),
                    "--json",
                ])
                .await;
            let v: Value = serde_json::from_str(out.success().stdout.trim()).expect("show JSON");
            v
        }
    };
    let checked: Vec<usize> = (0..70).step_by(5).collect();
    for &i in &checked {
        let s = &steps[i];
        let at = if i + 1 < steps.len() { mid(i) } else { s.end };
        let v = shown(&s.key, at).await;
        assert_eq!(v["exists"], json!(s.after.is_some()), "show step {i}: {v}");
        assert_eq!(
            v["complete"],
            json!(true),
            "every item here starts with an INSERT: {v}"
        );
        match &s.after {
            Some(item) => assert!(
                dyn_eq(&json!({"M": v["item"]}), &json!({"M": item})),
                "step {i}: {v} vs {item}"
            ),
            None => assert_eq!(v["item"], Value::Null),
        }
    }
    // Before the item's first entry: unknown, so incomplete.
    let v = shown(&steps[0].key, steps[0].start - chrono::Duration::seconds(5)).await;
    assert_eq!(
        (v["exists"].clone(), v["complete"].clone()),
        (json!(false), json!(false))
    );

    // ---- diff composes: applied to show FROM it gives show TO ----
    for _ in 0..4 {
        let key = item_key(rng.random_range(0..6));
        let (a, b) = (mid(rng.random_range(0..69)), mid(rng.random_range(0..69)));
        let args = key_args(&key);
        let out = env
            .cli(&[
                "diff",
                "--config",
                &cfg,
                "--table",
                &table,
                "--key",
                &args[0],
                "--key",
                &args[1],
                "--from",
                &rfc(a),
                "--to",
                &rfc(b),
                "--json",
            ])
            .await;
        let d: Value = serde_json::from_str(out.success().stdout.trim()).expect("diff JSON");
        let from = shown(&key, a).await;
        let to = shown(&key, b).await;
        let mut state = (!from["item"].is_null()).then(|| from["item"].clone());
        apply_entry(&mut state, d["changes"].as_array().unwrap()).expect("diff applies");
        let want = (!to["item"].is_null()).then(|| to["item"].clone());
        match (&state, &want) {
            (Some(x), Some(y)) => assert!(dyn_eq(&json!({"M": x}), &json!({"M": y})), "{d}"),
            (x, y) => assert_eq!(x.is_none(), y.is_none(), "{d}"),
        }
    }

    // ---- revert: the plan restores the state; a concurrent change fails it ----
    let live = steps[..70]
        .iter()
        .rposition(|s| {
            s.after.is_some()
                && s.before.is_some()
                && state.get(&key_id(&s.key)).cloned().flatten().is_some()
        })
        .expect("a MODIFY of an item that still exists");
    let key = steps[live].key.clone();
    let args = key_args(&key);
    let target_time = mid(live - 1);
    let target = steps[..live]
        .iter()
        .rev()
        .find(|s| s.key == key)
        .and_then(|s| s.after.clone());
    let plan = |extra: &[&str]| {
        let (env, cfg, table, args) = (&env, &cfg, &table, &args);
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        async move {
            let mut a = vec![
                "revert",
                "--config",
                cfg,
                "--table",
                table,
                "--key",
                &args[0],
                "--key",
                &args[1],
                "--to-time",
            ];
            let t = rfc(target_time);
            a.push(&t);
            a.extend(extra.iter().map(String::as_str));
            let out = env.cli(&a).await;
            let v: Value = serde_json::from_str(&out.success().stdout).expect("plan JSON");
            v
        }
    };
    // The plan is made against what the trail says now; the table agrees.
    let p = plan(&[]).await;
    let now_item = env.get_item(&table, &key).await;
    // A concurrent change first: the plan must fail.
    let mut changed = now_item.clone().expect("item exists");
    changed["balance"] = json!({"N": "12345"});
    put(&env, &table, &changed).await;
    let err = apply_plan(&env, &p)
        .await
        .expect_err("a concurrent change fails the plan");
    assert!(err.contains("ConditionalCheckFailed"), "{err}");
    // Once audited, a new plan applies and restores the item as it was.
    env.wait_history(&config, &table, &args, "the concurrent change", |e| {
        e.last()
            .is_some_and(|l| l["changes"].to_string().contains("12345"))
    })
    .await;
    // Applied under a name: the plan never sets the actor attribute back
    // to the old writer, it names whoever applies it.
    let p = plan(&["--actor", "e2e-reverter"]).await;
    apply_plan(&env, &p).await.expect("the plan applies");
    let restored = env.get_item(&table, &key).await;
    match (&restored, &target) {
        (Some(x), Some(y)) => {
            let mut want = json!(y);
            want["updated_by"] = json!({"S": "e2e-reverter"});
            assert!(
                dyn_eq(&json!({"M": x}), &json!({"M": want})),
                "{p}\n{x} vs {want}"
            )
        }
        (x, y) => assert_eq!(x.is_none(), y.is_none(), "{p}"),
    }
    // Its audit entry credits whoever applied it, not the writer it undid.
    env.wait_history(&config, &table, &args, "the revert's entry", |e| {
        e.last()
            .is_some_and(|l| l["actor"] == json!("e2e-reverter"))
    })
    .await;
    // One field only.
    put(&env, &table, &changed).await;
    // The change that sets 12345 (the revert's entry only had it as old).
    env.wait_history(&config, &table, &args, "the second change", |e| {
        e.last().is_some_and(|l| {
            l["changes"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["path"] == json!("balance") && c["new"] == json!({"N": "12345"}))
            })
        })
    })
    .await;
    // A field the item never had is a typo, not a plan.
    let mut typo = vec![
        "revert",
        "--config",
        &cfg,
        "--table",
        &table,
        "--key",
        &args[0],
        "--key",
        &args[1],
        "--to-time",
    ];
    let now_text = rfc(Utc::now());
    typo.extend([now_text.as_str(), "--field", "balnce"]);
    env.cli(&typo)
        .await
        .fails_naming(&["--field", "\"balnce\"", "no such field", "balance"]);
    let p = plan(&["--field", "balance"]).await;
    assert_eq!(p["operation"], json!("UpdateItem"), "{p}");
    apply_plan(&env, &p).await.expect("the field plan applies");
    let after = env.get_item(&table, &key).await.expect("item");
    assert_eq!(
        after.get("balance"),
        target.as_ref().and_then(|t| t.get("balance")),
        "{p}"
    );

    // A deleted item comes back with a conditional PutItem.
    let before_delete = env.get_item(&table, &key).await.expect("item");
    let t_before = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    delete(&env, &table, &key).await;
    env.wait_history(&config, &table, &args, "the delete", |e| {
        e.last().is_some_and(|l| l["event"] == json!("REMOVE"))
    })
    .await;
    let out = env
        .cli(&[
            "revert",
            "--config",
            &cfg,
            "--table",
            &table,
            "--key",
            &args[0],
            "--key",
            &args[1],
            "--to-time",
            &rfc(t_before),
            "--actor",
            "e2e-reverter",
        ])
        .await;
    let p: Value = serde_json::from_str(&out.success().stdout).expect("plan JSON");
    assert_eq!(p["operation"], json!("PutItem"), "{p}");
    apply_plan(&env, &p).await.expect("the put applies");
    let back = env.get_item(&table, &key).await.expect("item is back");
    let mut want = json!(before_delete);
    want["updated_by"] = json!({"S": "e2e-reverter"});
    assert!(dyn_eq(&json!({"M": back}), &json!({"M": want})), "{p}");
    // Applied twice, the put's condition fails: the item exists again.
    assert!(apply_plan(&env, &p).await.is_err(), "{p}");
    // An item that did not exist yet becomes a conditional DeleteItem.
    let first = &steps[0];
    let fargs = key_args(&first.key);
    let exists_now = env.get_item(&table, &first.key).await.is_some();
    // The plans applied above may have written this very item: wait until
    // the trail has audited that too, or the plan is made from a stale "now".
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = rfc(chrono::Utc::now());
        let shown = env
            .cli(&[
                "show", "--config", &cfg, "--table", &table, "--key", &fargs[0], "--key",
                &fargs[1], "--at", &now, "--json",
            ])
            .await;
        let state: Value = serde_json::from_str(&shown.success().stdout).expect("show JSON");
        if state["exists"] == json!(exists_now) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the trail never caught up with the table: {state}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = env
        .cli(&[
            "revert",
            "--config",
            &cfg,
            "--table",
            &table,
            "--key",
            &fargs[0],
            "--key",
            &fargs[1],
            "--to-time",
            &rfc(first.start - chrono::Duration::milliseconds(50)),
        ])
        .await;
    if exists_now {
        let p: Value = serde_json::from_str(&out.success().stdout).expect("plan JSON");
        assert_eq!(p["operation"], json!("DeleteItem"), "{p}");
        apply_plan(&env, &p).await.expect("the delete applies");
        assert!(env.get_item(&table, &first.key).await.is_none());
    } else {
        out.fails_naming(&["nothing to revert"]);
    }

    // ---- safe under `| head`: a closed pipe ends quietly ----
    let mut cmd = env.command(&["query", "--config", &cfg, "--table", &table, "--json"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn query");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    assert!(lines.next_line().await.unwrap().is_some());
    drop(lines);
    let out = child.wait_with_output().await.expect("query exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{stderr}"
    );

    daemon.stop_gracefully().await;
}

/// Applies a revert plan with the SDK, as `aws dynamodb … --cli-input-json`
/// would; the error text on failure.
async fn apply_plan(env: &TestEnv, plan: &Value) -> Result<(), String> {
    let input = &plan["input"];
    let table = input["TableName"].as_str().unwrap();
    let names = input["ExpressionAttributeNames"].as_object().map(|m| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    });
    let values = input["ExpressionAttributeValues"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), json_to_av(v))).collect());
    let condition = input["ConditionExpression"].as_str().map(str::to_string);
    let result = match plan["operation"].as_str().unwrap() {
        "UpdateItem" => env
            .ddb
            .update_item()
            .table_name(table)
            .set_key(Some(json_to_item(&input["Key"])))
            .set_update_expression(input["UpdateExpression"].as_str().map(str::to_string))
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        "PutItem" => env
            .ddb
            .put_item()
            .table_name(table)
            .set_item(Some(json_to_item(&input["Item"])))
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        "DeleteItem" => env
            .ddb
            .delete_item()
            .table_name(table)
            .set_key(Some(json_to_item(&input["Key"])))
            .set_condition_expression(condition)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("{e:?}")),
        other => panic!("unknown operation {other}"),
    };
    result
}

/// `init` adds the indexes to an audit table made before they existed, and
/// a second `init` finds them there.
#[tokio::test]
async fn init_adds_the_indexes_to_an_existing_audit_table() {
    let env = TestEnv::new("readix");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let audit = env.name("entries");
    env.ddb
        .create_table()
        .table_name(&audit)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("sk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("sk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Range)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create an old-style audit table");
    let config = env.write_file("config.toml", &config_text(&env, &table));
    let out = env.cli(&["init", "--config", path_str(&config)]).await;
    let text = &out.success().stdout;
    for index in [
        "by-table-time",
        "by-actor-time",
        "by-correlation-time",
        "by-principal-time",
    ] {
        assert!(text.contains(&format!("added index {index}")), "{text}");
    }
    let described = env
        .ddb
        .describe_table()
        .table_name(&audit)
        .send()
        .await
        .expect("describe");
    let mut names: Vec<String> = described
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|g| g.index_name().map(str::to_string))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "by-actor-time",
            "by-correlation-time",
            "by-principal-time",
            "by-table-time"
        ]
    );
    let again = env.cli(&["init", "--config", path_str(&config)]).await;
    assert!(
        !again.success().stdout.contains("added index"),
        "{}",
        again.stdout
    );
}

/// `snapshot` of a table whose items predate its stream, with changes made
/// while it runs and a SIGTERM in the middle: every item gets exactly one
/// SNAPSHOT entry, and `show --at` any time after an item's snapshot gives
/// the item as the test wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_baselines_items_that_predate_the_stream() {
    let seed = seed();
    eprintln!("DDB_AUDIT_E2E_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let env = TestEnv::new("readsnap");
    let table = env.name("legacy");
    env.create_table(&table, None).await;
    const ITEMS: usize = 24;
    let mut state = BTreeMap::new();
    for i in 0..ITEMS {
        let item = random_item(&mut rng, &item_key(i), "legacy-loader", i);
        write(&env, &table, &item_key(i), &mut state, Some(item)).await;
    }
    env.ddb
        .update_table()
        .table_name(&table)
        .stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::NewAndOldImages)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("enable the stream");
    let config = env.write_file("config.toml", &config_text(&env, &table));
    let cfg = path_str(&config).to_string();
    env.init(&config).await;
    let mut daemon = env.spawn_daemon(&config);
    daemon
        .wait_log("the table being audited", |l| {
            l.contains("table is being audited")
        })
        .await;

    // The snapshot runs slowly (2 items a page, 2 read units a second) while
    // the items change; SIGTERM stops it, and the same command resumes it.
    let args = [
        "snapshot",
        "--config",
        &cfg,
        "--table",
        &table,
        "--segments",
        "3",
        "--page-size",
        "2",
        "--read-units-per-sec",
        "2",
    ];
    let mut steps = Vec::new();
    let mut counter = 100;
    for run in 0..2 {
        let mut cmd = env.command(&args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn snapshot");
        let started = std::time::Instant::now();
        let mut signalled = false;
        while child.try_wait().expect("poll snapshot").is_none() {
            if run == 0 && !signalled && started.elapsed() > Duration::from_millis(1500) {
                unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
                signalled = true;
            }
            let i = rng.random_range(0..ITEMS);
            counter += 1;
            let item = random_item(&mut rng, &item_key(i), ACTORS[i % 3], counter);
            steps.push(write(&env, &table, &item_key(i), &mut state, Some(item)).await);
            tokio::time::sleep(Duration::from_millis(60)).await;
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "snapshot runs too long"
            );
        }
        let out = child.wait_with_output().await.expect("snapshot exits");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {run}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if run == 0 {
            assert!(
                stdout.contains("interrupted"),
                "the first run was stopped: {stdout}"
            );
        } else {
            assert!(
                stdout.contains("(resumed)") && stdout.contains("done"),
                "{stdout}"
            );
        }
    }
    // A few changes after the snapshot too.
    for _ in 0..10 {
        let i = rng.random_range(0..ITEMS);
        counter += 1;
        let item = random_item(&mut rng, &item_key(i), "after", counter);
        steps.push(write(&env, &table, &item_key(i), &mut state, Some(item)).await);
    }

    // Exactly one SNAPSHOT entry per item, in the contract's shape.
    let snaps = query(&env, &cfg, &["--table", &table, "--event", "SNAPSHOT"]).await;
    let mut keys: Vec<String> = snaps.iter().map(|e| key_id(&e["key"])).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(
        (snaps.len(), keys.len()),
        (ITEMS, ITEMS),
        "one SNAPSHOT per item per run"
    );
    for e in &snaps {
        assert_eq!(e["sequence_number"], Value::Null, "{e}");
        assert!(e["snapshot_time"].is_string(), "{e}");
        assert!(
            e["changes"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c.get("old").is_none()),
            "{e}"
        );
    }
    let snap_time: BTreeMap<String, DateTime<Utc>> = snaps
        .iter()
        .map(|e| {
            let t = DateTime::parse_from_rfc3339(e["snapshot_time"].as_str().unwrap()).unwrap();
            (key_id(&e["key"]), t.with_timezone(&Utc))
        })
        .collect();

    // Wait until the stream's changes are audited.
    let deadline = std::time::Instant::now() + AUDIT_DEADLINE;
    loop {
        let got = query(&env, &cfg, &["--table", &table, "--event", "MODIFY"])
            .await
            .len();
        if got == steps.len() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{got} of {} changes audited",
            steps.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // history lists an item in the order its state is folded: a change made
    // well before the snapshot read is printed above the SNAPSHOT entry, one
    // made well after it below (the service's whole-second times blur the
    // second around the read).
    for i in 0..ITEMS {
        let args = key_args(&item_key(i));
        let out = env
            .cli(&[
                "history", "--config", &cfg, "--table", &table, "--key", &args[0], "--key",
                &args[1], "--json",
            ])
            .await;
        let entries = parse_json_lines(&out.success().stdout);
        let at = |e: &Value, field: &str| {
            e[field]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let snap = entries
            .iter()
            .position(|e| e["event"] == json!("SNAPSHOT"))
            .expect("each item has its SNAPSHOT entry");
        let read = at(&entries[snap], "snapshot_time").expect("snapshot_time");
        for (n, e) in entries.iter().enumerate() {
            let Some(t) = at(e, "event_time") else {
                continue;
            };
            if t < read - chrono::Duration::seconds(2) {
                assert!(
                    n < snap,
                    "a change from before the snapshot printed after it: {e}"
                );
            } else if t > read + chrono::Duration::seconds(2) {
                assert!(
                    n > snap,
                    "a change from after the snapshot printed before it: {e}"
                );
            }
        }
    }

    // show --at: between any two writes after an item's snapshot, the item
    // as the test wrote it.
    // The states right after an item's snapshot are the hard ones (its read
    // and the item's changes interleave); a sample of the others.
    let mut checked = 0;
    let (mut near, mut later) = (0, 0);
    for w in 0..steps.len() {
        let key = &steps[w].key;
        let id = key_id(key);
        let at = match steps.get(w + 1) {
            Some(next) => steps[w].end + (next.start - steps[w].end) / 2,
            None => Utc::now(),
        };
        if at < snap_time[&id] {
            continue;
        }
        if at < snap_time[&id] + chrono::Duration::seconds(3) {
            near += 1;
            if near > 24 {
                continue;
            }
        } else {
            later += 1;
            if later % 3 != 1 {
                continue;
            }
        }
        let a = key_args(key);
        let out = env
            .cli(&[
                "show",
                "--config",
                &cfg,
                "--table",
                &table,
                "--key",
                &a[0],
                "--key",
                &a[1],
                "--at",
                &rfc(at),
                "--json",
            ])
            .await;
        let v: Value = serde_json::from_str(out.success().stdout.trim()).expect("show JSON");
        let want = steps[..=w]
            .iter()
            .rev()
            .find(|s| &s.key == key)
            .and_then(|s| s.after.clone());
        assert_eq!(v["complete"], json!(true), "step {w}: {v}");
        let want = want.expect("items are never deleted here");
        assert!(
            dyn_eq(&json!({"M": v["item"]}), &json!({"M": want})),
            "step {w} at {}: {v}\nwant {want}",
            rfc(at)
        );
        checked += 1;
    }
    eprintln!(
        "{} writes during and after the snapshot; {checked} states checked",
        steps.len()
    );
    assert!(
        checked >= 8 && near > 0,
        "checked {checked} states, {near} near a snapshot"
    );
    // Now, for a sample of items (some never changed: the snapshot alone).
    for i in (0..ITEMS).step_by(3) {
        let key = item_key(i);
        let a = key_args(&key);
        let out = env
            .cli(&[
                "show",
                "--config",
                &cfg,
                "--table",
                &table,
                "--key",
                &a[0],
                "--key",
                &a[1],
                "--at",
                &rfc(Utc::now()),
                "--json",
            ])
            .await;
        let v: Value = serde_json::from_str(out.success().stdout.trim()).expect("show JSON");
        let now = env.get_item(&table, &key).await.expect("item");
        assert!(
            dyn_eq(&json!({"M": v["item"]}), &json!({"M": now})) && v["complete"] == json!(true),
            "item {i}: {v}\nnow {now}"
        );
    }
    daemon.stop_gracefully().await;
}
