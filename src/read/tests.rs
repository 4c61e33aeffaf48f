//! The read side over the in-memory store: random trails, with the test's own
//! record of every version as the oracle.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::asof::{diff, show, states_at, Folder};
use super::*;
use crate::diff::{apply_changes, diff_images};
use crate::store::memory::MemoryStore;
use crate::store::{AuditStore, ReadStore};

const ARN: &str = "arn:aws:dynamodb:us-east-1:1:table/t/stream/2026-01-01T00:00:00.000";

/// A MODIFY on shard `s` of `ARN`, with no time, actor or changes.
fn fixture(table: &str, key: Item, seq: &str) -> AuditEntry {
    AuditEntry {
        shard_id: "s".into(),
        event_time: None,
        actor: None,
        stream_arn: ARN.into(),
        ..AuditEntry::fixture(table, key, seq)
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap()
}

fn key(i: usize) -> Item {
    [("pk".to_string(), AttrValue::S(format!("item-{i}")))].into()
}

fn random_value(rng: &mut StdRng, depth: u32) -> AttrValue {
    match rng.random_range(0..if depth > 1 { 3 } else { 6 }) {
        0 => AttrValue::N(rng.random_range(0..50).to_string()),
        1 => AttrValue::S(["a", "b", "c", "PENDING", "PAID"][rng.random_range(0..5)].into()),
        2 => AttrValue::Bool(rng.random()),
        3 => AttrValue::M(
            (0..rng.random_range(0..3))
                .map(|i| (format!("k{i}"), random_value(rng, depth + 1)))
                .collect(),
        ),
        4 => AttrValue::L(
            (0..rng.random_range(0..3))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ => AttrValue::Null,
    }
}

fn random_item(rng: &mut StdRng, k: &Item, actor: &str) -> Item {
    let mut item = k.clone();
    for name in ["status", "balance", "profile", "tags"] {
        if rng.random_bool(0.7) {
            item.insert(name.into(), random_value(rng, 0));
        }
    }
    item.insert("updated_by".into(), AttrValue::S(actor.into()));
    item
}

/// One change the oracle knows: the versions before and after.
struct Written {
    entry: AuditEntry,
    after: Option<Item>,
    time: DateTime<Utc>,
}

/// Random trails for `items` items of `tables`, written to a memory store.
async fn random_trail(
    seed: u64,
    tables: &[&str],
    items: usize,
    steps: usize,
) -> (MemoryStore, Vec<Written>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let store = MemoryStore::new();
    let mut current: BTreeMap<(String, usize), Option<Item>> = BTreeMap::new();
    let mut written = Vec::new();
    for step in 0..steps {
        let table = tables[rng.random_range(0..tables.len())];
        let i = rng.random_range(0..items);
        let k = key(i);
        let actor = ["alice", "bob", "svc"][rng.random_range(0..3)];
        let before = current
            .entry((table.to_string(), i))
            .or_insert(None)
            .clone();
        let (event, after) = match &before {
            None => ("INSERT", Some(random_item(&mut rng, &k, actor))),
            Some(_) if rng.random_bool(0.15) => ("REMOVE", None),
            Some(_) => ("MODIFY", Some(random_item(&mut rng, &k, actor))),
        };
        let time = t0() + Duration::seconds(step as i64 * 10);
        let entry = AuditEntry {
            event: event.into(),
            event_time: Some(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            actor: after.as_ref().map(|_| actor.to_string()),
            changes: diff_images(before.as_ref(), after.as_ref()),
            correlation: (step % 7 == 0).then(|| format!("req-{}", step / 21)),
            ..fixture(table, k.clone(), &format!("{}", 1000 + step))
        };
        store.put_entry(&entry).await.unwrap();
        current.insert((table.to_string(), i), after.clone());
        written.push(Written { entry, after, time });
    }
    (store, written)
}

#[tokio::test]
async fn the_item_at_any_time_is_the_fold_of_its_changes_and_diffs_compose() {
    for seed in 0..8 {
        let (store, written) = random_trail(seed, &["t"], 3, 80).await;
        for i in 0..3 {
            let k = key(i);
            let mine: Vec<&Written> = written.iter().filter(|w| w.entry.key == k).collect();
            let Some(first) = mine.first() else { continue };
            // Before the first entry: nothing known.
            let s = show(&store, "t", &k, first.time - Duration::seconds(1))
                .await
                .unwrap();
            assert!(!s.exists && !s.complete && s.item.is_none(), "{s:?}");
            let mut times = Vec::new();
            for w in &mine {
                // At the entry's time and just before the next one.
                times.push(w.time);
                times.push(w.time + Duration::seconds(5));
            }
            let states = states_at(&store, "t", &k, &times).await.unwrap();
            for (n, w) in mine.iter().enumerate() {
                for state in &states[2 * n..2 * n + 2] {
                    assert_eq!(state.item, w.after, "seed {seed} item {i} entry {n}");
                    assert!(state.complete, "an INSERT starts every trail here");
                }
            }
            // diff(a, b) applied to the item at a gives the item at b.
            let mut rng = StdRng::seed_from_u64(seed * 100 + i as u64);
            for _ in 0..10 {
                let a = times[rng.random_range(0..times.len())];
                let b = times[rng.random_range(0..times.len())];
                let d = diff(&store, "t", &k, a, b).await.unwrap();
                let sa = show(&store, "t", &k, a).await.unwrap();
                let sb = show(&store, "t", &k, b).await.unwrap();
                let applied = apply_changes(sa.item.as_ref(), &d.changes).unwrap();
                match &sb.item {
                    Some(item) => assert_eq!(&applied, item, "seed {seed}: diff {a} → {b}"),
                    None => assert!(
                        applied.is_empty(),
                        "seed {seed}: diff {a} → {b} to a removed item"
                    ),
                }
            }
        }
    }
}

#[test]
fn a_trail_without_a_baseline_is_incomplete_but_shows_what_it_knows() {
    let k = key(1);
    let mut f = Folder::new();
    let old: Item = [
        ("pk".into(), AttrValue::S("item-1".into())),
        ("a".into(), AttrValue::N("1".into())),
        ("b".into(), AttrValue::S("x".into())),
    ]
    .into();
    let new: Item = [
        ("pk".into(), AttrValue::S("item-1".into())),
        ("a".into(), AttrValue::N("2".into())),
        ("b".into(), AttrValue::S("x".into())),
    ]
    .into();
    let entry = AuditEntry {
        changes: diff_images(Some(&old), Some(&new)),
        ..fixture("t", k, "1")
    };
    f.apply(&entry);
    let s = f.state();
    assert!(!s.complete);
    assert_eq!(s.item.unwrap().get("a"), Some(&AttrValue::N("2".into())));
    // A SNAPSHOT is a baseline: complete from there on.
    let mut snap = entry.clone();
    snap.event = "SNAPSHOT".into();
    snap.changes = diff_images(None, Some(&new));
    f.apply(&snap);
    f.apply(&AuditEntry {
        changes: diff_images(Some(&new), Some(&old)),
        ..entry
    });
    let s = f.state();
    assert!(s.complete);
    assert_eq!(s.item.as_ref(), Some(&old));
}

/// Reads every page of a query, checking each page's size.
async fn all_pages(store: &MemoryStore, filter: &QueryFilter, page: usize) -> Vec<AuditEntry> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let p = query(store, filter, cursor.as_ref(), page).await.unwrap();
        assert!(p.entries.len() <= page);
        out.extend(p.entries);
        match p.next {
            Some(c) => cursor = Some(Cursor::parse(c.as_str()).unwrap()),
            None => return out,
        }
    }
}

fn ids(entries: &[AuditEntry]) -> Vec<String> {
    entries
        .iter()
        .map(|e| format!("{}/{}", e.table, e.sequence_number))
        .collect()
}

#[tokio::test]
async fn every_filter_and_combination_returns_exactly_the_matching_entries_in_time_order() {
    let (store, written) = random_trail(42, &["orders", "flags"], 6, 200).await;
    let all: Vec<AuditEntry> = written.iter().map(|w| w.entry.clone()).collect();
    let at = |s: i64| t0() + Duration::seconds(s);
    let base = QueryFilter {
        tables: vec!["orders".into(), "flags".into()],
        ..QueryFilter::default()
    };
    let with = |set: &dyn Fn(&mut QueryFilter)| {
        let mut filter = base.clone();
        set(&mut filter);
        filter
    };
    let (orders, flags) = (|| Some("orders".to_string()), || Some("flags".to_string()));
    let filters = vec![
        base.clone(),
        with(&|f| f.table = orders()),
        with(&|f| (f.table, f.key) = (orders(), Some(key(2)))),
        with(&|f| f.actor = Some("alice".into())),
        with(&|f| (f.actor, f.table) = (Some("bob".into()), flags())),
        with(&|f| (f.since, f.until) = (Some(at(500)), Some(at(1500)))),
        with(&|f| (f.table, f.since) = (flags(), Some(at(1200)))),
        with(&|f| f.field = Some("profile".into())),
        with(&|f| {
            f.field = Some("status".into());
            f.from = Some(AttrValue::S("PENDING".into()));
            f.to = Some(AttrValue::S("PAID".into()));
        }),
        with(&|f| (f.event, f.table) = (Some("REMOVE".into()), orders())),
        with(&|f| f.correlation = Some("req-3".into())),
        with(&|f| {
            f.actor = Some("svc".into());
            (f.event, f.until) = (Some("MODIFY".into()), Some(at(1000)));
        }),
        with(&|f| {
            (f.table, f.key) = (orders(), Some(key(1)));
            (f.since, f.until) = (Some(at(300)), Some(at(1800)));
        }),
    ];
    for filter in filters {
        for order in [Order::Asc, Order::Desc] {
            let filter = QueryFilter {
                order,
                ..filter.clone()
            };
            let mut expected: Vec<AuditEntry> =
                all.iter().filter(|e| filter.matches(e)).cloned().collect();
            if order == Order::Desc {
                expected.reverse();
            }
            assert!(
                filter.field.is_some() || filter.correlation.is_some() || !expected.is_empty(),
                "the workload exercises {filter:?}"
            );
            for page in [4, 100] {
                let got = all_pages(&store, &filter, page).await;
                assert_eq!(ids(&got), ids(&expected), "{filter:?}, page size {page}");
            }
        }
    }
}

/// A query over a sharded index (8 lanes) reads each index row about once:
/// rows fetched for the merge but not yet given are kept for the next
/// round, not read again (they were: up to 8 times what a page returned).
#[tokio::test]
async fn a_sharded_query_reads_about_what_it_returns() {
    let (store, written) = random_trail(11, &["orders"], 40, 600).await;
    let filter = QueryFilter {
        tables: vec!["orders".into()],
        table: Some("orders".into()),
        ..QueryFilter::default()
    };
    let expected = written.iter().filter(|w| filter.matches(&w.entry)).count();
    for page in [10, 100] {
        let before = store.read_cost();
        let got = all_pages(&store, &filter, page).await;
        let cost = store.read_cost();
        assert_eq!(got.len(), expected);
        let pages = expected.div_ceil(page) as u64;
        // Every matching row once and its entry once, plus, per page, what
        // the lanes had buffered when it was full (re-read from the cursor).
        let slack = pages * 8 * (page.div_ceil(8) * 2 + 4) as u64;
        let read = cost.items_read - before.items_read;
        assert!(
            read <= 2 * expected as u64 + slack,
            "page {page}: read {read} for {expected} entries"
        );
    }
}

#[tokio::test]
async fn last_n_reads_from_the_newest_end() {
    let (store, written) = random_trail(7, &["t"], 1, 400).await;
    let before = store.read_cost();
    let last = last_entries(&store, "t", &key(0), 1, None, None)
        .await
        .unwrap();
    let cost = store.read_cost();
    assert_eq!(ids(&last), ids(&[written.last().unwrap().entry.clone()]));
    assert!(cost.query_calls - before.query_calls <= 2, "{cost:?}");
    let last3 = last_entries(&store, "t", &key(0), 3, None, None)
        .await
        .unwrap();
    let expected: Vec<AuditEntry> = written[written.len() - 3..]
        .iter()
        .map(|w| w.entry.clone())
        .collect();
    assert_eq!(ids(&last3), ids(&expected), "oldest first");
}

#[test]
fn times_and_values_parse_as_the_contract_says() {
    let now = t0();
    for (ago, span) in [
        ("90s", Duration::seconds(90)),
        ("15m", Duration::minutes(15)),
        ("2h", Duration::hours(2)),
        ("7d", Duration::days(7)),
    ] {
        assert_eq!(parse_time("--since", ago, now).unwrap(), now - span);
    }
    assert_eq!(
        parse_time("--at", "2026-11-23T19:05:00Z", now).unwrap(),
        Utc.with_ymd_and_hms(2026, 11, 23, 19, 5, 0).unwrap()
    );
    let e = parse_time("--since", "yesterday", now)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--since") && e.contains("RFC 3339") && e.contains("2h"),
        "{e}"
    );
    assert_eq!(
        parse_value("--to", "BOOL:true").unwrap(),
        AttrValue::Bool(true)
    );
    assert_eq!(parse_value("--to", "NULL:true").unwrap(), AttrValue::Null);
    assert_eq!(
        parse_value("--to", "N:900").unwrap(),
        AttrValue::N("900".into())
    );
    assert!(parse_value("--from", "X:1")
        .unwrap_err()
        .to_string()
        .contains("--from"));
    let in_t = QueryFilter {
        tables: vec!["t".into()],
        ..QueryFilter::default()
    };
    for (filter, word) in [
        (
            QueryFilter {
                from: Some(AttrValue::Null),
                ..in_t.clone()
            },
            "--field",
        ),
        (
            QueryFilter {
                event: Some("UPSERT".into()),
                ..in_t
            },
            "SNAPSHOT",
        ),
    ] {
        let e = filter.validate().unwrap_err().to_string();
        assert!(e.contains(word), "{e}");
    }
    assert!(Cursor::parse("not a cursor!").is_err());
}

