//! End-to-end test harness: an emulator (moto's server from ./.venv on a free
//! port, or whatever `AWS_ENDPOINT_URL` points at), SDK clients for the test's
//! own writes, the `ddb-audit` binary run as a child process, a stream reader
//! that says what the stream really holds, and an independent JSON-Patch
//! applier for audit entries (the tests never trust the library's own).
//!
//! Every test gets a unique name prefix for its tables (source and the
//! daemon's own), so tests run in parallel against one shared endpoint too.

#![allow(dead_code)] // each test binary uses a different subset

mod artifacts;
mod daemon;
mod emulator;
mod env;
mod http;
mod oracle;
mod patch;
mod values;

#[allow(unused_imports)] // as above: each test binary uses a different subset
pub use {artifacts::*, daemon::*, emulator::*, env::*, http::*, oracle::*, patch::*, values::*};
