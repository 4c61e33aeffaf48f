//! End-to-end test harness: an emulator (moto's server from ./.venv on a free
//! port, or whatever `AWS_ENDPOINT_URL` points at), SDK clients for the test's
//! own writes, the `ddb-audit` binary run as a child process, a stream reader
//! that says what the stream really holds, and an independent JSON-Patch
//! applier for audit entries (the tests never trust the library's own).
//!
//! Every test gets a unique name prefix for its tables (source and the
//! daemon's own), so tests run in parallel against one shared endpoint too.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use base64::Engine as _;
use bigdecimal::BigDecimal;
use serde_json::{json, Map, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ddb-audit");
/// Any single CLI invocation (not `run`) must finish within this.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write may take to show up in `history` (generous: this is a
/// correctness test on a shared 2-core machine, not a latency assertion).
pub const AUDIT_DEADLINE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Emulator
// ---------------------------------------------------------------------------

/// The endpoint the tests talk to. Started moto servers are killed on drop.
pub struct Emulator {
    pub endpoint: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    child: Option<Child>,
    log: Option<PathBuf>,
    _dir: Option<tempfile::TempDir>,
}

impl Emulator {
    /// `AWS_ENDPOINT_URL` if set (LocalStack or anything else), else a fresh
    /// moto server from `<manifest>/.venv` on a free port.
    pub fn start() -> Emulator {
        if let Some(endpoint) = std::env::var("AWS_ENDPOINT_URL")
            .ok()
            .filter(|s| !s.trim().is_empty())
        {
            let env_or = |k: &str, d: &str| {
                std::env::var(k)
                    .ok()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| d.to_string())
            };
            return Emulator {
                endpoint,
                region: env_or("AWS_REGION", "us-east-1"),
                access_key: env_or("AWS_ACCESS_KEY_ID", "test"),
                secret_key: env_or("AWS_SECRET_ACCESS_KEY", "test"),
                child: None,
                log: None,
                _dir: None,
            };
        }
        let moto = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
        if !moto.exists() {
            panic!(
                "{} not found: run `make venv` first (the end-to-end tests need \
                 moto's server, or AWS_ENDPOINT_URL pointing at an emulator)",
                moto.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("ddb-audit-moto-")
            .tempdir()
            .expect("tempdir for moto");
        let log = dir.path().join("moto.log");
        // A port picked by the OS can be taken again between our probe and
        // moto's bind; retry a few times on a fresh one.
        let mut last_err = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let log_file = std::fs::File::create(&log).expect("moto log file");
            let mut child = Command::new(&moto)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("dup log"))
                .stderr(log_file)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", moto.display()));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().expect("try_wait moto") {
                    last_err = format!("moto_server exited with {status}: {}", tail(&log, 20));
                    break;
                }
                if http_answers(addr) {
                    return Emulator {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        region: "us-east-1".into(),
                        access_key: "testing".into(),
                        secret_key: "testing".into(),
                        child: Some(child),
                        log: Some(log),
                        _dir: Some(dir),
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "moto_server on port {port} did not answer within 60 s: {}",
                        tail(&log, 20)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("could not start moto_server: {last_err}");
    }

    pub fn is_moto(&self) -> bool {
        self.child.is_some()
    }

    /// The environment a child process needs to reach this endpoint, and
    /// nothing from the developer's own AWS setup.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", self.region.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(self.region.clone()))
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "ddb-audit-e2e",
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(conf)
    }

    pub fn streams(&self) -> aws_sdk_dynamodbstreams::Client {
        use aws_sdk_dynamodbstreams::config as c;
        let conf = aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(c::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(c::Region::new(self.region.clone()))
            .credentials_provider(c::Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "ddb-audit-e2e",
            ))
            .build();
        aws_sdk_dynamodbstreams::Client::from_conf(conf)
    }

    pub fn kms(&self) -> aws_sdk_kms::Client {
        use aws_sdk_kms::config as c;
        let conf = aws_sdk_kms::Config::builder()
            .behavior_version(c::BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(c::Region::new(self.region.clone()))
            .credentials_provider(c::Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "ddb-audit-e2e",
            ))
            .build();
        aws_sdk_kms::Client::from_conf(conf)
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                if let Some(log) = &self.log {
                    eprintln!("--- moto_server log (tail) ---\n{}", tail(log, 40));
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A plain HTTP request gets any status line back.
fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /moto-api/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && buf.starts_with(b"HTTP/"))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ---------------------------------------------------------------------------
// Per-test environment
// ---------------------------------------------------------------------------

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

    pub async fn table_exists(&self, name: &str) -> bool {
        self.ddb
            .describe_table()
            .table_name(name)
            .send()
            .await
            .is_ok()
    }

    // ---- the CLI -------------------------------------------------------

    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.args(args);
        for var in [
            "AWS_ENDPOINT_URL_DYNAMODB",
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
            "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ] {
            cmd.env_remove(var);
        }
        // No ~/.aws files of the developer's leak into the run.
        cmd.env("AWS_CONFIG_FILE", self.dir.path().join("no-aws-config"));
        cmd.env(
            "AWS_SHARED_CREDENTIALS_FILE",
            self.dir.path().join("no-aws-credentials"),
        );
        for (k, v) in self.emu.child_env() {
            cmd.env(k, v);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs `ddb-audit args…` to completion (bounded by [`CLI_TIMEOUT`]).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let child = cmd.spawn().expect("spawn ddb-audit");
        match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
            Ok(out) => {
                let out = out.expect("wait ddb-audit");
                CliOutput {
                    args: args.iter().map(|s| s.to_string()).collect(),
                    status: out.status,
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                }
            }
            Err(_) => panic!(
                "`ddb-audit {}` did not finish within {CLI_TIMEOUT:?}",
                args.join(" ")
            ),
        }
    }

    /// `ddb-audit init --config F`, which must succeed.
    /// The usual start of a daemon test: a source table with a
    /// NEW_AND_OLD_IMAGES stream, a config naming it, and `init` run.
    pub async fn audited_table(&self, base: &str) -> (String, PathBuf) {
        let table = self.name(base);
        self.create_stream_table(&table).await;
        let config = self.config(&[&table]);
        self.init(&config).await;
        (table, config)
    }

    pub async fn init(&self, config: &Path) {
        self.cli(&["init", "--config", path_str(config)])
            .await
            .success();
    }

    /// Starts `ddb-audit run --config F`, stderr to a log file in the tempdir.
    pub fn spawn_daemon(&self, config: &Path) -> Daemon {
        self.spawn_daemon_with_env(config, &[])
    }

    /// Like [`TestEnv::spawn_daemon`], with environment variables overridden
    /// (e.g. `AWS_ENDPOINT_URL` pointing at a fault-injecting proxy).
    pub fn spawn_daemon_with_env(&self, config: &Path, env: &[(&str, String)]) -> Daemon {
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.dir.path().join(format!("daemon-{n}.log"));
        let file = std::fs::File::create(&log).expect("daemon log");
        let mut cmd = self.command(&["run", "--config", path_str(config)]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(file.try_clone().expect("dup log")).stderr(file);
        let child = cmd.spawn().expect("spawn ddb-audit run");
        Daemon {
            child,
            log,
            exited: None,
        }
    }

    /// Starts `ddb-audit args…` (a long-running command such as `serve`)
    /// with extra environment variables, stderr to a log file in the tempdir.
    pub fn spawn_command(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let n = std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0);
        let log = self.dir.path().join(format!("{}-{n}.log", args[0]));
        let file = std::fs::File::create(&log).expect("command log");
        let mut cmd = self.command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdout(file.try_clone().expect("dup log")).stderr(file);
        let child = cmd.spawn().expect("spawn ddb-audit");
        Daemon {
            child,
            log,
            exited: None,
        }
    }

    /// `history --json` for one item: one JSON object per line.
    pub async fn history(&self, config: &Path, table: &str, keys: &[String]) -> Vec<Value> {
        let out = self.history_raw(config, table, keys, true).await;
        out.success();
        parse_json_lines(&out.stdout)
    }

    pub async fn history_raw(
        &self,
        config: &Path,
        table: &str,
        keys: &[String],
        json: bool,
    ) -> CliOutput {
        let mut args = vec!["history", "--config", path_str(config), "--table", table];
        for k in keys {
            args.push("--key");
            args.push(k);
        }
        if json {
            args.push("--json");
        }
        self.cli(&args).await
    }

    /// Polls `history --json` until `done` holds or [`AUDIT_DEADLINE`]
    /// passes (then panics with what it last saw).
    pub async fn wait_history(
        &self,
        config: &Path,
        table: &str,
        keys: &[String],
        what: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + AUDIT_DEADLINE;
        loop {
            let out = self.history_raw(config, table, keys, true).await;
            let last = if out.status.success() {
                let entries = parse_json_lines(&out.stdout);
                if done(&entries) {
                    return entries;
                }
                format!(
                    "{} entries: {:?}",
                    entries.len(),
                    entries
                        .iter()
                        .map(|e| e["sequence_number"].clone())
                        .collect::<Vec<_>>()
                )
            } else {
                format!("history failed: {}", out.stderr)
            };
            if Instant::now() > deadline {
                panic!(
                    "waited {AUDIT_DEADLINE:?} for {what} in history of {table} {keys:?}; last: {last}"
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    // ---- the stream, as the ground truth --------------------------------

    /// Every record the table's stream holds now (parents' shards first).
    pub async fn read_stream(&self, table: &str) -> Vec<StreamRec> {
        use aws_sdk_dynamodbstreams::types::ShardIteratorType;
        let desc = self
            .ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .expect("describe table");
        let arn = desc
            .table()
            .and_then(|t| t.latest_stream_arn())
            .expect("table has a stream")
            .to_string();
        let mut shards = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let d = self
                .streams
                .describe_stream()
                .stream_arn(&arn)
                .set_exclusive_start_shard_id(start.clone())
                .send()
                .await
                .expect("describe stream");
            let sd = d.stream_description().expect("stream description");
            for s in sd.shards() {
                shards.push((
                    s.shard_id().unwrap_or_default().to_string(),
                    s.parent_shard_id().map(str::to_string),
                ));
            }
            start = sd.last_evaluated_shard_id().map(str::to_string);
            if start.is_none() {
                break;
            }
        }
        // Parents before children (stable otherwise).
        let mut ordered: Vec<(String, Option<String>)> = Vec::new();
        while !shards.is_empty() {
            let before = shards.len();
            let known: Vec<String> = shards.iter().map(|s| s.0.clone()).collect();
            let (ready, rest): (Vec<_>, Vec<_>) = shards.into_iter().partition(|(_, p)| {
                p.as_ref()
                    .is_none_or(|p| !known.contains(p) || ordered.iter().any(|o| &o.0 == p))
            });
            shards = rest;
            ordered.extend(ready);
            assert!(shards.len() < before || shards.is_empty(), "shard cycle");
        }
        let mut out = Vec::new();
        for (shard_id, _) in ordered {
            let mut it = self
                .streams
                .get_shard_iterator()
                .stream_arn(&arn)
                .shard_id(&shard_id)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .expect("get shard iterator")
                .shard_iterator()
                .map(str::to_string);
            let mut empty_pages = 0;
            while let Some(iter) = it {
                let page = self
                    .streams
                    .get_records()
                    .shard_iterator(iter)
                    .send()
                    .await
                    .expect("get records");
                for r in page.records() {
                    let d = r.dynamodb().expect("record body");
                    out.push(StreamRec {
                        shard_id: shard_id.clone(),
                        sequence_number: d.sequence_number().unwrap_or_default().to_string(),
                        event: r
                            .event_name()
                            .map(|e| e.as_str().to_string())
                            .unwrap_or_default(),
                        keys: d.keys().map(streams_item_to_json).unwrap_or(json!({})),
                        old: d.old_image().map(streams_item_to_json),
                        new: d.new_image().map(streams_item_to_json),
                    });
                }
                // An open shard never ends: a few empty pages in a row mean
                // "caught up" (one alone may not, on a Kinesis-backed emulator).
                if page.records().is_empty() {
                    empty_pages += 1;
                    if empty_pages >= 3 {
                        break;
                    }
                } else {
                    empty_pages = 0;
                }
                it = page.next_shard_iterator().map(str::to_string);
            }
        }
        out
    }

    /// Reads the stream until it holds at least `n` records (emulators such
    /// as LocalStack deliver asynchronously); panics on more than `n`.
    pub async fn read_stream_exactly(&self, table: &str, n: usize) -> Vec<StreamRec> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let recs = self.read_stream(table).await;
            assert!(
                recs.len() <= n,
                "stream of {table} holds {} records, expected {n} (a no-op write?)",
                recs.len()
            );
            if recs.len() == n {
                return recs;
            }
            assert!(
                Instant::now() < deadline,
                "stream of {table} holds {} records after 60 s, expected {n}",
                recs.len()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
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

pub fn parse_json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("history --json line is not JSON ({e}): {l}"))
        })
        .collect()
}

/// `--key` arguments for an item key in DynamoDB JSON: `pk=S:item-1`.
pub fn key_args(key: &Value) -> Vec<String> {
    let mut out: Vec<String> = key
        .as_object()
        .expect("key map")
        .iter()
        .map(|(name, v)| {
            let (t, val) = v.as_object().unwrap().iter().next().unwrap();
            format!("{name}={t}:{}", val.as_str().expect("scalar key"))
        })
        .collect();
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// CLI output and the daemon
// ---------------------------------------------------------------------------

pub struct CliOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> &Self {
        assert!(
            self.status.success(),
            "`ddb-audit {}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts a non-zero exit whose stderr contains every one of `needles`.
    pub fn fails_naming(&self, needles: &[&str]) -> &Self {
        assert!(
            !self.status.success(),
            "`ddb-audit {}` should have failed but exited 0:\nstdout:\n{}\nstderr:\n{}",
            self.args.join(" "),
            self.stdout,
            self.stderr
        );
        assert!(
            self.status.code().is_some(),
            "`ddb-audit {}` should exit with an error code, not die by a signal ({})\nstderr:\n{}",
            self.args.join(" "),
            self.status,
            self.stderr
        );
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "`ddb-audit {}` stderr should mention {n:?}:\n{}",
                self.args.join(" "),
                self.stderr
            );
        }
        self
    }
}

/// A running `ddb-audit run`. Killed on drop; its log is printed when the
/// test is failing.
pub struct Daemon {
    child: tokio::process::Child,
    pub log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id().expect("daemon still running") as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a child we spawned and have not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM)
    }

    pub fn sigint(&self) {
        self.signal(libc::SIGINT)
    }

    /// SIGKILL and reap.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let status = self.child.wait().await.expect("wait daemon");
        self.exited = Some(status);
    }

    /// Waits up to `limit` for the daemon to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(s) => {
                let s = s.expect("wait daemon");
                self.exited = Some(s);
                Some(s)
            }
            Err(_) => None,
        }
    }

    /// Panics (with the log) if the daemon has exited on its own.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait daemon") {
            self.exited = Some(status);
            panic!(
                "ddb-audit run exited unexpectedly ({status}):\n{}",
                self.log_text()
            );
        }
    }

    /// The contract's graceful stop: still running, then SIGTERM → exit 0
    /// within 5 s (the log is shown if not).
    pub async fn stop_gracefully(&mut self) {
        self.assert_running();
        self.sigterm();
        let status = self.wait_exit(Duration::from_secs(5)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "SIGTERM: {status:?}\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- ddb-audit run log {} ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        if self.exited.is_none() {
            let _ = self.child.start_kill();
        }
    }
}

