//! `DynamoStore` and `AwsStream` over the real wire: against moto's server,
//! started here on a free port from `.venv` (`make venv` installs it), or
//! against whatever `AWS_ENDPOINT_URL` points at (LocalStack, say).
//!
//! One test function on purpose: it sets the process environment once and
//! then goes through `load_sdk_config()`, exactly as the daemon does.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as DAttr, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use chrono::Utc;
use ddb_audit::entry::{AuditEntry, Change, Gap};
use ddb_audit::store::dynamo::{self, item_partition_key, DynamoStore};
use ddb_audit::store::{
    AuditStore, CheckpointStore, PutOutcome, ShardCheckpoint, ShardStatus, StoreError, StreamRow,
    TableNames,
};
use ddb_audit::stream::aws::AwsStream;
use ddb_audit::stream::{
    cmp_sequence, DescribeStreamRequest, IteratorPosition, ShardIteratorRequest, StreamApi,
    StreamError, StreamRecord,
};
use ddb_audit::value::{AttrValue, Item};

/// The emulator for this test: moto's server we started (killed on drop), or
/// the endpoint the environment names.
struct Emulator {
    child: Option<Child>,
    endpoint: String,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_emulator() -> Emulator {
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        if !endpoint.is_empty() {
            return Emulator {
                child: None,
                endpoint,
            };
        }
    }
    let server = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        server.exists(),
        "{} is missing: run `make venv` to install moto's server (or set AWS_ENDPOINT_URL \
         to an emulator such as LocalStack)",
        server.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new(&server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
    let mut emulator = Emulator {
        child: Some(child),
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = emulator
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            panic!("moto_server exited before answering ({status}); is `make venv` complete?");
        }
        assert!(
            Instant::now() < deadline,
            "moto_server did not answer on port {port} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    emulator
}

fn s(v: &str) -> AttrValue {
    AttrValue::S(v.to_string())
}

fn key(pk: &str) -> Item {
    BTreeMap::from([("pk".to_string(), s(pk))])
}

fn entry(table: &str, stream_arn: &str, seq: &str, changes: Vec<Change>) -> AuditEntry {
    AuditEntry {
        shard_id: "shardId-00000001".into(),
        changes,
        stream_arn: stream_arn.into(),
        ..AuditEntry::fixture(table, key("u1"), seq)
    }
}

fn change(path: &str, old: &str, new: &str) -> Change {
    Change {
        path: path.into(),
        old: Some(s(old)),
        new: Some(s(new)),
        added: None,
        removed: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_stream_against_the_emulator() {
    let emulator = start_emulator();
    // The daemon reads the standard environment; so does this test. This is
    // the only test in this binary, so nothing races on the environment.
    std::env::set_var("AWS_ENDPOINT_URL", &emulator.endpoint);
    for (name, default) in [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ] {
        if std::env::var(name).is_err() {
            std::env::set_var(name, default);
        }
    }
    let config = ddb_audit::aws::load_sdk_config().await;
    // Unique names: a long-lived emulator (LocalStack) may hold earlier runs.
    let run = format!("{}-{}", std::process::id(), Utc::now().timestamp_millis());

    store_round_trip(&config, &run).await;
    stream_adapter(&config, &run).await;
    drop(emulator);
}

async fn store_round_trip(config: &aws_config::SdkConfig, run: &str) {
    let names = TableNames {
        streams: format!("t-streams-{run}"),
        shards: format!("t-shards-{run}"),
        audit: format!("t-audit-{run}"),
    };
    let store = DynamoStore::from_config(config, names.clone());
    let arn1 =
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-01T00:00:00.000";
    let arn2 =
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-02T00:00:00.000";

    // Before init: every operation names the missing table and the fix.
    match store.put_entry(&entry("orders", arn1, "1", vec![])).await {
        Err(StoreError::MissingTable { table }) => assert_eq!(table, names.audit),
        other => panic!("expected MissingTable, got {other:?}"),
    }
    match store.load_shards(arn1).await {
        Err(e @ StoreError::MissingTable { .. }) => {
            assert!(e.to_string().contains("ddb-audit init"), "{e}")
        }
        other => panic!("expected MissingTable, got {other:?}"),
    }

    // init is idempotent.
    let first = store
        .init(&Default::default())
        .await
        .expect("init")
        .expect("not cancelled");
    assert_eq!(first.created.len(), 3, "{first:?}");
    let second = store
        .init(&Default::default())
        .await
        .expect("init again")
        .expect("not cancelled");
    assert_eq!(second.existed.len(), 3, "{second:?}");
    assert!(second.created.is_empty());

    // Write-once entries, history in stream order (the older stream first,
    // even with a larger sequence number; numbers compared as numbers).
    let e_old = entry("orders", arn1, "990", vec![change("a", "0", "1")]);
    let e1 = entry("orders", arn2, "99", vec![change("a", "1", "2")]);
    let e2 = entry("orders", arn2, "100", vec![change("a", "2", "3")]);
    for e in [&e2, &e_old, &e1] {
        assert_eq!(store.put_entry(e).await.expect("put"), PutOutcome::Written);
    }
    assert_eq!(
        store.put_entry(&e1).await.expect("put again"),
        PutOutcome::AlreadyPresent
    );
    let history = store.history("orders", &key("u1")).await.expect("history");
    assert_eq!(history, vec![e_old.clone(), e1.clone(), e2.clone()]);
    assert!(store
        .history("orders", &key("nobody"))
        .await
        .expect("empty history")
        .is_empty());

    // An entry far beyond DynamoDB's 400 KB item limit round-trips whole.
    let big_value = "é".repeat(350_000); // 700 KB of UTF-8
    let e_big = entry("orders", arn2, "101", vec![change("blob", "", &big_value)]);
    assert_eq!(
        store.put_entry(&e_big).await.expect("put big"),
        PutOutcome::Written
    );
    assert_eq!(
        store.put_entry(&e_big).await.expect("put big again"),
        PutOutcome::AlreadyPresent
    );
    let e3 = entry("orders", arn2, "102", vec![change("a", "3", "4")]);
    store.put_entry(&e3).await.expect("put after big");
    let history = store.history("orders", &key("u1")).await.expect("history");
    assert_eq!(history.len(), 5);
    assert_eq!(history[3], e_big);
    assert_eq!(history[4], e3);

    // The raw layout: one head without inline JSON, then its parts.
    let raw = aws_sdk_dynamodb::Client::new(config);
    let items = raw
        .query()
        .table_name(&names.audit)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", DAttr::S(item_partition_key("orders", &key("u1"))))
        .consistent_read(true)
        .send()
        .await
        .expect("raw query")
        .items
        .unwrap_or_default();
    let sks: Vec<String> = items
        .iter()
        .filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned())
        .collect();
    let parts = sks.iter().filter(|sk| sk.contains("#part#")).count();
    assert!(parts >= 2, "{sks:?}");
    let head = items
        .iter()
        .find(|i| i.contains_key("parts"))
        .expect("a head with parts");
    assert!(!head.contains_key("entry") && !head.contains_key(dynamo::ENTRY_Z));
    // The head still carries the index keys, so queries find it.
    assert!(
        head.get("ix_actor")
            .and_then(|v| v.as_s().ok())
            .is_some_and(|a| a.starts_with("alice#")),
        "{head:?}"
    );
    // An inline entry as stored is exactly what `write_cost` sized.
    let sk3 = dynamo::entry_sort_key(arn2, "102");
    let stored = items
        .iter()
        .find(|i| i.get("sk").and_then(|v| v.as_s().ok()) == Some(&sk3))
        .expect("the entry after the big one");
    assert_eq!(
        dynamo::stored_item_bytes(stored),
        dynamo::write_cost(&e3, None, false)
            .expect("cost")
            .item_bytes,
        "{stored:?}"
    );

    // Gaps: write-once, deduplicated by position, not detection time.
    let gap = Gap {
        table: "orders".into(),
        stream_arn: arn1.into(),
        shard_id: "shardId-00000001".into(),
        after_sequence_number: Some("990".into()),
        after_shard_id: None,
        unseen_shard_id: None,
        after_time: None,
        resumed_at_time: None,
        resumed_at_sequence_number: Some("5000".into()),
        closes: Vec::new(),
        closed_by: None,
        detected_at: "2026-11-23T20:00:00Z".into(),
    };
    assert_eq!(store.put_gap(&gap).await.expect("gap"), PutOutcome::Written);
    let again = Gap {
        detected_at: "2026-11-23T21:00:00Z".into(),
        ..gap.clone()
    };
    assert_eq!(
        store.put_gap(&again).await.expect("gap again"),
        PutOutcome::AlreadyPresent
    );
    let first_gap = Gap {
        after_sequence_number: None,
        shard_id: "shardId-00000002".into(),
        detected_at: "2026-11-23T19:00:00Z".into(),
        ..gap.clone()
    };
    store.put_gap(&first_gap).await.expect("second gap");
    assert_eq!(store.gaps().await.expect("gaps"), vec![first_gap, gap]);

    // Checkpoints move forward only; drained is final.
    let cp = |seq: Option<&str>, status: ShardStatus| ShardCheckpoint {
        sequence_no: seq.map(str::to_string),
        status,
        last_record_time: Some(Utc::now()),
        ..ShardCheckpoint::fresh("orders", arn2, "shardId-00000001", Some("shardId-00000000"))
    };
    let load = |store: &DynamoStore| {
        let store = store.clone();
        async move {
            let mut rows = store.load_shards(arn2).await.expect("load shards");
            rows.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
            rows
        }
    };
    store
        .save_shard(&cp(None, ShardStatus::Open))
        .await
        .expect("save");
    store
        .save_shard(&cp(Some("100"), ShardStatus::Open))
        .await
        .expect("save");
    store
        .save_shard(&cp(Some("99"), ShardStatus::Open))
        .await
        .expect("stale save is fine");
    store
        .save_shard(&cp(None, ShardStatus::Open))
        .await
        .expect("stale save is fine");
    let rows = load(&store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].sequence_no.as_deref(), Some("100"));
    assert_eq!(rows[0].parent_shard_id.as_deref(), Some("shardId-00000000"));
    assert!(rows[0].last_record_time.is_some());
    store
        .save_shard(&cp(Some("1000"), ShardStatus::Closed))
        .await
        .expect("save");
    store
        .save_shard(&cp(Some("1000"), ShardStatus::Drained))
        .await
        .expect("save");
    store
        .save_shard(&cp(Some("1000"), ShardStatus::Open))
        .await
        .expect("stale save is fine");
    let mut child = cp(Some("2000"), ShardStatus::Open);
    child.shard_id = "shardId-00000002".into();
    child.parent_shard_id = Some("shardId-00000001".into());
    store.save_shard(&child).await.expect("save child");
    let rows = load(&store).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].status, ShardStatus::Drained);
    assert_eq!(rows[0].sequence_no.as_deref(), Some("1000"));
    assert_eq!(rows[1].sequence_no.as_deref(), Some("2000"));
    assert!(store
        .load_shards(arn1)
        .await
        .expect("other stream")
        .is_empty());

