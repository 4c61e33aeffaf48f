//! CloudTrail attribution end to end: the real binary against moto's server,
//! whose S3 holds CloudTrail log files that the test writes, in the format of
//! the DynamoDB developer guide ("Understanding DynamoDB log file entries"),
//! for writes the test made through the SDK.

mod common;

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
    use aws_sdk_s3::config as c;
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(c::BehaviorVersion::latest())
        .endpoint_url(&env.emu.endpoint)
        .region(c::Region::new(env.emu.region.clone()))
        .credentials_provider(c::Credentials::new(
            &env.emu.access_key,
            &env.emu.secret_key,
            None,
            None,
            "ddb-audit-e2e",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A source table, a trail bucket, and a config with a fast reader.
async fn setup(env: &TestEnv, window_secs: u64, tolerance_secs: u64) -> (String, PathBuf, String) {
    let table = env.name("acct");
    env.create_stream_table(&table).await;
    let bucket = format!("trail-{:08x}", rand::random::<u32>());
    s3(env)
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let text = format!(
        "tables = [\"{table}\"]\n\n[attribution]\nactor_attribute = \"updated_by\"\n\n\
         [attribution.cloudtrail]\nbucket = \"{bucket}\"\nprefix = \"org\"\n\
         poll_interval_secs = 1\ndelivery_window_secs = {window_secs}\nmatch_tolerance_secs = {tolerance_secs}\n\n{}",
        env.storage_section()
    );
    let config = env.write_file("config.toml", &text);
    env.init(&config).await;
    (table, config, bucket)
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
    let (table, config, bucket) = setup(&env, 15, 2).await;
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
    // What a principal changed (the library side of `query --principal`).
    let store = ddb_audit::store::dynamo::DynamoStore::new(
        env.ddb.clone(),
        ddb_audit::store::TableNames {
            streams: env.name("streams"),
            shards: env.name("shards"),
            audit: env.name("entries"),
        },
    );
    let by = |arn: &'static str, table: Option<String>| {
        let store = store.clone();
        async move {
            ddb_audit::attribution::dynamo::entries_by_principal(&store, arn, table.as_deref())
                .await
                .expect("entries by principal")
        }
    };
    let cleaned = by(CLEANUP, None).await;
    assert_eq!(cleaned.len(), 1, "{cleaned:?}");
    assert_eq!(cleaned[0].event, "REMOVE");
    assert_eq!(cleaned[0].actor.as_deref(), Some(CLEANUP));
    let billed = by(BILLING, Some(table.clone())).await;
    let billed: Vec<(&str, &str)> = billed
        .iter()
        .map(|e| match &e.key["pk"] {
            ddb_audit::value::AttrValue::S(pk) => (e.event.as_str(), pk.as_str()),
            other => panic!("pk {other:?}"),
        })
        .collect();
    assert_eq!(billed.len(), 2);
    assert!(
        billed.contains(&("MODIFY", "u2")) && billed.contains(&("MODIFY", "u3")),
        "{billed:?}"
    );
    assert!(by(BILLING, Some("other-table".into())).await.is_empty());

    let u4 = wait_principals(&env, &config, &table, "u4", 1).await;
    assert_eq!(u4.len(), 1, "{u4:?}");
    assert_eq!(u4[0]["actor"], json!(ONBOARDING));

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
    // Give a wrong match a chance to be written before comparing.
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
    daemon.stop_gracefully().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguity_is_reported_and_a_restart_resumes_where_the_reader_stopped() {
    let env = TestEnv::new("ct-resume");
    let (table, config, bucket) = setup(&env, 600, 10).await;
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
}
