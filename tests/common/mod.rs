//! End-to-end test harness: an emulator (moto's server from ./.venv on a free
//! port, or whatever `AWS_ENDPOINT_URL` points at), SDK clients for the test's
//! own writes, the `ddb-audit` binary run as a child process, a stream reader
//! that says what the stream really holds, and an independent JSON-Patch
//! applier for audit entries (the tests never trust the library's own).
//!
//! Every test gets a unique name prefix for its tables (source and the
//! daemon's own), so tests run in parallel against one shared endpoint too.
//!
//! - `emulator`  — moto on a free port, one SDK config for every client;
//! - `env`       — [`TestEnv`]: names, config, tables, waits on the daemon's rows;
//! - `daemon`    — the binary as a child: CLI commands, `run`, `history`;
//! - `values`    — DynamoDB JSON ↔ SDK attribute values;
//! - `oracle`    — the stream as ground truth, and an item's history checked on it;
//! - `patch`     — the JSON-patch applier;
//! - `http`      — HTTP GETs and /metrics scrapes;
//! - `artifacts` — what the browser tests need and leave.

#![allow(dead_code)] // each test binary uses a different subset

mod artifacts;
mod daemon;
mod emulator;
mod env;
mod http;
mod oracle;
mod patch;
mod values;

use std::time::{Duration, Instant};

#[allow(unused_imports)] // as above: each test binary uses a different subset
pub use {artifacts::*, daemon::*, emulator::*, env::*, http::*, oracle::*, patch::*, values::*};

/// Polls `f` every 250 ms until it gives a value, for at most `limit`;
/// panics naming `what` when the time passes.
pub async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