    // Stream rows.
    let row = |table: &str, arn: &str, enabled: bool, drained: bool| StreamRow {
        table_name: table.into(),
        stream_arn: arn.into(),
        is_enabled: enabled,
        drained,
        updated_at: Utc::now(),
    };
    store
        .save_stream(&row("orders", arn1, false, true))
        .await
        .expect("save stream");
    store
        .save_stream(&row("orders", arn1, false, false))
        .await
        .expect("drained stays");
    store
        .save_stream(&row("orders", arn2, true, false))
        .await
        .expect("save stream");
    store
        .save_stream(&row(
            "users",
            "arn:aws:dynamodb:us-east-1:1:table/users/stream/X",
            true,
            false,
        ))
        .await
        .expect("save stream");
    let orders = store
        .load_streams(Some("orders"))
        .await
        .expect("load streams");
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[0].stream_arn, arn1);
    assert!(orders[0].drained && !orders[0].is_enabled);
    assert!(orders[1].is_enabled && !orders[1].drained);
    assert_eq!(store.load_streams(None).await.expect("scan").len(), 3);
}

async fn stream_adapter(config: &aws_config::SdkConfig, run: &str) {
    let stream = AwsStream::from_config(config);
    let ddb = aws_sdk_dynamodb::Client::new(config);
    let table = format!("src-{run}");

    match stream.describe_table(&table).await {
        Err(StreamError::NotFound(m)) => assert!(m.contains(&table), "{m}"),
        other => panic!("expected NotFound, got {other:?}"),
    }

    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute"),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .expect("key"),
        )
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .expect("stream spec"),
        )
        .send()
        .await
        .expect("create source table");

    let described = stream.describe_table(&table).await.expect("describe table");
    assert!(described.stream_enabled);
    assert_eq!(described.view_type.as_deref(), Some("NEW_AND_OLD_IMAGES"));
    let arn = described.latest_stream_arn.expect("a stream ARN");

    let listed = stream.list_streams(&table).await.expect("list streams");
    assert!(listed.iter().any(|s| s.stream_arn == arn), "{listed:?}");
    assert!(listed.iter().all(|s| s.table == table));

    let desc = stream
        .describe_stream(&DescribeStreamRequest {
            stream_arn: arn.clone(),
            ..Default::default()
        })
        .await
        .expect("describe stream");
    assert!(!desc.shards.is_empty());
    let shard = desc.shards[0].clone();
    // moto ignores ShardFilter; the adapter still answers "no children".
    let children = stream
        .describe_stream(&DescribeStreamRequest {
            stream_arn: arn.clone(),
            children_of: Some(shard.shard_id.clone()),
            ..Default::default()
        })
        .await
        .expect("describe children");
    assert!(children.shards.is_empty(), "{children:?}");

    // Three changes to one item, every type on the way.
    let put = |item: Vec<(&'static str, DAttr)>| {
        let ddb = ddb.clone();
        let table = table.clone();
        async move {
            let mut req = ddb.put_item().table_name(&table);
            for (k, v) in item {
                req = req.item(k, v);
            }
            req.send().await.expect("put source item");
        }
    };
    put(vec![
        ("pk", DAttr::S("u1".into())),
        ("balance", DAttr::N("1000".into())),
        (
            "profile",
            DAttr::M([("name".to_string(), DAttr::S("Ann".into()))].into()),
        ),
        ("tags", DAttr::Ss(vec!["a".into(), "b".into()])),
        ("blob", DAttr::B(vec![0, 1, 2].into())),
        ("list", DAttr::L(vec![DAttr::Bool(true), DAttr::Null(true)])),
    ])
    .await;
    put(vec![
        ("pk", DAttr::S("u1".into())),
        ("balance", DAttr::N("900".into())),
    ])
    .await;
    ddb.delete_item()
        .table_name(&table)
        .key("pk", DAttr::S("u1".into()))
        .send()
        .await
        .expect("delete source item");

    let read_all = |position: IteratorPosition, limit: Option<i32>| {
        let stream = stream.clone();
        let arn = arn.clone();
        let shard_id = shard.shard_id.clone();
        async move {
            let mut iterator = stream
                .get_shard_iterator(&ShardIteratorRequest {
                    stream_arn: &arn,
                    shard_id: &shard_id,
                    position: &position,
                })
                .await
                .expect("iterator");
            let mut records: Vec<StreamRecord> = Vec::new();
            // An open shard never ends: stop at the first empty page.
            for _ in 0..20 {
                let page = stream.get_records(&iterator, limit).await.expect("records");
                let empty = page.records.is_empty();
                records.extend(page.records);
                match page.next_iterator {
                    Some(next) if !empty => iterator = next,
                    _ => break,
                }
            }
            records
        }
    };
    let records = read_all(IteratorPosition::TrimHorizon, None).await;
    let names: Vec<_> = records.iter().map(|r| r.event_name.as_str()).collect();
    assert_eq!(names, ["INSERT", "MODIFY", "REMOVE"], "{records:#?}");
    for r in &records {
        assert_eq!(r.problem, None, "{r:#?}");
        assert_eq!(r.keys, key("u1"));
        assert!(r.approximate_creation.is_some());
        assert!(!r.event_id.is_empty());
    }
    for pair in records.windows(2) {
        assert!(
            cmp_sequence(&pair[0].sequence_number, &pair[1].sequence_number).is_lt(),
            "{} !< {}",
            pair[0].sequence_number,
            pair[1].sequence_number
        );
    }
    let inserted = records[0]
        .new_image
        .clone()
        .expect("INSERT has a new image");
    assert_eq!(inserted.get("balance"), Some(&AttrValue::N("1000".into())));
    assert_eq!(
        inserted.get("profile"),
        Some(&AttrValue::M([("name".to_string(), s("Ann"))].into()))
    );
    assert_eq!(inserted.get("blob"), Some(&AttrValue::B(vec![0, 1, 2])));
    assert_eq!(
        inserted.get("list"),
        Some(&AttrValue::L(vec![AttrValue::Bool(true), AttrValue::Null]))
    );
    assert!(matches!(inserted.get("tags"), Some(AttrValue::Ss(t)) if t.len() == 2));
    assert!(records[0].old_image.is_none());
    let modified = &records[1];
    assert_eq!(
        modified.old_image.as_ref().and_then(|i| i.get("balance")),
        Some(&AttrValue::N("1000".into()))
    );
    assert_eq!(
        modified.new_image.as_ref().and_then(|i| i.get("balance")),
        Some(&AttrValue::N("900".into()))
    );
    assert!(records[2].new_image.is_none() && records[2].old_image.is_some());

    // Every iterator type, and the page limit.
    let first = records[0].sequence_number.clone();
    let after = read_all(IteratorPosition::AfterSequence(first.clone()), None).await;
    assert_eq!(after.len(), 2);
    let at = read_all(IteratorPosition::AtSequence(first), None).await;
    assert_eq!(at.len(), 3);
    let one_by_one = read_all(IteratorPosition::TrimHorizon, Some(1)).await;
    assert_eq!(one_by_one.len(), 3);
    let latest = read_all(IteratorPosition::Latest, None).await;
    assert!(latest.is_empty(), "{latest:?}");

    // A stream of a table that does not exist. (moto finds a stream by the
    // table name in its ARN and ignores the label.)
    let missing = arn.replace(&format!("table/{table}/"), &format!("table/nope-{run}/"));
    let err = stream
        .describe_stream(&DescribeStreamRequest {
            stream_arn: missing,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, StreamError::NotFound(_) | StreamError::Other(_)),
        "{err:?}"
    );
    eprintln!("describe_stream on a missing stream: {err:?}");
}
