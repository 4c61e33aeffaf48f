//! One test's world: an emulator, a tempdir, unique table names, SDK
//! clients, and the source tables the test writes to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType,
};
use serde_json::Value;

use super::{item_to_json, json_to_av, Emulator, AUDIT_DEADLINE};

/// One test's world: an emulator, a tempdir, unique names, SDK clients.
pub struct TestEnv {
    pub emu: Emulator,
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub ddb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
}

impl TestEnv {
    pub fn new(test_name: &str) -> TestEnv {
        let emu = Emulator::start();
        let dir = tempfile::Builder::new()
            .prefix(&format!("ddb-audit-{test_name}-"))
            .tempdir()
            .expect("tempdir");
        let prefix = format!("e2e-{test_name}-{:08x}", rand::random::<u32>());
        let ddb = emu.dynamodb();
        let streams = emu.streams();
        TestEnv {
            emu,
            dir,
            prefix,
            ddb,
            streams,
        }
    }

    /// A table name unique to this test.
    pub fn name(&self, base: &str) -> String {
        format!("{}-{base}", self.prefix)
    }

    /// The daemon's own tables for this test, as the `[storage]` section.
    pub fn storage_section(&self) -> String {
        format!(
            "[storage]\nstreams_table = \"{}\"\nshards_table = \"{}\"\naudit_table = \"{}\"\n",
            self.name("streams"),
            self.name("shards"),
            self.name("entries")
        )
    }

    /// A valid config auditing `tables`, actor from `updated_by`, the daemon's
    /// tables named uniquely for this test.
    pub fn config(&self, tables: &[&str]) -> PathBuf {
        let list: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
        let text = format!(
            "tables = [{}]\n\n[attribution]\nactor_attribute = \"updated_by\"\n\n{}",
            list.join(", "),
            self.storage_section()
        );
        self.write_file("config.toml", &text)
    }

    pub fn write_file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write file");
        path
    }

    /// A source table keyed `pk` (S) + `sk` (N); `stream` is its view type,
    /// `None` for no stream at all.
    pub async fn create_table(&self, name: &str, stream: Option<StreamViewType>) {
        let mut req = self
            .ddb
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr_def("pk", ScalarAttributeType::S))
            .attribute_definitions(attr_def("sk", ScalarAttributeType::N))
            .key_schema(key_elem("pk", KeyType::Hash))
            .key_schema(key_elem("sk", KeyType::Range));
        if let Some(view) = stream {
            req = req.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(view)
                    .build()
                    .expect("stream spec"),
            );
        }
        req.send()
            .await
            .unwrap_or_else(|e| panic!("create table {name}: {e:?}"));
        self.wait_table_active(name).await;
    }

    pub async fn create_stream_table(&self, name: &str) {
        self.create_table(name, Some(StreamViewType::NewAndOldImages))
            .await
    }

    pub async fn wait_table_active(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.ddb.describe_table().table_name(name).send().await;
            if let Ok(d) = d {
                let status = d.table().and_then(|t| t.table_status()).cloned();
                if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "table {name} not ACTIVE in 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Writes item `pk` (sort key 1) with a balance, as `actor` did.
    pub async fn put_balance(&self, table: &str, pk: &str, balance: u32, actor: &str) {
        let item = serde_json::json!({
            "pk": {"S": pk}, "sk": {"N": "1"},
            "balance": {"N": balance.to_string()}, "updated_by": {"S": actor},
        });
        self.ddb
            .put_item()
            .table_name(table)
            .set_item(Some(super::values::json_to_item(&item)))
            .send()
            .await
            .expect("put item");
    }

    pub async fn table_exists(&self, name: &str) -> bool {
        self.ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .is_ok()
    }

    /// Every item of `table` (consistent scan), DynamoDB JSON.
    pub async fn scan(&self, table: &str) -> Vec<Value> {
        let items = self
            .ddb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap_or_else(|e| panic!("scan {table}: {e:?}"));
        items.iter().map(item_to_json).collect()
    }

    // ---- the daemon's own tables, to wait on ----------------------------

    /// The daemon's checkpoint rows (its shards table) for `table`.
    pub async fn checkpoints(&self, table: &str) -> Vec<Value> {
        self.scan(&self.name("shards"))
            .await
            .into_iter()
            .filter(|row| row["table_name"]["S"] == table)
            .collect()
    }

    /// Waits until the daemon has checkpointed every record the stream of
    /// `table` holds now: each shard's checkpoint row is at the shard's last
    /// record. Every entry is then durably written, and a restart has
    /// nothing to read again.
    pub async fn wait_checkpointed(&self, table: &str) {
        // Shard → its last record (read_stream gives each shard in order).
        let last: BTreeMap<String, String> = self
            .read_stream(table)
            .await
            .into_iter()
            .map(|r| (r.shard_id, r.sequence_number))
            .collect();
        let deadline = Instant::now() + AUDIT_DEADLINE;
        loop {
            let rows = self.checkpoints(table).await;
            let at = |shard: &str| {
                rows.iter()
                    .find(|row| row["shard_id"]["S"] == shard)
                    .and_then(|row| row["sequence_no"]["S"].as_str())
                    .map(str::to_string)
            };
            let behind: Vec<String> = last
                .iter()
                .filter(|(shard, seq)| at(shard).as_ref() != Some(*seq))
                .map(|(shard, seq)| format!("{shard} at {:?}, last record {seq}", at(shard)))
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {AUDIT_DEADLINE:?} for the checkpoints of {table} to reach the \
                 stream's last records: {}",
                behind.join("; ")
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the daemon has written a heartbeat digest of `table` (not
    /// the final one a stop writes) whose shard chains hold at least
    /// `entries` entries: what is audited so far is checkpointed and signed
    /// while the daemon runs, before any stop.
    pub async fn wait_heartbeat_digest(&self, table: &str, entries: u64) {
        let deadline = Instant::now() + AUDIT_DEADLINE;
        loop {
            let covered = self
                .scan(&self.name("entries"))
                .await
                .iter()
                .filter(|item| {
                    item["pk"]["S"]
                        .as_str()
                        .is_some_and(|pk| pk.starts_with("#digests|"))
                        && item["table_name"]["S"] == table
                })
                .filter_map(|item| {
                    serde_json::from_str::<Value>(item["digest"]["S"].as_str()?).ok()
                })
                .filter(|digest| digest["final"] == Value::Bool(false))
                .map(|digest| {
                    digest["shards"]
                        .as_array()
                        .map(|heads| heads.iter().filter_map(|h| h["size"].as_u64()).sum())
                        .unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            if covered >= entries {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited {AUDIT_DEADLINE:?} for a heartbeat digest of {table} covering \
                 {entries} entries; the best covers {covered}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The item as the table holds it now (consistent read), DynamoDB JSON.
    pub async fn get_item(&self, table: &str, key: &Value) -> Option<Value> {
        let mut req = self.ddb.get_item().table_name(table).consistent_read(true);
        for (k, v) in key.as_object().expect("key map") {
            req = req.key(k, json_to_av(v));
        }
        let out = req.send().await.expect("get item");
        out.item().map(item_to_json)
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn attr_def(name: &str, t: ScalarAttributeType) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(t)
        .build()
        .expect("attribute definition")
}

fn key_elem(name: &str, t: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(t)
        .build()
        .expect("key schema")
}
