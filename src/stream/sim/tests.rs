use std::collections::{BTreeSet, HashMap};

use tokio::time::advance;

use super::*;
use crate::stream::{
    DescribeStreamRequest, IteratorPosition, StreamApi, StreamError, StreamStatus,
};
use crate::value::string_item as item;
use crate::value::AttrValue;

const HOUR: Duration = Duration::from_secs(3600);

/// Asserts that `$call` failed with the `StreamError::$kind` variant.
macro_rules! assert_fails {
    ($call:expr, $kind:ident) => {
        assert!(matches!($call, Err(StreamError::$kind(_))))
    };
}

fn key(pk: &str) -> Item {
    item(&[("pk", pk)])
}

/// A simulator without throttling (tests that want it turn it on) and
/// with one table `T` keyed by `pk`.
fn sim_with(cfg: SimConfig) -> SimStream {
    let sim = SimStream::new(SimConfig {
        throttling: false,
        ..cfg
    });
    sim.create_table("T", &["pk"], Some(ViewType::NewAndOldImages))
        .unwrap();
    sim
}

fn sim() -> SimStream {
    sim_with(SimConfig::default())
}

fn arn(sim: &SimStream) -> String {
    sim.stream_arn("T").unwrap()
}

/// A default simulator with its stream's ARN and its first open shard.
fn sim_and_shard() -> (SimStream, String, String) {
    sim_and_shard_with(SimConfig::default())
}

/// `sim_with(cfg)` with its stream's ARN and its first open shard.
fn sim_and_shard_with(cfg: SimConfig) -> (SimStream, String, String) {
    let sim = sim_with(cfg);
    let arn = arn(&sim);
    let shard = sim.open_shards("T").unwrap().remove(0);
    (sim, arn, shard)
}

async fn list_all(sim: &impl StreamApi, arn: &str, limit: Option<i32>) -> Vec<Vec<Shard>> {
    let mut pages = Vec::new();
    let mut start = None;
    loop {
        let page = sim
            .describe_stream(&DescribeStreamRequest {
                stream_arn: arn.to_string(),
                exclusive_start_shard_id: start.clone(),
                children_of: None,
                limit,
            })
            .await
            .unwrap();
        start = page.last_evaluated_shard_id.clone();
        pages.push(page.shards);
        if start.is_none() {
            return pages;
        }
    }
}

async fn children(sim: &SimStream, arn: &str, parent: &str) -> Vec<Shard> {
    sim.describe_stream(&DescribeStreamRequest {
        stream_arn: arn.to_string(),
        children_of: Some(parent.to_string()),
        ..Default::default()
    })
    .await
    .unwrap()
    .shards
}