// ---------------------------------------------------------------------------
// DynamoDB JSON <-> SDK values
// ---------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

macro_rules! av_to_json {
    ($name:ident, $av:path) => {
        pub fn $name(v: &$av) -> Value {
            use $av as A;
            match v {
                A::S(s) => json!({ "S": s }),
                A::N(n) => json!({ "N": n }),
                A::B(b) => json!({ "B": b64(b.as_ref()) }),
                A::Bool(b) => json!({ "BOOL": b }),
                A::Null(b) => json!({ "NULL": b }),
                A::Ss(v) => json!({ "SS": v }),
                A::Ns(v) => json!({ "NS": v }),
                A::Bs(v) => json!({ "BS": v.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() }),
                A::L(v) => json!({ "L": v.iter().map($name).collect::<Vec<_>>() }),
                A::M(m) => {
                    let obj: Map<String, Value> =
                        m.iter().map(|(k, v)| (k.clone(), $name(v))).collect();
                    json!({ "M": obj })
                }
                other => panic!("unknown attribute value {other:?}"),
            }
        }
    };
}

av_to_json!(av_to_json, aws_sdk_dynamodb::types::AttributeValue);
av_to_json!(
    streams_av_to_json,
    aws_sdk_dynamodbstreams::types::AttributeValue
);

