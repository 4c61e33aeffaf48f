//! `ddb-audit serve` end to end: the real binary (`run` and `serve`) against
//! the emulator, spoken to over HTTP, and the web page driven in headless
//! Chromium (Playwright for Python, tests/browser/serve_ui.py).

mod common;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The token in the config (as its digest) and the one in the environment.
const CONFIG_TOKEN: &str = "config-token-0123456789";
const ENV_TOKEN: &str = "env-token-abcdef";
/// `run` signs the digests; `serve` checks them with the public half alone.
const PRIVATE_PEM: &str = include_str!("../src/proof/testdata/ed25519-private.pem");
const PUBLIC_PEM: &str = include_str!("../src/proof/testdata/ed25519-public.pem");

struct Http {
    status: u16,
    headers: String,
    body: Value,
}

/// One plain HTTP/1.0 GET to the server under test.
fn get(port: u16, path: &str, token: Option<&str>) -> Http {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to serve");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Http {
        status,
        headers: head.to_ascii_lowercase(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An audited table, `run` auditing it, a config with a `[serve]` section.
struct World {
    env: TestEnv,
    table: String,
    config: PathBuf,
    port: u16,
    daemon: Daemon,
}

async fn world(name: &str) -> World {
    let env = TestEnv::new(name);
    let (table, config) = env.audited_table("accounts").await;
    let port = free_port();
    let digest = hex::encode(Sha256::digest(CONFIG_TOKEN.as_bytes()));
    let private = env.write_file("digest-key.pem", PRIVATE_PEM);
    let public = env.write_file("digest-key.pub.pem", PUBLIC_PEM);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[serve]\nlisten = \"127.0.0.1:{port}\"\ntoken_sha256 = [\"{digest}\"]\npage_size = 50\n\
         \n[proof]\nsigning_key_file = \"{}\"\npublic_key_file = \"{}\"\ndigest_interval_secs = 1\n",
        private.display(),
        public.display()
    ));
    std::fs::write(&config, text).unwrap();
    let daemon = env.spawn_daemon(&config);
    World {
        env,
        table,
        config,
        port,
        daemon,
    }
}

impl World {
    fn key(&self, pk: &str) -> Value {
        json!({"pk": {"S": pk}, "sk": {"N": "1"}})
    }

