//! The proof side end to end: the real daemon writes a signed, hash-chained
//! trail into the emulator; `verify` proves it intact; each kind of
//! tampering, done with the SDK directly as an attacker holding write access
//! would, makes `verify` exit 1 naming what was touched, and 0 once undone;
//! `export --proof` writes a bundle that `verify-bundle` checks with no AWS
//! environment at all.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::Engine as _;
use common::*;
use ddb_audit::store::dynamo;
use serde_json::{json, Value};

type Item = HashMap<String, AttributeValue>;

const PRIVATE_PEM: &str = include_str!("../src/proof/testdata/ed25519-private.pem");
const PUBLIC_PEM: &str = include_str!("../src/proof/testdata/ed25519-public.pem");

fn s(item: &Item, name: &str) -> String {
    match item.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        _ => String::new(),
    }
}

async fn scan(env: &TestEnv, table: &str) -> Vec<Item> {
    env.ddb
        .scan()
        .table_name(table)
        .consistent_read(true)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .expect("scan")
}

async fn put(env: &TestEnv, table: &str, item: &Item) {
    env.ddb
        .put_item()
        .table_name(table)
        .set_item(Some(item.clone()))
        .send()
        .await
        .expect("put");
}

async fn delete(env: &TestEnv, table: &str, item: &Item) {
    env.ddb
        .delete_item()
        .table_name(table)
        .key("pk", item["pk"].clone())
        .key("sk", item["sk"].clone())
        .send()
        .await
        .expect("delete");
}

/// An inline entry item's JSON, as stored (deflated or not).
fn stored_json(item: &Item) -> String {
    dynamo::inline_entry_json(item)
        .expect("a readable body")
        .expect("an inline entry")
        .into_owned()
}

/// `item` with its body replaced by `json`, stored as the daemon stores it.
fn with_json(item: &Item, json: &str) -> Item {
    let mut out = item.clone();
    out.remove("entry");
    out.remove(dynamo::ENTRY_Z);
    let (name, body) = dynamo::entry_body(json);
    out.insert(name.into(), body);
    out
}

/// The audit table's entry items of `table`, in (key, sequence) order.
async fn entry_items(env: &TestEnv, audit: &str, table: &str) -> Vec<Item> {
    let mut items: Vec<Item> = scan(env, audit)
        .await
        .into_iter()
        .filter(|i| {
            dynamo::entry_item_table(i) == Some(table)
                && dynamo::inline_entry_json(i).ok().flatten().is_some()
        })
        .collect();
    items.sort_by_key(|i| (s(i, "pk"), s(i, "sk")));
    items
}

async fn digest_items(env: &TestEnv, audit: &str) -> Vec<Item> {
    let mut items: Vec<Item> = scan(env, audit)
        .await
        .into_iter()
        .filter(|i| s(i, "pk").starts_with("#digests|"))
        .collect();
    items.sort_by_key(|i| s(i, "sk"));
    items
}

struct Verify {
    code: Option<i32>,
    /// stdout, then stderr.
    stdout: String,
    json: String,
}

async fn verify(env: &TestEnv, config: &Path, extra: &[&str]) -> Verify {
    let mut args = vec!["verify", "--config", path_str(config)];
    args.extend_from_slice(extra);
    let out = env.cli(&args).await;
    Verify {
        code: out.status.code(),
        json: out.stdout.clone(),
        stdout: out.stdout + &out.stderr,
    }
}

async fn assert_intact(env: &TestEnv, config: &Path, when: &str) {
    let v = verify(env, config, &[]).await;
    assert_eq!(
        v.code,
        Some(0),
        "verify after {when} should be intact:\n{}",
        v.stdout
    );
    assert!(v.stdout.contains("intact"), "{}", v.stdout);
}

