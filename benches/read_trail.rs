//! The read side on a big trail, against the emulator (`make bench`, step 5).
//!
//! A trail of 100,000 entries (`--quick`: 5,000) is loaded straight into an
//! audit table through the store (`DynamoStore::bulk_load_unchecked`: the items
//! `put_linked_entry` writes, 25 a BatchWriteItem), not through the daemon:
//! one "hot" item with 10 % of the entries, the rest over items of 10 entries
//! each, 50 actors, spread evenly over 7 days. Then the release binary answers
//! the questions of issue 9, and each one's `read cost` log line gives its
//! Query calls, BatchGetItem calls and items read:
//!   - `history --last 1` of the hot item;
//!   - `query --actor` over one hour;
//!   - `query --table --field status` over one day;
//!   - `show --at` of the hot item (middle of the week) and of a small item.
//!
//! Then `snapshot` of a source table of 10,000 items (`--quick`: 1,000):
//! items/s. And the write units of every loaded entry (`write_cost`).
//!
//! Usage: cargo bench --bench read_trail [-- --quick] (needs ./.venv).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use aws_sdk_dynamodb::types::{AttributeValue as DAttr, PutRequest, WriteRequest};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use ddb_audit::entry::{AuditEntry, Change};
use ddb_audit::proof::Link;
use ddb_audit::store::dynamo::{write_cost, DynamoStore};
use ddb_audit::store::TableNames;
use ddb_audit::value::{AttrValue, Item};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TABLE: &str = "bench-read-orders";
const SOURCE: &str = "bench-read-source";
const ACTORS: usize = 50;
const DAYS: i64 = 7;

