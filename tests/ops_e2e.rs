//! Running ddb-audit as a service, end to end against the emulator: the
//! metrics (parsed by Prometheus' own Python parser), readiness and the
//! `healthcheck` exit codes, EMF lines, and the container contract on the
//! binary itself (PID 1, a non-root uid on a read-only root with no HOME,
//! the config in the environment, the health check as the engine runs it,
//! credentials from the ECS endpoint, SIGTERM).

mod common;
#[path = "ops/iam.rs"]
mod iam;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use common::*;
use serde_json::Value;

async fn put(env: &TestEnv, table: &str, pk: &str, sk: i64, balance: i64) {
    env.ddb
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.into()))
        .item("sk", AttributeValue::N(sk.to_string()))
        .item("balance", AttributeValue::N(balance.to_string()))
        .item("updated_by", AttributeValue::S("ops-test".into()))
        .send()
        .await
        .expect("put_item");
}

async fn delete(env: &TestEnv, table: &str, pk: &str, sk: i64) {
    env.ddb
        .delete_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::N(sk.to_string()))
        .send()
        .await
        .expect("delete_item");
}

fn observed_config(env: &TestEnv, tables: &[&str], listen: SocketAddr) -> String {
    let list: Vec<String> = tables.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "tables = [{}]\n\n[attribution]\nactor_attribute = \"updated_by\"\n\n{}\n\
         [polling]\nidle_poll_max_ms = 1000\nfull_listing_interval_secs = 2\n\n\
         [observability]\nlisten = \"{listen}\"\nemf = true\nemf_interval_secs = 1\n",
        list.join(", "),
        env.storage_section()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_lag_readiness_and_healthcheck_follow_a_known_workload() {
    let env = TestEnv::new("ops-metrics");
    let a = env.name("a");
    let b = env.name("b");
    env.create_stream_table(&a).await;
    env.create_stream_table(&b).await;
    let listen = free_addr();
    let config = env.write_file("config.toml", &observed_config(&env, &[&a, &b], listen));
    let cfg = path_str(&config);

    // No listener yet: healthcheck says so and fails.
    env.cli(&["healthcheck", "--config", cfg])
        .await
        .fails_naming(&["cannot reach", &listen.port().to_string()]);

    env.init(&config).await;
    let mut daemon = env.spawn_daemon(&config);
    wait_for("/readyz 200", Duration::from_secs(60), || {
        daemon.assert_running();
        http_get(listen, "/readyz").filter(|(c, _)| *c == 200)
    })
    .await;
    env.cli(&["healthcheck", "--config", cfg]).await.success();
    assert_eq!(http_get(listen, "/healthz").map(|r| r.0), Some(200));

    // Every series exists from the start, at 0.
    let s = scrape(listen);
    for t in [&a, &b] {
        for name in [
            "ddb_audit_records_read_total",
            "ddb_audit_entries_written_total",
            "ddb_audit_duplicates_total",
            "ddb_audit_gaps_total",
            "ddb_audit_failing_shards",
        ] {
            assert_eq!(s.table(name, t), 0.0, "{name} {t}");
        }
        assert_eq!(s.table("ddb_audit_table_ready", t), 1.0);
    }
    assert_eq!(
        s.types.get("ddb_audit_records_read").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        s.types.get("ddb_audit_lag_seconds").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        s.types
            .get("ddb_audit_entry_latency_seconds")
            .map(String::as_str),
        Some("histogram")
    );

    // The workload: 7 changes on a (inserts, modifies, a delete), 3 on b.
    put(&env, &a, "u1", 1, 1000).await;
    put(&env, &a, "u1", 1, 900).await;
    put(&env, &a, "u2", 1, 5).await;
    put(&env, &a, "u2", 1, 6).await;
    put(&env, &a, "u3", 1, 1).await;
    put(&env, &a, "u1", 1, 800).await;
    delete(&env, &a, "u3", 1).await;
    for i in 0..3 {
        put(&env, &b, "k", i, i).await;
    }
    // What the stream holds is the truth the counts must equal.
    assert_eq!(env.read_stream_exactly(&a, 7).await.len(), 7);
    assert_eq!(env.read_stream_exactly(&b, 3).await.len(), 3);

    let s = wait_for("all entries counted", AUDIT_DEADLINE, || {
        let s = scrape(listen);
        (s.table("ddb_audit_entries_written_total", &a) >= 7.0
            && s.table("ddb_audit_entries_written_total", &b) >= 3.0)
            .then_some(s)
    })
    .await;
    // Give a double count the time to show before checking exactness. A
    // fixed wait on purpose: it is for something that must not happen, so
    // there is no condition to poll for.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s2 = scrape(listen);
    for (t, n) in [(&a, 7.0), (&b, 3.0)] {
        assert_eq!(s2.table("ddb_audit_records_read_total", t), n, "{t}");
        assert_eq!(s2.table("ddb_audit_entries_written_total", t), n, "{t}");
        assert_eq!(s2.table("ddb_audit_duplicates_total", t), 0.0);
        assert_eq!(s2.table("ddb_audit_gaps_total", t), 0.0);
        assert_eq!(s2.table("ddb_audit_failing_shards", t), 0.0);
        assert_eq!(
            s2.get("ddb_audit_shards", &[("table", t), ("state", "reading")]),
            Some(1.0)
        );
        assert_eq!(
            s2.get("ddb_audit_entry_latency_seconds_count", &[("table", t)]),
            Some(n)
        );
    }
    assert!(s
        .get(
            "ddb_audit_stream_calls_total",
            &[("operation", "GetRecords"), ("outcome", "ok")]
        )
        .is_some_and(|v| v >= 2.0));
    assert!(s
        .get(
            "ddb_audit_stream_calls_total",
            &[("operation", "DescribeTable"), ("outcome", "ok")]
        )
        .is_some_and(|v| v >= 2.0));
    // The audit trail agrees with the counters.
    let hist = env
        .history(
            &config,
            &a,
            &key_args(&serde_json::json!({"pk": {"S": "u1"}, "sk": {"N": "1"}})),
        )
        .await;
    assert_eq!(hist.len(), 3);

    // Caught up: lag back to 0, and it stays there while nothing changes.
    wait_for("lag 0", Duration::from_secs(30), || {
        (scrape(listen).table("ddb_audit_lag_seconds", &a) == 0.0).then_some(())
    })
    .await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let s = scrape(listen);
        assert_eq!(s.table("ddb_audit_lag_seconds", &a), 0.0);
        assert_eq!(s.table("ddb_audit_lag_seconds", &b), 0.0);
    }

    // EMF: one line per table and interval; the increases add up to the counts.
    let emf: Vec<Value> = daemon
        .log_text()
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"_aws\""))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let sum = |t: &str, m: &str| -> f64 {
        emf.iter()
            .filter(|d| d["table"] == t)
            .map(|d| d[m].as_f64().unwrap_or(0.0))
            .sum()
    };
    assert_eq!(sum(&a, "ddb_audit_entries_written_total"), 7.0, "{emf:?}");
    assert_eq!(sum(&b, "ddb_audit_records_read_total"), 3.0);
    let doc = emf
        .iter()
        .find(|d| d["table"] == a.as_str())
        .expect("an EMF line for a");
    assert_eq!(
        doc["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "ddb-audit"
    );
    assert_eq!(
        doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0],
        "table"
    );

    // A table that can no longer be audited: named in /readyz (503) and in
    // the metrics; the other table is unaffected; healthcheck exits 1.
    env.ddb
        .delete_table()
        .table_name(&b)
        .send()
        .await
        .expect("delete b");
    let body = wait_for("/readyz 503", Duration::from_secs(60), || {
        http_get(listen, "/readyz")
            .filter(|(c, _)| *c == 503)
            .map(|r| r.1)
    })
    .await;
    let r: Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(r["ready"], false);
    let tables = r["tables"].as_array().expect("tables");
    let rb = tables
        .iter()
        .find(|t| t["table"] == b.as_str())
        .expect("b named");
    assert_eq!(rb["ready"], false);
    assert_eq!(rb["state"], "draining", "{body}");
    assert!(
        rb["reason"]
            .as_str()
            .is_some_and(|s| s.contains(&b) && s.contains("does not exist")),
        "{body}"
    );
    let ra = tables
        .iter()
        .find(|t| t["table"] == a.as_str())
        .expect("a named");
    assert_eq!(ra["ready"], true, "{body}");
    let s = scrape(listen);
    assert_eq!(s.table("ddb_audit_table_ready", &b), 0.0);
    assert_eq!(s.table("ddb_audit_table_ready", &a), 1.0);
    env.cli(&["healthcheck", "--config", cfg])
        .await
        .fails_naming(&[&b, "does not exist", "503"]);
    // Still alive, and still auditing a.
    assert_eq!(http_get(listen, "/healthz").map(|r| r.0), Some(200));
    put(&env, &a, "u9", 1, 9).await;
    wait_for("a still audited", AUDIT_DEADLINE, || {
        (scrape(listen).table("ddb_audit_entries_written_total", &a) == 8.0).then_some(())
    })
    .await;

    daemon.stop_gracefully().await;
    assert!(
        http_get(listen, "/healthz").is_none(),
        "the listener stops with the daemon"
    );
}

