//! The `ddb-audit` binary as a child process: one-shot CLI commands, the
//! daemon (`run`) and other long-running commands, `history --json`.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{path_str, TestEnv};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ddb-audit");
/// Any single CLI invocation (not `run`) must finish within this.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a write may take to show up in `history` (generous: this is a
/// correctness test on a shared 2-core machine, not a latency assertion).
pub const AUDIT_DEADLINE: Duration = Duration::from_secs(90);

impl TestEnv {
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

    /// Waits until a line of the log satisfies `found` (up to
    /// [`AUDIT_DEADLINE`]); panics, showing the log, if the process exits
    /// first or the time passes.
    pub async fn wait_log(&mut self, what: &str, found: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + AUDIT_DEADLINE;
        while !self.log_text().lines().any(&found) {
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "waited {AUDIT_DEADLINE:?} for {what} in the log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