/// An item (attribute map) as DynamoDB JSON: `{"attr": {"S": ..}, ..}`.
pub fn item_to_json(item: &HashMap<String, AttributeValue>) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), av_to_json(v)))
            .collect(),
    )
}

fn streams_item_to_json(
    item: &HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>,
) -> Value {
    Value::Object(
        item.iter()
            .map(|(k, v)| (k.clone(), streams_av_to_json(v)))
            .collect(),
    )
}

pub fn json_to_av(v: &Value) -> AttributeValue {
    use aws_sdk_dynamodb::primitives::Blob;
    let (t, x) = v
        .as_object()
        .and_then(|o| o.iter().next())
        .unwrap_or_else(|| panic!("not DynamoDB JSON: {v}"));
    let strs = |x: &Value| -> Vec<String> {
        x.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let unb64 = |s: &str| {
        Blob::new(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .expect("base64"),
        )
    };
    match t.as_str() {
        "S" => AttributeValue::S(x.as_str().unwrap().into()),
        "N" => AttributeValue::N(x.as_str().unwrap().into()),
        "B" => AttributeValue::B(unb64(x.as_str().unwrap())),
        "BOOL" => AttributeValue::Bool(x.as_bool().unwrap()),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(strs(x)),
        "NS" => AttributeValue::Ns(strs(x)),
        "BS" => AttributeValue::Bs(strs(x).iter().map(|s| unb64(s)).collect()),
        "L" => AttributeValue::L(x.as_array().unwrap().iter().map(json_to_av).collect()),
        "M" => AttributeValue::M(
            x.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), json_to_av(v)))
                .collect(),
        ),
        other => panic!("unknown DynamoDB JSON type {other}"),
    }
}