#[tokio::test]
async fn healthcheck_needs_a_listen_address() {
    let env = TestEnv::new("ops-hc");
    let config = env.write_file("c.toml", "tables = [\"orders\"]\n");
    // The error says what to set, and where: the config `run` is given.
    env.cli(&["healthcheck", "--config", path_str(&config)])
        .await
        .fails_naming(&[
            "[observability] listen",
            "listen = \"0.0.0.0:9090\"",
            "DDB_AUDIT_CONFIG_TOML",
        ]);
}

/// A stand-in for a ready daemon's listener: every request gets 200 and
/// `{"ready":true}`; the request lines are kept.
fn ready_listener() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            seen.lock()
                .unwrap()
                .push(request.lines().next().unwrap_or("").to_string());
            let body = "{\"ready\":true}";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, asked)
}

/// The image's HEALTHCHECK runs `ddb-audit healthcheck` with no arguments in
/// the container's environment: it must find the config however `run` is
/// given it there (a mounted file named by DDB_AUDIT_CONFIG, or the whole
/// TOML in DDB_AUDIT_CONFIG_TOML, as the stack's task definition does), and
/// with `listen = "0.0.0.0:PORT"` (what a container sets) ask loopback.
#[tokio::test]
async fn healthcheck_finds_the_config_however_the_container_gives_it() {
    let env = TestEnv::new("ops-hc-config");
    let (addr, asked) = ready_listener();
    let toml = format!(
        "tables = [\"orders\"]\n[observability]\nlisten = \"0.0.0.0:{}\"\n",
        addr.port()
    );
    let file = env.write_file("mounted.toml", &toml);
    let file = path_str(&file).to_string();
    let hc = |args: &[&str], var: Option<(&str, &str)>| {
        let mut cmd = env.command(args);
        cmd.env_remove("DDB_AUDIT_CONFIG")
            .env_remove("DDB_AUDIT_CONFIG_TOML");
        if let Some((k, v)) = var {
            cmd.env(k, v);
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        async move { cmd.output().await.expect("run healthcheck") }
    };
    for (how, args, var) in [
        (
            "--config FILE",
            vec!["healthcheck", "--config", file.as_str()],
            None,
        ),
        (
            "DDB_AUDIT_CONFIG",
            vec!["healthcheck"],
            Some(("DDB_AUDIT_CONFIG", file.as_str())),
        ),
        (
            "DDB_AUDIT_CONFIG_TOML",
            vec!["healthcheck"],
            Some(("DDB_AUDIT_CONFIG_TOML", toml.as_str())),
        ),
        (
            "DDB_AUDIT_CONFIG_TOML, --path /healthz",
            vec!["healthcheck", "--path", "/healthz"],
            Some(("DDB_AUDIT_CONFIG_TOML", toml.as_str())),
        ),
    ] {
        let out = hc(&args, var).await;
        assert!(
            out.status.success(),
            "healthcheck with the config in {how}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("\"ready\":true"),
            "healthcheck prints the answer ({how})"
        );
    }
    assert_eq!(
        *asked.lock().unwrap(),
        [
            "GET /readyz HTTP/1.1",
            "GET /readyz HTTP/1.1",
            "GET /readyz HTTP/1.1",
            "GET /healthz HTTP/1.1"
        ],
        "each asked the listener of the config it found"
    );

    // No config at all: the error names every way to give one.
    let out = hc(&["healthcheck"], None).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for needle in ["--config", "DDB_AUDIT_CONFIG ", "DDB_AUDIT_CONFIG_TOML"] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
    // A config from the environment without a listener: what to set.
    let out = hc(
        &["healthcheck"],
        Some(("DDB_AUDIT_CONFIG_TOML", "tables = [\"orders\"]\n")),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("[observability] listen") && err.contains("0.0.0.0:9090"),
        "{err}"
    );
}

/// A stand-in for the ECS container credentials endpoint: answers every
/// request with test credentials, counting the requests that carried the
/// expected authorization token.
fn credentials_endpoint(token: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            let authorized = request.contains(&format!("authorization: {token}"));
            let (status, body) = if authorized {
                count.fetch_add(1, Ordering::SeqCst);
                let expiry = (chrono::Utc::now() + chrono::Duration::hours(1))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                (
                    "200 OK",
                    format!(
                        "{{\"AccessKeyId\":\"ASIAECSTEST\",\"SecretAccessKey\":\"ecs-secret\",\
                         \"Token\":\"ecs-session\",\"Expiration\":\"{expiry}\"}}"
                    ),
                )
            } else {
                ("401 Unauthorized", "{}".to_string())
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, served)
}

