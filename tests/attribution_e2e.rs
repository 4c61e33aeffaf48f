//! CloudTrail attribution end to end: the real binary against moto's server,
//! whose S3 holds CloudTrail log files that the test writes, in the format of
//! the DynamoDB developer guide ("Understanding DynamoDB log file entries"),
//! for writes the test made through the SDK.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use common::*;

const ACCOUNT: &str = "123456789012";
const ALICE: &str = "arn:aws:iam::123456789012:user/alice";
const CLEANUP: &str = "arn:aws:sts::123456789012:assumed-role/cleanup-job/run-42";
const BILLING: &str = "arn:aws:sts::123456789012:assumed-role/billing-service/i-0abc";
const ONBOARDING: &str = "arn:aws:sts::123456789012:assumed-role/onboarding/o-7";
const MIGRATION: &str = "arn:aws:sts::123456789012:assumed-role/migration/m-1";

fn s3(env: &TestEnv) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::from(&env.emu.sdk_config())
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// What `setup` made.
struct World {
    table: String,
    config: PathBuf,
    bucket: String,
    /// `[observability] listen`: the daemon's /metrics.
    metrics: SocketAddr,
    /// `[serve] listen`.
    api: SocketAddr,
}

const API_TOKEN: &str = "attribution-e2e-token";

/// A source table, a trail bucket, and a config with a fast reader.
async fn setup(env: &TestEnv, window_secs: u64, tolerance_secs: u64) -> World {
    let table = env.name("acct");
    env.create_stream_table(&table).await;
    let bucket = format!("trail-{:08x}", rand::random::<u32>());
    s3(env)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let (metrics, api) = (free_addr(), free_addr());
    let text = format!(
        "tables = [\"{table}\"]\n\n[attribution]\nactor_attribute = \"updated_by\"\n\n\
         [attribution.cloudtrail]\nbucket = \"{bucket}\"\nprefix = \"org\"\n\
         poll_interval_secs = 1\ndelivery_window_secs = {window_secs}\nmatch_tolerance_secs = {tolerance_secs}\n\n{}\n\
         [observability]\nlisten = \"{metrics}\"\n\n[serve]\nlisten = \"{api}\"\n",
        env.storage_section()
    );
    let config = env.write_file("config.toml", &text);
    env.init(&config).await;
    World {
        table,
        config,
        bucket,
        metrics,
        api,
    }
}

/// The item chain's one read of an item whose newest item is an
/// attribution record: the record names its entry's place (its sequence
/// number and leaf hash, as the entry item stores them), so the read needs
/// no second request for the entry itself.
async fn item_chain_reads_through_an_attribution_record(env: &TestEnv, table: &str, pk: &str) {
    use ddb_audit::store::layout::{entry_sort_key, item_partition_key};
    use ddb_audit::store::AuditStore;
    let names = ddb_audit::config::TableNames {
        streams: env.name("streams"),
        shards: env.name("shards"),
        audit: env.name("entries"),
    };
    let store = ddb_audit::store::dynamo::DynamoStore::new(env.ddb.clone(), names.clone());
    let item_key: ddb_audit::value::Item = serde_json::from_value(key(pk)).expect("key");
    let pk_value = item_partition_key(table, &item_key);
    let rows = env
        .ddb
        .query()
        .table_name(&names.audit)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(pk_value))
        .consistent_read(true)
        .send()
        .await
        .expect("query")
        .items
        .unwrap_or_default();
    // Newest last: the attribution record of the newest entry.
    let record = rows.last().expect("rows");
    let sk = record["sk"].as_s().expect("sk");
    assert!(sk.ends_with("#attribution"), "{sk}");
    let head_sk = sk.trim_end_matches("#attribution");
    let head = rows
        .iter()
        .find(|r| r["sk"].as_s().ok().map(String::as_str) == Some(head_sk))
        .expect("the record's entry");
    assert_eq!(record.get("entry_hash"), head.get("hash"));
    assert_eq!(
        record.get("entry_sequence_number"),
        head.get("sequence_number")
    );
    let seq = head["sequence_number"].as_s().expect("sequence number");
    let arn = head["stream_arn"].as_s().expect("stream arn");
    let next = (seq.parse::<u128>().expect("number") + 1).to_string();
    let found = store
        .item_predecessor(table, &item_key, &entry_sort_key(arn, &next))
        .await
        .expect("read")
        .expect("a predecessor");
    assert_eq!(&found.sequence_number, seq);
    assert_eq!(found.sort_key, head_sk);
    let hash = head["hash"].as_b().expect("hash").as_ref().to_vec();
    assert_eq!(found.hash.map(|h| h.to_vec()), Some(hash));
}