#[tokio::test]
async fn a_cursor_only_continues_its_own_query() {
    let (store, _) = random_trail(3, &["t"], 4, 40).await;
    let filter = QueryFilter {
        table: Some("t".into()),
        ..QueryFilter::default()
    };
    let page = query(&store, &filter, None, 5).await.unwrap();
    let next = page.next.expect("more than one page");
    let other = QueryFilter {
        actor: Some("alice".into()),
        ..filter.clone()
    };
    let e = query(&store, &other, Some(&next), 5).await.unwrap_err();
    assert!(matches!(e, ReadError::BadCursor(_)), "{e}");
    assert!(query(&store, &filter, Some(&next), 5).await.is_ok());
}

#[test]
fn field_paths_match_at_or_below() {
    assert!(at_or_below("profile", "profile"));
    assert!(at_or_below("profile.name", "profile"));
    assert!(at_or_below("rules[1].x", "rules"));
    assert!(!at_or_below("profiles", "profile"));
    assert!(!at_or_below("profile", "profile.name"));
}

/// A MODIFY of item 1 from `version(from)` to `version(to)`.
fn modify(seq: &str, stamp: &str, from: u32, to: u32) -> AuditEntry {
    AuditEntry {
        event_time: Some(stamp.into()),
        changes: diff_images(Some(&version(from)), Some(&version(to))),
        ..fixture("t", key(1), seq)
    }
}