async fn assert_tampered(env: &TestEnv, config: &Path, what: &str, needles: &[&str]) {
    let v = verify(env, config, &[]).await;
    assert_eq!(v.code, Some(1), "verify should find {what}:\n{}", v.stdout);
    for n in needles {
        assert!(
            v.stdout.contains(n),
            "verify of {what} should name {n:?}:\n{}",
            v.stdout
        );
    }
}

async fn write_versions(env: &TestEnv, table: &str, items: usize, versions: usize, tag: &str) {
    for v in 0..versions {
        for i in 0..items {
            env.ddb
                .put_item()
                .table_name(table)
                .item("pk", AttributeValue::S(format!("u{i}")))
                .item("sk", AttributeValue::N("1".into()))
                .item("balance", AttributeValue::N(format!("{}", 1000 - v)))
                .item("note", AttributeValue::S(format!("{tag} v{v}")))
                .item("updated_by", AttributeValue::S("alice".into()))
                .send()
                .await
                .expect("source put");
        }
    }
}

async fn wait_entries(env: &TestEnv, config: &Path, table: &str, items: usize, n: usize) {
    for i in 0..items {
        let key = key_args(&json!({"pk": {"S": format!("u{i}")}, "sk": {"N": "1"}}));
        env.wait_history(config, table, &key, "every version", |e| e.len() >= n)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_every_kind_of_tampering_and_bundles_prove_offline() {
    let env = TestEnv::new("proof");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let audit = env.name("entries");
    let key_file = env.write_file("digest-key.pem", PRIVATE_PEM);
    let public_file = env.write_file("digest-key.pub.pem", PUBLIC_PEM);
    let base = std::fs::read_to_string(env.config(&[&table])).unwrap();
    let config = env.write_file(
        "proof.toml",
        &format!(
            "{base}\n[proof]\nsigning_key_file = \"{}\"\ndigest_interval_secs = 1\n\n[retention]\ndays = 30\n",
            key_file.display()
        ),
    );
    env.init(&config).await;
    // init protects the daemon's own tables.
    let described = env
        .ddb
        .describe_table()
        .table_name(&audit)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described
            .table()
            .and_then(|t| t.deletion_protection_enabled()),
        Some(true)
    );
    let backups = env
        .ddb
        .describe_continuous_backups()
        .table_name(&audit)
        .send()
        .await
        .unwrap();
    let pitr = backups
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .map(|s| s.as_str().to_string());
    assert_eq!(pitr.as_deref(), Some("ENABLED"));
    // ... and, with [retention], TTL on `expires_at`.
    let ttl = env
        .ddb
        .describe_time_to_live()
        .table_name(&audit)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(
        ttl.time_to_live_status().map(|s| s.as_str()),
        Some("ENABLED")
    );

    // Phase 1: 3 items × 4 versions, then a graceful stop (a final digest).
    let mut daemon = env.spawn_daemon(&config);
    write_versions(&env, &table, 3, 4, "first").await;
    wait_entries(&env, &config, &table, 3, 4).await;
    env.wait_heartbeat_digest(&table, 12).await;
    daemon.stop_gracefully().await;
    assert!(
        daemon.log_text().contains("final digest written"),
        "{}",
        daemon.log_text()
    );
    assert_intact(&env, &config, "a graceful stop").await;
    let v = verify(
        &env,
        &config,
        &["--public-key", path_str(&public_file), "--json"],
    )
    .await;
    assert_eq!(v.code, Some(0), "{}", v.stdout);
    let summary = parse_json_lines(&v.json)
        .into_iter()
        .find(|l| l["summary"] == json!(true))
        .expect("summary line");
    assert_eq!(summary["entries"], json!(12), "{summary}");

    let entries = entry_items(&env, &audit, &table).await;
    assert_eq!(entries.len(), 12);
    assert!(entries.iter().all(|i| i.contains_key("hash")));
    // Retention: every entry expires 30 days after it was written, and the
    // digests state the policy (so verify can tell expiry from deletion).
    let now = chrono::Utc::now().timestamp();
    for item in &entries {
        let Some(AttributeValue::N(at)) = item.get("expires_at") else {
            panic!("entry without expires_at: {item:?}");
        };
        let at: i64 = at.parse().unwrap();
        assert!(
            (now + 29 * 86_400..=now + 31 * 86_400).contains(&at),
            "{at}"
        );
    }
    let newest_digest = digest_items(&env, &audit).await.pop().unwrap();
    assert!(
        s(&newest_digest, "digest").contains("\"retention_days\":30"),
        "{}",
        s(&newest_digest, "digest")
    );
    // u0's history: entries[0..4]; the second one is "in the middle".
    let target = entries[1].clone();
    let target_seq = s(&target, "sequence_number");

    // 1. Alter a value inside an entry.
    let target_json = stored_json(&target);
    let json_text = target_json.replace("\"999\"", "\"1000000\"");
    assert_ne!(json_text, target_json, "the value to alter is there");
    let altered = with_json(&target, &json_text);
    put(&env, &audit, &altered).await;
    assert_tampered(&env, &config, "an altered value", &["altered", &target_seq]).await;
    put(&env, &audit, &target).await;
    assert_intact(&env, &config, "restoring the altered entry").await;

    // 2. Delete an entry in the middle of an item's history.
    delete(&env, &audit, &target).await;
    assert_tampered(&env, &config, "a deleted entry", &["deleted"]).await;
    put(&env, &audit, &target).await;
    assert_intact(&env, &config, "restoring the deleted entry").await;

    // 3. A forged copy of an entry under a new sequence number.
    let mut forged = target.clone();
    let new_seq = format!("{target_seq}7");
    let sk = s(&target, "sk");
    let (label, _) = sk.rsplit_once('#').unwrap();
    forged.insert(
        "sk".into(),
        AttributeValue::S(format!("{label}#{new_seq:0>40}")),
    );
    forged.insert("sequence_number".into(), AttributeValue::S(new_seq.clone()));
    let forged = with_json(&forged, &target_json.replace(&target_seq, &new_seq));
    put(&env, &audit, &forged).await;
    assert_tampered(&env, &config, "a forged copy", &["inserted", &new_seq]).await;
    delete(&env, &audit, &forged).await;
    assert_intact(&env, &config, "removing the forged copy").await;

    // 4. Delete the newest digest (the final one).
    let digests = digest_items(&env, &audit).await;
    let newest = digests.last().unwrap().clone();
    let newest_number = s(&newest, "sk").trim_start_matches('0').to_string();
    delete(&env, &audit, &newest).await;
    assert_tampered(
        &env,
        &config,
        "a deleted newest digest",
        &["digest_missing", &format!("digest {newest_number}")],
    )
    .await;
    put(&env, &audit, &newest).await;
    assert_intact(&env, &config, "restoring the newest digest").await;

    // 5. Flip a bit in a signature.
    let middle = digests[digests.len() / 2].clone();
    let mut sig = base64::engine::general_purpose::STANDARD
        .decode(s(&middle, "signature"))
        .unwrap();
    sig[5] ^= 0x04;
    let mut flipped = middle.clone();
    flipped.insert(
        "signature".into(),
        AttributeValue::S(base64::engine::general_purpose::STANDARD.encode(sig)),
    );
    put(&env, &audit, &flipped).await;
    let number = s(&middle, "sk").trim_start_matches('0').to_string();
    assert_tampered(
        &env,
        &config,
        "a flipped signature bit",
        &["bad_signature", &format!("digest {number}")],
    )
    .await;
    put(&env, &audit, &middle).await;
    assert_intact(&env, &config, "restoring the signature").await;

    // A state file remembers the newest digest proven.
    let state = env.dir.path().join("verify.state");
    let v = verify(&env, &config, &["--state", path_str(&state)]).await;
    assert_eq!(v.code, Some(0), "{}", v.stdout);

    // 6. Roll the whole audit table back to an earlier copy after more
    //    changes were audited.
    let snapshot = scan(&env, &audit).await;
    let mut daemon = env.spawn_daemon(&config);
    write_versions(&env, &table, 3, 2, "second").await;
    wait_entries(&env, &config, &table, 3, 6).await;
    env.wait_heartbeat_digest(&table, 18).await;
    daemon.stop_gracefully().await;
    assert_intact(&env, &config, "more changes").await;
    let full = scan(&env, &audit).await;
    let keep: std::collections::HashSet<(String, String)> =
        snapshot.iter().map(|i| (s(i, "pk"), s(i, "sk"))).collect();
    for item in &full {
        if !keep.contains(&(s(item, "pk"), s(item, "sk"))) {
            delete(&env, &audit, item).await;
        }
    }
    assert_tampered(&env, &config, "a rolled-back table", &["truncated"]).await;
    // With --state, even a rollback of the streams and shards tables too
    // would show: the remembered digest must still be there, unchanged.
    let v = verify(&env, &config, &["--state", path_str(&state)]).await;
    assert_eq!(v.code, Some(1), "{}", v.stdout);
    for item in &full {
        put(&env, &audit, item).await;
    }
    assert_intact(&env, &config, "undoing the rollback").await;

    // Offline: export one item's proof, check it with no AWS environment.
    let bundle = env.dir.path().join("u0.proof.json");
    env.cli(&[
        "export",
        "--config",
        path_str(&config),
        "--table",
        &table,
        "--key",
        "pk=S:u0",
        "--key",
        "sk=N:1",
        "--proof",
        path_str(&bundle),
    ])
    .await
    .success();
    let offline = |file: &Path| {
        std::process::Command::new(BIN)
            .args([
                "verify-bundle",
                path_str(file),
                "--public-key",
                path_str(&public_file),
            ])
            .env_clear()
            .output()
            .expect("verify-bundle")
    };
    let out = offline(&bundle);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "proves: the 6 entries of {table} pk=S:u0 sk=N:1 from entry 1, "
        )) && stdout.contains("no later entry is proven absent"),
        "{stdout}"
    );
    let text = std::fs::read_to_string(&bundle).unwrap();
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["entries"].as_array().map(Vec::len), Some(6), "{b}");
    assert_eq!(b["span"]["entries"], json!(6), "{b}");
    let tampered = env.write_file("u0.altered.json", &text.replacen("\"999\"", "\"1\"", 1));
    let out = offline(&tampered);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("altered"));

    // Doctored bundles, each checked offline: exit 1 naming what is wrong.
    let other = env.dir.path().join("u1.proof.json");
    env.cli(&[
        "export",
        "--config",
        path_str(&config),
        "--table",
        &table,
        "--key",
        "pk=S:u1",
        "--key",
        "sk=N:1",
        "--proof",
        path_str(&other),
    ])
    .await
    .success();
    let other: Value = serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
    let doctor = |name: &str, change: &dyn Fn(&mut Value), needles: &[&str]| {
        let mut doctored = b.clone();
        change(&mut doctored);
        let file = env.write_file(name, &serde_json::to_string_pretty(&doctored).unwrap());
        let out = offline(&file);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        for n in needles {
            assert!(stdout.contains(n), "{name} should name {n:?}: {stdout}");
        }
    };
    let entries = |b: &mut Value| -> Vec<Value> { b["entries"].as_array().unwrap().clone() };
    doctor(
        "foreign.json",
        &|b| {
            let mut list = entries(b);
            list.insert(1, other["entries"][1].clone());
            b["entries"] = json!(list);
        },
        &["foreign", "bundle entry 2", "another item"],
    );
    doctor(
        "duplicate.json",
        &|b| {
            let mut list = entries(b);
            list.insert(3, list[2].clone());
            b["entries"] = json!(list);
        },
        &["duplicated", "bundle entry 4"],
    );
    doctor(
        "swapped.json",
        &|b| {
            let mut list = entries(b);
            list.swap(1, 2);
            b["entries"] = json!(list);
        },
        &["reordered", "bundle entry 3"],
    );
    doctor(
        "header.json",
        &|b| b["key"] = json!({"pk": {"S": "u2"}, "sk": {"N": "1"}}),
        &["foreign", "bundle entry 1"],
    );
    doctor(
        "truncated.json",
        &|b| {
            let mut list = entries(b);
            list.pop();
            b["entries"] = json!(list);
        },
        &["bundle_header", "holds 5 entries"],
    );
    doctor(
        "truncated-digest.json",
        &|b| {
            let mut list = entries(b);
            let last = list.pop().unwrap();
            b["entries"] = json!(list);
            let kept: Vec<Value> = b["digests"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| {
                    d["number"] != last["digest_number"]
                        || list.iter().any(|e| e["digest_number"] == d["number"])
                })
                .cloned()
                .collect();
            b["digests"] = json!(kept);
        },
        &["bundle_header", "holds 5 entries"],
    );
    // A deletion from the middle, the header rewritten to match: the item
    // chain names the missing entry.
    doctor(
        "deleted.json",
        &|b| {
            let mut list = entries(b);
            let gone = list.remove(3);
            b["span"]["entries"] = json!(list.len());
            b["entries"] = json!(list);
            assert!(gone["entry"]["sequence_number"].is_string());
        },
        &["deleted", "bundle entry 4", "item chain"],
    );
    assert!(stdout.contains("none missing"), "{stdout}");
    // A flipped signature bit names its stream in --json.
    let mut flipped = b.clone();
    let sig = flipped["digests"][0]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(sig)
        .unwrap();
    bytes[7] ^= 0x10;
    flipped["digests"][0]["signature"] =
        json!(base64::engine::general_purpose::STANDARD.encode(bytes));
    let file = env.write_file("flipped.json", &flipped.to_string());
    let out = std::process::Command::new(BIN)
        .args(["verify-bundle", path_str(&file), "--json", "--public-key"])
        .arg(&public_file)
        .env_clear()
        .output()
        .expect("verify-bundle --json");
    assert_eq!(out.status.code(), Some(1));
    let lines = parse_json_lines(&String::from_utf8_lossy(&out.stdout));
    let bad = lines
        .iter()
        .find(|l| l["kind"] == json!("bad_signature"))
        .expect("a bad_signature finding");
    assert_eq!(
        bad["stream_arn"], flipped["digests"][0]["stream_arn"],
        "{bad}"
    );
    assert!(!bad["stream_arn"].as_str().unwrap().is_empty());
}