/// Reads a shard from `position` until it ends (closed) or an empty page
/// (open); returns the records and whether the shard ended.
async fn read(
    sim: &SimStream,
    arn: &str,
    shard: &str,
    position: IteratorPosition,
) -> (Vec<StreamRecord>, bool) {
    let mut it = iterator(sim, arn, shard, &position).await.unwrap();
    let mut out = Vec::new();
    loop {
        let page = sim.get_records(&it, None).await.unwrap();
        let empty = page.records.is_empty();
        out.extend(page.records);
        match page.next_iterator {
            None => return (out, true),
            Some(_) if empty => return (out, false),
            Some(next) => it = next,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn writes_produce_records_of_the_documented_shape() {
    let sim = sim();
    let a1 = item(&[("pk", "a"), ("v", "1")]);
    let a2 = item(&[("pk", "a"), ("v", "2")]);

    let ins = sim.put("T", a1.clone()).unwrap().unwrap();
    assert_eq!(ins.event_name, "INSERT");
    assert_eq!(ins.keys, key("a"));
    assert_eq!(ins.new_image.as_ref(), Some(&a1));
    assert_eq!(ins.old_image, None);
    assert_eq!(ins.user_identity, None);
    assert!(ins.size_bytes.unwrap() > 0);

    // A write that changes nothing writes no record.
    assert_eq!(sim.put("T", a1.clone()).unwrap(), None);

    advance(Duration::from_millis(1500)).await;
    let modify = sim.put("T", a2.clone()).unwrap().unwrap();
    assert_eq!(modify.event_name, "MODIFY");
    assert_eq!(modify.old_image.as_ref(), Some(&a1));
    assert_eq!(modify.new_image.as_ref(), Some(&a2));
    // Base wall time + elapsed, whole seconds.
    assert_eq!(
        modify.approximate_creation.unwrap().to_rfc3339(),
        "2026-11-23T00:00:01+00:00"
    );

    let remove = sim.delete("T", &key("a")).unwrap().unwrap();
    assert_eq!(remove.event_name, "REMOVE");
    assert_eq!(remove.old_image.as_ref(), Some(&a2));
    assert_eq!(remove.new_image, None);
    assert_eq!(sim.delete("T", &key("a")).unwrap(), None);

    sim.put("T", item(&[("pk", "b")])).unwrap();
    let ttl = sim.ttl_expire("T", &key("b")).unwrap().unwrap();
    assert!(ttl.user_identity.as_ref().unwrap().is_ttl_expiry());

    let log = sim.write_log("T");
    assert_eq!(log.len(), 5);
    for pair in log.windows(2) {
        let (a, b) = (&pair[0].sequence_number, &pair[1].sequence_number);
        assert_eq!(a.len(), 21);
        assert_eq!(crate::stream::cmp_sequence(a, b), std::cmp::Ordering::Less);
    }
    let ids: BTreeSet<_> = log.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(ids.len(), log.len());
    assert_eq!(sim.write_log_for("T", &a1).unwrap().len(), 3);

    // The stream holds exactly the write log.
    let shard = sim.open_shards("T").unwrap().remove(0);
    let (read, ended) = read(&sim, &arn(&sim), &shard, IteratorPosition::TrimHorizon).await;
    assert!(!ended);
    assert_eq!(read, log);
}

#[tokio::test(start_paused = true)]
async fn update_edits_the_current_item_and_keeps_its_key() {
    let sim = sim();
    let set_n = |n: &str| {
        sim.update("T", &key("a"), |it| {
            it.insert("n".into(), AttrValue::N(n.into()));
        })
        .unwrap()
        .unwrap()
    };
    assert_eq!(set_n("1").event_name, "INSERT");
    let r = set_n("2");
    assert_eq!(r.event_name, "MODIFY");
    assert_eq!(r.old_image.unwrap()["n"], AttrValue::N("1".into()));
    assert_eq!(sim.update("T", &key("a"), |_| {}).unwrap(), None);
    assert!(sim
        .update("T", &key("a"), |it| {
            it.insert("pk".into(), AttrValue::S("b".into()));
        })
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn view_types_limit_images_and_tables_without_streams_write_none() {
    let sim = SimStream::new(SimConfig::default());
    sim.create_table("K", &["pk"], Some(ViewType::KeysOnly))
        .unwrap();
    sim.create_table("O", &["pk", "sk"], Some(ViewType::OldImage))
        .unwrap();
    sim.create_table("N", &["pk"], None).unwrap();
    let r = sim
        .put("K", item(&[("pk", "a"), ("x", "1")]))
        .unwrap()
        .unwrap();
    assert_eq!((r.new_image, r.old_image), (None, None));
    let it = item(&[("pk", "a"), ("sk", "1"), ("x", "1")]);
    sim.put("O", it.clone()).unwrap();
    let r = sim
        .put("O", item(&[("pk", "a"), ("sk", "1"), ("x", "2")]))
        .unwrap()
        .unwrap();
    assert_eq!(r.keys, item(&[("pk", "a"), ("sk", "1")]));
    assert_eq!((r.new_image, r.old_image), (None, Some(it)));
    assert_eq!(sim.put("N", key("a")).unwrap(), None);
    assert_eq!(sim.get_item("N", &key("a")), Some(key("a")));
    assert!(sim.put("O", key("a")).is_err(), "missing sort key");
    let t = sim.describe_table("N").await.unwrap();
    assert_eq!((t.latest_stream_arn, t.stream_enabled), (None, false));
    let t = sim.describe_table("K").await.unwrap();
    assert_eq!(t.view_type.as_deref(), Some("KEYS_ONLY"));
    assert_fails!(sim.describe_table("missing").await, NotFound);
}

#[tokio::test(start_paused = true)]
async fn records_of_an_item_follow_its_lineage_through_rotations_and_splits() {
    let sim = sim_with(SimConfig {
        initial_shards: 2,
        stale_parent_describe_calls: 0,
        ..SimConfig::with_seed(7)
    });
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let mut version = 0;
    let mut write_all = |sim: &SimStream| {
        version += 1;
        for k in &keys {
            sim.put("T", item(&[("pk", k), ("v", &version.to_string())]))
                .unwrap();
        }
    };
    write_all(&sim);
    for round in 0..6 {
        let open = sim.open_shards("T").unwrap();
        if round % 2 == 0 {
            sim.split_shard(&open[0]).unwrap();
        } else {
            sim.rotate_shard(&open[open.len() - 1]).unwrap();
        }
        write_all(&sim);
    }
    let shards: HashMap<String, Shard> = sim
        .shards(&arn(&sim))
        .unwrap()
        .into_iter()
        .map(|s| (s.shard_id.clone(), s))
        .collect();
    let is_ancestor = |anc: &str, of: &str| {
        let mut cur = Some(of.to_string());
        while let Some(id) = cur {
            if id == anc {
                return true;
            }
            cur = shards[&id].parent_shard_id.clone();
        }
        false
    };
    let mut per_key: HashMap<String, Vec<String>> = HashMap::new();
    for l in sim.write_log_routed("T") {
        let AttrValue::S(k) = &l.record.keys["pk"] else {
            panic!("key")
        };
        per_key.entry(k.clone()).or_default().push(l.shard_id);
    }
    let mut used = BTreeSet::new();
    for (k, route) in &per_key {
        assert_eq!(route.len(), 7);
        for pair in route.windows(2) {
            assert!(is_ancestor(&pair[0], &pair[1]), "{k}: {route:?}");
        }
        let last = route.last().unwrap();
        assert_eq!(
            sim.shard_for_key("T", &key(k)).unwrap().as_deref(),
            Some(last.as_str())
        );
        used.extend(route.iter().cloned());
    }
    // Both halves of every split got some keys.
    assert!(used.len() > 8, "{used:?}");
}

#[tokio::test(start_paused = true)]
async fn listing_pages_cover_every_shard_exactly_once() {
    let sim = sim_with(SimConfig {
        stale_parent_describe_calls: 0,
        ..SimConfig::with_seed(3)
    });
    sim.put("T", key("a")).unwrap();
    sim.add_empty_closed_shards("T", 3000).unwrap();
    let truth = sim.shards(&arn(&sim)).unwrap();
    let open = sim.open_shards("T").unwrap();
    assert_eq!(truth.len(), 3001 + open.len() - 1);
    for limit in [None, Some(7), Some(100)] {
        let pages = list_all(&sim, &arn(&sim), limit).await;
        let max = limit.unwrap_or(100) as usize;
        assert!(pages.iter().all(|p| p.len() <= max && !p.is_empty()));
        let listed: Vec<Shard> = pages.into_iter().flatten().collect();
        assert_eq!(listed.len(), truth.len(), "each shard exactly once");
        let mut sorted = listed.clone();
        sorted.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        let mut expected = truth.clone();
        expected.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        assert_eq!(sorted, expected);
        // Not in creation order.
        assert_ne!(listed, truth);
    }
    // A chain/fan: one root, every other shard's parent is listed, and
    // only the open shards have no children.
    let ids: BTreeSet<&str> = truth.iter().map(|s| s.shard_id.as_str()).collect();
    let roots = truth.iter().filter(|s| s.parent_shard_id.is_none()).count();
    assert_eq!(roots, 1);
    assert!(truth
        .iter()
        .filter_map(|s| s.parent_shard_id.as_deref())
        .all(|p| ids.contains(p)));
    let parents: BTreeSet<&str> = truth
        .iter()
        .filter_map(|s| s.parent_shard_id.as_deref())
        .collect();
    for s in &truth {
        assert_eq!(s.is_closed(), parents.contains(s.shard_id.as_str()));
        assert_eq!(!s.is_closed(), open.contains(&s.shard_id));
    }
    // The one record is in the root, which reads to its end.
    let root = truth.iter().find(|s| s.parent_shard_id.is_none()).unwrap();
    let (records, ended) = read(
        &sim,
        &arn(&sim),
        &root.shard_id,
        IteratorPosition::TrimHorizon,
    )
    .await;
    assert_eq!((records.len(), ended), (1, true));
    let c = sim.calls();
    assert_eq!(c.describe_stream, c.describe_stream_full_pages);
    let n = truth.len() as u64;
    assert_eq!(
        c.describe_stream_full_pages,
        2 * n.div_ceil(100) + n.div_ceil(7)
    );
}

#[tokio::test(start_paused = true)]
async fn child_filter_returns_only_that_shards_children() {
    let sim = sim_with(SimConfig {
        stale_parent_describe_calls: 0,
        ..SimConfig::default()
    });
    let root = sim.open_shards("T").unwrap().remove(0);
    let (a, b) = sim.split_shard(&root).unwrap();
    let a2 = sim.rotate_shard(&a).unwrap();
    let arn = arn(&sim);
    let ids = |v: Vec<Shard>| -> BTreeSet<String> { v.into_iter().map(|s| s.shard_id).collect() };
    assert_eq!(
        ids(children(&sim, &arn, &root).await),
        BTreeSet::from([a.clone(), b.clone()])
    );
    assert_eq!(
        ids(children(&sim, &arn, &a).await),
        BTreeSet::from([a2.clone()])
    );
    assert!(children(&sim, &arn, &b).await.is_empty());
    let err = sim
        .describe_stream(&DescribeStreamRequest {
            stream_arn: arn.clone(),
            children_of: Some("shardId-nope".into()),
            ..Default::default()
        })
        .await;
    assert!(matches!(err, Err(StreamError::NotFound(_))));
    let c = sim.calls();
    assert_eq!(
        (c.describe_stream_children, c.describe_stream_full_pages),
        (4, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_closed_parent_briefly_shows_open_while_its_children_are_listed() {
    let (sim, arn, parent) = sim_and_shard_with(SimConfig {
        stale_parent_describe_calls: 2,
        ..SimConfig::default()
    });
    let child = sim.rotate_shard(&parent).unwrap();
    for call in 1..=3 {
        let listed = list_all(&sim, &arn, None).await.concat();
        let p = listed.iter().find(|s| s.shard_id == parent).unwrap();
        let c = listed.iter().find(|s| s.shard_id == child).unwrap();
        assert_eq!(c.parent_shard_id.as_deref(), Some(parent.as_str()));
        assert_eq!(p.is_closed(), call == 3, "call {call}");
    }
    // The shard is really closed all along: reading it ends.
    let (_, ended) = read(&sim, &arn, &parent, IteratorPosition::TrimHorizon).await;
    assert!(ended);
}

#[tokio::test(start_paused = true)]
async fn iterators_expire_fifteen_minutes_after_issue() {
    let (sim, arn, shard) = sim_and_shard();
    let it = iterator(&sim, &arn, &shard, &IteratorPosition::TrimHorizon)
        .await
        .unwrap();
    advance(Duration::from_secs(15 * 60 - 1)).await;
    let page = sim.get_records(&it, None).await.unwrap();
    let next = page.next_iterator.unwrap();
    advance(Duration::from_secs(1)).await;
    assert_fails!(sim.get_records(&it, None).await, ExpiredIterator);
    // The next iterator was issued by the later call, so it still works.
    sim.get_records(&next, None).await.unwrap();
    advance(Duration::from_secs(15 * 60)).await;
    assert_fails!(sim.get_records(&next, None).await, ExpiredIterator);
}

#[tokio::test(start_paused = true)]
async fn records_older_than_retention_are_trimmed() {
    let (sim, arn, shard) = sim_and_shard();
    let r1 = sim.put("T", key("a")).unwrap().unwrap();
    advance(23 * HOUR).await;
    let r2 = sim.put("T", key("b")).unwrap().unwrap();
    let start = sim.shards(&arn).unwrap()[0]
        .starting_sequence_number
        .clone()
        .unwrap();
    advance(HOUR - Duration::from_secs(60)).await;
    let early = iterator(&sim, &arn, &shard, &IteratorPosition::TrimHorizon)
        .await
        .unwrap();
    assert!(!sim.is_trimmed("T", &r1.sequence_number));
    advance(Duration::from_secs(61)).await;
    assert!(sim.is_trimmed("T", &r1.sequence_number));
    assert!(!sim.is_trimmed("T", &r2.sequence_number));

    // An iterator whose position has since been trimmed.
    assert_fails!(sim.get_records(&early, None).await, Trimmed);
    // AT a trimmed record, or AFTER anything older than the newest
    // trimmed record, would skip data: Trimmed.
    for pos in [
        IteratorPosition::AtSequence(r1.sequence_number.clone()),
        IteratorPosition::AfterSequence(start.clone()),
        IteratorPosition::AtSequence(start),
    ] {
        assert!(
            matches!(
                iterator(&sim, &arn, &shard, &pos).await,
                Err(StreamError::Trimmed(_))
            ),
            "{pos:?}"
        );
    }
    // AFTER the newest trimmed record loses nothing.
    let (after, _) = read(
        &sim,
        &arn,
        &shard,
        IteratorPosition::AfterSequence(r1.sequence_number.clone()),
    )
    .await;
    assert_eq!(after, vec![r2.clone()]);
    let (horizon, _) = read(&sim, &arn, &shard, IteratorPosition::TrimHorizon).await;
    assert_eq!(horizon, vec![r2]);
}

#[tokio::test(start_paused = true)]
async fn closed_shards_disappear_after_retention_leaving_orphaned_children() {
    let (sim, arn, parent) = sim_and_shard_with(SimConfig {
        stale_parent_describe_calls: 0,
        ..SimConfig::default()
    });
    sim.put("T", key("a")).unwrap();
    let child = sim.rotate_shard(&parent).unwrap();
    advance(24 * HOUR - Duration::from_secs(1)).await;
    assert_eq!(list_all(&sim, &arn, None).await.concat().len(), 2);
    advance(Duration::from_secs(1)).await;
    let listed = list_all(&sim, &arn, None).await.concat();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].shard_id, child);
    assert_eq!(listed[0].parent_shard_id.as_deref(), Some(parent.as_str()));
    assert_fails!(
        iterator(&sim, &arn, &parent, &IteratorPosition::TrimHorizon).await,
        NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn get_records_pages_by_count_and_size_and_ends_closed_shards() {
    let (sim, arn, shard) = sim_and_shard();
    for i in 0..1500 {
        sim.put("T", key(&format!("k{i}"))).unwrap();
    }
    let it = iterator(&sim, &arn, &shard, &IteratorPosition::TrimHorizon)
        .await
        .unwrap();
    let p1 = sim.get_records(&it, None).await.unwrap();
    assert_eq!(p1.records.len(), 1000);
    let p2 = sim
        .get_records(p1.next_iterator.as_ref().unwrap(), Some(10))
        .await
        .unwrap();
    assert_eq!(p2.records.len(), 10);
    assert_fails!(
        sim.get_records(p2.next_iterator.as_ref().unwrap(), Some(1001))
            .await,
        Other
    );

    // ~400 KB items: a MODIFY record carries two images, ~800 KB, so a
    // 1 MB page holds one.
    let big = |v: &str| item(&[("pk", "big"), ("blob", &v.repeat(400_000))]);
    sim.put("T", big("a")).unwrap();
    sim.put("T", big("b")).unwrap();
    sim.put("T", big("c")).unwrap();
    let pos = IteratorPosition::AfterSequence(sim.write_log("T")[1499].sequence_number.clone());
    let it = iterator(&sim, &arn, &shard, &pos).await.unwrap();
    let mut it = Some(it);
    let mut sizes = Vec::new();
    while let Some(i) = it {
        let page = sim.get_records(&i, None).await.unwrap();
        if page.records.is_empty() {
            break;
        }
        sizes.push(
            page.records
                .iter()
                .map(|r| r.size_bytes.unwrap())
                .collect::<Vec<_>>(),
        );
        it = page.next_iterator;
    }
    // INSERT (~400 KB) + MODIFY (~800 KB) exceed 1 MB: one record a page.
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|p| p.len() == 1));
    assert!(sizes[1][0] > 800_000);

    // An open shard at its end: empty page, still a next iterator.
    let latest = iterator(&sim, &arn, &shard, &IteratorPosition::Latest)
        .await
        .unwrap();
    let empty = sim.get_records(&latest, None).await.unwrap();
    assert!(empty.records.is_empty());
    let next = empty.next_iterator.unwrap();
    // Closing it: the page that reaches the end carries no next iterator.
    sim.put("T", key("last")).unwrap();
    sim.rotate_shard(&shard).unwrap();
    let last = sim.get_records(&next, None).await.unwrap();
    assert_eq!(last.records.len(), 1);
    assert_eq!(last.next_iterator, None);
    let c = sim.calls();
    assert_eq!(
        c.get_records_empty, 2,
        "the loop's last read and the LATEST read"
    );
    assert_eq!(c.get_records_per_shard[&shard], c.get_records);
}

#[tokio::test(start_paused = true)]
async fn sequence_numbers_are_validated_against_the_shard() {
    let (sim, arn, first) = sim_and_shard();
    let r1 = sim.put("T", key("a")).unwrap().unwrap();
    let second = sim.rotate_shard(&first).unwrap();
    let r2 = sim.put("T", key("b")).unwrap().unwrap();
    let at = |s: &StreamRecord| IteratorPosition::AtSequence(s.sequence_number.clone());
    for (shard, pos) in [(&second, at(&r1)), (&first, at(&r2))] {
        assert_fails!(iterator(&sim, &arn, shard, &pos).await, Other);
    }
    for bad in ["x", "99999999999999999999999999"] {
        let pos = IteratorPosition::AfterSequence(bad.into());
        assert!(iterator(&sim, &arn, &second, &pos).await.is_err());
    }
    let (got, ended) = read(&sim, &arn, &first, at(&r1)).await;
    assert_eq!((got, ended), (vec![r1.clone()], true));
    let after = IteratorPosition::AfterSequence(r1.sequence_number.clone());
    let (got, ended) = read(&sim, &arn, &first, after).await;
    assert_eq!((got.len(), ended), (0, true));
    assert_fails!(
        iterator(&sim, &arn, "shardId-none", &IteratorPosition::Latest).await,
        NotFound
    );
    assert_fails!(sim.get_records("garbage", None).await, Other);
}

#[tokio::test(start_paused = true)]
async fn throttling_limits_get_records_per_shard_and_describe_stream_per_stream() {
    let sim = sim_with(SimConfig {
        throttling: true,
        initial_shards: 2,
        ..SimConfig::default()
    });
    sim.set_throttling(true);
    let arn = arn(&sim);
    let shards = sim.open_shards("T").unwrap();
    let mut its = Vec::new();
    for s in &shards {
        its.push(
            iterator(&sim, &arn, s, &IteratorPosition::Latest)
                .await
                .unwrap(),
        );
    }
    for _ in 0..5 {
        sim.get_records(&its[0], None).await.unwrap();
    }
    assert_fails!(sim.get_records(&its[0], None).await, Throttled);
    // Another shard has its own budget.
    sim.get_records(&its[1], None).await.unwrap();
    advance(Duration::from_millis(999)).await;
    assert!(sim.get_records(&its[0], None).await.is_err());
    advance(Duration::from_millis(1)).await;
    sim.get_records(&its[0], None).await.unwrap();

    let req = DescribeStreamRequest {
        stream_arn: arn.clone(),
        ..Default::default()
    };
    for _ in 0..10 {
        sim.describe_stream(&req).await.unwrap();
    }
    assert_fails!(sim.describe_stream(&req).await, Throttled);
    let c = sim.calls();
    assert_eq!(
        (
            c.throttled,
            c.throttled_get_records,
            c.throttled_describe_stream
        ),
        (3, 2, 1)
    );
    assert_eq!((c.get_records, c.describe_stream), (9, 11));
    assert_eq!(c.get_records_per_shard[&shards[0]], 8);
    sim.reset_calls();
    assert_eq!(sim.calls(), CallCounts::default());
    // Throttling off: no limit.
    sim.set_throttling(false);
    for _ in 0..50 {
        sim.describe_stream(&req).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn re_enabled_stream_has_a_new_arn_and_the_old_one_stays_readable() {
    let (sim, old_arn, old_shard) = sim_and_shard();
    let r1 = sim.put("T", key("a")).unwrap().unwrap();
    sim.disable_stream("T").unwrap();
    let t = sim.describe_table("T").await.unwrap();
    assert_eq!(
        (
            t.latest_stream_arn.as_deref(),
            t.stream_enabled,
            t.view_type
        ),
        (Some(old_arn.as_str()), false, None)
    );
    // Written while disabled: no record anywhere.
    assert_eq!(sim.put("T", key("b")).unwrap(), None);
    assert!(sim.open_shards("T").unwrap().is_empty());
    assert!(sim.enable_stream("T", ViewType::NewImage).is_ok());
    // Enabled in the same millisecond: still a distinct, later label.
    let new_arn = arn(&sim);
    assert_ne!(new_arn, old_arn);
    assert!(crate::stream::stream_label(&new_arn) > crate::stream::stream_label(&old_arn));
    assert!(sim.enable_stream("T", ViewType::NewImage).is_err());
    let r3 = sim.put("T", key("c")).unwrap().unwrap();
    assert_eq!(sim.write_log_routed("T")[1].stream_arn, new_arn);

    let streams = sim.list_streams("T").await.unwrap();
    assert_eq!(
        streams
            .iter()
            .map(|s| s.stream_arn.clone())
            .collect::<Vec<_>>(),
        vec![old_arn.clone(), new_arn.clone()]
    );
    let desc = sim
        .describe_stream(&DescribeStreamRequest {
            stream_arn: old_arn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(desc.status, StreamStatus::Disabled);
    let (got, ended) = read(&sim, &old_arn, &old_shard, IteratorPosition::TrimHorizon).await;
    assert_eq!((got, ended), (vec![r1], true));
    assert_eq!(sim.write_log("T").last(), Some(&r3));

    advance(24 * HOUR).await;
    let streams = sim.list_streams("T").await.unwrap();
    assert_eq!(streams.len(), 1);
    assert_eq!(streams[0].stream_arn, new_arn);
    assert_fails!(
        sim.describe_stream(&DescribeStreamRequest {
            stream_arn: old_arn,
            ..Default::default()
        })
        .await,
        NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn a_deleted_table_is_gone_but_its_stream_is_readable_until_trimmed() {
    let (sim, arn, shard) = sim_and_shard();
    let r = sim.put("T", key("a")).unwrap().unwrap();
    sim.delete_table("T").unwrap();
    assert_fails!(sim.describe_table("T").await, NotFound);
    assert!(sim.put("T", key("a")).is_err());
    assert_eq!(sim.list_streams("T").await.unwrap().len(), 1);
    let (got, ended) = read(&sim, &arn, &shard, IteratorPosition::TrimHorizon).await;
    assert_eq!((got, ended), (vec![r.clone()], true));
    assert_eq!(sim.write_log_for("T", &key("a")).unwrap(), vec![r]);
    advance(24 * HOUR).await;
    assert_fails!(sim.list_streams("T").await, NotFound);
}

#[tokio::test(start_paused = true)]
async fn shards_rotate_automatically_on_a_timer() {
    let sim = sim_with(SimConfig {
        auto_rotate: Some(4 * HOUR),
        ..SimConfig::default()
    });
    let arn = arn(&sim);
    sim.put("T", key("a")).unwrap();
    advance(9 * HOUR).await;
    sim.put("T", key("b")).unwrap();
    let shards = sim.shards(&arn).unwrap();
    assert_eq!(shards.len(), 3);
    assert_eq!(shards.iter().filter(|s| !s.is_closed()).count(), 1);
    let routed = sim.write_log_routed("T");
    assert_eq!(routed[0].shard_id, shards[0].shard_id);
    assert_eq!(routed[1].shard_id, shards[2].shard_id);
    assert_eq!(
        shards[2].parent_shard_id.as_ref(),
        Some(&shards[1].shard_id)
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let sim = sim_with(SimConfig::with_seed(seed));
        sim.put("T", key("a")).unwrap();
        sim.add_empty_closed_shards("T", 50).unwrap();
        sim.put("T", key("b")).unwrap();
        (sim.shards(&arn(&sim)).unwrap(), sim.write_log("T"))
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1).0, run(2).0);
}

#[tokio::test(start_paused = true)]
async fn arns_and_shard_ids_look_like_the_service() {
    let sim = sim();
    assert_eq!(
        arn(&sim),
        "arn:aws:dynamodb:us-east-1:000000000000:table/T/stream/2026-11-23T00:00:00.000"
    );
    let id = sim.open_shards("T").unwrap().remove(0);
    let (prefix, rest) = id.split_at("shardId-".len());
    assert_eq!(prefix, "shardId-");
    let (ts, suffix) = rest.split_once('-').unwrap();
    assert_eq!(ts, "00000001795392000000");
    assert_eq!(suffix.len(), 8);
}
