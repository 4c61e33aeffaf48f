//! One conformance suite for the stores, in the style of mountpoint-s3's
//! mock-versus-real tests: the same test bodies run against `MemoryStore` and
//! against `DynamoStore` on the emulator, so the memory store the simulator
//! tests rely on cannot drift from the real one.

mod common;

use std::collections::BTreeMap;

use chrono::Utc;
use ddb_audit::entry::{AuditEntry, Change, Gap};
use ddb_audit::proof::digest::SignedDigest;
use ddb_audit::proof::verify::{verify_stream, Severity, StreamEvidence, VerifyOptions};
use ddb_audit::proof::ChainState;
use ddb_audit::read::verify::EvidenceStore;
use ddb_audit::store::dynamo::DynamoStore;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{
    snapshot_stream_arn, AuditStore, CheckpointStore, HistoryRequest, Index, IndexRequest,
    Position, ProofStore, PutOutcome, ReadStore, ScanRequest, SegmentProgress, ShardCheckpoint,
    ShardStatus, SnapshotRun, SnapshotStore, StreamRow, TableHealthRow, TableNames, TsRange,
};
use ddb_audit::value::{AttrValue, Item};

const ARN1: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-01T00:00:00.000";
const ARN2: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-02T00:00:00.000";

fn key(pk: AttrValue) -> Item {
    BTreeMap::from([("pk".to_string(), pk)])
}

fn entry(key: Item, stream_arn: &str, seq: &str, value: &str) -> AuditEntry {
    AuditEntry {
        shard_id: "shardId-00000001".into(),
        changes: vec![Change {
            path: "v".into(),
            old: None,
            new: Some(AttrValue::S(value.into())),
            added: None,
            removed: None,
        }],
        stream_arn: stream_arn.into(),
        ..AuditEntry::fixture("orders", key, seq)
    }
}

fn checkpoint(shard: &str, seq: Option<&str>, status: ShardStatus) -> ShardCheckpoint {
    ShardCheckpoint {
        sequence_no: seq.map(str::to_string),
        status,
        ..ShardCheckpoint::fresh("orders", ARN2, shard, None)
    }
}

async fn entries_are_write_once_and_in_stream_order<T: AuditStore>(store: &T) {
    let k = key(AttrValue::S("u1".into()));
    let old = entry(k.clone(), ARN1, "990", "a");
    let e99 = entry(k.clone(), ARN2, "99", "b");
    let e100 = entry(k.clone(), ARN2, "100", "c");
    for e in [&e100, &old, &e99] {
        assert_eq!(store.put_entry(e).await.unwrap(), PutOutcome::Written);
    }
    assert_eq!(
        store.put_entry(&e99).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    let seqs: Vec<String> = store
        .history("orders", &k)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.sequence_number)
        .collect();
    // The older stream first, then numbers compared as numbers.
    assert_eq!(seqs, ["990", "99", "100"]);
}

async fn a_key_names_one_item_whatever_its_number_spelling<T: AuditStore>(store: &T) {
    let written = entry(key(AttrValue::N("1.50".into())), ARN2, "5", "x");
    store.put_entry(&written).await.unwrap();
    let history = store
        .history("orders", &key(AttrValue::N("1.5".into())))
        .await
        .unwrap();
    assert_eq!(history.len(), 1, "N:1.5 and N:1.50 are one key");
    let again = entry(key(AttrValue::N("001.5".into())), ARN2, "5", "x");
    assert_eq!(
        store.put_entry(&again).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
}

async fn an_oversize_entry_round_trips_whole<T: AuditStore>(store: &T) {
    let k = key(AttrValue::S("big".into()));
    let big = entry(k.clone(), ARN2, "7", &"é".repeat(350_000)); // ~700 KB
    assert_eq!(store.put_entry(&big).await.unwrap(), PutOutcome::Written);
    assert_eq!(
        store.put_entry(&big).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    let history = store.history("orders", &k).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].changes, big.changes);
}

async fn checkpoints_move_forward_only_and_drained_is_final<T: CheckpointStore>(store: &T) {
    let load = || async {
        store
            .load_shards(ARN2)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.shard_id == "s1")
            .unwrap()
    };
    store
        .save_shard(&checkpoint("s1", None, ShardStatus::Open))
        .await
        .unwrap();
    store
        .save_shard(&checkpoint("s1", Some("100"), ShardStatus::Open))
        .await
        .unwrap();
    store
        .save_shard(&checkpoint("s1", Some("99"), ShardStatus::Open))
        .await
        .unwrap();
    store
        .save_shard(&checkpoint("s1", None, ShardStatus::Open))
        .await
        .unwrap();
    assert_eq!(load().await.sequence_no.as_deref(), Some("100"));
    store
        .save_shard(&checkpoint("s1", Some("1000"), ShardStatus::Drained))
        .await
        .unwrap();
    store
        .save_shard(&checkpoint("s1", Some("1000"), ShardStatus::Open))
        .await
        .unwrap();
    assert_eq!(load().await.status, ShardStatus::Drained);
    // A position that is not a sequence number is refused, never stored.
    let refused = store
        .save_shard(&checkpoint("s2", Some("not-a-number"), ShardStatus::Open))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(store
        .load_shards(ARN2)
        .await
        .unwrap()
        .iter()
        .all(|c| c.shard_id != "s2"));
    let mut caught_up = checkpoint("s3", Some("5"), ShardStatus::Open);
    caught_up.caught_up = true;
    store.save_shard(&caught_up).await.unwrap();
    // "Open, nothing read yet, read from its first record": a restart must
    // start there again, so the flag must survive the store.
    let mut fresh = checkpoint("s4", None, ShardStatus::Open);
    fresh.from_start = true;
    store.save_shard(&fresh).await.unwrap();
    let rows = store.load_shards(ARN2).await.unwrap();
    assert!(rows
        .iter()
        .any(|c| c.shard_id == "s3" && c.caught_up && !c.from_start));
    assert!(rows
        .iter()
        .any(|c| c.shard_id == "s4" && c.from_start && c.sequence_no.is_none()));
}