/// A config for `table` with `proof` as its `[proof]` section.
fn proof_config(env: &TestEnv, table: &str, proof: &str) -> std::path::PathBuf {
    let base = std::fs::read_to_string(env.config(&[table])).unwrap();
    env.write_file(
        "proof.toml",
        &format!("{base}\n[proof]\n{proof}\ndigest_interval_secs = 1\n"),
    )
}

/// Digests signed by a KMS key (ECC_NIST_P256, on the emulator): the
/// daemon signs through KMS, `verify` checks with the key's public half from
/// KMS, a flipped signature bit is found, and the PEM that `public-key`
/// prints lets `verify-bundle` check an export offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_signed_digests_verify_and_a_flipped_bit_is_found() {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    let env = TestEnv::new("proofkms");
    let kms = env.emu.kms();
    let key = kms
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("CreateKey");
    let key_id = key.key_metadata().unwrap().key_id().to_string();
    let alias = format!("alias/{}-digests", env.prefix);
    kms.create_alias()
        .alias_name(&alias)
        .target_key_id(&key_id)
        .send()
        .await
        .expect("CreateAlias");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let audit = env.name("entries");
    let config = proof_config(&env, &table, &format!("kms_key_id = \"{alias}\""));
    env.init(&config).await;

    let mut daemon = env.spawn_daemon(&config);
    write_versions(&env, &table, 2, 3, "kms").await;
    wait_entries(&env, &config, &table, 2, 3).await;
    // A heartbeat digest before the final one: at least two to check.
    env.wait_heartbeat_digest(&table, 6).await;
    daemon.stop_gracefully().await;
    let log = daemon.log_text();
    assert!(log.contains("digests are signed with KMS"), "{log}");

    let digests = digest_items(&env, &audit).await;
    assert!(digests.len() >= 2, "{digests:?}");
    for d in &digests {
        assert!(
            s(d, "digest").contains("\"algorithm\":\"ecdsa-p256-sha256\""),
            "{}",
            s(d, "digest")
        );
        assert!(!s(d, "signature").is_empty());
    }
    let v = verify(&env, &config, &[]).await;
    assert_eq!(v.code, Some(0), "{}", v.stdout);
    assert!(
        v.stdout.contains("signatures checked with sha256:"),
        "{}",
        v.stdout
    );

    // A flipped bit in a KMS signature.
    let middle = digests[digests.len() / 2].clone();
    let mut sig = base64::engine::general_purpose::STANDARD
        .decode(s(&middle, "signature"))
        .unwrap();
    let last = sig.len() - 1;
    sig[last] ^= 0x01;
    let mut flipped = middle.clone();
    flipped.insert(
        "signature".into(),
        AttributeValue::S(base64::engine::general_purpose::STANDARD.encode(sig)),
    );
    put(&env, &audit, &flipped).await;
    let number = s(&middle, "sk").trim_start_matches('0').to_string();
    assert_tampered(
        &env,
        &config,
        "a flipped bit in a KMS signature",
        &["bad_signature", &format!("digest {number}")],
    )
    .await;
    put(&env, &audit, &middle).await;
    assert_intact(&env, &config, "restoring the KMS signature").await;

    // Offline: the public key as PEM, then a bundle checked with no AWS.
    let pem = env
        .cli(&["public-key", "--config", path_str(&config)])
        .await
        .success()
        .stdout
        .clone();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let public_file = env.write_file("kms.pub.pem", &pem);
    let bundle = env.dir.path().join("u0.kms.proof.json");
    env.cli(&[
        "export",
        "--config",
        path_str(&config),
        "--table",
        &table,
        "--key",
        "pk=S:u0",
        "--key",
        "sk=N:1",
        "--proof",
        path_str(&bundle),
    ])
    .await
    .success();
    let out = std::process::Command::new(BIN)
        .args([
            "verify-bundle",
            path_str(&bundle),
            "--public-key",
            path_str(&public_file),
        ])
        .env_clear()
        .output()
        .expect("verify-bundle");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// SNAPSHOT entries are in the chain: a snapshot run chains each segment's