struct Emulator(Child);

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start_emulator(audit: &str) -> (Emulator, String) {
    let port = free_port();
    let python = Path::new(ROOT).join(".venv/bin/python");
    let mut child = Command::new(python)
        .arg(Path::new(ROOT).join("benches/e2e/emulator.py"))
        .args(["--audit-table", audit, "--port", &format!("driver={port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the emulator (make venv)");
    let stdout = child.stdout.take().expect("emulator stdout");
    let emulator = Emulator(child);
    for line in BufReader::new(stdout).lines() {
        if line.expect("emulator output").contains("ready") {
            return (emulator, format!("http://127.0.0.1:{port}"));
        }
    }
    panic!("the emulator exited before it was ready");
}

fn key(id: &str) -> Item {
    Item::from([("pk".to_string(), AttrValue::S(id.to_string()))])
}

fn item_id(i: usize) -> String {
    format!("order-{i:06}")
}

/// Entry `i` of the trail: which item, which actor, when, what changed.
fn trail_entry(i: usize, total: usize, start: DateTime<Utc>, stream_arn: &str) -> AuditEntry {
    let hot = i % 10 == 0;
    let (id, nth) = if hot {
        ("order-hot".to_string(), i / 10)
    } else {
        let j = i - i / 10 - 1; // index among the non-hot entries
        (item_id(j % ((total * 9 / 10) / 10).max(1)), j)
    };
    let first = if hot {
        i == 0
    } else {
        nth < (total * 9 / 10) / 10
    };
    let at = start + Duration::milliseconds((DAYS * 86_400_000) * i as i64 / total as i64);
    let actor = format!("actor-{:02}", i % ACTORS);
    let mut changes = vec![Change {
        path: "qty".into(),
        old: (!first).then(|| AttrValue::N(format!("{}", i % 97))),
        new: Some(AttrValue::N(format!("{}", (i + 1) % 97))),
        added: None,
        removed: None,
    }];
    if i % 10 == 3 || first {
        changes.push(Change {
            path: "status".into(),
            old: (!first).then(|| AttrValue::S("PENDING".into())),
            new: Some(AttrValue::S("PAID".into())),
            added: None,
            removed: None,
        });
    }
    AuditEntry {
        event: if first { "INSERT" } else { "MODIFY" }.into(),
        shard_id: format!("shardId-00000001700000000000-{:08x}", i % 4),
        event_time: Some(at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        actor: Some(actor),
        actor_source: Some(ddb_audit::entry::ActorSource::Item),
        changes,
        stream_arn: stream_arn.into(),
        ..AuditEntry::fixture(
            TABLE,
            key(&id),
            &format!("{}", 100_000_000_000_000_000_000u128 + i as u128),
        )
    }
}

struct Cost {
    matches: usize,
    query_calls: u64,
    batch_get_calls: u64,
    items_read: u64,
    ms: u128,
}

/// One question through the binary, with a 600 s call timeout: the emulator
/// answers a Query on an index by scanning the whole table (seconds each,
/// at 100,000 entries). A run that still times out is repeated once, and
/// says so.
fn run_cli(bin: &str, config: &Path, endpoint: &str, args: &[&str]) -> Cost {
    match try_cli(bin, config, endpoint, args) {
        Ok(cost) => cost,
        Err(stderr) if stderr.contains("timed out") => {
            eprintln!("{args:?} timed out against the emulator; once more");
            try_cli(bin, config, endpoint, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
        }
        Err(stderr) => panic!("{args:?}: {stderr}"),
    }
}

fn try_cli(bin: &str, config: &Path, endpoint: &str, args: &[&str]) -> Result<Cost, String> {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env(ddb_audit::aws::OPERATION_TIMEOUT_ENV, "600")
        .env("RUST_LOG", "ddb_audit::read=debug")
        .output()
        .expect("run ddb-audit");
    let ms = started.elapsed().as_millis();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(stderr.into_owned());
    }
    let line = stderr
        .lines()
        .find(|l| l.contains("read cost"))
        .unwrap_or_else(|| panic!("{args:?} logged no read cost: {stderr}"));
    let field = |name: &str| -> u64 {
        line.split(&format!("{name}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(Cost {
        matches: stdout.lines().filter(|l| !l.trim().is_empty()).count(),
        query_calls: field("query_calls"),
        batch_get_calls: field("batch_get_calls"),
        items_read: field("items_read"),
        ms,
    })
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let total: usize = if quick { 5_000 } else { 100_000 };
    let source_items: usize = if quick { 1_000 } else { 10_000 };
    let bin = env!("CARGO_BIN_EXE_ddb-audit");
    let run = std::process::id();
    let names = TableNames {
        streams: format!("bench-read-streams-{run}"),
        shards: format!("bench-read-shards-{run}"),
        audit: format!("bench-read-entries-{run}"),
    };
    let (_emulator, endpoint) = start_emulator(&names.audit);
    std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
    for (k, v) in [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
    ] {
        if std::env::var_os(k).is_none() {
            std::env::set_var(k, v);
        }
    }
    let sdk = ddb_audit::aws::load_sdk_config().await;
    let client = ddb_audit::aws::dynamodb_client(&sdk);
    let store = DynamoStore::from_config(&sdk, names.clone());
    store
        .init(&Default::default())
        .await
        .expect("init")
        .expect("not cancelled");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("bench.toml");
    std::fs::write(
        &config,
        format!(
            "tables = [\"{TABLE}\", \"{SOURCE}\"]\n[attribution]\nactor_attribute = \"updated_by\"\n\
             [storage]\nstreams_table = \"{}\"\nshards_table = \"{}\"\naudit_table = \"{}\"\n",
            names.streams, names.shards, names.audit
        ),
    )
    .expect("write config");

    // ---- the trail
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let arn = format!(
        "arn:aws:dynamodb:us-east-1:123456789012:table/{TABLE}/stream/2026-10-31T00:00:00.000"
    );
    let mut units = std::collections::BTreeMap::<usize, usize>::new();
    let mut bytes = Vec::with_capacity(total);
    let loaded = Instant::now();
    let mut batch = Vec::new();
    for i in 0..total {
        let entry = trail_entry(i, total, start, &arn);
        let mut hash = [0u8; 32];
        hash[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        let mut prev = [0u8; 32];
        prev[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let link = Link {
            prev_hash: Some(prev),
            hash,
        };
        let cost = write_cost(&entry, Some(&link), false).expect("cost");
        *units.entry(cost.write_units).or_default() += 1;
        bytes.push(cost.item_bytes);
        batch.push((entry, Some(link)));
        if batch.len() == 500 || i + 1 == total {
            store.bulk_load_unchecked(&batch).await.expect("bulk load");
            batch.clear();
        }
    }
    let load_s = loaded.elapsed().as_secs_f64();
    bytes.sort_unstable();
    println!(
        "trail: {total} entries loaded in {load_s:.1} s ({:.0} entries/s, BatchWriteItem)",
        total as f64 / load_s
    );
    println!(
        "write units per entry (chained, indexes table + actor): {}; entry item bytes p50 {} max {}",
        units
            .iter()
            .map(|(u, n)| format!("{u} WCU × {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        bytes[bytes.len() / 2],
        bytes[bytes.len() - 1]
    );

    // ---- the questions
    let hour_from = start + Duration::hours(36);
    let day_from = start + Duration::days(2);
    let mid = start + Duration::hours(DAYS * 12);
    let questions: Vec<(&str, Vec<String>)> = vec![
        (
            "history --last 1 (hot item)",
            vec![
                "history",
                "--table",
                TABLE,
                "--key",
                "pk=S:order-hot",
                "--last",
                "1",
                "--json",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
        ),
        (
            "query --actor over an hour",
            vec![
                "query".into(),
                "--actor".into(),
                "actor-07".into(),
                "--since".into(),
                ts(hour_from),
                "--until".into(),
                ts(hour_from + Duration::hours(1)),
                "--json".into(),
            ],
        ),
        (
            "query --table --field status over a day",
            vec![
                "query".into(),
                "--table".into(),
                TABLE.into(),
                "--field".into(),
                "status".into(),
                "--since".into(),
                ts(day_from),
                "--until".into(),
                ts(day_from + Duration::days(1)),
                "--json".into(),
            ],
        ),
        (
            "show --at (hot item, mid-week)",
            vec![
                "show".into(),
                "--table".into(),
                TABLE.into(),
                "--key".into(),
                "pk=S:order-hot".into(),
                "--at".into(),
                ts(mid),
                "--json".into(),
            ],
        ),
        (
            "show --at (a 10-entry item, mid-week)",
            vec![
                "show".into(),
                "--table".into(),
                TABLE.into(),
                "--key".into(),
                format!("pk=S:{}", item_id(7)),
                "--at".into(),
                ts(mid),
                "--json".into(),
            ],
        ),
    ];
    let hot_entries = total / 10;
    println!("hot item: {hot_entries} entries; other items: 10 entries each; {ACTORS} actors; {DAYS} days");
    println!("| question | lines out | Query calls | BatchGetItem calls | items read | wall ms |");
    println!("|---|---|---|---|---|---|");
    for (name, args) in &questions {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = run_cli(bin, &config, &endpoint, &args);
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            c.matches, c.query_calls, c.batch_get_calls, c.items_read, c.ms
        );
    }

    // ---- snapshot
    client
        .create_table()
        .table_name(SOURCE)
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .expect("definition"),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .expect("key"),
        )
        .send()
        .await
        .expect("create the source table");
    for chunk in (0..source_items).collect::<Vec<_>>().chunks(25) {
        let requests = chunk
            .iter()
            .map(|i| {
                let item = std::collections::HashMap::from([
                    ("pk".to_string(), DAttr::S(format!("item-{i:06}"))),
                    ("status".to_string(), DAttr::S("PENDING".into())),
                    ("qty".to_string(), DAttr::N(format!("{}", i % 97))),
                    ("note".to_string(), DAttr::S("x".repeat(200))),
                ]);
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .expect("put"),
                    )
                    .build()
            })
            .collect::<Vec<_>>();
        let out = client
            .batch_write_item()
            .request_items(SOURCE, requests)
            .send()
            .await
            .expect("fill the source table");
        assert!(out
            .unprocessed_items()
            .is_none_or(|u| u.values().all(Vec::is_empty)));
    }
    let started = Instant::now();
    let out = Command::new(bin)
        .args([
            "snapshot",
            "--table",
            SOURCE,
            "--read-units-per-sec",
            "100000",
            "--config",
        ])
        .arg(&config)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env(ddb_audit::aws::OPERATION_TIMEOUT_ENV, "600")
        .output()
        .expect("run snapshot");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "snapshot: {source_items} items in {secs:.1} s = {:.0} items/s (segments 4, page 100, unpaced)",
        source_items as f64 / secs
    );
}