/// An item in DynamoDB JSON to an SDK attribute map.
pub fn json_to_item(item: &Value) -> HashMap<String, AttributeValue> {
    item.as_object()
        .expect("item map")
        .iter()
        .map(|(k, v)| (k.clone(), json_to_av(v)))
        .collect()
}

// ---------------------------------------------------------------------------
// Stream records and entry checks
// ---------------------------------------------------------------------------

/// One stream record, values in DynamoDB JSON.
#[derive(Clone, Debug)]
pub struct StreamRec {
    pub shard_id: String,
    pub sequence_number: String,
    pub event: String,
    pub keys: Value,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// A canonical string for an item key (object keys sorted by serde_json).
pub fn key_id(key: &Value) -> String {
    let sorted: BTreeMap<&String, &Value> = key.as_object().expect("key map").iter().collect();
    serde_json::to_string(&sorted).unwrap()
}

/// Stream records grouped by item key, in stream order.
pub fn by_item(recs: &[StreamRec]) -> BTreeMap<String, Vec<StreamRec>> {
    let mut m: BTreeMap<String, Vec<StreamRec>> = BTreeMap::new();
    for r in recs {
        m.entry(key_id(&r.keys)).or_default().push(r.clone());
    }
    m
}

/// Checks one item's history against the stream records for that item and
/// the item the table holds now:
/// - the same sequence numbers in the same (stream) order: none lost, none
///   doubled;
/// - per entry: table, key, event, shard, actor (`updated_by` of the new
///   image), `actor_source`, `last_writer` (the old image's, when the new
///   image has none), no TTL mark; its changes applied to the record's
///   old image give the record's new image;
/// - all changes applied in order from nothing give `current`.
pub fn check_item_history(
    table: &str,
    entries: &[Value],
    recs: &[StreamRec],
    current: Option<&Value>,
) {
    let got: Vec<&str> = entries
        .iter()
        .map(|e| {
            e["sequence_number"]
                .as_str()
                .expect("sequence_number string")
        })
        .collect();
    let want: Vec<&str> = recs.iter().map(|r| r.sequence_number.as_str()).collect();
    assert_eq!(
        got,
        want,
        "history sequence numbers differ from the stream's for {table} {}",
        recs.first().map(|r| key_id(&r.keys)).unwrap_or_default()
    );
    let mut state: Option<Value> = None;
    for (e, r) in entries.iter().zip(recs) {
        let ctx = format!("entry {}", serde_json::to_string(e).unwrap());
        assert_eq!(e["table"], json!(table), "{ctx}: table");
        assert_eq!(key_id(&e["key"]), key_id(&r.keys), "{ctx}: key");
        assert_eq!(e["event"], json!(r.event), "{ctx}: event");
        assert_eq!(e["shard_id"], json!(r.shard_id), "{ctx}: shard_id");
        let t = e["event_time"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: event_time"));
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap_or_else(|err| panic!("{ctx}: event_time {t:?} not RFC 3339: {err}"));
        let actor_of = |img: &Option<Value>| {
            img.as_ref()
                .and_then(|i| i.get("updated_by"))
                .and_then(|a| a.get("S"))
                .cloned()
        };
        // Provenance: the actor only from the new image; a REMOVE's (or an
        // attribute-dropping MODIFY's) old value is the last writer, never
        // the actor; an attribute the write left as it was is marked so.
        let (new_actor, old_actor) = (actor_of(&r.new), actor_of(&r.old));
        let want_source = match (&new_actor, &old_actor) {
            (Some(n), Some(o)) if r.event == "MODIFY" && n == o => json!("item-unchanged"),
            (Some(_), _) => json!("item"),
            (None, _) => Value::Null,
        };
        assert_eq!(
            e["actor"],
            new_actor.clone().unwrap_or(Value::Null),
            "{ctx}: actor"
        );
        assert_eq!(e["actor_source"], want_source, "{ctx}: actor_source");
        let want_last = if new_actor.is_none() {
            old_actor.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        assert_eq!(
            e.get("last_writer").cloned().unwrap_or(Value::Null),
            want_last,
            "{ctx}: last_writer"
        );
        assert!(
            matches!(e.get("ttl_expiry"), None | Some(Value::Bool(false))),
            "{ctx}: no user write is a TTL expiry"
        );
        let changes = e["changes"]
            .as_array()
            .unwrap_or_else(|| panic!("{ctx}: changes array"));
        match r.event.as_str() {
            "INSERT" | "REMOVE" => {
                for c in changes {
                    let p = c["path"].as_str().unwrap_or_default();
                    assert!(
                        !p.contains('.') && !p.contains('['),
                        "{ctx}: INSERT/REMOVE change one top-level attribute each"
                    );
                }
            }
            _ => {}
        }

        // The entry alone: old image + changes == new image.
        let mut img = Some(r.old.clone().unwrap_or(json!({})));
        apply_entry(&mut img, changes).unwrap_or_else(|err| panic!("{ctx}: {err}"));
        assert_images_eq(img.as_ref(), r.new.as_ref(), &ctx);

        // The chain from nothing.
        apply_entry(&mut state, changes)
            .unwrap_or_else(|err| panic!("{ctx} (replaying from nothing): {err}"));
        assert_images_eq(state.as_ref(), r.new.as_ref(), &format!("{ctx} (replay)"));
    }
    assert_images_eq(
        state.as_ref(),
        current,
        &format!("replaying every entry of {table} vs the table's item now"),
    );
}

fn assert_images_eq(got: Option<&Value>, want: Option<&Value>, ctx: &str) {
    let empty = json!({});
    let norm = |v: Option<&Value>| v.filter(|v| v != &&empty).cloned();
    let (g, w) = (norm(got), norm(want));
    let same = match (&g, &w) {
        (None, None) => true,
        (Some(a), Some(b)) => dyn_eq(&json!({ "M": a }), &json!({ "M": b })),
        _ => false,
    };
    assert!(
        same,
        "{ctx}:\n  rebuilt: {}\n  expected: {}",
        g.map(|v| v.to_string()).unwrap_or("nothing".into()),
        w.map(|v| v.to_string()).unwrap_or("nothing".into())
    );
}

// ---------------------------------------------------------------------------
// Patch application (independent of the library)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Name(String),
    Index(usize),
}

/// `a.b[2].c` → [Name a, Name b, Index 2, Name c].
pub fn parse_path(path: &str) -> Result<Vec<Seg>, String> {
    let mut segs = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err(format!("bad path {path:?}"));
        }
        segs.push(Seg::Name(name.to_string()));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or(format!("bad path {path:?}"))?;
            let idx: usize = rest[1..close]
                .parse()
                .map_err(|_| format!("bad index in path {path:?}"))?;
            segs.push(Seg::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("bad path {path:?}"));
            }
        }
    }
    Ok(segs)
}