/// One row by its id (what a child reads of its parent) is exactly the row
/// the stream's listing of rows holds.
async fn one_shard_row_reads_as_in_the_listing<T: CheckpointStore>(store: &T) {
    assert_eq!(store.load_shard(ARN2, "p").await.unwrap(), None);
    let mut parent = checkpoint("p", Some("700"), ShardStatus::Drained);
    parent.chain = Some(ddb_audit::proof::ChainState::continuing(None));
    store.save_shard(&parent).await.unwrap();
    // A child that has read nothing keeps its lineage's tail on its row.
    let mut child = checkpoint("c", None, ShardStatus::Open);
    child.lineage_tail = Some(ddb_audit::store::LineageTail {
        shard_id: "p".into(),
        sequence_no: "700".into(),
        record_time: Some("2026-11-23T10:00:00.250Z".parse().unwrap()),
    });
    store.save_shard(&child).await.unwrap();
    assert_eq!(
        store
            .load_shard(ARN2, "c")
            .await
            .unwrap()
            .unwrap()
            .lineage_tail,
        child.lineage_tail
    );
    // Gaps its lineage left open ride on its row until a checkpoint clears
    // them (the right bracket then written).
    let open = Gap {
        resumed_at_sequence_number: None,
        after_sequence_number: Some("700".into()),
        after_time: Some("2026-11-23T10:00:00Z".into()),
        ..Gap::detected("orders", ARN2, "p")
    };
    child.open_gaps = vec![open.clone()];
    store.save_shard(&child).await.unwrap();
    let held = store
        .load_shard(ARN2, "c")
        .await
        .unwrap()
        .unwrap()
        .open_gaps;
    assert_eq!(held, vec![open]);
    child.open_gaps.clear();
    store.save_shard(&child).await.unwrap();
    let held = store
        .load_shard(ARN2, "c")
        .await
        .unwrap()
        .unwrap()
        .open_gaps;
    assert_eq!(held, vec![]);
    let listed = store.load_shards(ARN2).await.unwrap();
    for id in ["p", "c"] {
        let one = store.load_shard(ARN2, id).await.unwrap();
        assert!(one.is_some(), "{id} not found by id");
        assert_eq!(one.as_ref(), listed.iter().find(|r| r.shard_id == id));
    }
    assert_eq!(store.load_shard(ARN1, "p").await.unwrap(), None);
}

/// A released drained row expires (here at once); a row not drained is
/// never released, whatever the daemon asks.
async fn a_released_drained_row_is_gone_and_an_open_one_stays<T: CheckpointStore>(store: &T) {
    store
        .save_shard(&checkpoint("d", Some("5"), ShardStatus::Drained))
        .await
        .unwrap();
    store
        .save_shard(&checkpoint("o", Some("5"), ShardStatus::Open))
        .await
        .unwrap();
    for id in ["d", "o", "never-saved"] {
        store
            .release_shard(ARN2, id, std::time::Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(store.load_shard(ARN2, "d").await.unwrap(), None);
    assert!(store.load_shard(ARN2, "o").await.unwrap().is_some());
    let ids: Vec<String> = store
        .load_shards(ARN2)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.shard_id)
        .collect();
    assert_eq!(ids, ["o"]);
}

async fn a_drained_stream_stays_drained<T: CheckpointStore>(store: &T) {
    let row = |drained: bool| StreamRow {
        table_name: "orders".into(),
        stream_arn: ARN1.into(),
        is_enabled: false,
        drained,
        updated_at: Utc::now(),
    };
    store.save_stream(&row(true)).await.unwrap();
    store.save_stream(&row(false)).await.unwrap();
    let rows = store.load_streams(Some("orders")).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].drained);
}

/// Set once on a recorded stream, cleared for good; unknown is false.
async fn a_fresh_trail_is_set_once_and_cleared_for_good<T: CheckpointStore>(store: &T) {
    assert!(!store.fresh_items("orders", ARN1).await.unwrap());
    // No stray row for a stream never recorded.
    store.set_fresh_items("orders", ARN1, true).await.unwrap();
    assert!(!store.fresh_items("orders", ARN1).await.unwrap());
    assert!(store.load_streams(Some("orders")).await.unwrap().is_empty());
    let row = StreamRow {
        table_name: "orders".into(),
        stream_arn: ARN1.into(),
        is_enabled: true,
        drained: false,
        updated_at: Utc::now(),
    };
    store.save_stream(&row).await.unwrap();
    store.set_fresh_items("orders", ARN1, true).await.unwrap();
    assert!(store.fresh_items("orders", ARN1).await.unwrap());
    // The row's other writes leave it alone.
    store.save_stream(&row).await.unwrap();
    assert!(store.fresh_items("orders", ARN1).await.unwrap());
    assert!(!store.fresh_items("orders", ARN2).await.unwrap());
    store.set_fresh_items("orders", ARN1, false).await.unwrap();
    store.set_fresh_items("orders", ARN1, true).await.unwrap();
    assert!(!store.fresh_items("orders", ARN1).await.unwrap());
    assert_eq!(store.load_streams(Some("orders")).await.unwrap().len(), 1);
}