fn version(n: u32) -> Item {
    let mut i = key(1);
    i.insert("v".into(), AttrValue::N(n.to_string()));
    i.insert(
        "tags".into(),
        AttrValue::L(vec![AttrValue::N(n.to_string())]),
    );
    i
}

/// Stream times have whole seconds: a snapshot read mid-second may or may
/// not hold a change stamped with that second. Either way the state after
/// the snapshot is the true one, and complete.
#[tokio::test]
async fn a_snapshot_is_placed_among_changes_stamped_in_whole_seconds() {
    let snapshot = |read_at: &str, item: &Item| {
        crate::snapshot::snapshot_entry("t", "run1", &["pk".to_string()], item, read_at, None)
    };
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    // (snapshot holds, changes) → the state at 12:00:09.
    let cases: Vec<(Item, Vec<AuditEntry>, Item)> = vec![
        // The change came after the read (same second): applied on top.
        (
            version(0),
            vec![modify("10", "2026-11-23T12:00:05Z", 0, 1)],
            version(1),
        ),
        // It came before the read: already in the snapshot.
        (
            version(1),
            vec![modify("10", "2026-11-23T12:00:05Z", 0, 1)],
            version(1),
        ),
        // Two before the read, one after.
        (
            version(2),
            vec![
                modify("10", "2026-11-23T12:00:05Z", 0, 1),
                modify("11", "2026-11-23T12:00:05Z", 1, 2),
                modify("12", "2026-11-23T12:00:06Z", 2, 3),
            ],
            version(3),
        ),
        // Changes well before the read: folded first, the snapshot rebases.
        (
            version(1),
            vec![
                modify("10", "2026-11-23T12:00:01Z", 0, 1),
                modify("11", "2026-11-23T12:00:08Z", 1, 4),
            ],
            version(4),
        ),
    ];
    for (n, (held, changes, want)) in cases.into_iter().enumerate() {
        let store = MemoryStore::new();
        store
            .put_entry(&snapshot("2026-11-23T12:00:05.500Z", &held))
            .await
            .unwrap();
        for c in &changes {
            store.put_entry(c).await.unwrap();
        }
        let s = show(&store, "t", &key(1), t("2026-11-23T12:00:09Z"))
            .await
            .unwrap();
        assert_eq!(s.item.as_ref(), Some(&want), "case {n}");
        assert!(s.complete, "case {n}");
        // Before the snapshot was read, and with no INSERT: unknown.
        let s = show(&store, "t", &key(1), t("2026-11-23T12:00:05.400Z"))
            .await
            .unwrap();
        assert!(!s.complete, "case {n}");
    }
}