/// Applies an entry's changes, in order, to an item image (`None` = no
/// item; an item left with no attributes becomes `None`).
pub fn apply_entry(state: &mut Option<Value>, changes: &[Value]) -> Result<(), String> {
    let mut root = json!({ "M": state.take().unwrap_or(json!({})) });
    for c in changes {
        apply_change(&mut root, c)?;
    }
    let attrs = root["M"].take();
    *state = if attrs.as_object().is_some_and(|m| m.is_empty()) {
        None
    } else {
        Some(attrs)
    };
    Ok(())
}

/// One change, RFC 6902 style: no `old` = add (insert at a list index),
/// no `new` = remove (a list shifts), both = replace. `old` must match what
/// is there; set `added`/`removed` must be `new − old` / `old − new`.
pub fn apply_change(root: &mut Value, c: &Value) -> Result<(), String> {
    let path = c["path"]
        .as_str()
        .ok_or(format!("change without a path: {c}"))?;
    let segs = parse_path(path)?;
    let (last, parents) = segs.split_last().ok_or("empty path")?;
    let old = c.get("old");
    let new = c.get("new");
    check_set_delta(c, old, new)?;
    let mut cur: &mut Value = root;
    for s in parents {
        cur = match (s, typed_mut(cur)) {
            (Seg::Name(n), ("M", inner)) => inner
                .as_object_mut()
                .unwrap()
                .get_mut(n)
                .ok_or(format!("{path}: no attribute {n} on the way"))?,
            (Seg::Index(i), ("L", inner)) => inner
                .as_array_mut()
                .unwrap()
                .get_mut(*i)
                .ok_or(format!("{path}: no index {i} on the way"))?,
            (s, (t, _)) => return Err(format!("{path}: {s:?} into a {t}")),
        };
    }
    let matches_old = |existing: Option<&Value>| -> Result<(), String> {
        match (existing, old) {
            (Some(e), Some(o)) if dyn_eq(e, o) => Ok(()),
            (Some(e), Some(o)) => Err(format!("{path}: old {o} but the value is {e}")),
            (None, Some(_)) => Err(format!("{path}: old given but nothing is there")),
            (Some(e), None) => Err(format!("{path}: add, but {e} is already there")),
            (None, None) => Ok(()),
        }
    };
    match (last, typed_mut(cur)) {
        (Seg::Name(n), ("M", inner)) => {
            let m = inner.as_object_mut().unwrap();
            matches_old(m.get(n))?;
            match new {
                Some(v) => {
                    m.insert(n.clone(), v.clone());
                }
                None if old.is_some() => {
                    m.remove(n);
                }
                None => return Err(format!("{path}: neither old nor new")),
            }
        }
        (Seg::Index(i), ("L", inner)) => {
            let l = inner.as_array_mut().unwrap();
            match (old, new) {
                (Some(_), Some(v)) => {
                    matches_old(l.get(*i))?;
                    l[*i] = v.clone();
                }
                (None, Some(v)) => {
                    if *i > l.len() {
                        return Err(format!("{path}: insert past the end ({})", l.len()));
                    }
                    l.insert(*i, v.clone());
                }
                (Some(_), None) => {
                    matches_old(l.get(*i))?;
                    l.remove(*i);
                }
                (None, None) => return Err(format!("{path}: neither old nor new")),
            }
        }
        (s, (t, _)) => return Err(format!("{path}: {s:?} into a {t}")),
    }
    Ok(())
}