async fn table_health_is_kept_apart_from_the_streams<T: CheckpointStore>(store: &T) {
    let row = TableHealthRow {
        table_name: "orders".into(),
        state: "failing".into(),
        reason: Some("no stream".into()),
        updated_at: Utc::now(),
    };
    store.save_table_health(&row).await.unwrap();
    let got = store.load_table_health("orders").await.unwrap().unwrap();
    assert_eq!(
        (got.state.as_str(), got.reason.as_deref()),
        ("failing", Some("no stream"))
    );
    assert!(store.load_table_health("other").await.unwrap().is_none());
    // Every table's row at once (what `status` lists tables a pattern found
    // by), and no stream row among them.
    let all = store.load_all_table_health().await.unwrap();
    assert!(
        all.iter()
            .any(|h| h.table_name == "orders" && h.state == "failing"),
        "{all:?}"
    );
    assert!(all.iter().all(|h| !h.state.is_empty()));
    assert!(store
        .load_streams(Some("orders"))
        .await
        .unwrap()
        .iter()
        .all(|r| r.stream_arn.starts_with("arn:")));
}

async fn gaps_are_write_once_by_position<T: AuditStore>(store: &T) {
    let gap = Gap {
        table: "orders".into(),
        stream_arn: ARN1.into(),
        shard_id: "s1".into(),
        after_sequence_number: Some("990".into()),
        after_shard_id: None,
        unseen_shard_id: None,
        after_time: None,
        resumed_at_sequence_number: Some("5000".into()),
        resumed_at_time: None,
        closes: Vec::new(),
        closed_by: None,
        detected_at: "2026-11-23T20:00:00Z".into(),
    };
    assert_eq!(store.put_gap(&gap).await.unwrap(), PutOutcome::Written);
    let seen_again = Gap {
        detected_at: "2026-11-23T21:00:00Z".into(),
        ..gap.clone()
    };
    assert_eq!(
        store.put_gap(&seen_again).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(store.gaps().await.unwrap(), vec![gap.clone()]);
    // Open, then closed by a gap of the same shard beginning at the same
    // record: two items, each write-once.
    let open = Gap {
        after_sequence_number: Some("6000".into()),
        resumed_at_sequence_number: None,
        ..gap.clone()
    };
    let closing = Gap {
        resumed_at_sequence_number: Some("7000".into()),
        closes: vec![open.reference()],
        ..open.clone()
    };
    assert_eq!(store.put_gap(&open).await.unwrap(), PutOutcome::Written);
    assert_eq!(store.put_gap(&closing).await.unwrap(), PutOutcome::Written);
    assert_eq!(
        store.put_gap(&closing).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    let stored = store.gaps().await.unwrap();
    assert_eq!(stored.len(), 3, "{stored:?}");
    assert!(stored.contains(&open) && stored.contains(&closing));
}

/// An entry of item `pk` at `second` past 19:05 on one stream (`ARN2`).
fn timed(pk: &str, seq: &str, second: u32, actor: &str) -> AuditEntry {
    let mut e = entry(key(AttrValue::S(pk.into())), ARN2, seq, seq);
    e.event_time = Some(format!("2026-11-23T19:05:{second:02}Z"));
    e.actor = Some(actor.into());
    e
}

/// Every hit of `index` for `value` within `range`, reading each partition
/// one row a page.
async fn index_hits<T: ReadStore>(
    store: &T,
    index: Index,
    value: &str,
    range: &TsRange,
    descending: bool,
) -> Vec<ddb_audit::store::IndexHit> {
    let mut all = Vec::new();
    for partition in index.partitions(value) {
        let mut after: Option<Position> = None;
        let mut hits = Vec::new();
        loop {
            let request = IndexRequest {
                index,
                partition: &partition,
                range,
                descending,
                after: after.as_ref(),
                limit: 1,
            };
            let page = store.index_page(&request).await.unwrap();
            assert!(page.hits.len() <= 1, "{page:?}");
            hits.extend(page.hits);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let times: Vec<&str> = hits.iter().map(|h| h.ts.as_str()).collect();
        let mut sorted = times.clone();
        sorted.sort();
        if descending {
            sorted.reverse();
        }
        assert_eq!(times, sorted, "{partition}: hits out of time order");
        all.extend(hits);
    }
    all
}

/// The read side's paged reads: an item's history page by page in both
/// orders, index partitions by time within a range, and the entries of
/// index hits fetched back, in the order asked, with their read cost.
async fn history_and_index_pages_read_every_entry_once<T: ReadStore>(store: &T) {
    let written = [
        timed("u1", "100", 1, "alice"),
        timed("u1", "101", 2, "bob"),
        timed("u1", "102", 3, "alice"),
        timed("u1", "103", 4, "alice"),
        timed("u2", "104", 5, "bob"),
    ];
    let mut correlated = timed("u2", "105", 6, "carol");
    correlated.correlation = Some("req-7".into());
    for e in written.iter().chain([&correlated]) {
        assert_eq!(store.put_entry(e).await.unwrap(), PutOutcome::Written);
    }
    let cost_before = store.read_cost();

    let u1 = key(AttrValue::S("u1".into()));
    for descending in [false, true] {
        let (mut after, mut seqs, mut pages) = (None::<Position>, Vec::new(), 0);
        loop {
            let page = store
                .history_page(&HistoryRequest {
                    table: "orders",
                    key: &u1,
                    descending,
                    after: after.as_ref(),
                    limit: 1,
                })
                .await
                .unwrap();
            pages += 1;
            seqs.extend(page.entries.iter().map(|(e, _)| e.sequence_number.clone()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        let mut expected = vec!["100", "101", "102", "103"];
        if descending {
            expected.reverse();
        }
        assert_eq!(seqs, expected, "descending: {descending}");
        assert!(
            pages > 1,
            "four entries, one a page, came in {pages} page(s)"
        );
    }

    let everything = TsRange::default();
    let by_table = index_hits(store, Index::Table, "orders", &everything, false).await;
    let mut seqs: Vec<String> = by_table
        .iter()
        .map(|h| {
            h.sk.rsplit('#')
                .next()
                .unwrap()
                .trim_start_matches('0')
                .to_string()
        })
        .collect();
    seqs.sort();
    assert_eq!(seqs, ["100", "101", "102", "103", "104", "105"]);
    assert!(by_table.iter().all(|h| h.table() == "orders"));
    let newest_first = index_hits(store, Index::Table, "orders", &everything, true).await;
    assert_eq!(newest_first.len(), 6);

    let window = TsRange {
        since: Some("2026-11-23T19:05:02.000Z".into()),
        until: Some("2026-11-23T19:05:04.000Z".into()),
    };
    let alice = index_hits(store, Index::Actor, "alice", &window, false).await;
    let times: Vec<&str> = alice.iter().map(|h| h.ts.as_str()).collect();
    assert_eq!(
        times,
        ["2026-11-23T19:05:03.000Z", "2026-11-23T19:05:04.000Z"],
        "alice's entries within the window"
    );
    let req = index_hits(store, Index::Correlation, "req-7", &everything, false).await;
    assert_eq!(req.len(), 1);
    assert_eq!(req[0].event.as_deref(), Some("MODIFY"));

    let mut refs: Vec<(String, String)> = alice
        .iter()
        .chain(&req)
        .map(|h| (h.pk.clone(), h.sk.clone()))
        .collect();
    refs.insert(1, (alice[0].pk.clone(), "no-such-entry".into()));
    let fetched = store.fetch_entries(&refs).await.unwrap();
    let got: Vec<Option<String>> = fetched
        .iter()
        .map(|e| e.as_ref().map(|e| e.sequence_number.clone()))
        .collect();
    assert_eq!(
        got,
        [
            Some("102".to_string()),
            None,
            Some("103".to_string()),
            Some("105".to_string())
        ]
    );
    assert_eq!(fetched[3].as_ref(), Some(&correlated));

    let cost = store.read_cost();
    assert!(cost.query_calls > cost_before.query_calls, "{cost:?}");
    assert!(
        cost.batch_get_calls > cost_before.batch_get_calls,
        "{cost:?}"
    );
    assert!(cost.items_read > cost_before.items_read, "{cost:?}");
}

fn signed(n: u64) -> SignedDigest {
    SignedDigest {
        digest: format!("{{\"number\":{n}}}"),
        hash: format!("hash-{n}"),
        signature: None,
    }
}

/// The evidence of `stream_arn`, from the one assembler.
async fn evidence_of<T: EvidenceStore>(store: &T, stream_arn: &str) -> StreamEvidence {
    let mut read = 0;
    let all = store.proof_evidence(None, |n| read = n).await.unwrap();
    assert!(read > 0, "progress was never told");
    all.into_iter()
        .find(|ev| ev.stream_arn == stream_arn)
        .unwrap_or_else(|| panic!("no evidence of {stream_arn}"))
}

/// Digests are write-once; the newest is the highest number; the pointer
/// to the newest written never moves back; a digest written after its
/// pointer is left for the next `verify`.
async fn digests_are_write_once_and_the_pointer_never_moves_back<T>(store: &T)
where
    T: ProofStore + EvidenceStore,
{
    assert_eq!(store.newest_digest(ARN2).await.unwrap(), None);
    for n in [1, 2] {
        assert_eq!(
            store
                .put_digest("orders", ARN2, n, &signed(n))
                .await
                .unwrap(),
            PutOutcome::Written
        );
    }
    let other = SignedDigest {
        hash: "other".into(),
        ..signed(2)
    };
    assert_eq!(
        store.put_digest("orders", ARN2, 2, &other).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(
        store.newest_digest(ARN2).await.unwrap(),
        Some((2, signed(2)))
    );
    assert_eq!(store.newest_digest(ARN1).await.unwrap(), None);

    store
        .record_newest_digest("orders", ARN2, 2, "hash-2")
        .await
        .unwrap();
    store
        .record_newest_digest("orders", ARN2, 1, "hash-1")
        .await
        .unwrap();
    // Written, but not yet recorded on the pointer.
    store
        .put_digest("orders", ARN2, 3, &signed(3))
        .await
        .unwrap();
    let ev = evidence_of(store, ARN2).await;
    assert_eq!(ev.table, "orders");
    assert_eq!(ev.newest_digest, Some((2, "hash-2".to_string())));
    let mut numbers: Vec<u64> = ev.digests.iter().map(|d| d.number).collect();
    numbers.sort();
    assert_eq!(numbers, [1, 2]);
    assert_eq!(
        ev.digests.iter().find(|d| d.number == 2).unwrap().signed,
        signed(2)
    );
}

/// A small chained trail (three entries and a gap on one shard) reads back
/// as leaves whose content hashes to what is stored, with the checkpoint's
/// chain, and verifies without a tamper finding.
async fn a_chained_trail_reads_back_as_intact_evidence<T>(store: &T)
where
    T: AuditStore + CheckpointStore + EvidenceStore,
{
    store
        .save_stream(&StreamRow {
            table_name: "orders".into(),
            stream_arn: ARN2.into(),
            is_enabled: true,
            drained: false,
            updated_at: Utc::now(),
        })
        .await
        .unwrap();
    let mut chain = ChainState::continuing(None);
    for (i, seq) in ["100", "200", "300"].into_iter().enumerate() {
        let e = entry(key(AttrValue::S(format!("u{i}"))), ARN2, seq, seq);
        let link = chain.link_entry(&e).unwrap();
        assert_eq!(
            store.put_linked_entry(&e, &link).await.unwrap(),
            PutOutcome::Written
        );
    }
    let gap = Gap {
        table: "orders".into(),
        stream_arn: ARN2.into(),
        shard_id: "shardId-00000001".into(),
        after_sequence_number: Some("300".into()),
        after_shard_id: None,
        unseen_shard_id: None,
        after_time: None,
        resumed_at_sequence_number: Some("900".into()),
        resumed_at_time: None,
        closes: Vec::new(),
        closed_by: None,
        detected_at: "2026-11-23T20:00:00Z".into(),
    };
    let gap_link = chain.link_gap(&gap).unwrap();
    store.put_linked_gap(&gap, &gap_link).await.unwrap();
    assert_eq!(store.gap_link(&gap).await.unwrap(), Some(gap_link));
    let mut cp = checkpoint("shardId-00000001", Some("300"), ShardStatus::Open);
    cp.chain = Some(chain.clone());
    store.save_shard(&cp).await.unwrap();

    let ev = evidence_of(store, ARN2).await;
    assert_eq!(ev.leaves.len(), 4, "{:?}", ev.leaves);
    for leaf in &ev.leaves {
        assert_eq!(leaf.shard_id, "shardId-00000001");
        assert!(leaf.stored_hash.is_some(), "{leaf:?}");
        assert_eq!(leaf.content_hash, leaf.stored_hash, "{leaf:?}");
        assert_eq!(leaf.is_gap, leaf.key.is_none(), "{leaf:?}");
    }
    let mut seqs: Vec<(&str, bool)> = ev
        .leaves
        .iter()
        .map(|l| (l.sequence_number.as_str(), l.is_gap))
        .collect();
    seqs.sort();
    assert_eq!(
        seqs,
        [
            ("100", false),
            ("200", false),
            ("300", false),
            ("300", true)
        ]
    );
    assert_eq!(ev.checkpoints.len(), 1);
    assert_eq!(ev.checkpoints[0].chain.as_ref(), Some(&chain));
    let report = verify_stream(
        &ev,
        &VerifyOptions {
            public_key: None,
            now: Utc::now(),
            interval_secs: 3600,
            remembered: None,
        },
    );
    let tampered: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Tamper)
        .collect();
    assert!(tampered.is_empty(), "{tampered:?}");
    assert_eq!(report.entries, 4, "every leaf checked");
    // Another table's evidence only: none of this stream.
    let only_other = store
        .proof_evidence(Some(&["other".to_string()]), |_| {})
        .await
        .unwrap();
    assert!(only_other.is_empty(), "{only_other:?}");
}

/// A store that can hold a source table for `snapshot` to read.
trait SourceTables {
    /// Creates a source table keyed `pk` (S) holding one item per `pk`
    /// value, each with a `v` attribute; returns its name.
    async fn make_source(&self, pks: &[&str]) -> String;
}

impl SourceTables for MemoryStore {
    async fn make_source(&self, pks: &[&str]) -> String {
        for pk in pks {
            self.put_source_item("src", &["pk"], source_item(pk));
        }
        "src".into()
    }
}

impl SourceTables for DynamoStore {
    async fn make_source(&self, pks: &[&str]) -> String {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
            ScalarAttributeType,
        };
        let name = format!("{}-src", self.names().audit);
        self.client()
            .create_table()
            .table_name(&name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("create the source table");
        for pk in pks {
            self.client()
                .put_item()
                .table_name(&name)
                .item("pk", AttributeValue::S(pk.to_string()))
                .item("v", AttributeValue::S(format!("value of {pk}")))
                .send()
                .await
                .expect("put a source item");
        }
        name
    }
}

fn source_item(pk: &str) -> Item {
    BTreeMap::from([
        ("pk".to_string(), AttrValue::S(pk.into())),
        ("v".to_string(), AttrValue::S(format!("value of {pk}"))),
    ])
}

/// A snapshot's reads and bookkeeping: a parallel Scan gives every item
/// once; the latest run keeps only its own segments' rows, each as last
/// saved; SNAPSHOT entries are write-once with their link; the run's chain
/// shows in the evidence with its segments as checkpoints.
async fn a_snapshot_run_reads_each_item_once_and_resumes_from_its_rows<T>(store: &T)
where
    T: SnapshotStore + ProofStore + EvidenceStore + SourceTables,
{
    let pks = ["a", "b", "c", "d", "e", "f", "g"];
    let table = store.make_source(&pks).await;
    let info = store.describe_source(&table).await.unwrap();
    assert_eq!(info.key_names, ["pk"]);
    assert!(store.describe_source("no-such-table").await.is_err());

    let mut seen: Vec<Item> = Vec::new();
    for segment in 0..2 {
        let mut start: Option<Item> = None;
        loop {
            let page = store
                .scan_page(ScanRequest {
                    table: &table,
                    segment,
                    segments: 2,
                    start: start.as_ref(),
                    limit: 2,
                })
                .await
                .unwrap();
            assert!(page.items.len() <= 2, "{page:?}");
            assert!(page.read_units > 0.0, "{page:?}");
            seen.extend(page.items);
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
    }
    seen.sort_by(|a, b| format!("{:?}", a["pk"]).cmp(&format!("{:?}", b["pk"])));
    let expected: Vec<Item> = pks.iter().map(|pk| source_item(pk)).collect();
    assert_eq!(seen, expected, "every item once, over both segments");

    assert_eq!(store.load_snapshot(&table).await.unwrap(), None);
    let run = |id: &str| SnapshotRun {
        table: table.clone(),
        run_id: id.into(),
        segments: 2,
        done: false,
    };
    let mut chain = ChainState::default();
    let first = ddb_audit::snapshot::snapshot_entry(
        &table,
        "r1",
        &info.key_names,
        &source_item("a"),
        "2026-11-23T19:05:00.000Z",
        None,
    );
    let link = chain.link_entry(&first).unwrap();
    let progress = |items: u64, chain: &ChainState| SegmentProgress {
        segment: 1,
        last_key: Some(BTreeMap::from([(
            "pk".to_string(),
            AttrValue::S("a".into()),
        )])),
        done: false,
        items,
        chain: chain.clone(),
    };
    store.save_snapshot_run(&run("r1")).await.unwrap();
    store
        .save_segment(&run("r1"), &progress(0, &ChainState::default()))
        .await
        .unwrap();
    assert_eq!(
        store.put_snapshot_entry(&first, &link, 1, 1).await.unwrap(),
        PutOutcome::Written
    );
    store
        .save_segment(&run("r1"), &progress(1, &chain))
        .await
        .unwrap();
    let (loaded, segments) = store.load_snapshot(&table).await.unwrap().unwrap();
    assert_eq!(loaded, run("r1"));
    assert_eq!(segments, [progress(1, &chain)], "the segment as last saved");

    // Read again at another time (a resumed run): already there, and the
    // chain goes on from the stored link.
    let mut again = first.clone();
    again.event_time = Some("2026-11-23T19:06:00.000Z".into());
    again.snapshot_time = again.event_time.clone();
    assert_eq!(
        store.put_snapshot_entry(&again, &link, 1, 1).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(store.snapshot_entry_link(&again).await.unwrap(), Some(link));
    let unwritten = ddb_audit::snapshot::snapshot_entry(
        &table,
        "r1",
        &info.key_names,
        &source_item("b"),
        "2026-11-23T19:05:00.000Z",
        None,
    );
    assert_eq!(store.snapshot_entry_link(&unwritten).await.unwrap(), None);

    // Its chain in the evidence: the entry at its segment's place, the
    // segment as the chain's checkpoint.
    let arn = snapshot_stream_arn(&table, "r1");
    store.put_digest(&table, &arn, 1, &signed(1)).await.unwrap();
    store
        .record_newest_digest(&table, &arn, 1, "hash-1")
        .await
        .unwrap();
    let ev = evidence_of(store, &arn).await;
    assert_eq!(ev.table, table);
    assert_eq!(ev.newest_digest, Some((1, "hash-1".to_string())));
    assert_eq!(ev.leaves.len(), 1, "{:?}", ev.leaves);
    let leaf = &ev.leaves[0];
    assert_eq!(
        (leaf.shard_id.as_str(), leaf.sequence_number.as_str()),
        ("segment-00001", "1")
    );
    assert_eq!(leaf.content_hash, Some(link.hash));
    assert_eq!(ev.checkpoints.len(), 1, "{:?}", ev.checkpoints);
    assert_eq!(ev.checkpoints[0].shard_id, "segment-00001");
    assert_eq!(ev.checkpoints[0].chain.as_ref(), Some(&chain));
    assert_eq!(ev.checkpoints[0].sequence_no.as_deref(), Some("1"));

    // A new run: the old run's segment rows are not its own.
    store.save_snapshot_run(&run("r2")).await.unwrap();
    let (loaded, segments) = store.load_snapshot(&table).await.unwrap().unwrap();
    assert_eq!(loaded.run_id, "r2");
    assert!(segments.is_empty(), "{segments:?}");
    let mut done = run("r2");
    done.done = true;
    store.save_snapshot_run(&done).await.unwrap();
    let mut zero = progress(3, &ChainState::default());
    zero.segment = 0;
    zero.done = true;
    store.save_segment(&done, &zero).await.unwrap();
    let (loaded, segments) = store.load_snapshot(&table).await.unwrap().unwrap();
    assert!(loaded.done);
    assert_eq!(segments, [zero]);
}

/// The item chain's read on a cache miss: the item's newest *stream* entry
/// strictly before a sort key, across streams, past an oversize entry's
/// parts, never a SNAPSHOT entry, with its stored hash.
async fn the_item_predecessor_is_the_newest_stream_entry_strictly_before<T>(store: &T)
where
    T: AuditStore + SnapshotStore,
{
    use ddb_audit::store::layout::entry_sort_key;
    let k = key(AttrValue::S("chained".into()));
    let before = |arn: &str, seq: &str| entry_sort_key(arn, seq);
    assert_eq!(
        store
            .item_predecessor("orders", &k, &before(ARN2, "500"))
            .await
            .unwrap(),
        None
    );
    // A SNAPSHOT entry sorts before every stream entry but is no
    // predecessor: it may be written after the stream entries it precedes.
    let snap = AuditEntry {
        event: "SNAPSHOT".into(),
        sequence_number: String::new(),
        shard_id: String::new(),
        stream_arn: snapshot_stream_arn("orders", "r1"),
        ..entry(k.clone(), ARN1, "1", "s")
    };
    let mut segment = ChainState::continuing(None);
    let link = segment.link_entry(&snap).unwrap();
    store.put_snapshot_entry(&snap, &link, 0, 1).await.unwrap();
    assert_eq!(
        store
            .item_predecessor("orders", &k, &before(ARN1, "990"))
            .await
            .unwrap(),
        None
    );
    let mut chain = ChainState::continuing(None);
    let mut hashes = Vec::new();
    for (arn, seq, value) in [
        (ARN1, "990", "a".to_string()),
        (ARN2, "99", "b".to_string()),
        // Oversize: its parts sort between its head and the next entry.
        (ARN2, "150", "é".repeat(200_000)),
        (ARN2, "160", "c".to_string()),
    ] {
        let e = entry(k.clone(), arn, seq, &value);
        let link = chain.link_entry(&e).unwrap();
        store.put_linked_entry(&e, &link).await.unwrap();
        hashes.push(link.hash);
    }
    let found = |arn: &'static str, seq: &'static str| {
        let sk = before(arn, seq);
        let k = k.clone();
        async move {
            store
                .item_predecessor("orders", &k, &sk)
                .await
                .unwrap()
                .map(|p| (p.sequence_number, p.hash))
        }
    };
    // Across streams: the newer stream's first entry follows the older's last.
    assert_eq!(
        found(ARN2, "99").await,
        Some(("990".into(), Some(hashes[0])))
    );
    assert_eq!(
        found(ARN2, "150").await,
        Some(("99".into(), Some(hashes[1])))
    );
    assert_eq!(
        found(ARN2, "160").await,
        Some(("150".into(), Some(hashes[2])))
    );
    // Strictly before, whatever was written after (a replay).
    assert_eq!(
        found(ARN2, "155").await,
        Some(("150".into(), Some(hashes[2])))
    );
    assert_eq!(
        found(ARN2, "900").await,
        Some(("160".into(), Some(hashes[3])))
    );
    // Another item's entries are not this one's.
    assert_eq!(
        store
            .item_predecessor(
                "orders",
                &key(AttrValue::S("other".into())),
                &before(ARN2, "900")
            )
            .await
            .unwrap(),
        None
    );
}

/// A stream row is its lease: taken on the epoch seen (the loser of a race
/// gets `None`), released by its holder only; fenced checkpoints, gaps and
/// digests refuse an epoch that moved; heartbeats are rows of their own.
async fn leases_fence_the_writes_of_an_owner_that_lost_its_stream<T>(store: &T)
where
    T: CheckpointStore + ProofStore + AuditStore,
{
    use ddb_audit::store::{Fence, ReplicaBeat, StoreError};
    // Whole seconds: the DynamoDB store keeps milliseconds.
    let row = StreamRow {
        table_name: "orders".into(),
        stream_arn: ARN2.into(),
        is_enabled: true,
        drained: false,
        updated_at: chrono::DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap(),
    };
    store.save_stream(&row).await.unwrap();
    let leases = store.leases(None).await.unwrap();
    assert_eq!(leases.len(), 1);
    let free = leases[0].clone();
    assert_eq!((free.owner.as_deref(), free.epoch), (None, 0));
    assert_eq!(store.take_lease(&free, "a").await.unwrap(), Some(1));
    // B saw it free too, but A took it first.
    assert_eq!(store.take_lease(&free, "b").await.unwrap(), None);
    let seen = store.leases(None).await.unwrap().remove(0);
    assert_eq!((seen.owner.as_deref(), seen.epoch), (Some("a"), 1));
    // The stream row's own attributes survive the lease, and the reverse.
    store.save_stream(&row).await.unwrap();
    assert_eq!(
        store.load_streams(Some("orders")).await.unwrap(),
        std::slice::from_ref(&row)
    );
    assert_eq!(store.leases(None).await.unwrap()[0], seen);
    let fence_a = Fence {
        table: "orders".into(),
        stream_arn: ARN2.into(),
        owner: "a".into(),
        epoch: 1,
    };
    store.check_fence(&fence_a).await.unwrap();
    let cp = checkpoint("s1", Some("100"), ShardStatus::Open);
    store.save_fenced_shard(&cp, &fence_a).await.unwrap();
    // A stops beating; B takes it over on the epoch it saw.
    assert_eq!(store.take_lease(&seen, "b").await.unwrap(), Some(2));
    let fence_b = Fence {
        owner: "b".into(),
        epoch: 2,
        ..fence_a.clone()
    };
    let cp_b = checkpoint("s1", Some("200"), ShardStatus::Open);
    store.save_fenced_shard(&cp_b, &fence_b).await.unwrap();
    // A wakes up: every fenced write of its is refused, typed.
    let fenced = |r: Result<_, StoreError>| matches!(r, Err(StoreError::Fenced { epoch: 1, .. }));
    let cp_a = checkpoint("s1", Some("300"), ShardStatus::Open);
    assert!(fenced(
        store.save_fenced_shard(&cp_a, &fence_a).await.map(|_| ())
    ));
    assert!(fenced(store.check_fence(&fence_a).await));
    let gap = Gap {
        table: "orders".into(),
        stream_arn: ARN2.into(),
        shard_id: "s1".into(),
        after_sequence_number: Some("200".into()),
        after_shard_id: None,
        unseen_shard_id: None,
        after_time: None,
        resumed_at_sequence_number: Some("250".into()),
        resumed_at_time: None,
        closes: Vec::new(),
        closed_by: None,
        detected_at: "2026-11-02T00:00:00Z".into(),
    };
    let link = ChainState::default().link_gap(&gap).unwrap();
    assert!(fenced(
        store
            .put_fenced_gap(&gap, &link, &fence_a)
            .await
            .map(|_| ())
    ));
    assert!(
        store.gaps().await.unwrap().is_empty(),
        "a fenced gap was written"
    );
    assert!(fenced(
        store
            .put_fenced_digest(1, &signed(1), &fence_a)
            .await
            .map(|_| ())
    ));
    assert_eq!(store.newest_digest(ARN2).await.unwrap(), None);
    assert!(!store.release_lease(&fence_a).await.unwrap());
    // The owner's own writes go through.
    assert_eq!(
        store.put_fenced_gap(&gap, &link, &fence_b).await.unwrap(),
        PutOutcome::Written
    );
    assert_eq!(
        store.put_fenced_gap(&gap, &link, &fence_b).await.unwrap(),
        PutOutcome::AlreadyPresent
    );
    assert_eq!(
        store
            .put_fenced_digest(1, &signed(1), &fence_b)
            .await
            .unwrap(),
        PutOutcome::Written
    );
    let stored = store.load_shard(ARN2, "s1").await.unwrap().unwrap();
    assert_eq!(stored.sequence_no.as_deref(), Some("200"));
    // Released: nobody owns it, and the epoch moved once more.
    assert!(store.release_lease(&fence_b).await.unwrap());
    let released = store.leases(None).await.unwrap().remove(0);
    assert_eq!((released.owner, released.epoch), (None, 3));
    assert!(store.save_fenced_shard(&cp_b, &fence_b).await.is_ok());

    // A task's lease (one replica at a time) needs no stream row.
    let task = store.task_lease("cloudtrail").await.unwrap();
    assert_eq!((task.owner.as_deref(), task.epoch), (None, 0));
    assert_eq!(store.take_lease(&task, "a").await.unwrap(), Some(1));
    assert_eq!(store.take_lease(&task, "b").await.unwrap(), None);
    let held = store.task_lease("cloudtrail").await.unwrap();
    assert_eq!((held.owner.as_deref(), held.epoch), (Some("a"), 1));
    assert_eq!(store.take_lease(&held, "b").await.unwrap(), Some(2));

    // Heartbeats: one row per replica, deleted only at the counter seen.
    let beat = |replica: &str, counter| ReplicaBeat {
        replica: replica.into(),
        counter,
        owned: 2,
        updated_at: Utc::now(),
    };
    store.beat(&beat("a", 1)).await.unwrap();
    store.beat(&beat("b", 1)).await.unwrap();
    store.beat(&beat("a", 2)).await.unwrap();
    let mut rows = store.replicas().await.unwrap();
    rows.sort_by(|x, y| x.replica.cmp(&y.replica));
    assert_eq!(
        rows.iter()
            .map(|r| (r.replica.as_str(), r.counter, r.owned))
            .collect::<Vec<_>>(),
        [("a", 2, 2), ("b", 1, 2)]
    );
    assert!(!store.forget_replica("a", 1).await.unwrap());
    assert!(store.forget_replica("a", 2).await.unwrap());
    assert_eq!(store.replicas().await.unwrap().len(), 1);
    // Heartbeat rows are no stream.
    assert_eq!(store.load_streams(None).await.unwrap(), [row]);
    assert_eq!(store.leases(None).await.unwrap().len(), 1);
    assert_eq!(store.leases(Some("orders")).await.unwrap().len(), 1);
    assert!(store.leases(Some("billing")).await.unwrap().is_empty());
}

/// Every body, each on a fresh store from `fresh`.
async fn conformance<T, F, Fut>(fresh: F)
where
    T: ReadStore + CheckpointStore + ProofStore + SnapshotStore + EvidenceStore + SourceTables,
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let s = fresh("order").await;
    entries_are_write_once_and_in_stream_order(&s).await;
    let s = fresh("keys").await;
    a_key_names_one_item_whatever_its_number_spelling(&s).await;
    let s = fresh("big").await;
    an_oversize_entry_round_trips_whole(&s).await;
    let s = fresh("ckpt").await;
    checkpoints_move_forward_only_and_drained_is_final(&s).await;
    let s = fresh("row").await;
    one_shard_row_reads_as_in_the_listing(&s).await;
    let s = fresh("release").await;
    a_released_drained_row_is_gone_and_an_open_one_stays(&s).await;
    let s = fresh("streams").await;
    a_drained_stream_stays_drained(&s).await;
    let s = fresh("fresh").await;
    a_fresh_trail_is_set_once_and_cleared_for_good(&s).await;
    let s = fresh("health").await;
    table_health_is_kept_apart_from_the_streams(&s).await;
    let s = fresh("gaps").await;
    gaps_are_write_once_by_position(&s).await;
    let s = fresh("pages").await;
    history_and_index_pages_read_every_entry_once(&s).await;
    let s = fresh("digests").await;
    digests_are_write_once_and_the_pointer_never_moves_back(&s).await;
    let s = fresh("chain").await;
    a_chained_trail_reads_back_as_intact_evidence(&s).await;
    let s = fresh("snapshot").await;
    a_snapshot_run_reads_each_item_once_and_resumes_from_its_rows(&s).await;
    let s = fresh("itemprev").await;
    the_item_predecessor_is_the_newest_stream_entry_strictly_before(&s).await;
    let s = fresh("leases").await;
    leases_fence_the_writes_of_an_owner_that_lost_its_stream(&s).await;
}

#[tokio::test]
async fn the_memory_store_conforms() {
    conformance(|_| async { MemoryStore::new() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_store_conforms_on_the_emulator() {
    let emu = common::Emulator::start();
    let client = emu.dynamodb();
    let run = format!("{:08x}", rand::random::<u32>());
    conformance(|body| {
        let client = client.clone();
        let run = run.clone();
        async move {
            let store = DynamoStore::new(
                client,
                TableNames {
                    streams: format!("conf-{run}-{body}-streams"),
                    shards: format!("conf-{run}-{body}-shards"),
                    audit: format!("conf-{run}-{body}-entries"),
                },
            );
            store
                .init(&Default::default())
                .await
                .expect("init")
                .expect("not cancelled");
            store
        }
    })
    .await;
    drop(emu);
}