/// `history --key pk=N:1` for a table keyed by a string finds nothing; it
/// must say what the key schema is, not print an empty history.
#[tokio::test]
async fn history_with_a_key_of_the_wrong_type_points_at_the_key_schema() {
    let (store, _) = random_trail(11, &["t"], 3, 12).await;
    let wrong: Item = [("pk".to_string(), AttrValue::N("1".into()))].into();
    let mut out = Vec::new();
    let e = super::cli::history(&store, "t", &wrong, None, None, None, false, &mut out)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(text.starts_with("--key: no history"), "{text}");
    assert!(text.contains("keyed by pk (S)"), "{text}");
    assert!(text.contains("the key given is pk (N)"), "{text}");
    assert!(text.contains("pass --key pk=S:VALUE"), "{text}");
    assert!(out.is_empty());
    let e = super::cli::history(&store, "t", &wrong, Some(1), None, None, true, &mut out)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("keyed by pk (S)"), "{e}");

    // A right-typed key of an item with no history is not an error.
    let unknown: Item = [("pk".to_string(), AttrValue::S("nobody".into()))].into();
    super::cli::history(&store, "t", &unknown, None, None, None, false, &mut out)
        .await
        .unwrap();
    // Nor is a table the trail holds nothing of.
    super::cli::history(&store, "other", &wrong, None, None, None, false, &mut out)
        .await
        .unwrap();
}