/// The PID of unshare's forked child: the daemon, PID 1 in its namespace.
fn child_of(pid: u32) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_contract_pid1_nonroot_no_home_env_config_ecs_credentials() {
    // The test drives the container's own user switch and PID namespace,
    // which needs root; a run without it must fail loudly, not skip.
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (unshare --pid, setpriv); run it as root or in CI"
    );
    let env = TestEnv::new("ops-container");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    // The daemon's tables come from elsewhere (the stack); `init` runs here
    // only because the container's role may not create tables.
    let file_config = env.config(&[&table]);
    env.init(&file_config).await;
    let listen = free_addr();
    let toml = observed_config(&env, &[&table], listen);
    let (creds, served) = credentials_endpoint("ecs-token-123");

    // The binary must be readable by the unprivileged uid wherever it is.
    let bin_dir = tempfile::Builder::new()
        .prefix("ddb-audit-bin-")
        .tempdir()
        .expect("tempdir");
    let bin = bin_dir.path().join("ddb-audit");
    std::fs::copy(BIN, &bin).expect("copy binary");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let log = env.dir.path().join("container.log");
    let file = std::fs::File::create(&log).expect("log");
    // distroless' nonroot user: 65532. No HOME, cwd "/", nothing writable:
    // in its own mount namespace every filesystem but /proc, /sys and /dev
    // is remounted read-only (`docker run --read-only`, the task
    // definition's ReadonlyRootFilesystem), then the shell execs setpriv,
    // which execs the daemon: PID 1.
    let read_only_root = "\
        while read -r _ _ _ _ mp _; do \
          case \"$mp\" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) ;; \
            *) mount -o remount,bind,ro \"$mp\" 2>/dev/null ;; esac; \
        done < /proc/self/mountinfo; \
        exec setpriv --reuid=65532 --regid=65532 --clear-groups -- \"$@\"";
    // The container's environment: what `run` and the health check see.
    let container_env = [
        ("PATH", "/usr/bin:/bin".to_string()),
        ("AWS_ENDPOINT_URL", env.emu.endpoint.clone()),
        ("AWS_REGION", env.emu.region.clone()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("http://{creds}/v2/credentials/abc"),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN",
            "ecs-token-123".to_string(),
        ),
        ("DDB_AUDIT_CONFIG_TOML", toml.clone()),
        ("RUST_LOG", "info".to_string()),
    ];
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        read_only_root,
        "sh",
    ])
    .arg(&bin)
    .arg("run")
    .env_clear()
    .envs(container_env.iter().map(|(k, v)| (k, v)))
    .current_dir("/")
    .stdin(Stdio::null())
    .stdout(file.try_clone().expect("dup"))
    .stderr(file)
    .kill_on_drop(true);
    let mut child = cmd.spawn().expect("unshare");
    let show = |log: &Path| std::fs::read_to_string(log).unwrap_or_default();

    let ready = Instant::now() + Duration::from_secs(60);
    while http_get(listen, "/readyz").map(|r| r.0) != Some(200) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon exited ({status}):\n{}", show(&log));
        }
        assert!(Instant::now() < ready, "not ready in 60 s:\n{}", show(&log));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let daemon_pid = child_of(child.id().expect("unshare pid")).expect("the daemon under unshare");
    // setpriv's uid change clears unshare's --kill-child (PR_SET_PDEATHSIG),
    // so a failed assertion would leave the daemon running: kill it then.
    let mut guard = KillOnDrop(Some(daemon_pid));
    let status = std::fs::read_to_string(format!("/proc/{daemon_pid}/status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == "65532"),
        "{uid_line}"
    );
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        nspid.split_whitespace().last(),
        Some("1"),
        "PID 1 in its namespace: {nspid}"
    );

    // Its root is read-only (as every other filesystem it could write).
    let mounts =
        std::fs::read_to_string(format!("/proc/{daemon_pid}/mountinfo")).expect("mountinfo");
    let root = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .expect("the root mount");
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "root mounted read-only: {root:?}"
    );

    // The image's HEALTHCHECK, as the engine runs it: in the container's
    // namespaces, as its user, with its environment and no arguments (the
    // config from DDB_AUDIT_CONFIG_TOML); and the task definition's.
    for path in [None, Some("/healthz")] {
        let mut hc = tokio::process::Command::new("nsenter");
        hc.args(["--target", &daemon_pid.to_string(), "--mount", "--pid"])
            .args([
                "setpriv",
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
                "--",
            ])
            .arg(&bin)
            .arg("healthcheck");
        if let Some(p) = path {
            hc.args(["--path", p]);
        }
        let out = hc
            .env_clear()
            .envs(container_env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("nsenter");
        assert!(
            out.status.success(),
            "healthcheck {path:?} in the container: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    put(&env, &table, "c1", 1, 42).await;
    wait_for("the change audited", AUDIT_DEADLINE, || {
        (scrape(listen).table("ddb_audit_entries_written_total", &table) == 1.0).then_some(())
    })
    .await;
    assert!(
        served.load(Ordering::SeqCst) >= 1,
        "credentials came from the ECS endpoint"
    );
    let hist = env
        .history(
            &file_config,
            &table,
            &key_args(&serde_json::json!({"pk": {"S": "c1"}, "sk": {"N": "1"}})),
        )
        .await;
    assert_eq!(hist.len(), 1);

    // SIGTERM to PID 1 of the namespace: graceful, exit 0 within the grace.
    // SAFETY: kill(2) on the daemon process started by this test.
    assert_eq!(unsafe { libc::kill(daemon_pid, libc::SIGTERM) }, 0);
    let exited = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
    let status = exited
        .unwrap_or_else(|_| panic!("not stopped within 5 s:\n{}", show(&log)))
        .expect("wait");
    guard.0 = None;
    assert!(status.success(), "{status}:\n{}", show(&log));
    assert!(show(&log).contains("shutting down"), "{}", show(&log));
}

/// SIGKILL to a process when dropped (a test that panics), unless disarmed.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) on a process the test started and has not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[tokio::test]
async fn run_without_init_says_what_is_wrong_with_our_tables() {
    let env = TestEnv::new("ops-schema");
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    // Made by hand instead of by `init` or the stack: the shards table has
    // the wrong keys, the audit table a numeric sort key, the streams table
    // is missing.
    env.create_table(&env.name("shards"), None).await;
    env.create_table(&env.name("entries"), None).await;
    let config = env.config(&[&table]);
    let out = env.cli(&["run", "--config", path_str(&config)]).await;
    out.fails_naming(&[
        &format!(
            "table {} (`storage.streams_table`) does not exist",
            env.name("streams")
        ),
        "ddb-audit init",
        &format!(
            "table {} (`storage.shards_table`) has key schema [pk (HASH), sk (RANGE)]",
            env.name("shards")
        ),
        "stream_arn (HASH) + shard_id (RANGE)",
        &format!(
            "table {} (`storage.audit_table`): key attribute sk has type N",
            env.name("entries")
        ),
    ]);
}

/// `ddb-audit run` with only the given environment (and the emulator's).
fn spawn_run_with_env(env: &TestEnv, vars: &[(&str, &str)], log: &Path) -> tokio::process::Child {
    let file = std::fs::File::create(log).expect("log");
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("run")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .current_dir(env.dir.path())
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup"))
        .stderr(file)
        .kill_on_drop(true);
    for (k, v) in env.emu.child_env() {
        cmd.env(k, v);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn ddb-audit run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloudformation_stack_makes_tables_the_daemon_audits_into_without_init() {
    let env = TestEnv::new("ops-cfn");
    assert!(
        env.emu.is_moto(),
        "this test creates the stack in moto's CloudFormation; unset AWS_ENDPOINT_URL"
    );
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let out = tokio::process::Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ops/cfn_stack.py"))
        .args([&env.emu.endpoint, &env.prefix, &table, &env.prefix])
        .output()
        .await
        .expect("cfn_stack.py");
    assert!(
        out.status.success(),
        "cfn_stack.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    assert_eq!(r["status"], "CREATE_COMPLETE", "{r:#}");

    // The outputs the issue lists, naming what was made.
    let o = &r["outputs"];
    assert_eq!(o["StreamsTableName"], env.name("streams"));
    assert_eq!(o["ShardsTableName"], env.name("shards"));
    assert_eq!(o["AuditTableName"], env.name("entries"));
    assert!(o["TaskRoleArn"]
        .as_str()
        .is_some_and(|a| a.ends_with(&format!(":role/{}-task", env.prefix))));
    assert!(o["AuditorPolicyArn"]
        .as_str()
        .is_some_and(|a| a.contains(":policy/")));

    // The tables: ddb-audit's keys, deletion protection, the read side's indexes.
    let t = &r["tables"];
    let keys = |l: &str| t[l]["keys"].clone();
    assert_eq!(
        keys("StreamsTable"),
        serde_json::json!([["table_name", "HASH"], ["stream_arn", "RANGE"]])
    );
    assert_eq!(
        keys("ShardsTable"),
        serde_json::json!([["stream_arn", "HASH"], ["shard_id", "RANGE"]])
    );
    assert_eq!(
        keys("AuditTable"),
        serde_json::json!([["pk", "HASH"], ["sk", "RANGE"]])
    );
    for l in ["StreamsTable", "ShardsTable", "AuditTable"] {
        assert_eq!(t[l]["deletion_protection"], true, "{l}");
        assert_eq!(t[l]["billing"], "PAY_PER_REQUEST", "{l}");
    }
    assert_eq!(
        t["AuditTable"]["gsis"],
        serde_json::json!([
            "by-actor-time",
            "by-correlation-time",
            "by-principal-time",
            "by-table-time"
        ])
    );

    // The task role: the audited table and its streams, never CreateTable.
    let policies = r["task_policies"].as_object().expect("task policies");
    let text = serde_json::to_string(policies).expect("json");
    assert!(!text.contains("CreateTable"), "{text}");
    let table_arn = format!("arn:aws:dynamodb:us-east-1:123456789012:table/{table}");
    assert!(text.contains(&format!("\"{table_arn}\"")), "{text}");
    assert!(
        text.contains(&format!("\"{table_arn}/stream/*\"")),
        "{text}"
    );
    // The CloudTrail reader's S3 rights, and no other: list the trail's
    // AWSLogs/ and read its log files.
    let mut s3: Vec<(String, String, Value)> = Vec::new();
    for doc in policies.values() {
        for st in doc["Statement"].as_array().into_iter().flatten() {
            let actions: Vec<String> = match &st["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|a| a.as_str().map(String::from))
                    .collect(),
                _ => vec![],
            };
            for a in actions.into_iter().filter(|a| a.starts_with("s3:")) {
                assert_eq!(st["Effect"], "Allow", "{st}");
                s3.push((a, st["Resource"].to_string(), st["Condition"].clone()));
            }
        }
    }
    s3.sort_by(|a, b| a.0.cmp(&b.0));
    let bucket = format!("arn:aws:s3:::{}-trail", env.prefix);
    assert_eq!(
        s3,
        [
            (
                "s3:GetObject".to_string(),
                format!("\"{bucket}/AWSLogs/*\""),
                Value::Null
            ),
            (
                "s3:ListBucket".to_string(),
                format!("\"{bucket}\""),
                serde_json::json!({"StringLike": {"s3:prefix": "AWSLogs/*"}})
            ),
        ],
        "{text}"
    );
    // `snapshot` runs with the task role: Scan on the audited table itself,
    // and on nothing else of it (no stream, no index).
    let scans: Vec<&serde_json::Value> = policies
        .values()
        .filter_map(|doc| doc["Statement"].as_array())
        .flatten()
        .filter(|st| {
            st["Effect"] == "Allow"
                && (st["Action"] == "dynamodb:Scan"
                    || st["Action"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "dynamodb:Scan")))
        })
        .flat_map(|st| match &st["Resource"] {
            serde_json::Value::Array(a) => a.iter().collect::<Vec<_>>(),
            one => vec![one],
        })
        .filter(|res| res.as_str().is_some_and(|r| r.contains(&table_arn)))
        .collect();
    assert_eq!(scans, vec![&serde_json::json!(table_arn)], "{text}");
    assert_eq!(r["log_group"][format!("/ecs/{}", env.prefix)], 365);

    // The task definition: read-only root, non-root user, a stop timeout
    // above the 4 s grace, the health check through the binary, awslogs.
    let td = &r["task_definition"];
    assert_eq!(td["read_only_root"], true);
    assert_eq!(td["user"], "65532:65532");
    assert!(td["stop_timeout"].as_i64().is_some_and(|s| s > 4));
    assert_eq!(td["health_check"][1], "/usr/local/bin/ddb-audit");
    assert_eq!(td["health_check"][2], "healthcheck");
    assert_eq!(td["log_driver"], "awslogs");
    // Two replicas by default: they divide the streams, and one keeps
    // auditing while the other is replaced.
    assert_eq!(r["service"]["desired"], 2);
    // A deploy starts the new tasks before it stops the old ones.
    if !r["service"]["minimum_healthy_percent"].is_null() {
        assert_eq!(r["service"]["minimum_healthy_percent"], 100);
    }
    let alarms = r["template_alarms"].as_object().expect("alarms");
    let metrics: Vec<&str> = alarms
        .values()
        .filter_map(|a| a["metric"].as_str())
        .collect();
    for m in [
        "ddb_audit_lag_seconds",
        "ddb_audit_gaps_total",
        "ddb_audit_failing_shards",
        "ddb_audit_table_ready",
        "ddb_audit_streams_unowned",
    ] {
        assert!(metrics.contains(&m), "an alarm on {m}: {metrics:?}");
    }

    // The daemon, with the very config the task definition carries (only the
    // port moved to a free one) and no `init`, audits a change.
    let toml = td["env"]["DDB_AUDIT_CONFIG_TOML"]
        .as_str()
        .expect("config in env");
    assert!(
        toml.contains("[observability]\nlisten = \"0.0.0.0:9090\"\n"),
        "the task definition's config sets the listener its health check asks:\n{toml}"
    );
    let listen = free_addr();
    let toml = toml.replace("0.0.0.0:9090", &listen.to_string());
    let log = env.dir.path().join("stack-daemon.log");
    let mut child = spawn_run_with_env(&env, &[("DDB_AUDIT_CONFIG_TOML", &toml)], &log);
    let show = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(listen, "/readyz").map(|r| r.0) != Some(200) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon exited ({status}):\n{}", show());
        }
        assert!(Instant::now() < deadline, "not ready in 60 s:\n{}", show());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The task definition's health check command, with its environment.
    let hc: Vec<&str> = td["health_check"]
        .as_array()
        .expect("health check")
        .iter()
        .skip(2) // CMD, the binary
        .map(|a| a.as_str().expect("argument"))
        .collect();
    let mut cmd = env.command(&hc);
    let out = cmd
        .env_remove("DDB_AUDIT_CONFIG")
        .env("DDB_AUDIT_CONFIG_TOML", &toml)
        .output()
        .await
        .expect("healthcheck");
    assert!(
        out.status.success(),
        "the task definition's health check {hc:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    put(&env, &table, "s1", 1, 7).await;
    let config = env.config(&[&table]);
    let hist = env
        .wait_history(
            &config,
            &table,
            &key_args(&serde_json::json!({"pk": {"S": "s1"}, "sk": {"N": "1"}})),
            "the change",
            |h| !h.is_empty(),
        )
        .await;
    assert_eq!(hist.len(), 1);
    assert_eq!(
        hist[0]["actor"], "ops-test",
        "actor_attribute from the stack's config"
    );
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(
        unsafe { libc::kill(child.id().expect("pid") as i32, libc::SIGTERM) },
        0
    );
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exit within 5 s")
        .expect("wait");
    assert!(status.success(), "{status}:\n{}", show());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_that_cannot_be_audited_is_named_in_readyz_while_the_others_run() {
    let env = TestEnv::new("ops-bad");
    let good = env.name("good");
    let bad = env.name("keys-only");
    env.create_stream_table(&good).await;
    env.create_table(
        &bad,
        Some(aws_sdk_dynamodb::types::StreamViewType::KeysOnly),
    )
    .await;
    let listen = free_addr();
    let config = env.write_file(
        "config.toml",
        &observed_config(&env, &[&good, &bad], listen),
    );
    env.init(&config).await;
    let mut daemon = env.spawn_daemon(&config);
    let body = wait_for(
        "/readyz naming the bad table",
        Duration::from_secs(60),
        || {
            daemon.assert_running();
            let (code, body) = http_get(listen, "/readyz")?;
            let v: Value = serde_json::from_str(&body).ok()?;
            let tables = v["tables"].as_array()?;
            let good_ready = tables
                .iter()
                .any(|t| t["table"] == good.as_str() && t["ready"] == true);
            // Its first check may still be under way ("starting") on a
            // loaded machine: wait for its verdict, not only the good one's.
            let bad_judged = tables
                .iter()
                .any(|t| t["table"] == bad.as_str() && t["state"] != "starting");
            (code == 503 && good_ready && bad_judged).then_some(v)
        },
    )
    .await;
    let t = body["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["table"] == bad.as_str()))
        .cloned()
        .expect("the bad table named");
    assert_eq!(t["state"], "failing", "{body}");
    assert!(
        t["reason"]
            .as_str()
            .is_some_and(|r| r.contains("KEYS_ONLY") && r.contains("NEW_AND_OLD_IMAGES")),
        "{body}"
    );
    let s = scrape(listen);
    assert_eq!(s.table("ddb_audit_table_ready", &bad), 0.0);
    assert_eq!(s.table("ddb_audit_table_ready", &good), 1.0);
    env.cli(&["healthcheck", "--config", path_str(&config)])
        .await
        .fails_naming(&[&bad, "NEW_AND_OLD_IMAGES"]);
    // The good table is audited meanwhile.
    put(&env, &good, "g", 1, 1).await;
    wait_for("the good table audited", AUDIT_DEADLINE, || {
        (scrape(listen).table("ddb_audit_entries_written_total", &good) == 1.0).then_some(())
    })
    .await;
    daemon.stop_gracefully().await;
}

/// `tables` with a pattern: a table created after the start is audited
/// within the listing interval (short here) with no restart, an excluded
/// one never, nor the daemon's own tables, and a KEYS_ONLY one is named in
/// /readyz and `status` with the command that fixes it while the others are
/// audited; the listings are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_after_start_is_found_by_its_pattern_and_audited() {
    let env = TestEnv::new("ops-disc");
    let first = env.name("app-first");
    let later = env.name("app-later");
    let excluded = env.name("app-later-tmp");
    let keys_only = env.name("app-keys");
    env.create_stream_table(&first).await;
    let listen = free_addr();
    let text = format!(
        "tables = [\"{}-*\"]\nexclude_tables = [\"*-tmp\"]\n\n\
         [discovery]\ninterval_secs = 2\n\n\
         [attribution]\nactor_attribute = \"updated_by\"\n\n{}\n\
         [polling]\nidle_poll_max_ms = 1000\nfull_listing_interval_secs = 2\n\n\
         [observability]\nlisten = \"{listen}\"\n",
        env.prefix,
        env.storage_section()
    );
    let config = env.write_file("config.toml", &text);
    env.init(&config).await;
    let mut daemon = env.spawn_daemon(&config);
    let ready = |table: &str| {
        let (_, body) = http_get(listen, "/readyz")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        v["tables"]
            .as_array()?
            .iter()
            .find(|t| t["table"] == table)
            .cloned()
    };
    wait_for("the first table audited", Duration::from_secs(60), || {
        daemon.assert_running();
        ready(&first).filter(|t| t["ready"] == true)
    })
    .await;
    let created = Instant::now();
    env.create_stream_table(&later).await;
    env.create_stream_table(&excluded).await;
    env.create_table(
        &keys_only,
        Some(aws_sdk_dynamodb::types::StreamViewType::KeysOnly),
    )
    .await;
    put(&env, &later, "l", 1, 1).await;
    put(&env, &excluded, "x", 1, 1).await;
    wait_for("the later table audited", Duration::from_secs(60), || {
        daemon.assert_running();
        let written = scrape(listen).get("ddb_audit_entries_written_total", &[("table", &later)]);
        (written == Some(1.0)).then_some(())
    })
    .await;
    let took = created.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");
    let t = wait_for(
        "the KEYS_ONLY table judged",
        Duration::from_secs(60),
        || ready(&keys_only).filter(|t| t["state"] == "failing"),
    )
    .await;
    let reason = t["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("KEYS_ONLY")
            && reason.contains(&format!(
                "aws dynamodb update-table --table-name {keys_only} --stream-specification StreamEnabled=false"
            )),
        "{t}"
    );
    assert!(
        ready(&excluded).is_none(),
        "excluded tables are not reported"
    );
    // The pattern matches the daemon's own tables' names too: never audited.
    for own in ["streams", "shards", "entries"] {
        assert!(ready(&env.name(own)).is_none(), "{own} is ours");
    }
    // The others keep going.
    put(&env, &first, "f", 1, 1).await;
    wait_for("the first table still audited", AUDIT_DEADLINE, || {
        (scrape(listen).table("ddb_audit_entries_written_total", &first) == 1.0).then_some(())
    })
    .await;
    let s = scrape(listen);
    assert_eq!(
        s.get("ddb_audit_entries_written_total", &[("table", &excluded)]),
        None
    );
    let listings = s
        .get(
            "ddb_audit_stream_calls_total",
            &[("operation", "ListTables"), ("outcome", "ok")],
        )
        .unwrap_or(0.0);
    assert!(listings >= 2.0, "ListTables counted: {listings}");
    // `status` names the failing table with its fix too.
    let status = env.cli(&["status", "--config", path_str(&config)]).await;
    status.success();
    assert!(
        status.stdout.contains(&keys_only) && status.stdout.contains("update-table"),
        "{}",
        status.stdout
    );
    eprintln!("a table created after start audited after {took:?}");
    daemon.stop_gracefully().await;
}

/// A new user's typos and zero counts are errors that name the fix, never
/// an empty answer that reads as "no changes" or "intact".
#[tokio::test]
async fn a_table_name_typo_or_an_empty_trail_is_an_error_never_an_empty_answer() {
    let env = TestEnv::new("ops-typo");
    let (table, config) = env.audited_table("orders").await;
    let cfg = path_str(&config);
    let typo = format!("{table}x");

    // Reading a table neither selected nor audited.
    for args in [
        vec![
            "history", "--config", cfg, "--table", &typo, "--key", "pk=S:o1",
        ],
        vec![
            "show", "--config", cfg, "--table", &typo, "--key", "pk=S:o1", "--at", "1h",
        ],
        vec![
            "export",
            "--config",
            cfg,
            "--table",
            &typo,
            "--key",
            "pk=S:o1",
            "--proof",
            "/dev/null",
        ],
    ] {
        env.cli(&args).await.fails_naming(&[
            &format!("--table {typo}"),
            &format!("the config selects: {table}"),
            "tables with a trail: none",
        ]);
    }

    // verify: nothing to check is exit 2, with or without --table.
    let out = env
        .cli(&["verify", "--config", cfg, "--table", &typo])
        .await;
    out.fails_naming(&[
        "nothing to check",
        &format!("no audit trail for table `{typo}`"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let out = env.cli(&["verify", "--config", cfg]).await;
    out.fails_naming(&["nothing to check", &format!("the config selects: {table}")]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(!out.stdout.contains("intact"), "{}", out.stdout);

    // snapshot writes: only for a selected table.
    env.cli(&["snapshot", "--config", cfg, "--table", &typo])
        .await
        .fails_naming(&[
            "the config does not select this table",
            "add it to `tables`",
        ]);

    // One item at a time: a repeated key attribute would silently win.
    env.cli(&[
        "history", "--config", cfg, "--table", &table, "--key", "pk=S:o1", "--key", "pk=S:o2",
    ])
    .await
    .fails_naming(&["--key pk=S:o2", "`pk` is given twice"]);

    // `init | head -1`: a reader that goes away ends the output quietly.
    let mut init = env.command(&["init", "--config", cfg]);
    init.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = init.spawn().expect("spawn init");
    drop(child.stdout.take());
    let out = child.wait_with_output().await.expect("init");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "init panicked on a closed pipe:\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");

    // Zero counts would print nothing.
    let out = env
        .cli(&[
            "history", "--config", cfg, "--table", &table, "--key", "pk=S:o1", "--last", "0",
        ])
        .await;
    out.fails_naming(&["--last", "at least 1"]);
    let out = env.cli(&["query", "--config", cfg, "--limit", "0"]).await;
    out.fails_naming(&["--limit", "at least 1"]);
}

/// AWS setup errors teach: a missing region, missing credentials and a
/// wrong endpoint are each one error naming what to set or check, without
/// metadata-service noise.
#[tokio::test]
async fn aws_setup_errors_are_one_line_naming_the_fix() {
    let env = TestEnv::new("ops-region");
    let config = env.config(&[&env.name("orders")]);
    let mut cmd = env.command(&["gaps", "--config", path_str(&config)]);
    cmd.env_remove("AWS_REGION");
    cmd.env_remove("AWS_EC2_METADATA_DISABLED");
    let out = cmd.output().await.expect("run ddb-audit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("set AWS_REGION"), "{stderr}");
    assert!(
        !stderr.contains("IMDS"),
        "metadata-service noise:\n{stderr}"
    );
    assert!(!stderr.contains("transient"), "{stderr}");

    // No credentials anywhere: what to set, at once, not "transient".
    let mut cmd = env.command(&["gaps", "--config", path_str(&config)]);
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY");
    let out = cmd.output().await.expect("run ddb-audit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no AWS credentials found"), "{stderr}");
    assert!(stderr.contains("AWS_ACCESS_KEY_ID"), "{stderr}");
    assert!(!stderr.contains("transient"), "{stderr}");

    // A wrong endpoint: named, with what to check.
    let mut cmd = env.command(&["gaps", "--config", path_str(&config)]);
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:1");
    let out = cmd.output().await.expect("run ddb-audit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot connect to AWS_ENDPOINT_URL=http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        stderr.lines().filter(|l| l.starts_with("error")).count() == 1,
        "{stderr}"
    );
}

/// `ddb-audit.example.toml`, as shipped, is a config `init` and `run`
/// accept: it audits its table, answers its health check on its listen
/// address, and stops cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_config_runs_as_it_is() {
    let env = TestEnv::new("ops-example");
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/ddb-audit.example.toml"
    ))
    .expect("ddb-audit.example.toml");
    let config = env.write_file("ddb-audit.toml", &shipped);
    let cfg = path_str(&config);
    // The table it names, with the stream it asks for. An emulator shared
    // between runs (AWS_ENDPOINT_URL) may have it already.
    if !env.table_exists("orders").await {
        env.create_stream_table("orders").await;
    }
    env.init(&config).await;
    let listen: std::net::SocketAddr = "127.0.0.1:9090".parse().unwrap();
    assert!(
        std::net::TcpListener::bind(listen).is_ok(),
        "port 9090 (the example's [observability] listen) is taken on this machine"
    );
    let mut daemon = env.spawn_daemon(&config);
    wait_for(
        "/readyz 200 on the example's listen address",
        Duration::from_secs(60),
        || {
            daemon.assert_running();
            let (code, _) = http_get(listen, "/readyz")?;
            (code == 200).then_some(())
        },
    )
    .await;
    env.cli(&["healthcheck", "--config", cfg]).await.success();
    let pk = format!("example-{}", std::process::id());
    put(&env, "orders", &pk, 1, 10).await;
    let args = vec![format!("pk=S:{pk}"), "sk=N:1".to_string()];
    env.wait_history(&config, "orders", &args, "the change audited", |e| {
        e.last().is_some_and(|l| l["actor"] == "ops-test")
    })
    .await;
    daemon.stop_gracefully().await;
}

// ------------------------------------------------------------------ IAM

/// `ddb-audit args…` through `endpoint` (a recording proxy), to completion.
async fn cli_via(env: &TestEnv, endpoint: &str, args: &[&str], vars: &[(&str, &str)]) -> CliOutput {
    let mut cmd = env.command(args);
    cmd.env("AWS_ENDPOINT_URL", endpoint);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`ddb-audit {}` did not finish", args.join(" ")))
        .expect("ddb-audit");
    CliOutput {
        args: args.iter().map(|s| s.to_string()).collect(),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// An item write carrying an actor and a correlation id.
async fn put_as(env: &TestEnv, table: &str, pk: &str, balance: i64, actor: &str, request: &str) {
    env.ddb
        .put_item()
        .table_name(table)
        .item("pk", AttributeValue::S(pk.into()))
        .item("sk", AttributeValue::N("1".into()))
        .item("balance", AttributeValue::N(balance.to_string()))
        .item("updated_by", AttributeValue::S(actor.into()))
        .item("request_id", AttributeValue::S(request.into()))
        .send()
        .await
        .expect("put_item");
}

/// What IAM would say to every call each command makes: the commands of
/// each role run through the real binary, each role's requests through its
/// own recording proxy in front of moto (which checks no DynamoDB resource
/// itself), and every (action, resource) is evaluated against the shipped
/// policy files in `infra/`, placeholders filled in with this test's names.
/// Also: no role's policy lets it change an entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_each_command_makes_is_allowed_by_its_roles_policy_and_no_role_changes_an_entry()
{
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};
    use iam::{Decision, Policy, Recorder};

    let env = TestEnv::new("ops-iam");
    assert!(
        env.emu.is_moto(),
        "the policies are filled in with moto's account and region; unset AWS_ENDPOINT_URL"
    );
    let table = env.name("orders");
    env.create_stream_table(&table).await;
    let audit = env.name("entries");
    // An audit table made by an older version, without the read side's
    // indexes: `init` adds them (UpdateTable on the audit table).
    let def = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .unwrap()
    };
    env.ddb
        .create_table()
        .table_name(&audit)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(def("pk"))
        .attribute_definitions(def("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .expect("create the old audit table");
    env.wait_table_active(&audit).await;
    let kms_key = env
        .emu
        .kms()
        .create_key()
        .key_spec(KeySpec::EccNistP256)
        .key_usage(KeyUsageType::SignVerify)
        .send()
        .await
        .expect("CreateKey")
        .key_metadata()
        .expect("key")
        .arn()
        .expect("arn")
        .to_string();
    let serve_addr = free_addr();
    let config = env.write_file(
        "iam.toml",
        &format!(
            "tables = [\"{table}\"]\n\n[attribution]\nactor_attribute = \"updated_by\"\n\
             correlation_attribute = \"request_id\"\n\n{}\n\
             [polling]\nidle_poll_max_ms = 500\nfull_listing_interval_secs = 2\n\n\
             [retention]\ndays = 30\n\n\
             [proof]\nkms_key_id = \"{kms_key}\"\ndigest_interval_secs = 1\n\n\
             [serve]\nlisten = \"{serve_addr}\"\n",
            env.storage_section()
        ),
    );
    let cfg = path_str(&config);

    // One recording proxy per role.
    let init_rec = Recorder::start(&env.emu.endpoint).await;
    let daemon_rec = Recorder::start(&env.emu.endpoint).await;
    let auditor_rec = Recorder::start(&env.emu.endpoint).await;
    let verifier_rec = Recorder::start(&env.emu.endpoint).await;
    let mut ran: Vec<(String, CliOutput)> = Vec::new();

    // `init`.
    ran.push((
        "init".into(),
        cli_via(&env, &init_rec.endpoint, &["init", "--config", cfg], &[]).await,
    ));
    ran.last().unwrap().1.success();

    // The daemon: `run` through a few changes, then SIGTERM; `snapshot`.
    let mut daemon = env.spawn_daemon_with_env(
        &config,
        &[("AWS_ENDPOINT_URL", daemon_rec.endpoint.clone())],
    );
    put_as(&env, &table, "o1", 10, "alice", "req-1").await;
    put_as(&env, &table, "o2", 20, "bob", "req-2").await;
    let o1 = key_args(&serde_json::json!({"pk": {"S": "o1"}, "sk": {"N": "1"}}));
    env.wait_history(&config, &table, &o1, "o1's insert", |h| h.len() == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    put_as(&env, &table, "o1", 11, "carol", "req-3").await;
    delete(&env, &table, "o2", 1).await;
    env.wait_history(&config, &table, &o1, "o1's update", |h| h.len() == 2)
        .await;
    env.wait_checkpointed(&table).await;
    env.wait_heartbeat_digest(&table, 4).await;
    daemon.stop_gracefully().await;
    ran.push((
        "snapshot".into(),
        cli_via(
            &env,
            &daemon_rec.endpoint,
            &["snapshot", "--config", cfg, "--table", &table],
            &[],
        )
        .await,
    ));

    // The auditor's commands, and serve's API.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let proof = env.dir.path().join("o1.proof.json");
    let proof = path_str(&proof).to_string();
    let item = [
        "--config", cfg, "--table", &table, "--key", &o1[0], "--key", &o1[1],
    ];
    let auditor: Vec<Vec<&str>> = vec![
        [&["history"][..], &item[..]].concat(),
        vec!["query", "--config", cfg, "--table", &table],
        vec!["query", "--config", cfg, "--actor", "alice"],
        vec!["query", "--config", cfg, "--correlation", "req-3"],
        vec![
            "query", "--config", cfg, "--table", &table, "--event", "REMOVE", "--order", "desc",
        ],
        [&["show"][..], &item[..], &["--at", &now][..]].concat(),
        [
            &["diff"][..],
            &item[..],
            &["--from", &between, "--to", &now][..],
        ]
        .concat(),
        [
            &["revert"][..],
            &item[..],
            &["--to-time", &between, "--actor", "dana"][..],
        ]
        .concat(),
        vec!["gaps", "--config", cfg],
        vec!["status", "--config", cfg],
        vec![
            "export", "--config", cfg, "--table", &table, "--key", &o1[0], "--key", &o1[1],
            "--proof", &proof,
        ],
    ];
    for args in &auditor {
        let out = cli_via(&env, &auditor_rec.endpoint, args, &[]).await;
        ran.push((format!("auditor: {}", args[0]), out));
    }
    let token = "iam-test-token";
    let mut serve = env.spawn_command(
        &["serve", "--config", cfg],
        &[
            ("AWS_ENDPOINT_URL", &auditor_rec.endpoint),
            ("DDB_AUDIT_API_TOKENS", token),
        ],
    );
    let auth = format!("Bearer {token}");
    let q = |k: &str| k.replace('=', "%3D").replace(':', "%3A");
    let key_q = format!("table={table}&key={}&key={}", q(&o1[0]), q(&o1[1]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(serve_addr, "/").is_none() {
        assert!(
            Instant::now() < deadline,
            "serve did not listen:\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for path in [
        format!("/api/history?{key_q}"),
        format!("/api/query?table={table}"),
        "/api/query?actor=alice".to_string(),
        format!("/api/item?{key_q}&at={}", q(&now)),
        format!("/api/diff?{key_q}&from={}&to={}", q(&between), q(&now)),
        format!("/api/revert?{key_q}&to_time={}", q(&between)),
        "/api/gaps".to_string(),
        "/api/status".to_string(),
        "/api/verify".to_string(),
        "/api/whoami".to_string(),
    ] {
        let got = tokio::task::spawn_blocking({
            let auth = auth.clone();
            let path = path.clone();
            move || http_get_with(serve_addr, &path, &[("Authorization", &auth)])
        })
        .await
        .unwrap();
        assert_eq!(
            got.as_ref().map(|g| g.0),
            Some(200),
            "serve {path}: {got:?}\n{}",
            serve.log_text()
        );
    }
    serve.stop_gracefully().await;

    // The verifier's.
    for args in [
        vec!["verify", "--config", cfg],
        vec![
            "export", "--config", cfg, "--table", &table, "--key", &o1[0], "--key", &o1[1],
            "--proof", &proof,
        ],
        vec!["public-key", "--config", cfg],
    ] {
        let out = cli_via(&env, &verifier_rec.endpoint, &args, &[]).await;
        ran.push((format!("verifier: {}", args[0]), out));
    }
    for (_, out) in &ran {
        out.success();
    }

    // The policies, filled in as a deployment would.
    let stack = env.prefix.clone();
    let fill: Vec<(String, String)> = vec![
        ("DIGEST_KEY_ARN".into(), kms_key.clone()),
        ("REGION".into(), iam::REGION.into()),
        ("ACCOUNT".into(), iam::ACCOUNT.into()),
        ("STACK".into(), stack.clone()),
        ("AUDITED_TABLE".into(), table.clone()),
        (
            "table/ddb-audit-streams".into(),
            format!("table/{}", env.name("streams")),
        ),
        (
            "table/ddb-audit-shards".into(),
            format!("table/{}", env.name("shards")),
        ),
        ("table/ddb-audit-entries".into(), format!("table/{audit}")),
    ];
    let fill: Vec<(&str, &str)> = fill.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let load = |n: &str| iam::load(n, &fill);
    let resource_policies = vec![
        load("audit-table-resource-policy.json"),
        load("streams-table-resource-policy.json"),
        load("shards-table-resource-policy.json"),
    ];
    let role = |name: &str| format!("arn:aws:iam::{}:role/{name}", iam::ACCOUNT);
    // (role, its policy, the proxies its commands went through).
    let roles: Vec<(&str, Policy, Vec<&Recorder>)> = vec![
        // `init` runs before any resource policy is attached (the stack
        // makes its tables itself and never runs it).
        (
            "init (init-policy.json)",
            Policy {
                principal: role(&format!("{stack}-init")),
                identity: vec![load("init-policy.json")],
                resource: vec![],
            },
            vec![&init_rec],
        ),
        (
            "daemon: run, snapshot (daemon-policy.json = the stack's task role)",
            Policy {
                principal: role(&format!("{stack}-task")),
                identity: vec![load("daemon-policy.json")],
                resource: resource_policies.clone(),
            },
            vec![&daemon_rec],
        ),
        (
            "auditor (auditor-policy.json)",
            Policy {
                principal: role("auditor"),
                identity: vec![load("auditor-policy.json")],
                resource: resource_policies.clone(),
            },
            vec![&auditor_rec],
        ),
        (
            "verifier (verifier-policy.json)",
            Policy {
                principal: role("verifier"),
                identity: vec![load("verifier-policy.json")],
                resource: resource_policies.clone(),
            },
            vec![&verifier_rec],
        ),
    ];

    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (name, _, recorders) in &roles {
        let calls: Vec<iam::Call> = recorders.iter().flat_map(|r| r.calls()).collect();
        assert!(!calls.is_empty(), "{name}: no request was recorded");
        for c in &calls {
            if c.status >= 500 || c.status == 0 {
                problems.push(format!(
                    "{name}: {} {:?}: the emulator answered {}",
                    c.action, c.resources, c.status
                ));
            }
            for r in &c.resources {
                seen.insert((name.to_string(), c.action.clone(), r.clone()));
            }
            if c.resources.is_empty() {
                problems.push(format!(
                    "{name}: {} with no resource this test knows",
                    c.action
                ));
            }
        }
    }
    for (name, action, resource) in &seen {
        let (_, policy, _) = roles.iter().find(|r| r.0 == name).unwrap();
        match policy.decide(action, resource) {
            Decision::Allowed(_) => {}
            other => problems.push(format!("{name}: {action} on {resource}: {other:?}")),
        }
    }
    // The calls that show the recording works.
    let audit_arn = format!(
        "arn:aws:dynamodb:{}:{}:table/{audit}",
        iam::REGION,
        iam::ACCOUNT
    );
    let saw = |role: &str, action: &str, res: &str| {
        seen.iter()
            .any(|(n, a, r)| n.starts_with(role) && a == action && r.starts_with(res))
    };
    assert!(saw("init", "dynamodb:UpdateTable", &audit_arn), "{seen:#?}");
    assert!(
        saw("init", "dynamodb:CreateTable", "arn:aws:dynamodb"),
        "{seen:#?}"
    );
    assert!(
        saw(
            "daemon",
            "dynamodb:GetRecords",
            &format!(
                "arn:aws:dynamodb:{}:{}:table/{table}/stream/",
                iam::REGION,
                iam::ACCOUNT
            )
        ),
        "{seen:#?}"
    );
    assert!(saw("daemon", "dynamodb:PutItem", &audit_arn), "{seen:#?}");
    assert!(saw("daemon", "kms:Sign", &kms_key), "{seen:#?}");
    assert!(
        saw("auditor", "dynamodb:Query", &format!("{audit_arn}/index/")),
        "{seen:#?}"
    );
    assert!(saw("verifier", "dynamodb:Scan", &audit_arn), "{seen:#?}");

    // No role's own policy lets it change an entry (whatever else is
    // attached to the role: an explicit Deny), nor the running daemon
    // change the audit table's settings.
    let never = [
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
        "dynamodb:PartiQLUpdate",
        "dynamodb:PartiQLDelete",
        "dynamodb:DeleteTable",
        "dynamodb:RestoreTableFromBackup",
        "dynamodb:ImportTable",
    ];
    for (name, policy, _) in &roles {
        let own = Policy {
            principal: policy.principal.clone(),
            identity: policy.identity.clone(),
            resource: vec![],
        };
        let mut denied: Vec<&str> = never.to_vec();
        if name.starts_with("daemon") {
            denied.extend(["dynamodb:UpdateTable", "dynamodb:UpdateTimeToLive"]);
        } else {
            denied.extend(["dynamodb:PutItem", "dynamodb:PartiQLInsert"]);
        }
        for action in denied {
            match own.decide(action, &audit_arn) {
                Decision::Denied(_) => {}
                other => problems.push(format!(
                    "{name}: {action} on the audit table is {other:?}, not explicitly denied"
                )),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the shipped policies and the calls the commands make disagree:\n  {}\n\nevery call:\n{}",
        problems.join("\n  "),
        seen.iter()
            .map(|(n, a, r)| format!("  {n}: {a} {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
