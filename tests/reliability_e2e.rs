//! End to end, the real binary against the emulator: one bad table among good
//! ones, start-up against an AWS that keeps failing (through a proxy that
//! answers DescribeTable of the audited table with a 500), and errors printed
//! once.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn one_bad_table_is_reported_and_the_good_ones_are_audited() {
    let env = TestEnv::new("badtable");
    let good = env.name("orders");
    env.create_stream_table(&good).await;
    let keys_only = env.name("keys-only");
    env.create_table(&keys_only, Some(StreamViewType::KeysOnly))
        .await;
    let config = env.config(&[&good, &keys_only]);
    env.init(&config).await;
    let mut daemon = env.spawn_daemon(&config);
    env.put_balance(&good, "u1", 1000, "alice").await;
    let key = vec!["pk=S:u1".to_string(), "sk=N:1".to_string()];
    env.wait_history(&config, &good, &key, "the good table's change", |e| {
        e.len() == 1
    })
    .await;
    daemon.assert_running();

    let status = env
        .cli(&["status", "--config", path_str(&config), "--json"])
        .await;
    status.success();
    let lines = parse_json_lines(&status.stdout);
    let table_line = |t: &str| {
        lines
            .iter()
            .find(|l| l["kind"] == "table" && l["table"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no status line for {t}: {}", status.stdout))
    };
    assert_eq!(table_line(&good)["state"], "auditing", "{}", status.stdout);
    let bad = table_line(&keys_only);
    assert_eq!(bad["state"], "failing", "{}", status.stdout);
    let reason = bad["state_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("KEYS_ONLY") && reason.contains("NEW_AND_OLD_IMAGES"),
        "{reason}"
    );
    let text = env.cli(&["status", "--config", path_str(&config)]).await;
    assert!(text.stdout.contains("; failing: "), "{}", text.stdout);
    assert!(
        daemon.log_text().contains("table cannot be audited"),
        "the failing table is logged loudly"
    );
    daemon.stop_gracefully().await;
}

/// A proxy to the emulator that answers DescribeTable of `table` with an
/// InternalServerError, as a service in trouble would; everything else goes
/// through. One upstream connection per request keeps it simple.
async fn failing_describe_table_proxy(upstream: String, table: String) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let failed = Arc::new(AtomicU64::new(0));
    let counter = failed.clone();
    let upstream = upstream
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let table = table.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let _ = serve_connection(client, &upstream, &table, &counter).await;
            });
        }
    });
    (format!("http://{addr}"), failed)
}

/// Reads one HTTP/1.1 message (head + Content-Length body) from `conn`.
async fn read_message(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            let total = end + 4 + length;
            while buf.len() < total {
                let mut chunk = [0u8; 16384];
                let n = conn.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(None);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(Some(buf.drain(..total).collect()));
        }
        let mut chunk = [0u8; 16384];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn serve_connection(
    mut client: TcpStream,
    upstream: &str,
    table: &str,
    failed: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(request) = read_message(&mut client, &mut buf).await? {
        let text = String::from_utf8_lossy(&request);
        let describe = text
            .to_ascii_lowercase()
            .contains("x-amz-target: dynamodb_20120810.describetable");
        if describe && text.contains(&format!("\"{table}\"")) {
            failed.fetch_add(1, Ordering::SeqCst);
            let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected by the test"}"#;
            let response = format!(
                "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes()).await?;
            continue;
        }
        let mut up = TcpStream::connect(upstream).await?;
        up.set_nodelay(true)?;
        up.write_all(&request).await?;
        let mut up_buf = Vec::new();
        match read_message(&mut up, &mut up_buf).await? {
            Some(response) => client.write_all(&response).await?,
            None => return Ok(()),
        }
    }
    Ok(())
}

#[tokio::test]
async fn sigterm_while_describe_table_fails_at_start_exits_zero_within_five_seconds() {
    let env = TestEnv::new("failstart");
    let (table, config) = env.audited_table("orders").await;
    let (proxy, failed) =
        failing_describe_table_proxy(env.emu.endpoint.clone(), table.clone()).await;
    let mut daemon = env.spawn_daemon_with_env(&config, &[("AWS_ENDPOINT_URL", proxy.clone())]);
    // Retrying, and saying so.
    let deadline = Instant::now() + Duration::from_secs(30);
    while failed.load(Ordering::SeqCst) < 3 || !daemon.log_text().contains("DescribeTable") {
        assert!(
            Instant::now() < deadline,
            "the daemon never retried DescribeTable through the proxy:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.assert_running();
    let t0 = Instant::now();
    daemon.sigterm();
    let status = daemon.wait_exit(Duration::from_secs(5)).await;
    assert!(
        status.is_some_and(|s| s.code() == Some(0)),
        "expected exit 0 within 5 s, got {status:?} after {:?}\n{}",
        t0.elapsed(),
        daemon.log_text()
    );
    assert!(
        daemon.log_text().contains("stopped"),
        "{}",
        daemon.log_text()
    );
}

#[tokio::test]
async fn a_missing_config_file_prints_its_os_error_once() {
    let env = TestEnv::new("oserr");
    let missing = env.dir.path().join("nope.toml");
    let out = env.cli(&["status", "--config", path_str(&missing)]).await;
    out.fails_naming(&["nope.toml", "No such file or directory"]);
    assert_eq!(
        out.stderr.matches("No such file or directory").count(),
        1,
        "{}",
        out.stderr
    );
}