fn typed_mut(v: &mut Value) -> (&'static str, &mut Value) {
    let obj = v.as_object_mut().expect("DynamoDB JSON value");
    let (t, inner) = obj.iter_mut().next().expect("typed value");
    let t: &'static str = match t.as_str() {
        "M" => "M",
        "L" => "L",
        "S" => "S",
        "N" => "N",
        "B" => "B",
        "BOOL" => "BOOL",
        "NULL" => "NULL",
        "SS" => "SS",
        "NS" => "NS",
        "BS" => "BS",
        _ => "?",
    };
    (t, inner)
}

fn type_of(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    if o.len() != 1 {
        return None;
    }
    o.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn set_elems(t: &str, v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let s = s.as_str().unwrap_or_default();
                    if t == "NS" {
                        dec_key(s)
                    } else {
                        s.to_string()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

fn dec_key(s: &str) -> String {
    BigDecimal::from_str(s)
        .map(|d| d.normalized().to_string())
        .unwrap_or_else(|_| format!("not-a-number:{s}"))
}

/// For a set replaced by a set, `added` = new − old and `removed` = old − new
/// (an absent list is empty). Where a whole set is added or removed the
/// lists are optional, but must be right when given.
fn check_set_delta(c: &Value, old: Option<&Value>, new: Option<&Value>) -> Result<(), String> {
    fn set_type(v: Option<&Value>) -> Option<(&str, &Value)> {
        v.and_then(type_of)
            .filter(|(t, _)| matches!(*t, "SS" | "NS" | "BS"))
    }
    let (o, n) = (set_type(old), set_type(new));
    let has_lists = c.get("added").is_some() || c.get("removed").is_some();
    let t = match (o, n) {
        (Some((a, _)), Some((b, _))) if a != b => return Ok(()), // a type change
        (Some((t, _)), Some(_)) => t,
        (Some((t, _)), None) if new.is_none() => t,
        (None, Some((t, _))) if old.is_none() => t,
        _ if has_lists => return Err(format!("added/removed on a non-set change: {c}")),
        _ => return Ok(()),
    };
    let whole = old.is_none() || new.is_none();
    if whole && !has_lists {
        return Ok(());
    }
    let elems = |x: Option<(&str, &Value)>| x.map(|(_, v)| set_elems(t, v)).unwrap_or_default();
    let (oe, ne) = (elems(o), elems(n));
    let want_added: Vec<String> = ne.iter().filter(|e| !oe.contains(e)).cloned().collect();
    let want_removed: Vec<String> = oe.iter().filter(|e| !ne.contains(e)).cloned().collect();
    let got = |k: &str| c.get(k).map(|v| set_elems(t, v)).unwrap_or_default();
    if got("added") != want_added || got("removed") != want_removed {
        return Err(format!(
            "set change {c}: expected added {want_added:?}, removed {want_removed:?}"
        ));
    }
    Ok(())
}

/// Equality of DynamoDB JSON values: numbers as decimals, sets unordered.
pub fn dyn_eq(a: &Value, b: &Value) -> bool {
    let (Some((ta, va)), Some((tb, vb))) = (type_of(a), type_of(b)) else {
        return false;
    };
    if ta != tb {
        return false;
    }
    match ta {
        "N" => match (va.as_str(), vb.as_str()) {
            (Some(x), Some(y)) => match (BigDecimal::from_str(x), BigDecimal::from_str(y)) {
                (Ok(x), Ok(y)) => x == y,
                _ => false,
            },
            _ => false,
        },
        "SS" | "NS" | "BS" => set_elems(ta, va) == set_elems(ta, vb),
        "L" => match (va.as_array(), vb.as_array()) {
            (Some(x), Some(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| dyn_eq(p, q)),
            _ => false,
        },
        "M" => match (va.as_object(), vb.as_object()) {
            (Some(x), Some(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| dyn_eq(v, w)))
            }
            _ => false,
        },
        _ => va == vb,
    }
}

// ---------------------------------------------------------------------------
// The daemon's observability listener
// ---------------------------------------------------------------------------

/// A free loopback address for `[observability] listen`.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// GET over a plain socket: (status, body), or None when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_get_with(addr, path, &[])
}

/// [`http_get`] with request headers (`("Authorization", "Bearer …")`).
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

pub fn venv_python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        py.exists(),
        "{} missing: run `make venv` first",
        py.display()
    );
    py
}

