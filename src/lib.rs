//! ddb-audit: DynamoDB Streams → a permanent, write-once, field-level audit trail.
//!
//! Layout (one line per module):
//! - `value`   — DynamoDB attribute values, SDK-neutral, and their DynamoDB JSON.
//! - `diff`    — field-level diffs of item images (the `changes` patch) and their inverse.
//! - `entry`   — the audit entry (the `history --json` contract) and gaps.
//! - `config`  — the TOML config: documented defaults, unknown keys rejected.
//! - `stream`  — the stream seam: trait + domain types; `aws` adapter, `sim` simulator.
//! - `store`   — checkpoint and audit stores: traits; `dynamo` and `memory` versions.
//! - `retry`   — the one retry layer: backoff with jitter on transient errors.
//! - `pace`    — request pacing (governor) on tokio's clock.

pub mod config;
pub mod diff;
pub mod entry;
pub mod pace;
pub mod retry;
pub mod store;
pub mod stream;
pub mod value;
