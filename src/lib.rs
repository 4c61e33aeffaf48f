//! ddb-audit: DynamoDB Streams → a permanent, write-once, field-level audit trail.
//!
//! Layout (one line per module):
//! - `aws`     — AWS SDK configuration (standard environment, no SDK retries) and error reading.
//! - `value`   — DynamoDB attribute values, SDK-neutral, and their DynamoDB JSON.
//! - `diff`    — field-level diffs of item images (the `changes` patch) and their inverse.
//! - `entry`   — the audit entry (the `history --json` contract) and gaps.
//! - `config`  — the TOML config: documented defaults, unknown keys rejected.
//! - `stream`  — the stream seam: trait + domain types; `aws` adapter, `sim` simulator.
//!   - `stream::sim`    — in-memory DynamoDB + Streams simulator (state, limits, call counts). (test-util)
//!   - `stream::faults` — decorator injecting errors, latency, panics and bad records into any `StreamApi`. (test-util)
//! - `store`   — checkpoint and audit stores: traits; `dynamo` and `memory` (test-util) versions.
//!   - `store::faults`  — decorator injecting errors and latency into any store. (test-util)
//! - `lineage` — pure shard graph: which shards may be read now.
//! - `shard`   — one shard's loop: pace → GetRecords → entries → write → checkpoint.
//! - `supervisor` — per table and stream: discovery, lineage, children, listings.
//! - `engine`  — what the tasks share: seams, settings, pacer, table health, shutdown tokens.
//! - `report`  — what history, gaps and status print (tables and JSON lines).
//! - `read`    — questions to the trail: indexed paged queries, the item as of a time, diffs, revert plans.
//! - `retry`   — the one retry layer: backoff with jitter on transient errors.
//! - `pace`    — request pacing (governor) on tokio's clock.
//! - `serve`   — `ddb-audit serve`: token-checked read-only HTTP API and the embedded web page.
//! - `observe` — events that log and count themselves; /metrics, /healthz, /readyz, EMF.
//! - `attribution` — the IAM principal behind each entry, from CloudTrail data events.
//! - `proof`   — hash chain, Merkle trees, signed digests, verify and offline bundles.
//! - `redact`  — `[redaction]`: covered values replaced by keyed commitments before anything is stored.
//!
//! (test-util): only with the `test-util` feature, which the tests and
//! benchmarks turn on and the shipped binary does not.

pub mod attribution;
pub mod aws;
pub mod config;
pub mod diff;
pub mod engine;
pub mod entry;
pub mod lineage;
pub mod observe;
pub mod pace;
pub mod proof;
pub mod read;
pub mod redact;
pub mod report;
pub mod retry;
pub mod serve;
pub mod shard;
pub mod store;
pub mod stream;
pub mod supervisor;
pub mod value;
