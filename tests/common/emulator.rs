//! The emulator: moto's server from ./.venv on a free port (or whatever
//! `AWS_ENDPOINT_URL` points at), and SDK clients for it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};

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

    /// One SDK configuration for every client the tests use: this
    /// endpoint, region and static credentials, nothing from the
    /// developer's own AWS setup.
    pub fn sdk_config(&self) -> SdkConfig {
        let credentials = Credentials::new(
            &self.access_key,
            &self.secret_key,
            None,
            None,
            "ddb-audit-e2e",
        );
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(self.region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build()
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    pub fn streams(&self) -> aws_sdk_dynamodbstreams::Client {
        aws_sdk_dynamodbstreams::Client::new(&self.sdk_config())
    }

    pub fn kms(&self) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&self.sdk_config())
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