/// `query --config C ARGS… --json`: the entries printed.
async fn query_json(env: &TestEnv, config: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["query", "--config", path_str(config)];
    all.extend(args);
    all.push("--json");
    let out = env.cli(&all).await;
    out.success();
    parse_json_lines(&out.stdout)
}

/// (event, pk) of each entry, in the order given.
fn events_and_keys(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["key"]["pk"]["S"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The attribution outcome counters of `table`, once they equal `want`
/// (attributed, ambiguous, unmatched): the reader counts just after it
/// writes a record, so a scrape may briefly trail what `history` shows.
async fn wait_outcomes(world: &World, want: (f64, f64, f64)) -> Scrape {
    let deadline = std::time::Instant::now() + AUDIT_DEADLINE;
    loop {
        let m = scrape(world.metrics);
        let got = |o: &str| {
            m.get(
                "ddb_audit_attribution_entries_total",
                &[("table", world.table.as_str()), ("outcome", o)],
            )
            .unwrap_or(f64::NAN)
        };
        let now = (got("attributed"), got("ambiguous"), got("unmatched"));
        if now == want {
            return m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "attribution counters (attributed, ambiguous, unmatched) stayed {now:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The share gauges and the reader's lag, as a scrape shows them.
fn check_shares_and_lag(world: &World, m: &Scrape, want: (f64, f64, f64)) {
    let total = want.0 + want.1 + want.2;
    for (o, n) in [
        ("attributed", want.0),
        ("ambiguous", want.1),
        ("unmatched", want.2),
    ] {
        let share = m
            .get(
                "ddb_audit_attribution_share",
                &[("table", world.table.as_str()), ("outcome", o)],
            )
            .expect("a share gauge per outcome");
        let expected = if total == 0.0 { 0.0 } else { n / total };
        assert!(
            (share - expected).abs() < 1e-9,
            "{o}: {share} vs {expected}"
        );
    }
    assert_eq!(
        m.types
            .get("ddb_audit_attribution_entries")
            .map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        m.types
            .get("ddb_audit_cloudtrail_lag_seconds")
            .map(String::as_str),
        Some("gauge")
    );
    let lag = m
        .get("ddb_audit_cloudtrail_lag_seconds", &[])
        .expect("the reader's lag");
    // The reader lists the bucket every second: a caught-up reader's lag
    // is about that (generous: a loaded machine stalls processes).
    assert!((0.0..30.0).contains(&lag), "lag {lag}");
    assert!(
        m.get("ddb_audit_cloudtrail_files_read_total", &[])
            .unwrap_or(0.0)
            >= 1.0
    );
}

fn key(pk: &str) -> Value {
    json!({"pk": {"S": pk}, "sk": {"N": "1"}})
}

/// The key as CloudTrail logs it: values without types.
fn ct_key(pk: &str) -> Value {
    json!({"pk": pk, "sk": "1"})
}

/// One data event, shaped like the guide's examples.
fn event(name: &str, arn: &str, at: DateTime<Utc>, params: Value, id: &str) -> Value {
    let (kind, principal_id) = if arn.contains(":assumed-role/") {
        (
            "AssumedRole",
            format!("AROAEXAMPLE:{}", arn.rsplit('/').next().unwrap()),
        )
    } else {
        ("IAMUser", "AIDAEXAMPLE".to_string())
    };
    json!({
        "eventVersion": "1.08",
        "userIdentity": {
            "type": kind,
            "principalId": principal_id,
            "arn": arn,
            "accountId": ACCOUNT,
            "accessKeyId": "AKIAIOSFODNN7EXAMPLE"
        },
        "eventTime": at.to_rfc3339_opts(SecondsFormat::Secs, true),
        "eventSource": "dynamodb.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": "192.0.2.10",
        "userAgent": "aws-sdk-rust/1.3 os/linux",
        "requestParameters": params,
        "responseElements": null,
        "requestID": format!("REQ{id}"),
        "eventID": format!("evt-{id}"),
        "readOnly": false,
        "resources": [{"accountId": ACCOUNT, "type": "AWS::DynamoDB::Table",
                       "ARN": format!("arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/x")}],
        "eventType": "AwsApiCall",
        "apiVersion": "2012-08-10",
        "managementEvent": false,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Data"
    })
}

/// Writes a gzipped log file where the trail would, named as CloudTrail
/// names them; returns its key.
async fn deliver(
    env: &TestEnv,
    bucket: &str,
    at: DateTime<Utc>,
    unique: &str,
    records: &[Value],
) -> String {
    let key = format!(
        "org/AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/{}/{ACCOUNT}_CloudTrail_us-east-1_{}_{unique}.json.gz",
        at.format("%Y/%m/%d"),
        at.format("%Y%m%dT%H%MZ"),
    );
    let doc = serde_json::to_vec(&json!({ "Records": records })).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &doc).unwrap();
    s3(env)
        .put_object()
        .bucket(bucket)
        .key(&key)
        .body(gz.finish().unwrap().into())
        .send()
        .await
        .expect("put log file");
    key
}

async fn put(env: &TestEnv, table: &str, pk: &str, by: &str, n: u32) -> DateTime<Utc> {
    let mut item = key(pk);
    item["updated_by"] = json!({"S": by});
    item["n"] = json!({"N": n.to_string()});
    let at = Utc::now();
    env.ddb
        .put_item()
        .table_name(table)
        .set_item(Some(json_to_item(&item)))
        .send()
        .await
        .expect("put item");
    at
}

async fn delete(env: &TestEnv, table: &str, pk: &str) -> DateTime<Utc> {
    let at = Utc::now();
    env.ddb
        .delete_item()
        .table_name(table)
        .set_key(Some(json_to_item(&key(pk))))
        .send()
        .await
        .expect("delete item");
    at
}

async fn history_of(env: &TestEnv, config: &Path, table: &str, pk: &str) -> Vec<Value> {
    env.history(config, table, &key_args(&key(pk))).await
}

async fn wait_principals(
    env: &TestEnv,
    config: &Path,
    table: &str,
    pk: &str,
    n: usize,
) -> Vec<Value> {
    env.wait_history(
        config,
        table,
        &key_args(&key(pk)),
        "attributed entries",
        |e| e.iter().filter(|e| e.get("principal").is_some()).count() >= n,
    )
    .await
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn wait_log(daemon: &Daemon, needle: &str) {
    wait_log_line(daemon, |l| l.contains(needle)).await
}

async fn wait_log_line(daemon: &Daemon, found: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + AUDIT_DEADLINE;
    while !daemon.log_text().lines().any(&found) {
        assert!(
            std::time::Instant::now() < deadline,
            "daemon log never showed the line looked for:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_transaction_items_are_attributed_and_duplicates_change_nothing() {
    let env = TestEnv::new("ct-join");
    let world = setup(&env, 15, 2).await;
    let (table, config, bucket) = (
        world.table.clone(),
        world.config.clone(),
        world.bucket.clone(),
    );
    let mut daemon = env.spawn_daemon(&config);

    // alice creates u1, the cleanup job deletes it; onboarding creates u2..u5,
    // billing-service updates u2 and u3 in one transaction (with a condition
    // check on u4); u5 is deleted, and none of u5's events reach the trail.
    let t_put = put(&env, &table, "u1", "alice", 1).await;
    let mut t_setup = Vec::new();
    for pk in ["u2", "u3", "u4", "u5"] {
        t_setup.push(put(&env, &table, pk, "onboarding-service", 1).await);
    }
    let t_del = delete(&env, &table, "u1").await;
    // Two principals writing one key within one second would be ambiguous
    // (the other test), and writes within the tolerance only "ordered": the
    // transaction comes well after the puts (whole seconds plus tolerance).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let update = |pk: &str| {
        TransactWriteItem::builder()
            .update(
                Update::builder()
                    .table_name(&table)
                    .set_key(Some(json_to_item(&key(pk))))
                    .update_expression("SET n = n + :one")
                    .expression_attribute_values(
                        ":one",
                        aws_sdk_dynamodb::types::AttributeValue::N("1".into()),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
    };
    let t_tx = Utc::now();
    env.ddb
        .transact_write_items()
        .transact_items(update("u2"))
        .transact_items(update("u3"))
        .send()
        .await
        .expect("transact write");
    delete(&env, &table, "u5").await;

    // The stream is audited first; CloudTrail delivers minutes later.
    env.wait_history(
        &config,
        &table,
        &key_args(&key("u1")),
        "INSERT and REMOVE",
        |e| e.len() == 2,
    )
    .await;
    for pk in ["u2", "u3"] {
        env.wait_history(
            &config,
            &table,
            &key_args(&key(pk)),
            "INSERT and MODIFY",
            |e| e.len() == 2,
        )
        .await;
    }
    env.wait_history(
        &config,
        &table,
        &key_args(&key("u5")),
        "INSERT and REMOVE",
        |e| e.len() == 2,
    )
    .await;
    let mut records: Vec<Value> = ["u2", "u3", "u4"]
        .iter()
        .zip(&t_setup)
        .map(|(pk, t)| {
            event(
                "PutItem",
                ONBOARDING,
                *t,
                json!({"tableName": table, "key": ct_key(pk), "item": ["pk", "sk", "updated_by", "n"]}),
                &format!("put-{pk}"),
            )
        })
        .collect();
    records.extend([
        event(
            "PutItem",
            ALICE,
            t_put,
            json!({"tableName": table, "key": ct_key("u1"),
                   "item": ["pk", "sk", "updated_by", "n"], "returnConsumedCapacity": "TOTAL"}),
            "put-u1",
        ),
        event(
            "DeleteItem",
            CLEANUP,
            t_del,
            json!({"tableName": table, "key": ct_key("u1")}),
            "del-u1",
        ),
        event(
            "TransactWriteItems",
            BILLING,
            t_tx,
            json!({"requestItems": [
                {"operation": "Update", "tableName": table, "key": ct_key("u2"),
                 "updateExpression": "SET n = n + :one"},
                {"operation": "Update", "TableName": table, "Key": ct_key("u3"),
                 "updateExpression": "SET n = n + :one"},
                {"operation": "ConditionCheck", "TableName": table, "Key": ct_key("u4"),
                 "ConditionExpression": "attribute_exists(pk)"}
            ], "returnConsumedCapacity": "TOTAL"}),
            "tx-1",
        ),
    ]);
    let first = deliver(&env, &bucket, t_put, "aaaa", &records).await;

    // The delete: the cleanup job's role, not alice (its last writer).
    let u1 = wait_principals(&env, &config, &table, "u1", 2).await;
    let (insert, remove) = (&u1[0], &u1[1]);
    assert_eq!(remove["event"], json!("REMOVE"));
    assert_eq!(remove["actor"], json!(CLEANUP), "{remove}");
    assert_eq!(remove["actor_source"], json!("cloudtrail"));
    assert_eq!(remove["last_writer"], json!("alice"));
    let p = &remove["principal"];
    assert_eq!(p["arn"], json!(CLEANUP));
    assert_eq!(p["type"], json!("AssumedRole"));
    assert_eq!(p["source_ip"], json!("192.0.2.10"));
    assert_eq!(p["user_agent"], json!("aws-sdk-rust/1.3 os/linux"));
    assert_eq!(p["request_id"], json!("REQdel-u1"));
    assert_eq!(p["event_id"], json!("evt-del-u1"));
    assert_eq!(p["confidence"], json!("high"));
    assert_eq!(insert["actor"], json!(ALICE));
    assert_eq!(insert["principal"]["type"], json!("IAMUser"));
    // The readable history names the role too.
    let table_out = env
        .history_raw(&config, &table, &key_args(&key("u1")), false)
        .await;
    table_out.success();
    assert!(table_out.stdout.contains(CLEANUP), "{}", table_out.stdout);

    // `query` merges the attribution too, and `--actor` still finds an entry
    // by the actor it was written with.
    let config_path = path_str(&config).to_string();
    let q = |args: Vec<String>| {
        let env = &env;
        let config_path = config_path.clone();
        async move {
            let mut all = vec!["query".to_string(), "--config".into(), config_path];
            all.extend(args);
            all.push("--json".into());
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            let out = env.cli(&refs).await;
            out.success();
            parse_json_lines(&out.stdout)
        }
    };
    let removed = q(vec![
        "--table".into(),
        table.clone(),
        "--event".into(),
        "REMOVE".into(),
    ])
    .await;
    let u1_removed: Vec<&Value> = removed.iter().filter(|e| e["key"] == key("u1")).collect();
    assert_eq!(u1_removed.len(), 1, "{removed:?}");
    assert_eq!(u1_removed[0]["actor"], json!(CLEANUP));
    assert_eq!(u1_removed[0]["principal"]["event_id"], json!("evt-del-u1"));
    let by_alice = q(vec![
        "--actor".into(),
        "alice".into(),
        "--table".into(),
        table.clone(),
    ])
    .await;
    assert_eq!(by_alice.len(), 1, "{by_alice:?}");
    assert_eq!(by_alice[0]["actor"], json!(ALICE));
    assert_eq!(by_alice[0]["event"], json!("INSERT"));

    // One transaction, each item attributed on its own; the condition check
    // wrote nothing and attributes nothing.
    for pk in ["u2", "u3"] {
        let h = wait_principals(&env, &config, &table, pk, 2).await;
        assert_eq!(h.len(), 2);
        assert_eq!(h[0]["actor"], json!(ONBOARDING), "{pk}: {}", h[0]);
        let m = &h[1];
        assert_eq!(m["event"], json!("MODIFY"));
        assert_eq!(m["actor"], json!(BILLING), "{pk}: {m}");
        assert_eq!(m["actor_source"], json!("cloudtrail"));
        assert_eq!(m["principal"]["event_id"], json!("evt-tx-1"));
        assert_eq!(m["principal"]["confidence"], json!("high"));
    }
    item_chain_reads_through_an_attribution_record(&env, &table, "u2").await;
    let u4 = wait_principals(&env, &config, &table, "u4", 1).await;
    assert_eq!(u4.len(), 1, "{u4:?}");
    assert_eq!(u4[0]["actor"], json!(ONBOARDING));

    // What a principal changed: `query --principal`, read from the sparse
    // by-principal index, in time order, each entry exactly as `history`
    // shows it (the attribution merged in).
    let cleaned = query_json(&env, &config, &["--principal", CLEANUP]).await;
    assert_eq!(
        events_and_keys(&cleaned),
        [("REMOVE".to_string(), "u1".to_string())]
    );
    assert_eq!(cleaned[0], u1[1], "as history shows it");
    let by_alice = query_json(&env, &config, &["--principal", ALICE]).await;
    assert_eq!(by_alice, [u1[0].clone()]);
    let times = |e: &[Value]| -> Vec<String> {
        e.iter()
            .map(|e| e["event_time"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let onboarded = query_json(&env, &config, &["--principal", ONBOARDING]).await;
    let t = times(&onboarded);
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "oldest first: {t:?}");
    let mut got = events_and_keys(&onboarded);
    got.sort();
    let inserts: Vec<(String, String)> = ["u2", "u3", "u4"]
        .iter()
        .map(|pk| ("INSERT".to_string(), pk.to_string()))
        .collect();
    assert_eq!(got, inserts, "{onboarded:?}");
    assert!(onboarded
        .iter()
        .all(|e| e["principal"]["arn"] == json!(ONBOARDING)));
    let newest_first = query_json(
        &env,
        &config,
        &["--principal", ONBOARDING, "--order", "desc"],
    )
    .await;
    let t = times(&newest_first);
    assert!(t.windows(2).all(|w| w[0] >= w[1]), "newest first: {t:?}");
    assert_eq!(newest_first.len(), 3);
    let billed = query_json(&env, &config, &["--principal", BILLING, "--table", &table]).await;
    let mut got = events_and_keys(&billed);
    got.sort();
    assert_eq!(
        got,
        [
            ("MODIFY".to_string(), "u2".to_string()),
            ("MODIFY".to_string(), "u3".to_string())
        ]
    );
    assert!(billed
        .iter()
        .all(|e| e["principal"]["event_id"] == json!("evt-tx-1")));
    assert!(query_json(
        &env,
        &config,
        &["--principal", BILLING, "--table", "other-table"]
    )
    .await
    .is_empty());
    assert!(query_json(&env, &config, &["--principal", MIGRATION])
        .await
        .is_empty());
    // Readable, as other `query` output.
    let readable = env
        .cli(&[
            "query",
            "--config",
            path_str(&config),
            "--principal",
            CLEANUP,
        ])
        .await;
    readable.success();
    let line = readable
        .stdout
        .lines()
        .find(|l| l.contains("REMOVE"))
        .unwrap_or_else(|| panic!("{}", readable.stdout));
    assert!(line.contains(CLEANUP) && line.contains(&table), "{line}");
    // The HTTP API: the same question, the same entries.
    let serve = env.spawn_command(
        &["serve", "--config", path_str(&config)],
        &[("DDB_AUDIT_API_TOKENS", API_TOKEN)],
    );
    let bearer = format!("Bearer {API_TOKEN}");
    let uri = format!("/api/query?principal={}", url_encode(ONBOARDING));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (code, body) = loop {
        if let Some(r) = http_get_with(world.api, &uri, &[("Authorization", &bearer)]) {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not answer:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["entries"], json!(onboarded), "{body}");
    // The web page: the principal merged into the timeline, and a search
    // by principal.
    let browser = tokio::process::Command::new(browser_prerequisites())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/attribution_ui.py"))
        .args(["--base", &format!("http://{}", world.api)])
        .args(["--token", API_TOKEN, "--table", &table])
        .args(["--alice", ALICE, "--cleanup", CLEANUP, "--billing", BILLING])
        .arg("--artifacts")
        .arg(artifacts_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(180), browser)
        .await
        .expect("the browser test finished within 3 minutes")
        .expect("run the browser test");
    assert!(
        out.status.success(),
        "browser test failed ({}):\n{}\n{}\n--- serve log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        serve.log_text()
    );
    drop(serve);

    // Delivered twice (CloudTrail may): the same events in a second file.
    let before: Vec<Vec<Value>> = {
        let mut v = Vec::new();
        for pk in ["u1", "u2", "u3", "u4", "u5"] {
            v.push(history_of(&env, &config, &table, pk).await);
        }
        v
    };
    let second = deliver(&env, &bucket, t_put, "bbbb", &records).await;
    wait_log(&daemon, &second).await;
    // Give a wrong match a chance to be written before comparing. A fixed
    // wait on purpose: it is for something that must not happen, so there
    // is no condition to poll for.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (pk, was) in ["u1", "u2", "u3", "u4", "u5"].iter().zip(&before) {
        assert_eq!(
            &history_of(&env, &config, &table, pk).await,
            was,
            "{pk} changed"
        );
    }
    assert_eq!(daemon.log_text().matches(&first).count(), 1, "read once");

    // u5's events never arrive: unattributed, and counted once the window ends.
    let u5 = &before[4];
    assert!(u5.iter().all(|e| e.get("principal").is_none()), "{u5:?}");
    assert_eq!(u5[1]["actor"], Value::Null);
    assert_eq!(u5[1]["actor_source"], Value::Null);
    assert_eq!(u5[1]["last_writer"], json!("onboarding-service"));
    let seq = u5[1]["sequence_number"].as_str().unwrap().to_string();
    wait_log_line(&daemon, |l| {
        l.contains(&seq) && l.contains("no CloudTrail event for this entry")
    })
    .await;

    // The metrics: every attributed entry counted once (u1's two, the three
    // onboarding INSERTs, the two transaction MODIFYs), none ambiguous, and
    // as unmatched u5's two entries plus any entry whose window ended before
    // the test delivered its event (a slow machine: it is attributed later
    // all the same). The log names each one.
    let expired: Vec<String> = daemon
        .log_text()
        .lines()
        .filter(|l| l.contains("no CloudTrail event for this entry"))
        .map(str::to_string)
        .collect();
    let u5_seqs: Vec<&str> = u5
        .iter()
        .map(|e| e["sequence_number"].as_str().unwrap())
        .collect();
    for s in &u5_seqs {
        assert!(
            expired.iter().filter(|l| l.contains(s)).count() == 1,
            "{s} counted once: {expired:?}"
        );
    }
    let want = (7.0, 0.0, expired.len() as f64);
    let m = wait_outcomes(&world, want).await;
    check_shares_and_lag(&world, &m, want);
    assert_eq!(
        m.table("ddb_audit_attribution_unmatched_events_total", &table),
        0.0,
        "every delivered write found its entry"
    );
    assert_eq!(
        m.table("ddb_audit_attribution_unkeyed_events_total", &table),
        0.0
    );
    daemon.stop_gracefully().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguity_is_reported_and_a_restart_resumes_where_the_reader_stopped() {
    let env = TestEnv::new("ct-resume");
    let world = setup(&env, 600, 10).await;
    let (table, config, bucket) = (
        world.table.clone(),
        world.config.clone(),
        world.bucket.clone(),
    );
    let mut daemon = env.spawn_daemon(&config);

    // Two principals write u1 within one second: who made which change
    // cannot be told from CloudTrail. (A wide tolerance: on a busy machine
    // the emulator may stamp the second write seconds after the first.)
    let t1 = put(&env, &table, "u1", "billing", 1).await;
    put(&env, &table, "u1", "migration", 2).await;
    put(&env, &table, "u2", "svc", 1).await;
    env.wait_history(&config, &table, &key_args(&key("u1")), "two entries", |e| {
        e.len() == 2
    })
    .await;
    let item = |pk: &str| json!({"tableName": table, "key": ct_key(pk), "item": ["pk", "sk", "n"]});
    let first = deliver(
        &env,
        &bucket,
        t1,
        "aaaa",
        &[
            event("PutItem", BILLING, t1, item("u1"), "p1"),
            event("PutItem", MIGRATION, t1, item("u1"), "p2"),
        ],
    )
    .await;
    let u1 = wait_principals(&env, &config, &table, "u1", 2).await;
    for e in &u1 {
        let p = &e["principal"];
        assert_eq!(p["confidence"], json!("ambiguous"), "{e}");
        assert_eq!(p["arn"], Value::Null);
        assert_eq!(p["candidates"], json!([BILLING, MIGRATION]));
        assert_eq!(e["actor_source"], json!("item"), "not guessed: {e}");
    }
    let out = env
        .history_raw(&config, &table, &key_args(&key("u1")), false)
        .await;
    assert!(out.stdout.contains("ambiguous"), "{}", out.stdout);
    wait_log(&daemon, "ambiguous CloudTrail match").await;
    // Counted as ambiguous, and no principal is credited with either change.
    let want = (0.0, 2.0, 0.0);
    let m = wait_outcomes(&world, want).await;
    check_shares_and_lag(&world, &m, want);
    for arn in [BILLING, MIGRATION] {
        assert!(
            query_json(&env, &config, &["--principal", arn])
                .await
                .is_empty(),
            "{arn} is not credited with an ambiguous change"
        );
    }
    daemon.stop_gracefully().await;

    // While it is down: u2 is deleted, and its event delivered.
    let t_del = delete(&env, &table, "u2").await;
    let second = deliver(
        &env,
        &bucket,
        t_del,
        "bbbb",
        &[event(
            "DeleteItem",
            CLEANUP,
            t_del,
            json!({"tableName": table, "key": ct_key("u2")}),
            "d2",
        )],
    )
    .await;
    let daemon2 = env.spawn_daemon(&config);
    let u2 = wait_principals(&env, &config, &table, "u2", 1).await;
    assert_eq!(u2.last().unwrap()["event"], json!("REMOVE"));
    assert_eq!(u2.last().unwrap()["actor"], json!(CLEANUP));
    wait_log(&daemon2, &second).await;
    assert!(
        !daemon2.log_text().contains(&first),
        "the restart read the first log file again:\n{}",
        daemon2.log_text()
    );
    assert_eq!(
        history_of(&env, &config, &table, "u1").await,
        u1,
        "u1 unchanged"
    );
    // A new process counts from zero: the delete, and nothing read again.
    let want = (1.0, 0.0, 0.0);
    let m = wait_outcomes(&world, want).await;
    check_shares_and_lag(&world, &m, want);
}