#[test]
fn a_principal_is_looked_up_in_its_own_sparse_index_and_matched_on_the_merged_principal() {
    let arn = "arn:aws:sts::1:assumed-role/cleanup/run-42";
    let filter = QueryFilter {
        principal: Some(arn.into()),
        actor: Some("alice".into()),
        ..QueryFilter::default()
    };
    filter
        .validate()
        .expect("a principal alone names what to search");
    match Plan::choose(&filter) {
        Plan::Lanes(lanes) => {
            assert_eq!(lanes.len(), crate::store::INDEX_BUCKETS as usize);
            for (i, p) in &lanes {
                assert_eq!(*i, Index::Principal);
                assert!(p.starts_with(&format!("{arn}#")), "{p}");
            }
        }
        other => panic!("{other:?}"),
    }
    let mut e: AuditEntry = serde_json::from_value(serde_json::json!({
        "table": "t", "key": {"pk": {"S": "u1"}}, "event": "REMOVE",
        "sequence_number": "1", "shard_id": "s", "event_time": null,
        "actor": null, "actor_source": null, "last_writer": "alice", "changes": []
    }))
    .unwrap();
    let by_pk_only = QueryFilter {
        principal: Some(arn.into()),
        ..QueryFilter::default()
    };
    assert!(
        !by_pk_only.matches(&e),
        "no attribution: not this principal's"
    );
    crate::attribution::reader::apply(
        &mut e,
        &crate::attribution::Principal {
            arn: Some(arn.into()),
            kind: Some("AssumedRole".into()),
            source_ip: None,
            user_agent: None,
            request_id: None,
            event_id: Some("e".into()),
            confidence: crate::attribution::Confidence::High,
            candidates: vec![],
        },
    );
    assert!(by_pk_only.matches(&e));
    let other = QueryFilter {
        principal: Some("arn:aws:iam::1:user/bob".into()),
        ..QueryFilter::default()
    };
    assert!(!other.matches(&e));
    let e = QueryFilter {
        principal: Some(String::new()),
        tables: vec!["t".into()],
        ..QueryFilter::default()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(e.contains("--principal"), "{e}");
}

#[test]
fn query_output_never_shows_a_last_writer_as_the_actor() {
    let e: AuditEntry = serde_json::from_value(serde_json::json!({
        "table": "t", "key": {"pk": {"S": "u1"}}, "event": "REMOVE",
        "sequence_number": "1", "shard_id": "s", "event_time": "2026-11-23T19:05:00Z",
        "actor": null, "actor_source": null, "last_writer": "alice",
        "changes": [{"path": "pk", "old": {"S": "u1"}}]
    }))
    .unwrap();
    let text = cli::query_table(&[e]);
    let row = text.lines().nth(1).unwrap_or_default();
    assert!(row.contains("unknown (last writer: alice)"), "{text}");
}

#[test]
fn the_cli_and_the_api_parse_alike_and_each_names_its_own_arguments() {
    let now = t0();
    let given = QueryText {
        table: Some("orders"),
        keys: vec!["pk=S:u1", "sk=N:7"],
        actor: Some("alice"),
        since: Some("2h"),
        field: Some("status"),
        to: Some("S:PAID"),
        order: Some("desc"),
        ..QueryText::default()
    };
    let filter = given.parse(ArgNames::Flags, now).unwrap();
    assert_eq!(filter, given.parse(ArgNames::Params, now).unwrap());
    assert_eq!(filter.key.as_ref().map(Item::len), Some(2));
    assert_eq!(filter.since, Some(now - Duration::hours(2)));
    assert_eq!(filter.to, Some(AttrValue::S("PAID".into())));
    assert_eq!(filter.order, Order::Desc);
    assert_eq!(
        QueryText::default()
            .parse(ArgNames::Flags, now)
            .unwrap()
            .key,
        None
    );

    let error = |names, given: QueryText<'_>| given.parse(names, now).unwrap_err().to_string();
    let bad_key = QueryText {
        keys: vec!["pk=X:1"],
        ..QueryText::default()
    };
    assert!(error(ArgNames::Flags, bad_key.clone()).starts_with("--key pk=X:1: "));
    assert!(error(ArgNames::Params, bad_key).starts_with("key=pk=X:1: "));
    let bad_order = QueryText {
        order: Some("up"),
        ..QueryText::default()
    };
    assert_eq!(
        error(ArgNames::Flags, bad_order.clone()),
        "--order: \"up\": expected asc or desc"
    );
    assert_eq!(
        error(ArgNames::Params, bad_order),
        "`order=up` must be asc (oldest first) or desc (newest first)"
    );
    let bad_time = QueryText {
        until: Some("soon"),
        ..QueryText::default()
    };
    assert!(error(ArgNames::Flags, bad_time.clone()).starts_with("--until: "));
    assert!(error(ArgNames::Params, bad_time).starts_with("until: "));
    assert_eq!(parse_key(&["pk=S:u1".to_string()]).unwrap(), key_of("u1"));
}

fn key_of(pk: &str) -> Item {
    [("pk".to_string(), AttrValue::S(pk.into()))].into()
}

/// A filter's Debug form names its query in cursors: it is the derived form
/// it always was (so cursors stay valid), `readable` left out unless set.
#[test]
fn a_filters_debug_form_is_the_one_its_cursors_were_made_with() {
    assert_eq!(
        format!("{:?}", QueryFilter::default()),
        "QueryFilter { table: None, key: None, actor: None, since: None, until: None, \
         field: None, from: None, to: None, event: None, correlation: None, principal: None, \
         order: Asc, tables: [] }"
    );
    let scoped = QueryFilter {
        readable: Some(["flags".to_string()].into()),
        ..QueryFilter::default()
    };
    assert!(format!("{scoped:?}").ends_with("tables: [], readable: {\"flags\"} }"));
    assert_eq!(query_id(&scoped), query_id(&QueryFilter::default()));
}

/// A scoped caller's pages are full: rows of tables it may not read are
/// skipped before paging, not dropped from a page after it.
#[tokio::test]
async fn a_scoped_query_skips_other_tables_before_paging() {
    let (store, written) = random_trail(7, &["orders", "flags"], 6, 200).await;
    let all = QueryFilter {
        actor: Some("alice".into()),
        tables: vec!["flags".into()],
        ..QueryFilter::default()
    };
    let scoped = QueryFilter {
        readable: Some(["flags".to_string()].into()),
        ..all.clone()
    };
    let expected: Vec<AuditEntry> = written
        .iter()
        .map(|w| w.entry.clone())
        .filter(|e| all.matches(e) && e.table == "flags")
        .collect();
    assert!(expected.len() > 8, "the workload has alice's flags");
    assert!(written
        .iter()
        .any(|w| all.matches(&w.entry) && w.entry.table == "orders"));
    let mut got = Vec::new();
    let mut cursor = None;
    loop {
        let page = query(&store, &scoped, cursor.as_ref(), 4).await.unwrap();
        got.extend(page.entries.iter().cloned());
        match page.next {
            Some(c) => {
                assert_eq!(page.entries.len(), 4, "only the last page is short");
                cursor = Some(c);
            }
            None => break,
        }
    }
    assert_eq!(ids(&got), ids(&expected));
}
