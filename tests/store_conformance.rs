//! One conformance suite for the stores, in the style of mountpoint-s3's
//! mock-versus-real tests: the same test bodies run against `MemoryStore` and
//! against `DynamoStore` on the emulator, so the memory store the simulator
//! tests rely on cannot drift from the real one.

mod common;

use std::collections::BTreeMap;

use chrono::Utc;
use ddb_audit::entry::{AuditEntry, Change, Gap};
use ddb_audit::store::dynamo::DynamoStore;
use ddb_audit::store::memory::MemoryStore;
use ddb_audit::store::{
    AuditStore, CheckpointStore, PutOutcome, ShardCheckpoint, ShardStatus, StreamRow,
    TableHealthRow, TableNames,
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
        table: "orders".into(),
        key,
        event: "MODIFY".into(),
        sequence_number: seq.into(),
        shard_id: "shardId-00000001".into(),
        event_time: Some("2026-11-23T19:05:00Z".into()),
        actor: Some("alice".into()),
        actor_source: None,
        last_writer: None,
        principal: None,
        item_actor: None,
        changes: vec![Change {
            path: "v".into(),
            old: None,
            new: Some(AttrValue::S(value.into())),
            added: None,
            removed: None,
        }],
        ttl_expiry: false,
        error: None,
        raw: None,
        correlation: None,
        snapshot_time: None,
        stream_arn: stream_arn.into(),
    }
}

fn checkpoint(shard: &str, seq: Option<&str>, status: ShardStatus) -> ShardCheckpoint {
    ShardCheckpoint {
        stream_arn: ARN2.into(),
        shard_id: shard.into(),
        table: "orders".into(),
        parent_shard_id: None,
        sequence_no: seq.map(str::to_string),
        status,
        last_record_time: None,
        caught_up: false,
        from_start: false,
        chain: None,
        lineage_tail: None,
        updated_at: Utc::now(),
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
    assert_eq!(store.gaps().await.unwrap(), vec![gap]);
}

/// Every body, each on a fresh store from `fresh`.
async fn conformance<T, F, Fut>(fresh: F)
where
    T: AuditStore + CheckpointStore,
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
    let s = fresh("health").await;
    table_health_is_kept_apart_from_the_streams(&s).await;
    let s = fresh("gaps").await;
    gaps_are_write_once_by_position(&s).await;
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