    async fn put(&self, pk: &str, balance: u32, who: &str) {
        let mut item = self.key(pk);
        item["balance"] = json!({"N": balance.to_string()});
        item["updated_by"] = json!({"S": who});
        // Long and never changed: collapsed in the page, and never listed as a change.
        item["notes"] = json!({"S": "lorem ipsum dolor sit amet ".repeat(12)});
        self.env
            .ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(json_to_item(&item)))
            .send()
            .await
            .expect("put item");
    }

    async fn wait_entries(&self, pk: &str, n: usize) -> Vec<Value> {
        let keys = key_args(&self.key(pk));
        self.env
            .wait_history(&self.config, &self.table, &keys, "entries", |e| {
                e.len() >= n
            })
            .await
    }

    fn serve(&self) -> Daemon {
        let serve = self.env.spawn_command(
            &["serve", "--config", path_str(&self.config)],
            &[("DDB_AUDIT_API_TOKENS", ENV_TOKEN)],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "serve did not listen within 30 s:\n{}",
                serve.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        serve
    }

    fn history_uri(&self, pk: &str, extra: &str) -> String {
        format!(
            "/api/history?table={}&key={}&key={}{extra}",
            enc(&self.table),
            enc(&format!("pk=S:{pk}")),
            enc("sk=N:1")
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_api_answers_only_known_tokens_and_pages_every_entry_once() {
    let mut w = world("serve-api").await;
    let n = 23;
    for i in 0..n {
        w.put("u2", 1000 - i, if i % 2 == 0 { "alice" } else { "bob" })
            .await;
    }
    let cli_entries = w.wait_entries("u2", n as usize).await;
    let mut serve = w.serve();
    let uri = w.history_uri("u2", "");

    // 401 without a token, with a wrong one, with the digest instead of the token.
    for token in [
        None,
        Some("wrong"),
        Some(&hex::encode(Sha256::digest(CONFIG_TOKEN.as_bytes()))[..]),
    ] {
        let r = get(w.port, &uri, token);
        assert_eq!(r.status, 401, "token {token:?}: {}", r.body);
        assert!(r.headers.contains("www-authenticate: bearer"));
    }
    // 200 with either accepted token; security headers on API and page.
    for token in [CONFIG_TOKEN, ENV_TOKEN] {
        let r = get(w.port, &uri, Some(token));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body["entries"].as_array().unwrap().len(),
            50.min(n as usize)
        );
    }
    let page = get(w.port, "/", None);
    assert_eq!(page.status, 200);
    for h in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
    ] {
        assert!(page.headers.contains(h), "missing {h}: {}", page.headers);
    }

    // Paging with cursors gives exactly what `history --json` gives, once each.
    for (order, page_size) in [("asc", 4), ("desc", 7)] {
        let mut got = Vec::new();
        let mut cursor = None::<String>;
        loop {
            let mut extra = format!("&order={order}&page_size={page_size}");
            if let Some(c) = &cursor {
                extra.push_str(&format!("&cursor={}", enc(c)));
            }
            let r = get(w.port, &w.history_uri("u2", &extra), Some(CONFIG_TOKEN));
            assert_eq!(r.status, 200, "{}", r.body);
            let entries = r.body["entries"].as_array().unwrap();
            assert!(entries.len() <= page_size);
            got.extend(entries.iter().cloned());
            match r.body["next"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        let mut want = cli_entries.clone();
        if order == "desc" {
            want.reverse();
        }
        assert_eq!(got, want, "order {order}: pages differ from history --json");
    }

    // The OpenAPI document: every path it lists answers, with a documented status.
    let doc = get(w.port, "/api/openapi.json", Some(ENV_TOKEN)).body;
    let paths = doc["paths"].as_object().expect("openapi paths");
    assert!(paths.contains_key("/api/history"));
    for (path, ops) in paths {
        let responses = &ops["get"]["responses"];
        assert_eq!(
            get(w.port, path, None).status,
            401,
            "{path} without a token"
        );
        let params = match path.as_str() {
            "/api/history" => uri.split_once('?').unwrap().1.to_string(),
            _ => format!("table={}", enc(&w.table)),
        };
        let wanted_params = ops["get"]["parameters"]
            .as_array()
            .is_some_and(|p| !p.is_empty());
        let full = if wanted_params {
            format!("{path}?{params}")
        } else {
            path.clone()
        };
        let r = get(w.port, &full, Some(CONFIG_TOKEN));
        assert!(
            r.status != 404 && responses.get(r.status.to_string()).is_some(),
            "{full}: {} is not among the documented answers: {}",
            r.status,
            r.body
        );
    }
    // The API and the CLI are two faces of the same library functions.
    let alice = get(
        w.port,
        &format!(
            "/api/query?table={}&actor=alice&page_size=1000",
            enc(&w.table)
        ),
        Some(CONFIG_TOKEN),
    );
    let cli = w
        .env
        .cli(&[
            "query",
            "--config",
            path_str(&w.config),
            "--table",
            &w.table,
            "--actor",
            "alice",
            "--json",
        ])
        .await;
    cli.success();
    assert_eq!(
        alice.body["entries"].as_array().unwrap(),
        &parse_json_lines(&cli.stdout)
    );
    assert_eq!(alice.body["entries"].as_array().unwrap().len(), 12);
    let at = cli_entries[5]["event_time"].as_str().unwrap();
    let shown = get(
        w.port,
        &format!(
            "/api/item?{}&at={}",
            uri.split_once('?').unwrap().1,
            enc(at)
        ),
        Some(CONFIG_TOKEN),
    );
    let mut args = vec![
        "show",
        "--config",
        path_str(&w.config),
        "--table",
        &w.table,
        "--at",
        at,
        "--json",
    ];
    let keys = key_args(&w.key("u2"));
    for k in &keys {
        args.extend(["--key", k]);
    }
    let cli = w.env.cli(&args).await;
    cli.success();
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body, parse_json_lines(&cli.stdout)[0]);

    // The trail checked through the API: what `verify` says, signatures
    // checked with the configured public key.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let verify_uri = format!("/api/verify?table={}", enc(&w.table));
    assert_eq!(get(w.port, &verify_uri, None).status, 401);
    let verified = get(w.port, &verify_uri, Some(CONFIG_TOKEN));
    assert_eq!(verified.status, 200, "{}", verified.body);
    let summary = &verified.body["summary"];
    assert_eq!(summary["status"], "intact", "{}", verified.body);
    assert_eq!(summary["exit_status"], 0);
    assert_eq!(summary["entries"], json!(n), "{}", verified.body);
    assert!(summary["digests"].as_u64().is_some_and(|d| d >= 1));
    let cli = w
        .env
        .cli(&[
            "verify",
            "--config",
            path_str(&w.config),
            "--table",
            &w.table,
            "--json",
        ])
        .await;
    cli.success();
    let cli_summary = parse_json_lines(&cli.stdout)
        .into_iter()
        .find(|l| l["summary"] == json!(true))
        .expect("verify --json prints a summary line");
    for field in ["status", "entries", "streams", "key_fingerprint"] {
        assert_eq!(summary[field], cli_summary[field], "{field}");
    }
    assert!(summary["key_fingerprint"]
        .as_str()
        .is_some_and(|k| k.starts_with("sha256:")));

    let status = get(w.port, "/api/status", Some(CONFIG_TOKEN)).body;
    assert_eq!(status["tables"][0]["table"], json!(w.table));
    assert!(status["tables"][0]["shards"]
        .as_array()
        .is_some_and(|s| !s.is_empty()));

    // SIGTERM: exit 0 within the grace time; the log names tokens, never shows them.
    serve.stop_gracefully().await;
    let log = serve.log_text();
    assert!(
        log.contains("token_sha256[0]") && log.contains("DDB_AUDIT_API_TOKENS[0]"),
        "{log}"
    );
    assert!(
        !log.contains(CONFIG_TOKEN) && !log.contains(ENV_TOKEN),
        "a token was logged"
    );
    w.daemon.stop_gracefully().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_web_page_in_chromium() {
    let python = browser_prerequisites();
    let mut w = world("serve-web").await;
    // The item the page is read on: an INSERT, then alice's MODIFY balance 1000 → 900.
    w.put("u1", 1000, "bob").await;
    w.wait_entries("u1", 1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    w.put("u1", 900, "alice").await;
    // A long history: 1,000 entries on one item, to time its rendering.
    for i in 0..1000u32 {
        w.put("long", 100_000 + i, "loadgen").await;
    }
    w.wait_entries("u1", 2).await;
    w.wait_entries("long", 1000).await;
    let mut serve = w.serve();
    let out = tokio::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/serve_ui.py"))
        .args(["--base", &format!("http://127.0.0.1:{}", w.port)])
        .args(["--token", ENV_TOKEN, "--table", &w.table])
        .arg("--artifacts")
        .arg(artifacts_dir())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), out)
        .await
        .expect("the browser test finished within 5 minutes")
        .expect("run the browser test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser test failed ({}):\n{stdout}\n{stderr}\n--- serve log ---\n{}",
        out.status,
        serve.log_text()
    );
    serve.stop_gracefully().await;
    w.daemon.stop_gracefully().await;
}
