//! `[redaction]` end to end: the real daemon audits items holding secrets at
//! redacted paths; a raw SDK scan of the daemon's tables (and its log) finds
//! none of them; history shows `‹redacted›` and still tells whether a secret
//! changed; `verify` proves the redacted trail intact; `redaction check`
//! answers "is it equal to X?" with the key; `snapshot` redacts too; and a
//! path naming a key attribute, or a missing key file, stops `run` naming
//! the table or key.

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use serde_json::{json, Value};

const PRIVATE_PEM: &str = include_str!("../src/proof/testdata/ed25519-private.pem");
const PUBLIC_PEM: &str = include_str!("../src/proof/testdata/ed25519-public.pem");

const SSN_1: &str = "SSN-SECRET-0001";
const SSN_2: &str = "SSN-SECRET-0002";
const CARD: &str = "4111-SECRET-CARD";
const PHONE: &str = "555-SECRET-PHONE";
const SNAPSHOT_SSN: &str = "SSN-SECRET-SNAP";

fn item(pk: &str, ssn: &str, note: &str) -> std::collections::HashMap<String, AttributeValue> {
    let m = |pairs: &[(&str, AttributeValue)]| {
        AttributeValue::M(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        )
    };
    let s = |v: &str| AttributeValue::S(v.to_string());
    [
        ("pk", s(pk)),
        ("sk", AttributeValue::N("1".into())),
        ("ssn", s(ssn)),
        ("card", m(&[("number", s(CARD)), ("exp", s("01/30"))])),
        (
            "contacts",
            AttributeValue::L(vec![m(&[("name", s("Ann")), ("phone", s(PHONE))])]),
        ),
        ("note", s(note)),
        ("updated_by", s("alice")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Every attribute of every item of `table`, as text.
async fn dump(env: &TestEnv, table: &str) -> String {
    let items = env
        .ddb
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("scan");
    format!("{items:?}")
}

async fn assert_no_secret(env: &TestEnv, what: &str, secrets: &[&str]) {
    for table in ["entries", "shards", "streams"] {
        let text = dump(env, &env.name(table)).await;
        assert!(text.contains("\"entry\"") || table != "entries", "{text}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{what}: {secret} is stored in {table}:\n{text}"
            );
        }
    }
}

async fn check(env: &TestEnv, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["redaction", "check"];
    all.extend_from_slice(args);
    let out = env.cli(&all).await;
    (out.status.code(), out.stdout + &out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_trail_and_stay_checkable_with_the_key() {
    let env = TestEnv::new("redact");
    let table = env.name("people");
    env.create_stream_table(&table).await;
    let signing = env.write_file("digest-key.pem", PRIVATE_PEM);
    let key_file = env.write_file("redaction.key", &format!("{}\n", "5a".repeat(32)));
    let base = std::fs::read_to_string(env.config(&[&table])).unwrap();
    let proof = format!(
        "[proof]\nsigning_key_file = \"{}\"\ndigest_interval_secs = 1\n",
        signing.display()
    );
    let with = |redaction: &str, name: &str| {
        env.write_file(name, &format!("{base}\n{proof}\n[redaction]\n{redaction}"))
    };
    let config = with(
        &format!(
            "key_file = \"{}\"\npaths = [\"ssn\", \"contacts[*].phone\"]\n[redaction.tables]\n\"{table}\" = [\"card.number\"]\n",
            key_file.display()
        ),
        "redact.toml",
    );
    env.init(&config).await;

    // A key attribute cannot be redacted; a missing key file is named.
    let bad_key_path = with(
        &format!("key_file = \"{}\"\npaths = [\"sk\"]\n", key_file.display()),
        "bad-key-path.toml",
    );
    env.cli(&["run", "--config", path_str(&bad_key_path)])
        .await
        .fails_naming(&["`sk`", &format!("table {table}"), "cannot be redacted"]);
    let missing = with(
        "key_file = \"/nonexistent/redaction.key\"\npaths = [\"ssn\"]\n",
        "missing-key.toml",
    );
    env.cli(&["run", "--config", path_str(&missing)])
        .await
        .fails_naming(&["`redaction.key_file`", "/nonexistent/redaction.key"]);

    let mut daemon = env.spawn_daemon(&config);
    let put = |i: std::collections::HashMap<String, AttributeValue>| {
        let ddb = env.ddb.clone();
        let table = table.clone();
        async move {
            ddb.put_item()
                .table_name(table)
                .set_item(Some(i))
                .send()
                .await
                .expect("put")
        }
    };
    put(item("u0", SSN_1, "first")).await; // INSERT
    put(item("u0", SSN_2, "first")).await; // the secret changes
    put(item("u0", SSN_2, "second")).await; // only the note changes
    env.ddb
        .delete_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("u0".into()))
        .key("sk", AttributeValue::N("1".into()))
        .send()
        .await
        .expect("delete"); // REMOVE
    let key = key_args(&json!({"pk": {"S": "u0"}, "sk": {"N": "1"}}));
    let entries = env
        .wait_history(&config, &table, &key, "4 entries", |e| e.len() >= 4)
        .await;
    env.wait_heartbeat_digest(&table, 4).await;
    daemon.stop_gracefully().await;

    let secrets = [SSN_1, SSN_2, CARD, PHONE];
    assert_no_secret(&env, "after run", &secrets).await;
    let log = daemon.log_text();
    for secret in secrets {
        assert!(!log.contains(secret), "the log shows {secret}:\n{log}");
    }

    // The stored form: commitments in place of the values, everything
    // else as written.
    let events: Vec<&str> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["INSERT", "MODIFY", "MODIFY", "REMOVE"]);
    let change = |e: &Value, path: &str| -> Value {
        e["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let commitment = |v: &Value| -> String {
        v["redacted"]
            .as_str()
            .filter(|c| c.starts_with("hmac-sha256:") && c.len() == 12 + 64)
            .unwrap_or_else(|| panic!("not a commitment: {v}"))
            .to_string()
    };
    let inserted = &entries[0];
    let ssn_1 = commitment(&change(inserted, "ssn")["new"]);
    let card = &change(inserted, "card")["new"]["M"];
    assert_eq!(card["exp"], json!({"S": "01/30"}), "{card}");
    let card_number = commitment(&card["number"]);
    let contact = &change(inserted, "contacts")["new"]["L"][0]["M"];
    assert_eq!(contact["name"], json!({"S": "Ann"}));
    commitment(&contact["phone"]);
    assert_eq!(change(inserted, "note")["new"], json!({"S": "first"}));
    assert_eq!(inserted["actor"], json!("alice"));
    // "Did it change?": the secret's change is there, old → new commitments...
    let changed = change(&entries[1], "ssn");
    assert_eq!(commitment(&changed["old"]), ssn_1);
    let ssn_2 = commitment(&changed["new"]);
    assert_ne!(ssn_1, ssn_2);
    assert_eq!(
        entries[1]["changes"].as_array().unwrap().len(),
        1,
        "{}",
        entries[1]
    );
    // ...and a write that left it alone has no change at its path.
    assert_eq!(change(&entries[2], "ssn"), Value::Null, "{}", entries[2]);
    assert_eq!(change(&entries[2], "note")["new"], json!({"S": "second"}));
    assert_eq!(commitment(&change(&entries[3], "ssn")["old"]), ssn_2);

    // Readable output: the mark, never the value nor the commitment.
    let readable = env.history_raw(&config, &table, &key, false).await;
    readable.success();
    assert!(
        readable.stdout.contains("‹redacted›"),
        "{}",
        readable.stdout
    );
    assert!(
        !readable.stdout.contains("hmac-sha256"),
        "{}",
        readable.stdout
    );
    let at = entries[2]["event_time"].as_str().unwrap();
    let mut show = vec![
        "show",
        "--config",
        path_str(&config),
        "--table",
        &table,
        "--at",
        at,
    ];
    for k in &key {
        show.extend(["--key", k.as_str()]);
    }
    let shown = env.cli(&show).await;
    shown.success();
    assert!(
        shown.stdout.contains("ssn") && shown.stdout.contains("‹redacted›"),
        "{}",
        shown.stdout
    );

    // The chain is over the entries as stored: verify proves them intact.
    let verified = env.cli(&["verify", "--config", path_str(&config)]).await;
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}{}",
        verified.stdout,
        verified.stderr
    );

    // An offline bundle carries the redacted entries and still proves them.
    let bundle = env.dir.path().join("u0.proof.json");
    let mut export = vec![
        "export",
        "--config",
        path_str(&config),
        "--table",
        &table,
        "--proof",
        path_str(&bundle),
    ];
    for k in &key {
        export.extend(["--key", k.as_str()]);
    }
    env.cli(&export).await.success();
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(
        text.contains("hmac-sha256:") && !text.contains(SSN_1),
        "{text}"
    );
    let public = env.write_file("digest-key.pub.pem", PUBLIC_PEM);
    let checked = env
        .cli(&[
            "verify-bundle",
            path_str(&bundle),
            "--public-key",
            path_str(&public),
        ])
        .await;
    assert_eq!(
        checked.status.code(),
        Some(0),
        "{}{}",
        checked.stdout,
        checked.stderr
    );

    // "Is it equal to X?", with the key from the config or a file.
    let cfg = ["--config", path_str(&config)];
    let (code, out) = check(
        &env,
        &[
            cfg[0],
            cfg[1],
            "--value",
            &format!("S:{SSN_1}"),
            "--commitment",
            &ssn_1,
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (Some(0), "equal"));
    let (code, out) = check(
        &env,
        &[
            cfg[0],
            cfg[1],
            "--value",
            &format!("S:{SSN_2}"),
            "--commitment",
            &ssn_1,
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (Some(1), "not equal"));
    let whole = json!({"redacted": card_number}).to_string();
    let (code, out) = check(
        &env,
        &[
            "--key-file",
            path_str(&key_file),
            "--value",
            &format!("S:{CARD}"),
            "--commitment",
            &whole,
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (Some(0), "equal"));
    let (code, out) = check(
        &env,
        &[cfg[0], cfg[1], "--value", "S:x", "--commitment", "nonsense"],
    )
    .await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--commitment"), "{out}");
    let other_key = env.write_file("other.key", &"0".repeat(64));
    let (code, out) = check(
        &env,
        &[
            "--key-file",
            path_str(&other_key),
            "--value",
            &format!("S:{SSN_1}"),
            "--commitment",
            &ssn_1,
        ],
    )
    .await;
    assert_eq!((code, out.trim()), (Some(1), "not equal"));
    let committed = env
        .cli(&[
            "redaction",
            "commit",
            cfg[0],
            cfg[1],
            "--value",
            &format!("S:{SSN_2}"),
        ])
        .await;
    committed.success();
    assert_eq!(committed.stdout.trim(), ssn_2);

    // "When did the secret become X?": query by the commitment.
    let found = env
        .cli(&[
            "query",
            "--config",
            path_str(&config),
            "--table",
            &table,
            "--field",
            "ssn",
            "--to",
            &format!("redacted:{ssn_2}"),
            "--json",
        ])
        .await;
    found.success();
    let found = parse_json_lines(&found.stdout);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["sequence_number"], entries[1]["sequence_number"]);

    // A SNAPSHOT baseline holds every value of an item: redacted as well.
    put(item("u1", SNAPSHOT_SSN, "snap")).await;
    let snap = env
        .cli(&["snapshot", "--config", path_str(&config), "--table", &table])
        .await;
    snap.success();
    assert_no_secret(&env, "after snapshot", &[SNAPSHOT_SSN, CARD, PHONE]).await;
    let snapshot_key = key_args(&json!({"pk": {"S": "u1"}, "sk": {"N": "1"}}));
    let snapshots = env.history(&config, &table, &snapshot_key).await;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    let snapshot_ssn = commitment(&change(&snapshots[0], "ssn")["new"]);
    let (code, _) = check(
        &env,
        &[
            cfg[0],
            cfg[1],
            "--value",
            &format!("S:{SNAPSHOT_SSN}"),
            "--commitment",
            &snapshot_ssn,
        ],
    )
    .await;
    assert_eq!(code, Some(0));
}