/// One parsed sample.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape of /metrics parsed by `prometheus_client` (tests/ops/parse_metrics.py).
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }
    pub fn table(&self, name: &str, table: &str) -> f64 {
        self.get(name, &[("table", table)])
            .unwrap_or_else(|| panic!("no {name}{{table={table:?}}} in {:#?}", self.samples))
    }
}

pub fn scrape(addr: SocketAddr) -> Scrape {
    let (code, text) = http_get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200, "{text}");
    let mut child = std::process::Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ops/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("parse_metrics.py");
    assert!(
        out.status.success(),
        "prometheus_client rejected the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let samples = v["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap_or_default().to_string(),
            labels: s["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect();
    let types = v["types"]
        .as_object()
        .expect("types")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Scrape { samples, types }
}

// ---------------------------------------------------------------------------
// Browser tests (tests/browser/)
// ---------------------------------------------------------------------------

/// Where browser screenshots and timings go (kept after the test).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("serve-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The Python with Playwright (.venv) for tests/browser/, once Chromium is
/// known to be there.
pub fn browser_prerequisites() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    let has_playwright = std::process::Command::new(&python)
        .args(["-c", "import playwright"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_playwright,
        "Playwright for Python is not in .venv: run `make venv` (it is pinned in scripts/requirements.txt)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "the browser tests need Debian's Chromium at /usr/bin/chromium: run `sudo apt-get install -y chromium` \
         (`make test` does it when run as root)"
    );
    python
}