/// entries and signs the run with its own digests, so `verify` proves them,
/// and an altered or deleted SNAPSHOT entry makes it exit 1 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_entries_are_chained_signed_and_verified() {
    let env = TestEnv::new("proofsnap");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let audit = env.name("entries");
    let key_file = env.write_file("digest-key.pem", PRIVATE_PEM);
    let public_file = env.write_file("digest-key.pub.pem", PUBLIC_PEM);
    let config = proof_config(
        &env,
        &table,
        &format!("signing_key_file = \"{}\"", key_file.display()),
    );
    env.init(&config).await;
    // Items that predate auditing: only a snapshot knows them.
    write_versions(&env, &table, 7, 1, "before").await;
    // A slow run stopped by SIGTERM part way, then resumed: the interrupted
    // run signs what it wrote, and the resumed one continues its chains.
    let args = [
        "snapshot",
        "--config",
        path_str(&config),
        "--table",
        &table,
        "--segments",
        "2",
        "--page-size",
        "1",
        "--read-units-per-sec",
        "1",
    ];
    let mut first = env.command(&args);
    first
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = first.spawn().expect("spawn snapshot");
    // SIGTERM once the run has written an entry (at one read unit a second
    // it is far from done); if it ends first, the checks below show it.
    let deadline = std::time::Instant::now() + AUDIT_DEADLINE;
    while child.try_wait().expect("poll snapshot").is_none() {
        if !entry_items(&env, &audit, &table).await.is_empty() {
            unsafe { libc::kill(child.id().unwrap() as i32, libc::SIGTERM) };
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot wrote no entry within {AUDIT_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().await.expect("snapshot exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("interrupted"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let partial = entry_items(&env, &audit, &table).await.len();
    assert!(
        (1..7).contains(&partial),
        "{partial} entries after the interruption"
    );
    assert_intact(&env, &config, "an interrupted snapshot").await;
    let out = env.cli(&args).await;
    out.success();
    assert!(out.stdout.contains("(resumed)"), "{}", out.stdout);
    let entries = entry_items(&env, &audit, &table).await;
    assert_eq!(entries.len(), 7);
    for e in &entries {
        assert_eq!(s(e, "event"), "SNAPSHOT");
        assert!(e.contains_key("hash"), "{e:?}");
        assert!(s(e, "chain_shard").starts_with("segment-"), "{e:?}");
    }
    let digests = digest_items(&env, &audit).await;
    assert!(
        digests
            .iter()
            .any(|d| s(d, "digest").contains("\"final\":true")
                && s(d, "stream_arn").starts_with("snapshot:")),
        "a final digest of the run: {digests:?}"
    );
    let v = verify(&env, &config, &["--json"]).await;
    assert_eq!(v.code, Some(0), "{}", v.stdout);
    let summary = parse_json_lines(&v.json)
        .into_iter()
        .find(|l| l["summary"] == json!(true))
        .expect("summary line");
    assert_eq!(summary["entries"], json!(7), "{summary}");

    // Alter a SNAPSHOT entry's value.
    let target = entries
        .iter()
        .find(|e| s(e, "pk").contains("u3"))
        .unwrap()
        .clone();
    let mut altered = target.clone();
    let text = s(&target, "entry").replace("\"1000\"", "\"1\"");
    assert_ne!(text, s(&target, "entry"), "the value to alter is there");
    altered.insert("entry".into(), AttributeValue::S(text));
    put(&env, &audit, &altered).await;
    assert_tampered(
        &env,
        &config,
        "an altered SNAPSHOT entry",
        &["altered", "\"u3\"", &s(&target, "chain_shard")],
    )
    .await;
    put(&env, &audit, &target).await;
    assert_intact(&env, &config, "restoring the SNAPSHOT entry").await;

    // Delete one.
    delete(&env, &audit, &target).await;
    let v = verify(&env, &config, &[]).await;
    assert_eq!(v.code, Some(1), "{}", v.stdout);
    assert!(
        v.stdout.contains("deleted") || v.stdout.contains("truncated"),
        "{}",
        v.stdout
    );
    put(&env, &audit, &target).await;
    assert_intact(&env, &config, "restoring the deleted SNAPSHOT entry").await;

    // An item known only by its SNAPSHOT entry is provable offline too.
    let bundle = env.dir.path().join("u3.snapshot.proof.json");
    env.cli(&[
        "export",
        "--config",
        path_str(&config),
        "--table",
        &table,
        "--key",
        "pk=S:u3",
        "--key",
        "sk=N:1",
        "--proof",
        path_str(&bundle),
    ])
    .await
    .success();
    let out = std::process::Command::new(BIN)
        .args([
            "verify-bundle",
            path_str(&bundle),
            "--public-key",
            path_str(&public_file),
        ])
        .env_clear()
        .output()
        .expect("verify-bundle");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
